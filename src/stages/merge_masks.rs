//! `merge-masks`: an image's per-region binary masks merged into one label map.
//!
//! Driven by a class table ([`crate::classes`]): classes are painted in ascending priority, so where masks
//! overlap the higher priority wins (superposition); pixels no mask covers are the background class.
//! Masks of classes with `smooth = true` are Gaussian-smoothed (`sigma`) and thresholded at 0.5 first, to
//! avoid sudden transitions. Output: the image (the same object, unchanged) and the label map as an 8-bit
//! PNG of class ids, with per-class pixel counts in the manifest (`px_<class>`), from which the training
//! stage derives class weights on the train split.

use std::path::PathBuf;

use image::{GrayImage, Luma};
use serde::{Deserialize, Serialize};

use crate::codec;
use super::{Arity, BuildCtx, ItemInputs, ItemOutput, ItemSpec, MetaValue, OutFile, ParamError, Stage};
use crate::classes::ClassTable;
use crate::error::Result;
use crate::item_err;
use crate::npy::Tensor2;

/// Params of `merge-masks`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// The class table, relative to the pipeline file.
    pub classes: String,
    /// Gaussian sigma (pixels) for classes with `smooth = true`.
    pub sigma: f32,
    /// Master switch: `false` merges every mask as it is.
    pub smoothing: bool,
}

impl Default for Params {
    fn default() -> Self {
        Params { classes: "../configs/classes-phantom.toml".into(), sigma: 2.0, smoothing: true }
    }
}

/// The `merge-masks` stage.
pub struct MergeMasks {
    params: Params,
    table: ClassTable,
}

impl MergeMasks {
    /// Builds the stage, reading and validating the class table.
    pub fn new(params: Params, ctx: &BuildCtx<'_>) -> Result<Self, ParamError> {
        let path: PathBuf = ctx.resolve_path("classes", &params.classes)?;
        let table = ClassTable::load(&path).map_err(|m| ParamError::at("classes", m))?;
        if params.smoothing && !(params.sigma > 0.0 && params.sigma < 100.0) {
            return Err(ParamError::at("sigma", format!("sigma must be in (0, 100), got {}", params.sigma)));
        }
        Ok(MergeMasks { params, table })
    }
}

/// Checks a mask is binary (0 and at most one other value) and returns it as 0/1.
fn binary(t: Tensor2<u8>, what: &str) -> Result<Tensor2<u8>> {
    let mut on = None;
    for &v in &t.data {
        if v != 0 {
            match on {
                None => on = Some(v),
                Some(o) if o != v => return Err(item_err!("{what}: mask is not binary (values 0, {o} and {v})")),
                _ => {}
            }
        }
    }
    Ok(Tensor2 { height: t.height, width: t.width, data: t.data.into_iter().map(|v| (v != 0) as u8).collect() })
}

/// Gaussian smoothing of a 0/1 mask, thresholded at 0.5.
fn smooth(m: &Tensor2<u8>, sigma: f32) -> Tensor2<u8> {
    let img = GrayImage::from_fn(m.width as u32, m.height as u32, |x, y| Luma([m.data[y as usize * m.width + x as usize] * 255]));
    let b = imageproc::filter::gaussian_blur_f32(&img, sigma);
    Tensor2 { height: m.height, width: m.width, data: b.into_raw().into_iter().map(|v| (v >= 128) as u8).collect() }
}

