//! The convolution engine: forward, backward-data (= the transposed convolution's forward) and
//! backward-weights, on contiguous NCHW slices. See the parent module for the design.

use super::{alloc, threads, with_scratch, Elem, SharedMut};
use rayon::prelude::*;

/// Shapes of one convolution `x (n, cin, h, w) * w (cout, cin, kh, kw) -> y (n, cout, oh, ow)`, the same
/// padding on both axes (candle's and PyTorch's convention for these layers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geom {
    pub n: usize,
    pub cin: usize,
    pub h: usize,
    pub w: usize,
    pub cout: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad: usize,
    pub dil: usize,
    pub oh: usize,
    pub ow: usize,
}

/// Fewest output pixels per GEMM call on the tiled path.
const MIN_TILE_COLS: usize = 512;
/// Largest batched im2col matrix (bytes); larger small-map convolutions take the tiled path.
const BATCHED_MAX_BYTES: usize = 64 << 20;

impl Geom {
    /// The geometry of a forward convolution, its output size derived as in PyTorch.
    pub fn new(x: [usize; 4], wt: [usize; 4], stride: usize, pad: usize, dil: usize) -> Result<Geom, String> {
        let [n, cin, h, w] = x;
        let [cout, wcin, kh, kw] = wt;
        if wcin != cin {
            return Err(format!("conv2d: input has {cin} channels, kernel expects {wcin}"));
        }
        if stride == 0 || dil == 0 {
            return Err("conv2d: stride and dilation must be at least 1".into());
        }
        let span = |k: usize| dil * (k - 1) + 1;
        if kh == 0 || kw == 0 || h + 2 * pad < span(kh) || w + 2 * pad < span(kw) {
            return Err(format!("conv2d: kernel {kh}x{kw} (dilation {dil}) does not fit the {h}x{w} input padded by {pad}"));
        }
        let oh = (h + 2 * pad - span(kh)) / stride + 1;
        let ow = (w + 2 * pad - span(kw)) / stride + 1;
        Ok(Geom { n, cin, h, w, cout, kh, kw, stride, pad, dil, oh, ow })
    }

    /// The geometry of a transposed convolution `u (n, cin_t, uh, uw) -> z (n, cout_t, zh, zw)` with
    /// weights `(cin_t, cout_t, kh, kw)`, seen as the convolution `z -> u` whose backward-data it is.
    pub fn transposed(u: [usize; 4], wt: [usize; 4], stride: usize, pad: usize, out_pad: usize, dil: usize) -> Result<Geom, String> {
        let [n, cin_t, uh, uw] = u;
        let [wcin, cout_t, kh, kw] = wt;
        if wcin != cin_t {
            return Err(format!("conv_transpose2d: input has {cin_t} channels, kernel expects {wcin}"));
        }
        if out_pad >= stride.max(dil) {
            return Err(format!("conv_transpose2d: output padding {out_pad} must be smaller than stride or dilation"));
        }
        let side = |i: usize, k: usize| ((i - 1) * stride + dil * (k - 1) + 1 + out_pad).checked_sub(2 * pad);
        let (zh, zw) = match (uh.checked_sub(1).and(side(uh, kh)), uw.checked_sub(1).and(side(uw, kw))) {
            (Some(a), Some(b)) if a > 0 && b > 0 => (a, b),
            _ => return Err(format!("conv_transpose2d: padding {pad} leaves no output for a {uh}x{uw} input")),
        };
        let g = Geom::new([n, cout_t, zh, zw], [cin_t, cout_t, kh, kw], stride, pad, dil)?;
        debug_assert_eq!((g.oh, g.ow), (uh, uw));
        Ok(g)
    }

