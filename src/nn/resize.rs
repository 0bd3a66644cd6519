//! Differentiable bilinear resize.
//!
//! candle 0.11's `upsample_bilinear2d` has no backward pass, and FCN and DeepLab train through their
//! final up-sampling. A bilinear resize is separable and linear: `y = A_h · x · A_wᵀ` with two small
//! interpolation matrices, so two matmuls give it, and candle differentiates matmuls. The matrices follow
//! PyTorch's `F.interpolate(mode="bilinear", align_corners=False)` so outputs match a PyTorch reference.

use candle_core::{DType, Device, Result, Tensor};

/// Row-major `(out, in)` interpolation weights of PyTorch's `align_corners=False` bilinear resize along
/// one axis: output `i` samples the source at `(i + 0.5) * in / out - 0.5`, clamped below at 0.
pub fn interpolation_matrix(input: usize, output: usize) -> Vec<f64> {
    let mut m = vec![0.0; output * input];
    let scale = input as f64 / output as f64;
    for i in 0..output {
        let src = ((i as f64 + 0.5) * scale - 0.5).max(0.0);
        let i0 = (src.floor() as usize).min(input - 1);
        let i1 = (i0 + 1).min(input - 1);
        let l1 = src - i0 as f64;
        m[i * input + i0] += 1.0 - l1;
        m[i * input + i1] += l1;
    }
    m
}

fn matrix(input: usize, output: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    Tensor::from_vec(interpolation_matrix(input, output), (output, input), &Device::Cpu)?
        .to_dtype(dtype)?
        .to_device(device)
}

/// Resize an `(N, C, H, W)` tensor to `(N, C, out_h, out_w)`; gradients flow to `x`.
pub fn resize_bilinear(x: &Tensor, out_h: usize, out_w: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if (h, w) == (out_h, out_w) {
        return Ok(x.clone());
    }
    let (dtype, dev) = (x.dtype(), x.device());
    // Along W: (N·C·H, W) x (W, W').
    let aw_t = matrix(w, out_w, dtype, dev)?.t()?.contiguous()?;
    let y = x.contiguous()?.reshape((n * c * h, w))?.matmul(&aw_t)?;
    // Along H: bring H last, (N·C·W', H) x (H, H'), and back.
    let ah_t = matrix(h, out_h, dtype, dev)?.t()?.contiguous()?;
    let y = y.reshape((n * c, h, out_w))?.transpose(1, 2)?.contiguous()?;
    let y = y.reshape((n * c * out_w, h))?.matmul(&ah_t)?;
    y.reshape((n * c, out_w, out_h))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((n, c, out_h, out_w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_sum_to_one_and_identity_when_same_size() {
        for (i, o) in [(8, 64), (7, 3), (1, 5), (97, 769)] {
            let m = interpolation_matrix(i, o);
            for r in 0..o {
                let s: f64 = m[r * i..(r + 1) * i].iter().sum();
                assert!((s - 1.0).abs() < 1e-12, "{i}->{o} row {r} sums to {s}");
            }
        }
        let m = interpolation_matrix(4, 4);
        for r in 0..4 {
            for c in 0..4 {
                assert_eq!(m[r * 4 + c], if r == c { 1.0 } else { 0.0 });
            }
        }
    }

    #[test]
    fn x2_upsampling_matches_pytorch_weights() {
        // torch.nn.functional.interpolate(torch.tensor([[[[0., 1., 2., 3.]]]]), size=(1, 8),
        // mode="bilinear", align_corners=False) = [0, .25, .75, 1.25, 1.75, 2.25, 2.75, 3].
        let x = Tensor::new(&[[[[0f32, 1., 2., 3.]]]], &Device::Cpu).unwrap();
        let y = resize_bilinear(&x, 1, 8).unwrap();
        let v: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(v, vec![0.0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.0]);
    }

    #[test]
    fn constant_images_stay_constant() {
        let x = Tensor::full(3.5f32, (2, 3, 5, 7), &Device::Cpu).unwrap();
        let y = resize_bilinear(&x, 11, 4).unwrap();
        assert_eq!(y.dims(), &[2, 3, 11, 4]);
        let v: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
        assert!(v.iter().all(|&a| (a - 3.5).abs() < 1e-6));
    }
}
