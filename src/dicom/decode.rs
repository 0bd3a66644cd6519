//! From a DICOM file to a 16-bit image and metadata, with every failure a clear message.
//!
//! Decoding goes through dicom-pixeldata (native, deflate, RLE, JPEG baseline / lossless, JPEG 2000 via
//! the pure-Rust openjp2) for the stored values only: its own LUT conversion refuses signed and
//! modality-LUT files, so the LUT chain is ours ([`super::pixels`]). JPEG-LS, which dicom-rs decodes only
//! through the C++ CharLS, goes to our own decoder ([`super::jpegls`]), and RLE to a faster one of ours
//! ([`super::rle`]).

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;

use dicom_core::value::Value;
use dicom_dictionary_std::tags;
use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
use dicom_object::file::ReadPreamble;
use dicom_object::{DefaultDicomObject, OpenFileOptions};
use dicom_pixeldata::PixelDecoder;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use super::header::{self, ImageHeader, VoiChoice};
use super::pixels::Pipeline;
use crate::error::Result;
use crate::item_err;
use crate::store::MetaValue;
use crate::npy::Tensor2;

/// Options of the decoder.
#[derive(Debug, Clone, Copy)]
pub struct DecodeOptions {
    /// Which VOI transformation to apply.
    pub voi: VoiChoice,
    /// Refuse images with more pixels than this, before decoding.
    pub max_pixels: u64,
}

/// A decoded image with its metadata columns.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// The 16-bit output image.
    pub image: Tensor2<u16>,
    /// Metadata columns (no identifying values).
    pub meta: BTreeMap<String, MetaValue>,
}

/// Opens a DICOM file from memory; `what` names it in errors.
pub fn open_bytes(bytes: &[u8], what: &str) -> Result<DefaultDicomObject> {
    if bytes.is_empty() {
        return Err(item_err!("{what}: empty file (0 bytes)"));
    }
    check_nesting(bytes, what)?;
    OpenFileOptions::new()
        .read_preamble(if bytes.len() > 132 && &bytes[128..132] == b"DICM" { ReadPreamble::Always } else { ReadPreamble::Never })
        .from_reader(Cursor::new(bytes))
        .map_err(|e| {
            if bytes.starts_with(b"\x89PNG") {
                item_err!("{what}: not a DICOM file (it is a PNG image)")
            } else if bytes.len() < 132 || &bytes[128..132] != b"DICM" {
                item_err!("{what}: not a DICOM file (no DICM marker at byte 128): {e}")
            } else {
                item_err!("{what}: cannot read DICOM data set (truncated or corrupt?): {e}")
            }
        })
}

/// The deepest nesting of sequences accepted. Real files nest a handful of levels; dicom-rs builds
/// nested sequences recursively, so a file nesting thousands of levels deep would overflow a worker's
/// stack and abort the whole run.
pub const MAX_NESTING: usize = 64;

/// Refuses a file whose sequences nest deeper than [`MAX_NESTING`], walking its tokens with dicom-rs's
/// iterative reader (no recursion) up to the Pixel Data. Anything it cannot read is left for
/// [`open_bytes`] to report.
fn check_nesting(bytes: &[u8], what: &str) -> Result<()> {
    use dicom_parser::dataset::{DataSetReader, DataToken};
    if bytes.len() <= 132 || &bytes[128..132] != b"DICM" {
        return Ok(());
    }
    let mut cur = Cursor::new(&bytes[128..]);
    let Ok(meta) = dicom_object::meta::FileMetaTable::from_reader(&mut cur) else { return Ok(()) };
    let Some(ts) = TransferSyntaxRegistry.get(meta.transfer_syntax().trim_end_matches('\0')) else { return Ok(()) };
    let rest = &bytes[128 + cur.position() as usize..];
    let deflated = ts.uid() == "1.2.840.10008.1.2.1.99";
    let source: Box<dyn std::io::Read> = if deflated { Box::new(flate2::read::DeflateDecoder::new(rest)) } else { Box::new(rest) };
    let explicit_le = dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN.erased();
    let Ok(reader) = DataSetReader::new_with_ts(source, if deflated { &explicit_le } else { ts }) else { return Ok(()) };
    let mut depth = 0usize;
    for token in reader {
        match token {
            Ok(DataToken::SequenceStart { .. } | DataToken::PixelSequenceStart) => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(item_err!("{what}: sequences nest more than {MAX_NESTING} levels deep (refused: no mammogram needs that)"));
                }
            }
            Ok(DataToken::SequenceEnd) => depth = depth.saturating_sub(1),
            Ok(DataToken::ElementHeader(h)) if depth == 0 && h.tag == tags::PIXEL_DATA => break,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    Ok(())
}

/// RLE Lossless: decoded by [`super::rle`].
const RLE_LOSSLESS: &str = "1.2.840.10008.1.2.5";

/// JPEG Extended (Process 2 & 4): 12-bit lossy.
const JPEG_EXTENDED: &str = "1.2.840.10008.1.2.4.51";

const JPEG_LS: [&str; 2] = ["1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"];