    /// Rows of the im2col matrix: `cin · kh · kw`.
    pub fn k(&self) -> usize {
        self.cin * self.kh * self.kw
    }
    fn taps(&self) -> usize {
        self.kh * self.kw
    }
    fn in_img(&self) -> usize {
        self.cin * self.h * self.w
    }
    fn out_plane(&self) -> usize {
        self.oh * self.ow
    }
    fn out_img(&self) -> usize {
        self.cout * self.out_plane()
    }
    /// Multiply-adds of the forward pass (each backward pass costs the same).
    pub fn macs(&self) -> f64 {
        (self.n * self.out_img() * self.k()) as f64
    }
    /// A 1x1, stride-1, unpadded convolution reads its input directly as the im2col matrix.
    fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad == 0
    }

    /// Output rows per tile. A tile's GEMM packs the whole kernel matrix once, so a tile needs enough
    /// columns (at least 512) to amortise that: with one 32-pixel row per tile, Dilation10's fc6
    /// (1024 x 6272 weights) repacked 25 MB per 0.4 GFLOP and ran at a third of the speed. Within
    /// that, tiles stay near 256 KiB of im2col (L2) and there are a few tasks per thread.
    fn tile_rows(&self, elem: usize) -> usize {
        let cols = ((256 << 10) / (self.k().max(1) * elem)).max(MIN_TILE_COLS);
        let by_cache = (cols / self.ow.max(1)).max(1);
        let tasks_wanted = 4 * threads();
        let per_image = tasks_wanted.div_ceil(self.n.max(1));
        let by_tasks = self.oh.div_ceil(per_image).max(1);
        let min_rows = MIN_TILE_COLS.div_ceil(self.ow.max(1));
        by_cache.min(by_tasks.max(min_rows)).min(self.oh).max(1)
    }

    /// Output rows per tile of the backward-weights pass. Its GEMM's inner dimension is the tile's
    /// pixels and it reads and writes the whole `cout x K` accumulator per call, so its tiles are longer
    /// (about 4,096 pixels, at most 4 MiB of im2col): 16-channel layers ran at 25 GFLOP/s on 512-pixel
    /// tiles.
    fn weight_tile_rows(&self, elem: usize) -> usize {
        let cols = ((4 << 20) / (self.k().max(1) * elem)).clamp(MIN_TILE_COLS, 4096);
        let by_size = (cols / self.ow.max(1)).max(1);
        let per_image = (2 * threads()).div_ceil(self.n.max(1));
        let by_tasks = self.oh.div_ceil(per_image).max(1);
        by_size.min(by_tasks.max(MIN_TILE_COLS.div_ceil(self.ow.max(1)))).min(self.oh).max(1)
    }

    /// Small maps (fewer than [`MIN_TILE_COLS`] output pixels per image) are convolved as one batch:
    /// one im2col matrix for all images and one multi-threaded GEMM, then a reorder to NCHW. Deep
    /// layers of FCN (8 x 8 maps, 4096 x 25088 weights at full width) would otherwise run one small
    /// GEMM per image, each repacking every weight.
    fn batched(&self, elem: usize) -> bool {
        self.out_plane() < MIN_TILE_COLS && self.k() * self.n * self.out_plane() * elem <= BATCHED_MAX_BYTES
    }

    /// Kernel taps `k0..k1` along an axis (input size `size`, kernel size `k`) that read inside the
    /// input for output position `o`.
    fn valid_taps(&self, o: usize, size: usize, k: usize) -> (usize, usize) {
        let (s, p, d) = (self.stride, self.pad, self.dil);
        let lo = if o * s >= p { 0 } else { (p - o * s).div_ceil(d) };
        let hi = if size + p > o * s { ((size - 1 + p - o * s) / d + 1).min(k) } else { 0 };
        (lo.min(hi), hi)
    }

    /// Stride-1 convolutions whose padding makes at least a quarter of the taps read zeros take the grid
    /// route ([`Grid`]), which skips every such tap: Dilation10's fc6 (7x7, dilation 4, padding 12 on
    /// 32 x 32) reads zeros with 38 % of its taps, its context layers of dilation 8 and 16 with 31 % and
    /// 56 %, DeepLabv3's ASPP at rate 12 on 32 x 32 with 44 %. Measured on 4 x 32 x 32 maps, forward /
    /// backward-data / backward-weights ms, grid against tiles: fc6 (128 -> 1024) 201/207/214 against
    /// 270/327/290; 3x3 dilation 8 (128 -> 128) 10.1/10.6/11.0 against 11.9/12.4/12.7; dilation 12
    /// (128 -> 64) 2.6/2.9/2.9 against 3.7/3.3/4.4. Below a quarter the grid's GEMMs (inner dimension
    /// only the valid kernel columns) lose: DeepLabv3's dilation-4 layers (16 % zeros) 8.5/8.4-9.2/
    /// 8.8-10.3 against 7.7-8.4/7.3-8.0/8.3-8.7.
    fn grid(&self) -> bool {
        if self.stride != 1 || self.pointwise() || self.taps() < 4 {
            return false;
        }
        let span = |o: usize, size: usize, k: usize| {
            let (a, b) = self.valid_taps(o, size, k);
            b - a
        };
        let vy: usize = (0..self.oh).map(|o| span(o, self.h, self.kh)).sum();
        let vx: usize = (0..self.ow).map(|o| span(o, self.w, self.kw)).sum();
        4 * vy * vx <= 3 * self.oh * self.kh * self.ow * self.kw
    }

    /// The output columns `ox` whose input column `ox·s + off − p` lies inside `[0, w)`, for the tap at
    /// offset `off = kx·d`.
    fn valid_cols(&self, off: usize) -> (usize, usize) {
        self.valid_out(off, self.w, self.ow)
    }

    /// Output positions along an axis (input size `size`, output size `osize`) whose tap at offset
    /// `off` reads inside the input.
    fn valid_out(&self, off: usize, size: usize, osize: usize) -> (usize, usize) {
        let (s, p) = (self.stride, self.pad);
        let lo = if off >= p { 0 } else { (p - off).div_ceil(s) };
        let hi = if size + p > off { ((size - 1 + p - off) / s + 1).min(osize) } else { 0 };
        (lo.min(hi), hi)
    }
}

/// im2col of output rows `r0..r1` of one image: `col[((c·kh + ky)·kw + kx)·ld + off + (oy − r0)·ow + ox]`
/// (`ld` = the matrix's row length, `off` = the image's first column in it).
fn im2col<T: Elem>(x: &[T], g: &Geom, r0: usize, r1: usize, col: &mut [T], ld: usize, off: usize) {
    let cols = (r1 - r0) * g.ow;
    for c in 0..g.cin {
        let xc = &x[c * g.h * g.w..(c + 1) * g.h * g.w];
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let row = (c * g.kh + ky) * g.kw + kx;
                fill_row(xc, g, ky, kx, r0, r1, &mut col[row * ld + off..row * ld + off + cols]);
            }
        }
    }
}

/// One im2col row: input channel `xc` under tap `(ky, kx)` for output rows `r0..r1` (zeros outside).
#[allow(clippy::too_many_arguments)]
fn fill_row<T: Elem>(xc: &[T], g: &Geom, ky: usize, kx: usize, r0: usize, r1: usize, dst: &mut [T]) {
    let (s, p, d) = (g.stride, g.pad, g.dil);
    let (lo, hi) = g.valid_cols(kx * d);
    for oy in r0..r1 {
        let drow = &mut dst[(oy - r0) * g.ow..(oy - r0 + 1) * g.ow];
        let iy = (oy * s + ky * d) as isize - p as isize;
        if iy < 0 || iy >= g.h as isize || lo >= hi {
            drow.fill(T::ZERO);
            continue;
        }
        drow[..lo].fill(T::ZERO);
        drow[hi..].fill(T::ZERO);
        let src = &xc[iy as usize * g.w..(iy as usize + 1) * g.w];
        let ix0 = lo * s + kx * d - p;
        if s == 1 {
            drow[lo..hi].copy_from_slice(&src[ix0..ix0 + (hi - lo)]);
        } else {
            for (j, v) in drow[lo..hi].iter_mut().enumerate() {
                *v = src[ix0 + j * s];
            }
        }
    }
}

