//! The study's tables from a pipeline's manifests: `metrics` (one row per model x fold), `per_class`,
//! `per_image` and `training_log`, as polars frames written to Parquet.
//!
//! Every `evaluate` stage is a model: its `train` input says which network and checkpoint, the `split`
//! stage behind that training says each subject's fold. A fold's figures come from the sum of its
//! images' confusion matrices ([`crate::metrics`]). Each metrics row names the training item's key and
//! a hash of the evaluation items' keys it summed, so a figure joins back to the exact data and code
//! that produced it. Subjects appear only as the pseudonyms ingest made (keyed hashes), never as
//! patient IDs.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use polars::prelude::*;

use crate::classes::ClassTable;
use crate::metrics::Confusion;
use crate::metrics::StoredConfusion;
use crate::store::MetaValue;
use crate::store::manifest;
use crate::store::record::{Record, Status};

/// The four tables.
pub struct Tables {
    /// One row per (evaluate stage, fold).
    pub metrics: DataFrame,
    /// One row per (evaluate stage, fold, class).
    pub per_class: DataFrame,
    /// One row per evaluated image.
    pub per_image: DataFrame,
    /// Every training's epochs.
    pub training_log: DataFrame,
}

/// One model's figures on one fold, before they become rows.
#[derive(Debug, Clone)]
pub struct FoldScore {
    /// The evaluate stage.
    pub eval_stage: String,
    /// The train stage behind it.
    pub train_stage: String,
    /// Network name.
    pub model: String,
    /// `train`, `val`, `test`, `fold0`.. or `unassigned`.
    pub fold: String,
    /// Images summed.
    pub images: usize,
    /// The summed matrix.
    pub confusion: Confusion,
    /// Its figures.
    pub metrics: crate::metrics::Metrics,
    /// Key of the training item.
    pub train_key: String,
    /// BLAKE3 of the sorted keys of the evaluation items summed.
    pub eval_keys: String,
    /// Class names by id (`class<id>` where the table has no such id).
    pub class_names: Vec<String>,
}

/// What the tables need to know of a stage: its id, kind, declared inputs and canonical params (the
/// pipeline makes these; this layer knows no pipeline).
#[derive(Debug, Clone)]
pub struct StageRef {
    /// Stage id.
    pub id: String,
    /// Stage kind.
    pub kind: String,
    /// Upstream stage ids, as declared.
    pub inputs: Vec<String>,
    /// Canonical params (the built stage's).
    pub params: serde_json::Value,
}

/// Where the tables come from: a pipeline's stages and workspace, and which evaluate stages to
/// tabulate (all of them, or those an `export` stage names).
#[derive(Clone, Copy)]
pub struct Source<'a> {
    /// Pipeline name (a column of `metrics`).
    pub name: &'a str,
    /// The pipeline file, for messages.
    pub path: &'a Path,
    /// Its workspace.
    pub workspace: &'a Path,
    /// Its stages (at least the evaluate stages and every stage they read from).
    pub stages: &'a [StageRef],
    /// `None`: every evaluate stage.
    pub evals: Option<&'a [String]>,
}

impl<'a> Source<'a> {
    /// The evaluate stages tabulated.
    pub(crate) fn evaluations(&self) -> impl Iterator<Item = &'a StageRef> + '_ {
        self.stages.iter().filter(|s| s.kind == "evaluate" && self.evals.is_none_or(|e| e.contains(&s.id)))
    }
    /// The train stages behind them.
    fn trainings(&self) -> impl Iterator<Item = &'a StageRef> + '_ {
        self.stages.iter().filter(|t| t.kind == "train" && (self.evals.is_none() || self.evaluations().any(|e| e.inputs.get(1) == Some(&t.id))))
    }
}

fn err(m: impl std::fmt::Display) -> crate::Error {
    crate::Error::Execution(m.to_string())
}

pub(crate) fn records(p: &Source<'_>, stage: &str) -> crate::Result<Vec<Record>> {
    let path = p.workspace.join("manifests").join(format!("{stage}.parquet"));
    if !path.exists() {
        return Err(err(format!("stage `{stage}` has not run yet (no {}): `mammoflow run {}` first", path.display(), p.path.display())));
    }
    manifest::read(&path)
}

pub(crate) fn output(p: &Source<'_>, r: &Record, role: &str) -> Option<PathBuf> {
    r.outputs.iter().find(|o| o.role == role).map(|o| p.workspace.join(&o.file))
}

