//! Pure-Rust JPEG-LS decoder (ITU-T T.87 | ISO/IEC 14495-1).
//!
//! DICOM files may carry their pixel data as JPEG-LS (transfer syntaxes
//! 1.2.840.10008.1.2.4.80, lossless, and .81, near-lossless). The usual Rust
//! route (the `charls` crate) wraps the C++ CharLS library and needs cmake and a
//! C++ toolchain, which a machine with only Rust lacks, so this module decodes
//! JPEG-LS itself, with no dependency beyond `thiserror` and no `unsafe`.
//!
//! Supported:
//! - SOF55 (0xFFF7) frames with 2..=16 bits per sample, one or more components
//!   (no subsampling), any number of scans;
//! - lossless (NEAR = 0, bit-exact) and near-lossless (NEAR > 0) scans;
//! - interleave modes none (0), line (1) and sample (2, up to 4 components);
//! - LSE preset parameters (type 1: MAXVAL, T1, T2, T3, RESET; zero fields take
//!   the T.87 C.2.4.1.1 defaults, as does a missing LSE) and LSE type 4 (image
//!   sizes too large for the frame header);
//! - DRI restart intervals with RST markers; APPn, COM and other segments are
//!   skipped.
//!
//! Refused with a clear [`JlsError`]: other JPEG processes (baseline, lossless
//! JPEG: [`JlsError::NotJpegLs`]), mapping tables in use (palette images, LSE
//! types 2/3 referenced by a scan), point transform, component subsampling,
//! sizes given by a DNL marker, and images larger than the caller's limit.
//! Malformed or truncated input returns an error, never a panic.

/// J table of T.87 (A.7.1.2): run-length order per RUNindex.
const J: [u32; 32] = [
    0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 9, 10, 11, 12, 13,
    14, 15,
];
/// Largest mapped error value a valid stream can carry (2^16 + 1), with margin.
const MAX_MAPPED: u64 = 1 << 17;

/// A decoded JPEG-LS image: samples in raster order, components interleaved (sample-interleaved) when more than one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JlsImage {
    pub width: u32,
    pub height: u32,
    pub components: u8,
    pub bits: u8,
    pub data: Vec<u16>,
}

/// Why a JPEG-LS codestream could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum JlsError {
    #[error("JPEG-LS codestream truncated at byte {at}")]
    Truncated { at: usize },
    #[error("not a JPEG-LS codestream (no SOI marker, or a JPEG frame type other than SOF55)")]
    NotJpegLs,
    #[error("unsupported JPEG-LS feature: {0}")]
    Unsupported(String),
    #[error("corrupt JPEG-LS codestream: {0}")]
    Corrupt(String),
    #[error(
        "JPEG-LS image of {width}x{height} ({pixels} pixels) exceeds the limit of {max} pixels"
    )]
    TooLarge { width: u32, height: u32, pixels: u64, max: u64 },
}

type Result<T, E = JlsError> = std::result::Result<T, E>;

fn corrupt<T>(msg: impl Into<String>) -> Result<T> {
    Err(JlsError::Corrupt(msg.into()))
}

fn unsupported<T>(msg: impl Into<String>) -> Result<T> {
    Err(JlsError::Unsupported(msg.into()))
}

/// Reads big-endian fields from one marker segment's payload.
struct Fields<'a> {
    b: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl Fields<'_> {
    fn u8(&mut self) -> Result<u8> {
        match self.b.get(self.pos) {
            Some(&v) => {
                self.pos += 1;
                Ok(v)
            }
            None => corrupt(format!("{} segment too short", self.what)),
        }
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from(self.u8()?) << 8 | u16::from(self.u8()?))
    }
    fn uint(&mut self, n: usize) -> Result<u32> {
        let mut v = 0u32;
        for _ in 0..n {
            v = v << 8 | u32::from(self.u8()?);
        }
        Ok(v)
    }
}

/// Entropy-coded bits of one scan (or restart interval), MSB first, with the
/// JPEG-LS stuffing rule: after a 0xFF byte only 7 bits of the next byte count.
struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
    /// End of the data as an offset in the whole codestream (for errors).
    end_offset: usize,
    cache: u64,
    bits: u32,
    prev_ff: bool,
    /// Zero bits appended past the end of the data.
    pad: u64,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8], end_offset: usize) -> Self {
        BitReader { data, pos: 0, end_offset, cache: 0, bits: 0, prev_ff: false, pad: 0 }
    }

    /// Fills the cache to at least 57 bits (zero padding past the end).
    #[inline(always)]
    fn refill(&mut self) {
        if self.bits > 56 {
            return;
        }
        if !self.prev_ff {
            if let Some(chunk) = self.data.get(self.pos..self.pos + 8) {
                let mut word = [0u8; 8];
                word.copy_from_slice(chunk);
                let w = u64::from_be_bytes(word);
                let inv = !w;
                let has_ff = inv.wrapping_sub(0x0101_0101_0101_0101) & !inv & 0x8080_8080_8080_8080;
                if has_ff == 0 {
                    let nb = (64 - self.bits) / 8; // 1..=8 bytes
                    let take = nb * 8;
                    let v = if take == 64 { w } else { w >> (64 - take) };
                    self.cache |= v << (64 - self.bits - take);
                    self.bits += take;
                    self.pos += nb as usize;
                    return;
                }
            }
        }
        while self.bits <= 56 {
            if let Some(&b) = self.data.get(self.pos) {
                self.pos += 1;
                if self.prev_ff {
                    self.cache |= u64::from(b & 0x7F) << (57 - self.bits);
                    self.bits += 7;
                } else {
                    self.cache |= u64::from(b) << (56 - self.bits);
                    self.bits += 8;
                }
                self.prev_ff = b == 0xFF;
            } else {
                self.pad += 8;
                self.bits += 8;
            }
        }
    }

    /// True once bits past the end of the data have been consumed.
    fn overrun(&self) -> bool {
        self.pad > u64::from(self.bits)
    }

    fn out_of_data(&self) -> JlsError {
        if self.pad > 0 {
            JlsError::Truncated { at: self.end_offset }
        } else {
            JlsError::Corrupt("invalid Golomb code in entropy-coded data".into())
        }
    }

    #[inline(always)]
    fn read_bit(&mut self) -> u32 {
        self.refill();
        let v = (self.cache >> 63) as u32;
        self.cache <<= 1;
        self.bits -= 1;
        v
    }

    /// Reads `n` (<= 32) bits.
    #[inline(always)]
    fn read_bits(&mut self, n: u32) -> u64 {
        if n == 0 {
            return 0;
        }
        if self.bits < n {
            self.refill();
        }
        let v = self.cache >> (64 - n);
        self.cache <<= n;
        self.bits -= n;
        v
    }

    /// Decodes one limited-length Golomb code (T.87 A.5.3): `k` is the Golomb
    /// parameter, `limit` the glimit, `qbpp` the escape value width.
    #[inline(always)]
    fn decode_value(&mut self, k: u32, limit: i32, qbpp: u32) -> Result<u64> {
        let max = i64::from(limit) - i64::from(qbpp) - 1;
        self.refill();
        let mut count = i64::from(self.cache.leading_zeros());
        if count < i64::from(self.bits) {
            if count > max {
                return Err(self.out_of_data());
            }
            self.cache <<= count + 1; // count <= max <= 62
            self.bits -= count as u32 + 1;
        } else {
            // All cached bits are zero: keep counting (unusual parameters or bad data).
            count = 0;
            loop {
                self.refill();
                let lz = self.cache.leading_zeros().min(self.bits);
                count += i64::from(lz);
                if count > max {
                    return Err(self.out_of_data());
                }
                if lz < self.bits {
                    self.cache <<= lz + 1;
                    self.bits -= lz + 1;
                    break;
                }
                self.cache = 0;
                self.bits = 0;
            }
        }
        if count < max {
            let v = ((count as u64) << k) | self.read_bits(k);
            if v > MAX_MAPPED {
                return Err(self.out_of_data());
            }
            Ok(v)
        } else if count == max {
            Ok(self.read_bits(qbpp) + 1)
        } else {
            Err(self.out_of_data())
        }
    }
}

