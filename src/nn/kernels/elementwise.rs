//! ReLU and the per-channel bias, on both threads (candle's elementwise ops run on one).

use super::{alloc, contiguous, timing, Elem, SharedMut};
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Elements per parallel chunk: large enough that a task outweighs its scheduling, small enough that
/// both threads get work on the small maps of deep layers.
const CHUNK: usize = 1 << 15;

/// `out[i] = f(a[i], b[i])` in parallel chunks.
fn zip_map<T: Elem>(a: &[T], b: &[T], f: impl Fn(T, T) -> T + Sync) -> Vec<T> {
    let mut out = alloc::<T>(a.len());
    out.par_chunks_mut(CHUNK).zip(a.par_chunks(CHUNK)).zip(b.par_chunks(CHUNK)).for_each(|((o, a), b)| {
        for ((o, a), b) in o.iter_mut().zip(a).zip(b) {
            *o = f(*a, *b);
        }
    });
    out
}

/// `(y, dy) -> dy · [y > 0]`: the gradient through a ReLU whose output was `y`.
#[derive(Debug, Clone, Copy)]
pub struct ReluBwd;

impl CustomOp2 for ReluBwd {
    fn name(&self) -> &'static str {
        "mammoflow-relu-bwd"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        if l1.dims() != l2.dims() {
            bail!("relu backward: shapes {:?} and {:?} differ", l1.dims(), l2.dims());
        }
        let _t = timing::span(timing::Kind::Elementwise, 0.0);
        match (s1, s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => relu_bwd::<f32>(s1, l1, s2, l2),
            (CpuStorage::F64(_), CpuStorage::F64(_)) => relu_bwd::<f64>(s1, l1, s2, l2),
            _ => bail!("relu backward: f32 or f64 tensors of one dtype"),
        }
    }
}

fn relu_bwd<T: Elem>(s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
    let y = contiguous::<T>(s1, l1)?;
    let dy = contiguous::<T>(s2, l2)?;
    let out = zip_map(&y, &dy, |y, g| if y > T::ZERO { g } else { T::ZERO });
    Ok((T::storage(out), l1.shape().clone()))
}

/// ReLU on both threads, with its backward.
#[derive(Debug, Clone, Copy)]
pub struct Relu;

impl CustomOp1 for Relu {
    fn name(&self) -> &'static str {
        "mammoflow-relu"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let _t = timing::span(timing::Kind::Elementwise, 0.0);
        fn run<T: Elem>(s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
            let x = contiguous::<T>(s, l)?;
            let out = zip_map(&x, &x, |v, _| if v > T::ZERO { v } else { T::ZERO });
            Ok((T::storage(out), l.shape().clone()))
        }
        match s {
            CpuStorage::F32(_) => run::<f32>(s, l),
            CpuStorage::F64(_) => run::<f64>(s, l),
            _ => bail!("relu: f32 or f64 tensors"),
        }
    }
    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(res.apply_op2_no_bwd(grad, &ReluBwd)?))
    }
}

/// `z[n, c, ..] += b[c]` over planes of `plane` elements, in parallel over planes.
pub fn add_channel_bias<T: Elem>(z: &mut [T], b: &[T], plane: usize) {
    let c = b.len();
    let zp = SharedMut(z.as_mut_ptr());
    let planes = z.len() / plane.max(1);
    (0..planes).into_par_iter().with_min_len((CHUNK / plane.max(1)).max(1)).for_each(|i| {
        let zp = zp;
        // SAFETY: plane i is written by this task only.
        let p = unsafe { std::slice::from_raw_parts_mut(zp.0.add(i * plane), plane) };
        let v = b[i % c];
        p.iter_mut().for_each(|x| *x += v);
    });
}