pub(crate) fn stage<'a>(p: &Source<'a>, id: &str) -> crate::Result<&'a StageRef> {
    p.stages.iter().find(|s| s.id == id).ok_or_else(|| err(format!("no stage `{id}`")))
}

/// subject -> fold from a `split` stage's assignment.
pub(crate) fn folds(p: &Source<'_>, split: &str) -> crate::Result<HashMap<String, String>> {
    let recs = records(p, split)?;
    let r = recs.iter().find(|r| r.status == Status::Ok).ok_or_else(|| err(format!("split `{split}` has no assignment")))?;
    let path = output(p, r, "assignment").ok_or_else(|| err("the assignment has no file"))?;
    crate::folds::read_assignment(&path)
}

/// An evaluated image's subject (the pseudonym ingest made), empty when it has none.
pub(crate) fn subject(r: &Record) -> String {
    match r.meta.get("subject") {
        Some(MetaValue::Str(s)) => s.clone(),
        _ => String::new(),
    }
}

/// One evaluated image, for `per_image`.
struct ImageRow {
    eval_stage: String,
    item: String,
    subject: String,
    fold: String,
    confusion: Confusion,
    key: String,
}

/// Every model's figures per fold.
pub fn scores(p: &Source<'_>) -> crate::Result<Vec<FoldScore>> {
    Ok(evaluations(p)?.0)
}

/// Every model's figures per fold, and every evaluated image: one read of each manifest and matrix.
fn evaluations(p: &Source<'_>) -> crate::Result<(Vec<FoldScore>, Vec<ImageRow>)> {
    let mut out = Vec::new();
    let mut images = Vec::new();
    for e in p.evaluations() {
        let t = stage(p, &e.inputs[1])?;
        let split = stage(p, &t.inputs[1])?;
        let folds = folds(p, &split.id)?;
        let tparams = &t.params;
        let model = model_name(tparams);
        let table: Option<ClassTable> = serde_json::from_value(tparams["table"].clone()).ok();
        let train_key = records(p, &t.id)?.into_iter().find(|r| r.status == Status::Ok).map(|r| r.key).unwrap_or_default();
        let mut by_fold: BTreeMap<String, (Option<Confusion>, Vec<String>)> = BTreeMap::new();
        for r in records(p, &e.id)?.into_iter().filter(|r| r.status == Status::Ok) {
            let subject = subject(&r);
            let fold = folds.get(&subject).cloned().unwrap_or_else(|| "unassigned".into());
            let c = read_confusion(p, &r)?;
            let entry = by_fold.entry(fold.clone()).or_insert((None, Vec::new()));
            match &mut entry.0 {
                Some(sum) => sum.merge(&c).map_err(err)?,
                None => entry.0 = Some(c.clone()),
            }
            entry.1.push(r.key.clone());
            images.push(ImageRow { eval_stage: e.id.clone(), item: r.item_id, subject, fold, confusion: c, key: r.key });
        }
        for (fold, (c, mut keys)) in by_fold {
            let Some(confusion) = c else { continue };
            keys.sort();
            let class_names = (0..confusion.classes())
                .map(|id| table.as_ref().and_then(|t| t.classes.iter().find(|c| c.id as usize == id)).map_or_else(|| format!("class{id}"), |c| c.name.clone()))
                .collect();
            out.push(FoldScore {
                eval_stage: e.id.clone(),
                train_stage: t.id.clone(),
                model: model.clone(),
                fold,
                images: keys.len(),
                metrics: confusion.metrics(),
                confusion,
                train_key: train_key.clone(),
                eval_keys: blake3::hash(keys.join("\n").as_bytes()).to_hex().to_string(),
                class_names,
            });
        }
    }
    Ok((out, images))
}

/// The network name of a train stage's params.
fn model_name(params: &serde_json::Value) -> String {
    serde_json::from_value::<crate::models::ModelSpec>(params["model"].clone()).map_or_else(|_| "?".into(), |s| s.arch.name().to_string())
}

fn read_confusion(p: &Source<'_>, r: &Record) -> crate::Result<Confusion> {
    let path = output(p, r, "confusion").ok_or_else(|| err(format!("evaluation item {} has no confusion matrix", r.item_id)))?;
    let bytes = std::fs::read(&path).map_err(|e| err(format!("{}: {e}", path.display())))?;
    let s: StoredConfusion = serde_json::from_slice(&bytes).map_err(|e| err(format!("{}: {e}", path.display())))?;
    Confusion::from_rows(&s.rows).map_err(|e| err(format!("{}: {e}", path.display())))
}

