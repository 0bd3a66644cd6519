//! Additive Gaussian noise scaled to the bit depth (image only).
//!
//! One Gaussian sample per pixel is the whole cost of this op, so the sampler is built to vectorise:
//! 32 independent xoshiro128++ generators run in lockstep (seeded from the caller's RNG through
//! SplitMix64, so the output is a pure function of the RNG state), and each pair of uniforms becomes a
//! pair of normals by Box-Muller with branch-free polynomial `ln`, `sin` and `cos` (Cephes
//! coefficients, about 1e-7 relative error). The angle is drawn in `[-pi/4, pi/4)` and spread over the
//! circle with a sign bit and a swap bit, so no range reduction is needed. The radius uses 24 random bits,
//! so deviates are truncated at 5.77 sigma (a larger one has probability below 1e-8).
//!
//! `rand_distr::StandardNormal` (ziggurat) from a ChaCha RNG is several times slower (one RNG call and a
//! branchy table lookup per sample); the timing test prints both.

use super::{simd, Plane, Sample};

/// Adds zero-mean Gaussian noise of standard deviation `sigma_fraction * T::MAX` to every pixel, rounding
/// and clamping to the sample range. The same RNG state gives the same output (for either sample type the
/// same normal deviates are drawn); the RNG advances by exactly two `u64`s. A zero or non-finite
/// `sigma_fraction` returns a copy (still advancing the RNG).
///
/// # Panics
/// If `img.data` does not hold `width * height` samples.
pub fn gaussian_noise<T: Sample>(img: &Plane<T>, sigma_fraction: f32, rng: &mut impl rand::Rng) -> Plane<T> {
    img.check();
    let mut gen = NormalLanes::from_seed(rng.next_u64(), rng.next_u64());
    let sigma = sigma_fraction * T::MAX;
    let mut out = Plane { width: img.width, height: img.height, data: img.data.clone() };
    if sigma == 0.0 || !sigma.is_finite() {
        return out;
    }
    simd::dispatch(#[inline(always)] || {
        let mut normals = [0f32; BLOCK];
        let mut dst = out.data.chunks_exact_mut(BLOCK);
        for chunk in &mut dst {
            gen.fill(&mut normals);
            add_noise(chunk, &normals, sigma);
        }
        let rest = dst.into_remainder();
        if !rest.is_empty() {
            gen.fill(&mut normals);
            add_noise(rest, &normals, sigma);
        }
    });
    out
}

#[inline(always)]
fn add_noise<T: Sample>(px: &mut [T], normals: &[f32], sigma: f32) {
    for (p, &n) in px.iter_mut().zip(normals) {
        *p = T::from_f32_round_clamped(p.to_f32() + sigma * n);
    }
}

/// Lanes of the generator: 32 independent dependency chains keep the (long) Box-Muller latency hidden
/// and fill two AVX-512 or four AVX2 registers per operation.
const LANES: usize = 32;
/// Normals produced per step (two per lane).
const BLOCK: usize = 2 * LANES;

/// [`LANES`] xoshiro128++ generators in lockstep, producing [`BLOCK`] standard normal deviates at a time.
pub(crate) struct NormalLanes {
    s: [[u32; LANES]; 4],
}