/// Preset coding parameters as signalled (0 = default).
#[derive(Debug, Clone, Copy, Default)]
struct Preset {
    maxval: u32,
    t1: u32,
    t2: u32,
    t3: u32,
    reset: u32,
}

/// Coding parameters in force for one scan.
#[derive(Debug, Clone, Copy)]
struct Params {
    maxval: i32,
    near: i32,
    range: i32,
    qbpp: u32,
    limit: i32,
    t1: i32,
    t2: i32,
    t3: i32,
    reset: i64,
}

fn ceil_log2(x: i64) -> u32 {
    let mut b = 0;
    while b < 40 && (1i64 << b) < x {
        b += 1;
    }
    b
}

impl Params {
    fn new(bits: u8, near: u8, preset: &Preset) -> Result<Params> {
        let full = (1i64 << bits) - 1;
        let maxval = if preset.maxval == 0 { full } else { i64::from(preset.maxval) };
        if maxval < 1 || maxval > full {
            return corrupt(format!("MAXVAL {maxval} invalid for {bits}-bit samples"));
        }
        let near = i64::from(near);
        if near > (maxval / 2).min(255) {
            return corrupt(format!("NEAR {near} too large for MAXVAL {maxval}"));
        }
        // Default thresholds, T.87 C.2.4.1.1.
        let clamp = |i: i64, j: i64| if i > maxval || i < j { j } else { i };
        let (d1, d2, d3) = if maxval >= 128 {
            let f = (maxval.min(4095) + 128) / 256;
            let t1 = clamp(f + 2 + 3 * near, near + 1); // FACTOR * (BASIC_T1 - 2) + 2 + 3 * NEAR
            let t2 = clamp(f * 4 + 3 + 5 * near, t1); // BASIC_T2 = 7
            (t1, t2, clamp(f * 17 + 4 + 7 * near, t2)) // BASIC_T3 = 21
        } else {
            let f = 256 / (maxval + 1);
            let t1 = clamp((3 / f + 3 * near).max(2), near + 1);
            let t2 = clamp((7 / f + 5 * near).max(3), t1);
            (t1, t2, clamp((21 / f + 7 * near).max(4), t2))
        };
        let pick = |v: u32, d: i64| if v == 0 { d } else { i64::from(v) };
        let (t1, t2, t3) = (pick(preset.t1, d1), pick(preset.t2, d2), pick(preset.t3, d3));
        if !(near < t1 && t1 <= t2 && t2 <= t3 && t3 <= maxval) {
            return corrupt(format!(
                "invalid thresholds T1={t1} T2={t2} T3={t3} (MAXVAL {maxval}, NEAR {near})"
            ));
        }
        let reset = if preset.reset == 0 { 64 } else { i64::from(preset.reset) };
        if reset < 3 {
            return corrupt(format!("RESET {reset} invalid"));
        }
        let range = (maxval + 2 * near) / (2 * near + 1) + 1;
        let bpp = ceil_log2(maxval + 1).max(2);
        Ok(Params {
            maxval: maxval as i32,
            near: near as i32,
            range: range as i32,
            qbpp: ceil_log2(range),
            limit: 2 * (bpp + bpp.max(8)) as i32,
            t1: t1 as i32,
            t2: t2 as i32,
            t3: t3 as i32,
            reset,
        })
    }
}

#[derive(Debug, Clone, Copy)]
struct Ctx {
    a: i64,
    b: i64,
    c: i32,
    n: i64,
}

#[derive(Debug, Clone, Copy)]
struct RunCtx {
    a: i64,
    n: i64,
    nn: i64,
}

/// Context state and per-scan parameters (T.87 A.2, A.4 to A.7).
struct Coder {
    p: Params,
    /// Gradient quantisation, indexed by difference + MAXVAL.
    quant: Vec<i8>,
    ctx: Vec<Ctx>,
    run: [RunCtx; 2],
}

impl Coder {
    fn new(p: Params) -> Coder {
        // Gradient quantisation (A.3.3), symmetric around 0.
        let q = |d: i32| -> i8 {
            let a = d.abs();
            let m = if a <= p.near {
                0
            } else if a < p.t1 {
                1
            } else if a < p.t2 {
                2
            } else if a < p.t3 {
                3
            } else {
                4
            };
            if d < 0 {
                -m
            } else {
                m
            }
        };
        let quant = (-p.maxval..=p.maxval).map(q).collect();
        let mut c = Coder { p, quant, ctx: Vec::new(), run: [RunCtx { a: 0, n: 1, nn: 0 }; 2] };
        c.reset();
        c
    }

    fn reset(&mut self) {
        let a = i64::from(((self.p.range + 32) / 64).max(2));
        self.ctx = vec![Ctx { a, b: 0, c: 0, n: 1 }; 365];
        self.run = [RunCtx { a, n: 1, nn: 0 }; 2];
    }

