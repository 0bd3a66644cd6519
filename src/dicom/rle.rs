//! RLE Lossless (PS3.5 Annex G) decoding straight into samples.
//!
//! dicom-rs decodes RLE into an interleaved byte buffer that we then re-read; decoding each PackBits
//! segment into its byte plane and combining the planes into samples in one pass is about three times
//! faster on a 12-megapixel 16-bit mammogram, which is most of a CBIS-DDSM file's ingest time.

use crate::error::Result;
use crate::item_err;

/// Decodes one PackBits segment into the samples: the high byte plane (`HIGH`) sets `sample = b << 8`,
/// the low one then ORs its byte in, so the planes are combined without a buffer of their own.
fn unpack<const HIGH: bool>(seg: &[u8], out: &mut [u16]) -> Result<()> {
    let put = |dst: &mut [u16], src: &[u8]| {
        if HIGH {
            dst.iter_mut().zip(src).for_each(|(d, &b)| *d = (b as u16) << 8);
        } else {
            dst.iter_mut().zip(src).for_each(|(d, &b)| *d |= b as u16);
        }
    };
    let (mut i, mut o) = (0usize, 0usize);
    while o < out.len() {
        let Some(&h) = seg.get(i) else { return Err(item_err!("RLE segment ends after {o} of {} bytes", out.len())) };
        i += 1;
        let h = h as i8;
        if h >= 0 {
            let n = h as usize + 1;
            let src = seg.get(i..i + n).ok_or_else(|| item_err!("RLE literal run past the end of its segment"))?;
            let dst = out.get_mut(o..o + n).ok_or_else(|| item_err!("RLE literal run past the end of the row data"))?;
            put(dst, src);
            i += n;
            o += n;
        } else if h != -128 {
            let n = (1 - h as i32) as usize;
            let v = *seg.get(i).ok_or_else(|| item_err!("RLE replicate run without its byte"))? as u16;
            let dst = out.get_mut(o..o + n).ok_or_else(|| item_err!("RLE replicate run past the end of the row data"))?;
            if HIGH {
                dst.fill(v << 8);
            } else {
                dst.iter_mut().for_each(|d| *d |= v);
            }
            i += 1;
            o += n;
        }
    }
    Ok(())
}

/// Decodes a one-frame RLE fragment of `count` samples of 8 or 16 bits (one sample per pixel) into u16
/// samples (8-bit samples widened as values, not scaled).
pub fn decode(fragment: &[u8], count: usize, bits_allocated: u16) -> Result<Vec<u16>> {
    let planes = (bits_allocated / 8) as usize;
    if fragment.len() < 64 {
        return Err(item_err!("RLE header truncated ({} bytes)", fragment.len()));
    }
    let word = |k: usize| u32::from_le_bytes([fragment[4 * k], fragment[4 * k + 1], fragment[4 * k + 2], fragment[4 * k + 3]]) as usize;
    let n = word(0);
    if n != planes {
        return Err(item_err!("RLE header has {n} segments, {bits_allocated}-bit grayscale needs {planes}"));
    }
    let offsets: Vec<usize> = (1..=n).map(word).collect();
    let segment = |k: usize| -> Result<&[u8]> {
        let start = offsets[k];
        let end = if k + 1 < n { offsets[k + 1] } else { fragment.len() };
        if start < 64 || start > end || end > fragment.len() {
            return Err(item_err!("RLE segment {k} offsets {start}..{end} are outside the {}-byte fragment", fragment.len()));
        }
        Ok(&fragment[start..end])
    };
    let mut out = vec![0u16; count];
    if planes == 1 {
        unpack::<false>(segment(0)?, &mut out)?;
    } else {
        unpack::<true>(segment(0)?, &mut out)?;
        unpack::<false>(segment(1)?, &mut out)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::npy::Tensor2;

    #[test]
    fn decodes_what_the_writer_encodes() {
        let t = Tensor2 { height: 3, width: 5, data: vec![0, 0, 0, 65535, 1, 256, 257, 258, 258, 258, 9, 9, 9, 9, 9] };
        let frag = crate::dicom::write::rle_encode(&t);
        assert_eq!(decode(&frag, 15, 16).unwrap(), t.data);
        assert!(decode(&frag[..frag.len() - 3], 15, 16).is_err(), "truncated segment");
        assert!(decode(&frag[..40], 15, 16).is_err());
        assert!(decode(&frag, 15, 8).unwrap_err().to_string().contains("needs 1"));
    }
}