impl NormalLanes {
    /// Generators whose states are expanded from a 128-bit seed by SplitMix64 (never all zero).
    pub(crate) fn from_seed(a: u64, b: u64) -> Self {
        let mut sm = a ^ b.rotate_left(32) ^ 0x6a09_e667_f3bc_c909;
        let mut next = || {
            sm = sm.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = sm;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let mut s = [[0u32; LANES]; 4];
        let [s0, s1, s2, s3] = &mut s;
        for (((s0, s1), s2), s3) in s0.iter_mut().zip(s1.iter_mut()).zip(s2.iter_mut()).zip(s3.iter_mut()) {
            let (x, y) = (next() ^ b, next());
            (*s0, *s1) = (x as u32, (x >> 32) as u32);
            (*s2, *s3) = (y as u32, (y >> 32) as u32 | 1); // never all zero
        }
        Self { s }
    }

    /// One xoshiro128++ step of every lane.
    #[inline(always)]
    fn next(&mut self) -> [u32; LANES] {
        let [s0, s1, s2, s3] = &mut self.s;
        let mut out = [0u32; LANES];
        for j in 0..LANES {
            out[j] = s0[j].wrapping_add(s3[j]).rotate_left(7).wrapping_add(s0[j]);
            let t = s1[j] << 9;
            s2[j] ^= s0[j];
            s3[j] ^= s1[j];
            s1[j] ^= s2[j];
            s0[j] ^= s3[j];
            s2[j] ^= t;
            s3[j] = s3[j].rotate_left(11);
        }
        out
    }

    /// [`BLOCK`] standard normal deviates: lane `j` gives `out[j]` and `out[j + LANES]`.
    #[inline(always)]
    pub(crate) fn fill(&mut self, out: &mut [f32; BLOCK]) {
        const TWO_M24: f32 = 1.0 / 16_777_216.0;
        let (ra, rb) = (self.next(), self.next());
        let (lo, hi) = out.split_at_mut(LANES);
        for j in 0..LANES {
            // u in (0, 1]: radius sqrt(-2 ln u)
            let u = ((ra[j] >> 8) + 1) as f32 * TWO_M24;
            let radius = (-2.0 * ln(u)).sqrt();
            // angle in [-pi/4, pi/4), then bit 0 flips the cosine's sign and bit 1 swaps the pair,
            // which together cover the whole circle uniformly.
            let phi = ((rb[j] >> 8) as f32 * TWO_M24 - 0.5) * std::f32::consts::FRAC_PI_2;
            let (s, c) = sin_cos_quarter(phi);
            let c = f32::from_bits(c.to_bits() ^ (rb[j] << 31));
            let swap = rb[j] & 2 != 0;
            let (p, q) = if swap { (s, c) } else { (c, s) };
            lo[j] = radius * p;
            hi[j] = radius * q;
        }
    }
}

/// Natural logarithm of a positive normal `f32` (Cephes `logf`, branch-free).
#[inline(always)]
fn ln(x: f32) -> f32 {
    const SQRT_HALF: f32 = std::f32::consts::FRAC_1_SQRT_2;
    let bits = x.to_bits();
    let mut e = ((bits >> 23) & 0xff) as i32 - 126;
    let m = f32::from_bits((bits & 0x007f_ffff) | 0x3f00_0000); // [0.5, 1)
    let small = m < SQRT_HALF;
    e -= small as i32;
    let m = if small { m + m - 1.0 } else { m - 1.0 };
    let e = e as f32;
    let z = m * m;
    let mut y = 7.037_683_6e-2;
    y = y * m - 1.151_461e-1;
    y = y * m + 1.167_699_9e-1;
    y = y * m - 1.242_014_1e-1;
    y = y * m + 1.424_932_3e-1;
    y = y * m - 1.666_805_8e-1;
    y = y * m + 2.000_071_5e-1;
    y = y * m - 2.499_999_4e-1;
    y = y * m + 3.333_333e-1;
    y = y * m * z;
    y += -2.121_944_4e-4 * e;
    y += -0.5 * z;
    m + y + 0.693_359_4 * e
}

/// `(sin x, cos x)` for `|x| <= pi/4` (Cephes minimax polynomials).
#[inline(always)]
fn sin_cos_quarter(x: f32) -> (f32, f32) {
    let z = x * x;
    let s = ((-1.951_529_6e-4 * z + 8.332_161e-3) * z - 1.666_665_5e-1) * z * x + x;
    let c = ((2.443_315_7e-5 * z - 1.388_731_6e-3) * z + 4.166_664_6e-2) * z * z - 0.5 * z + 1.0;
    (s, c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn polynomials_are_accurate() {
        for i in 1..2000 {
            let x = i as f32 / 2000.0;
            assert!((ln(x) - x.ln()).abs() <= 2e-7 * x.ln().abs().max(1.0), "ln {x}");
            let a = (x - 0.5) * std::f32::consts::FRAC_PI_2;
            let (s, c) = sin_cos_quarter(a);
            assert!((s - a.sin()).abs() < 2e-7 && (c - a.cos()).abs() < 2e-7, "sincos {a}");
        }
        assert!((ln(1.0 / 16_777_216.0) + 16.635_532).abs() < 1e-5);
    }

    #[test]
    fn normals_have_the_right_moments() {
        let mut g = NormalLanes::from_seed(1, 2);
        let mut block = [0f32; BLOCK];
        let n = 1 << 20;
        let (mut s1, mut s2, mut s4, mut beyond2) = (0f64, 0f64, 0f64, 0usize);
        for _ in 0..n / BLOCK {
            g.fill(&mut block);
            for &v in &block {
                let v = v as f64;
                s1 += v;
                s2 += v * v;
                s4 += v * v * v * v;
                beyond2 += (v.abs() > 2.0) as usize;
            }
        }
        let n = n as f64;
        assert!((s1 / n).abs() < 0.005, "mean {}", s1 / n);
        assert!((s2 / n - 1.0).abs() < 0.01, "var {}", s2 / n);
        assert!((s4 / n - 3.0).abs() < 0.05, "kurtosis {}", s4 / n);
        let p = beyond2 as f64 / n; // 0.0455
        assert!((p - 0.0455).abs() < 0.002, "P(|z|>2) {p}");
    }

    #[test]
    fn deterministic_given_the_seed() {
        let img = Plane::new(37, 29, (0..37 * 29).map(|i| (i % 200) as u8 + 20).collect()).unwrap();
        let a = gaussian_noise(&img, 0.05, &mut ChaCha8Rng::seed_from_u64(42));
        let b = gaussian_noise(&img, 0.05, &mut ChaCha8Rng::seed_from_u64(42));
        let c = gaussian_noise(&img, 0.05, &mut ChaCha8Rng::seed_from_u64(43));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, img);
        let all = simd::assert_same_on_all_paths(|| gaussian_noise(&img, 0.05, &mut ChaCha8Rng::seed_from_u64(42)));
        assert_eq!(a, all);
    }

    #[test]
    fn noise_scales_with_bit_depth() {
        let (w, h) = (256, 256);
        let img8 = Plane::filled(w, h, 128u8);
        let img16 = Plane::filled(w, h, 32768u16);
        let n8 = gaussian_noise(&img8, 0.02, &mut ChaCha8Rng::seed_from_u64(7));
        let n16 = gaussian_noise(&img16, 0.02, &mut ChaCha8Rng::seed_from_u64(7));
        let sd = |d: Vec<f64>| {
            let m = d.iter().sum::<f64>() / d.len() as f64;
            (d.iter().map(|v| (v - m).powi(2)).sum::<f64>() / d.len() as f64).sqrt()
        };
        let sd8 = sd(n8.data.iter().map(|&v| v as f64).collect());
        let sd16 = sd(n16.data.iter().map(|&v| v as f64).collect());
        assert!((sd8 - 0.02 * 255.0).abs() < 0.15, "{sd8}");
        assert!((sd16 - 0.02 * 65535.0).abs() < 20.0, "{sd16}");
        let mut d = n16.data.clone();
        d.sort_unstable();
        d.dedup();
        assert!(d.len() > 256, "16-bit noise is not quantised: {} distinct values", d.len());
    }

    #[test]
    fn clamps_at_the_range_ends() {
        // Black and white pixels with strong noise: about half of each saturate and stay put.
        let img = Plane::new(64, 64, (0..64 * 64).map(|i| if i % 2 == 0 { 0u16 } else { 65535 }).collect()).unwrap();
        let out = gaussian_noise(&img, 0.3, &mut ChaCha8Rng::seed_from_u64(1));
        let black: Vec<u16> = out.data.iter().step_by(2).copied().collect();
        let white: Vec<u16> = out.data.iter().skip(1).step_by(2).copied().collect();
        let frac = |v: &[u16], x: u16| v.iter().filter(|&&p| p == x).count() as f64 / v.len() as f64;
        assert!((frac(&black, 0) - 0.5).abs() < 0.05, "{}", frac(&black, 0));
        assert!((frac(&white, 65535) - 0.5).abs() < 0.05, "{}", frac(&white, 65535));
        let e = Plane::<u8>::filled(0, 0, 0);
        assert_eq!(gaussian_noise(&e, 0.1, &mut ChaCha8Rng::seed_from_u64(1)), e);
        let g = Plane::filled(5, 3, 9u8);
        assert_eq!(gaussian_noise(&g, 0.0, &mut ChaCha8Rng::seed_from_u64(1)), g);
        assert_eq!(gaussian_noise(&g, f32::NAN, &mut ChaCha8Rng::seed_from_u64(1)), g);
    }
}