    #[inline(always)]
    fn q(&self, d: i32) -> i32 {
        i32::from(self.quant.get((d + self.p.maxval) as usize).copied().unwrap_or(0))
    }

    #[inline(always)]
    fn context(&self, ra: i32, rb: i32, rc: i32, rd: i32) -> i32 {
        81 * self.q(rd - rb) + 9 * self.q(rb - rc) + self.q(rc - ra)
    }

    /// Reconstruction with modulo wrap and clamping (T.87 A.4.4 / A.6).
    #[inline(always)]
    fn fix(&self, v: i32) -> i32 {
        let p = &self.p;
        let mut v = v;
        if v < -p.near {
            v += p.range * (2 * p.near + 1);
        } else if v > p.maxval + p.near {
            v -= p.range * (2 * p.near + 1);
        }
        v.clamp(0, p.maxval)
    }

    /// Regular-mode sample (T.87 A.4 to A.6), `qs` the signed context number.
    #[inline(always)]
    fn regular(&mut self, br: &mut BitReader, qs: i32, ra: i32, rb: i32, rc: i32) -> Result<i32> {
        let px = if rc >= ra.max(rb) {
            ra.min(rb)
        } else if rc <= ra.min(rb) {
            ra.max(rb)
        } else {
            ra + rb - rc
        };
        let sign = if qs < 0 { -1 } else { 1 };
        let (near, maxval, limit, qbpp, reset) =
            (self.p.near, self.p.maxval, self.p.limit, self.p.qbpp, self.p.reset);
        let Some(ctx) = self.ctx.get_mut(qs.unsigned_abs() as usize) else {
            return corrupt("context index out of range");
        };
        let px = (px + sign * ctx.c).clamp(0, maxval);
        let mut k = 0;
        while k < 31 && (ctx.n << k) < ctx.a {
            k += 1;
        }
        let m = br.decode_value(k, limit, qbpp)? as i64;
        let mut e = if m & 1 == 0 { m >> 1 } else { -((m + 1) >> 1) };
        if k == 0 && near == 0 && 2 * ctx.b <= -ctx.n {
            e = -e - 1;
        }
        // Context update and bias correction (A.6.1, A.6.2).
        ctx.a += e.abs();
        ctx.b += e * i64::from(2 * near + 1);
        if ctx.n == reset {
            ctx.a >>= 1;
            ctx.b >>= 1;
            ctx.n >>= 1;
        }
        ctx.n += 1;
        if ctx.b <= -ctx.n {
            ctx.b += ctx.n;
            if ctx.c > -128 {
                ctx.c -= 1;
            }
            if ctx.b <= -ctx.n {
                ctx.b = -ctx.n + 1;
            }
        } else if ctx.b > 0 {
            ctx.b -= ctx.n;
            if ctx.c < 127 {
                ctx.c += 1;
            }
            if ctx.b > 0 {
                ctx.b = 0;
            }
        }
        let e = (e as i32) * sign;
        Ok(self.fix(px + e * (2 * near + 1)))
    }

    /// Run length in run mode (A.7.1): returns how many samples repeat Ra.
    #[inline(always)]
    fn run_length(br: &mut BitReader, remaining: usize, run_index: &mut usize) -> Result<usize> {
        let mut idx = 0usize;
        while br.read_bit() == 1 {
            let step = 1usize << J[*run_index & 31];
            let cnt = step.min(remaining - idx);
            idx += cnt;
            if cnt == step && *run_index < 31 {
                *run_index += 1;
            }
            if idx == remaining {
                return Ok(idx);
            }
        }
        idx += br.read_bits(J[*run_index & 31]) as usize;
        if idx > remaining {
            if br.overrun() {
                return Err(br.out_of_data());
            }
            return corrupt("run length past the end of the line");
        }
        Ok(idx)
    }

    /// Error of a run-interruption sample (A.7.2), `ri` the RItype.
    fn ri_error(&mut self, br: &mut BitReader, ri: usize, run_index: usize) -> Result<i32> {
        let (limit, qbpp, reset) = (self.p.limit, self.p.qbpp, self.p.reset);
        let ctx = &mut self.run[ri & 1];
        let rit = (ri & 1) as i64;
        let temp = ctx.a + (ctx.n >> 1) * rit;
        let mut k = 0;
        while k < 31 && (ctx.n << k) < temp {
            k += 1;
        }
        let glimit = limit - J[run_index & 31] as i32 - 1;
        let em = br.decode_value(k, glimit, qbpp)? as i64;
        let t = em + rit;
        let map = t & 1;
        let abs = (t + map) / 2;
        let e = if (k != 0 || 2 * ctx.nn >= ctx.n) == (map == 1) { -abs } else { abs };
        if e < 0 {
            ctx.nn += 1;
        }
        ctx.a += (em + 1 - rit) >> 1;
        if ctx.n == reset {
            ctx.a >>= 1;
            ctx.n >>= 1;
            ctx.nn >>= 1;
        }
        ctx.n += 1;
        Ok(e as i32)
    }

    /// Decodes one line of one component. `prev`/`cur` hold the line with one
    /// edge sample on each side (`cur[0]` and `prev[w + 1]` already set).
    fn line(
        &mut self,
        br: &mut BitReader,
        prev: &[i32],
        cur: &mut [i32],
        run_index: &mut usize,
    ) -> Result<()> {
        let w = cur.len().saturating_sub(2);
        if prev.len() != cur.len() {
            return corrupt("line buffer mismatch");
        }
        let mut x = 1;
        while x <= w {
            let ra = cur[x - 1];
            let (rc, rb, rd) = (prev[x - 1], prev[x], prev[x + 1]);
            let qs = self.context(ra, rb, rc, rd);
            if qs != 0 {
                cur[x] = self.regular(br, qs, ra, rb, rc)?;
                x += 1;
                continue;
            }
            let n = Self::run_length(br, w + 1 - x, run_index)?;
            cur[x..x + n].fill(ra);
            x += n;
            if x <= w {
                let rb = prev[x];
                let v = if (ra - rb).abs() <= self.p.near {
                    let e = self.ri_error(br, 1, *run_index)?;
                    self.fix(ra + e * (2 * self.p.near + 1))
                } else {
                    let e = self.ri_error(br, 0, *run_index)?;
                    let s = if rb < ra { -1 } else { 1 };
                    self.fix(rb + s * e * (2 * self.p.near + 1))
                };
                cur[x] = v;
                *run_index = run_index.saturating_sub(1);
                x += 1;
            }
        }
        Ok(())
    }

