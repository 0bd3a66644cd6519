//! The pixel pipeline, in the standard's order: stored values -> Modality LUT or Rescale -> VOI LUT or
//! window -> MONOCHROME1 inversion -> 16-bit output. Never through 8 bits.
//!
//! Every step is a function of the stored value alone, so the whole chain is evaluated once per possible
//! stored value (at most 2^16 entries) into a table, and the image is then a single table lookup per
//! pixel. That is exact (each entry is computed in f64 from the standard's formulas) and fast.

use crate::error::Result;
use crate::item_err;

/// A lookup table from a Modality or VOI LUT sequence item.
#[derive(Debug, Clone, PartialEq)]
pub struct Lut {
    /// First stored (or modality) value mapped (descriptor value 2, signed or unsigned).
    pub first_mapped: i32,
    /// Bits per entry (descriptor value 3).
    pub bits: u16,
    /// Entries.
    pub data: Vec<u16>,
}

impl Lut {
    fn lookup(&self, x: f64) -> f64 {
        let i = (x.round() as i64 - self.first_mapped as i64).clamp(0, self.data.len() as i64 - 1);
        self.data[i as usize] as f64
    }
    fn max_value(&self) -> f64 {
        ((1u32 << self.bits.clamp(1, 16)) - 1) as f64
    }
}

/// Modality transformation.
#[derive(Debug, Clone, PartialEq)]
pub enum Modality {
    /// Identity.
    None,
    /// `slope * x + intercept`.
    Rescale { slope: f64, intercept: f64 },
    /// Modality LUT sequence.
    Lut(Lut),
}

/// VOI LUT function of a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowFunction {
    /// PS3.3 C.11.2.1.2.1 (the default).
    Linear,
    /// PS3.3 C.11.2.1.3.2.
    LinearExact,
    /// PS3.3 C.11.2.1.3.1.
    Sigmoid,
}

/// VOI transformation.
#[derive(Debug, Clone, PartialEq)]
pub enum Voi {
    /// None: modality values kept (shifted to start at 0 if they can be negative).
    None,
    /// A window.
    Window { center: f64, width: f64, function: WindowFunction },
    /// A VOI LUT sequence item.
    Lut(Lut),
}

/// How stored values are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Bits allocated (8 or 16).
    pub bits_allocated: u16,
    /// Bits stored.
    pub bits_stored: u16,
    /// Pixel Representation 1 (two's complement).
    pub signed: bool,
}

impl Layout {
    /// Checks the combination is one this pipeline handles.
    pub fn validate(&self) -> Result<()> {
        if self.bits_stored == 0 || self.bits_stored > self.bits_allocated {
            return Err(item_err!("Bits Stored ({}) must be between 1 and Bits Allocated ({})", self.bits_stored, self.bits_allocated));
        }
        if !matches!(self.bits_allocated, 8 | 16) {
            return Err(item_err!("Bits Allocated {} is not supported (8 or 16)", self.bits_allocated));
        }
        Ok(())
    }
    fn mask(&self) -> u32 {
        (1u32 << self.bits_stored) - 1
    }
    /// The signed/unsigned value of a masked stored sample.
    fn value(&self, raw: u32) -> i32 {
        let v = raw & self.mask();
        if self.signed && v & (1 << (self.bits_stored - 1)) != 0 {
            v as i32 - (1i32 << self.bits_stored)
        } else {
            v as i32
        }
    }
    /// Smallest and largest stored value.
    fn range(&self) -> (i32, i32) {
        if self.signed {
            (-(1i32 << (self.bits_stored - 1)), (1i32 << (self.bits_stored - 1)) - 1)
        } else {
            (0, self.mask() as i32)
        }
    }
}

/// The complete pipeline for one image.
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    /// Stored value layout.
    pub layout: Layout,
    /// Modality step.
    pub modality: Modality,
    /// VOI step.
    pub voi: Voi,
    /// MONOCHROME1: invert so that dense tissue is bright.
    pub invert: bool,
}

