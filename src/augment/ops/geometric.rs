//! Geometric ops: they move the image and its label map together, so a lesion's label stays on the lesion.
//!
//! Both outputs come from one coordinate computation. The image is resampled bilinearly (in `f32`, as
//! OpenCV's `warpAffine` with `INTER_LINEAR` and a constant border: neighbours outside the image count as
//! the fill value), the label map by nearest neighbour (labels are classes; interpolating them would
//! invent classes). Rotation is hand-written rather than `imageproc::rotate_about_center` because that
//! one samples through a per-pixel closure over `image` buffers, is about eleven times slower (see the
//! timing test) and would compute the mapping twice for image and labels.
//!
//! # Rotation
//!
//! Per output row the inverse mapping is affine in x, `(ax x + bx, ay x + by)`. For `u8` and `u16` the
//! rotation first makes a copy of image and labels (per thread, reused between calls) with one element
//! per pixel, sample and label together, a one-pixel frame of (`fill`, `fill_label`) around the image
//! and rows padded to an odd number of cache lines. From it a pixel's whole bilinear neighbourhood,
//! labels included, is two loads of two adjacent elements, with no border logic (neighbours outside the
//! image read the fill from the frame), and walking the source along a column (angles near +-90
//! degrees) no longer maps every row to the same few L1 sets, as a power-of-two row length does: that
//! made such angles half again as slow as small ones.
//!
//! The output is walked in tiles of 32 x 128 pixels so that the source footprint of a tile stays in L1.
//! Per row, the columns whose source lies in `(-1, w) x (-1, h)` (solved in `f64` with a margin for the
//! `f32` rounding) go through a three-stage kernel (vectorised coordinates, scalar gathers, vectorised
//! blend), the column or two at each end of that range through a careful per-pixel path, and the rest
//! keep the fill without being looked at. Both paths perform the same `f32` operations, so which one a
//! pixel takes does not change it (a test compares the kernel with the per-pixel path everywhere).
//! Other sample types, and planes too large for 32-bit indices, use the per-pixel path throughout.
//!
//! Checked against OpenCV 5.0 (`warpAffine` with `getRotationMatrix2D`, 17 degrees, 420x300): the image
//! is within one level everywhere (5 of 126,000 pixels differ for `u8`, 1.4% for `u16`, f32 rounding),
//! the labels equal `INTER_NEAREST` except one pixel at an exact tie.

use super::{floor_clamped, simd, Plane, Sample};
use std::any::Any;
use std::cell::Cell;
use std::ops::Range;
use std::thread::LocalKey;

/// Rotates `img` and `labels` by `degrees` about the image centre `((w-1)/2, (h-1)/2)`, keeping the size.
///
/// Positive angles turn the content counter-clockwise as displayed (OpenCV / albumentations convention).
/// The image is sampled bilinearly, the labels by nearest neighbour (the label of the bilinear neighbour
/// with weight >= 1/2 each way, i.e. halves rounded up); output pixels whose source lies outside the image
/// take `fill` / `fill_label` (bilinear samples straddling the edge blend with `fill`, as OpenCV's
/// constant border does). Angles that are multiples of 90 degrees use an
/// exact rotation matrix, so they move whole pixels on square images.
///
/// For `u8` and `u16` each calling thread keeps its scratch copy of the input between calls, sized for
/// the largest plane it has rotated (2 bytes per pixel for `u8`, 4 for `u16`: about 2 MB / 4 MB at
/// 1024 x 1024); allocating it afresh would cost more in page faults than the rotation itself.
///
/// # Panics
/// If `img` and `labels` differ in size, or a plane's `data` does not hold `width * height` samples.
pub fn rotate<T: Sample>(
    img: &Plane<T>,
    labels: &Plane<u8>,
    degrees: f32,
    fill: T,
    fill_label: u8,
) -> (Plane<T>, Plane<u8>) {
    img.check();
    labels.check();
    assert_eq!((img.width, img.height), (labels.width, labels.height), "image and labels differ in size");
    let (w, h) = (img.width, img.height);
    // Empty: the kernel path fills them band by band, the per-pixel path all at once below.
    let mut out = Plane { width: w, height: h, data: Vec::with_capacity(w * h) };
    let mut out_labels = Plane { width: w, height: h, data: Vec::with_capacity(w * h) };
    if w == 0 || h == 0 {
        return (out, out_labels);
    }
    let rows = row_maps(w, h, degrees);
    let done = try_kernel::<T, u8>(img, labels, fill, fill_label, &rows, &mut out, &mut out_labels)
        || try_kernel::<T, u16>(img, labels, fill, fill_label, &rows, &mut out, &mut out_labels);
    if !done {
        out.data.resize(w * h, fill);
        out_labels.data.resize(w * h, fill_label);
        let ctx = Ctx { src: &img.data, labels: &labels.data, w, h, fill };
        let out_rows = out.data.chunks_exact_mut(w).zip(out_labels.data.chunks_exact_mut(w));
        for ((row, lrow), m) in out_rows.zip(&rows) {
            row_general(&ctx, row, lrow, m.outer.clone(), m.coef);
        }
    }
    (out, out_labels)
}