    /// Decodes one line of `nc` (<= 4) sample-interleaved components, each
    /// stored in `prev`/`cur` at a stride of `s` samples.
    #[allow(clippy::needless_range_loop)]
    fn line_interleaved(
        &mut self,
        br: &mut BitReader,
        prev: &[i32],
        cur: &mut [i32],
        nc: usize,
        s: usize,
        run_index: &mut usize,
    ) -> Result<()> {
        let w = s.saturating_sub(2);
        if nc == 0 || nc > 4 || prev.len() < nc * s || cur.len() < nc * s {
            return corrupt("line buffer mismatch");
        }
        let mut x = 1;
        while x <= w {
            let mut qs = [0i32; 4];
            let mut all_zero = true;
            for c in 0..nc {
                let o = c * s;
                qs[c] = self.context(cur[o + x - 1], prev[o + x], prev[o + x - 1], prev[o + x + 1]);
                all_zero &= qs[c] == 0;
            }
            if !all_zero {
                for c in 0..nc {
                    let o = c * s;
                    cur[o + x] =
                        self.regular(br, qs[c], cur[o + x - 1], prev[o + x], prev[o + x - 1])?;
                }
                x += 1;
                continue;
            }
            let n = Self::run_length(br, w + 1 - x, run_index)?;
            for c in 0..nc {
                let o = c * s;
                let ra = cur[o + x - 1];
                cur[o + x..o + x + n].fill(ra);
            }
            x += n;
            if x <= w {
                for c in 0..nc {
                    let o = c * s;
                    let (ra, rb) = (cur[o + x - 1], prev[o + x]);
                    let e = self.ri_error(br, 0, *run_index)?;
                    let sgn = if rb < ra { -1 } else { 1 };
                    cur[o + x] = self.fix(rb + sgn * e * (2 * self.p.near + 1));
                }
                *run_index = run_index.saturating_sub(1);
                x += 1;
            }
        }
        Ok(())
    }
}

/// Offset of the first marker (0xFF followed by a byte >= 0x80) at or after
/// `from`, or the end of the data: the end of an entropy-coded segment.
fn segment_end(bytes: &[u8], from: usize) -> usize {
    let mut i = from;
    while let Some(off) = bytes.get(i..).and_then(|t| t.iter().position(|&b| b == 0xFF)) {
        let at = i + off;
        match bytes.get(at + 1) {
            Some(&n) if n >= 0x80 => return at,
            Some(_) => i = at + 1,
            None => return bytes.len(),
        }
    }
    bytes.len()
}

/// Reads the marker at `*pos` (skipping 0xFF fill bytes); None at the end of the data.
fn next_marker(bytes: &[u8], pos: &mut usize) -> Result<Option<u8>> {
    match bytes.get(*pos) {
        None => return Ok(None),
        Some(0xFF) => {}
        Some(_) => return corrupt(format!("expected a marker at byte {}", *pos)),
    }
    while bytes.get(*pos) == Some(&0xFF) {
        *pos += 1;
    }
    match bytes.get(*pos) {
        Some(&m) => {
            *pos += 1;
            Ok(Some(m))
        }
        None => Err(JlsError::Truncated { at: *pos }),
    }
}

/// Returns the payload of the marker segment whose length field is at `*pos`, advancing past it.
fn segment<'a>(bytes: &'a [u8], pos: &mut usize) -> Result<&'a [u8]> {
    let (Some(&h), Some(&l)) = (bytes.get(*pos), bytes.get(*pos + 1)) else {
        return Err(JlsError::Truncated { at: bytes.len() });
    };
    let len = usize::from(h) << 8 | usize::from(l);
    if len < 2 {
        return corrupt(format!("marker segment length {len} at byte {}", *pos));
    }
    let Some(payload) = bytes.get(*pos + 2..*pos + len) else {
        return Err(JlsError::Truncated { at: bytes.len() });
    };
    *pos += len;
    Ok(payload)
}

struct Frame {
    bits: u8,
    width: u32,
    height: u32,
    ids: Vec<u8>,
}

/// Decodes one scan (from just after its header) into `out`, advancing `*pos`
/// to the marker that follows the scan's entropy-coded data.
#[allow(clippy::too_many_arguments)]
fn decode_scan(
    bytes: &[u8],
    pos: &mut usize,
    frame: &Frame,
    comps: &[usize],
    p: Params,
    ilv: u8,
    restart: u32,
    out: &mut [u16],
) -> Result<()> {
    let (w, h, nf, nc) =
        (frame.width as usize, frame.height as usize, frame.ids.len(), comps.len());
    let s = w + 2;
    let Some(buf_len) = nc.checked_mul(s) else {
        return unsupported("line too long");
    };
    let mut coder = Coder::new(p);
    let mut prev = vec![0i32; buf_len];
    let mut cur = vec![0i32; buf_len];
    let mut run_index = vec![0usize; nc];
    let interval = if restart == 0 { h } else { restart as usize };
    let mut y = 0;
    loop {
        let end = segment_end(bytes, *pos);
        let mut br = BitReader::new(bytes.get(*pos..end).unwrap_or(&[]), end);
        let lines = interval.min(h - y);
        for _ in 0..lines {
            for c in 0..nc {
                let o = c * s;
                prev[o + w + 1] = prev[o + w];
                cur[o] = prev[o + 1];
            }
            if nc == 1 || ilv == 1 {
                for (c, run) in run_index.iter_mut().enumerate() {
                    let r = c * s..(c + 1) * s;
                    coder.line(&mut br, &prev[r.clone()], &mut cur[r], run)?;
                }
            } else {
                coder.line_interleaved(&mut br, &prev, &mut cur, nc, s, &mut run_index[0])?;
            }
            let row = y * w * nf;
            for (c, &fi) in comps.iter().enumerate() {
                let src = &cur[c * s + 1..c * s + 1 + w];
                let dst = out.get_mut(row..row + w * nf).unwrap_or(&mut []);
                if nf == 1 {
                    for (d, &v) in dst.iter_mut().zip(src) {
                        *d = v as u16;
                    }
                } else {
                    for (d, &v) in dst.iter_mut().skip(fi).step_by(nf).zip(src) {
                        *d = v as u16;
                    }
                }
            }
            std::mem::swap(&mut prev, &mut cur);
            y += 1;
        }
        if br.overrun() {
            return Err(JlsError::Truncated { at: end });
        }
        *pos = end;
        if y >= h {
            return Ok(());
        }
        match next_marker(bytes, pos)? {
            Some(0xD0..=0xD7) => {}
            Some(m) => return corrupt(format!("expected an RST marker, found 0xFF{m:02X}")),
            None => return Err(JlsError::Truncated { at: bytes.len() }),
        }
        coder.reset();
        prev.fill(0);
        cur.fill(0);
        run_index.fill(0);
    }
}