/// col2im (scatter-add) of output rows `r0..r1` for input channels `c0..c1` of one image; `col` holds
/// the rows of those channels only (row length `ld`, the image's columns from `off`), `dx` is the
/// image's whole `cin x h x w` gradient.
#[allow(clippy::too_many_arguments)]
fn col2im<T: Elem>(col: &[T], g: &Geom, r0: usize, r1: usize, c0: usize, c1: usize, dx: &mut [T], ld: usize, off: usize) {
    let cols = (r1 - r0) * g.ow;
    let (s, p, d) = (g.stride, g.pad, g.dil);
    for c in c0..c1 {
        let dxc = &mut dx[c * g.h * g.w..(c + 1) * g.h * g.w];
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let row = ((c - c0) * g.kh + ky) * g.kw + kx;
                let src = &col[row * ld + off..row * ld + off + cols];
                let (lo, hi) = g.valid_cols(kx * d);
                if lo >= hi {
                    continue;
                }
                for oy in r0..r1 {
                    let iy = (oy * s + ky * d) as isize - p as isize;
                    if iy < 0 || iy >= g.h as isize {
                        continue;
                    }
                    let srow = &src[(oy - r0) * g.ow..(oy - r0 + 1) * g.ow];
                    let drow = &mut dxc[iy as usize * g.w..(iy as usize + 1) * g.w];
                    let ix0 = lo * s + kx * d - p;
                    if s == 1 {
                        for (a, b) in drow[ix0..ix0 + (hi - lo)].iter_mut().zip(&srow[lo..hi]) {
                            *a += *b;
                        }
                    } else {
                        for (j, b) in srow[lo..hi].iter().enumerate() {
                            drow[ix0 + j * s] += *b;
                        }
                    }
                }
            }
        }
    }
}

/// `dst (m x n) = [dst +] lhs (m x k) · rhs (k x n)`, strides in elements (row stride, column stride).
#[allow(clippy::too_many_arguments)]
#[inline]
unsafe fn gemm<T: Elem>(m: usize, n: usize, k: usize, dst: *mut T, dst_rs: usize, accumulate: bool, lhs: *const T, lhs_rs: usize, lhs_cs: usize, rhs: *const T, rhs_rs: usize, rhs_cs: usize) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                std::slice::from_raw_parts_mut(dst.add(i * dst_rs), n).fill(T::ZERO);
            }
        }
        return;
    }
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        accumulate,
        lhs,
        lhs_cs as isize,
        lhs_rs as isize,
        rhs,
        rhs_cs as isize,
        rhs_rs as isize,
        T::ONE,
        T::ONE,
        false,
        false,
        false,
        gemm::Parallelism::None,
    )
}

/// Row tiles of every image: `(image, first row, end row)`.
fn tiles(g: &Geom, rows: usize) -> Vec<(usize, usize, usize)> {
    (0..g.n).flat_map(|i| (0..g.oh).step_by(rows).map(move |r| (i, r, (r + rows).min(g.oh)))).collect()
}

/// Forward: `y = conv(x, w) [+ bias] [then ReLU]`, all NCHW contiguous.
pub fn forward<T: Elem>(x: &[T], w: &[T], bias: Option<&[T]>, relu: bool, g: &Geom) -> Vec<T> {
    if g.grid() {
        return forward_grid(x, w, bias, relu, g);
    }
    if g.batched(std::mem::size_of::<T>()) {
        return forward_batched(x, w, bias, relu, g);
    }
    let mut y = alloc::<T>(g.n * g.out_img());
    let rows = g.tile_rows(std::mem::size_of::<T>());
    let yp = SharedMut(y.as_mut_ptr());
    let k = g.k();
    tiles(g, rows).into_par_iter().for_each(|(i, r0, r1)| {
        let cols = (r1 - r0) * g.ow;
        let xi = &x[i * g.in_img()..(i + 1) * g.in_img()];
        let yp = yp;
        // SAFETY: each task writes the columns r0·ow..r1·ow of image i's rows: disjoint across tasks.
        let dst = unsafe { yp.0.add(i * g.out_img() + r0 * g.ow) };
        if g.pointwise() {
            unsafe { gemm(g.cout, cols, k, dst, g.out_plane(), false, w.as_ptr(), k, 1, xi.as_ptr().add(r0 * g.ow), g.h * g.w, 1) };
        } else {
            let ld = padded(cols);
            with_scratch::<T, _>(k * ld, |col| {
                im2col(xi, g, r0, r1, col, ld, 0);
                unsafe { gemm(g.cout, cols, k, dst, g.out_plane(), false, w.as_ptr(), k, 1, col.as_ptr(), ld, 1) };
            });
        }
        if bias.is_some() || relu {
            for co in 0..g.cout {
                // SAFETY: the same region this task just wrote.
                let out = unsafe { std::slice::from_raw_parts_mut(dst.add(co * g.out_plane()), cols) };
                let b = bias.map_or(T::ZERO, |b| b[co]);
                match (bias.is_some(), relu) {
                    (true, true) => out.iter_mut().for_each(|v| *v = relu_of(*v + b)),
                    (true, false) => out.iter_mut().for_each(|v| *v += b),
                    _ => out.iter_mut().for_each(|v| *v = relu_of(*v)),
                }
            }
        }
    });
    y
}

#[inline(always)]
fn relu_of<T: Elem>(v: T) -> T {
    v.keep_if(v > T::ZERO)
}

