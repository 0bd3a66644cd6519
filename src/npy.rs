//! Image tensors as `.npy` files.
//!
//! Ingested images are stored as NumPy `.npy` (version 1.0, C order): trivially read by `numpy.load` in
//! the notebooks, cheap to write, and exact for 16-bit data. Only the dtypes mammoflow uses are handled.

use crate::error::Result;
use crate::item_err;

/// Element types stored in tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    /// `uint8`.
    U8,
    /// `uint16`, little endian.
    U16,
}

impl DType {
    fn descr(self) -> &'static str {
        match self {
            DType::U8 => "|u1",
            DType::U16 => "<u2",
        }
    }
    fn size(self) -> usize {
        match self {
            DType::U8 => 1,
            DType::U16 => 2,
        }
    }
}

/// A 2-D (height x width) array of u16 values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tensor2<T> {
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// Row-major data.
    pub data: Vec<T>,
}

fn header(dtype: DType, h: usize, w: usize) -> Vec<u8> {
    header_shape(dtype, &format!("({h}, {w})"))
}

fn header_shape(dtype: DType, shape: &str) -> Vec<u8> {
    let dict = format!("{{'descr': '{}', 'fortran_order': False, 'shape': {shape}, }}", dtype.descr());
    // magic(6) + version(2) + len(2) + dict + padding + '\n' must be a multiple of 64
    let unpadded = 10 + dict.len() + 1;
    let pad = (64 - unpadded % 64) % 64;
    let mut out = Vec::with_capacity(unpadded + pad);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&((dict.len() + pad + 1) as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.extend(std::iter::repeat_n(b' ', pad));
    out.push(b'\n');
    out
}

/// Encodes a u16 image as `.npy` bytes.
pub fn encode_u16(t: &Tensor2<u16>) -> Vec<u8> {
    let mut out = header(DType::U16, t.height, t.width);
    out.reserve(t.data.len() * 2);
    for v in &t.data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Encodes a u8 image as `.npy` bytes.
pub fn encode_u8(t: &Tensor2<u8>) -> Vec<u8> {
    let mut out = header(DType::U8, t.height, t.width);
    out.extend_from_slice(&t.data);
    out
}

/// Encodes an interleaved 8-bit colour image (height x width x channels) as `.npy`.
pub fn encode_u8_hwc(height: usize, width: usize, channels: usize, data: &[u8]) -> Vec<u8> {
    debug_assert_eq!(data.len(), height * width * channels);
    let mut out = header_shape(DType::U8, &format!("({height}, {width}, {channels})"));
    out.extend_from_slice(data);
    out
}

fn parse_header(bytes: &[u8]) -> Result<(DType, usize, usize, usize)> {
    let (dtype, dims, at) = parse_header_nd(bytes)?;
    let [h, w] = dims[..] else { return Err(item_err!("expected a 2-D .npy, got shape {dims:?}")) };
    Ok((dtype, h, w, at))
}

/// dtype, shape and data offset of a `.npy`, the data length checked against the shape.
fn parse_header_nd(bytes: &[u8]) -> Result<(DType, Vec<usize>, usize)> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(item_err!("not a .npy file"));
    }
    let (hlen, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        v => return Err(item_err!("unsupported .npy version {v}")),
    };
    let dict = std::str::from_utf8(bytes.get(start..start + hlen).ok_or_else(|| item_err!("truncated .npy header"))?)
        .map_err(|_| item_err!("bad .npy header"))?;
    let dtype = if dict.contains("'|u1'") || dict.contains("'u1'") {
        DType::U8
    } else if dict.contains("'<u2'") {
        DType::U16
    } else {
        return Err(item_err!("unsupported .npy dtype in {dict}"));
    };
    if dict.contains("'fortran_order': True") {
        return Err(item_err!("Fortran-order .npy is not supported"));
    }
    let shape = dict.split("'shape': (").nth(1).and_then(|s| s.split(')').next()).ok_or_else(|| item_err!("no shape in .npy header"))?;
    let dims: Vec<usize> = shape.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| s.parse().map_err(|_| item_err!("bad .npy shape {shape}"))).collect::<Result<_>>()?;
    let data_at = start + hlen;
    let n = dims.iter().try_fold(dtype.size(), |a, &d| a.checked_mul(d)).ok_or_else(|| item_err!("bad .npy shape {shape}"))?;
    if bytes.len() != data_at.saturating_add(n) {
        return Err(item_err!(".npy size mismatch: {} bytes for shape ({shape})", bytes.len()));
    }
    Ok((dtype, dims, data_at))
}