fn window(x: f64, c: f64, w: f64, f: WindowFunction, ymax: f64) -> f64 {
    match f {
        WindowFunction::Linear => {
            let w = w.max(1.0);
            if x <= c - 0.5 - (w - 1.0) / 2.0 {
                0.0
            } else if x > c - 0.5 + (w - 1.0) / 2.0 {
                ymax
            } else {
                ((x - (c - 0.5)) / (w - 1.0) + 0.5) * ymax
            }
        }
        WindowFunction::LinearExact => {
            let w = w.max(f64::MIN_POSITIVE);
            if x <= c - w / 2.0 {
                0.0
            } else if x > c + w / 2.0 {
                ymax
            } else {
                (x - c) / w * ymax + ymax / 2.0
            }
        }
        WindowFunction::Sigmoid => ymax / (1.0 + (-4.0 * (x - c) / w.max(f64::MIN_POSITIVE)).exp()),
    }
}

impl Pipeline {
    fn modality(&self, v: i32) -> f64 {
        match &self.modality {
            Modality::None => v as f64,
            Modality::Rescale { slope, intercept } => v as f64 * slope + intercept,
            Modality::Lut(l) => l.lookup(v as f64),
        }
    }

    /// Range of modality values over all stored values (for the "none" VOI and inversion), or over the
    /// stored values the image holds (`stored`) when the whole range would not fit 16 bits.
    fn modality_range(&self, stored: Option<(i32, i32)>) -> (f64, f64) {
        let span = |(lo, hi): (i32, i32)| {
            let (a, b) = (self.modality(lo), self.modality(hi));
            (a.min(b), a.max(b))
        };
        match &self.modality {
            Modality::Lut(l) => (0.0, l.max_value()),
            _ => {
                let (lo, hi) = span(self.layout.range());
                match stored {
                    Some(s) if hi - lo > 65535.0 => span(s),
                    _ => (lo, hi),
                }
            }
        }
    }

    /// Whether the modality range of the layout exceeds 16 bits (a rescale that spreads values, e.g.
    /// slope 16 on signed 16-bit data): then the image's own stored range decides the output range.
    fn needs_stored_range(&self) -> bool {
        let (lo, hi) = self.modality_range(None);
        hi - lo > 65535.0
    }

    /// Smallest and largest stored value among raw samples.
    fn stored_range(&self, raw: impl Iterator<Item = u32>) -> Option<(i32, i32)> {
        raw.map(|r| self.layout.value(r)).fold(None, |acc, v| Some(acc.map_or((v, v), |(lo, hi): (i32, i32)| (lo.min(v), hi.max(v)))))
    }

    /// Output of one stored value.
    fn eval(&self, v: i32, (mlo, mhi): (f64, f64)) -> u16 {
        let m = self.modality(v);
        let (y, ymax) = match &self.voi {
            Voi::None if mhi - mlo > 65535.0 => ((m - mlo) * 65535.0 / (mhi - mlo), 65535.0),
            Voi::None => {
                // keep modality values (as pydicom does); shift a range that leaves 0 .. 65535 to start at 0
                let shift = if mlo < 0.0 || mhi > 65535.0 { -mlo } else { 0.0 };
                (m + shift, (mhi + shift).min(65535.0))
            }
            Voi::Window { center, width, function } => (window(m, *center, *width, *function, 65535.0), 65535.0),
            Voi::Lut(l) => {
                // a VOI LUT of `bits` per entry is scaled to the full 16-bit range
                (l.lookup(m) * 65535.0 / l.max_value(), 65535.0)
            }
        };
        let y = y.clamp(0.0, ymax);
        let y = if self.invert { ymax - y } else { y };
        y.round().clamp(0.0, 65535.0) as u16
    }

    /// The lookup table from every raw sample value (all `2^bits_allocated` of them, bits above Bits
    /// Stored ignored) to output. Indexing it with a raw `u8`/`u16` needs no mask and no bounds check.
    pub fn table(&self) -> Vec<u16> {
        self.table_for(None)
    }

    /// [`Pipeline::table`], with the stored range of the image at hand (see [`Pipeline::modality_range`]).
    fn table_for(&self, stored: Option<(i32, i32)>) -> Vec<u16> {
        let range = self.modality_range(stored);
        let mask = self.layout.mask();
        let size = 1u32 << self.layout.bits_allocated.min(16);
        let distinct: Vec<u16> = (0..=mask).map(|raw| self.eval(self.layout.value(raw), range)).collect();
        (0..size).map(|raw| distinct[(raw & mask) as usize]).collect()
    }

