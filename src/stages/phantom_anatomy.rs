//! Deterministic synthetic mammograms ("phantoms").
//!
//! Why this exists: mammoflow needs a default data set that ships inside the
//! binary, so that pipelines, tests and demos run anywhere without downloads
//! and without any real patient data (no privacy, licensing or consent issues).
//! Every phantom is a pure function of `(seed, index, spec)`, so a data set of
//! any size is described by a seed alone and is reproducible byte for byte.
//!
//! What is modelled (MONOCHROME2, dense tissue = bright), loosely following a
//! digital screening mammogram:
//! * a half-elliptical breast silhouette on the chest wall (left edge for
//!   laterality `L`, mirrored to the right edge for `R`) with a slightly
//!   irregular skin line, a thin skin band and thickness fall-off towards it;
//! * fatty tissue with faint low-frequency texture over a near-black, noisy
//!   air background;
//! * a lobed fibroglandular region (`mammary_gland`) with fractal value-noise
//!   texture, plus duct/ligament strands that radiate towards the nipple;
//! * in MLO views (~70 %) a bright pectoral muscle triangle in the upper
//!   chest-wall corner and, in about half of them, an axillary lymph node
//!   (bright oval with a fatty hilum);
//! * a nipple on the skin line at the breast apex;
//! * 0-2 lobulated or spiculated masses and 0-1 micro-calcification cluster;
//! * a burned-in label such as `L MLO` in the top corner away from the breast.
//!
//! Each entry of [`REGIONS`] gets an independent binary mask (0 or 255).
//! Randomness comes only from one `ChaCha8Rng` per image, and all work for an
//! image is single-threaded, so output does not depend on the calling thread.

use image::{GrayImage, ImageBuffer, Luma};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::f32::consts::PI;

/// 16-bit grey image; the stored values use the low `bits` bits.
pub type Gray16 = ImageBuffer<Luma<u16>, Vec<u16>>;

/// Region names, in this order, each gets one binary mask (0 or 255) per image.
pub const REGIONS: [&str; 7] = [
    "mammary_gland",
    "pectoral_muscle",
    "nipple",
    "mass",
    "calcification",
    "text",
    "lymph_node",
];

const GLAND: usize = 0;
const PECTORAL: usize = 1;
const NIPPLE: usize = 2;
const MASS: usize = 3;
const CALC: usize = 4;
const TEXT: usize = 5;
const NODE: usize = 6;

/// Size and bit depth of the phantoms to generate.
#[derive(Clone, Debug)]
pub struct PhantomSpec {
    pub width: u32,
    pub height: u32,
    /// Stored bit depth, 12..=16 in practice (values are clamped to 1..=16).
    pub bits: u8,
}

