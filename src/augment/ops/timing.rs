//! Timing printout for every op (not an assertion): pairs per second on one thread, where a pair is an
//! image plus its label map through the op (intensity ops count the label copy as free), for `u8` and
//! `u16` at 1024 and 256 pixels, the whole augmentation chain, and the imageproc / rand_distr
//! alternatives the module docs compare against.
//!
//! Run in release: `cargo test --release --lib augment::ops::timing -- --ignored --nocapture`.

use super::simd::{with_cap, Level};
use super::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::hint::black_box;
use std::time::{Duration, Instant};

/// A mammogram-like test image: dark background, a bright textured half-ellipse (the breast) touching
/// the left edge, and a label map marking a lesion inside it.
fn phantom<T: Sample>(n: usize) -> (Plane<T>, Plane<u8>) {
    let mut img = Vec::with_capacity(n * n);
    let mut lab = Vec::with_capacity(n * n);
    for y in 0..n {
        for x in 0..n {
            let (u, v) = (x as f32 / n as f32, (y as f32 / n as f32 - 0.5) * 2.0);
            let inside = (u / 0.7).powi(2) + v * v < 1.0;
            let tex = 0.5 + 0.25 * (x as f32 * 0.11).sin() * (y as f32 * 0.07).cos() + 0.1 * (u * 9.0).sin();
            let f = if inside { 0.25 + 0.6 * tex * (1.0 - 0.5 * u) } else { 0.02 };
            img.push(T::from_f32_round_clamped(f * T::MAX));
            let d2 = (u - 0.35).powi(2) + v.powi(2);
            lab.push(if d2 < 0.01 { 2 } else if inside { 1 } else { 0 });
        }
    }
    (Plane::new(n, n, img).unwrap(), Plane::new(n, n, lab).unwrap())
}

/// Pairs per second of `f`: the best of several batches, each at least `min_batch` long.
fn rate(mut f: impl FnMut()) -> f64 {
    f(); // warm-up (allocator, caches)
    let min_batch = Duration::from_millis(60);
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let (start, mut n) = (Instant::now(), 0u32);
        while start.elapsed() < min_batch || n < 2 {
            f();
            n += 1;
        }
        best = best.min(start.elapsed().as_secs_f64() / n as f64);
    }
    1.0 / best
}

fn report(name: &str, n: usize, bits: u32, pairs_per_s: f64) {
    println!("{name:<40} {n:>5}px {bits:>2}-bit {pairs_per_s:>10.0} pairs/s  ({:>8.3} ms)", 1e3 / pairs_per_s);
}

/// The whole augmentation chain. Each intermediate is dropped as soon as the next exists (as Python's
/// reference counting does in albumentations); shadowing with `let` would keep all of them alive to
/// the end and make glibc return and re-fault ~16 MB per call.
fn chain<T: Sample>(img: &Plane<T>, lab: &Plane<u8>, rng: &mut ChaCha8Rng) -> (Plane<T>, Plane<u8>) {
    let zero = T::from_f32_round_clamped(0.0);
    let (mut i, mut l) = rotate(img, lab, 17.0, zero, 0);
    i = gaussian_blur(&i, 1.5);
    (i, l) = mirror(&i, &l, true);
    i = unsharp(&i, 1.5, 1.0);
    i = gaussian_noise(&i, 0.02, rng);
    i = linear_stretch(&i, 1.0, 99.0);
    (clahe(&i, (8, 8), 2.0), l)
}

