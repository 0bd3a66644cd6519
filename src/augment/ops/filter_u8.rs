//! Fixed-point Gaussian filter for 8-bit images (the `u8` path of [`super::gaussian_blur`] and
//! [`super::unsharp`]).
//!
//! Why a second path: for 8-bit data the `f32` filter moves four bytes per sample through both passes
//! and is slower than OpenCV, which filters 8-bit images in 16-bit fixed point. This path does the same,
//! in the same spirit as OpenCV's bit-exact 8-bit Gaussian: sixteen-bit lanes, so each vector instruction
//! handles twice as many pixels and the working rows stay in L1.
//!
//! * Horizontal pass first, on the source row padded by `r` replicated samples: weights in Q8 summing
//!   to exactly 256, so the result is the blurred row in Q8.8 (at most 255 * 256, fits `u16`; all terms
//!   are non-negative, so no partial sum can overflow).
//! * Vertical pass over a ring of `2r+1` such rows: weights in Q16 summing to 65536 (the centre capped at
//!   65535), each term the high half of a 16x16-bit product (`vpmulhuw`). Truncation loses at most one
//!   Q8.8 unit per tap; adding half of that per tap back before the final shift leaves the result
//!   unbiased and a constant image exactly constant, which limits the path to radius <= 20 (sigma <= 6.6;
//!   larger kernels take the `f32` path).
//!
//! Compared with the exact `f32` filter the result differs by at most one level in the tests (weight
//! quantisation), as OpenCV's 8-bit blur does.

use super::filter::Kernel;

/// Largest radius for which the truncation bias stays below half a level.
const MAX_RADIUS: usize = 20;

/// Quantised weights: `h` in Q8 (sum 256), `v` in Q16 (sum 65536, centre at most 65535).
pub(super) struct FixedKernel {
    h: Vec<u16>,
    v: Vec<u16>,
}

impl FixedKernel {
    /// The fixed-point form of `k`, or `None` when its radius is too large for this path.
    pub(super) fn new(k: &Kernel) -> Option<Self> {
        let r = k.radius();
        if r > MAX_RADIUS {
            return None;
        }
        let quantise = |one: f64| -> Vec<u16> {
            let mut q: Vec<u32> = k.w.iter().map(|&w| (w as f64 * one).round() as u32).collect();
            let sides: u32 = 2 * q[1..].iter().sum::<u32>();
            q[0] = (one as u32 - sides).min(u16::MAX as u32);
            q.into_iter().map(|v| v as u16).collect()
        };
        Some(Self { h: quantise(256.0), v: quantise(65536.0) })
    }

    fn radius(&self) -> usize {
        self.h.len() - 1
    }
}

/// Blurs `src` (`w` columns) row by row; for each output row calls
/// `emit(source_row, blurred_row_q8_8_plus_bias, output_row)`, where `(blurred + 128) >> 8` is the
/// rounded blurred value and `blurred / 256` the value itself.
#[inline(always)]
pub(super) fn blur_rows_u8(
    src: &[u8],
    w: usize,
    k: &FixedKernel,
    out: &mut [u8],
    mut emit: impl FnMut(&[u8], &[u16], &mut [u8]),
) {
    let h = src.len().checked_div(w).unwrap_or(0);
    if h == 0 {
        return;
    }
    let r = k.radius();
    let taps = 2 * r + 1;
    let slots = taps.min(h);
    let bias = (taps / 2) as u16; // half a truncated unit per tap
    let mut ring = vec![0u16; slots * w];
    let mut padded = vec![0u8; w + 2 * r];
    let mut sum = vec![0u16; w];
    let mut starts = vec![0usize; taps];
    for (i, start) in starts.iter_mut().enumerate() {
        *start = i;
    }
    let mut done = 0usize; // source rows [0, done) are in the ring
    for (y, out_row) in out.chunks_exact_mut(w).enumerate() {
        while done <= (y + r).min(h - 1) {
            let row = &src[done * w..][..w];
            padded[r..r + w].copy_from_slice(row);
            padded[..r].fill(row[0]);
            padded[r + w..].fill(row[w - 1]);
            horizontal(&mut ring[(done % slots) * w..][..w], &padded, &starts, &k.h);
            done += 1;
        }
        vertical(&mut sum, &ring, w, slots, y, r, h, &k.v, bias);
        emit(&src[y * w..][..w], &sum, out_row);
    }
}

/// `acc[x] = h0 * p[x+r] + sum_k hk * (p[x+r-k] + p[x+r+k])` in Q8.8; `starts[i] = i`.
#[inline(always)]
fn horizontal(acc: &mut [u16], p: &[u8], starts: &[usize], wts: &[u16]) {
    let (r, n) = (wts.len() - 1, acc.len());
    let tap = |i: usize| &p[starts[i]..][..n];
    let c = tap(r);
    let w0 = wts[0];
    acc.iter_mut().zip(c).for_each(|(a, &c)| *a = c as u16 * w0);
    let mut k = 1;
    while k < r {
        let (u1, d1, w1, u2, d2, w2) = (tap(r - k), tap(r + k), wts[k], tap(r - k - 1), tap(r + k + 1), wts[k + 1]);
        for ((((a, &u1), &d1), &u2), &d2) in acc.iter_mut().zip(u1).zip(d1).zip(u2).zip(d2) {
            *a += (u1 as u16 + d1 as u16) * w1 + (u2 as u16 + d2 as u16) * w2;
        }
        k += 2;
    }
    if k == r {
        let (u1, d1, w1) = (tap(r - k), tap(r + k), wts[k]);
        for ((a, &u1), &d1) in acc.iter_mut().zip(u1).zip(d1) {
            *a += (u1 as u16 + d1 as u16) * w1;
        }
    }
}

/// High half of `a * b` (`vpmulhuw`).
#[inline(always)]
fn mulhi(a: u16, b: u16) -> u16 {
    ((a as u32 * b as u32) >> 16) as u16
}

/// Vertical pass for output row `y`: `acc[x] = bias + sum_i mulhi(row(clamp(y - r + i))[x], v_i)`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn vertical(acc: &mut [u16], ring: &[u16], w: usize, slots: usize, y: usize, r: usize, h: usize, v: &[u16], bias: u16) {
    let row = |i: usize| {
        let sy = (y + i).saturating_sub(r).min(h - 1);
        &ring[(sy % slots) * w..][..w]
    };
    let taps = 2 * r + 1;
    acc.fill(bias);
    let mut i = 0;
    while i + 3 <= taps {
        let (a, b, c) = (row(i), row(i + 1), row(i + 2));
        let (wa, wb, wc) = (v[i.abs_diff(r)], v[(i + 1).abs_diff(r)], v[(i + 2).abs_diff(r)]);
        for (((s, &a), &b), &c) in acc.iter_mut().zip(a).zip(b).zip(c) {
            *s += mulhi(a, wa) + mulhi(b, wb) + mulhi(c, wc);
        }
        i += 3;
    }
    while i < taps {
        let (a, wa) = (row(i), v[i.abs_diff(r)]);
        for (s, &a) in acc.iter_mut().zip(a) {
            *s += mulhi(a, wa);
        }
        i += 1;
    }
}
