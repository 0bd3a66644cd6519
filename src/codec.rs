//! Grayscale PNG and PGM, decoded and encoded, with errors that name the file and the problem: masks and
//! label maps are 8-bit PNGs, source images 8- or 16-bit PNGs or PGMs.

use std::io::Cursor;
use std::path::Path;

use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{DynamicImage, ExtendedColorType, ImageEncoder, ImageFormat, ImageReader};

use crate::error::Result;
use crate::item_err;
use crate::npy::Tensor2;

/// A decoded grayscale image, 8 or 16 bits per sample.
pub enum Gray {
    /// 8-bit samples.
    U8(Tensor2<u8>),
    /// 16-bit samples.
    U16(Tensor2<u16>),
}

impl Gray {
    /// 16-bit samples, 8-bit ones scaled by 257 (0..255 -> 0..65535).
    pub fn into_u16(self) -> Tensor2<u16> {
        match self {
            Gray::U16(t) => t,
            Gray::U8(t) => Tensor2 { height: t.height, width: t.width, data: t.data.iter().map(|&v| v as u16 * 257).collect() },
        }
    }

    /// `(width, height)`.
    pub fn dims(&self) -> (usize, usize) {
        match self {
            Gray::U8(t) => (t.width, t.height),
            Gray::U16(t) => (t.width, t.height),
        }
    }
}

/// Decodes a grayscale PNG or PGM (binary or ASCII PNM, as mini-MIAS ships) from bytes; `what` names the
/// source in errors. Colour images are refused. `max_pixels` is checked from the header before any pixel
/// buffer is allocated.
pub fn decode_gray(bytes: &[u8], what: &str, max_pixels: u64) -> Result<Gray> {
    let format = match image::guess_format(bytes) {
        Ok(f @ (ImageFormat::Png | ImageFormat::Pnm)) => f,
        Ok(other) => return Err(item_err!("{what}: {other:?} images are not supported (PNG or PGM)")),
        Err(_) => return Err(item_err!("{what}: not a readable PNG or PGM image (unrecognised header)")),
    };
    let reader = ImageReader::with_format(Cursor::new(bytes), format);
    let (w, h) = ImageReader::with_format(Cursor::new(bytes), format)
        .into_dimensions()
        .map_err(|e| item_err!("{what}: not a readable {format:?} image: {e}"))?;
    if (w as u64) * (h as u64) > max_pixels {
        return Err(item_err!("{what}: {w} x {h} pixels exceeds the limit of {max_pixels} pixels (param `max_pixels`)"));
    }
    let img = reader.decode().map_err(|e| item_err!("{what}: cannot decode {format:?} image (truncated or corrupt?): {e}"))?;
    let (width, height) = (img.width() as usize, img.height() as usize);
    Ok(match img {
        DynamicImage::ImageLuma8(b) => Gray::U8(Tensor2 { height, width, data: b.into_raw() }),
        DynamicImage::ImageLuma16(b) => Gray::U16(Tensor2 { height, width, data: b.into_raw() }),
        other => {
            return Err(item_err!("{what}: expected a grayscale image, got {:?}", other.color()));
        }
    })
}

/// Encodes an 8-bit grayscale image as PNG (fast compression: masks compress well anyway).
pub fn encode_u8(t: &Tensor2<u8>) -> Vec<u8> {
    let mut out = Vec::new();
    PngEncoder::new_with_quality(&mut out, CompressionType::Fast, FilterType::Adaptive)
        .write_image(&t.data, t.width as u32, t.height as u32, ExtendedColorType::L8)
        .expect("encoding a well-formed buffer into memory cannot fail");
    out
}

/// Encodes a 16-bit grayscale image as PNG.
pub fn encode_u16(t: &Tensor2<u16>) -> Vec<u8> {
    let mut raw = Vec::with_capacity(t.data.len() * 2);
    for v in &t.data {
        raw.extend_from_slice(&v.to_ne_bytes());
    }
    let mut out = Vec::new();
    PngEncoder::new_with_quality(&mut out, CompressionType::Fast, FilterType::Adaptive)
        .write_image(&raw, t.width as u32, t.height as u32, ExtendedColorType::L16)
        .expect("encoding a well-formed buffer into memory cannot fail");
    out
}

/// An 8-bit label map (PNG of class ids).
pub fn read_labels(path: &Path) -> Result<Tensor2<u8>> {
    decode_u8(&crate::fsio::read_file(path)?, &path.display().to_string(), u64::MAX, "label map")
}

/// [`decode_gray`] for 8-bit data (a mask, label ids): a 16-bit file is refused, naming what was expected.
pub fn decode_u8(bytes: &[u8], what: &str, max_pixels: u64, expected: &str) -> Result<Tensor2<u8>> {
    match decode_gray(bytes, what, max_pixels)? {
        Gray::U8(t) => Ok(t),
        Gray::U16(_) => Err(item_err!("{what}: expected an 8-bit {expected}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrips_and_refuses_garbage_and_huge() {
        let t = Tensor2 { height: 2, width: 2, data: vec![0u16, 1000, 65535, 7] };
        match decode_gray(&encode_u16(&t), "t", 100).unwrap() {
            Gray::U16(d) => assert_eq!(d, t),
            Gray::U8(_) => panic!("16-bit PNG decoded as 8-bit"),
        }
        let e = decode_gray(b"not a png", "x.png", 100).err().unwrap().to_string();
        assert!(e.starts_with("x.png: not a readable PNG or PGM"), "{e}");
        let pgm = b"P5\n2 1\n255\n\x00\xff";
        match decode_gray(pgm, "m.pgm", 100).unwrap() {
            Gray::U8(t) => assert_eq!(t.data, vec![0, 255]),
            Gray::U16(_) => panic!("8-bit PGM"),
        }
        let e = decode_gray(&encode_u16(&t), "big.png", 3).err().unwrap().to_string();
        assert!(e.contains("exceeds the limit"), "{e}");
    }
}