    /// Applies the pipeline to raw native-endian samples (`bits_allocated` each), `count` of them.
    ///
    /// # Errors
    /// When `raw` holds fewer than `count` samples.
    pub fn apply(&self, raw: &[u8], count: usize) -> Result<Vec<u16>> {
        self.layout.validate()?;
        let bytes_per = (self.layout.bits_allocated / 8) as usize;
        if raw.len() < count * bytes_per {
            return Err(item_err!("pixel data holds {} bytes, but rows x columns x samples needs {}", raw.len(), count * bytes_per));
        }
        let stored = if !self.needs_stored_range() {
            None
        } else if bytes_per == 1 {
            self.stored_range(raw[..count].iter().map(|&b| b as u32))
        } else {
            self.stored_range(raw[..count * 2].chunks_exact(2).map(|c| u16::from_ne_bytes([c[0], c[1]]) as u32))
        };
        let table = self.table_for(stored);
        Ok(match bytes_per {
            1 => {
                let t: &[u16; 256] = table.as_slice().try_into().expect("256 entries for 8 bits");
                raw[..count].iter().map(|&b| t[b as usize]).collect()
            }
            _ => {
                let t: &[u16; 65536] = table.as_slice().try_into().expect("65536 entries for 16 bits");
                raw[..count * 2].chunks_exact(2).map(|c| t[u16::from_ne_bytes([c[0], c[1]]) as usize]).collect()
            }
        })
    }

    /// Applies the pipeline to samples already decoded to u16 (`count` of them), in place of a copy.
    pub fn apply_samples(&self, mut samples: Vec<u16>, count: usize) -> Result<Vec<u16>> {
        self.layout.validate()?;
        if samples.len() < count {
            return Err(item_err!("pixel data holds {} samples, but rows x columns needs {count}", samples.len()));
        }
        samples.truncate(count);
        let stored = if self.needs_stored_range() { self.stored_range(samples.iter().map(|&v| v as u32)) } else { None };
        let table = self.table_for(stored);
        if table.iter().enumerate().all(|(i, &v)| v as usize == i) {
            return Ok(samples); // identity (a 16-bit mammogram without LUTs): nothing to do
        }
        match self.layout.bits_allocated {
            8 => {
                let t: &[u16; 256] = table.as_slice().try_into().expect("256 entries for 8 bits");
                samples.iter_mut().for_each(|v| *v = t[(*v & 0xff) as usize]);
            }
            _ => {
                let t: &[u16; 65536] = table.as_slice().try_into().expect("65536 entries for 16 bits");
                samples.iter_mut().for_each(|v| *v = t[*v as usize]);
            }
        }
        Ok(samples)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(bits: u16, signed: bool) -> Layout {
        Layout { bits_allocated: 16, bits_stored: bits, signed }
    }

    fn raw16(v: &[u16]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_ne_bytes()).collect()
    }

    #[test]
    fn identity_keeps_full_16_bit_range() {
        let p = Pipeline { layout: layout(16, false), modality: Modality::None, voi: Voi::None, invert: false };
        assert_eq!(p.apply(&raw16(&[0, 1, 40000, 65535]), 4).unwrap(), vec![0, 1, 40000, 65535]);
    }

    #[test]
    fn monochrome1_inverts_within_range() {
        let p = Pipeline { layout: layout(10, false), modality: Modality::None, voi: Voi::None, invert: true };
        assert_eq!(p.apply(&raw16(&[0, 1023, 23]), 3).unwrap(), vec![1023, 0, 1000]);
        // bits above Bits Stored are ignored
        assert_eq!(p.apply(&raw16(&[0xFC00]), 1).unwrap(), vec![1023]);
    }