/// Mirrors `img` and `labels`: left-right when `horizontal`, otherwise top-bottom.
///
/// # Panics
/// If `img` and `labels` differ in size, or a plane's `data` does not hold `width * height` samples.
pub fn mirror<T: Copy>(img: &Plane<T>, labels: &Plane<u8>, horizontal: bool) -> (Plane<T>, Plane<u8>) {
    img.check();
    labels.check();
    assert_eq!((img.width, img.height), (labels.width, labels.height), "image and labels differ in size");
    let (w, h) = (img.width, img.height);
    simd::dispatch(#[inline(always)] || {
        let out = Plane { width: w, height: h, data: mirror_data(&img.data, w, horizontal) };
        let out_labels = Plane { width: w, height: h, data: mirror_data(&labels.data, w, horizontal) };
        (out, out_labels)
    })
}

/// The mirrored copy of a `w`-wide row-major buffer.
#[inline(always)]
fn mirror_data<T: Copy>(src: &[T], w: usize, horizontal: bool) -> Vec<T> {
    if w == 0 {
        return Vec::new();
    }
    if horizontal {
        // A copy reversed in place: `slice::reverse` is vectorised for every element size, an iterator
        // reversal into a new vector is not (byte by byte for u8).
        let mut dst = src.to_vec();
        for row in dst.chunks_exact_mut(w) {
            row.reverse();
        }
        dst
    } else {
        let mut dst = Vec::with_capacity(src.len());
        for row in src.chunks_exact(w).rev() {
            dst.extend_from_slice(row);
        }
        dst
    }
}

/// `(sin, cos)` of `degrees`, exact (0 and +-1) for multiples of 90 degrees.
fn exact_sin_cos(degrees: f32) -> (f64, f64) {
    let d = (degrees as f64).rem_euclid(360.0);
    match d {
        0.0 => (0.0, 1.0),
        90.0 => (1.0, 0.0),
        180.0 => (0.0, -1.0),
        270.0 => (-1.0, 0.0),
        _ => d.to_radians().sin_cos(),
    }
}

/// Per output row of a `w` x `h` rotation by `degrees`: the inverse mapping and its column ranges.
fn row_maps(w: usize, h: usize, degrees: f32) -> Vec<RowMap> {
    let (sin, cos) = exact_sin_cos(degrees);
    let (cx, cy) = ((w as f64 - 1.0) / 2.0, (h as f64 - 1.0) / 2.0);
    (0..h)
        .map(|y| {
            // source = R^-1 (x - cx, y - cy) + c
            let dy = y as f64 - cy;
            let (ax, bx) = (cos, cx - cos * cx - sin * dy);
            let (ay, by) = (sin, cy - sin * cx + cos * dy);
            let (outer, inner) = row_ranges(ax, bx, ay, by, w, h);
            RowMap { coef: (ax as f32, bx as f32, ay as f32, by as f32), outer, inner }
        })
        .collect()
}

/// One output row's inverse mapping `x -> (ax x + bx, ay x + by)` as `f32` coefficients, and its column
/// ranges (see [`row_ranges`]).
struct RowMap {
    coef: (f32, f32, f32, f32),
    outer: Range<usize>,
    inner: Range<usize>,
}