/// Decodes one JPEG-LS codestream (SOI .. EOI). `max_pixels` is checked from the frame header before allocating.
pub fn decode(bytes: &[u8], max_pixels: u64) -> Result<JlsImage, JlsError> {
    if bytes.len() < 2 || bytes[0] != 0xFF || bytes[1] != 0xD8 {
        return Err(JlsError::NotJpegLs);
    }
    let mut pos = 2;
    let mut frame: Option<Frame> = None;
    let mut preset = Preset::default();
    let mut oversize: Option<(u32, u32)> = None;
    let mut restart = 0u32;
    let mut out: Vec<u16> = Vec::new();
    let mut done: Vec<bool> = Vec::new();
    loop {
        let complete = !done.is_empty() && done.iter().all(|&d| d);
        if complete && bytes.get(pos) != Some(&0xFF) {
            break; // trailing padding after the last scan: tolerated
        }
        let marker = match next_marker(bytes, &mut pos)? {
            Some(m) => m,
            None if complete => break,
            None => return Err(JlsError::Truncated { at: bytes.len() }),
        };
        match marker {
            0xD9 => {
                if complete {
                    break;
                }
                return Err(JlsError::Truncated { at: pos });
            }
            0x01 => {} // TEM: no length
            0xD0..=0xD7 => return corrupt(format!("RST marker outside a scan at byte {pos}")),
            0xD8 => return corrupt("second SOI marker"),
            0xF7 => {
                if frame.is_some() {
                    return unsupported("more than one frame");
                }
                let mut f = Fields { b: segment(bytes, &mut pos)?, pos: 0, what: "SOF55" };
                let bits = f.u8()?;
                let height = u32::from(f.u16()?);
                let width = u32::from(f.u16()?);
                let nf = f.u8()?;
                if !(2..=16).contains(&bits) {
                    return unsupported(format!("{bits} bits per sample (2..=16 supported)"));
                }
                if nf == 0 {
                    return corrupt("frame with no components");
                }
                let mut ids = Vec::with_capacity(usize::from(nf));
                for _ in 0..nf {
                    let id = f.u8()?;
                    let hv = f.u8()?;
                    f.u8()?;
                    if nf > 1 && hv != 0x11 {
                        return unsupported(format!("component sampling factors 0x{hv:02X}"));
                    }
                    if ids.contains(&id) {
                        return corrupt(format!("duplicate component id {id}"));
                    }
                    ids.push(id);
                }
                frame = Some(Frame { bits, width, height, ids });
            }
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                return Err(JlsError::NotJpegLs)
            }
            0xF8 => {
                let mut f = Fields { b: segment(bytes, &mut pos)?, pos: 0, what: "LSE" };
                match f.u8()? {
                    1 => {
                        preset = Preset {
                            maxval: f.u16()?.into(),
                            t1: f.u16()?.into(),
                            t2: f.u16()?.into(),
                            t3: f.u16()?.into(),
                            reset: f.u16()?.into(),
                        };
                    }
                    2 | 3 => {} // mapping table: refused below if a scan uses it
                    4 => {
                        let wxy = usize::from(f.u8()?);
                        if !(2..=4).contains(&wxy) {
                            return corrupt(format!("LSE type 4 field width {wxy}"));
                        }
                        let y = f.uint(wxy)?;
                        let x = f.uint(wxy)?;
                        oversize = Some((x, y));
                    }
                    t => return unsupported(format!("LSE type {t}")),
                }
            }
            0xDD => {
                let payload = segment(bytes, &mut pos)?;
                if payload.is_empty() || payload.len() > 4 {
                    return corrupt("DRI segment length");
                }
                restart = Fields { b: payload, pos: 0, what: "DRI" }.uint(payload.len())?;
            }
            0xDA => {
                let Some(fr) = frame.as_mut() else {
                    return corrupt("SOS before the frame header");
                };
                let mut f = Fields { b: segment(bytes, &mut pos)?, pos: 0, what: "SOS" };
                let ns = usize::from(f.u8()?);
                if ns == 0 || ns > fr.ids.len() {
                    return corrupt(format!("scan with {ns} components"));
                }
                let mut comps = Vec::with_capacity(ns);
                for _ in 0..ns {
                    let id = f.u8()?;
                    let tm = f.u8()?;
                    let Some(fi) = fr.ids.iter().position(|&i| i == id) else {
                        return corrupt(format!("scan names unknown component {id}"));
                    };
                    if tm != 0 {
                        return unsupported("mapping tables (palette images)");
                    }
                    if comps.contains(&fi) {
                        return corrupt(format!("component {id} twice in one scan"));
                    }
                    comps.push(fi);
                }
                let near = f.u8()?;
                let ilv = f.u8()?;
                let pt = f.u8()?;
                if pt & 0x0F != 0 {
                    return unsupported("point transform");
                }
                if ilv > 2 {
                    return corrupt(format!("interleave mode {ilv}"));
                }
                if ns > 1 && ilv == 0 {
                    return corrupt("several components in a non-interleaved scan");
                }
                if ns > 4 && ilv == 2 {
                    return unsupported(format!("sample interleaving of {ns} components"));
                }
                if done.is_empty() {
                    // First scan: the image size is final, allocate.
                    if fr.width == 0 || fr.height == 0 {
                        match oversize {
                            Some((x, y)) if fr.width == 0 || fr.width == x => {
                                fr.width = x;
                                if fr.height == 0 {
                                    fr.height = y;
                                }
                            }
                            _ => {}
                        }
                    }
                    if fr.width == 0 || fr.height == 0 {
                        return unsupported("image size defined by a DNL marker");
                    }
                    let pixels = u64::from(fr.width) * u64::from(fr.height);
                    if pixels > max_pixels {
                        return Err(JlsError::TooLarge {
                            width: fr.width,
                            height: fr.height,
                            pixels,
                            max: max_pixels,
                        });
                    }
                    let Some(n) =
                        usize::try_from(pixels).ok().and_then(|p| p.checked_mul(fr.ids.len()))
                    else {
                        return unsupported("image too large for this platform");
                    };
                    out = vec![0u16; n];
                    done = vec![false; fr.ids.len()];
                }
                for &c in &comps {
                    if done[c] {
                        return corrupt("component decoded twice");
                    }
                    done[c] = true;
                }
                let p = Params::new(fr.bits, near, &preset)?;
                decode_scan(bytes, &mut pos, fr, &comps, p, ilv, restart, &mut out)?;
            }
            _ => {
                segment(bytes, &mut pos)?; // APPn, COM, DNL and others: skipped
            }
        }
    }
    let Some(fr) = frame else {
        return corrupt("no frame header");
    };
    Ok(JlsImage {
        width: fr.width,
        height: fr.height,
        components: fr.ids.len() as u8,
        bits: fr.bits,
        data: out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A codestream written by CharLS from our own synthetic image (`synth`):
    /// name, hex, [width, height, components, bits], NEAR, synth seed, and the
    /// FNV-1a of the samples CharLS decodes (differs from `synth` when NEAR > 0).
    type Vector = (&'static str, &'static str, [u32; 4], i32, u32, u64);

    fn unhex(s: &str) -> Vec<u8> {
        let b = s.as_bytes();
        let nib = |c: u8| (c as char).to_digit(16).expect("hex digit") as u8;
        b.chunks(2).map(|p| nib(p[0]) << 4 | nib(p[1])).collect()
    }

    fn fnv(data: &[u16]) -> u64 {
        data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &v| {
            (h ^ u64::from(v)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    }

    /// The synthetic test image the vectors encode (sample-interleaved): a
    /// flat block (run mode), a noisy gradient (regular mode) and three
    /// columns of full-range noise (escape codes, modulo wrap).
    fn synth(w: u32, h: u32, nc: u32, bits: u8, seed: u32) -> Vec<u16> {
        let maxv = (1u32 << bits) - 1;
        let mut out = Vec::new();
        for y in 0..h {
            for x in 0..w {
                for c in 0..nc {
                    let mut hs = x
                        .wrapping_mul(0x9E37_79B1)
                        .wrapping_add(y.wrapping_mul(0x85EB_CA77))
                        .wrapping_add(c.wrapping_mul(0xC2B2_AE3D))
                        .wrapping_add(seed);
                    hs ^= hs >> 15;
                    hs = hs.wrapping_mul(0x2C1B_3C6D);
                    hs ^= hs >> 12;
                    let v = if x < w / 3 && y < h / 2 {
                        maxv / 3
                    } else if x >= w - 3 {
                        hs & maxv
                    } else {
                        let base = (x * maxv / (w - 1)) * 3 / 4 + (y * maxv / (h - 1)) / 4 + c * 7;
                        (i64::from(base) + i64::from(hs % 5) - 2).clamp(0, i64::from(maxv)) as u32
                    };
                    out.push(v as u16);
                }
            }
        }
        out
    }

    /// 24x16, 1 component(s), 8 bits, NEAR 0: `synth(.., 1)`.
    const GRAY8: &str =
        "ffd8fff7000b080010001801011100ffda0008010100000000000001a895e0000024e38156d27debd5fad400\
         000a313e8a31108c4118d8e3b00000280001bc4e213aaa24375000001a1000001a409a2a4e84d62b23870280\
         00007cb098133348d92f00015b1231f253b16e61000070070130e8f932748130c3000000b6011d10882a6cc4\
         b740000018201034322ca69808409a34232232683000000d64e35107997ec9a8d2b3457d007000019ab3a4a2\
         e192b7a499ab82fc059448d1534f345da52000003e69457a39952d71b089a64ac70000016c000001eed1a436\
         81b56bc3da24551e5e80aa32c90aa519459c5e9b800051a74b3ef17ac693664a8018000007d944ffd9";
    /// 20x14, 1 component(s), 12 bits, NEAR 0: `synth(.., 2)`.
    const GRAY12: &str =
        "ffd8fff7000b0c000e001401011100ffda0008010100000000000000001aa8810410800000000098b98a6097\
         a639725a97e5896e5790a0000002b400070607a5f2c279348e4a2691c8e4424800000016c000d4000000002c\
         b9d4aa41148a43203f101fc802e1a0000000007e34000000007cdf852f97b777c7a787275722580000000065\
         8004740eef097e6dee45c585a605c56a6c000000006aabe2922a942a4aca89c94908488809e24c000018b325\
         25d33d7ef881ebf76404c000000f900000002806a0cadad6ada96b009066f1eb876e5dbb76e54cff20000000\
         01a1d36797b470e9cb570cdbb464c59b05ec94b8764f6f582e5ec562e58b972c5cc57ab5ab958b6000000003\
         f64000000012582a95edb8bbac2edb8caccaec30c7f2dfb437ee15617617699594558656557664000da00000\
         0978c2cba6aacb2ca2aa28ba8f7a98f41411f400e1c63dce62508d29294a14c7a1b17aa6c8ffd9";
    /// 16x10, 1 component(s), 16 bits, NEAR 0: `synth(.., 3)`.
    const GRAY16: &str =
        "ffd8fff7000b10000a001001011100fff8000d01ffff0012004301140040ffda000801010000000000000000\
         001aa600401004000000000000d50995133e26444cd898d665d98b336a9c20008f2c00f063918e9c70e3c715\
         38c1c58e2c0000000001d809c421f538e337143889c48e28711388a71c93b0000014540000000000060b0b5c\
         6ee247113871c2ce1a70a4e35079f17c8c0000001f9b971ab839c1ce0e7093819c0ce0a00000e2c790edfcc6\
         38c66a19a066900b35e0cf03780bbfddf8f0077e2e31000661b2ba00fe2ee3cef777ebbe9df0ef377abbc9de\
         8ef3777bbc1717c1280fa50482cef07773baddd6eea774bbaddd6ee7772bb91dccb8b59b90678254ebee3772\
         bb91dc8ee4771bb6cdb86d936d1b6cdaab8bd78ee8978f24cdb46d836a9b48da46cf3681b34da26d03661b39\
         718ba67108998090ffd9";
    /// 16x12, 1 component(s), 5 bits, NEAR 0: `synth(.., 4)`.
    const GRAY5: &str =
        "ffd8fff7000b05000c001001011100ffda0008010100000000003b92a0a81400c0015e16132d0404600001ef\
         205dd3000112dd1acf120987e4649088b1809f88116272054866c422270b0b00013eb885c2724b08004e7c88\
         84884f1110255b99131728906de9c4910108448280005c408466e289d8608026ffd9";
    /// 20x14, 1 component(s), 12 bits, NEAR 2: `synth(.., 5)`.
    const GRAY12_NEAR2: &str =
        "ffd8fff7000b0c000e001401011100ffda000801010002000000000000118444800000000093e111f217a42f\
         5ebd7af400000ec7b02dc3d224083c41c7883cf3e000000000d1c0003c000000000b8fd7483cf38e38d38d34\
         00000001b000038189c3ec3cc30c30b38f3a000f800000003a00000de1f59659651e59449f007801702cac82\
         8938a2492493a17802df8ea3ae20920879c43cf9f42284ac184888c8888102487b8e71ce73dc00000000069e\
         af6fde6b9cd35cd35ae735ad61d00000000067e000000000705d190d6186b58c63166318b316000200000161\
         7b2cb308e47723bbb18e9f0f00000098000003243bbb18eec5bb311996c000000001b2c247539994b6528b52\
         4a65298e8000000024ee70294a52904b292ca410a42e800000008800001511a0ffd9";
    /// 20x14, 1 component(s), 8 bits, NEAR 3: `synth(.., 6)`.
    const GRAY8_NEAR3_PRESET: &str =
        "ffd8fff7000b08000e001401011100fff8000d0100ff0006000c001e0020ffda0008010100030000000ef008\
         8fff060202000057bd4528ac0600031774959490004000080000018b8d4c7580002d866294a94a08d4eed195\
         2c0001b01553cb44a0c0001ae044d89292e548007415667a8acc000801005548d2ee70600896bb9f78001a6a\
         7ef350002800e2a6519fa08000351291be53c0348a80ffd9";
    /// 9x6, 3 component(s), 8 bits, NEAR 0: `synth(.., 7)`.
    const RGB8_ILV0: &str =
        "ffd8fff70011080006000903011100021100031100ffda0008010100000000000001a89000400283c000e001\
         c07d3050303800000f3000003800000cd704acd000000dbd20405ee4002008955000001ea039d809c510d680\
         000068806164025a91d8800000cf800000c30b40ffda0008010200000000000001a8901001c0f1f000905930\
         140cb01870000006278b280c00000c000003a800031296001808c3a0002000000d083ca9c594f00a00000360\
         000003c85a04c62dd200b00e4860ffda0008010300000000000001a893000003059f04c000b4c100cc000480\
         00006c000000733832c03800000c7000000e0800a44700009c65400540000060de2d5d44dce78800000c1ad0\
         09096a37f26d000580ffd9";
    /// 9x6, 3 component(s), 8 bits, NEAR 0: `synth(.., 8)`.
    const RGB8_ILV1: &str =
        "ffd8fff70011080006000903011100021100031100ffda000c03010002000300000100000001a89000103c4c\
         0085ebc69924d16b1036744834c1042bd48200d011cc0a0402a8002000000ca458f393000001b60000052b93\
         31e446914027e3ed756e566e1053c3439839e2de50003000000bd000000c336150003026b95000001dcaa526\
         c00118b6000000cfbb7909a00098a0c001d000001c4000001c20d6ad57c00032000003ae000003396bb26144\
         4386ead68e9e5e27395a4515c5e000003220074bc5d77680bcea0000031fa22eaa41299494ffd9";
    /// 9x6, 3 component(s), 8 bits, NEAR 0: `synth(.., 9)`.
    const RGB8_ILV2: &str =
        "ffd8fff70011080006000903011100021100031100ffda000c03010002000300000200000001a9351aa57000\
         0011f2400070683c1a5ceac0003a1ca8260ec370727b2b4bcfba0410b03b49000000e28a00703800000c7000\
         000f9800000ee800000ef2ae61c573dcf737e000002000000fe80007000000c488400000c1a036000001d22e\
         a8fd22206c00400100060306c5bbb3d542a000003071e3134000000e988e6b70ad5a502550065757772119d5\
         6900d000000db6bf6000000e3a9592a2892c8ea754259110b59c85b000001b50000019e0000016b226b00000\
         a6f9a0ffd9";
    /// 9x6, 3 component(s), 10 bits, NEAR 1: `synth(.., 10)`.
    const RGB10_ILV2_NEAR1: &str =
        "ffd8fff700110a0006000903011100021100031100ffda000c03010002000300010200000000060c8e489580\
         0000011180414012016111f1b1b000e8023042380581c0567bb512d43438421e7881220000f260940e000000\
         5800004000001229800005730e2c441e20d34e7d9fc00000000cc00000000c0802800000055e000000015d9f\
         5ddcd03f7e00a207c1018438e38bfc68780000081f801807b1862a47393062e365924925104104bd871e1000\
         c80faaa7000058f1040000002c023082443c8739ef6b5ce631aefb0350c0650002d87b2133000680ffd9";
    /// 12x12, 1 component(s), 12 bits, NEAR 0: `synth(.., 11)`.
    const GRAY12_RESTART: &str =
        "ffd8fff7000b0c000c000c01011100ffdd00040006ffda0008010100000000000000001aa881040000000028\
         01b42b42c493807d004fe1db40e3f880be591dc0007b30800000000d98f172b05a2d16e53a000000030d1f62\
         e560a6532ec03b80042380c5c2a158a85a800000000fbd800000000c7780001f70ba512714072000000001e3\
         801d000860ffd000002c806f2564ac9492124648c8f8798a06ba3d1f978b25a2c158ac3c8000037000dc0000\
         00003c1c7a562a154a055291487800000000ea000000003ce6181749e4c2692c924d2291c000000037400000\
         0500000050ae1108a442290cb65a4b902f1a540ef5648a4321901f1edf52c5f60000018c001d00ffd9";

    const VECTORS: &[Vector] = &[
        ("GRAY8", GRAY8, [24, 16, 1, 8], 0, 1, 0xe5c2dd4aee76ff79),
        ("GRAY12", GRAY12, [20, 14, 1, 12], 0, 2, 0x52c812c197c79f5e),
        ("GRAY16", GRAY16, [16, 10, 1, 16], 0, 3, 0x0611d40210296cb4),
        ("GRAY5", GRAY5, [16, 12, 1, 5], 0, 4, 0x3d8e3785e18a0842),
        ("GRAY12_NEAR2", GRAY12_NEAR2, [20, 14, 1, 12], 2, 5, 0xac3e5c5e2a3e73c2),
        ("GRAY8_NEAR3_PRESET", GRAY8_NEAR3_PRESET, [20, 14, 1, 8], 3, 6, 0x4a6ca0d0d19584df),
        ("RGB8_ILV0", RGB8_ILV0, [9, 6, 3, 8], 0, 7, 0x9a08047568ca8a27),
        ("RGB8_ILV1", RGB8_ILV1, [9, 6, 3, 8], 0, 8, 0xaaef4901d750c02f),
        ("RGB8_ILV2", RGB8_ILV2, [9, 6, 3, 8], 0, 9, 0xc01f79ecabbc0918),
        ("RGB10_ILV2_NEAR1", RGB10_ILV2_NEAR1, [9, 6, 3, 10], 1, 10, 0x7ce6bdb02ab701e8),
        ("GRAY12_RESTART", GRAY12_RESTART, [12, 12, 1, 12], 0, 11, 0xa5fd7d3824153c59),
    ];

    #[test]
    fn decodes_charls_streams_exactly() {
        for &(name, hex, [w, h, nc, bits], near, seed, sum) in VECTORS {
            let img = decode(&unhex(hex), 1 << 20).unwrap_or_else(|e| panic!("{name}: {e}"));
            let dims = (img.width, img.height, u32::from(img.components), u32::from(img.bits));
            assert_eq!(dims, (w, h, nc, bits), "{name}");
            let want = synth(w, h, nc, bits as u8, seed);
            assert_eq!(img.data.len(), want.len(), "{name}");
            let err =
                img.data.iter().zip(&want).map(|(&a, &b)| (i32::from(a) - i32::from(b)).abs());
            assert!(err.max().unwrap_or(0) <= near, "{name}: error above NEAR");
            if near == 0 {
                assert!(img.data == want, "{name}: lossless decode differs");
            }
            assert_eq!(fnv(&img.data), sum, "{name}: differs from CharLS's decode");
        }
    }

    fn stream(sof_dims: (u16, u16), data: &[u8]) -> Vec<u8> {
        let (w, h) = sof_dims;
        let mut s = vec![0xFF, 0xD8, 0xFF, 0xF7, 0, 11, 8];
        s.extend_from_slice(&h.to_be_bytes());
        s.extend_from_slice(&w.to_be_bytes());
        s.extend_from_slice(&[1, 1, 0x11, 0, 0xFF, 0xDA, 0, 8, 1, 1, 0, 0, 0, 0]);
        s.extend_from_slice(data);
        s.extend_from_slice(&[0xFF, 0xD9]);
        s
    }

    #[test]
    fn hand_coded_streams() {
        // 1x1, value 5: run bit 0, then the run-interruption sample (RItype 1,
        // k = 2, EMErrval = 9: unary 001 + bits 01) -> 0 001 01 00 = 0x14.
        let img = decode(&stream((1, 1), &[0x14]), 10).expect("1x1");
        assert_eq!((img.width, img.height, img.bits, img.data), (1, 1, 8, vec![5]));
        // 1x1, value 0: a single run bit covers the line.
        assert_eq!(decode(&stream((1, 1), &[0x80]), 10).expect("zero").data, vec![0]);
        // 2x1, [5, 5]: as above, then regular mode, context -2 (Q3), MED
        // prediction 5, error 0 (k = 2: code 1 00) -> 0 00101 100 -> 16 00.
        assert_eq!(decode(&stream((2, 1), &[0x16, 0x00]), 10).expect("2x1").data, vec![5, 5]);
        // 64x1 zeros: 17 run bits (segments 1,1,1,1,2,2,2,2,4,4,4,4,8,8,8,8 and a
        // last partial one). After 0xFF the next byte carries a stuffed 0 bit
        // and 7 data bits: FF 7F C0. Ignoring the stuffing would end the run early.
        let run = decode(&stream((64, 1), &[0xFF, 0x7F, 0xC0]), 100).expect("stuffed").data;
        assert_eq!(run, vec![0; 64]);
    }

    #[test]
    fn refuses_what_it_cannot_decode() {
        assert!(matches!(decode(&[], 1), Err(JlsError::NotJpegLs)));
        assert!(matches!(decode(b"GIF89a", 1), Err(JlsError::NotJpegLs)));
        let baseline = [0xFF, 0xD8, 0xFF, 0xC0, 0, 11, 8, 0, 1, 0, 1, 1, 1, 0x11, 0];
        assert!(matches!(decode(&baseline, 10), Err(JlsError::NotJpegLs)));
        let big = stream((60000, 60000), &[0x80]);
        assert!(matches!(decode(&big, 1 << 20), Err(JlsError::TooLarge { .. })));
        let mut mapped = stream((1, 1), &[0x80]);
        mapped[21] = 1; // mapping table selector in SOS
        assert!(matches!(decode(&mapped, 10), Err(JlsError::Unsupported(_))));
        let mut pt = stream((1, 1), &[0x80]);
        pt[24] = 1; // point transform
        assert!(matches!(decode(&pt, 10), Err(JlsError::Unsupported(_))));
        let mut dnl = stream((1, 1), &[0x80]);
        dnl[7..9].copy_from_slice(&[0, 0]); // height 0: given by a DNL marker
        assert!(matches!(decode(&dnl, 10), Err(JlsError::Unsupported(_))));
        assert!(matches!(decode(&stream((1, 1), &[]), 10), Err(JlsError::Truncated { .. })));
    }

    #[test]
    fn truncated_and_garbled_streams_never_panic() {
        let mut seed = 0x2545_F491u32;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        for &(name, hex, ..) in VECTORS {
            let bytes = unhex(hex);
            let full = decode(&bytes, 1 << 20).expect("valid vector");
            for cut in 0..bytes.len() {
                // A cut stream fails, or decodes to the same image when only
                // bytes past the last needed bit (EOI) were cut.
                if let Ok(img) = decode(&bytes[..cut], 1 << 20) {
                    assert_eq!(img, full, "{name} cut at {cut}");
                }
            }
            for _ in 0..400 {
                let mut g = bytes.clone();
                for _ in 0..1 + rand() % 3 {
                    let i = rand() as usize % g.len();
                    g[i] = match rand() % 4 {
                        0 => 0xFF,
                        1 => 0x00,
                        _ => g[i] ^ (rand() as u8 | 1),
                    };
                }
                let _ = decode(&g, 1 << 20);
            }
        }
    }
}