/// Backward-data: `dx = convᵀ(dy, w)`, the gradient of the input (and the transposed convolution's
/// forward). Tasks are (image, block of input channels), so col2im writes never collide.
pub fn backward_data<T: Elem>(dy: &[T], w: &[T], g: &Geom) -> Vec<T> {
    if g.grid() {
        return backward_data_grid(dy, w, g);
    }
    if let Some(dx) = backward_data_as_forward(dy, w, g) {
        return dx;
    }
    if g.batched(std::mem::size_of::<T>()) {
        return backward_data_batched(dy, w, g);
    }
    let mut dx = vec![T::ZERO; g.n * g.in_img()];
    let per_image = (4 * threads()).div_ceil(g.n.max(1));
    let blocks = per_image.min(g.cin).max(1);
    let cblk = g.cin.div_ceil(blocks);
    let (k, taps) = (g.k(), g.taps());
    let elem = std::mem::size_of::<T>();
    let rows = ((256 << 10) / (cblk * taps * elem * g.ow.max(1))).clamp(1, g.oh);
    let tasks: Vec<(usize, usize)> = (0..g.n).flat_map(|i| (0..g.cin).step_by(cblk).map(move |c| (i, c))).collect();
    let dxp = SharedMut(dx.as_mut_ptr());
    tasks.into_par_iter().for_each(|(i, c0)| {
        let c1 = (c0 + cblk).min(g.cin);
        let dxp = dxp;
        // SAFETY: channels c0..c1 of image i belong to this task alone; col2im writes only there.
        let dxi = unsafe { std::slice::from_raw_parts_mut(dxp.0.add(i * g.in_img()), g.in_img()) };
        let dyi = &dy[i * g.out_img()..(i + 1) * g.out_img()];
        let m = (c1 - c0) * taps;
        for r0 in (0..g.oh).step_by(rows) {
            let r1 = (r0 + rows).min(g.oh);
            let cols = (r1 - r0) * g.ow;
            if g.pointwise() {
                // dx rows are the dcol rows: the gemm accumulates straight into dx.
                unsafe { gemm(m, cols, g.cout, dxi.as_mut_ptr().add(c0 * g.h * g.w + r0 * g.ow), g.h * g.w, false, w.as_ptr().add(c0), 1, k, dyi.as_ptr().add(r0 * g.ow), g.out_plane(), 1) };
                continue;
            }
            let ld = padded(cols);
            with_scratch::<T, _>(m * ld, |dcol| {
                // dcol (m x cols) = Wᵀ[c0·taps.., :] (m x cout) · dy_tile (cout x cols)
                unsafe { gemm(m, cols, g.cout, dcol.as_mut_ptr(), ld, false, w.as_ptr().add(c0 * taps), 1, k, dyi.as_ptr().add(r0 * g.ow), g.out_plane(), 1) };
                col2im(dcol, g, r0, r1, c0, c1, dxi, ld, 0);
            });
        }
    });
    dx
}

/// Backward-data of a stride-1 convolution as a forward convolution: `dx = conv(dy, w')` with the
/// kernel flipped and its channel axes swapped, padded by `d·(k − 1) − p`. It runs on the forward's
/// tiles (a GEMM over `cout·kh·kw`, no col2im): on U-Net's 16-channel layers the col2im route's GEMM
/// has an inner dimension of only 16 and is bound by its stores. `None` for strided convolutions or
/// padding beyond the kernel's reach.
fn backward_data_as_forward<T: Elem>(dy: &[T], w: &[T], g: &Geom) -> Option<Vec<T>> {
    let reach = g.dil * (g.kh - 1);
    // Small maps take the batched col2im route: there the GEMM's inner dimension is the whole batch's
    // pixels, while the flipped convolution's im2col would hold cout·kh·kw rows (fc6: 50,176 x 256,
    // 51 MB, measured 34 GFLOP/s against 130 for the col2im route).
    let elem = std::mem::size_of::<T>();
    // Nor when one tile of the flipped kernel's im2col would pass 16 MiB (a 7x7 kernel with 1024
    // outputs: 50,176 rows), far beyond the caches the tiles are sized for.
    if g.stride != 1 || g.kh != g.kw || g.pad > reach || g.pointwise() || g.batched(elem) || g.cout * g.taps() * MIN_TILE_COLS * elem > 16 << 20 {
        return None;
    }
    let taps = g.taps();
    let mut wf = alloc::<T>(w.len());
    for co in 0..g.cout {
        for ci in 0..g.cin {
            for t in 0..taps {
                wf[(ci * g.cout + co) * taps + (taps - 1 - t)] = w[(co * g.cin + ci) * taps + t];
            }
        }
    }
    let gf = Geom::new([g.n, g.cout, g.oh, g.ow], [g.cin, g.cout, g.kh, g.kw], 1, reach - g.pad, g.dil).ok()?;
    debug_assert_eq!((gf.oh, gf.ow), (g.h, g.w));
    Some(forward(dy, &wf, None, false, &gf))
}

/// Backward-weights: `dw = Σ_images Σ_tiles dy_tile · colᵀ` (per-task accumulators, one reduction).
pub fn backward_weights<T: Elem>(x: &[T], dy: &[T], g: &Geom) -> Vec<T> {
    if g.grid() {
        return backward_weights_grid(x, dy, g);
    }
    if g.batched(std::mem::size_of::<T>()) {
        return backward_weights_batched(x, dy, g);
    }
    let k = g.k();
    let rows = g.weight_tile_rows(std::mem::size_of::<T>());
    let len = g.cout * k;
    // A fixed number of accumulators over fixed runs of tiles, summed in order: the result does not
    // depend on how rayon steals work, so a training is bit-for-bit repeatable (a resumed one ends
    // where an uninterrupted one does). rayon's fold/reduce split at run time.
    let all = tiles(g, rows);
    let groups = (2 * threads()).min(all.len()).max(1);
    let per = all.len().div_ceil(groups);
    let acc = all
        .par_chunks(per)
        .map(|run| {
            run.iter().fold(vec![T::ZERO; len], |mut dw, &(i, r0, r1)| {
                let cols = (r1 - r0) * g.ow;
                let xi = &x[i * g.in_img()..(i + 1) * g.in_img()];
                let dyt = unsafe { dy.as_ptr().add(i * g.out_img() + r0 * g.ow) };
                if g.pointwise() {
                    // colᵀ is x's tile read column-wise: element (p, c) at c·h·w + p.
                    unsafe { gemm(g.cout, k, cols, dw.as_mut_ptr(), k, true, dyt, g.out_plane(), 1, xi.as_ptr().add(r0 * g.ow), 1, g.h * g.w) };
                } else {
                    let ld = padded(cols);
                    with_scratch::<T, _>(k * ld, |col| {
                        im2col(xi, g, r0, r1, col, ld, 0);
                        unsafe { gemm(g.cout, k, cols, dw.as_mut_ptr(), k, true, dyt, g.out_plane(), 1, col.as_ptr(), 1, ld) };
                    });
                }
                dw
            })
        })
        .collect::<Vec<_>>();
    let mut parts = acc.into_iter();
    let mut dw = parts.next().unwrap_or_else(|| vec![T::ZERO; len]);
    for p in parts {
        dw.iter_mut().zip(&p).for_each(|(a, b)| *a += *b);
    }
    dw
}

