//! What the pixel pipeline and the metadata manifest need from a DICOM header, read without ever
//! keeping identifying values: the patient id only ever leaves this module as a keyed hash.

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, InMemDicomObject};

use super::pixels::{Layout, Lut, Modality, Voi, WindowFunction};
use crate::error::Result;
use crate::item_err;

type Obj = InMemDicomObject;

pub(crate) fn text(obj: &Obj, tag: Tag) -> Option<String> {
    let s = obj.get(tag)?.to_str().ok()?.trim().trim_end_matches('\0').trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn int(obj: &Obj, tag: Tag) -> Option<i64> {
    obj.get(tag)?.to_int::<i64>().ok()
}

fn floats(obj: &Obj, tag: Tag) -> Option<Vec<f64>> {
    obj.get(tag)?.to_multi_float64().ok().filter(|v| !v.is_empty())
}

/// Image geometry and sample layout.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageHeader {
    /// Rows.
    pub rows: u32,
    /// Columns.
    pub columns: u32,
    /// Samples per pixel.
    pub samples: u16,
    /// Number of frames.
    pub frames: u32,
    /// Stored value layout.
    pub layout: Layout,
    /// Photometric interpretation.
    pub photometric: String,
}

/// Reads and validates the image pixel module.
pub fn image_header(obj: &Obj) -> Result<ImageHeader> {
    let req = |tag: Tag, name: &str| int(obj, tag).ok_or_else(|| item_err!("missing or invalid {name} ({tag})"));
    let rows = req(tags::ROWS, "Rows")?;
    let columns = req(tags::COLUMNS, "Columns")?;
    let bits_allocated = req(tags::BITS_ALLOCATED, "Bits Allocated")?;
    let bits_stored = req(tags::BITS_STORED, "Bits Stored")?;
    let samples = int(obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1);
    let signed = int(obj, tags::PIXEL_REPRESENTATION).unwrap_or(0) == 1;
    let frames = text(obj, tags::NUMBER_OF_FRAMES).and_then(|s| s.parse::<i64>().ok()).unwrap_or(1);
    if rows <= 0 || columns <= 0 || rows > u32::MAX as i64 || columns > u32::MAX as i64 {
        return Err(item_err!("invalid image size {rows} x {columns}"));
    }
    if !(1..=16).contains(&bits_allocated) || !(1..=16).contains(&bits_stored) {
        if bits_stored > bits_allocated {
            return Err(item_err!("Bits Stored ({bits_stored}) exceeds Bits Allocated ({bits_allocated})"));
        }
        return Err(item_err!("Bits Allocated {bits_allocated} / Bits Stored {bits_stored} not supported (at most 16)"));
    }
    if bits_stored > bits_allocated {
        return Err(item_err!("Bits Stored ({bits_stored}) exceeds Bits Allocated ({bits_allocated})"));
    }
    Ok(ImageHeader {
        rows: rows as u32,
        columns: columns as u32,
        samples: samples.clamp(0, u16::MAX as i64) as u16,
        frames: frames.max(0) as u32,
        layout: Layout { bits_allocated: bits_allocated as u16, bits_stored: bits_stored as u16, signed },
        photometric: text(obj, tags::PHOTOMETRIC_INTERPRETATION).unwrap_or_else(|| "MONOCHROME2".into()),
    })
}

fn lut_from_item(item: &Obj, what: &str) -> Result<Lut> {
    let desc = item.get(tags::LUT_DESCRIPTOR).ok_or_else(|| item_err!("{what}: LUT Descriptor missing"))?;
    let d: Vec<i64> = desc.to_multi_int::<i64>().map_err(|_| item_err!("{what}: unreadable LUT Descriptor"))?;
    let [n, first, bits] = d[..] else { return Err(item_err!("{what}: LUT Descriptor needs 3 values, has {}", d.len())) };
    if !(0..=65535).contains(&n) || !(0..=16).contains(&bits) || !(-32768..=65535).contains(&first) {
        return Err(item_err!("{what}: LUT Descriptor ({n}, {first}, {bits}) is out of range (entries 0 .. 65535, bits 0 .. 16)"));
    }
    let n = if n == 0 { 65536 } else { n as usize };
    // the first mapped value is US or SS depending on the pixel representation; values >= 2^15 read as
    // unsigned are negative when the data is signed: the caller fixes that up
    let bits = if bits == 0 { 16 } else { bits as u16 };
    let el = item.get(tags::LUT_DATA).ok_or_else(|| item_err!("{what}: LUT Data missing"))?;
    let data: Vec<u16> = match el.to_multi_int::<u16>() {
        Ok(v) if v.len() >= n => v[..n].to_vec(),
        _ => {
            let bytes = el.to_bytes().map_err(|_| item_err!("{what}: unreadable LUT Data"))?;
            if bits <= 8 && bytes.len() >= n {
                bytes[..n].iter().map(|&b| b as u16).collect()
            } else if bytes.len() >= 2 * n {
                bytes.chunks_exact(2).take(n).map(|c| u16::from_le_bytes([c[0], c[1]])).collect()
            } else {
                return Err(item_err!("{what}: LUT Data holds fewer than the {n} entries its descriptor says"));
            }
        }
    };
    Ok(Lut { first_mapped: first as i32, bits, data })
}

