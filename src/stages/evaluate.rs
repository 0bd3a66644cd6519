//! `evaluate`: a trained network scored on whole images, one item per image.
//!
//! Inputs: the whole images with their label maps (a `merge-masks` stage) and a `train` stage. Each
//! item predicts its image at full size by tiling ([`crate::predict`]) and stores the confusion matrix
//! and the predicted label map; its manifest row carries the image's subject, so the folds are joined
//! at export time (`subject` -> `split`'s assignment). An item reads only its image and the checkpoint:
//! a changed image re-scores only itself, a changed evaluation param (overlap, which checkpoint)
//! re-scores every image and never retrains. Figures for a fold come from the sum of its images'
//! matrices ([`crate::metrics`]), never from a mean of per-image figures.

use serde::{Deserialize, Serialize};

use crate::codec;
use super::{Arity, BuildCtx, InputSpec, ItemInputs, ItemOutput, ItemSpec, MetaValue, OutFile, ParamError, Stage};
use crate::error::Result;
use crate::item_err;
use crate::metrics::Confusion;

/// Which checkpoint of the training to score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Which {
    /// The epoch early stopping chose.
    Best,
    /// The last epoch trained.
    Last,
}

/// Params of `evaluate`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// `best` or `last`.
    pub checkpoint: Which,
    /// Overlap of neighbouring output tiles, pixels (scores averaged where tiles overlap).
    pub overlap: usize,
    /// Tiles per forward pass.
    pub batch: usize,
    /// A truth label left out of the matrices (not a class id); default 255, as `train`'s.
    pub ignore: Option<u8>,
}

impl Default for Params {
    fn default() -> Self {
        Params { checkpoint: Which::Best, overlap: 32, batch: 4, ignore: Some(255) }
    }
}

/// The `evaluate` stage.
pub struct Evaluate {
    params: Params,
}

impl Evaluate {
    /// Builds the stage.
    pub fn new(params: Params, _ctx: &BuildCtx<'_>) -> Result<Self, ParamError> {
        if params.batch == 0 {
            return Err(ParamError::at("batch", "batch must be at least 1"));
        }
        Ok(Evaluate { params })
    }
}

pub use crate::metrics::StoredConfusion;

impl Stage for Evaluate {
    fn kind(&self) -> &'static str {
        "evaluate"
    }
    fn version(&self) -> u32 {
        1
    }
    fn arity(&self) -> Arity {
        Arity::Exactly(2)
    }
    fn params(&self) -> serde_json::Value {
        serde_json::to_value(&self.params).expect("params serialise")
    }
    fn items(&self, upstream: &[&[String]]) -> Result<Vec<ItemSpec>> {
        if upstream[1].is_empty() {
            return Ok(Vec::new());
        }
        if upstream[1] != ["model"] {
            return Err(item_err!("evaluate: the second input must be a `train` stage (one `model` item)"));
        }
        Ok(upstream[0]
            .iter()
            .map(|id| ItemSpec { id: id.clone(), inputs: vec![InputSpec::Upstream { upstream: 0, item: id.clone() }, InputSpec::Upstream { upstream: 1, item: "model".into() }] })
            .collect())
    }
    fn compute(&self, id: &str, inputs: &ItemInputs) -> Result<ItemOutput> {
        let ckpt = inputs.file(match self.params.checkpoint {
            Which::Best => "in1/best",
            Which::Last => "in1/last",
        })?;
        let bytes = std::fs::read(ckpt).map_err(|e| item_err!("reading {}: {e}", ckpt.display()))?;
        let model = crate::predict::Loaded::from_bytes(&bytes, &ckpt.display().to_string())?;
        if let Some(ig) = self.params.ignore {
            if (ig as usize) < model.spec.classes {
                return Err(item_err!("ignore label {ig} is one of the network's {} classes", model.spec.classes));
            }
        }
        let (image, truth) = super::pairs::read_image_pair(inputs, "in0/")?;
        let pred = model.predict(&image, self.params.overlap, self.params.batch)?;
        let mut confusion = Confusion::new(model.spec.classes);
        confusion.add(&truth.data, &pred.data, self.params.ignore).map_err(|e| item_err!("labels of {id}: {e}"))?;
        let m = confusion.metrics();
        let mut out = ItemOutput::default();
        if let Some(s) = inputs.upstream_meta("subject") {
            out.meta.insert("subject".into(), s.clone());
        }
        out.meta.insert("pixels".into(), MetaValue::Int(m.pixels as i64));
        out.meta.insert("pixel_accuracy".into(), MetaValue::Float(m.pixel_accuracy.unwrap_or(f64::NAN)));
        out.meta.insert("mean_iou".into(), MetaValue::Float(m.mean_iou.unwrap_or(f64::NAN)));
        let stored = serde_json::to_vec(&StoredConfusion { rows: confusion.rows() }).expect("a matrix serialises");
        out.files.push(OutFile { role: "confusion".into(), ext: "json", bytes: stored });
        out.files.push(OutFile { role: "prediction".into(), ext: "png", bytes: codec::encode_u8(&pred) });
        Ok(out)
    }
}