/// The im2col matrix of every image side by side: `K x (n · oh · ow)`.
fn im2col_batch<T: Elem>(x: &[T], g: &Geom) -> (Vec<T>, usize) {
    let (plane, cols) = (g.out_plane(), g.n * g.out_plane());
    let ld = padded(cols);
    let mut col = alloc::<T>(g.k() * ld);
    for i in 0..g.n {
        im2col(&x[i * g.in_img()..(i + 1) * g.in_img()], g, 0, g.oh, &mut col, ld, i * plane);
    }
    (col, ld)
}

/// A row length for im2col matrices that is not a multiple of 128 bytes: rows of 512 or 4,096 floats
/// (power-of-two strides) made the GEMM's reads alias in the cache (16-channel backward-weights at 19-25
/// GFLOP/s).
fn padded(cols: usize) -> usize {
    cols.next_multiple_of(16) | 16
}

/// `(n, c, plane)` -> `(c, n · plane)`.
fn channels_first<T: Elem>(a: &[T], n: usize, c: usize, plane: usize) -> Vec<T> {
    let mut out = alloc::<T>(a.len());
    for i in 0..n {
        for ch in 0..c {
            out[ch * n * plane + i * plane..ch * n * plane + (i + 1) * plane].copy_from_slice(&a[(i * c + ch) * plane..(i * c + ch + 1) * plane]);
        }
    }
    out
}

/// `dst (m x n) = lhs · rhs` on all threads: the larger of `m` and `n` is cut into one block per
/// thread, each a single-threaded GEMM (gemm's own threading split these shapes poorly: 65 GFLOP/s on
/// FCN's fc7, 1024 x 256 x 1024).
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_split<T: Elem>(m: usize, n: usize, k: usize, dst: *mut T, dst_rs: usize, lhs: *const T, lhs_rs: usize, lhs_cs: usize, rhs: *const T, rhs_rs: usize, rhs_cs: usize) {
    gemm_split_acc(m, n, k, dst, dst_rs, false, lhs, lhs_rs, lhs_cs, rhs, rhs_rs, rhs_cs)
}

/// [`gemm_split`], adding to `dst` when `accumulate`.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_split_acc<T: Elem>(m: usize, n: usize, k: usize, dst: *mut T, dst_rs: usize, accumulate: bool, lhs: *const T, lhs_rs: usize, lhs_cs: usize, rhs: *const T, rhs_rs: usize, rhs_cs: usize) {
    let parts = threads();
    let (dp, lp, rp) = (SharedMut(dst), SharedMut(lhs as *mut T), SharedMut(rhs as *mut T));
    let by_rows = m >= n;
    let len = if by_rows { m } else { n };
    let step = len.div_ceil(parts).max(1);
    (0..len).step_by(step).collect::<Vec<_>>().into_par_iter().for_each(|a| {
        let b = (a + step).min(len);
        let (dp, lp, rp) = (dp, lp, rp);
        // SAFETY: each block writes its own rows (or columns) of dst.
        if by_rows {
            gemm(b - a, n, k, dp.0.add(a * dst_rs), dst_rs, accumulate, lp.0.add(a * lhs_rs), lhs_rs, lhs_cs, rp.0, rhs_rs, rhs_cs);
        } else {
            gemm(m, b - a, k, dp.0.add(a), dst_rs, accumulate, lp.0, lhs_rs, lhs_cs, rp.0.add(a * rhs_cs), rhs_rs, rhs_cs);
        }
    });
}

/// [`forward`] for small maps: one GEMM over the batch, then NCHW with the epilogue.
fn forward_batched<T: Elem>(x: &[T], w: &[T], bias: Option<&[T]>, relu: bool, g: &Geom) -> Vec<T> {
    let (k, plane) = (g.k(), g.out_plane());
    let cols = g.n * plane;
    let (col, ld) = im2col_batch(x, g);
    let mut tmp = alloc::<T>(g.cout * cols);
    unsafe { gemm_split(g.cout, cols, k, tmp.as_mut_ptr(), cols, w.as_ptr(), k, 1, col.as_ptr(), ld, 1) };
    let mut y = alloc::<T>(g.n * g.out_img());
    y.par_chunks_mut(plane).enumerate().for_each(|(j, out)| {
        let (i, co) = (j / g.cout, j % g.cout);
        let src = &tmp[co * cols + i * plane..co * cols + (i + 1) * plane];
        let b = bias.map_or(T::ZERO, |b| b[co]);
        for (o, v) in out.iter_mut().zip(src) {
            let v = *v + b;
            *o = if relu { relu_of(v) } else { v };
        }
    });
    y
}

/// [`backward_data`]'s col2im route for small maps: one GEMM over the batch, col2im per image.
fn backward_data_batched<T: Elem>(dy: &[T], w: &[T], g: &Geom) -> Vec<T> {
    let (k, plane) = (g.k(), g.out_plane());
    let cols = g.n * plane;
    let dyt = channels_first(dy, g.n, g.cout, plane);
    let ld = padded(cols);
    let mut dcol = alloc::<T>(k * ld);
    unsafe { gemm_split(k, cols, g.cout, dcol.as_mut_ptr(), ld, w.as_ptr(), 1, k, dyt.as_ptr(), cols, 1) };
    let mut dx = vec![T::ZERO; g.n * g.in_img()];
    dx.par_chunks_mut(g.in_img()).enumerate().for_each(|(i, dxi)| col2im(&dcol, g, 0, g.oh, 0, g.cin, dxi, ld, i * plane));
    dx
}

