//! Max-pooling with indices: the forward keeps the arg-max of every window, the backward scatters the
//! gradient there (PyTorch's rule: the first maximum in scan order wins a tie). One pass each way,
//! planes in parallel; candle's pool backward re-derives the arg-max from the output with several ops
//! and scales the gradient wrongly (see `nn::pool`).

use super::{alloc, by_dtype1, contiguous, timing, Elem, Saved, SharedMut};
use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::sync::Arc;

/// `(n, c, h, w) -> (n, c, oh, ow)`, `oh = (h + 2p − k) / s + 1`, padding never wins.
#[derive(Debug)]
pub struct MaxPool {
    pub kernel: usize,
    pub stride: usize,
    pub pad: usize,
    /// Arg-max (index within its input plane) of every output element, set by the forward pass.
    indices: Saved<Vec<u32>>,
}

impl MaxPool {
    pub fn new(kernel: usize, stride: usize, pad: usize) -> Self {
        MaxPool { kernel, stride, pad, indices: Saved::default() }
    }

    fn out_side(&self, n: usize) -> Result<usize> {
        if self.kernel == 0 || self.stride == 0 || 2 * self.pad > self.kernel || n + 2 * self.pad < self.kernel {
            bail!("max pool: kernel {} stride {} padding {} does not fit a side of {n}", self.kernel, self.stride, self.pad);
        }
        Ok((n + 2 * self.pad - self.kernel) / self.stride + 1)
    }

    fn run<T: Elem>(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let &[n, c, h, w] = l.dims() else { bail!("max pool: expected (N, C, H, W), got {:?}", l.dims()) };
        let (oh, ow) = (self.out_side(h)?, self.out_side(w)?);
        let x = contiguous::<T>(s, l)?;
        let _t = timing::span(timing::Kind::Pool, 0.0);
        let mut y = alloc::<T>(n * c * oh * ow);
        let mut idx = vec![0u32; n * c * oh * ow];
        let (k, st, p) = (self.kernel, self.stride, self.pad as isize);
        y.par_chunks_mut(oh * ow).zip(idx.par_chunks_mut(oh * ow)).zip(x.par_chunks(h * w)).for_each(|((yp, ip), xp)| {
            if (k, st, p) == (2, 2, 0) {
                // U-Net's and VGG's pool, without branches (the winner of random data is random).
                for oy in 0..oh {
                    let (r0, r1) = (&xp[2 * oy * w..2 * oy * w + w], &xp[(2 * oy + 1) * w..(2 * oy + 1) * w + w]);
                    for ox in 0..ow {
                        let i = 2 * ox;
                        let (mut best, mut arg) = (r0[i], (2 * oy * w + i) as u32);
                        for (v, j) in [(r0[i + 1], 2 * oy * w + i + 1), (r1[i], (2 * oy + 1) * w + i), (r1[i + 1], (2 * oy + 1) * w + i + 1)] {
                            let gt = v > best;
                            best = if gt { v } else { best };
                            arg = if gt { j as u32 } else { arg };
                        }
                        yp[oy * ow + ox] = best;
                        ip[oy * ow + ox] = arg;
                    }
                }
                return;
            }
            for oy in 0..oh {
                for ox in 0..ow {
                    let (mut best, mut arg) = (T::NEG_INF, u32::MAX);
                    for ky in 0..k {
                        let iy = (oy * st + ky) as isize - p;
                        if iy < 0 || iy >= h as isize {
                            continue;
                        }
                        for kx in 0..k {
                            let ix = (ox * st + kx) as isize - p;
                            if ix < 0 || ix >= w as isize {
                                continue;
                            }
                            let i = iy as usize * w + ix as usize;
                            let v = xp[i];
                            let gt = (v > best) | (arg == u32::MAX);
                            best = if gt { v } else { best };
                            arg = if gt { i as u32 } else { arg };
                        }
                    }
                    yp[oy * ow + ox] = best;
                    ip[oy * ow + ox] = arg;
                }
            }
        });
        self.indices.set(idx);
        Ok((T::storage(y), Shape::from((n, c, oh, ow))))
    }
}

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "mammoflow-max-pool"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        by_dtype1("max pool", s, || self.run::<f32>(s, l), || self.run::<f64>(s, l))
    }
    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let indices = self.indices.get("max pool")?;
        let (_, _, h, w) = arg.dims4()?;
        Ok(Some(grad.apply_op1_no_bwd(&MaxPoolBwd { indices, plane: h * w, h, w })?))
    }
}

/// Scatters `dy` to the arg-max positions of each input plane.
struct MaxPoolBwd {
    indices: Arc<Vec<u32>>,
    plane: usize,
    h: usize,
    w: usize,
}

impl MaxPoolBwd {
    fn run<T: Elem>(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let &[n, c, oh, ow] = l.dims() else { bail!("max pool backward: expected (N, C, H, W)") };
        if self.indices.len() != n * c * oh * ow {
            bail!("max pool backward: gradient {:?} does not match the forward", l.dims());
        }
        let dy = contiguous::<T>(s, l)?;
        let _t = timing::span(timing::Kind::Pool, 0.0);
        let mut dx = vec![T::ZERO; n * c * self.plane];
        let dxp = SharedMut(dx.as_mut_ptr());
        let plane = self.plane;
        (0..n * c).into_par_iter().for_each(|i| {
            let dxp = dxp;
            // SAFETY: input plane i is written by this task only.
            let d = unsafe { std::slice::from_raw_parts_mut(dxp.0.add(i * plane), plane) };
            let out = oh * ow;
            for (g, &j) in dy[i * out..(i + 1) * out].iter().zip(&self.indices[i * out..(i + 1) * out]) {
                if (j as usize) < plane {
                    d[j as usize] += *g;
                }
            }
        });
        Ok((T::storage(dx), Shape::from((n, c, self.h, self.w))))
    }
}

impl CustomOp1 for MaxPoolBwd {
    fn name(&self) -> &'static str {
        "mammoflow-max-pool-bwd"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        by_dtype1("max pool backward", s, || self.run::<f32>(s, l), || self.run::<f64>(s, l))
    }
}