fn first_item(obj: &Obj, tag: Tag) -> Option<&Obj> {
    obj.get(tag)?.items()?.first()
}

fn signed_first(lut: &mut Lut, signed: bool) {
    if signed && lut.first_mapped >= 32768 {
        lut.first_mapped -= 65536;
    }
}

/// The Modality LUT Sequence (first item) or Rescale Slope/Intercept, or none.
pub fn modality(obj: &Obj, layout: &Layout) -> Result<Modality> {
    if let Some(item) = first_item(obj, tags::MODALITY_LUT_SEQUENCE) {
        let mut lut = lut_from_item(item, "Modality LUT Sequence")?;
        signed_first(&mut lut, layout.signed);
        return Ok(Modality::Lut(lut));
    }
    let slope = floats(obj, tags::RESCALE_SLOPE).map(|v| v[0]);
    let intercept = floats(obj, tags::RESCALE_INTERCEPT).map(|v| v[0]);
    Ok(match (slope, intercept) {
        (None, None) => Modality::None,
        (s, i) => Modality::Rescale { slope: s.unwrap_or(1.0), intercept: i.unwrap_or(0.0) },
    })
}

/// Which VOI transformation the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VoiChoice {
    /// The first Window Center/Width (falls back to the VOI LUT, then none).
    Window,
    /// The first VOI LUT Sequence item (falls back to the window, then none).
    Lut,
    /// No VOI transformation.
    None,
}

/// The VOI transformation to apply, following the user's choice and what the file has.
pub fn voi(obj: &Obj, choice: VoiChoice) -> Result<(Voi, &'static str)> {
    let window = || -> Option<Voi> {
        let c = floats(obj, tags::WINDOW_CENTER)?[0];
        let w = floats(obj, tags::WINDOW_WIDTH)?[0];
        let function = match text(obj, tags::VOILUT_FUNCTION).as_deref() {
            Some("LINEAR_EXACT") => WindowFunction::LinearExact,
            Some("SIGMOID") => WindowFunction::Sigmoid,
            _ => WindowFunction::Linear,
        };
        Some(Voi::Window { center: c, width: w, function })
    };
    let lut = || -> Result<Option<Voi>> {
        match first_item(obj, tags::VOILUT_SEQUENCE) {
            Some(item) => Ok(Some(Voi::Lut(lut_from_item(item, "VOI LUT Sequence")?))),
            None => Ok(None),
        }
    };
    Ok(match choice {
        VoiChoice::None => (Voi::None, "none"),
        VoiChoice::Window => match window() {
            Some(w) => (w, "window"),
            None => lut()?.map(|l| (l, "lut")).unwrap_or((Voi::None, "none")),
        },
        VoiChoice::Lut => match lut()? {
            Some(l) => (l, "lut"),
            None => window().map(|w| (w, "window")).unwrap_or((Voi::None, "none")),
        },
    })
}

/// The file's transfer syntax UID and a readable name.
pub fn transfer_syntax(file: &DefaultDicomObject) -> (String, String) {
    let uid = file.meta().transfer_syntax().trim_end_matches('\0').to_string();
    let name = dicom_transfer_syntax_registry::TransferSyntaxRegistry
        .get(&uid)
        .map(|ts| ts.name().to_string())
        .unwrap_or_else(|| known_name(&uid).unwrap_or("unknown transfer syntax").to_string());
    (uid, name)
}

fn known_name(uid: &str) -> Option<&'static str> {
    Some(match uid {
        "1.2.840.10008.1.2.4.80" => "JPEG-LS Lossless",
        "1.2.840.10008.1.2.4.81" => "JPEG-LS Near-Lossless",
        "1.2.840.10008.1.2.4.100" => "MPEG2 Main Profile",
        _ => return None,
    })
}

use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
