//! `contact-sheet`: one PNG picture of some items (crops, replicas) beside their label maps coloured
//! from the class table, so a person can see at a glance what the pipeline made.
//!
//! The sample is chosen from the item ids alone (`count` ids evenly spaced in sorted order), so the
//! sheet depends on those items only and is redrawn only when one of them changes.

use image::imageops::{self, FilterType};
use image::{GrayImage, Luma, Rgb, RgbImage};
use serde::{Deserialize, Serialize};

use crate::codec;
use super::{Arity, BuildCtx, InputSpec, ItemInputs, ItemOutput, ItemSpec, MetaValue, OutFile, ParamError, Stage};
use crate::classes::ClassTable;
use crate::error::Result;
use crate::item_err;

/// Params of `contact-sheet`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// Class table for the label colours.
    pub classes: String,
    /// How many items to show.
    pub count: usize,
    /// Tile side in pixels.
    pub tile: u32,
    /// Pairs (image, labels) per row.
    pub columns: u32,
}

impl Default for Params {
    fn default() -> Self {
        Params { classes: "../configs/classes-phantom.toml".into(), count: 16, tile: 192, columns: 4 }
    }
}

/// The `contact-sheet` stage.
pub struct ContactSheet {
    params: Params,
    table: ClassTable,
}

impl ContactSheet {
    /// Builds the stage.
    pub fn new(params: Params, ctx: &BuildCtx<'_>) -> Result<Self, ParamError> {
        let table = ClassTable::load(&ctx.resolve_path("classes", &params.classes)?).map_err(|m| ParamError::at("classes", m))?;
        if params.count == 0 || params.columns == 0 || !(16..=1024).contains(&params.tile) {
            return Err(ParamError::at("count", "count and columns must be at least 1, tile 16 to 1024"));
        }
        Ok(ContactSheet { params, table })
    }
}

impl Stage for ContactSheet {
    fn kind(&self) -> &'static str {
        "contact-sheet"
    }
    fn version(&self) -> u32 {
        1
    }
    fn publishes(&self, role: &str) -> Option<&'static str> {
        (role == "sheet").then_some(".png")
    }
    fn gathers(&self, input: usize) -> bool {
        input == 0
    }
    fn arity(&self) -> Arity {
        Arity::Exactly(1)
    }
    fn params(&self) -> serde_json::Value {
        serde_json::json!({ "table": self.table, "tile": self.params.tile, "columns": self.params.columns })
    }
    fn items(&self, upstream: &[&[String]]) -> Result<Vec<ItemSpec>> {
        let ids = upstream[0];
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let n = self.params.count.min(ids.len());
        let inputs = (0..n).map(|k| InputSpec::Upstream { upstream: 0, item: ids[k * ids.len() / n].clone() }).collect();
        Ok(vec![ItemSpec { id: "sheet".into(), inputs }])
    }
    fn compute(&self, _id: &str, inputs: &ItemInputs) -> Result<ItemOutput> {
        let n = inputs.meta.len() as u32;
        let t = self.params.tile;
        let cols = self.params.columns.min(n.max(1));
        let rows = n.div_ceil(cols);
        let mut sheet = RgbImage::from_pixel(cols * 2 * t + (cols - 1) * 8, rows * t + (rows.saturating_sub(1)) * 8, Rgb([40, 40, 40]));
        let mut colour = [[255u8, 255, 255]; 256];
        for c in &self.table.classes {
            colour[c.id as usize] = c.colour;
        }
        for k in 0..n as usize {
            let get = |role: &str| inputs.files.iter().find(|(r, _)| r == &format!("in{k}/{role}")).map(|(_, p)| p.as_path());
            let (Some(ip), Some(lp)) = (get("image"), get("labels")) else {
                return Err(item_err!("item {} lacks an image or a label map", inputs.meta[k].0));
            };
            let img = crate::npy::decode_u16(&crate::fsio::read_file(ip)?).map_err(|e| item_err!("{}: {e}", ip.display()))?;
            let gray = GrayImage::from_fn(img.width as u32, img.height as u32, |x, y| Luma([(img.data[y as usize * img.width + x as usize] >> 8) as u8]));
            let labels = codec::read_labels(lp)?;
            if img.data.is_empty() || labels.data.is_empty() || (img.width, img.height) != (labels.width, labels.height) {
                return Err(item_err!(
                    "item {}: image {} x {} and label map {} x {} must be the same, non-empty size",
                    inputs.meta[k].0, img.width, img.height, labels.width, labels.height
                ));
            }
            // labels coloured over a dimmed copy of the image
            let over = RgbImage::from_fn(labels.width as u32, labels.height as u32, |x, y| {
                let g = gray.get_pixel(x.min(gray.width() - 1), y.min(gray.height() - 1)).0[0] as u16;
                let c = colour[labels.data[y as usize * labels.width + x as usize] as usize];
                Rgb([((c[0] as u16 * 2 + g) / 3) as u8, ((c[1] as u16 * 2 + g) / 3) as u8, ((c[2] as u16 * 2 + g) / 3) as u8])
            });
            let a = imageops::resize(&gray, t, t, FilterType::Triangle);
            let b = imageops::resize(&over, t, t, FilterType::Nearest);
            let (cx, cy) = ((k as u32 % cols) * (2 * t + 8), (k as u32 / cols) * (t + 8));
            imageops::replace(&mut sheet, &image::DynamicImage::ImageLuma8(a).to_rgb8(), cx as i64, cy as i64);
            imageops::replace(&mut sheet, &b, (cx + t) as i64, cy as i64);
        }
        let mut bytes = Vec::new();
        image::DynamicImage::ImageRgb8(sheet)
            .write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)
            .map_err(|e| item_err!("encoding the contact sheet: {e}"))?;
        let mut out = ItemOutput::default();
        out.meta.insert("shown".into(), MetaValue::Int(n as i64));
        out.files.push(OutFile { role: "sheet".into(), ext: "png", bytes });
        Ok(out)
    }
}
