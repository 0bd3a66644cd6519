//! Per-region mask files shared by the ingest stages: each must exist, be grayscale and match the image
//! size; it is stored as an 8-bit PNG and its covered pixel count goes to the manifest.

use crate::codec::{self, Gray};
use super::{ItemInputs, ItemOutput, MetaValue, OutFile};
use crate::error::Result;
use crate::item_err;
use crate::npy::Tensor2;

/// Reads, checks and stores the masks of `regions` for an image of `(width, height)` named `image`.
pub fn ingest_masks(inputs: &ItemInputs, regions: &[String], (width, height): (usize, usize), image: &str, max_pixels: u64, out: &mut ItemOutput) -> Result<()> {
    for region in regions {
        let path = inputs.file(&format!("mask:{region}"))?;
        let what = path.display().to_string();
        let bytes = crate::fsio::read_file(path)?;
        // 8-bit or 16-bit, a mask holds 0 and one other value: anything else is refused here, naming
        // the file (a 16-bit mask was silently binarised while an 8-bit one failed at merging)
        let mask = match codec::decode_gray(&bytes, &what, max_pixels)? {
            Gray::U8(t) => {
                check_binary(t.data.iter().map(|&v| v as u16), &what)?;
                t
            }
            Gray::U16(t) => {
                check_binary(t.data.iter().copied(), &what)?;
                Tensor2 { height: t.height, width: t.width, data: t.data.iter().map(|&v| if v > 0 { 255 } else { 0 }).collect() }
            }
        };
        if (mask.width, mask.height) != (width, height) {
            return Err(item_err!("{what}: mask is {} x {} but the image {image} is {width} x {height}", mask.width, mask.height));
        }
        let covered = mask.data.iter().filter(|&&v| v > 0).count();
        out.meta.insert(format!("px_{region}"), MetaValue::Int(covered as i64));
        // an 8-bit PNG source is stored as it is: no re-encoding
        let stored = if bytes.len() > 25 && bytes[24] == 8 && bytes[25] == 0 { bytes } else { codec::encode_u8(&mask) };
        out.files.push(OutFile { role: format!("mask:{region}"), ext: "png", bytes: stored });
    }
    Ok(())
}

/// A mask holds 0 and at most one other value.
fn check_binary(values: impl Iterator<Item = u16>, what: &str) -> Result<()> {
    let mut on = None;
    for v in values.filter(|&v| v != 0) {
        match on {
            None => on = Some(v),
            Some(o) if o != v => return Err(item_err!("{what}: mask is not binary (values 0, {o} and {v})")),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_of_either_depth_must_be_binary() {
        assert!(check_binary([0u16, 255, 0, 255].into_iter(), "m").is_ok());
        assert!(check_binary([0u16, 65535, 65535].into_iter(), "m").is_ok());
        let e = check_binary([0u16, 65535, 1000].into_iter(), "m.png").unwrap_err().to_string();
        assert!(e.contains("m.png") && e.contains("not binary") && e.contains("1000"), "{e}");
        assert!(check_binary([3u16, 7].into_iter(), "m").is_err());
    }
}
