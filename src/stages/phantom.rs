//! `phantom`: the embedded default data set, generated, so the quickstart needs no download and ships no
//! patient data. Each item is one synthetic mammogram (a 16-bit grayscale PNG, or a real DICOM MG file:
//! MONOCHROME1 or 2, 12-16 bits stored, uncompressed or RLE, with window and laterality/view tags) with one binary PNG mask per
//! anatomical region (see [`super::phantom_anatomy`]), fully determined by the pipeline seed and the item
//! index.

use serde::{Deserialize, Serialize};

use crate::codec;
use super::{Arity, BuildCtx, ItemInputs, ItemOutput, ItemSpec, MetaValue, OutFile, ParamError, Stage};
use crate::dicom::write::{write_mg, MgSpec};
use crate::error::Result;
use crate::item_err;
use super::phantom_anatomy::{self, PhantomSpec};
use crate::npy::Tensor2;

/// Params of `phantom`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// Number of images.
    pub count: usize,
    /// Image width in pixels.
    pub width: u32,
    /// Image height in pixels.
    pub height: u32,
    /// Bits stored (12 to 16); values use the range 0 .. 2^bits - 1.
    pub bits: u8,
    /// `png` (16-bit grayscale PNG) or `dicom` (a DICOM MG file).
    pub format: Format,
    /// DICOM only: `MONOCHROME2`, `MONOCHROME1`, or `alternate` (even items 2, odd items 1).
    pub photometric: Photometric,
    /// DICOM only: `none` (explicit VR little endian) or `rle` (RLE Lossless).
    pub compression: Compression,
    /// Write the regions as one QuPath-style GeoJSON export per image (role `annotations`, the masks
    /// traced to polygons) instead of one mask PNG per region: the input of `ingest-png` with
    /// `masks_from = "qupath"`.
    pub annotations: bool,
}

/// Output file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// 16-bit grayscale PNG.
    Png,
    /// DICOM Digital Mammography (For Presentation).
    Dicom,
}

/// Photometric interpretation of DICOM output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum Photometric {
    /// Dense is bright.
    #[serde(rename = "MONOCHROME2")]
    Monochrome2,
    /// Dense is dark (stored inverted).
    #[serde(rename = "MONOCHROME1")]
    Monochrome1,
    /// Even items MONOCHROME2, odd items MONOCHROME1.
    #[serde(rename = "alternate")]
    Alternate,
}

/// DICOM pixel data encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Uncompressed.
    None,
    /// RLE Lossless.
    Rle,
}

impl Default for Params {
    fn default() -> Self {
        Params { count: 24, width: 768, height: 1024, bits: 16, format: Format::Png, photometric: Photometric::Monochrome2, compression: Compression::None, annotations: false }
    }
}

/// The `phantom` stage.
pub struct PhantomStage {
    params: Params,
    seed: u64,
}

impl PhantomStage {
    /// Builds the stage.
    pub fn new(params: Params, ctx: &BuildCtx<'_>) -> Result<Self, ParamError> {
        if !(12..=16).contains(&params.bits) {
            return Err(ParamError::at("bits", format!("bits must be 12 to 16, got {}", params.bits)));
        }
        if params.width < 64 || params.height < 64 {
            return Err(ParamError::at("width", "width and height must be at least 64"));
        }
        if params.count > 1_000_000 {
            return Err(ParamError::at("count", "count must be at most 1000000"));
        }
        Ok(PhantomStage { params, seed: ctx.seed })
    }
}

/// Item ids sort in index order: `phantom_0000`, `phantom_0001`, ...
fn item_id(i: usize) -> String {
    format!("phantom_{i:04}")
}

impl Stage for PhantomStage {
    fn kind(&self) -> &'static str {
        "phantom"
    }
    fn version(&self) -> u32 {
        1
    }
    fn arity(&self) -> Arity {
        Arity::Exactly(0)
    }
    fn params(&self) -> serde_json::Value {
        // `count` only says how many items exist; an item's pixels depend on the rest, so growing the set
        // computes only the new items.
        let mut v = serde_json::json!({ "width": self.params.width, "height": self.params.height, "bits": self.params.bits, "seed": self.seed, "format": self.params.format });
        if self.params.format == Format::Dicom {
            v["photometric"] = serde_json::to_value(self.params.photometric).expect("serialises");
            v["compression"] = serde_json::to_value(self.params.compression).expect("serialises");
        }
        if self.params.annotations {
            v["annotations"] = true.into();
        }
        v
    }
    fn items(&self, _upstream: &[&[String]]) -> Result<Vec<ItemSpec>> {
        Ok((0..self.params.count).map(|i| ItemSpec { id: item_id(i), inputs: Vec::new() }).collect())
    }
    fn compute(&self, id: &str, _inputs: &ItemInputs) -> Result<ItemOutput> {
        let index: u64 = id.strip_prefix("phantom_").and_then(|s| s.parse().ok()).ok_or_else(|| item_err!("bad phantom item id `{id}`"))?;
        let spec = PhantomSpec { width: self.params.width, height: self.params.height, bits: self.params.bits };
        let p = phantom_anatomy::generate(&spec, self.seed, index);
        let (w, h) = (p.image.width() as usize, p.image.height() as usize);
        let mut out = ItemOutput::default();
        let image = Tensor2 { height: h, width: w, data: p.image.into_raw() };
        match self.params.format {
            Format::Png => out.files.push(OutFile { role: "image".into(), ext: "png", bytes: codec::encode_u16(&image) }),
            Format::Dicom => {
                let monochrome1 = match self.params.photometric {
                    Photometric::Monochrome1 => true,
                    Photometric::Monochrome2 => false,
                    Photometric::Alternate => index % 2 == 1,
                };
                let full = (1u32 << self.params.bits) as f64;
                let spec = MgSpec {
                    monochrome1,
                    bits_stored: self.params.bits,
                    rle: self.params.compression == Compression::Rle,
                    window: Some((full / 2.0, full)),
                    laterality: p.laterality,
                    view: p.view.to_string(),
                    patient_id: format!("PHANTOM-{}-{index:04}", self.seed),
                    uid_seed: self.seed.wrapping_mul(1_000_003).wrapping_add(index),
                    pixel_spacing: 0.1,
                };
                out.files.push(OutFile { role: "image".into(), ext: "dcm", bytes: write_mg(&image, &spec)? });
                out.meta.insert("photometric".into(), MetaValue::Str(if monochrome1 { "MONOCHROME1" } else { "MONOCHROME2" }.into()));
            }
        }
        let mut shapes = Vec::new();
        for (region, mask) in p.masks {
            let covered = mask.as_raw().iter().filter(|&&v| v > 0).count();
            out.meta.insert(format!("px_{region}"), MetaValue::Int(covered as i64));
            if self.params.annotations {
                shapes.push((region.to_string(), crate::qupath::trace(mask.as_raw(), w, h)));
            } else {
                out.files.push(OutFile { role: format!("mask:{region}"), ext: "png", bytes: codec::encode_u8(&Tensor2 { height: h, width: w, data: mask.into_raw() }) });
            }
        }
        if self.params.annotations {
            out.files.push(OutFile { role: "annotations".into(), ext: "geojson", bytes: crate::qupath::feature_collection(&shapes).into_bytes() });
        }
        out.meta.insert("laterality".into(), MetaValue::Str(p.laterality.to_string()));
        out.meta.insert("view".into(), MetaValue::Str(p.view.to_string()));
        Ok(out)
    }
}
