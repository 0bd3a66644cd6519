//! ReLU and the per-channel bias, on both threads (candle's elementwise ops run on one).

use super::{alloc, by_dtype1, contiguous, timing, Elem, Saved, SharedMut};
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::sync::Arc;

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
    let out = zip_map(&y, &dy, |y, g| g.keep_if(y > T::ZERO));
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
            let out = zip_map(&x, &x, |v, _| v.keep_if(v > T::ZERO));
            Ok((T::storage(out), l.shape().clone()))
        }
        by_dtype1("relu", s, || run::<f32>(s, l), || run::<f64>(s, l))
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


thread_local! {
    // Per thread: a forward pass runs on its caller's thread, and two trainings in one process (two
    // pipeline workers, or parallel tests) must not draw from each other's sequence.
    static DROPOUT: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0x05EE_DD50, 0)) };
}

/// Seeds this thread's dropout masks (and restarts their sequence), so a seeded training run drops the
/// same units.
pub fn set_dropout_seed(seed: u64) {
    DROPOUT.with(|d| d.set((seed, 0)));
}

/// Dropout in one pass: a keep-mask drawn per chunk from a seed (call number, chunk), so it is the
/// same with 1 or N threads; `y = x · mask / (1 − p)`, and the backward multiplies by the same mask.
/// candle-nn's dropout is five allocating ops.
#[derive(Debug)]
pub struct Dropout {
    p: f64,
    mask: Saved<Vec<u8>>,
}

impl Dropout {
    pub fn new(p: f64) -> Self {
        Dropout { p, mask: Saved::default() }
    }

    fn run<T: Elem>(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous::<T>(s, l)?;
        let _t = timing::span(timing::Kind::Elementwise, 0.0);
        let (base, call) = DROPOUT.with(|d| {
            let (base, call) = d.get();
            d.set((base, call + 1));
            (base, call)
        });
        let seed = base ^ call.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        // 16 random bits per element (four from each 64-bit draw): p is honoured to 1/65536.
        let threshold = (self.p * 65536.0).round() as u64;
        let scale = T::from_f64(1.0 / (1.0 - self.p));
        let mut y = alloc::<T>(x.len());
        let mut mask = vec![0u8; x.len()];
        y.par_chunks_mut(CHUNK).zip(mask.par_chunks_mut(CHUNK)).zip(x.par_chunks(CHUNK)).enumerate().for_each(|(c, ((y, m), x))| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_add(c as u64));
            let mut bits = 0u64;
            for (j, ((y, m), x)) in y.iter_mut().zip(m.iter_mut()).zip(x).enumerate() {
                if j % 4 == 0 {
                    bits = rng.next_u64();
                }
                let keep = (bits & 0xffff) >= threshold;
                bits >>= 16;
                *m = keep as u8;
                *y = (*x * scale).keep_if(keep);
            }
        });
        self.mask.set(mask);
        Ok((T::storage(y), l.shape().clone()))
    }
}

impl CustomOp1 for Dropout {
    fn name(&self) -> &'static str {
        "mammoflow-dropout"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        if !(0.0..1.0).contains(&self.p) {
            bail!("dropout: p = {} must be in [0, 1)", self.p);
        }
        by_dtype1("dropout", s, || self.run::<f32>(s, l), || self.run::<f64>(s, l))
    }
    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let mask = self.mask.get("dropout")?;
        Ok(Some(grad.apply_op1_no_bwd(&DropoutBwd { mask, scale: 1.0 / (1.0 - self.p) })?))
    }
}

struct DropoutBwd {
    mask: Arc<Vec<u8>>,
    scale: f64,
}

impl CustomOp1 for DropoutBwd {
    fn name(&self) -> &'static str {
        "mammoflow-dropout-bwd"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        fn run<T: Elem>(op: &DropoutBwd, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
            let g = contiguous::<T>(s, l)?;
            if g.len() != op.mask.len() {
                bail!("dropout backward: gradient size {} differs from the forward's {}", g.len(), op.mask.len());
            }
            let scale = T::from_f64(op.scale);
            let mut out = alloc::<T>(g.len());
            out.par_chunks_mut(CHUNK).zip(g.par_chunks(CHUNK)).zip(op.mask.par_chunks(CHUNK)).for_each(|((o, g), m)| {
                for ((o, g), m) in o.iter_mut().zip(g).zip(m) {
                    *o = (*g * scale).keep_if(*m != 0);
                }
            });
            Ok((T::storage(out), l.shape().clone()))
        }
        by_dtype1("dropout backward", s, || run::<f32>(self, s, l), || run::<f64>(self, s, l))
    }
}
