//! GroupNorm (optionally followed by ReLU) in one pass forward and one pass backward.
//!
//! candle-nn's GroupNorm is about ten elementwise ops and reductions, each a graph node with its own
//! backward and gradient buffer; DeepLabv3's ResNet normalises every convolution's output. Here the
//! forward saves the groups' mean and 1/σ, and the backward computes the input, weight and bias
//! gradients together from `x`, the output (for the ReLU mask) and the output gradient.

use super::{alloc, contiguous, timing, Elem, SharedMut};
use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::sync::{Arc, Mutex};

/// `(x, gamma, beta) -> gamma · (x − μ_g) / σ_g + beta`, then ReLU when `relu`.
#[derive(Debug)]
pub struct GroupNorm {
    pub groups: usize,
    pub eps: f64,
    pub relu: bool,
    /// `(mean, 1/σ)` of every (image, group), set by the forward pass.
    stats: Mutex<Option<Arc<Vec<(f64, f64)>>>>,
}

impl GroupNorm {
    pub fn new(groups: usize, eps: f64, relu: bool) -> Self {
        GroupNorm { groups, eps, relu, stats: Mutex::new(None) }
    }

    fn run<T: Elem + Into<f64> + FromF64>(&self, sx: &CpuStorage, lx: &Layout, sg: &CpuStorage, lg: &Layout, sb: &CpuStorage, lb: &Layout) -> Result<(CpuStorage, Shape)> {
        let &[n, c, h, w] = lx.dims() else { bail!("group norm: expected (N, C, H, W), got {:?}", lx.dims()) };
        if self.groups == 0 || c % self.groups != 0 || lg.dims() != [c] || lb.dims() != [c] {
            bail!("group norm: {c} channels, {} groups, weight {:?}, bias {:?}", self.groups, lg.dims(), lb.dims());
        }
        let x = contiguous::<T>(sx, lx)?;
        let gamma = contiguous::<T>(sg, lg)?;
        let beta = contiguous::<T>(sb, lb)?;
        let _t = timing::span(timing::Kind::Norm, 0.0);
        let cpg = c / self.groups;
        let m = cpg * h * w;
        let plane = h * w;
        let mut y = alloc::<T>(x.len());
        let stats: Vec<(f64, f64)> = y
            .par_chunks_mut(m)
            .zip(x.par_chunks(m))
            .enumerate()
            .map(|(gi, (yg, xg))| {
                // Two passes in f64: mean, then the centred sum of squares (no cancellation).
                let mean = xg.iter().map(|v| (*v).into()).sum::<f64>() / m as f64;
                let var = xg.iter().map(|v| ((*v).into() - mean).powi(2)).sum::<f64>() / m as f64;
                let rstd = 1.0 / (var + self.eps).sqrt();
                let g0 = (gi % self.groups) * cpg;
                for k in 0..cpg {
                    let a = gamma[g0 + k].into() * rstd;
                    let b = beta[g0 + k].into() - mean * a;
                    let (a, b) = (T::from_f64(a), T::from_f64(b));
                    let (ys, xs) = (&mut yg[k * plane..(k + 1) * plane], &xg[k * plane..(k + 1) * plane]);
                    if self.relu {
                        ys.iter_mut().zip(xs).for_each(|(o, v)| {
                            let r = *v * a + b;
                            *o = if r > T::ZERO { r } else { T::ZERO };
                        });
                    } else {
                        ys.iter_mut().zip(xs).for_each(|(o, v)| *o = *v * a + b);
                    }
                }
                (mean, rstd)
            })
            .collect();
        debug_assert_eq!(stats.len(), n * self.groups);
        *self.stats.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(stats));
        Ok((T::storage(y), lx.shape().clone()))
    }
}

/// f64 -> element type.
pub trait FromF64 {
    fn from_f64(v: f64) -> Self;
}
impl FromF64 for f32 {
    fn from_f64(v: f64) -> Self {
        v as f32
    }
}
impl FromF64 for f64 {
    fn from_f64(v: f64) -> Self {
        v
    }
}

impl CustomOp3 for GroupNorm {
    fn name(&self) -> &'static str {
        "mammoflow-group-norm"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        match (s1, s2, s3) {
            (CpuStorage::F32(_), CpuStorage::F32(_), CpuStorage::F32(_)) => self.run::<f32>(s1, l1, s2, l2, s3, l3),
            (CpuStorage::F64(_), CpuStorage::F64(_), CpuStorage::F64(_)) => self.run::<f64>(s1, l1, s2, l2, s3, l3),
            _ => bail!("group norm: f32 or f64 tensors of one dtype"),
        }
    }
    fn bwd(&self, x: &Tensor, gamma: &Tensor, _beta: &Tensor, res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let stats = self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(stats) = stats else { bail!("group norm backward before its forward") };
        let gamma_v: Vec<f64> = gamma.to_dtype(candle_core::DType::F64)?.to_vec1()?;
        let c = gamma_v.len();
        let op = GroupNormBwd { groups: self.groups, relu: self.relu, stats, gamma: gamma_v };
        // One packed result: dx, then dgamma, then dbeta.
        let packed = x.apply_op3_no_bwd(res, grad, &op)?;
        let len = x.elem_count();
        let dx = packed.narrow(0, 0, len)?.reshape(x.shape())?;
        let dg = packed.narrow(0, len, c)?;
        let db = packed.narrow(0, len + c, c)?;
        Ok((Some(dx), Some(dg), Some(db)))
    }
}

