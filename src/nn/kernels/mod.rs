//! Our own CPU kernels behind candle: convolution (forward, backward-data, backward-weights), the
//! transposed convolution, max-pooling with indices, ReLU and the bias epilogue, GroupNorm, dropout and
//! the SGD update, as candle custom ops.
//!
//! # Why
//! candle 0.11's CPU convolution copies NCHW to NHWC on one thread, then runs im2col + `gemm` and
//! scatters back; its backward-data is a direct loop of short dot products (no GEMM) and its
//! backward-weights a convolution whose "kernel" is the whole gradient map. A 16 -> 16 3x3 conv fwd+bwd
//! on 4x16x248x248 ran at about 9 GFLOP/s, and a U-Net base-16 training step took 1.9 s against
//! PyTorch's 0.1-0.2 s. Every op also allocates, and the elementwise ops are single-threaded.
//!
//! # Design (what decided it)
//! - NCHW at the boundary, so the rest of candle (cat, narrow, loss) is untouched.
//! - Convolution = im2col of a tile of whole output rows of one image into a per-thread scratch buffer
//!   that is reused across calls (no allocation storm), then one `gemm` call that writes straight into
//!   the NCHW output (the tile's pixels are contiguous columns of the image's `Cout x OH·OW` matrix).
//!   1x1 stride-1 convolutions skip im2col: the input image is already the `Cin x H·W` matrix.
//! - Parallelism: rayon over (image, row tile) tasks, `gemm` single-threaded inside a task. The two
//!   cores here are SMT siblings: the GEMMs are compute-bound and gain little from the second thread,
//!   but the im2col / col2im copies do, and tasks keep both busy.
//! - Backward-weights: the same tiles, `dW += dY_tile · colᵀ` into a per-task accumulator (gemm's
//!   `read_dst`), then one reduction.
//! - Backward-data: `dcol = Wᵀ · dY_tile`, then col2im (scatter-add). Tasks are (image, block of input
//!   channels): col2im of different channels never writes the same pixel, so no locks and no per-thread
//!   copies of dX are needed for any stride or dilation. The transposed convolution's forward is this
//!   same routine (and its backward the forward convolution and backward-weights with roles swapped).
//! - `gemm` with its `x86-v4` feature (AVX-512 micro-kernels; Cargo.toml): 1.0-2.3x faster on
//!   conv-shaped products here than the AVX2 kernels candle gets by default. Measured here: 95-110
//!   GFLOP/s on one thread, 190 on both for large products.
//! - Figures that shaped the tiling (`bench train-step --layers`, `MAMMOFLOW_KERNEL_TRACE=1` prints
//!   every call, with its shape): one-row tiles repacked Dilation10's 25 MB fc6 kernel per 0.4 GFLOP (a third of the
//!   speed), hence at least 512 pixels per GEMM call; maps smaller than that (FCN's 8 x 8 fc6 / fc7)
//!   run as one GEMM over the batch cut between the threads (fc7: 65 -> 158 GFLOP/s); im2col rows of
//!   512 or 4,096 floats aliased in the cache (16-channel backward-weights 19-25 -> 87 GFLOP/s with
//!   padded rows); the flipped-kernel backward-data beats col2im on large maps (its GEMM's inner
//!   dimension is cout·9 instead of cout) but not on small ones (FCN fc6: 34 vs 135 GFLOP/s).
//! - Stride-1 convolutions whose padding makes a quarter or more of the taps read zeros (Dilation10's
//!   fc6 7x7 dilated 4 on 32 x 32: 38 %; its context layers; DeepLabv3's ASPP) take the grid route
//!   (`conv::Grid`): one GEMM per (kernel row, region of output columns that read the same kernel
//!   columns) over exactly the taps that read data, on a map reordered so each pair's pixels are
//!   contiguous. fc6 forward / backward-data / backward-weights: 201 / 207 / 214 ms against 270 / 327 /
//!   290 on tiles, 77 % of the time in gemm's micro-kernel at its peak; kernel-row bands alone (the
//!   route it replaced) skipped only 21 % of the taps.
//! - Elementwise work is branchless: ReLU masks of random data made every branch a coin toss
//!   (GroupNorm's backward took 13 ns per element; now about 1).
//!
//! # Dispatch
//! The device decides: on CUDA the layers call candle's own ops, on the CPU ours. [`set_fast`] /
//! [`with_candle_ops`] switch the CPU path back to candle's ops for the calling thread (benchmarks and
//! the loss-curve test compare the two), and `MAMMOFLOW_KERNELS=candle` does so for the whole process.