/// For one output row with inverse mapping `x -> (ax x + bx, ay x + by)`: the columns whose source may
/// lie in `(-1, w) x (-1, h)` (`outer`; all other columns have no neighbour in the image and keep the
/// fill), and within them the columns whose source certainly does (`inner`, for the kernel).
///
/// Both come from the exact (`f64`) mapping with a margin `e` in source pixels above the error of the
/// `f32` coordinates the kernels compute (coefficients and products rounded to `f32`: below
/// `2^-24 * 6 (w + h)`), so the `f32` test `-1 < sx < w, -1 < sy < h` of [`row_general`] holds throughout
/// `inner` and fails outside `outer` (which gets an extra column each side as well).
fn row_ranges(ax: f64, bx: f64, ay: f64, by: f64, w: usize, h: usize) -> (Range<usize>, Range<usize>) {
    let e = 1e-3 + (w + h) as f64 * 5e-7;
    // The x interval where -1 - m < a x + b < n + m holds for both coordinates, or None.
    let solve = |m: f64| -> Option<(f64, f64)> {
        let (mut lo, mut hi) = (f64::NEG_INFINITY, f64::INFINITY);
        for (a, b, n) in [(ax, bx, w as f64), (ay, by, h as f64)] {
            let (l, u) = (-1.0 - m, n + m);
            if a.abs() < 1e-12 {
                if !(b > l && b < u) {
                    return None;
                }
            } else {
                let (t0, t1) = ((l - b) / a, (u - b) / a);
                lo = lo.max(t0.min(t1));
                hi = hi.min(t0.max(t1));
            }
        }
        (lo <= hi).then_some((lo, hi))
    };
    let wf = w as f64;
    let outer = match solve(e) {
        Some((lo, hi)) => (lo.floor() - 1.0).clamp(0.0, wf) as usize..(hi.ceil() + 2.0).clamp(0.0, wf) as usize,
        None => 0..0,
    };
    let inner = match solve(-e) {
        Some((lo, hi)) => {
            let (lo, hi) = (lo.ceil().clamp(0.0, wf) as usize, (hi.floor() + 1.0).clamp(0.0, wf) as usize);
            // Inside `outer` by construction; the clamps only guard degenerate cases.
            let lo = lo.clamp(outer.start, outer.end);
            lo..hi.clamp(lo, outer.end)
        }
        None => outer.start..outer.start,
    };
    (outer, inner)
}

/// Output tile height and width of the rotation loop: the source footprint of a tile stays in L1.
const TILE_H: usize = 32;
const TILE_W: usize = 128;

/// The sample types with a kernel, `u8` and `u16`, and the layout of their copy.
///
/// The copy holds one element per pixel, the sample in the low bits and its label above, rows `stride`
/// elements apart (see [`padded_stride`]), with a frame of one element of (`fill`, `fill_label`) all
/// round: element `(x + 1, y + 1)` is pixel `(x, y)`.
trait Fast: Sample {
    /// One element of the copy: sample | label << (8 or 16).
    type E: Copy + Send + 'static;
    /// Two horizontally adjacent elements as gathered.
    type Pair: Copy + Default;
    /// The element of sample `v` with label `l`.
    fn pack(v: Self, l: u8) -> Self::E;
    /// This thread's copy.
    fn copy_buffer() -> &'static LocalKey<Cell<Vec<Self::E>>>;
    /// The pair `q`.
    fn pair(q: [Self::E; 2]) -> Self::Pair;
    /// From the top pair `t` and the bottom pair `b` of a pixel's neighbourhood and its weights: the
    /// bilinear value (the operations of [`row_general`]) and the nearest label (the neighbour whose
    /// weight is >= 1/2 each way).
    fn blend(t: &Self::Pair, b: &Self::Pair, fx: f32, fy: f32) -> (Self, u8);
}

thread_local! {
    static COPY_U8: Cell<Vec<u16>> = const { Cell::new(Vec::new()) };
    static COPY_U16: Cell<Vec<u32>> = const { Cell::new(Vec::new()) };
}

/// Bilinear interpolation of the neighbours `a` (x, y), `b` (x+1, y), `c` (x, y+1), `d` (x+1, y+1), in the
/// order of operations of [`row_general`].
#[inline(always)]
fn bilinear(a: u32, b: u32, c: u32, d: u32, fx: f32, fy: f32) -> f32 {
    let (a, b, c, d) = (a as f32, b as f32, c as f32, d as f32);
    let top = a + fx * (b - a);
    let bot = c + fx * (d - c);
    top + fy * (bot - top)
}

impl Fast for u8 {
    type E = u16;
    /// Sample, label, sample, label from the low byte up.
    type Pair = u32;
    #[inline(always)]
    fn pack(v: u8, l: u8) -> u16 {
        v as u16 | (l as u16) << 8
    }
    fn copy_buffer() -> &'static LocalKey<Cell<Vec<u16>>> {
        &COPY_U8
    }
    #[inline(always)]
    fn pair(q: [u16; 2]) -> u32 {
        q[0] as u32 | (q[1] as u32) << 16
    }
    #[inline(always)]
    fn blend(&t: &u32, &b: &u32, fx: f32, fy: f32) -> (u8, u8) {
        let v = bilinear(t & 0xff, (t >> 16) & 0xff, b & 0xff, (b >> 16) & 0xff, fx, fy);
        let s = if fy >= 0.5 { b } else { t };
        let l = if fx >= 0.5 { s >> 24 } else { s >> 8 };
        (u8::from_f32_round_clamped(v), l as u8)
    }
}