/// One synthetic mammogram with its ground-truth masks.
pub struct Phantom {
    pub image: Gray16,
    /// (region name, mask) for every entry of REGIONS, in REGIONS order; all-zero mask when the region is absent
    pub masks: Vec<(&'static str, GrayImage)>,
    /// 'L' or 'R'; 'L' has the chest wall on the left edge, 'R' on the right.
    pub laterality: char,
    /// "MLO" or "CC".
    pub view: &'static str,
}

/// Hermite smoothstep; also works with `e0 > e1` (then it decreases).
fn smoothstep(e0: f32, e1: f32, x: f32) -> f32 {
    let t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// One harmonic perturbation `amp * sin(freq * t + phase)` of a contour radius.
struct Lobe {
    amp: f32,
    freq: f32,
    phase: f32,
}

fn lobes(
    rng: &mut ChaCha8Rng,
    n: usize,
    amp: (f32, f32),
    freq: (f32, f32),
    int: bool,
) -> Vec<Lobe> {
    (0..n)
        .map(|_| {
            let f = rng.random_range(freq.0..freq.1);
            Lobe {
                amp: rng.random_range(amp.0..amp.1),
                freq: if int { f.round() } else { f },
                phase: rng.random_range(0.0..2.0 * PI),
            }
        })
        .collect()
}

fn lobe_sum(l: &[Lobe], t: f32) -> f32 {
    l.iter().map(|l| l.amp * (l.freq * t + l.phase).sin()).sum()
}

/// Value noise: a coarse lattice of random values, smoothstep-interpolated.
/// Cheap, deterministic and good enough for tissue texture. Each lattice is
/// rotated by a random angle so that octaves do not share grid axes (an
/// axis-aligned stack shows blocky, checkerboard artefacts).
struct Lattice {
    vals: Vec<f32>,
    gw: usize,
    gh: usize,
    inv: f32,
    cos: f32,
    sin: f32,
    shift: f32,
}

impl Lattice {
    fn new(rng: &mut ChaCha8Rng, w: f32, h: f32, cell: f32) -> Self {
        let cell = cell.max(1.5);
        let ang = rng.random_range(0.0..0.5 * PI);
        let (sin, cos) = ang.sin_cos();
        let gw = ((w * cos + h * sin) / cell) as usize + 3;
        let gh = ((w * sin + h * cos) / cell) as usize + 3;
        let vals = (0..gw * gh).map(|_| rng.random::<f32>()).collect();
        Lattice {
            vals,
            gw,
            gh,
            inv: 1.0 / cell,
            cos,
            sin,
            shift: w * sin,
        }
    }

    fn at(&self, x: f32, y: f32) -> f32 {
        let (x, y) = (
            x * self.cos + y * self.sin,
            y * self.cos - x * self.sin + self.shift,
        );
        let (fx, fy) = (x.max(0.0) * self.inv, y.max(0.0) * self.inv);
        let (ix, iy) = (fx as usize, fy as usize);
        let (ix, iy) = (ix.min(self.gw - 2), iy.min(self.gh - 2));
        let tx = smoothstep(0.0, 1.0, fx - ix as f32);
        let ty = smoothstep(0.0, 1.0, fy - iy as f32);
        bilerp(&self.vals, iy * self.gw + ix, self.gw, tx, ty)
    }
}

/// Bilinear interpolation in a row-major table of row length `gw` at cell `k`.
fn bilerp(v: &[f32], k: usize, gw: usize, tx: f32, ty: f32) -> f32 {
    let top = v[k] + (v[k + 1] - v[k]) * tx;
    let bot = v[k + gw] + (v[k + gw + 1] - v[k + gw]) * tx;
    top + (bot - top) * ty
}

/// A field sampled every `1 << shift` pixels and bilinearly interpolated in
/// between. The textures are smooth at that scale; this cuts their cost ~4x.
struct Grid {
    vals: Vec<f32>,
    gw: usize,
    shift: u32,
}

impl Grid {
    fn new(w: usize, h: usize, shift: u32, f: impl Fn(f32, f32) -> f32) -> Self {
        let (gw, gh) = ((w >> shift) + 2, (h >> shift) + 2);
        let mut vals = Vec::with_capacity(gw * gh);
        for j in 0..gh {
            for i in 0..gw {
                vals.push(f(((i << shift) as f32) + 0.5, ((j << shift) as f32) + 0.5));
            }
        }
        Grid { vals, gw, shift }
    }

    /// Fractal value noise (octaves of `(cell size, amplitude)`), in about [0, 1].
    fn fbm(rng: &mut ChaCha8Rng, w: usize, h: usize, shift: u32, oct: &[(f32, f32)]) -> Self {
        let (wf, hf) = (w.max(1) as f32, h.max(1) as f32);
        let total: f32 = oct.iter().map(|o| o.1).sum();
        let lat: Vec<(Lattice, f32)> = oct
            .iter()
            .map(|&(cell, amp)| (Lattice::new(rng, wf, hf, cell), amp / total))
            .collect();
        Grid::new(w, h, shift, |x, y| {
            lat.iter().map(|(l, a)| l.at(x, y) * a).sum()
        })
    }

    fn at(&self, x: usize, y: usize) -> f32 {
        let mask = (1usize << self.shift) - 1;
        let inv = 1.0 / (1u32 << self.shift) as f32;
        let (tx, ty) = ((x & mask) as f32 * inv, (y & mask) as f32 * inv);
        let k = (y >> self.shift) * self.gw + (x >> self.shift);
        bilerp(&self.vals, k, self.gw, tx, ty)
    }
}

struct Mass {
    cx: f32,
    cy: f32,
    r: f32,
    lobes: Vec<Lobe>,
    spikes: f32,
    spike_len: f32,
    spike_phase: f32,
    level: f32,
}

struct Node {
    cx: f32,
    cy: f32,
    ax: f32,
    bx: f32,
    cos: f32,
    sin: f32,
    hilum_v: f32,
    level: f32,
}

/// All random geometry and grey levels of one phantom, in canonical
/// orientation (chest wall at x = 0). Drawn from the RNG before any texture,
/// so [`breast_mask`] can rebuild the silhouette without rendering.
struct Plan {
    w: f32,
    h: f32,
    laterality: char,
    view: &'static str,
    /// Breast ellipse: centre (0, cy + shear*x), depth a, half-heights above/below.
    cy: f32,
    a: f32,
    b_up: f32,
    b_down: f32,
    shear: f32,
    /// Skin-line irregularity tabulated over sin(angle) in [-1, 1].
    skin: Vec<f32>,
    /// Pectoral muscle (top width, left height, bow of the edge).
    muscle: Option<(f32, f32, f32)>,
    nipple: (f32, f32, f32),
    gland: (f32, f32, f32, f32),
    masses: Vec<Mass>,
    calcs: Vec<(f32, f32, f32)>,
    node: Option<Node>,
    bg: f32,
    fat: f32,
    gland_lo: f32,
    gland_hi: f32,
    muscle_level: f32,
    nipple_level: f32,
    calc_level: f32,
}

const SKIN_TABLE: usize = 256;

impl Plan {
    /// Normalised elliptic radius including the skin irregularity: < 1 inside.
    fn rho(&self, x: f32, y: f32) -> f32 {
        let dx = x / self.a;
        let yy = y - self.cy - self.shear * x;
        let dy = yy / if yy < 0.0 { self.b_up } else { self.b_down };
        let r = (dx * dx + dy * dy).sqrt();
        let s = if r > 1e-6 { dy / r } else { 0.0 };
        let t = (s + 1.0) * 0.5 * (SKIN_TABLE - 1) as f32;
        let i = (t as usize).min(SKIN_TABLE - 2);
        let irr = self.skin[i] + (self.skin[i + 1] - self.skin[i]) * (t - i as f32);
        r / (1.0 + irr)
    }

    /// Pectoral edge function: < 1 inside the (bowed) triangle.
    fn muscle_e(&self, x: f32, y: f32) -> f32 {
        match self.muscle {
            Some((px, py, bow)) => {
                let (u, v) = (x / px, y / py);
                // The bowed edge is a hyperbola; keep only its corner branch.
                if u >= 1.0 || v >= 1.0 {
                    return f32::INFINITY;
                }
                u + v + bow * u * v
            }
            None => f32::INFINITY,
        }
    }

    fn nipple_q(&self, x: f32, y: f32) -> f32 {
        let (nx, ny, nr) = self.nipple;
        let (dx, dy) = ((x - nx) / nr, (y - ny) / (nr * 1.15));
        dx * dx + dy * dy
    }

    fn in_breast(&self, x: f32, y: f32) -> bool {
        self.rho(x, y) < 1.0 || self.muscle_e(x, y) < 1.0 || self.nipple_q(x, y) < 1.0
    }

    /// Rejection-sample a point well inside the breast and off the muscle.
    fn random_inside(&self, rng: &mut ChaCha8Rng, rmin: f32, rmax: f32) -> (f32, f32) {
        for _ in 0..64 {
            let rr = rng.random_range(rmin..rmax);
            let ang: f32 = rng.random_range(-1.3..1.3);
            let x = self.a * rr * ang.cos();
            let b = if ang < 0.0 { self.b_up } else { self.b_down };
            let y = self.cy + self.shear * x + b * rr * ang.sin();
            let ok_img =
                x > 0.02 * self.w && x < 0.98 * self.w && y > 0.02 * self.h && y < 0.98 * self.h;
            if ok_img && self.rho(x, y) < rmax && self.muscle_e(x, y) > 1.25 {
                return (x, y);
            }
        }
        (self.gland.0, self.gland.1)
    }
}

fn make_plan(spec: &PhantomSpec, rng: &mut ChaCha8Rng) -> Plan {
    let (w, h) = (spec.width.max(1) as f32, spec.height.max(1) as f32);
    let px_scale = h / 1024.0;
    let laterality = if rng.random::<f32>() < 0.5 { 'L' } else { 'R' };
    let mlo = rng.random::<f32>() < 0.7;
    let a = w * rng.random_range(0.62..0.84);
    let (cy, b_down, shear) = if mlo {
        (
            h * rng.random_range(0.40..0.47),
            h * rng.random_range(0.40..0.47),
            rng.random_range(0.05..0.15) * h / w,
        )
    } else {
        (
            h * rng.random_range(0.47..0.53),
            h * rng.random_range(0.38..0.45),
            rng.random_range(-0.03..0.03),
        )
    };
    // MLO: the upper contour climbs to the top edge at x0, beyond the muscle.
    let (muscle, b_up) = if mlo {
        let (px, py) = (
            w * rng.random_range(0.22..0.36),
            h * rng.random_range(0.38..0.60),
        );
        let bow = rng.random_range(-0.5..0.05);
        let x0 = (px * rng.random_range(1.3..1.55)).min(0.85 * a);
        let b_up = (cy + shear * x0) / (1.0 - (x0 / a).powi(2)).sqrt();
        (Some((px, py, bow)), b_up)
    } else {
        (None, b_down * rng.random_range(0.95..1.05))
    };
    let mut skin_lobes = lobes(rng, 3, (0.004, 0.015), (1.5, 6.0), false);
    skin_lobes.extend(lobes(rng, 1, (0.001, 0.0025), (12.0, 20.0), false));
    let skin = (0..SKIN_TABLE)
        .map(|i| {
            lobe_sum(
                &skin_lobes,
                (i as f32 / (SKIN_TABLE - 1) as f32 * 2.0 - 1.0) * PI,
            )
        })
        .collect();
    let mut p = Plan {
        w,
        h,
        laterality,
        view: if mlo { "MLO" } else { "CC" },
        cy,
        a,
        b_up,
        b_down,
        shear,
        skin,
        muscle,
        nipple: (0.0, 0.0, 1.0),
        gland: (0.0, 0.0, 1.0, 1.0),
        masses: Vec::new(),
        calcs: Vec::new(),
        node: None,
        bg: rng.random_range(0.025..0.04),
        fat: rng.random_range(0.28..0.33),
        gland_lo: rng.random_range(0.47..0.53),
        gland_hi: rng.random_range(0.66..0.72),
        muscle_level: rng.random_range(0.62..0.68),
        nipple_level: rng.random_range(0.40..0.48),
        calc_level: rng.random_range(0.95..0.99),
    };
    // Apex = where the breast axis leaves the silhouette; the nipple sits there.
    let mut ax = 0.0;
    while ax < 2.0 * w && p.rho(ax, cy + shear * ax) < 1.0 {
        ax += 0.5;
    }
    let nr = h * rng.random_range(0.007..0.011);
    p.nipple = (ax - 0.45 * nr, cy + shear * ax, nr);
    let gx = a * rng.random_range(0.28..0.45);
    p.gland = (
        gx,
        cy + shear * gx + b_down * rng.random_range(-0.08..0.12),
        a * rng.random_range(0.24..0.38),
        b_down * rng.random_range(0.42..0.65),
    );
    let u = rng.random::<f32>();
    let n_mass = usize::from(u >= 0.25) + usize::from(u >= 0.8);
    for _ in 0..n_mass {
        let (cx, cy) = p.random_inside(rng, 0.15, 0.7);
        let spiculated = rng.random::<f32>() < 0.5;
        p.masses.push(Mass {
            cx,
            cy,
            r: h * rng.random_range(0.014..0.04),
            lobes: lobes(rng, 3, (0.04, 0.14), (2.0, 6.0), true),
            spikes: rng.random_range(5..=11) as f32,
            spike_len: rng.random_range(0.3..0.9) * f32::from(u8::from(spiculated)),
            spike_phase: rng.random_range(0.0..2.0 * PI),
            level: rng.random_range(0.76..0.83),
        });
    }
    if rng.random::<f32>() >= 0.4 {
        let (cx, cy) = p.random_inside(rng, 0.15, 0.75);
        let cr = h * rng.random_range(0.008..0.025);
        for _ in 0..rng.random_range(5..=20) {
            let ang = rng.random_range(0.0..2.0 * PI);
            let d = cr * rng.random::<f32>().sqrt();
            let r = (px_scale * rng.random_range(1.0..2.5)).max(0.7);
            p.calcs.push((cx + d * ang.cos(), cy + d * ang.sin(), r));
        }
    }
    if let Some((px, py, _)) = muscle {
        if rng.random::<f32>() < 0.5 {
            let t = rng.random_range(0.25..0.5);
            let (nx, ny) = (1.0 / px, 1.0 / py);
            let nl = (nx * nx + ny * ny).sqrt();
            let an = h * rng.random_range(0.014..0.022);
            let off = an * rng.random_range(0.8..1.6);
            let ang = rng.random_range(0.0..PI);
            let side = if rng.random::<f32>() < 0.5 { -0.6 } else { 0.6 };
            p.node = Some(Node {
                cx: px * (1.0 - t) + nx / nl * off,
                cy: py * t + ny / nl * off,
                ax: an,
                bx: an * rng.random_range(0.55..0.75),
                cos: ang.cos(),
                sin: ang.sin(),
                hilum_v: side,
                level: rng.random_range(0.62..0.70),
            });
        }
    }
    p
}

fn rng_for(seed: u64, index: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// Mirror every row in place (canonical chest-wall-left -> displayed 'R').
fn mirror<T>(buf: &mut [T], w: usize) {
    if w > 0 {
        buf.chunks_mut(w).for_each(|row| row.reverse());
    }
}

/// Binary silhouette of the body (breast, pectoral muscle and nipple) of the
/// phantom `generate(spec, seed, index)` would produce, in display orientation.
/// Useful to check that lesion masks lie inside the breast.
#[cfg(test)]
pub fn breast_mask(spec: &PhantomSpec, seed: u64, index: u64) -> GrayImage {
    let mut rng = rng_for(seed, index);
    let p = make_plan(spec, &mut rng);
    let (w, h) = (spec.width as usize, spec.height as usize);
    let mut buf = vec![0u8; w * h];
    for (i, m) in buf.iter_mut().enumerate() {
        let (x, y) = ((i % w) as f32 + 0.5, (i / w) as f32 + 0.5);
        if p.in_breast(x, y) {
            *m = 255;
        }
    }
    if p.laterality == 'R' {
        mirror(&mut buf, w);
    }
    to_image(spec, buf)
}

/// Wrap a row-major buffer of exactly `width * height` pixels as an image.
fn to_image<P: image::Primitive>(spec: &PhantomSpec, buf: Vec<P>) -> ImageBuffer<Luma<P>, Vec<P>> {
    let (w, h) = (spec.width, spec.height);
    ImageBuffer::from_raw(w, h, buf).unwrap_or_else(|| ImageBuffer::new(w, h))
}

/// Iterate the pixel indices of the clipped bounding box around (cx, cy).
fn bbox(w: usize, h: usize, cx: f32, cy: f32, r: f32) -> impl Iterator<Item = (usize, usize)> {
    let x0 = (cx - r - 1.0).max(0.0) as usize;
    let y0 = (cy - r - 1.0).max(0.0) as usize;
    let x1 = ((cx + r + 2.0).max(0.0) as usize).min(w);
    let y1 = ((cy + r + 2.0).max(0.0) as usize).min(h);
    (y0..y1).flat_map(move |y| (x0..x1).map(move |x| (x, y)))
}

/// Generate one phantom.
///
/// Fully determined by (seed, index, spec): same inputs -> byte-identical output, on any thread.
pub fn generate(spec: &PhantomSpec, seed: u64, index: u64) -> Phantom {
    let mut rng = rng_for(seed, index);
    let p = make_plan(spec, &mut rng);
    let (w, h) = (spec.width as usize, spec.height as usize);
    let mut img = vec![0f32; w * h];
    let mut masks: Vec<Vec<u8>> = (0..REGIONS.len()).map(|_| vec![0u8; w * h]).collect();

    // Textures (drawn after the plan so breast_mask needs no texture).
    let hf = p.h;
    let low = Grid::fbm(&mut rng, w, h, 2, &[(hf / 4.0, 0.65), (hf / 9.0, 0.35)]);
    let (gx, gy, grx, gry) = p.gland;
    let gland_edge = Grid::fbm(&mut rng, w, h, 2, &[(grx * 0.55, 0.7), (grx * 0.2, 0.3)]);
    let oct = [
        (10., 0.36),
        (20., 0.26),
        (40., 0.18),
        (80., 0.12),
        (160., 0.08),
    ];
    let oct = oct.map(|(d, a)| (hf / d, a));
    let detail = Grid::fbm(&mut rng, w, h, 1, &oct);
    const K: usize = 220;
    let strands: Vec<f32> = (0..K).map(|_| rng.random::<f32>()).collect();
    let (nx, ny, nr) = p.nipple;
    let skin_w = 2.5 * (hf / 1024.0).max(0.5) / p.a.min(p.b_down);

    // Pass 1: background, fat, skin, gland, strands, muscle.
    for y in 0..h {
        let fy = y as f32 + 0.5;
        for x in 0..w {
            let fx = x as f32 + 0.5;
            let i = y * w + x;
            let lo = low.at(x, y);
            let r = p.rho(fx, fy);
            let me = p.muscle_e(fx, fy);
            if r >= 1.0 && me >= 1.0 {
                img[i] = p.bg + 0.012 * (lo - 0.5);
                continue;
            }
            // Thinner tissue towards the skin line looks darker.
            let thick = (1.0 - r * r).max(0.0).sqrt();
            let tex = detail.at(x, y);
            let mut v = p.fat * (0.8 + 0.2 * thick.sqrt()) + 0.05 * (lo - 0.5) + 0.16 * (tex - 0.5);
            if r < 1.0 && r > 1.0 - skin_w {
                v += 0.035;
            }
            let in_mus = me < 1.0;
            let (dx, dy) = ((fx - gx) / grx, (fy - gy) / gry);
            let gd = (dx * dx + dy * dy).sqrt();
            // The edge noise moves g by at most 0.4, so far pixels skip it.
            let g = if gd < 1.5 {
                1.0 - gd + 0.8 * (gland_edge.at(x, y) - 0.5)
            } else {
                -1.0
            };
            let env = smoothstep(-0.1, 0.3, g) * smoothstep(0.97, 0.85, r);
            // Dense tissue is patchy: fat lobules show through as dark islands,
            // more of them towards the edge of the glandular envelope.
            let gw = env * smoothstep(0.3, 0.55, tex + 0.3 * env - 0.15);
            if gw > 0.0 {
                let t = ((tex - 0.5) * 3.5 + 0.5).clamp(0.0, 1.0);
                let gv = p.gland_lo + (p.gland_hi - p.gland_lo) * t;
                v += (gv - v) * gw;
            }
            if g > 0.0 && r < 0.93 && !in_mus {
                masks[GLAND][i] = 255;
            }
            // Ducts / Cooper ligaments: ridges of a 1-D noise over the angle
            // seen from the nipple, so they converge on it; gently warped.
            if r < 1.0 && !in_mus {
                let (sx, sy) = (nx - fx, fy - ny);
                let dist = (sx * sx + sy * sy).sqrt();
                let phi = sy.atan2(sx);
                let t = (phi / (2.0 * PI) * K as f32 + 5.0 * (lo - 0.5)).rem_euclid(K as f32);
                let k0 = (t as usize).min(K - 1);
                let f = smoothstep(0.0, 1.0, t - k0 as f32);
                let sv = strands[k0] + (strands[(k0 + 1) % K] - strands[k0]) * f;
                let ridge = smoothstep(0.66, 0.95, sv) * smoothstep(0.35, 0.65, tex);
                v += 0.08
                    * ridge
                    * smoothstep(nr, 6.0 * nr, dist)
                    * smoothstep(1.0, 0.88, r)
                    * (0.4 + 0.6 * env);
            }
            if in_mus {
                let mv =
                    p.muscle_level + 0.05 * (1.0 - me) + 0.03 * (lo - 0.5) + 0.08 * (tex - 0.5);
                v += (mv - v) * smoothstep(1.0, 0.985, me);
                masks[PECTORAL][i] = 255;
            }
            img[i] = v;
        }
    }

    // Pass 2: local structures, each only over its bounding box.
    for (x, y) in bbox(w, h, nx, ny, nr * 1.2) {
        let q = p.nipple_q(x as f32 + 0.5, y as f32 + 0.5);
        if q < 1.0 {
            let i = y * w + x;
            img[i] += (p.nipple_level - img[i]) * smoothstep(1.0, 0.6, q);
            masks[NIPPLE][i] = 255;
        }
    }
    if let Some(n) = &p.node {
        for (x, y) in bbox(w, h, n.cx, n.cy, n.ax) {
            let (fx, fy) = (x as f32 + 0.5, y as f32 + 0.5);
            let (dx, dy) = (fx - n.cx, fy - n.cy);
            let u = (dx * n.cos + dy * n.sin) / n.ax;
            let v = (-dx * n.sin + dy * n.cos) / n.bx;
            let q = u * u + v * v;
            if q < 1.0 && p.in_breast(fx, fy) {
                let hq = (u / 0.35).powi(2) + ((v - n.hilum_v) / 0.45).powi(2);
                let level = p.fat + (n.level - p.fat) * smoothstep(0.5, 1.0, hq);
                let i = y * w + x;
                img[i] += (level - img[i]) * smoothstep(1.0, 0.75, q);
                masks[NODE][i] = 255;
            }
        }
    }
    for m in &p.masses {
        let reach = m.r * (1.5 + m.spike_len);
        for (x, y) in bbox(w, h, m.cx, m.cy, reach) {
            let (fx, fy) = (x as f32 + 0.5, y as f32 + 0.5);
            let (dx, dy) = (fx - m.cx, fy - m.cy);
            let th = dy.atan2(dx);
            let spike = m.spike_len * (0.5 + 0.5 * (m.spikes * th + m.spike_phase).cos()).powi(24);
            let rt = m.r * (1.0 + lobe_sum(&m.lobes, th) + spike);
            let t = (dx * dx + dy * dy).sqrt() / rt;
            if t < 1.0 && p.rho(fx, fy) < 1.0 {
                let i = y * w + x;
                let mv = m.level + 0.04 * (1.0 - t * t);
                img[i] = img[i].max(img[i] + (mv - img[i]) * smoothstep(1.0, 0.45, t));
                masks[MASS][i] = 255;
            }
        }
    }
    for &(cx, cy, r) in &p.calcs {
        for (x, y) in bbox(w, h, cx, cy, r + 1.0) {
            let (fx, fy) = (x as f32 + 0.5, y as f32 + 0.5);
            let d = ((fx - cx).powi(2) + (fy - cy).powi(2)).sqrt();
            if p.rho(fx, fy) >= 1.0 {
                continue;
            }
            let i = y * w + x;
            if d <= r {
                img[i] = p.calc_level;
                masks[CALC][i] = 255;
            } else if d < r + 1.0 {
                img[i] += (p.calc_level - img[i]) * 0.4 * (r + 1.0 - d);
            }
        }
    }

    // Pass 3: detector noise (sum of four uniforms ~ Gaussian), quantise.
    let bits = spec.bits.clamp(1, 16);
    let maxv = ((1u32 << bits) - 1) as f32;
    let mut out: Vec<u16> = img
        .iter()
        .map(|&v| {
            let r: u64 = rng.random();
            let s = ((r & 0xFFFF) + ((r >> 16) & 0xFFFF) + ((r >> 32) & 0xFFFF) + (r >> 48)) as f32;
            let g = (s / 65535.0 - 2.0) * 1.732;
            let sigma = 0.004 + 0.01 * v;
            ((v + g * sigma).clamp(0.0, 1.0) * maxv).round() as u16
        })
        .collect();
    if p.laterality == 'R' {
        mirror(&mut out, w);
        masks.iter_mut().for_each(|m| mirror(m, w));
    }

    // Pass 4: burned-in label, drawn after mirroring so it reads correctly.
    let label = format!("{} {}", p.laterality, p.view);
    let text_v = (0.985 * maxv).round() as u16;
    draw_label(
        (&mut out, &mut masks[TEXT]),
        (w, h),
        &label,
        p.laterality == 'L',
        text_v,
    );

    let masks = REGIONS
        .iter()
        .zip(masks)
        .map(|(&n, m)| (n, to_image(spec, m)))
        .collect();
    let (laterality, view) = (p.laterality, p.view);
    Phantom {
        image: to_image(spec, out),
        masks,
        laterality,
        view,
    }
}

/// 5x7 bitmap glyphs (bit 4 = leftmost column) for the characters labels use.
fn glyph(c: char) -> [u8; 7] {
    match c {
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        _ => [0; 7],
    }
}

/// Draw `label` in the top corner away from the chest wall (`right` = top-right).
fn draw_label(
    bufs: (&mut [u16], &mut [u8]),
    size: (usize, usize),
    label: &str,
    right: bool,
    v: u16,
) {
    let ((img, mask), (w, h)) = (bufs, size);
    let scale = ((h as f32 / 256.0).round() as usize).max(1);
    let n = label.chars().count();
    let tw = (n * 6).saturating_sub(1) * scale;
    let margin = (w.min(h) / 40).max(1);
    let x0 = if right {
        w.saturating_sub(margin + tw)
    } else {
        margin
    };
    for (k, c) in label.chars().enumerate() {
        for (row, bitsrow) in glyph(c).iter().enumerate() {
            for col in 0..5 {
                if bitsrow & (0x10 >> col) == 0 {
                    continue;
                }
                for sy in 0..scale {
                    for sx in 0..scale {
                        let x = x0 + (k * 6 + col) * scale + sx;
                        let y = margin + row * scale + sy;
                        if x < w && y < h {
                            img[y * w + x] = v;
                            mask[y * w + x] = 255;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> PhantomSpec {
        PhantomSpec {
            width: 192,
            height: 256,
            bits: 12,
        }
    }

    fn count(m: &GrayImage) -> usize {
        m.as_raw().iter().filter(|&&v| v > 0).count()
    }

    /// Number of pixels set in `m` but not in `breast`.
    fn outside(m: &GrayImage, breast: &GrayImage) -> usize {
        m.as_raw()
            .iter()
            .zip(breast.as_raw())
            .filter(|(&m, &b)| m > 0 && b == 0)
            .count()
    }

    #[test]
    fn deterministic_and_index_dependent() {
        let s = spec();
        let a = generate(&s, 7, 3);
        let b = generate(&s, 7, 3);
        assert_eq!(a.image.as_raw(), b.image.as_raw());
        assert_eq!(a.laterality, b.laterality);
        assert_eq!(a.view, b.view);
        for ((na, ma), (nb, mb)) in a.masks.iter().zip(&b.masks) {
            assert_eq!(na, nb);
            assert_eq!(ma.as_raw(), mb.as_raw());
        }
        let c = generate(&s, 7, 4);
        assert_ne!(a.image.as_raw(), c.image.as_raw());
        let t = std::thread::spawn(move || generate(&spec(), 7, 3).image.into_raw());
        assert_eq!(t.join().ok().as_deref(), Some(a.image.as_raw().as_slice()));
    }

    #[test]
    fn masks_binary_nonempty_and_inside() {
        let s = spec();
        let mut saw_mlo = false;
        for idx in 0..24 {
            let p = generate(&s, 11, idx);
            let breast = breast_mask(&s, 11, idx);
            assert_eq!(p.masks.len(), REGIONS.len());
            for ((name, m), want) in p.masks.iter().zip(REGIONS) {
                assert_eq!(*name, want);
                assert_eq!(m.dimensions(), (s.width, s.height));
                assert!(m.as_raw().iter().all(|&v| v == 0 || v == 255), "{name}");
            }
            let n = |k: usize| count(&p.masks[k].1);
            assert!(n(GLAND) > 0 && n(NIPPLE) > 0 && n(TEXT) > 0, "index {idx}");
            saw_mlo |= p.view == "MLO";
            assert_eq!(n(PECTORAL) > 0, p.view == "MLO");
            assert!(p.view == "MLO" || n(NODE) == 0);
            for k in [MASS, CALC, NODE, GLAND] {
                assert_eq!(outside(&p.masks[k].1, &breast), 0, "{} {idx}", REGIONS[k]);
            }
            // The label sits in air, away from the breast.
            assert_eq!(outside(&p.masks[TEXT].1, &breast), n(TEXT), "index {idx}");
        }
        assert!(saw_mlo);
    }

    #[test]
    fn odd_sizes_do_not_panic() {
        for (w, h) in [(0, 0), (1, 1), (7, 3), (40, 16), (300, 120)] {
            let p = generate(
                &PhantomSpec {
                    width: w,
                    height: h,
                    bits: 16,
                },
                1,
                2,
            );
            assert_eq!(p.image.dimensions(), (w, h));
            assert!(p.masks.iter().all(|(_, m)| m.dimensions() == (w, h)));
        }
    }

    #[test]
    fn intensity_ordering() {
        for bits in [12u8, 16] {
            let s = PhantomSpec { bits, ..spec() };
            for idx in 0..8 {
                let p = generate(&s, 5, idx);
                let max = (1u32 << bits) - 1;
                assert!(p.image.as_raw().iter().all(|&v| u32::from(v) <= max));
                let breast = breast_mask(&s, 5, idx);
                let (mut g, mut f, mut b) = ((0f64, 0u64), (0f64, 0u64), (0f64, 0u64));
                for (i, &v) in p.image.as_raw().iter().enumerate() {
                    let in_any = p.masks.iter().any(|(_, m)| m.as_raw()[i] > 0);
                    let acc = if p.masks[GLAND].1.as_raw()[i] > 0 {
                        &mut g
                    } else if breast.as_raw()[i] > 0 && !in_any {
                        &mut f
                    } else if breast.as_raw()[i] == 0 && !in_any {
                        &mut b
                    } else {
                        continue;
                    };
                    acc.0 += f64::from(v);
                    acc.1 += 1;
                }
                let mean = |a: (f64, u64)| a.0 / a.1.max(1) as f64;
                let (g, f, b) = (mean(g), mean(f), mean(b));
                assert!(
                    g > f && f > b,
                    "idx {idx}: gland {g} fat {f} background {b}"
                );
            }
        }
    }
}