// `let p = p;` inside rayon closures is deliberate: it moves the whole `SharedMut` (which is Send) into
// the closure instead of its raw-pointer field (which is not), under edition 2021's disjoint captures.
#![allow(clippy::redundant_locals)]

pub mod conv;
pub mod elementwise;
pub mod norm;
pub mod ops;
pub mod optim;
pub mod pool;
pub mod timing;

#[cfg(test)]
mod tests;

use candle_core::{CpuStorage, Device, Layout, Result};
use std::borrow::Cow;
use std::cell::{Cell, RefCell};

thread_local! {
    static FAST: Cell<Option<bool>> = const { Cell::new(None) };
    static SCRATCH: RefCell<Vec<f64>> = const { RefCell::new(Vec::new()) };
}

/// `MAMMOFLOW_KERNELS=candle` switches the whole process to candle's ops (read once).
fn default_fast() -> bool {
    static FAST_DEFAULT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FAST_DEFAULT.get_or_init(|| !matches!(std::env::var("MAMMOFLOW_KERNELS").as_deref(), Ok("candle")))
}

/// Whether layers on `device` take our kernels (CPU, not switched off for this thread).
pub fn use_fast(device: &Device) -> bool {
    device.is_cpu() && FAST.with(|f| f.get()).unwrap_or_else(default_fast)
}

/// Chooses our kernels (`true`) or candle's ops (`false`) for layers run on this thread.
pub fn set_fast(on: bool) {
    FAST.with(|f| f.set(Some(on)));
}

/// Runs `f` with candle's own ops on this thread, then restores the previous choice.
pub fn with_candle_ops<R>(f: impl FnOnce() -> R) -> R {
    let prev = FAST.with(|c| c.replace(Some(false)));
    let r = f();
    FAST.with(|c| c.set(prev));
    r
}

/// The element types the kernels run on: f32 for training, f64 for the finite-difference checks.
pub trait Elem: Copy + Send + Sync + 'static + PartialOrd + std::ops::Add<Output = Self> + std::ops::Mul<Output = Self> + std::ops::AddAssign {
    const ZERO: Self;
    const ONE: Self;
    const NEG_INF: Self;
    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
    /// `self` when `keep`, else `+0.0`, without a branch: ReLU masks are random, and a branch per
    /// element mispredicted half the time (GroupNorm's backward ran at 13 ns per element).
    fn keep_if(self, keep: bool) -> Self;
    fn slice(s: &CpuStorage) -> Result<&[Self]>;
    fn storage(v: Vec<Self>) -> CpuStorage;
}

impl Elem for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const NEG_INF: Self = f32::NEG_INFINITY;
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn keep_if(self, keep: bool) -> Self {
        f32::from_bits(self.to_bits() & 0u32.wrapping_sub(keep as u32))
    }
    fn slice(s: &CpuStorage) -> Result<&[Self]> {
        s.as_slice::<f32>()
    }
    fn storage(v: Vec<Self>) -> CpuStorage {
        CpuStorage::F32(v)
    }
}

impl Elem for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const NEG_INF: Self = f64::NEG_INFINITY;
    fn from_f64(v: f64) -> Self {
        v
    }
    fn to_f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn keep_if(self, keep: bool) -> Self {
        f64::from_bits(self.to_bits() & 0u64.wrapping_sub(keep as u64))
    }
    fn slice(s: &CpuStorage) -> Result<&[Self]> {
        s.as_slice::<f64>()
    }
    fn storage(v: Vec<Self>) -> CpuStorage {
        CpuStorage::F64(v)
    }
}

/// The tensor's elements in row-major order: a borrowed slice when its layout is contiguous (any start
/// offset), else a copy gathered through its strides. Every kernel reads its inputs through this, so a
/// non-contiguous view (a `narrow`, a transpose) is copied on purpose, once, and only then.
pub fn contiguous<'a, T: Elem>(s: &'a CpuStorage, l: &Layout) -> Result<Cow<'a, [T]>> {
    let data = T::slice(s)?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(Cow::Borrowed(&data[a..b])),
        None => Ok(Cow::Owned(gather(data, l))),
    }
}