struct GroupNormBwd {
    groups: usize,
    relu: bool,
    stats: Arc<Vec<(f64, f64)>>,
    gamma: Vec<f64>,
}

impl GroupNormBwd {
    fn run<T: Elem + Into<f64> + FromF64>(&self, sx: &CpuStorage, lx: &Layout, sy: &CpuStorage, ly: &Layout, sd: &CpuStorage, ld: &Layout) -> Result<(CpuStorage, Shape)> {
        let &[n, c, h, w] = lx.dims() else { bail!("group norm backward: expected (N, C, H, W)") };
        if ly.dims() != lx.dims() || ld.dims() != lx.dims() || self.stats.len() != n * self.groups {
            bail!("group norm backward: shapes do not match the forward");
        }
        let x = contiguous::<T>(sx, lx)?;
        let y = contiguous::<T>(sy, ly)?;
        let dy = contiguous::<T>(sd, ld)?;
        let _t = timing::span(timing::Kind::Norm, 0.0);
        let (cpg, plane) = (c / self.groups, h * w);
        let m = cpg * plane;
        let len = x.len();
        let mut out = alloc::<T>(len + 2 * c);
        let dxp = SharedMut(out.as_mut_ptr());
        // Per (image, channel): (Σ dy·x̂, Σ dy) for the weight and bias gradients.
        let per_channel: Vec<Vec<(f64, f64)>> = (0..n * self.groups)
            .into_par_iter()
            .map(|gi| {
                let (mean, rstd) = self.stats[gi];
                let g0 = (gi % self.groups) * cpg;
                let xs = &x[gi * m..(gi + 1) * m];
                let ys = &y[gi * m..(gi + 1) * m];
                let ds = &dy[gi * m..(gi + 1) * m];
                let masked = |j: usize| -> f64 {
                    if self.relu && ys[j] <= T::ZERO {
                        0.0
                    } else {
                        ds[j].into()
                    }
                };
                let mut sums = Vec::with_capacity(cpg);
                // Σ g and Σ g·x̂ over the group, with g = dy·γ.
                let (mut sg, mut sgx) = (0.0, 0.0);
                for k in 0..cpg {
                    let (mut sd, mut sdx) = (0.0, 0.0);
                    for j in k * plane..(k + 1) * plane {
                        let d = masked(j);
                        let xh = (xs[j].into() - mean) * rstd;
                        sd += d;
                        sdx += d * xh;
                    }
                    sums.push((sdx, sd));
                    sg += sd * self.gamma[g0 + k];
                    sgx += sdx * self.gamma[g0 + k];
                }
                let (mg, mgx) = (sg / m as f64, sgx / m as f64);
                let dxp = dxp;
                // SAFETY: group gi's elements of dx are written by this task only.
                let dx = unsafe { std::slice::from_raw_parts_mut(dxp.0.add(gi * m), m) };
                for k in 0..cpg {
                    let gk = self.gamma[g0 + k];
                    for j in k * plane..(k + 1) * plane {
                        let xh = (xs[j].into() - mean) * rstd;
                        dx[j] = T::from_f64(rstd * (masked(j) * gk - mg - xh * mgx));
                    }
                }
                sums
            })
            .collect();
        for ch in 0..c {
            let (g, k) = (ch / cpg, ch % cpg);
            let (mut dg, mut db) = (0.0, 0.0);
            for i in 0..n {
                let (a, b) = per_channel[i * self.groups + g][k];
                dg += a;
                db += b;
            }
            out[len + ch] = T::from_f64(dg);
            out[len + c + ch] = T::from_f64(db);
        }
        Ok((T::storage(out), Shape::from(len + 2 * c)))
    }
}

impl CustomOp3 for GroupNormBwd {
    fn name(&self) -> &'static str {
        "mammoflow-group-norm-bwd"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        match s1 {
            CpuStorage::F32(_) => self.run::<f32>(s1, l1, s2, l2, s3, l3),
            CpuStorage::F64(_) => self.run::<f64>(s1, l1, s2, l2, s3, l3),
            _ => bail!("group norm backward: f32 or f64 tensors"),
        }
    }
}
