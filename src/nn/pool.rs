//! Max pooling whose gradient is right.
//!
//! candle 0.11's `max_pool2d` backward scales the gradient by `1 / k²` (it multiplies by the window
//! average of the arg-max mask instead of dividing by the count: a 2x2 pool passes a quarter of the
//! gradient; `gradcheck` shows it), takes no padding, and refuses `kernel != stride`. [`max_pool2x2`] is
//! a sum of each window weighted by the one-hot of its first maximum (PyTorch's gradient, ties included); [`max_pool2d_padded`] covers
//! ResNet's stem (3x3, stride 2, padding 1). This takes the maximum of the `k x k` strided taps of a
//! `-inf`-padded input: `maximum` and `index_select` both have backward passes, and the padding never
//! wins, so the gradient goes to the input pixel that won, as in PyTorch (ties between distinct pixels
//! split it; random activations have none).

use candle_core::{Result, Tensor};

/// `(N, C, H, W)` -> `(N, C, H', W')` with `H' = (H + 2p - k) / s + 1`, like `torch.nn.MaxPool2d(k, s, p)`.
pub fn max_pool2d_padded(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
    if super::kernels::use_fast(x.device()) {
        return x.apply_op1(super::kernels::pool::MaxPool::new(kernel, stride, padding));
    }
    let (n, c, h, w) = x.dims4()?;
    if padding == 0 && kernel == 2 && stride == 2 {
        return max_pool2x2(x);
    }
    if padding * 2 > kernel {
        candle_core::bail!("max pool: padding {padding} must be at most half the kernel {kernel}");
    }
    let oh = (h + 2 * padding - kernel) / stride + 1;
    let ow = (w + 2 * padding - kernel) / stride + 1;
    let xp = pad_neg_inf(x, padding)?;
    let mut out: Option<Tensor> = None;
    for dy in 0..kernel {
        let rows: Vec<u32> = (0..oh).map(|i| (dy + stride * i) as u32).collect();
        let rows = Tensor::new(rows.as_slice(), x.device())?;
        let xr = xp.index_select(&rows, 2)?;
        for dx in 0..kernel {
            let cols: Vec<u32> = (0..ow).map(|j| (dx + stride * j) as u32).collect();
            let cols = Tensor::new(cols.as_slice(), x.device())?;
            let tap = xr.index_select(&cols, 3)?;
            out = Some(match out {
                None => tap,
                Some(m) => m.maximum(&tap)?,
            });
        }
    }
    let out = out.expect("kernel > 0");
    debug_assert_eq!(out.dims(), &[n, c, oh, ow]);
    Ok(out)
}

/// 2x2 max-pool with stride 2 (odd last rows / columns are dropped, as in PyTorch).
pub fn max_pool2x2(x: &Tensor) -> Result<Tensor> {
    if super::kernels::use_fast(x.device()) {
        return x.apply_op1(super::kernels::pool::MaxPool::new(2, 2, 0));
    }
    let (n, c, h, w) = x.dims4()?;
    let (oh, ow) = (h / 2, w / 2);
    let x = if h % 2 == 1 || w % 2 == 1 { x.narrow(2, 0, 2 * oh)?.narrow(3, 0, 2 * ow)? } else { x.clone() };
    // Each window's four values last, then the output as Σ x · one-hot(first maximum): the gradient
    // goes to one pixel per window as in PyTorch. (`max` alone hands the full gradient to every tied
    // pixel: flat mammogram backgrounds tie everywhere, and their gradient came out up to 4x.)
    let win = x.reshape((n, c, oh, 2, ow, 2))?.permute((0, 1, 2, 4, 3, 5))?.contiguous()?.reshape((n, c, oh, ow, 4))?;
    let d = win.detach();
    let is_max = d.broadcast_eq(&d.max_keepdim(4)?)?.to_dtype(x.dtype())?;
    let first = (&is_max * is_max.cumsum(4)?.eq(1.0)?.to_dtype(x.dtype())?)?;
    (win * first)?.sum(4)
}

/// Pads H and W by `p` on each side with `-inf` (zeros, plus a constant mask that carries no gradient).
fn pad_neg_inf(x: &Tensor, p: usize) -> Result<Tensor> {
    if p == 0 {
        return Ok(x.clone());
    }
    let (_, _, h, w) = x.dims4()?;
    let padded = x.pad_with_zeros(2, p, p)?.pad_with_zeros(3, p, p)?;
    let (hp, wp) = (h + 2 * p, w + 2 * p);
    let mut mask = vec![f32::NEG_INFINITY; hp * wp];
    for y in p..p + h {
        mask[y * wp + p..y * wp + p + w].fill(0.0);
    }
    let mask = Tensor::from_vec(mask, (1, 1, hp, wp), x.device())?.to_dtype(x.dtype())?;
    padded.broadcast_add(&mask)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn two_by_two_matches_candles_forward() {
        let data: Vec<f32> = (0..2 * 3 * 7 * 6).map(|i| ((i * 53) % 31) as f32).collect();
        let x = Tensor::from_vec(data, (2, 3, 7, 6), &Device::Cpu).unwrap();
        let a: Vec<f32> = max_pool2x2(&x).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = x.max_pool2d(2).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn matches_a_direct_maximum_over_windows() {
        let (h, w) = (7, 6);
        let data: Vec<f32> = (0..2 * h * w).map(|i| ((i * 37) % 23) as f32 - 11.0).collect();
        let x = Tensor::from_vec(data.clone(), (1, 2, h, w), &Device::Cpu).unwrap();
        let y = max_pool2d_padded(&x, 3, 2, 1).unwrap();
        let (oh, ow) = ((h + 2 - 3) / 2 + 1, (w + 2 - 3) / 2 + 1);
        assert_eq!(y.dims(), &[1, 2, oh, ow]);
        let got: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
        for c in 0..2 {
            for i in 0..oh {
                for j in 0..ow {
                    let mut m = f32::NEG_INFINITY;
                    for dy in 0..3 {
                        for dx in 0..3 {
                            let (y, x) = ((2 * i + dy) as isize - 1, (2 * j + dx) as isize - 1);
                            if y >= 0 && x >= 0 && (y as usize) < h && (x as usize) < w {
                                m = m.max(data[c * h * w + y as usize * w + x as usize]);
                            }
                        }
                    }
                    assert_eq!(got[c * oh * ow + i * ow + j], m, "c {c} ({i}, {j})");
                }
            }
        }
    }
}