/// Copies a strided view into row-major order (innermost dimension as a run when its stride is 1).
fn gather<T: Elem>(data: &[T], l: &Layout) -> Vec<T> {
    let dims = l.dims();
    let strides = l.stride();
    let n: usize = dims.iter().product();
    let mut out = Vec::with_capacity(n);
    if n == 0 {
        return out;
    }
    let rank = dims.len();
    let (inner, inner_stride) = (dims[rank - 1], strides[rank - 1]);
    let mut idx = vec![0usize; rank.saturating_sub(1)];
    loop {
        let base = l.start_offset() + idx.iter().zip(strides).map(|(i, s)| i * s).sum::<usize>();
        if inner_stride == 1 {
            out.extend_from_slice(&data[base..base + inner]);
        } else {
            out.extend((0..inner).map(|i| data[base + i * inner_stride]));
        }
        // Odometer over the outer dimensions.
        let mut d = rank - 1;
        loop {
            if d == 0 {
                return out;
            }
            d -= 1;
            idx[d] += 1;
            if idx[d] < dims[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

/// A buffer of `len` elements, uninitialised content (every caller writes before it reads). The
/// kernels allocate their outputs through this so that large outputs are not zero-filled twice.
#[allow(clippy::uninit_vec)]
pub fn alloc<T: Elem>(len: usize) -> Vec<T> {
    let mut v = Vec::with_capacity(len);
    // SAFETY: T is f32 or f64 (plain old data, every bit pattern valid); callers overwrite every element.
    unsafe { v.set_len(len) };
    v
}

/// Runs `f` with this thread's scratch buffer of at least `len` elements (kept between calls, so the
/// im2col tiles of every layer reuse one allocation per thread).
pub fn with_scratch<T: Elem, R>(len: usize, f: impl FnOnce(&mut [T]) -> R) -> R {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let words = (len * std::mem::size_of::<T>()).div_ceil(8);
        if s.len() < words {
            s.resize(words, 0.0);
        }
        // SAFETY: the buffer holds at least `len * size_of::<T>()` bytes, f64 alignment covers f32 and
        // f64, and T is plain old data.
        let buf = unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr() as *mut T, len) };
        f(buf)
    })
}

/// What a forward pass keeps for its backward (max-pool arg-maxes, dropout masks, GroupNorm
/// statistics): set once by `cpu_fwd`, shared with the backward op.
#[derive(Debug)]
pub struct Saved<V>(std::sync::Mutex<Option<std::sync::Arc<V>>>);

impl<V> Default for Saved<V> {
    fn default() -> Self {
        Saved(std::sync::Mutex::new(None))
    }
}

impl<V> Saved<V> {
    pub fn set(&self, v: V) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(std::sync::Arc::new(v));
    }
    /// The saved value, or an error naming `op` when its backward runs before its forward.
    pub fn get(&self, op: &str) -> Result<std::sync::Arc<V>> {
        match self.0.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            Some(v) => Ok(v),
            None => candle_core::bail!("{op} backward before its forward"),
        }
    }
}

/// Runs a unary op's `run::<T>` for f32 or f64 storage.
pub fn by_dtype1(what: &str, s: &CpuStorage, f32_run: impl FnOnce() -> Result<(CpuStorage, candle_core::Shape)>, f64_run: impl FnOnce() -> Result<(CpuStorage, candle_core::Shape)>) -> Result<(CpuStorage, candle_core::Shape)> {
    match s {
        CpuStorage::F32(_) => f32_run(),
        CpuStorage::F64(_) => f64_run(),
        _ => candle_core::bail!("{what}: f32 or f64 tensors"),
    }
}

/// A raw pointer that rayon tasks may share: each task writes a disjoint region (the callers say which).
#[derive(Clone, Copy)]
pub(crate) struct SharedMut<T>(pub *mut T);
// SAFETY: used only for disjoint writes from parallel tasks, documented at each use.
unsafe impl<T> Send for SharedMut<T> {}
unsafe impl<T> Sync for SharedMut<T> {}

/// Number of rayon threads (tasks are sized from it).
pub fn threads() -> usize {
    rayon::current_num_threads().max(1)
}
