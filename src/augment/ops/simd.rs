//! Run-time choice between the baseline build of a hot loop and an AVX2 build of the same source.
//!
//! The crate is compiled for baseline x86-64 (SSE2), where the compiler vectorises the ops' loops four
//! `f32` lanes wide. Almost every machine the study runs on has AVX2, where the same loops run eight lanes
//! wide. Rather than require `-C target-cpu` for the whole crate, each op passes its body as a closure to
//! [`dispatch`], which calls it from inside a function compiled with AVX2 enabled when the CPU has it. The
//! kernels the closure calls are `#[inline(always)]` so that they are compiled inside that function.
//!
//! Results do not depend on the path: no kernel uses fused multiply-add or other contraction, so the
//! baseline and AVX2 builds perform the same IEEE operations in the same order (tests check this).

#[cfg(test)]
use std::sync::atomic::{AtomicBool, Ordering};

/// Test switch: when set, [`dispatch`] always takes the baseline path.
#[cfg(test)]
pub(crate) static FORCE_BASELINE: AtomicBool = AtomicBool::new(false);

/// Calls `f`, compiled with AVX2 enabled when the CPU supports it, otherwise as-is.
#[inline(always)]
pub(crate) fn dispatch<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[cfg(test)]
        let allowed = !FORCE_BASELINE.load(Ordering::Relaxed);
        #[cfg(not(test))]
        let allowed = true;
        if allowed
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
        {
            // SAFETY: `avx512` only requires the instruction sets detected just above.
            return unsafe { avx512(f) };
        }
        if allowed && std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: `avx2` only requires the AVX2 instruction set, detected just above.
            return unsafe { avx2(f) };
        }
    }
    f()
}

/// `f()` compiled with AVX2 available to everything inlined into it.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// `f()` compiled with AVX-512 (F, BW, VL) available to everything inlined into it.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl")]
fn avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}