/// Decodes the first (only) frame of an opened file.
pub fn decode(file: &DefaultDicomObject, what: &str, opts: DecodeOptions, key: &[u8; 32]) -> Result<Decoded> {
    let obj: &dicom_object::InMemDicomObject = file;
    let h: ImageHeader = header::image_header(obj).map_err(|e| item_err!("{what}: {e}"))?;
    let (ts_uid, ts_name) = header::transfer_syntax(file);
    let pixels = h.rows as u64 * h.columns as u64 * h.frames.max(1) as u64 * h.samples.max(1) as u64;
    if pixels > opts.max_pixels {
        return Err(item_err!("{what}: {} x {} x {} frame(s) exceeds the limit of {} pixels (param `max_pixels`)", h.rows, h.columns, h.frames, opts.max_pixels));
    }
    if h.frames > 1 {
        return Err(item_err!("{what}: multi-frame images ({} frames) are not supported: mammograms are single-frame; split the frames first", h.frames));
    }
    if h.samples != 1 {
        return Err(item_err!("{what}: expected a grayscale image (Samples per Pixel 1), got {} samples ({})", h.samples, h.photometric));
    }
    let invert = match h.photometric.as_str() {
        "MONOCHROME1" => true,
        "MONOCHROME2" => false,
        other => return Err(item_err!("{what}: photometric interpretation {other} is not grayscale")),
    };
    let pixel_el = obj.get(tags::PIXEL_DATA).ok_or_else(|| item_err!("{what}: no Pixel Data element"))?;
    let count = (h.rows as usize) * (h.columns as usize);
    let modality = header::modality(obj, &h.layout).map_err(|e| item_err!("{what}: {e}"))?;
    let (voi, voi_used) = header::voi(obj, opts.voi).map_err(|e| item_err!("{what}: {e}"))?;
    let pipeline = Pipeline { layout: h.layout, modality, voi, invert };
    h.layout.validate().map_err(|e| item_err!("{what}: {e}"))?;

    // one frame's fragments, borrowed when there is a single one (the usual case)
    let fragments = || -> Result<std::borrow::Cow<'_, [u8]>> {
        let Value::PixelSequence(seq) = pixel_el.value() else {
            return Err(item_err!("{what}: {ts_name} transfer syntax but the pixel data is not encapsulated"));
        };
        Ok(match seq.fragments() {
            [one] => std::borrow::Cow::Borrowed(one.as_slice()),
            many => std::borrow::Cow::Owned(many.iter().flat_map(|f| f.iter().copied()).collect()),
        })
    };
    let out = if JPEG_LS.contains(&ts_uid.as_str()) {
        let img = super::jpegls::decode(&fragments()?, opts.max_pixels).map_err(|e| item_err!("{what}: JPEG-LS: {e}"))?;
        if (img.width, img.height) != (h.columns, h.rows) {
            return Err(item_err!("{what}: JPEG-LS stream is {} x {} but the header says {} x {}", img.width, img.height, h.columns, h.rows));
        }
        pipeline.apply_samples(img.data, count)
    } else if ts_uid == RLE_LOSSLESS {
        let samples = super::rle::decode(&fragments()?, count, h.layout.bits_allocated).map_err(|e| item_err!("{what}: RLE: {e}"))?;
        pipeline.apply_samples(samples, count)
    } else {
        match TransferSyntaxRegistry.get(&ts_uid) {
            None => return Err(item_err!("{what}: unsupported transfer syntax {ts_uid} ({ts_name})")),
            Some(ts) if !ts.can_decode_all() => {
                return Err(item_err!("{what}: transfer syntax {ts_uid} ({ts_name}) cannot be decoded by this build"));
            }
            Some(_) if ts_uid == JPEG_EXTENDED && h.layout.bits_stored > 8 => {
                return Err(item_err!(
                    "{what}: {ts_name} ({ts_uid}) with {}-bit samples cannot be decoded: the pure-Rust JPEG decoder supports 8-bit sequential and lossless JPEG only (12-bit sample precision unsupported)",
                    h.layout.bits_stored
                ));
            }
            Some(_) => {}
        }
        let data = file.decode_pixel_data().map_err(|e| item_err!("{what}: cannot decode pixel data ({ts_name}, {ts_uid}): {}", chain(&e)))?.into_data();
        pipeline.apply(&data, count)
    }
    .map_err(|e| item_err!("{what}: {e}"))?;
    let mut meta = BTreeMap::new();
    super::meta::collect(obj, &h, (&ts_uid, &ts_name), key, &mut meta);
    meta.insert("voi".into(), MetaValue::Str(voi_used.into()));
    Ok(Decoded { image: Tensor2 { height: h.rows as usize, width: h.columns as usize, data: out }, meta })
}

/// An error with all its sources, `outer: inner: root`, so the codec's own reason is shown.
fn chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        cur = s.source();
    }
    parts.join(": ")
}

/// Reads and decodes a file; the path names it in errors.
pub fn decode_path(path: &Path, opts: DecodeOptions, key: &[u8; 32]) -> Result<Decoded> {
    let what = path.display().to_string();
    let bytes = crate::fsio::read_file(path)?;
    let file = open_bytes(&bytes, &what)?;
    drop(bytes);
    decode(&file, &what, opts, key)
}
