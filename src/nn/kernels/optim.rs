//! The SGD-with-momentum update in place: two passes over each parameter instead of candle's six
//! allocating ops (`λ·p`, `+`, `μ·v`, `+`, `lr·v`, `−`, then a copy back into the variable).

use super::{contiguous, Elem};
use candle_core::{bail, CpuStorage, InplaceOp2, InplaceOp3, Layout, Result};
use rayon::prelude::*;

const CHUNK: usize = 1 << 14;

fn slice_mut<'a, T: Elem>(s: &'a mut CpuStorage, l: &Layout, what: &str) -> Result<&'a mut [T]> {
    let Some((a, b)) = l.contiguous_offsets() else { bail!("{what}: the updated tensor must be contiguous") };
    let v: &mut [T] = match s {
        CpuStorage::F32(v) if std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>() => {
            // SAFETY: T is f32 here (checked by TypeId).
            unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut T, v.len()) }
        }
        CpuStorage::F64(v) if std::any::TypeId::of::<T>() == std::any::TypeId::of::<f64>() => {
            // SAFETY: T is f64 here (checked by TypeId).
            unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut T, v.len()) }
        }
        _ => bail!("{what}: f32 or f64 tensors of one dtype"),
    };
    Ok(&mut v[a..b])
}

/// `v ← μ·v + g + λ·p` (PyTorch's buffer update with L2 weight decay; `v` starts at zero, so the first
/// step gives `v = g + λ·p` as PyTorch's does). Applied to `v` with `(g, p)`.
pub struct MomentumUpdate {
    pub momentum: f64,
    pub weight_decay: f64,
}

impl MomentumUpdate {
    fn run<T: Elem>(&self, v: &mut CpuStorage, lv: &Layout, g: &CpuStorage, lg: &Layout, p: &CpuStorage, lp: &Layout) -> Result<()> {
        let g = contiguous::<T>(g, lg)?;
        let p = contiguous::<T>(p, lp)?;
        let v = slice_mut::<T>(v, lv, "sgd momentum")?;
        if v.len() != g.len() || v.len() != p.len() {
            bail!("sgd momentum: sizes {} {} {} differ", v.len(), g.len(), p.len());
        }
        let (mu, wd) = (T::from_f64(self.momentum), T::from_f64(self.weight_decay));
        v.par_chunks_mut(CHUNK).zip(g.par_chunks(CHUNK)).zip(p.par_chunks(CHUNK)).for_each(|((v, g), p)| {
            for ((v, g), p) in v.iter_mut().zip(g).zip(p) {
                *v = mu * *v + *g + wd * *p;
            }
        });
        Ok(())
    }
}

impl InplaceOp3 for MomentumUpdate {
    fn name(&self) -> &'static str {
        "mammoflow-sgd-momentum"
    }
    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<()> {
        match s2 {
            CpuStorage::F32(_) => self.run::<f32>(s1, l1, s2, l2, s3, l3),
            CpuStorage::F64(_) => self.run::<f64>(s1, l1, s2, l2, s3, l3),
            _ => bail!("sgd momentum: f32 or f64 tensors"),
        }
    }
}

/// `p ← p + α·v`. Applied to `p` with `v`.
pub struct Axpy {
    pub alpha: f64,
}

impl Axpy {
    fn run<T: Elem>(&self, p: &mut CpuStorage, lp: &Layout, v: &CpuStorage, lv: &Layout) -> Result<()> {
        let v = contiguous::<T>(v, lv)?;
        let p = slice_mut::<T>(p, lp, "sgd step")?;
        if v.len() != p.len() {
            bail!("sgd step: sizes {} and {} differ", p.len(), v.len());
        }
        let a = T::from_f64(self.alpha);
        p.par_chunks_mut(CHUNK).zip(v.par_chunks(CHUNK)).for_each(|(p, v)| {
            for (p, v) in p.iter_mut().zip(v) {
                *p += a * *v;
            }
        });
        Ok(())
    }
}

impl InplaceOp2 for Axpy {
    fn name(&self) -> &'static str {
        "mammoflow-axpy"
    }
    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<()> {
        match s2 {
            CpuStorage::F32(_) => self.run::<f32>(s1, l1, s2, l2),
            CpuStorage::F64(_) => self.run::<f64>(s1, l1, s2, l2),
            _ => bail!("sgd step: f32 or f64 tensors"),
        }
    }
}