/// [`backward_weights`] for small maps: `dw = dyᵀ-by-channel · colᵀ` in one GEMM over the batch.
fn backward_weights_batched<T: Elem>(x: &[T], dy: &[T], g: &Geom) -> Vec<T> {
    let (k, plane) = (g.k(), g.out_plane());
    let cols = g.n * plane;
    let (col, ld) = im2col_batch(x, g);
    let dyt = channels_first(dy, g.n, g.cout, plane);
    let mut dw = alloc::<T>(g.cout * k);
    unsafe { gemm_split(g.cout, k, cols, dw.as_mut_ptr(), k, dyt.as_ptr(), cols, 1, col.as_ptr(), 1, ld) };
    dw
}

/// The grid route for stride-1 convolutions with wide padding (see [`Geom::grid`]). Output columns are
/// cut into regions whose pixels read the same kernel columns `kx0..kx1` inside the input; for each
/// kernel row `ky` the output rows `y0..y1` that read inside are one range. The pair (kernel row,
/// region) is then one GEMM over exactly the taps that read data: the kernel columns `kx0..kx1` of row
/// `ky` are contiguous in the kernel laid out as `(cout, ky, kx, cin)`, and the pixels are contiguous
/// once the map is reordered region by region, rows then images then columns
/// (`x0·n·oh + (oy·n + i)·(x1 − x0) + ox − x0`). Kernel-row bands alone skipped 21 % of fc6's taps
/// against the 38 % that read zeros; tiles of the flipped kernel for its backward-data built a
/// 50,176-row im2col and ran at 129 GFLOP/s counting the zeros.
struct Grid {
    /// `(x0, x1, kx0, kx1)`, covering every output column (regions without taps included).
    regions: Vec<(usize, usize, usize, usize)>,
    /// Per kernel row, the output rows `y0..y1` it reads inside the input.
    rows: Vec<(usize, usize)>,
    n: usize,
    oh: usize,
}

impl Grid {
    fn new(g: &Geom) -> Grid {
        let mut regions: Vec<(usize, usize, usize, usize)> = Vec::new();
        for ox in 0..g.ow {
            let (a, b) = g.valid_taps(ox, g.w, g.kw);
            match regions.last_mut() {
                Some(last) if (last.2, last.3) == (a, b) => last.1 = ox + 1,
                _ => regions.push((ox, ox + 1, a, b)),
            }
        }
        let rows = (0..g.kh).map(|ky| g.valid_out(ky * g.dil, g.h, g.oh)).collect();
        Grid { regions, rows, n: g.n, oh: g.oh }
    }

    /// Pixels of the whole batch.
    fn pixels(&self) -> usize {
        self.n * self.oh * self.regions.last().map_or(0, |r| r.1)
    }

    /// Row length of the reordered map: [`Grid::pixels`] off powers of two (fc6's 4,096 made the
    /// GEMM's rows alias in the cache, as im2col rows did).
    fn len(&self) -> usize {
        padded(self.pixels())
    }

    /// The GEMMs: `(ky, region)` pairs with at least one tap and one pixel.
    fn pairs(&self) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for (ky, &(y0, y1)) in self.rows.iter().enumerate() {
            for (r, &(_, _, a, b)) in self.regions.iter().enumerate() {
                if y0 < y1 && a < b {
                    out.push((ky, r));
                }
            }
        }
        out
    }

    /// First column and number of columns of pair `(ky, r)` in the reordered map.
    fn cols(&self, ky: usize, r: usize) -> (usize, usize) {
        let (x0, x1, _, _) = self.regions[r];
        let (y0, y1) = self.rows[ky];
        let wr = x1 - x0;
        (x0 * self.n * self.oh + y0 * self.n * wr, (y1 - y0) * self.n * wr)
    }

    /// The largest im2col block of a pair, rows padded as [`padded`] does.
    fn max_block(&self, cin: usize) -> usize {
        self.pairs()
            .into_iter()
            .map(|(ky, r)| {
                let (_, _, a, b) = self.regions[r];
                (b - a) * cin * padded(self.cols(ky, r).1)
            })
            .max()
            .unwrap_or(0)
    }
}

/// NCHW `a` of `c` channels on the output grid -> `c` rows in the grid's order.
fn to_grid<T: Elem>(a: &[T], c: usize, g: &Geom, grid: &Grid) -> Vec<T> {
    let np = grid.len();
    let mut out = alloc::<T>(c * np);
    out.par_chunks_mut(np.max(1)).enumerate().for_each(|(ch, o)| {
        for &(x0, x1, _, _) in &grid.regions {
            let (wr, base) = (x1 - x0, x0 * g.n * g.oh);
            for oy in 0..g.oh {
                for i in 0..g.n {
                    let src = ((i * c + ch) * g.oh + oy) * g.ow + x0;
                    let dst = base + (oy * g.n + i) * wr;
                    o[dst..dst + wr].copy_from_slice(&a[src..src + wr]);
                }
            }
        }
    });
    out
}

/// The reverse of [`to_grid`] for the forward's output, with the bias and ReLU epilogue.
fn from_grid<T: Elem>(acc: &[T], g: &Geom, grid: &Grid, bias: Option<&[T]>, relu: bool) -> Vec<T> {
    let np = grid.len();
    let mut y = alloc::<T>(g.n * g.out_img());
    let yp = SharedMut(y.as_mut_ptr());
    (0..g.cout).into_par_iter().for_each(|co| {
        let yp = yp;
        let b = bias.map_or(T::ZERO, |b| b[co]);
        let src = &acc[co * np..(co + 1) * np];
        for &(x0, x1, _, _) in &grid.regions {
            let (wr, base) = (x1 - x0, x0 * g.n * g.oh);
            for oy in 0..g.oh {
                for i in 0..g.n {
                    let s = base + (oy * g.n + i) * wr;
                    // SAFETY: channel co of every image belongs to this task alone.
                    let out = unsafe { std::slice::from_raw_parts_mut(yp.0.add(((i * g.cout + co) * g.oh + oy) * g.ow + x0), wr) };
                    for (o, v) in out.iter_mut().zip(&src[s..s + wr]) {
                        let v = *v + b;
                        *o = if relu { relu_of(v) } else { v };
                    }
                }
            }
        }
    });
    y
}

