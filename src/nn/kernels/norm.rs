//! GroupNorm (optionally followed by ReLU) in one pass forward and one pass backward.
//!
//! candle-nn's GroupNorm is about ten elementwise ops and reductions, each a graph node with its own
//! backward and gradient buffer; DeepLabv3's ResNet normalises every convolution's output. Here the
//! forward saves the groups' mean and 1/σ, and the backward computes the input, weight and bias
//! gradients together from `x`, the output (for the ReLU mask) and the output gradient.

use super::{alloc, contiguous, timing, Elem, Saved, SharedMut};
use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::sync::Arc;

/// `(x, gamma, beta) -> gamma · (x − μ_g) / σ_g + beta`, then ReLU when `relu`.
#[derive(Debug)]
pub struct GroupNorm {
    pub groups: usize,
    pub eps: f64,
    pub relu: bool,
    /// `(mean, 1/σ)` of every (image, group), set by the forward pass.
    stats: Saved<Vec<(f64, f64)>>,
}

impl GroupNorm {
    pub fn new(groups: usize, eps: f64, relu: bool) -> Self {
        GroupNorm { groups, eps, relu, stats: Saved::default() }
    }

    fn run<T: Elem>(&self, sx: &CpuStorage, lx: &Layout, sg: &CpuStorage, lg: &Layout, sb: &CpuStorage, lb: &Layout) -> Result<(CpuStorage, Shape)> {
        let &[n, c, h, w] = lx.dims() else { bail!("group norm: expected (N, C, H, W), got {:?}", lx.dims()) };
        if self.groups == 0 || c % self.groups != 0 || lg.dims() != [c] || lb.dims() != [c] {
            bail!("group norm: {c} channels, {} groups, weight {:?}, bias {:?}", self.groups, lg.dims(), lb.dims());
        }
        let _t = timing::span_with(timing::Kind::Norm, 0.0, || format!("fwd {:?} contiguous {}", lx.dims(), lx.is_contiguous()));
        let x = contiguous::<T>(sx, lx)?;
        let gamma = contiguous::<T>(sg, lg)?;
        let beta = contiguous::<T>(sb, lb)?;
        let cpg = c / self.groups;
        let m = cpg * h * w;
        let plane = h * w;
        let mut y = alloc::<T>(x.len());
        let stats: Vec<(f64, f64)> = y
            .par_chunks_mut(m)
            .zip(x.par_chunks(m))
            .enumerate()
            .map(|(gi, (yg, xg))| {
                // Two passes (mean, then the centred sum of squares: no cancellation), each a
                // vectorised sum in T with eight accumulators, added up per plane in f64.
                let mean = xg.chunks(plane).map(|p| sum8(p, |v| v).to_f64()).sum::<f64>() / m as f64;
                let neg_mean = T::from_f64(-mean);
                let var = xg.chunks(plane).map(|p| sum8(p, |v| (v + neg_mean) * (v + neg_mean)).to_f64()).sum::<f64>() / m as f64;
                let rstd = 1.0 / (var + self.eps).sqrt();
                let g0 = (gi % self.groups) * cpg;
                for k in 0..cpg {
                    let a = gamma[g0 + k].to_f64() * rstd;
                    let b = beta[g0 + k].to_f64() - mean * a;
                    let (a, b) = (T::from_f64(a), T::from_f64(b));
                    let (ys, xs) = (&mut yg[k * plane..(k + 1) * plane], &xg[k * plane..(k + 1) * plane]);
                    if self.relu {
                        ys.iter_mut().zip(xs).for_each(|(o, v)| {
                            let r = *v * a + b;
                            *o = r.keep_if(r > T::ZERO);
                        });
                    } else {
                        ys.iter_mut().zip(xs).for_each(|(o, v)| *o = *v * a + b);
                    }
                }
                (mean, rstd)
            })
            .collect();
        debug_assert_eq!(stats.len(), n * self.groups);
        self.stats.set(stats);
        Ok((T::storage(y), lx.shape().clone()))
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
        let stats = self.stats.get("group norm")?;
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
    fn run<T: Elem>(&self, sx: &CpuStorage, lx: &Layout, sy: &CpuStorage, ly: &Layout, sd: &CpuStorage, ld: &Layout) -> Result<(CpuStorage, Shape)> {
        let &[n, c, h, w] = lx.dims() else { bail!("group norm backward: expected (N, C, H, W)") };
        if ly.dims() != lx.dims() || ld.dims() != lx.dims() || self.stats.len() != n * self.groups {
            bail!("group norm backward: shapes do not match the forward");
        }
        let _t = timing::span_with(timing::Kind::Norm, 0.0, || format!("bwd {:?} contiguous {} {} {}", lx.dims(), lx.is_contiguous(), ly.is_contiguous(), ld.is_contiguous()));
        let x = contiguous::<T>(sx, lx)?;
        let y = contiguous::<T>(sy, ly)?;
        let dy = contiguous::<T>(sd, ld)?;
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
                let relu = self.relu;
                // Per channel: Σ dy and Σ dy·x (vectorised in T), then Σ dy·x̂ = rstd·(Σ dy·x − μ·Σ dy).
                let mut sums = Vec::with_capacity(cpg);
                let (mut sg, mut sgx) = (0.0, 0.0);
                for k in 0..cpg {
                    let r = k * plane..(k + 1) * plane;
                    let (sd, sdx) = grad_sums(&xs[r.clone()], &ys[r.clone()], &ds[r], relu);
                    let (sd, sdx) = (sd.to_f64(), sdx.to_f64());
                    let sdxh = rstd * (sdx - mean * sd);
                    sums.push((sdxh, sd));
                    sg += sd * self.gamma[g0 + k];
                    sgx += sdxh * self.gamma[g0 + k];
                }
                let (mg, mgx) = (sg / m as f64, sgx / m as f64);
                // dx = rstd·(γ·dy − mean(γ·dy) − x̂·mean(γ·dy·x̂)) = A·dy + B·x + C per channel.
                let b = T::from_f64(-rstd * rstd * mgx);
                let c0 = T::from_f64(-rstd * mg + rstd * rstd * mean * mgx);
                let dxp = dxp;
                // SAFETY: group gi's elements of dx are written by this task only.
                let dx = unsafe { std::slice::from_raw_parts_mut(dxp.0.add(gi * m), m) };
                for k in 0..cpg {
                    let a = T::from_f64(rstd * self.gamma[g0 + k]);
                    let r = k * plane..(k + 1) * plane;
                    for (((o, x), y), d) in dx[r.clone()].iter_mut().zip(&xs[r.clone()]).zip(&ys[r.clone()]).zip(&ds[r]) {
                        let d = d.keep_if(!relu || *y > T::ZERO);
                        *o = a * d + b * *x + c0;
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

/// `Σ f(v)` with eight accumulators (vectorisable).
fn sum8<T: Elem>(v: &[T], f: impl Fn(T) -> T) -> T {
    let mut acc = [T::ZERO; 8];
    let chunks = v.chunks_exact(8);
    let rest = chunks.remainder();
    for ch in chunks {
        for i in 0..8 {
            acc[i] += f(ch[i]);
        }
    }
    let mut s = T::ZERO;
    for r in rest {
        s += f(*r);
    }
    acc.iter().fold(s, |a, b| a + *b)
}

/// `(Σ d, Σ d·x)` over a plane, `d` = the output gradient masked by the ReLU (`y > 0`), eight lanes.
fn grad_sums<T: Elem>(x: &[T], y: &[T], d: &[T], relu: bool) -> (T, T) {
    let (mut a, mut b) = ([T::ZERO; 8], [T::ZERO; 8]);
    let n8 = x.len() / 8 * 8;
    for ((xc, yc), dc) in x[..n8].chunks_exact(8).zip(y[..n8].chunks_exact(8)).zip(d[..n8].chunks_exact(8)) {
        let (xc, yc, dc): (&[T; 8], &[T; 8], &[T; 8]) = (xc.try_into().unwrap(), yc.try_into().unwrap(), dc.try_into().unwrap());
        for i in 0..8 {
            let dm = dc[i].keep_if(!relu || yc[i] > T::ZERO);
            a[i] += dm;
            b[i] += dm * xc[i];
        }
    }
    let (mut sa, mut sb) = (T::ZERO, T::ZERO);
    for j in n8..x.len() {
        let dm = d[j].keep_if(!relu || y[j] > T::ZERO);
        sa += dm;
        sb += dm * x[j];
    }
    (a.iter().fold(sa, |p, q| p + *q), b.iter().fold(sb, |p, q| p + *q))
}
