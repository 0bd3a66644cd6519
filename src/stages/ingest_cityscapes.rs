//! `ingest-cityscapes`: the Cityscapes folder layout, which the study used to validate its networks.
//!
//! `leftImg8bit/{split}/{city}/{name}_leftImg8bit.png` with `gtFine/{split}/{city}/{name}_gtFine_labelIds.png`;
//! item id `{city}/{name}`. Label ids are mapped to the 19 training classes (everything else is 255 =
//! ignore). Cityscapes' licence forbids redistribution, so the data set is read where the user keeps it.
//! The `subject` of an image is its city (`split` keeps a city's images, frames of the same drives,
//! on one side; the item id, which names the city, is part of the key).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::codec;
use super::{Arity, BuildCtx, InputSpec, ItemInputs, ItemOutput, ItemSpec, MetaValue, OutFile, ParamError, Stage};
use crate::error::Result;
use crate::item_err;
use crate::npy::{self, Tensor2};

/// Cityscapes label id -> train id (19 classes), 255 = ignore.
pub const TRAIN_IDS: [(u8, u8); 19] = [
    (7, 0), (8, 1), (11, 2), (12, 3), (13, 4), (17, 5), (19, 6), (20, 7), (21, 8), (22, 9),
    (23, 10), (24, 11), (25, 12), (26, 13), (27, 14), (28, 15), (31, 16), (32, 17), (33, 18),
];

fn train_id_table() -> [u8; 256] {
    let mut t = [255u8; 256];
    for (label, train) in TRAIN_IDS {
        t[label as usize] = train;
    }
    t
}

/// Params of `ingest-cityscapes`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// The Cityscapes root (holding `leftImg8bit/` and `gtFine/`).
    pub root: String,
    /// `train`, `val` or `test`.
    pub split: String,
    /// Refuse images with more pixels than this.
    pub max_pixels: u64,
}

impl Default for Params {
    fn default() -> Self {
        Params { root: "${MAMMOFLOW_DATA}/cityscapes".into(), split: "train".into(), max_pixels: super::DEFAULT_MAX_PIXELS }
    }
}

/// The `ingest-cityscapes` stage.
pub struct IngestCityscapes {
    params: Params,
    root: PathBuf,
}

impl IngestCityscapes {
    /// Builds the stage.
    pub fn new(params: Params, ctx: &BuildCtx<'_>) -> Result<Self, ParamError> {
        let root = ctx.resolve_path("root", &params.root)?;
        Ok(IngestCityscapes { params, root })
    }
}

impl Stage for IngestCityscapes {
    fn kind(&self) -> &'static str {
        "ingest-cityscapes"
    }
    fn version(&self) -> u32 {
        2
    }
    fn arity(&self) -> Arity {
        Arity::Exactly(0)
    }
    fn params(&self) -> serde_json::Value {
        serde_json::json!({ "max_pixels": self.params.max_pixels })
    }
    fn items(&self, _upstream: &[&[String]]) -> Result<Vec<ItemSpec>> {
        let images = self.root.join("leftImg8bit").join(&self.params.split);
        let cities = std::fs::read_dir(&images).map_err(|e| crate::error::Error::io("list Cityscapes images in", &images, e))?;
        let mut items = Vec::new();
        for city in cities.filter_map(|e| e.ok()).filter(|e| e.path().is_dir()) {
            let city_name = city.file_name().to_string_lossy().into_owned();
            for f in std::fs::read_dir(city.path()).map_err(|e| crate::error::Error::io("list", city.path(), e))?.filter_map(|e| e.ok()) {
                let name = f.file_name().to_string_lossy().into_owned();
                let Some(base) = name.strip_suffix("_leftImg8bit.png") else { continue };
                let label = self.root.join("gtFine").join(&self.params.split).join(&city_name).join(format!("{base}_gtFine_labelIds.png"));
                items.push(ItemSpec {
                    id: format!("{city_name}/{base}"),
                    inputs: vec![InputSpec::Source { role: "image".into(), path: f.path() }, InputSpec::Source { role: "labels".into(), path: label }],
                });
            }
        }
        items.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(items)
    }
    fn compute(&self, id: &str, inputs: &ItemInputs) -> Result<ItemOutput> {
        let ip = inputs.file("image")?;
        let what = ip.display().to_string();
        let bytes = crate::fsio::read_file(ip)?;
        // the size from the header first: a small file may declare a huge image (a decompression bomb)
        let reader = image::ImageReader::with_format(std::io::Cursor::new(&bytes[..]), image::ImageFormat::Png);
        let (w, h) = reader.into_dimensions().map_err(|e| item_err!("{what}: cannot read the PNG header: {e}"))?;
        if (w as u64) * (h as u64) > self.params.max_pixels {
            return Err(item_err!("{what}: {w} x {h} pixels exceeds the limit of {} pixels (param `max_pixels`)", self.params.max_pixels));
        }
        let img = image::load_from_memory_with_format(&bytes, image::ImageFormat::Png).map_err(|e| item_err!("{what}: cannot decode PNG: {e}"))?;
        let (w, h) = (img.width() as usize, img.height() as usize);
        let rgb = img.to_rgb8();
        let lp = inputs.file("labels")?;
        let lwhat = lp.display().to_string();
        let labels = codec::decode_u8(&crate::fsio::read_file(lp)?, &lwhat, self.params.max_pixels, "label id map")?;
        if (labels.width, labels.height) != (w, h) {
            return Err(item_err!("{lwhat}: labels are {} x {} but the image is {w} x {h}", labels.width, labels.height));
        }
        let table = train_id_table();
        let train = Tensor2 { height: h, width: w, data: labels.data.iter().map(|&l| table[l as usize]).collect() };
        let ignored = train.data.iter().filter(|&&v| v == 255).count();
        let mut out = ItemOutput::default();
        out.files.push(OutFile { role: "image".into(), ext: "npy", bytes: npy::encode_u8_hwc(h, w, 3, rgb.as_raw()) });
        out.files.push(OutFile { role: "labels".into(), ext: "png", bytes: codec::encode_u8(&train) });
        out.meta.insert("width".into(), MetaValue::Int(w as i64));
        out.meta.insert("height".into(), MetaValue::Int(h as i64));
        out.meta.insert("px_ignore".into(), MetaValue::Int(ignored as i64));
        let city = id.split('/').next().unwrap_or(id);
        out.meta.insert("subject".into(), MetaValue::Str(city.to_string()));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_ids_map_to_19_train_ids_and_ignore() {
        let t = train_id_table();
        assert_eq!((t[7], t[26], t[33], t[0], t[6], t[34], t[255]), (0, 13, 18, 255, 255, 255, 255));
        assert_eq!(t.iter().filter(|&&v| v != 255).count(), 19);
    }
}