/// Builds the four tables of a pipeline whose evaluate stages have run.
pub fn tables(p: &Source<'_>) -> crate::Result<Tables> {
    let (scores, images) = evaluations(p)?;
    let pe = |e: PolarsError| err(format!("building a table: {e}"));
    let opt = |v: Option<f64>| v.unwrap_or(f64::NAN);
    // metrics: fixed columns, then iou_/dice_ per class of the widest table.
    let mut cols: Vec<Column> = vec![
        Column::new("pipeline".into(), scores.iter().map(|_| p.name.to_string()).collect::<Vec<_>>()),
        Column::new("model".into(), scores.iter().map(|s| s.model.clone()).collect::<Vec<_>>()),
        Column::new("train_stage".into(), scores.iter().map(|s| s.train_stage.clone()).collect::<Vec<_>>()),
        Column::new("eval_stage".into(), scores.iter().map(|s| s.eval_stage.clone()).collect::<Vec<_>>()),
        Column::new("fold".into(), scores.iter().map(|s| s.fold.clone()).collect::<Vec<_>>()),
        Column::new("images".into(), scores.iter().map(|s| s.images as u64).collect::<Vec<_>>()),
        Column::new("pixels".into(), scores.iter().map(|s| s.metrics.pixels).collect::<Vec<_>>()),
        Column::new("pixel_accuracy".into(), scores.iter().map(|s| opt(s.metrics.pixel_accuracy)).collect::<Vec<_>>()),
        Column::new("mean_iou".into(), scores.iter().map(|s| opt(s.metrics.mean_iou)).collect::<Vec<_>>()),
        Column::new("mean_class_accuracy".into(), scores.iter().map(|s| opt(s.metrics.mean_class_accuracy)).collect::<Vec<_>>()),
        Column::new("train_key".into(), scores.iter().map(|s| s.train_key.clone()).collect::<Vec<_>>()),
        Column::new("eval_keys".into(), scores.iter().map(|s| s.eval_keys.clone()).collect::<Vec<_>>()),
    ];
    let mut names: Vec<String> = Vec::new();
    for s in &scores {
        for n in &s.class_names {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
    }
    for (prefix, pick) in [("iou_", 0usize), ("dice_", 1)] {
        for n in &names {
            let v: Vec<f64> = scores
                .iter()
                .map(|s| {
                    let m = &s.metrics;
                    s.class_names.iter().position(|c| c == n).and_then(|i| if pick == 0 { m.iou[i] } else { m.dice[i] }).unwrap_or(f64::NAN)
                })
                .collect();
            cols.push(Column::new(format!("{prefix}{n}").into(), v));
        }
    }
    let metrics = DataFrame::new(scores.len(), cols).map_err(pe)?;

    // One row per (model, fold, class).
    let rows: Vec<(&FoldScore, usize)> = scores.iter().flat_map(|s| (0..s.confusion.classes()).map(move |i| (s, i))).collect();
    let text = |f: &dyn Fn(&FoldScore, usize) -> String| rows.iter().map(|&(s, i)| f(s, i)).collect::<Vec<_>>();
    let num = |f: &dyn Fn(&FoldScore, usize) -> f64| rows.iter().map(|&(s, i)| f(s, i)).collect::<Vec<_>>();
    let count = |f: &dyn Fn(&FoldScore, usize) -> u64| rows.iter().map(|&(s, i)| f(s, i)).collect::<Vec<_>>();
    let k = |s: &FoldScore| s.confusion.classes();
    let per_class = DataFrame::new(
        rows.len(),
        vec![
            Column::new("eval_stage".into(), text(&|s, _| s.eval_stage.clone())),
            Column::new("fold".into(), text(&|s, _| s.fold.clone())),
            Column::new("class".into(), text(&|s, i| s.class_names[i].clone())),
            Column::new("class_id".into(), rows.iter().map(|&(_, i)| i as u32).collect::<Vec<_>>()),
            Column::new("iou".into(), num(&|s, i| opt(s.metrics.iou[i]))),
            Column::new("dice".into(), num(&|s, i| opt(s.metrics.dice[i]))),
            Column::new("accuracy".into(), num(&|s, i| opt(s.metrics.class_accuracy[i]))),
            Column::new("truth_pixels".into(), count(&|s, i| (0..k(s)).map(|j| s.confusion.get(i, j)).sum())),
            Column::new("predicted_pixels".into(), count(&|s, i| (0..k(s)).map(|j| s.confusion.get(j, i)).sum())),
        ],
    )
    .map_err(pe)?;

    let image_metrics: Vec<crate::metrics::Metrics> = images.iter().map(|r| r.confusion.metrics()).collect();
    let per_image = DataFrame::new(
        images.len(),
        vec![
            Column::new("eval_stage".into(), images.iter().map(|r| r.eval_stage.clone()).collect::<Vec<_>>()),
            Column::new("item".into(), images.iter().map(|r| r.item.clone()).collect::<Vec<_>>()),
            Column::new("subject".into(), images.iter().map(|r| r.subject.clone()).collect::<Vec<_>>()),
            Column::new("fold".into(), images.iter().map(|r| r.fold.clone()).collect::<Vec<_>>()),
            Column::new("pixels".into(), image_metrics.iter().map(|m| m.pixels).collect::<Vec<_>>()),
            Column::new("pixel_accuracy".into(), image_metrics.iter().map(|m| opt(m.pixel_accuracy)).collect::<Vec<_>>()),
            Column::new("mean_iou".into(), image_metrics.iter().map(|m| opt(m.mean_iou)).collect::<Vec<_>>()),
            Column::new("key".into(), images.iter().map(|r| r.key.clone()).collect::<Vec<_>>()),
        ],
    )
    .map_err(pe)?;

    let mut logs: Vec<DataFrame> = Vec::new();
    for t in p.trainings() {
        let Ok(recs) = records(p, &t.id) else { continue };
        let model = model_name(&t.params);
        for r in recs.into_iter().filter(|r| r.status == Status::Ok) {
            let Some(path) = output(p, &r, "log") else { continue };
            let df = ParquetReader::new(std::fs::File::open(&path).map_err(|e| err(format!("{}: {e}", path.display())))?).finish().map_err(pe)?;
            let h = df.height();
            let mut df = df;
            df.insert_column(0, Column::new("model".into(), vec![model.clone(); h])).map_err(pe)?;
            df.insert_column(0, Column::new("train_stage".into(), vec![t.id.clone(); h])).map_err(pe)?;
            logs.push(df);
        }
    }
    let training_log = match logs.split_first() {
        Some((first, rest)) => {
            let mut all = first.clone();
            for d in rest {
                all.vstack_mut(d).map_err(pe)?;
            }
            all
        }
        None => DataFrame::empty(),
    };
    Ok(Tables { metrics, per_class, per_image, training_log })
}

/// Writes the tables as `metrics.parquet`, `per_class.parquet`, `per_image.parquet` and
/// `training_log.parquet` into `dir`; returns the paths.
pub fn write(t: &mut Tables, dir: &Path) -> crate::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| err(format!("creating {}: {e}", dir.display())))?;
    let mut out = Vec::new();
    for (name, df) in [("metrics", &mut t.metrics), ("per_class", &mut t.per_class), ("per_image", &mut t.per_image), ("training_log", &mut t.training_log)] {
        let path = dir.join(format!("{name}.parquet"));
        let bytes = crate::parquet::parquet_bytes(df).map_err(|e| err(format!("writing {}: {e}", path.display())))?;
        std::fs::write(&path, bytes).map_err(|e| err(format!("writing {}: {e}", path.display())))?;
        out.push(path);
    }
    Ok(out)
}

/// The paper's Table 10, mammogram columns (%): pixel accuracy, mean IoU, mean class accuracy, by
/// network name. A different (private) data set: shown beside ours, never as the same thing.
pub fn paper_row(model: &str) -> Option<[f64; 3]> {
    Some(match model {
        "fcn32" => [80.37, 40.06, 49.20],
        "fcn16" => [78.90, 41.75, 53.13],
        "fcn8" => [78.17, 45.12, 57.03],
        "unet" => [80.49, 43.47, 53.78],
        "dilation10-front" => [93.03, 47.65, 60.74],
        "dilation10-context" => [93.46, 50.26, 64.39],
        "dilation10-global" => [93.69, 57.91, 67.97],
        "deeplabv3" => [92.17, 51.34, 62.01],
        _ => return None,
    })
}
