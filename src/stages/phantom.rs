//! `phantom`: the embedded default data set, generated, so the quickstart needs no download and ships no
//! patient data. Each item is one synthetic mammogram (16-bit grayscale PNG) with one binary PNG mask per
//! anatomical region (see [`crate::phantom_anatomy`]), fully determined by the pipeline seed and the item
//! index.

use serde::{Deserialize, Serialize};

use super::png;
use super::{Arity, BuildCtx, ItemInputs, ItemOutput, ItemSpec, MetaValue, OutFile, ParamError, Stage};
use crate::error::Result;
use crate::item_err;
use crate::phantom_anatomy::{self, PhantomSpec};
use crate::tensor::Tensor2;

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
    /// Bits stored (12 to 16); values use the range 0 .. 2^bits - 1 of the 16-bit PNG.
    pub bits: u8,
}

impl Default for Params {
    fn default() -> Self {
        Params { count: 24, width: 768, height: 1024, bits: 16 }
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
        serde_json::json!({ "width": self.params.width, "height": self.params.height, "bits": self.params.bits, "seed": self.seed })
    }
    fn key_includes_item_id(&self) -> bool {
        true
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
        out.files.push(OutFile { role: "image".into(), ext: "png", bytes: png::encode_u16(&Tensor2 { height: h, width: w, data: p.image.into_raw() }) });
        for (region, mask) in p.masks {
            let covered = mask.as_raw().iter().filter(|&&v| v > 0).count();
            out.meta.insert(format!("px_{region}"), MetaValue::Int(covered as i64));
            out.files.push(OutFile { role: format!("mask:{region}"), ext: "png", bytes: png::encode_u8(&Tensor2 { height: h, width: w, data: mask.into_raw() }) });
        }
        out.meta.insert("laterality".into(), MetaValue::Str(p.laterality.to_string()));
        out.meta.insert("view".into(), MetaValue::Str(p.view.to_string()));
        Ok(out)
    }
}
