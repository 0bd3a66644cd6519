//! `export`: the study's tables of the evaluate stages it names, as objects of the workspace, and,
//! with `dicom_seg = true`, a DICOM Segmentation of every evaluated image that came from a DICOM file.
//!
//! `inputs = ["deeplabv3-eval", "fcn8-eval", ...]`; one item, `tables`, with four Parquet outputs,
//! `metrics`, `per_class`, `per_image` and `training_log` (the tables of [`crate::export`], the same as
//! `mammoflow export --out DIR` writes). Its key covers every evaluation item it sums, and each of
//! those covers its training item and, through it, the split and the crops: a rerun that changes only
//! evaluation params recomputes the evaluations and this item, nothing upstream.
//!
//! The folds and the training logs come from the manifests of the `train` and `split` stages behind
//! the evaluations, which have finished (and are fixed by those keys) by the time this stage runs.
//!
//! SEGs: the `ingest-dicom` stage the images came from is named among the inputs too
//! (`inputs = ["evaluate", "ingest"]`), because a SEG must reference the source image by its UIDs,
//! which only that stage's `reference` objects hold (manifests keep keyed hashes). One item per
//! evaluated image, `seg/<evaluate stage>/<image>`, reads that image's prediction and reference and
//! writes one `seg` output ([`crate::dicom::seg`]); its key holds its own segment table (a value
//! input), so an image scored anew rewrites its own SEG (and the tables), another class table
//! rewrites the SEGs only, and switching SEGs on or off leaves the `tables` item as it was, provided
//! the evaluate stages keep their places in `inputs` (an input's place is part of the key: list the
//! ingest stage last). `mammoflow export --out DIR` copies them to
//! `DIR/seg/<evaluate stage>/<image>_seg.dcm`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Arity, BuildCtx, InputSpec, ItemInputs, ItemOutput, ItemSpec, MetaValue, OutFile, ParamError, Stage};
use crate::classes::ClassTable;
use crate::dicom::seg::{write_seg, SegmentClass, SourceRef};
use crate::error::Result;
use crate::export::{self, Source, StageRef};
use crate::item_err;

/// Params of `export` (which evaluations is said by `inputs`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// Also write a DICOM SEG of every evaluated image (its `ingest-dicom` stage among `inputs`).
    pub dicom_seg: bool,
    /// The class table naming the SEGs' segments (labels, colours); default: the table each
    /// evaluation's training used.
    pub classes: Option<String>,
}

/// An evaluate stage this export reads, with what its SEGs need.
struct Eval {
    /// Stage id.
    id: String,
    /// Index among the declared inputs.
    input: usize,
    /// One segment per class but the background.
    segments: Vec<SegmentClass>,
    /// What made the predictions: the SEG's content description and segment algorithm name, and
    /// part of its series UID.
    algorithm: String,
}

/// The `export` stage.
pub struct Export {
    name: String,
    path: PathBuf,
    workspace: PathBuf,
    stages: Vec<StageRef>,
    evals: Vec<Eval>,
    /// The `ingest-dicom` input (its index among the declared inputs) when SEGs are written.
    references: Option<(usize, String)>,
}