impl Stage for MergeMasks {
    fn kind(&self) -> &'static str {
        "merge-masks"
    }
    fn version(&self) -> u32 {
        2
    }
    fn arity(&self) -> Arity {
        Arity::Exactly(1)
    }
    fn params(&self) -> serde_json::Value {
        // the table's content, not its path: editing it invalidates exactly the merged maps
        serde_json::json!({ "table": self.table, "sigma": self.params.sigma, "smoothing": self.params.smoothing })
    }
    fn items(&self, upstream: &[&[String]]) -> Result<Vec<ItemSpec>> {
        Ok(super::one_per_upstream_item(upstream[0]))
    }
    fn compute(&self, _id: &str, inputs: &ItemInputs) -> Result<ItemOutput> {
        let image_path = inputs.file("image")?;
        let image_bytes = crate::fsio::read_file(image_path)?;
        let img = crate::npy::decode_u16(&image_bytes).map_err(|e| item_err!("{}: {e}", image_path.display()))?;
        let (w, h) = (img.width, img.height);
        let bg = self.table.background();
        let mut labels = vec![bg.id; w * h];
        for class in self.table.merge_order() {
            let region = class.mask_region();
            let Some((_, path)) = inputs.files.iter().find(|(r, _)| r.strip_prefix("mask:") == Some(region)) else {
                if class.name == bg.name {
                    continue; // background needs no mask of its own
                }
                return Err(item_err!("no `{region}` mask for class `{}` (the ingest stage's `regions` must list it)", class.name));
            };
            // masks arrive from the cache, so name the region as well as the object
            let what = format!("mask `{region}` ({})", path.display());
            let mask = codec::decode_u8(&crate::fsio::read_file(path)?, &what, u64::MAX, "mask")?;
            if (mask.width, mask.height) != (w, h) {
                return Err(item_err!("{what}: mask is {} x {} but the image is {w} x {h}", mask.width, mask.height));
            }
            let mut mask = binary(mask, &what)?;
            if self.params.smoothing && class.smooth {
                mask = smooth(&mask, self.params.sigma);
            }
            for (l, &m) in labels.iter_mut().zip(&mask.data) {
                if m != 0 {
                    *l = class.id;
                }
            }
        }
        let mut out = ItemOutput::default();
        for c in &self.table.classes {
            let n = labels.iter().filter(|&&l| l == c.id).count();
            out.meta.insert(format!("px_{}", c.name), MetaValue::Int(n as i64));
        }
        if let Some(subject) = inputs.upstream_meta("subject") {
            out.meta.insert("subject".into(), subject.clone());
        }
        out.meta.insert("width".into(), MetaValue::Int(w as i64));
        out.meta.insert("height".into(), MetaValue::Int(h as i64));
        out.files.push(OutFile { role: "image".into(), ext: "npy", bytes: image_bytes });
        out.files.push(OutFile { role: "labels".into(), ext: "png", bytes: codec::encode_u8(&Tensor2 { height: h, width: w, data: labels }) });
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_binary_masks_are_refused() {
        let t = Tensor2 { height: 1, width: 3, data: vec![0, 255, 128] };
        assert!(binary(t, "m.png").unwrap_err().to_string().contains("not binary (values 0, 255 and 128)"));
        let t = Tensor2 { height: 1, width: 3, data: vec![0, 1, 1] };
        assert_eq!(binary(t, "m").unwrap().data, vec![0, 1, 1]);
    }

    #[test]
    fn smoothing_changes_only_boundaries() {
        // a square with a one-pixel spur: smoothing removes the spur, keeps the interior and the far outside
        let (w, h) = (40, 40);
        let mut data = vec![0u8; w * h];
        for y in 10..30 {
            for x in 10..30 {
                data[y * w + x] = 1;
            }
        }
        data[5 * w + 20] = 1;
        let m = Tensor2 { height: h, width: w, data };
        let s = smooth(&m, 2.0);
        assert_eq!(s.data[5 * w + 20], 0, "isolated pixel smoothed away");
        for y in 0..h {
            for x in 0..w {
                let far_from_edge = (13..27).contains(&x) && (13..27).contains(&y) || !(6..34).contains(&x) || !(2..34).contains(&y);
                if far_from_edge {
                    assert_eq!(s.data[y * w + x], m.data[y * w + x], "changed at ({x}, {y}), away from any boundary");
                }
            }
        }
    }
}