impl Fast for u16 {
    type E = u32;
    type Pair = [u32; 2];
    #[inline(always)]
    fn pack(v: u16, l: u8) -> u32 {
        v as u32 | (l as u32) << 16
    }
    fn copy_buffer() -> &'static LocalKey<Cell<Vec<u32>>> {
        &COPY_U16
    }
    #[inline(always)]
    fn pair(q: [u32; 2]) -> [u32; 2] {
        q
    }
    /// Takes the pairs by reference: the blend loop then loads them as two interleaved `u32` streams
    /// (16 lanes with AVX-512) rather than as `u64`s (8 lanes).
    #[inline(always)]
    fn blend(t: &[u32; 2], b: &[u32; 2], fx: f32, fy: f32) -> (u16, u8) {
        let (a, b, c, d) = (t[0], t[1], b[0], b[1]);
        let v = bilinear(a & 0xffff, b & 0xffff, c & 0xffff, d & 0xffff, fx, fy);
        let (l0, l1) = if fy >= 0.5 { (c, d) } else { (a, b) };
        let l = if fx >= 0.5 { l1 } else { l0 };
        (u16::from_f32_round_clamped(v), (l >> 16) as u8)
    }
}

/// Row length of the copy in elements: at least `w + 2`, and an odd number of 64-byte lines, so that
/// consecutive rows fall in different L1 sets.
fn padded_stride<E>(w: usize) -> usize {
    let size = std::mem::size_of::<E>();
    let lines = ((w + 2) * size).div_ceil(64) | 1;
    lines * 64 / size
}

/// Rotates through the kernel if `T` is `F` and the plane is small enough for 32-bit indices, filling
/// the (empty) `out` and `out_labels`; returns whether it did.
fn try_kernel<T: Sample, F: Fast>(
    img: &Plane<T>,
    labels: &Plane<u8>,
    fill: T,
    fill_label: u8,
    rows: &[RowMap],
    out: &mut Plane<T>,
    out_labels: &mut Plane<u8>,
) -> bool {
    let (Some(img), Some(&fill), Some(out)) = (
        (img as &dyn Any).downcast_ref::<Plane<F>>(),
        (&fill as &dyn Any).downcast_ref::<F>(),
        (out as &mut dyn Any).downcast_mut::<Plane<F>>(),
    ) else {
        return false;
    };
    let (w, h) = (img.width, img.height);
    let stride = padded_stride::<F::E>(w);
    if w.max(h) >= 1 << 22 || (h + 2).checked_mul(stride).is_none_or(|n| n >= 1 << 31) {
        return false;
    }
    let mut copy = F::copy_buffer().with(Cell::take); // empty if a caller up the stack holds it
    let ctx = Ctx { src: &img.data, labels: &labels.data, w, h, fill };
    simd::dispatch(#[inline(always)] || {
        fill_copy(&mut copy, &img.data, &labels.data, w, h, stride, F::pack(fill, fill_label));
        let mut sc = Scratch::new();
        for (band, band_rows) in rows.chunks(TILE_H).enumerate() {
            // The outputs grow band by band: their fill is written just before the kernel overwrites
            // most of it, in cache, rather than by a memset of the whole planes up front.
            let (lo, hi) = (band * TILE_H * w, (band * TILE_H + band_rows.len()) * w);
            out.data.resize(hi, fill);
            out_labels.data.resize(hi, fill_label);
            let (obuf, lbuf) = (&mut out.data[lo..hi], &mut out_labels.data[lo..hi]);
            // Columns of the band that may differ from the fill.
            let start = band_rows.iter().map(|m| m.outer.start).min().unwrap_or(0);
            let end = band_rows.iter().map(|m| m.outer.end).max().unwrap_or(0);
            for x0 in (start..end).step_by(TILE_W) {
                let x1 = (x0 + TILE_W).min(end);
                let rows_of_band = obuf.chunks_exact_mut(w).zip(lbuf.chunks_exact_mut(w));
                for ((row, lrow), m) in rows_of_band.zip(band_rows) {
                    // inner within outer, so the three ranges are in order
                    let clip = |r: &Range<usize>| r.start.clamp(x0, x1)..r.end.clamp(x0, x1);
                    let (o, i) = (clip(&m.outer), clip(&m.inner));
                    row_general(&ctx, row, lrow, o.start..i.start, m.coef);
                    let (kr, kl) = (&mut row[i.clone()], &mut lrow[i.clone()]);
                    row_kernel::<F>(&copy, stride, (w, h), &mut sc, kr, kl, i.start, m.coef);
                    row_general(&ctx, row, lrow, i.end..o.end, m.coef);
                }
            }
        }
    });
    F::copy_buffer().with(|c| c.set(copy));
    true
}