    #[test]
    fn signed_values_and_rescale() {
        let p = Pipeline { layout: layout(12, true), modality: Modality::Rescale { slope: 1.0, intercept: 0.0 }, voi: Voi::None, invert: false };
        // -2048 .. 2047 shifted to 0 .. 4095
        assert_eq!(p.apply(&raw16(&[0x0800, 0x07FF, 0x0000, 0x0FFF]), 4).unwrap(), vec![0, 4095, 2048, 2047]);
        let p = Pipeline { layout: layout(16, false), modality: Modality::Rescale { slope: 2.0, intercept: -10.0 }, voi: Voi::None, invert: false };
        // (its theoretical range, -10 .. 131060, exceeds 16 bits: the image's 0 .. 10 are kept as they are)
        assert_eq!(p.apply(&raw16(&[5, 10]), 2).unwrap(), vec![0, 10]);
        // Slope 16 / intercept 32768 on signed 16-bit data spans 20 bits in theory; the image's own
        // values (-2048 .. 2047) map to 0 .. 65520, as pydicom gives, not all to 65535.
        let p = Pipeline { layout: layout(16, true), modality: Modality::Rescale { slope: 16.0, intercept: 32768.0 }, voi: Voi::None, invert: false };
        let stored = [-2048i16, 0, 2047];
        let raw: Vec<u16> = stored.iter().map(|&v| v as u16).collect();
        assert_eq!(p.apply(&raw16(&raw), 3).unwrap(), vec![0, 32768, 65520]);
        assert_eq!(p.apply_samples(raw.clone(), 3).unwrap(), vec![0, 32768, 65520]);
        // values whose own range still exceeds 16 bits are scaled into it, not saturated
        let wide: Vec<u16> = [-32768i16, 0, 32767].iter().map(|&v| v as u16).collect();
        let out = p.apply(&raw16(&wide), 3).unwrap();
        assert_eq!((out[0], out[2]), (0, 65535));
        assert!((out[1] as i32 - 32768).abs() <= 1, "{out:?}");
    }

    #[test]
    fn window_linear_matches_the_standard() {
        let voi = Voi::Window { center: 2047.0, width: 4095.0, function: WindowFunction::Linear };
        let p = Pipeline { layout: layout(12, false), modality: Modality::None, voi, invert: false };
        let out = p.apply(&raw16(&[0, 2047, 4095]), 3).unwrap();
        // PS3.3's linear window puts 0 half a step inside the window: ((0 - 2046.5) / 4094 + 0.5) * 65535 = 8
        assert_eq!(out[0], 8);
        assert_eq!(out[2], 65535);
        assert!((out[1] as i32 - 32768).abs() <= 16, "{}", out[1]);
        let narrow = Voi::Window { center: 100.0, width: 10.0, function: WindowFunction::Linear };
        let p = Pipeline { layout: layout(12, false), modality: Modality::None, voi: narrow, invert: true };
        assert_eq!(p.apply(&raw16(&[0, 4000]), 2).unwrap(), vec![65535, 0]);
    }

    #[test]
    fn luts_are_looked_up_and_scaled() {
        let lut = Lut { first_mapped: -2, bits: 8, data: vec![0, 10, 20, 255] };
        let p = Pipeline { layout: layout(12, true), modality: Modality::Lut(lut.clone()), voi: Voi::None, invert: false };
        // stored -2 -> 0, -1 -> 10, 0 -> 20, 1 -> 255, beyond clamps
        assert_eq!(p.apply(&raw16(&[0x0FFE, 0x0FFF, 0, 1, 100]), 5).unwrap(), vec![0, 10, 20, 255, 255]);
        let p = Pipeline { layout: layout(8, false), modality: Modality::None, voi: Voi::Lut(Lut { first_mapped: 0, ..lut }), invert: false };
        assert_eq!(p.apply(&raw16(&[0, 3]), 2).unwrap(), vec![0, 65535]);
    }

    #[test]
    fn short_pixel_data_and_bad_layouts_are_errors() {
        let p = Pipeline { layout: layout(16, false), modality: Modality::None, voi: Voi::None, invert: false };
        assert!(p.apply(&[0, 0, 0], 2).unwrap_err().to_string().contains("needs 4"));
        let bad = Pipeline { layout: Layout { bits_allocated: 16, bits_stored: 17, signed: false }, ..p };
        assert!(bad.apply(&[0; 4], 2).unwrap_err().to_string().contains("Bits Stored (17)"));
    }
}
