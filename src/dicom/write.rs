//! Writing mammograms as real DICOM files: the phantom's DICOM output and the test fixtures.
//!
//! Digital Mammography X-Ray Image (For Presentation) objects, MONOCHROME1 or MONOCHROME2, 12-16 bits
//! stored, uncompressed (explicit VR little endian) or RLE Lossless, with window, laterality and view
//! tags, and only synthetic identifiers. dicom-rs has no RLE encoder, so [`rle_encode`] is ours
//! (PS3.5 Annex G: PackBits per byte plane, most significant plane first, rows never crossed).

use dicom_core::value::{PixelFragmentSequence, Value};
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

use crate::error::Result;
use crate::item_err;
use crate::npy::Tensor2;

/// Digital Mammography X-Ray Image Storage - For Presentation.
const MG_FOR_PRESENTATION: &str = "1.2.840.10008.5.1.4.1.1.1.2";
/// Explicit VR Little Endian.
pub const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
/// RLE Lossless.
pub const RLE: &str = "1.2.840.10008.1.2.5";

/// How to write a mammogram.
#[derive(Debug, Clone)]
pub struct MgSpec {
    /// MONOCHROME1 (stored values inverted: high = dark) instead of MONOCHROME2.
    pub monochrome1: bool,
    /// Bits stored (12 to 16); values above 2^bits - 1 are clamped.
    pub bits_stored: u8,
    /// RLE Lossless instead of uncompressed.
    pub rle: bool,
    /// Window center and width to record, if any.
    pub window: Option<(f64, f64)>,
    /// `L` or `R`.
    pub laterality: char,
    /// `MLO`, `CC`, ...
    pub view: String,
    /// Synthetic patient id (never a real one).
    pub patient_id: String,
    /// Seed for the UIDs (study, series, instance): the same seed gives the same file.
    pub uid_seed: u64,
    /// Pixel spacing in mm.
    pub pixel_spacing: f64,
}

/// A UID under the 2.25 root (UUID-derived), deterministic in `(seed, salt)`.
fn uid(seed: u64, salt: &str) -> String {
    let h = blake3::hash(format!("{seed}:{salt}").as_bytes());
    let n = u128::from_le_bytes(h.as_bytes()[..16].try_into().expect("16 bytes"));
    format!("2.25.{}", n >> 1)
}

fn put_str(obj: &mut InMemDicomObject, tag: dicom_core::Tag, vr: VR, v: &str) {
    obj.put(DataElement::new(tag, vr, PrimitiveValue::from(v)));
}

fn put_u16(obj: &mut InMemDicomObject, tag: dicom_core::Tag, v: u16) {
    obj.put(DataElement::new(tag, VR::US, PrimitiveValue::from(v)));
}

/// PackBits-encodes one row of bytes (PS3.5 G.3.1).
fn packbits_row(row: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < row.len() {
        let mut run = 1;
        while i + run < row.len() && run < 128 && row[i + run] == row[i] {
            run += 1;
        }
        if run >= 2 {
            out.push((257 - run) as u8); // -(run - 1) as i8
            out.push(row[i]);
            i += run;
            continue;
        }
        let start = i;
        let mut len = 0;
        while i < row.len() && len < 128 {
            if i + 1 < row.len() && row[i] == row[i + 1] {
                break; // a replicate run starts here
            }
            i += 1;
            len += 1;
        }
        out.push((len - 1) as u8);
        out.extend_from_slice(&row[start..start + len]);
    }
}

/// RLE Lossless encoding of one frame of 16-bit samples: one fragment (64-byte header + 2 segments).
pub fn rle_encode(t: &Tensor2<u16>) -> Vec<u8> {
    let mut segments: Vec<Vec<u8>> = Vec::with_capacity(2);
    for shift in [8u32, 0] {
        let mut seg = Vec::with_capacity(t.data.len() / 2);
        let mut row = vec![0u8; t.width];
        for y in 0..t.height {
            for (x, r) in row.iter_mut().enumerate() {
                *r = (t.data[y * t.width + x] >> shift) as u8;
            }
            packbits_row(&row, &mut seg);
        }
        if seg.len() % 2 == 1 {
            seg.push(0);
        }
        segments.push(seg);
    }
    let mut out = Vec::with_capacity(64 + segments.iter().map(Vec::len).sum::<usize>());
    out.extend_from_slice(&(segments.len() as u32).to_le_bytes());
    let mut offset = 64u32;
    for i in 0..15 {
        let o = if i < segments.len() { offset } else { 0 };
        out.extend_from_slice(&o.to_le_bytes());
        if i < segments.len() {
            offset += segments[i].len() as u32;
        }
    }
    for s in segments {
        out.extend_from_slice(&s);
    }
    out
}