impl Export {
    /// Builds the stage: every input is an `evaluate` stage, or, with `dicom_seg`, one `ingest-dicom`
    /// stage.
    pub fn new(params: Params, ctx: &BuildCtx<'_>) -> Result<Self, ParamError> {
        if params.classes.is_some() && !params.dicom_seg {
            return Err(ParamError { message: "`classes` names the segments of DICOM SEGs, which this stage does not write".into(), key: Some("classes".into()), hint: Some("set `dicom_seg = true`, or leave `classes` out".into()) });
        }
        let kind_of = |id: &str| ctx.earlier.iter().find(|s| s.id == id);
        let mut evals = Vec::new();
        let mut references = None;
        let table = params.classes.as_deref().map(|c| ClassTable::load(&ctx.resolve_path("classes", c)?).map_err(|m| ParamError::at("classes", m))).transpose()?;
        for (input, id) in ctx.inputs.iter().enumerate() {
            match kind_of(id) {
                Some(s) if s.kind == "evaluate" => {
                    let train = s.inputs.get(1).and_then(|t| kind_of(t));
                    let segments = match (&table, train) {
                        (Some(t), _) => SegmentClass::of_table(t),
                        (None, Some(t)) => t.params.get("table").cloned().and_then(|v| serde_json::from_value::<ClassTable>(v).ok()).map(|t| SegmentClass::of_table(&t)).unwrap_or_default(),
                        (None, None) => Vec::new(),
                    };
                    if params.dicom_seg && segments.is_empty() {
                        return Err(ParamError::at("classes", format!("no class table for the SEGs of `{id}` (its training names none): give `classes`")));
                    }
                    let model = train.and_then(|t| t.params.pointer("/model/arch").and_then(|a| a.as_str().map(str::to_string))).unwrap_or_default();
                    let algorithm = format!("mammoflow {} {model}", s.inputs.get(1).map_or("", String::as_str)).trim_end().to_string();
                    evals.push(Eval { id: id.clone(), input, segments, algorithm });
                }
                Some(s) if s.kind == "ingest-dicom" && params.dicom_seg => {
                    if let Some((_, first)) = &references {
                        return Err(ParamError { message: format!("inputs `{first}` and `{id}` are both `ingest-dicom` stages; SEGs read the references of one"), key: None, hint: None });
                    }
                    references = Some((input, id.clone()));
                }
                Some(s) if s.kind == "ingest-dicom" => {
                    return Err(ParamError { message: format!("input `{id}` is an `ingest-dicom` stage, read only to write DICOM SEGs"), key: None, hint: Some("set `dicom_seg = true`, or leave it out of `inputs`".into()) });
                }
                Some(s) => return Err(ParamError { message: format!("input `{id}` is a `{}` stage; `export` tabulates `evaluate` stages", s.kind), key: None, hint: None }),
                None => return Err(ParamError { message: format!("input `{id}` is not an earlier stage"), key: None, hint: None }),
            }
        }
        if evals.is_empty() {
            return Err(ParamError { message: "`export` needs at least one `evaluate` stage among its inputs".into(), key: None, hint: None });
        }
        if params.dicom_seg && references.is_none() {
            let ingest = ctx.earlier.iter().find(|s| s.kind == "ingest-dicom").map_or("ingest", |s| s.id.as_str());
            return Err(ParamError {
                message: "`dicom_seg = true` needs the `ingest-dicom` stage the images came from among `inputs`: a SEG references its source image by UIDs that only that stage keeps".into(),
                key: Some("dicom_seg".into()),
                hint: Some(format!("inputs = [{}, \"{ingest}\"]", evals.iter().map(|e| format!("\"{}\"", e.id)).collect::<Vec<_>>().join(", "))),
            });
        }
        Ok(Export {
            name: ctx.pipeline_name.to_string(),
            path: ctx.pipeline_file.to_path_buf(),
            workspace: ctx.workspace.to_path_buf(),
            stages: ctx.earlier.to_vec(),
            evals,
            references,
        })
    }

    /// The tables item.
    fn tables(&self) -> Result<ItemOutput> {
        let evals: Vec<String> = self.evals.iter().map(|e| e.id.clone()).collect();
        let src = Source { name: &self.name, path: &self.path, workspace: &self.workspace, stages: &self.stages, evals: Some(&evals) };
        let mut t = export::tables(&src)?;
        let mut out = ItemOutput::default();
        for (role, df) in [("metrics", &mut t.metrics), ("per_class", &mut t.per_class), ("per_image", &mut t.per_image), ("training_log", &mut t.training_log)] {
            out.meta.insert(format!("rows_{role}"), MetaValue::Int(df.height() as i64));
            let bytes = crate::parquet::parquet_bytes(df).map_err(|e| item_err!("writing the {role} table: {e}"))?;
            out.files.push(OutFile { role: role.into(), ext: "parquet", bytes });
        }
        Ok(out)
    }