/// Fills `copy` with the framed, interleaved copy of `img` and `labels` (see [`Fast`]); `pf` is the
/// element of the fill values.
#[inline(always)]
fn fill_copy<F: Fast>(copy: &mut Vec<F::E>, img: &[F], labels: &[u8], w: usize, h: usize, stride: usize, pf: F::E) {
    let len = (h + 2) * stride;
    if copy.len() != len {
        copy.clear();
        copy.resize(len, pf);
    }
    let (top, rest) = copy.split_at_mut(stride);
    let (mid, bottom) = rest.split_at_mut(h * stride);
    top.fill(pf);
    bottom.fill(pf);
    let src_rows = img.chunks_exact(w).zip(labels.chunks_exact(w));
    for (dst, (irow, lrow)) in mid.chunks_exact_mut(stride).zip(src_rows) {
        let (left, rest) = dst.split_at_mut(1);
        let (body, right) = rest.split_at_mut(w);
        left[0] = pf;
        for ((d, &v), &l) in body.iter_mut().zip(irow).zip(lrow) {
            *d = F::pack(v, l);
        }
        right.fill(pf);
    }
}

/// Output pixels handled per stage in [`row_kernel`] (a whole tile row).
const CHUNK: usize = TILE_W;

/// The stage arrays of [`row_kernel`], made once per call.
struct Scratch<P> {
    idx: [u32; CHUNK],
    fx: [f32; CHUNK],
    fy: [f32; CHUNK],
    top: [P; CHUNK],
    bot: [P; CHUNK],
}

impl<P: Copy + Default> Scratch<P> {
    fn new() -> Self {
        Self { idx: [0; CHUNK], fx: [0.0; CHUNK], fy: [0.0; CHUNK], top: [P::default(); CHUNK], bot: [P::default(); CHUNK] }
    }
}

/// `floor(v) + 1` for `v` clamped to `[-1, max]` (NaN gives 0), for `max < 2^22`; vectorises.
#[inline(always)]
fn floor_plus_one(v: f32, max: f32) -> u32 {
    let f = floor_clamped(v, max) + 1;
    if v >= 0.0 {
        f
    } else {
        0
    }
}

/// Kernel columns of a row (`row[i]` is output column `x0 + i`): the source of each lies in
/// `(-1, w) x (-1, h)`, its neighbours in the framed `copy`.
///
/// Three stages per chunk of [`CHUNK`] pixels, so that only the gathers are scalar: (a) source
/// coordinates, copy indices and weights (vectorised), (b) per pixel two loads of two elements, the
/// top and the bottom pair with their labels (one bounds check), (c) interpolation, rounding and label
/// choice (vectorised).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn row_kernel<F: Fast>(
    copy: &[F::E],
    stride: usize,
    (w, h): (usize, usize),
    sc: &mut Scratch<F::Pair>,
    row: &mut [F],
    lrow: &mut [u8],
    x0: usize,
    (ax, bx, ay, by): (f32, f32, f32, f32),
) {
    // `try_kernel` checked (h + 2) * stride < 2^31 and w, h < 2^22, so u32 indices cannot overflow and
    // `floor_clamped` applies. In kernel columns floor(sx) is in [-1, w-1] and floor(sy) in [-1, h-1], so
    // the clamps change nothing; they keep every index in bounds regardless.
    let (xmax, ymax, s) = ((w - 1) as f32, (h - 1) as f32, stride as u32);
    // Element i of `upper` and element i of `lower` are vertically adjacent.
    let (upper, lower) = (&copy[..copy.len() - stride], &copy[stride..]);
    for (k, (orow, olrow)) in row.chunks_mut(CHUNK).zip(lrow.chunks_mut(CHUNK)).enumerate() {
        let n = orow.len();
        let base = (x0 + k * CHUNK) as i32;
        let (idx, fx, fy) = (&mut sc.idx[..n], &mut sc.fx[..n], &mut sc.fy[..n]);
        let (top, bot) = (&mut sc.top[..n], &mut sc.bot[..n]);
        // (a) coordinates
        for (j, ((i, fx), fy)) in idx.iter_mut().zip(fx.iter_mut()).zip(fy.iter_mut()).enumerate() {
            let x = (base + j as i32) as f32;
            let (sx, sy) = (ax * x + bx, ay * x + by);
            let (ix1, iy1) = (floor_plus_one(sx, xmax), floor_plus_one(sy, ymax));
            *fx = sx - (ix1 as f32 - 1.0);
            *fy = sy - (iy1 as f32 - 1.0);
            *i = iy1 * s + ix1;
        }
        // (b) gathers. (Bounds checks as branches: a clamped index would put a compare and a
        // conditional move in front of every load, which measured slower.)
        for ((t, b), &i) in top.iter_mut().zip(bot.iter_mut()).zip(idx.iter()) {
            let i = i as usize;
            let (q, r) = (&upper[i..i + 2], &lower[i..i + 2]); // equal lengths: one bounds check
            *t = F::pair([q[0], q[1]]);
            *b = F::pair([r[0], r[1]]);
        }
        // (c) interpolation and labels
        let pairs = top.iter().zip(bot.iter()).zip(fx.iter().zip(fy.iter()));
        for (((t, b), (&fx, &fy)), (o, l)) in pairs.zip(orow.iter_mut().zip(olrow.iter_mut())) {
            (*o, *l) = F::blend(t, b, fx, fy);
        }
    }
}

