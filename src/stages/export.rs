//! `export`: the study's tables of the evaluate stages it names, as objects of the workspace.
//!
//! `inputs = ["deeplabv3-eval", "fcn8-eval", ...]`; one item, `tables`, with four Parquet outputs,
//! `metrics`, `per_class`, `per_image` and `training_log` (the tables of [`crate::export`], the same as
//! `mammoflow export --out DIR` writes). Its key covers every evaluation item it sums, and each of
//! those covers its training item and, through it, the split and the crops: a rerun that changes only
//! evaluation params recomputes the evaluations and this item, nothing upstream.
//!
//! The folds and the training logs come from the manifests of the `train` and `split` stages behind
//! the evaluations, which have finished (and are fixed by those keys) by the time this stage runs.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Arity, BuildCtx, InputSpec, ItemInputs, ItemOutput, ItemSpec, MetaValue, OutFile, ParamError, Stage};
use crate::error::Result;
use crate::export::{self, Source, StageRef};
use crate::item_err;

/// Params of `export` (none yet: which evaluations is said by `inputs`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {}

/// The `export` stage.
pub struct Export {
    name: String,
    path: PathBuf,
    workspace: PathBuf,
    stages: Vec<StageRef>,
    evals: Vec<String>,
}

impl Export {
    /// Builds the stage; every input must be an `evaluate` stage.
    pub fn new(_params: Params, ctx: &BuildCtx<'_>) -> Result<Self, ParamError> {
        for id in ctx.inputs {
            match ctx.earlier.iter().find(|s| &s.id == id) {
                Some(s) if s.kind == "evaluate" => {}
                Some(s) => return Err(ParamError { message: format!("input `{id}` is a `{}` stage; `export` tabulates `evaluate` stages", s.kind), key: None, hint: None }),
                None => return Err(ParamError { message: format!("input `{id}` is not an earlier stage"), key: None, hint: None }),
            }
        }
        Ok(Export {
            name: ctx.pipeline_name.to_string(),
            path: ctx.pipeline_file.to_path_buf(),
            workspace: ctx.workspace.to_path_buf(),
            stages: ctx.earlier.to_vec(),
            evals: ctx.inputs.to_vec(),
        })
    }
}

impl Stage for Export {
    fn kind(&self) -> &'static str {
        "export"
    }
    fn version(&self) -> u32 {
        1
    }
    fn gathers(&self, _input: usize) -> bool {
        true
    }
    fn arity(&self) -> Arity {
        Arity::AtLeast(1)
    }
    fn params(&self) -> serde_json::Value {
        serde_json::json!({})
    }
    fn items(&self, upstream: &[&[String]]) -> Result<Vec<ItemSpec>> {
        let inputs: Vec<InputSpec> = upstream.iter().enumerate().flat_map(|(u, ids)| ids.iter().map(move |id| InputSpec::Upstream { upstream: u, item: id.clone() })).collect();
        if inputs.is_empty() {
            return Ok(Vec::new());
        }
        Ok(vec![ItemSpec { id: "tables".into(), inputs }])
    }
    fn compute(&self, _id: &str, _inputs: &ItemInputs) -> Result<ItemOutput> {
        let src = Source { name: &self.name, path: &self.path, workspace: &self.workspace, stages: &self.stages, evals: Some(&self.evals) };
        let mut t = export::tables(&src)?;
        let mut out = ItemOutput::default();
        for (role, df) in [("metrics", &mut t.metrics), ("per_class", &mut t.per_class), ("per_image", &mut t.per_image), ("training_log", &mut t.training_log)] {
            out.meta.insert(format!("rows_{role}"), MetaValue::Int(df.height() as i64));
            let bytes = crate::parquet::parquet_bytes(df).map_err(|e| item_err!("writing the {role} table: {e}"))?;
            out.files.push(OutFile { role: role.into(), ext: "parquet", bytes });
        }
        Ok(out)
    }
}