/// im2col of pair `(ky, r)`: rows `(kx − kx0)·cin + c`, row length `ld`, columns in the grid's order
/// from the pair's first column. Every entry reads inside the input: no zeros to write.
fn im2col_grid<T: Elem>(x: &[T], g: &Geom, grid: &Grid, (ky, r): (usize, usize), col: &mut [T], ld: usize) {
    let (x0, x1, kx0, _) = grid.regions[r];
    let (y0, y1) = grid.rows[ky];
    let wr = x1 - x0;
    col.par_chunks_mut(ld).enumerate().for_each(|(j, row)| {
        let (kx, c) = (kx0 + j / g.cin, j % g.cin);
        let ix0 = x0 + kx * g.dil - g.pad;
        for oy in y0..y1 {
            let iy = oy + ky * g.dil - g.pad;
            for i in 0..g.n {
                let src = ((i * g.cin + c) * g.h + iy) * g.w + ix0;
                let dst = ((oy - y0) * g.n + i) * wr;
                row[dst..dst + wr].copy_from_slice(&x[src..src + wr]);
            }
        }
    });
}

/// col2im (scatter-add into `dx`) of pair `(ky, r)`, the reverse of [`im2col_grid`]; tasks are input
/// channels, so writes never collide.
fn col2im_grid<T: Elem>(dcol: &[T], g: &Geom, grid: &Grid, (ky, r): (usize, usize), dx: &mut [T], ld: usize) {
    let (x0, x1, kx0, kx1) = grid.regions[r];
    let (y0, y1) = grid.rows[ky];
    let wr = x1 - x0;
    let dp = SharedMut(dx.as_mut_ptr());
    (0..g.cin).into_par_iter().for_each(|c| {
        let dp = dp;
        for kx in kx0..kx1 {
            let row = &dcol[((kx - kx0) * g.cin + c) * ld..];
            let ix0 = x0 + kx * g.dil - g.pad;
            for oy in y0..y1 {
                let iy = oy + ky * g.dil - g.pad;
                for i in 0..g.n {
                    // SAFETY: channel c of every image belongs to this task alone.
                    let out = unsafe { std::slice::from_raw_parts_mut(dp.0.add(((i * g.cin + c) * g.h + iy) * g.w + ix0), wr) };
                    let s = ((oy - y0) * g.n + i) * wr;
                    for (o, v) in out.iter_mut().zip(&row[s..s + wr]) {
                        *o += *v;
                    }
                }
            }
        }
    });
}

/// The kernel `(cout, cin, kh, kw)` as `(cout, kh, kw, cin)` (`to_taps_major`), or back.
fn taps_major<T: Elem>(w: &[T], g: &Geom, to_taps_major: bool) -> Vec<T> {
    let (ci, taps) = (g.cin, g.taps());
    let mut out = alloc::<T>(w.len());
    out.par_chunks_mut((ci * taps).max(1)).enumerate().for_each(|(co, o)| {
        let src = &w[co * ci * taps..(co + 1) * ci * taps];
        for c in 0..ci {
            for t in 0..taps {
                if to_taps_major {
                    o[t * ci + c] = src[c * taps + t];
                } else {
                    o[c * taps + t] = src[t * ci + c];
                }
            }
        }
    });
    out
}

/// One GEMM's worth of the grid: the pair's first column and column count in the reordered map, its
/// im2col rows (`(kx1 − kx0)·cin`), row length and first column of the `(cout, ky, kx, cin)` kernel.
struct PairCols {
    start: usize,
    count: usize,
    rows: usize,
    ld: usize,
    kernel_col: usize,
}

impl Grid {
    /// The GEMM shape of pair `(ky, r)`.
    fn pair(&self, g: &Geom, (ky, r): (usize, usize)) -> PairCols {
        let (_, _, kx0, kx1) = self.regions[r];
        let (start, count) = self.cols(ky, r);
        PairCols { start, count, rows: (kx1 - kx0) * g.cin, ld: padded(count), kernel_col: (ky * g.kw + kx0) * g.cin }
    }

    /// Calls `f` with every pair's shape and its im2col of `x` (one buffer, reused).
    fn each_im2col<T: Elem>(&self, x: &[T], g: &Geom, mut f: impl FnMut(&PairCols, &[T])) {
        let mut col = alloc::<T>(self.max_block(g.cin));
        for pair in self.pairs() {
            let pc = self.pair(g, pair);
            im2col_grid(x, g, self, pair, &mut col[..pc.rows * pc.ld], pc.ld);
            f(&pc, &col);
        }
    }
}

/// [`forward`] on the grid: each pair adds `w[:, ky, kx0..kx1, :] · col` to its columns.
fn forward_grid<T: Elem>(x: &[T], w: &[T], bias: Option<&[T]>, relu: bool, g: &Geom) -> Vec<T> {
    let grid = Grid::new(g);
    let (np, k) = (grid.len(), g.k());
    let wt = taps_major(w, g, true);
    let mut acc = vec![T::ZERO; g.cout * np];
    grid.each_im2col(x, g, |pc, col| unsafe {
        gemm_split_acc(g.cout, pc.count, pc.rows, acc.as_mut_ptr().add(pc.start), np, true, wt.as_ptr().add(pc.kernel_col), k, 1, col.as_ptr(), pc.ld, 1)
    });
    from_grid(&acc, g, &grid, bias, relu)
}