/// Writes a complete DICOM Part 10 file (preamble, meta group, data set) into memory.
pub fn write_mg(image: &Tensor2<u16>, spec: &MgSpec) -> Result<Vec<u8>> {
    if !(12..=16).contains(&spec.bits_stored) {
        return Err(item_err!("bits stored must be 12 to 16, got {}", spec.bits_stored));
    }
    let max = ((1u32 << spec.bits_stored) - 1) as u16;
    let stored: Vec<u16> = image.data.iter().map(|&v| {
        let v = v.min(max);
        if spec.monochrome1 { max - v } else { v }
    }).collect();
    let mut obj = InMemDicomObject::new_empty();
    let sop_instance = uid(spec.uid_seed, "instance");
    put_str(&mut obj, tags::SOP_CLASS_UID, VR::UI, MG_FOR_PRESENTATION);
    put_str(&mut obj, tags::SOP_INSTANCE_UID, VR::UI, &sop_instance);
    put_str(&mut obj, tags::STUDY_INSTANCE_UID, VR::UI, &uid(spec.uid_seed, "study"));
    put_str(&mut obj, tags::SERIES_INSTANCE_UID, VR::UI, &uid(spec.uid_seed, "series"));
    put_str(&mut obj, tags::MODALITY, VR::CS, "MG");
    put_str(&mut obj, tags::PATIENT_NAME, VR::PN, "Phantom^Synthetic");
    put_str(&mut obj, tags::PATIENT_ID, VR::LO, &spec.patient_id);
    put_str(&mut obj, tags::PATIENT_BIRTH_DATE, VR::DA, "19700101");
    put_str(&mut obj, tags::MANUFACTURER, VR::LO, "mammoflow");
    put_str(&mut obj, tags::MANUFACTURER_MODEL_NAME, VR::LO, "phantom");
    put_str(&mut obj, tags::PRESENTATION_INTENT_TYPE, VR::CS, "FOR PRESENTATION");
    put_str(&mut obj, tags::IMAGE_LATERALITY, VR::CS, &spec.laterality.to_string());
    put_str(&mut obj, tags::VIEW_POSITION, VR::CS, &spec.view);
    put_str(&mut obj, tags::IMAGER_PIXEL_SPACING, VR::DS, &format!("{0}\\{0}", spec.pixel_spacing));
    put_str(&mut obj, tags::PIXEL_SPACING, VR::DS, &format!("{0}\\{0}", spec.pixel_spacing));
    put_u16(&mut obj, tags::SAMPLES_PER_PIXEL, 1);
    put_str(&mut obj, tags::PHOTOMETRIC_INTERPRETATION, VR::CS, if spec.monochrome1 { "MONOCHROME1" } else { "MONOCHROME2" });
    put_u16(&mut obj, tags::ROWS, image.height as u16);
    put_u16(&mut obj, tags::COLUMNS, image.width as u16);
    put_u16(&mut obj, tags::BITS_ALLOCATED, 16);
    put_u16(&mut obj, tags::BITS_STORED, spec.bits_stored as u16);
    put_u16(&mut obj, tags::HIGH_BIT, spec.bits_stored as u16 - 1);
    put_u16(&mut obj, tags::PIXEL_REPRESENTATION, 0);
    put_str(&mut obj, tags::RESCALE_INTERCEPT, VR::DS, "0");
    put_str(&mut obj, tags::RESCALE_SLOPE, VR::DS, "1");
    put_str(&mut obj, tags::RESCALE_TYPE, VR::LO, "US");
    if let Some((c, w)) = spec.window {
        put_str(&mut obj, tags::WINDOW_CENTER, VR::DS, &format!("{c}"));
        put_str(&mut obj, tags::WINDOW_WIDTH, VR::DS, &format!("{w}"));
    }
    if image.height > u16::MAX as usize || image.width > u16::MAX as usize {
        return Err(item_err!("image too large for DICOM rows/columns: {} x {}", image.height, image.width));
    }
    let t = Tensor2 { height: image.height, width: image.width, data: stored };
    let ts = if spec.rle {
        let frag = rle_encode(&t);
        obj.put(DataElement::new(tags::PIXEL_DATA, VR::OB, Value::PixelSequence(PixelFragmentSequence::new(Vec::<u32>::new(), vec![frag]))));
        RLE
    } else {
        obj.put(DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(t.data.into())));
        EXPLICIT_LE
    };
    let file = obj
        .with_meta(FileMetaTableBuilder::new().transfer_syntax(ts).implementation_class_uid("2.25.1234567890123456789"))
        .map_err(|e| item_err!("building the DICOM meta group: {e}"))?;
    let mut out = Vec::new();
    file.write_all(&mut out).map_err(|e| item_err!("writing DICOM: {e}"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference PackBits decoder (PS3.5 G.3.2) for the round trip.
    fn unpack(mut s: &[u8], n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        while out.len() < n && !s.is_empty() {
            let h = s[0] as i8;
            s = &s[1..];
            if h >= 0 {
                let k = h as usize + 1;
                out.extend_from_slice(&s[..k]);
                s = &s[k..];
            } else if h != -128 {
                out.extend(std::iter::repeat_n(s[0], (1 - h as i32) as usize));
                s = &s[1..];
            }
        }
        out
    }

    #[test]
    fn packbits_roundtrips_runs_and_literals() {
        for row in [vec![1u8, 1, 1, 1, 2, 3, 4, 4, 5], vec![7; 300], (0..=255).collect::<Vec<u8>>(), vec![9], vec![1, 2, 2, 3, 3, 3]] {
            let mut enc = Vec::new();
            packbits_row(&row, &mut enc);
            assert_eq!(unpack(&enc, row.len()), row);
        }
    }

    #[test]
    fn rle_fragment_has_two_segments_msb_first() {
        let t = Tensor2 { height: 2, width: 3, data: vec![0x0102, 0x0102, 0x0304, 0, 0xFFFF, 0x00FF] };
        let f = rle_encode(&t);
        assert_eq!(u32::from_le_bytes(f[0..4].try_into().unwrap()), 2);
        let o1 = u32::from_le_bytes(f[4..8].try_into().unwrap()) as usize;
        let o2 = u32::from_le_bytes(f[8..12].try_into().unwrap()) as usize;
        assert_eq!(o1, 64);
        assert_eq!(unpack(&f[o1..o2], 6), vec![1, 1, 3, 0, 0xFF, 0]);
        assert_eq!(unpack(&f[o2..], 6), vec![2, 2, 4, 0, 0xFF, 0xFF]);
    }
}
