//! `augment`: tenfold augmentation, each replica a recipe from a configurable list ([`crate::augment`]).
//!
//! Items are `{source}/r{k}` for every recipe `k`; replica 0 is the original by default. A replica's key
//! holds its own recipe only (a value input), so changing one recipe recomputes exactly that replica of
//! every image and its descendants. Every random draw comes from an RNG seeded by (pipeline seed, stage
//! id, source item, replica). 16-bit images stay 16-bit; label maps move with geometric ops only.

use serde::{Deserialize, Serialize};

use crate::codec;
use super::{Arity, BuildCtx, InputSpec, ItemInputs, ItemOutput, ItemSpec, MetaValue, OutFile, ParamError, Stage};
use crate::augment::ops::Plane;
use crate::augment::{default_recipes, Recipe};
use crate::error::Result;
use crate::item_err;
use crate::npy::{self, Tensor2};

/// Params of `augment`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// One recipe per replica (default: ten, see [`default_recipes`]).
    pub recipe: Vec<Recipe>,
}

impl Default for Params {
    fn default() -> Self {
        Params { recipe: default_recipes() }
    }
}

/// The `augment` stage.
pub struct Augment {
    params: Params,
    seed: u64,
    stage_id: String,
}

impl Augment {
    /// Builds the stage.
    pub fn new(params: Params, ctx: &BuildCtx<'_>) -> Result<Self, ParamError> {
        if params.recipe.is_empty() {
            return Err(ParamError::at("recipe", "at least one recipe is needed"));
        }
        for r in &params.recipe {
            r.validate().map_err(|m| ParamError::at("recipe", m))?;
        }
        Ok(Augment { params, seed: ctx.seed, stage_id: ctx.stage_id.to_string() })
    }
}

impl Stage for Augment {
    fn kind(&self) -> &'static str {
        "augment"
    }
    fn version(&self) -> u32 {
        1
    }
    fn arity(&self) -> Arity {
        Arity::Exactly(1)
    }
    fn params(&self) -> serde_json::Value {
        // the recipes are per-item value inputs, not stage params
        serde_json::json!({ "seed": self.seed, "stage": self.stage_id })
    }
    fn items(&self, upstream: &[&[String]]) -> Result<Vec<ItemSpec>> {
        let recipes: Vec<String> = self.params.recipe.iter().map(|r| serde_json::to_string(r).expect("recipes serialise")).collect();
        Ok(upstream[0]
            .iter()
            .flat_map(|src| {
                recipes.iter().enumerate().map(move |(k, r)| ItemSpec {
                    id: format!("{src}/r{k}"),
                    inputs: vec![InputSpec::Upstream { upstream: 0, item: src.clone() }, InputSpec::Value { role: "recipe".into(), value: r.clone() }],
                })
            })
            .collect())
    }
    fn compute(&self, id: &str, inputs: &ItemInputs) -> Result<ItemOutput> {
        let (src, k) = id.rsplit_once("/r").ok_or_else(|| item_err!("bad replica id `{id}`"))?;
        let k: usize = k.parse().map_err(|_| item_err!("bad replica id `{id}`"))?;
        let recipe = self.params.recipe.get(k).ok_or_else(|| item_err!("no recipe {k}"))?;
        let (img, labels) = super::pairs::read_image_and_labels(inputs)?;
        let mut rng = super::item_rng(self.seed, &self.stage_id, src, k);
        let (i, l) = recipe.apply(
            Plane { width: img.width, height: img.height, data: img.data },
            Plane { width: labels.width, height: labels.height, data: labels.data },
            &mut rng,
        );
        let mut out = ItemOutput::default();
        out.meta.insert("source".into(), MetaValue::Str(src.to_string()));
        out.meta.insert("replica".into(), MetaValue::Int(k as i64));
        out.meta.insert("recipe".into(), MetaValue::Str(recipe.name.clone()));
        if let Some(subject) = inputs.upstream_meta("subject") {
            out.meta.insert("subject".into(), subject.clone());
        }
        out.files.push(OutFile { role: "image".into(), ext: "npy", bytes: npy::encode_u16(&Tensor2 { height: i.height, width: i.width, data: i.data }) });
        out.files.push(OutFile { role: "labels".into(), ext: "png", bytes: codec::encode_u8(&Tensor2 { height: l.height, width: l.width, data: l.data }) });
        Ok(out)
    }
}
