//! `center-crop`: the central `size` x `size` window of an image and its masks or label map.
//!
//! The simplest per-item transform; it is the second stage of the rerun benchmark, matching the DVC
//! peer's `crop` stage, and a cheap downstream stage for incrementality tests. Images smaller than the
//! window keep their full extent on that axis (no padding).

use serde::{Deserialize, Serialize};

use crate::codec;
use super::{Arity, ItemInputs, ItemOutput, ItemSpec, MetaValue, OutFile, ParamError, Stage};
use crate::error::Result;
use crate::item_err;
use crate::npy::{self, Tensor2};

/// Params of `center-crop`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// Side of the square window, in pixels.
    pub size: usize,
}

impl Default for Params {
    fn default() -> Self {
        Params { size: 128 }
    }
}

/// The `center-crop` stage.
pub struct CenterCrop {
    params: Params,
}

impl CenterCrop {
    /// Builds the stage.
    pub fn new(params: Params) -> Result<Self, ParamError> {
        if params.size == 0 {
            return Err(ParamError::at("size", "size must be at least 1"));
        }
        Ok(CenterCrop { params })
    }
}

fn crop<T: Copy>(t: &Tensor2<T>, size: usize) -> Tensor2<T> {
    let (h, w) = (size.min(t.height), size.min(t.width));
    let (y0, x0) = ((t.height - h) / 2, (t.width - w) / 2);
    let mut data = Vec::with_capacity(h * w);
    for y in y0..y0 + h {
        data.extend_from_slice(&t.data[y * t.width + x0..y * t.width + x0 + w]);
    }
    Tensor2 { height: h, width: w, data }
}

impl Stage for CenterCrop {
    fn kind(&self) -> &'static str {
        "center-crop"
    }
    fn version(&self) -> u32 {
        1
    }
    fn arity(&self) -> Arity {
        Arity::Exactly(1)
    }
    fn params(&self) -> serde_json::Value {
        serde_json::to_value(&self.params).expect("params serialise")
    }
    fn items(&self, upstream: &[&[String]]) -> Result<Vec<ItemSpec>> {
        Ok(super::one_per_upstream_item(upstream[0]))
    }
    fn compute(&self, _id: &str, inputs: &ItemInputs) -> Result<ItemOutput> {
        let path = inputs.file("image")?;
        let img = npy::decode_u16(&crate::fsio::read_file(path)?).map_err(|e| item_err!("{}: {e}", path.display()))?;
        let c = crop(&img, self.params.size);
        let mut out = ItemOutput::default();
        out.meta.insert("width".into(), MetaValue::Int(c.width as i64));
        out.meta.insert("height".into(), MetaValue::Int(c.height as i64));
        out.files.push(OutFile { role: "image".into(), ext: "npy", bytes: npy::encode_u16(&c) });
        // masks and label maps are 8-bit PNGs cropped the same way; other outputs (an ingest's DICOM
        // reference) describe the uncropped image and are not passed on
        for (role, p) in inputs.files.iter().filter(|(r, _)| r.starts_with("mask:") || r == "labels") {
            let m = codec::decode_u8(&crate::fsio::read_file(p)?, &p.display().to_string(), u64::MAX, "mask or label map")?;
            out.files.push(OutFile { role: role.clone(), ext: "png", bytes: codec::encode_u8(&crop(&m, self.params.size)) });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crops_the_centre_and_keeps_small_axes() {
        let t = Tensor2 { height: 4, width: 5, data: (0u16..20).collect() };
        let c = crop(&t, 2);
        assert_eq!((c.height, c.width, c.data.clone()), (2, 2, vec![6, 7, 11, 12]));
        let c = crop(&t, 10);
        assert_eq!(c, t);
    }
}
