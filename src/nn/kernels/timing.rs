//! Per-layer-type time and FLOP counters for `bench train-step --layers`.
//!
//! Off by default (one relaxed atomic load per op). When a span is open on a thread, spans opened inside
//! it are not counted: a layer's backward that runs other ops is charged to that layer alone.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// The layer types of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    ConvFwd,
    ConvBwdData,
    ConvBwdWeights,
    ConvTranspose,
    Pool,
    Resize,
    Norm,
    Elementwise,
}

impl Kind {
    pub const ALL: [Kind; 8] = [Kind::ConvFwd, Kind::ConvBwdData, Kind::ConvBwdWeights, Kind::ConvTranspose, Kind::Pool, Kind::Resize, Kind::Norm, Kind::Elementwise];
    pub fn name(self) -> &'static str {
        match self {
            Kind::ConvFwd => "conv forward",
            Kind::ConvBwdData => "conv backward-data",
            Kind::ConvBwdWeights => "conv backward-weights",
            Kind::ConvTranspose => "transposed conv (fwd+bwd)",
            Kind::Pool => "max-pool (fwd+bwd)",
            Kind::Resize => "bilinear resize (fwd+bwd)",
            Kind::Norm => "group norm (fwd+bwd)",
            Kind::Elementwise => "elementwise (ReLU, bias)",
        }
    }
}

static ON: AtomicBool = AtomicBool::new(false);
static TOTALS: Mutex<[(f64, f64, u64); 8]> = Mutex::new([(0.0, 0.0, 0); 8]);

thread_local! {
    static OPEN: Cell<bool> = const { Cell::new(false) };
    static CALLS: Cell<u64> = const { Cell::new(0) };
}

/// Kernel calls made from this thread so far (tests use it to see which path a layer took).
pub fn calls_on_this_thread() -> u64 {
    CALLS.with(|c| c.get())
}

/// Starts counting (and clears the counters).
pub fn start() {
    *TOTALS.lock().unwrap_or_else(|e| e.into_inner()) = [(0.0, 0.0, 0); 8];
    ON.store(true, Ordering::Relaxed);
}

/// Stops counting and returns `(kind, seconds, flops, calls)` per kind.
pub fn stop() -> Vec<(Kind, f64, f64, u64)> {
    ON.store(false, Ordering::Relaxed);
    let t = *TOTALS.lock().unwrap_or_else(|e| e.into_inner());
    Kind::ALL.iter().enumerate().map(|(i, k)| (*k, t[i].0, t[i].1, t[i].2)).collect()
}

/// Adds `seconds` and `flops` to `kind` directly (for layers timed outside a span, such as candle ops).
pub fn add(kind: Kind, seconds: f64, flops: f64) {
    if ON.load(Ordering::Relaxed) {
        let i = Kind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
        let mut t = TOTALS.lock().unwrap_or_else(|e| e.into_inner());
        t[i].0 += seconds;
        t[i].1 += flops;
        t[i].2 += 1;
    }
}

/// An open span; its time is added to its kind when dropped.
pub struct Span {
    kind: Kind,
    flops: f64,
    t0: Option<Instant>,
    detail: Option<String>,
}

fn trace_on() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("MAMMOFLOW_KERNEL_TRACE").is_some())
}

/// Like [`span`]; with `MAMMOFLOW_KERNEL_TRACE` set, each call is also printed to stderr with `detail`.
pub fn span_with(kind: Kind, flops: f64, detail: impl FnOnce() -> String) -> Span {
    let mut s = span(kind, flops);
    if s.t0.is_some() && trace_on() {
        s.detail = Some(detail());
    }
    s
}

/// Opens a span of `kind` doing `flops` floating-point operations (0 when not meaningful).
pub fn span(kind: Kind, flops: f64) -> Span {
    CALLS.with(|c| c.set(c.get() + 1));
    let t0 = (ON.load(Ordering::Relaxed) && !OPEN.with(|o| o.replace(true))).then(Instant::now);
    Span { kind, flops, t0, detail: None }
}

impl Drop for Span {
    fn drop(&mut self) {
        if let Some(t0) = self.t0 {
            OPEN.with(|o| o.set(false));
            let secs = t0.elapsed().as_secs_f64();
            if let Some(d) = &self.detail {
                eprintln!("kernel {:<24} {:>8.3} ms {:>7.1} GFLOP/s  {d}", self.kind.name(), secs * 1e3, self.flops / secs.max(1e-12) / 1e9);
            }
            add(self.kind, secs, self.flops);
        }
    }
}