/// What the per-pixel path reads.
struct Ctx<'a, T> {
    src: &'a [T],
    labels: &'a [u8],
    w: usize,
    h: usize,
    fill: T,
}

/// Any columns `xs` of a row: border-aware bilinear (outside neighbours are `fill`) and nearest labels.
#[inline(always)]
fn row_general<T: Sample>(
    c: &Ctx<'_, T>,
    row: &mut [T],
    lrow: &mut [u8],
    xs: std::ops::Range<usize>,
    (ax, bx, ay, by): (f32, f32, f32, f32),
) {
    let (w, h) = (c.w as isize, c.h as isize);
    let fill = c.fill.to_f32();
    let at = |x: isize, y: isize| -> f32 {
        if x >= 0 && y >= 0 && x < w && y < h {
            c.src[(y * w + x) as usize].to_f32()
        } else {
            fill
        }
    };
    for x in xs {
        let xf = x as f32;
        let (sx, sy) = (ax * xf + bx, ay * xf + by);
        if !(sx > -1.0 && sy > -1.0 && sx < w as f32 && sy < h as f32) {
            continue; // already fill / fill_label
        }
        let (fx0, fy0) = (sx.floor(), sy.floor());
        let (ix, iy) = (fx0 as isize, fy0 as isize);
        let (fx, fy) = (sx - fx0, sy - fy0);
        let (p00, p01, p10, p11) = (at(ix, iy), at(ix + 1, iy), at(ix, iy + 1), at(ix + 1, iy + 1));
        let top = p00 + fx * (p01 - p00);
        let bot = p10 + fx * (p11 - p10);
        row[x] = T::from_f32_round_clamped(top + fy * (bot - top));
        let (lx, ly) = (ix + (fx >= 0.5) as isize, iy + (fy >= 0.5) as isize);
        if lx >= 0 && ly >= 0 && lx < w && ly < h {
            lrow[x] = c.labels[(ly * w + lx) as usize];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Image (value MAX in a 5x5 block at (bx, by)) and labels (3 in the same block).
    fn marker<T: Sample>(w: usize, h: usize, bx: usize, by: usize) -> (Plane<T>, Plane<u8>) {
        let mut img = Plane::filled(w, h, T::from_f32_round_clamped(0.0));
        let mut lab = Plane::filled(w, h, 0u8);
        for y in by..by + 5 {
            for x in bx..bx + 5 {
                img.data[y * w + x] = T::from_f32_round_clamped(T::MAX);
                lab.data[y * w + x] = 3;
            }
        }
        (img, lab)
    }

    fn centroid(w: usize, pred: impl Fn(usize) -> bool, n: usize) -> (f64, f64) {
        let (mut sx, mut sy, mut c) = (0.0, 0.0, 0.0);
        for i in (0..n).filter(|&i| pred(i)) {
            sx += (i % w) as f64;
            sy += (i / w) as f64;
            c += 1.0;
        }
        assert!(c > 0.0, "empty region");
        (sx / c, sy / c)
    }

    fn check_marker<T: Sample>(img: &Plane<T>, lab: &Plane<u8>, what: &str) {
        let n = img.data.len();
        let ci = centroid(img.width, |i| img.data[i].to_f32() > T::MAX / 2.0, n);
        let cl = centroid(img.width, |i| lab.data[i] == 3, n);
        let d = ((ci.0 - cl.0).powi(2) + (ci.1 - cl.1).powi(2)).sqrt();
        assert!(d <= 1.0, "{what}: image centroid {ci:?} vs label centroid {cl:?}");
    }

    fn markers_follow<T: Sample>() {
        let (img, lab) = marker::<T>(64, 48, 40, 10);
        for deg in [90.0, 37.0, -23.5, 180.0, 270.0, 12.0, 45.0] {
            let (ri, rl) = rotate(&img, &lab, deg, T::from_f32_round_clamped(0.0), 0);
            check_marker(&ri, &rl, &format!("rotate {deg}"));
        }
        for horizontal in [true, false] {
            let (mi, ml) = mirror(&img, &lab, horizontal);
            check_marker(&mi, &ml, &format!("mirror {horizontal}"));
        }
    }

    #[test]
    fn labels_follow_image_u8() {
        markers_follow::<u8>();
    }

    #[test]
    fn labels_follow_image_u16() {
        markers_follow::<u16>();
    }

    #[test]
    fn marker_moves_where_expected() {
        // 90 degrees counter-clockwise: a block right of centre goes above the centre.
        let (img, lab) = marker::<u8>(41, 41, 30, 18); // block centre (32, 20), image centre (20, 20)
        let (ri, rl) = rotate(&img, &lab, 90.0, 0, 0);
        let cl = centroid(41, |i| rl.data[i] == 3, rl.data.len());
        assert_eq!(cl, (20.0, 8.0));
        check_marker(&ri, &rl, "90");
    }

    #[test]
    fn rotate_90_exact_pattern() {
        // 3x3 counter-clockwise: the right column becomes the top row.
        let img = Plane::new(3, 3, vec![1u8, 2, 3, 4, 5, 6, 7, 8, 9]).unwrap();
        let lab = Plane::new(3, 3, vec![10u8, 20, 30, 40, 50, 60, 70, 80, 90]).unwrap();
        let (ri, rl) = rotate(&img, &lab, 90.0, 0, 0);
        assert_eq!(ri.data, vec![3, 6, 9, 2, 5, 8, 1, 4, 7]);
        assert_eq!(rl.data, vec![30, 60, 90, 20, 50, 80, 10, 40, 70]);
        // 4x4 with 16-bit values, and -90 undoes +90.
        let img = Plane::new(4, 4, (0..16u16).map(|v| v * 4000).collect()).unwrap();
        let lab = Plane::new(4, 4, (0..16u8).collect()).unwrap();
        let (ri, rl) = rotate(&img, &lab, 90.0, 0, 0);
        let expect: Vec<u8> = vec![3, 7, 11, 15, 2, 6, 10, 14, 1, 5, 9, 13, 0, 4, 8, 12];
        assert_eq!(rl.data, expect);
        assert_eq!(ri.data, expect.iter().map(|&v| v as u16 * 4000).collect::<Vec<_>>());
        let (bi, bl) = rotate(&ri, &rl, -90.0, 0, 0);
        assert_eq!((bi, bl), (img, lab));
    }

    #[test]
    fn rotate_zero_is_identity_and_mirror_twice_too() {
        let img = Plane::new(37, 23, (0..37 * 23).map(|v| (v * 71 % 65536) as u16).collect()).unwrap();
        let lab = Plane::new(37, 23, (0..37 * 23).map(|v| (v % 5) as u8).collect()).unwrap();
        assert_eq!(rotate(&img, &lab, 0.0, 7, 9), (img.clone(), lab.clone()));
        assert_eq!(rotate(&img, &lab, 360.0, 7, 9), (img.clone(), lab.clone()));
        for horizontal in [true, false] {
            let (mi, ml) = mirror(&img, &lab, horizontal);
            assert_ne!(mi, img);
            assert_eq!(mirror(&mi, &ml, horizontal), (img.clone(), lab.clone()));
        }
        let (mi, _) = mirror(&img, &lab, true);
        assert_eq!(mi.data[0], img.data[36]);
    }

    #[test]
    fn rotate_fills_outside_and_keeps_16_bit() {
        let (w, h) = (200, 160);
        let img = Plane::new(w, h, (0..w * h).map(|i| ((i % w) * 65535 / (w - 1)) as u16).collect()).unwrap();
        let lab = Plane::filled(w, h, 1u8);
        let (ri, rl) = rotate(&img, &lab, 17.0, 0, 255);
        assert_eq!(rl.data[0], 255, "corner comes from outside");
        assert_eq!(rl.data[(h / 2) * w + w / 2], 1);
        let mut distinct = ri.data.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(distinct.len() > 256, "{} distinct values", distinct.len());
        assert!(*distinct.last().unwrap() > 60000);
    }

    #[test]
    fn same_result_on_every_simd_path() {
        let (w, h) = (131, 97);
        let img = Plane::new(w, h, (0..w * h).map(|i| (i * 7919 % 65536) as u16).collect()).unwrap();
        let lab = Plane::new(w, h, (0..w * h).map(|i| (i % 251) as u8).collect()).unwrap();
        simd::assert_same_on_all_paths(|| (rotate(&img, &lab, 17.0, 3, 4), mirror(&img, &lab, true)));
        let img8 = Plane::new(w, h, img.data.iter().map(|&v| (v >> 8) as u8).collect()).unwrap();
        simd::assert_same_on_all_paths(|| rotate(&img8, &lab, -33.3, 0, 0));
    }

    /// The reference: the per-pixel path over every column.
    fn per_pixel<T: Sample>(img: &Plane<T>, lab: &Plane<u8>, degrees: f32, fill: T, fill_label: u8) -> (Vec<T>, Vec<u8>) {
        let (w, h) = (img.width, img.height);
        let ctx = Ctx { src: &img.data, labels: &lab.data, w, h, fill };
        let (mut out, mut out_labels) = (vec![fill; w * h], vec![fill_label; w * h]);
        let rows = out.chunks_exact_mut(w).zip(out_labels.chunks_exact_mut(w));
        for ((row, lrow), m) in rows.zip(row_maps(w, h, degrees)) {
            row_general(&ctx, row, lrow, 0..w, m.coef);
        }
        (out, out_labels)
    }

    /// The kernel (framed copy, column ranges, tiles) gives exactly what the per-pixel path gives at
    /// every pixel, on every SIMD path: odd and even sizes, tiny and wider than a tile, angles at and
    /// near multiples of 45 degrees and random ones, fills that are not zero.
    #[test]
    fn kernel_matches_per_pixel_path() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        for (w, h) in [(131, 97), (300, 40), (40, 300), (64, 64), (2, 2), (1, 9), (9, 1), (3, 5)] {
            let img16 = Plane::new(w, h, (0..w * h).map(|_| rng.random::<u16>()).collect()).unwrap();
            let img8 = Plane::new(w, h, (0..w * h).map(|_| rng.random::<u8>()).collect()).unwrap();
            let lab = Plane::new(w, h, (0..w * h).map(|_| rng.random::<u8>()).collect()).unwrap();
            let mut angles = vec![0.0, 1e-4, 17.0, -33.3, 45.0, 89.99, 90.0, 90.01, 135.0, 180.0, -179.99, 270.0];
            angles.extend((0..20).map(|_| rng.random_range(-180.0f32..180.0)));
            for deg in angles {
                let (f8, f16, fl) = (rng.random::<u8>(), rng.random::<u16>(), rng.random::<u8>());
                let (ri, rl) = simd::assert_same_on_all_paths(|| rotate(&img8, &lab, deg, f8, fl));
                assert!((ri.data, rl.data) == per_pixel(&img8, &lab, deg, f8, fl), "u8 {w}x{h} {deg}");
                let (ri, rl) = simd::assert_same_on_all_paths(|| rotate(&img16, &lab, deg, f16, fl));
                assert!((ri.data, rl.data) == per_pixel(&img16, &lab, deg, f16, fl), "u16 {w}x{h} {deg}");
            }
        }
    }

    #[test]
    fn tiny_planes_do_not_panic() {
        for (w, h) in [(0, 0), (1, 1), (1, 5), (5, 1), (2, 2)] {
            let img = Plane::filled(w, h, 100u8);
            let lab = Plane::filled(w, h, 1u8);
            let _ = rotate(&img, &lab, 33.0, 0, 0);
            assert_eq!(rotate(&img, &lab, 0.0, 0, 0), (img.clone(), lab.clone()));
            assert_eq!(mirror(&img, &lab, true).0.data.len(), w * h);
        }
    }
}