/// An image of one (gray) or three (RGB) 16-bit channels, interleaved (height x width x channels):
/// what the networks read. 8-bit data is widened by x257, so both depths span the same range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// 1 or 3.
    pub channels: usize,
    /// Row-major, channels interleaved.
    pub data: Vec<u16>,
}

impl Image {
    /// A gray image.
    pub fn gray(t: Tensor2<u16>) -> Image {
        Image { height: t.height, width: t.width, channels: 1, data: t.data }
    }
    /// An 8-bit interleaved RGB image.
    pub fn rgb8(height: usize, width: usize, data: &[u8]) -> Image {
        debug_assert_eq!(data.len(), height * width * 3);
        Image { height, width, channels: 3, data: data.iter().map(|&v| v as u16 * 257).collect() }
    }
    /// One value per pixel (RGB: the ITU-R 601 luma), for pictures.
    pub fn luma(&self) -> Tensor2<u16> {
        let data = match self.channels {
            3 => self.data.chunks_exact(3).map(|p| ((299 * p[0] as u32 + 587 * p[1] as u32 + 114 * p[2] as u32) / 1000) as u16).collect(),
            _ => self.data.clone(),
        };
        Tensor2 { height: self.height, width: self.width, data }
    }
}

/// Decodes an image `.npy`: 2-D uint8 / uint16 (gray) or (height, width, 3) uint8 (RGB, as
/// `ingest-cityscapes` writes).
pub fn decode_image(bytes: &[u8]) -> Result<Image> {
    let (dtype, dims, at) = parse_header_nd(bytes)?;
    match (dtype, &dims[..]) {
        (_, [_, _]) => decode_u16(bytes).map(Image::gray),
        (DType::U8, &[h, w, 3]) => Ok(Image::rgb8(h, w, &bytes[at..])),
        _ => Err(item_err!("expected a gray (h, w) or RGB (h, w, 3) uint8 image .npy, got {dtype:?} {dims:?}")),
    }
}

/// Decodes a u16 `.npy` (a u8 one is widened by x257 so it spans the full 16-bit range).
pub fn decode_u16(bytes: &[u8]) -> Result<Tensor2<u16>> {
    let (dtype, height, width, at) = parse_header(bytes)?;
    let body = &bytes[at..];
    let data = match dtype {
        DType::U16 => body.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect(),
        DType::U8 => body.iter().map(|&v| v as u16 * 257).collect(),
    };
    Ok(Tensor2 { height, width, data })
}

/// Decodes a u8 `.npy`.
pub fn decode_u8(bytes: &[u8]) -> Result<Tensor2<u8>> {
    let (dtype, height, width, at) = parse_header(bytes)?;
    if dtype != DType::U8 {
        return Err(item_err!("expected a uint8 .npy"));
    }
    Ok(Tensor2 { height, width, data: bytes[at..].to_vec() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_decode_gray_and_rgb_and_refuse_other_shapes() {
        let rgb = [255u8, 0, 0, 0, 255, 0, 0, 0, 255, 10, 10, 10];
        let im = decode_image(&encode_u8_hwc(2, 2, 3, &rgb)).unwrap();
        assert_eq!((im.height, im.width, im.channels), (2, 2, 3));
        assert_eq!(im.data[..3], [65535, 0, 0]);
        assert_eq!(im.luma().data, vec![19594, 38469, 7470, 2570]);
        let g = decode_image(&encode_u16(&Tensor2 { height: 1, width: 2, data: vec![5, 6] })).unwrap();
        assert_eq!((g.channels, g.data.clone()), (1, vec![5, 6]));
        assert!(decode_image(&encode_u8_hwc(2, 2, 1, &rgb[..4])).is_err());
        assert!(decode_u16(&encode_u8_hwc(2, 2, 3, &rgb)).is_err());
    }

    #[test]
    fn roundtrip_u16_and_u8() {
        let t = Tensor2 { height: 2, width: 3, data: vec![0u16, 1, 65535, 300, 7, 9] };
        let b = encode_u16(&t);
        assert_eq!(b.len() % 64, 6 * 2, "header is padded to 64 bytes");
        assert_eq!(decode_u16(&b).unwrap(), t);
        let m = Tensor2 { height: 1, width: 2, data: vec![0u8, 255] };
        assert_eq!(decode_u8(&encode_u8(&m)).unwrap(), m);
        assert_eq!(decode_u16(&encode_u8(&m)).unwrap().data, vec![0, 65535]);
        assert!(decode_u16(&b[..b.len() - 1]).is_err());
        assert!(decode_u16(b"garbage").is_err());
    }
}