fn ops<T: Sample>(n: usize, suffix: &str) {
    let bits = if T::LEVELS == 256 { 8 } else { 16 };
    let report = |name: &str, n, bits, r| report(&format!("{name}{suffix}"), n, bits, r);
    let (img, lab) = phantom::<T>(n);
    let zero = T::from_f32_round_clamped(0.0);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    report("rotate 17", n, bits, rate(|| drop(black_box(rotate(&img, &lab, 17.0, zero, 0)))));
    report("gaussian_blur sigma 1.5", n, bits, rate(|| drop(black_box(gaussian_blur(&img, 1.5)))));
    report("mirror horizontal", n, bits, rate(|| drop(black_box(mirror(&img, &lab, true)))));
    report("unsharp sigma 1.5 amount 1", n, bits, rate(|| drop(black_box(unsharp(&img, 1.5, 1.0)))));
    report("gaussian_noise 0.02", n, bits, rate(|| drop(black_box(gaussian_noise(&img, 0.02, &mut rng)))));
    report("linear_stretch 1..99", n, bits, rate(|| drop(black_box(linear_stretch(&img, 1.0, 99.0)))));
    report("clahe 8x8 clip 2", n, bits, rate(|| drop(black_box(clahe(&img, (8, 8), 2.0)))));
    report("CHAIN (all seven)", n, bits, rate(|| drop(black_box(chain(&img, &lab, &mut rng)))));
}

#[test]
#[ignore = "timing printout; run with --release --ignored --nocapture"]
fn timing_ops() {
    for n in [1024, 256] {
        ops::<u8>(n, "");
        ops::<u16>(n, "");
    }
    with_cap(Level::Avx2, || {
        ops::<u8>(1024, " [avx2]");
        ops::<u16>(1024, " [avx2]");
    });
}

#[test]
#[ignore = "timing printout; run with --release --ignored --nocapture"]
fn timing_alternatives() {
    use image::{ImageBuffer, Luma};
    use imageproc::geometric_transformations::{rotate_about_center, Border, Interpolation};
    let n = 1024;
    let (img8, _) = phantom::<u8>(n);
    let (img16, _) = phantom::<u16>(n);
    let b8: ImageBuffer<Luma<u8>, Vec<u8>> = ImageBuffer::from_raw(n as u32, n as u32, img8.data.clone()).unwrap();
    let b16: ImageBuffer<Luma<u16>, Vec<u16>> = ImageBuffer::from_raw(n as u32, n as u32, img16.data.clone()).unwrap();
    let theta = 17f32.to_radians();
    let rot8 = || rotate_about_center(&b8, theta, Interpolation::Bilinear, Border::Constant(Luma([0u8])));
    let rot16 = || rotate_about_center(&b16, theta, Interpolation::Bilinear, Border::Constant(Luma([0u16])));
    report("imageproc rotate (image only)", n, 8, rate(|| drop(black_box(rot8()))));
    report("imageproc rotate (image only)", n, 16, rate(|| drop(black_box(rot16()))));
    use imageproc::filter::gaussian_blur_f32;
    report("imageproc gaussian_blur_f32 1.5", n, 8, rate(|| drop(black_box(gaussian_blur_f32(&b8, 1.5)))));
    report("imageproc gaussian_blur_f32 1.5", n, 16, rate(|| drop(black_box(gaussian_blur_f32(&b16, 1.5)))));
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    report(
        "StandardNormal+ChaCha8 noise",
        n,
        8,
        rate(|| {
            let sigma = 0.02 * 255.0;
            let out: Vec<u8> = img8
                .data
                .iter()
                .map(|&p| {
                    let z: f32 = rand::Rng::sample(&mut rng, rand_distr::StandardNormal);
                    u8::from_f32_round_clamped(p as f32 + sigma * z)
                })
                .collect();
            drop(black_box(out));
        }),
    );
    let (i8l, l8) = phantom::<u8>(n);
    let (i16l, l16) = phantom::<u16>(n);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    with_cap(Level::Baseline, || {
        report("CHAIN baseline (SSE2)", n, 8, rate(|| drop(black_box(chain(&i8l, &l8, &mut rng)))));
        report("CHAIN baseline (SSE2)", n, 16, rate(|| drop(black_box(chain(&i16l, &l16, &mut rng)))));
    });
}