/// [`backward_data`] on the grid: each pair's `dcol = w[:, ky, kx0..kx1, :]ᵀ · dy` is scattered back.
fn backward_data_grid<T: Elem>(dy: &[T], w: &[T], g: &Geom) -> Vec<T> {
    let grid = Grid::new(g);
    let (np, k) = (grid.len(), g.k());
    let wt = taps_major(w, g, true);
    let dyg = to_grid(dy, g.cout, g, &grid);
    let mut dx = vec![T::ZERO; g.n * g.in_img()];
    let mut dcol = alloc::<T>(grid.max_block(g.cin));
    for pair in grid.pairs() {
        let pc = grid.pair(g, pair);
        unsafe { gemm_split(pc.rows, pc.count, g.cout, dcol.as_mut_ptr(), pc.ld, wt.as_ptr().add(pc.kernel_col), 1, k, dyg.as_ptr().add(pc.start), np, 1) };
        col2im_grid(&dcol, g, &grid, pair, &mut dx, pc.ld);
    }
    dx
}

/// [`backward_weights`] on the grid: each pair adds `dy · colᵀ` to `dw[:, ky, kx0..kx1, :]`.
fn backward_weights_grid<T: Elem>(x: &[T], dy: &[T], g: &Geom) -> Vec<T> {
    let grid = Grid::new(g);
    let (np, k) = (grid.len(), g.k());
    let dyg = to_grid(dy, g.cout, g, &grid);
    let mut dwt = vec![T::ZERO; g.cout * k];
    grid.each_im2col(x, g, |pc, col| unsafe {
        gemm_split_acc(g.cout, pc.rows, pc.count, dwt.as_mut_ptr().add(pc.kernel_col), k, true, dyg.as_ptr().add(pc.start), np, 1, col.as_ptr(), 1, pc.ld)
    });
    taps_major(&dwt, g, false)
}

/// The bias gradient: `db[c] = Σ_{n, y, x} dy[n, c, y, x]`.
pub fn bias_grad<T: Elem>(dy: &[T], n: usize, c: usize, plane: usize) -> Vec<T> {
    (0..c)
        .into_par_iter()
        .map(|ch| {
            let mut s = T::ZERO;
            for i in 0..n {
                let p = &dy[(i * c + ch) * plane..(i * c + ch + 1) * plane];
                s += sum(p);
            }
            s
        })
        .collect()
}

/// A sum with eight independent accumulators (vectorisable, and closer to a pairwise sum).
fn sum<T: Elem>(v: &[T]) -> T {
    let mut acc = [T::ZERO; 8];
    let chunks = v.chunks_exact(8);
    let rest = chunks.remainder();
    for ch in chunks {
        for j in 0..8 {
            acc[j] += ch[j];
        }
    }
    let mut s = T::ZERO;
    for a in acc {
        s += a;
    }
    for r in rest {
        s += *r;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook definition, for the engine's own unit test.
    fn naive(x: &[f64], w: &[f64], g: &Geom) -> Vec<f64> {
        let mut y = vec![0.0; g.n * g.cout * g.oh * g.ow];
        for i in 0..g.n {
            for co in 0..g.cout {
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        let mut s = 0.0;
                        for c in 0..g.cin {
                            for ky in 0..g.kh {
                                for kx in 0..g.kw {
                                    let iy = (oy * g.stride + ky * g.dil) as isize - g.pad as isize;
                                    let ix = (ox * g.stride + kx * g.dil) as isize - g.pad as isize;
                                    if iy >= 0 && ix >= 0 && (iy as usize) < g.h && (ix as usize) < g.w {
                                        s += x[((i * g.cin + c) * g.h + iy as usize) * g.w + ix as usize] * w[((co * g.cin + c) * g.kh + ky) * g.kw + kx];
                                    }
                                }
                            }
                        }
                        y[((i * g.cout + co) * g.oh + oy) * g.ow + ox] = s;
                    }
                }
            }
        }
        y
    }

    fn lcg(n: usize, seed: u64) -> Vec<f64> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn forward_matches_the_definition_and_adjoints_hold() {
        // <conv(x), dy> = <x, backward_data(dy)> = <w, backward_weights(x, dy)>: the three routines are
        // adjoint to each other exactly when each is right.
        // Maps under 512 pixels take the batched route, the 40 x 30 ones the tiled route, the dilated
        // ones with wide padding (a quarter of the taps or more reading zeros) the grid route.
        for (shape, k, s, p, d) in [([2, 3, 24, 24], 7, 1, 12, 4), ([1, 2, 26, 30], 3, 1, 12, 12), ([2, 2, 32, 32], 3, 1, 36, 36),([2, 3, 40, 30], 3, 1, 1, 1), ([1, 2, 41, 30], 3, 2, 1, 1), ([1, 2, 61, 50], 3, 2, 1, 1), ([1, 2, 26, 27], 3, 1, 2, 2), ([2, 3, 30, 40], 1, 1, 0, 1), ([2, 3, 9, 8], 3, 1, 1, 1), ([1, 2, 11, 7], 3, 2, 1, 1), ([2, 4, 13, 12], 3, 1, 4, 4), ([1, 3, 7, 9], 1, 1, 0, 1), ([1, 2, 16, 15], 7, 2, 3, 1), ([3, 5, 6, 6], 2, 2, 0, 1)] {
            let g = Geom::new(shape, [4, shape[1], k, k], s, p, d).unwrap();
            let x = lcg(g.n * g.in_img(), 1);
            let w = lcg(g.cout * g.k(), 2);
            let y = forward(&x, &w, None, false, &g);
            let want = naive(&x, &w, &g);
            for (a, b) in y.iter().zip(&want) {
                assert!((a - b).abs() < 1e-12, "{g:?}");
            }
            let dy = lcg(y.len(), 3);
            let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(p, q)| p * q).sum::<f64>();
            let lhs = dot(&y, &dy);
            let dx = backward_data(&dy, &w, &g);
            let dw = backward_weights(&x, &dy, &g);
            assert!((lhs - dot(&x, &dx)).abs() < 1e-9 * lhs.abs().max(1.0), "data adjoint {g:?}");
            assert!((lhs - dot(&w, &dw)).abs() < 1e-9 * lhs.abs().max(1.0), "weights adjoint {g:?}");
        }
    }
}