    /// The SEG of one evaluated image of `eval`.
    fn seg(&self, eval: &Eval, image: &str, inputs: &ItemInputs) -> Result<ItemOutput> {
        let find = |role: &str| inputs.files.iter().find(|(r, _)| r.rsplit('/').next() == Some(role)).map(|(_, p)| p.as_path());
        let prediction = find("prediction").ok_or_else(|| item_err!("no prediction of `{image}`: its evaluation in `{}` failed (`mammoflow status --failed`)", eval.id))?;
        let reference = find("reference").ok_or_else(|| item_err!("no DICOM reference of `{image}` (an `ingest-dicom` output from before references were kept: rerun that stage)"))?;
        let bytes = crate::fsio::read_file(reference)?;
        let source: std::result::Result<SourceRef, String> = serde_json::from_slice(&bytes).map_err(|e| item_err!("{}: not a DICOM reference: {e}", reference.display()))?;
        let source = source.map_err(|why| item_err!("no SEG of `{image}`: its DICOM file cannot be referenced: {why}"))?;
        let labels = crate::codec::read_labels(prediction)?;
        if let Some((rows, columns)) = source.size {
            if (labels.height, labels.width) != (rows, columns) {
                return Err(item_err!(
                    "the prediction of `{image}` is {} x {} but its DICOM image is {columns} x {rows}: a SEG lies on the image's own pixel grid, so `{}` must score the images at the size `ingest-dicom` read them",
                    labels.width,
                    labels.height,
                    eval.id
                ));
            }
        }
        let seg = write_seg(&labels, &eval.segments, &source, &eval.algorithm)?;
        let mut out = ItemOutput::default();
        out.meta.insert("segments".into(), MetaValue::Int(eval.segments.len() as i64));
        for c in &eval.segments {
            let n = labels.data.iter().filter(|&&v| v == c.id).count();
            out.meta.insert(format!("px_{}", c.name), MetaValue::Int(n as i64));
        }
        out.files.push(OutFile { role: "seg".into(), ext: "dcm", bytes: seg });
        Ok(out)
    }
}

/// The item id of the SEG of `image` scored by evaluate stage `eval`.
pub fn seg_item(eval: &str, image: &str) -> String {
    format!("seg/{eval}/{image}")
}

impl Stage for Export {
    fn kind(&self) -> &'static str {
        "export"
    }
    fn version(&self) -> u32 {
        1
    }
    fn gathers(&self, input: usize) -> bool {
        // the tables leave out a failed evaluation; a SEG of a failed one says so; a failed ingest
        // fails the SEG of its image (there is nothing to reference)
        self.references.as_ref().is_none_or(|(r, _)| *r != input)
    }
    fn arity(&self) -> Arity {
        Arity::AtLeast(1)
    }
    fn params(&self) -> serde_json::Value {
        // nothing here: the tables depend on their inputs only, and each SEG item's settings are a
        // value input of its own key
        serde_json::json!({})
    }
    fn items(&self, upstream: &[&[String]]) -> Result<Vec<ItemSpec>> {
        let inputs: Vec<InputSpec> = self.evals.iter().flat_map(|e| upstream[e.input].iter().map(move |id| InputSpec::Upstream { upstream: e.input, item: id.clone() })).collect();
        if inputs.is_empty() {
            return Ok(Vec::new());
        }
        let mut items = vec![ItemSpec { id: "tables".into(), inputs }];
        let Some((r, ingest)) = &self.references else { return Ok(items) };
        let known: std::collections::HashSet<&str> = upstream[*r].iter().map(String::as_str).collect();
        for e in &self.evals {
            let missing: Vec<&String> = upstream[e.input].iter().filter(|id| !known.contains(id.as_str())).collect();
            if let Some(first) = missing.first() {
                return Err(item_err!(
                    "export: {} of the {} images `{}` scores are not items of `{ingest}` (first: `{first}`): a SEG references the DICOM image an evaluated image was ingested from, so `{}` must score `{ingest}`'s images (through merge-masks), under their ids",
                    missing.len(),
                    upstream[e.input].len(),
                    e.id,
                    e.id
                ));
            }
            let settings = serde_json::json!({ "segments": e.segments.iter().map(|c| (c.id, &c.name, c.colour)).collect::<Vec<_>>(), "algorithm": e.algorithm }).to_string();
            for id in upstream[e.input].iter() {
                items.push(ItemSpec {
                    id: seg_item(&e.id, id),
                    inputs: vec![
                        InputSpec::Upstream { upstream: e.input, item: id.clone() },
                        InputSpec::Upstream { upstream: *r, item: id.clone() },
                        InputSpec::Value { role: "seg".into(), value: settings.clone() },
                    ],
                });
            }
        }
        Ok(items)
    }
    fn compute(&self, id: &str, inputs: &ItemInputs) -> Result<ItemOutput> {
        if id == "tables" {
            return self.tables();
        }
        for e in &self.evals {
            if let Some(image) = id.strip_prefix("seg/").and_then(|rest| rest.strip_prefix(e.id.as_str())).and_then(|rest| rest.strip_prefix('/')) {
                return self.seg(e, image, inputs);
            }
        }
        Err(item_err!("export: unknown item `{id}`"))
    }
}
