//! Run-time choice between the baseline build of a hot loop and AVX2 / AVX-512 builds of the same source.
//!
//! The crate is compiled for baseline x86-64 (SSE2), where the compiler vectorises the ops' loops four
//! `f32` lanes wide. The machines the study runs on have AVX2 (eight lanes) and often AVX-512 (sixteen).
//! Rather than require `-C target-cpu` for the whole crate, each op passes its body as an
//! `#[inline(always)]` closure to [`dispatch`], which calls it from inside a function compiled with the
//! widest instruction set the CPU has. The kernels the closure calls are `#[inline(always)]` too, so they
//! are compiled inside that function. (Values the closure captures are run-time values there, so kernels
//! derive type-dependent constants from the sample type, not from captures.)
//!
//! Results do not depend on the path: no kernel uses fused multiply-add or other contraction, so every
//! build performs the same IEEE operations in the same order (tests run each op on every path and compare).

/// Instruction-set levels, widest first.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Level {
    Avx512,
    Avx2,
    Baseline,
}

#[cfg(test)]
thread_local! {
    /// Test switch: the widest level [`dispatch`] may use on this thread.
    static CAP: std::cell::Cell<Level> = const { std::cell::Cell::new(Level::Avx512) };
}

/// The widest level this CPU supports (and, in tests, this thread allows).
#[inline(always)]
fn level() -> Level {
    #[cfg(test)]
    let cap = CAP.with(|c| c.get());
    #[cfg(not(test))]
    let cap = Level::Avx512;
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if cap <= Level::Avx512 && has!("avx512f") && has!("avx512bw") && has!("avx512vl") && has!("avx2") {
            return Level::Avx512;
        }
        if cap <= Level::Avx2 && has!("avx2") {
            return Level::Avx2;
        }
    }
    let _ = cap;
    Level::Baseline
}

/// Calls `f` compiled for the widest instruction set the CPU supports.
#[inline(always)]
pub(crate) fn dispatch<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    match level() {
        // SAFETY: each function only requires the instruction sets `level` detected.
        Level::Avx512 => return unsafe { avx512(f) },
        Level::Avx2 => return unsafe { avx2(f) },
        Level::Baseline => {}
    }
    f()
}

/// `f()` compiled with AVX2 available to everything inlined into it.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// `f()` compiled with AVX-512 (F, BW, VL) available to everything inlined into it. (Naming these
/// target features needs Rust 1.89.)
///
/// # Safety
/// The CPU must support AVX2, AVX-512F, AVX-512BW and AVX-512VL.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl")]
unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// Runs `f` with dispatch capped at `cap` on this thread (tests and the timing printout).
#[cfg(test)]
pub(crate) fn with_cap<R>(cap: Level, f: impl FnOnce() -> R) -> R {
    let old = CAP.with(|c| c.replace(cap));
    let r = f();
    CAP.with(|c| c.set(old));
    r
}

/// Asserts that `f` gives the same result on every path this CPU supports; returns it.
#[cfg(test)]
pub(crate) fn assert_same_on_all_paths<R: PartialEq + std::fmt::Debug>(f: impl Fn() -> R) -> R {
    let best = f();
    for cap in [Level::Avx2, Level::Baseline] {
        let r = with_cap(cap, &f);
        assert!(r == best, "results differ between {:?} and {cap:?}", level());
    }
    best
}
