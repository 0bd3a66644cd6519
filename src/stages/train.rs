//! `train`: one network trained on the crops of the training fold, early-stopped on the validation fold.
//!
//! Inputs: the crops (or whole images) and the `split` stage, and optionally a third stage, an earlier
//! `train` whose best checkpoint starts this one by variable name (FCN32 -> FCN16 -> FCN8, Dilation10
//! front -> context -> global; the context network trains only `context.*`, so the front stays
//! frozen). One item, `model`, reads every crop: crops join their fold through the `subject` column
//! that ingest set and every later stage carried, so no woman's replicas or crops sit on two sides.
//! Crops of `test` subjects are never read into the training.
//!
//! Outputs: `best` and `last` checkpoints (safetensors; names as the networks' variables, the model
//! spec in the metadata, so PyTorch loads them by name and `predict` rebuilds the network from the file
//! alone) and `log` (Parquet, one row per epoch). The key covers the results of the training and
//! validation crops only ([`Stage::narrow`]: test crops are left out once the assignment is known), the
//! assignment, the params, the class table, the init checkpoint and the code version: an edited test
//! image, or a split recomputed to the same assignment, never retrains.
//!
//! A training killed mid-way resumes: each finished epoch leaves a checkpoint under
//! `<workspace>/state/train/<stage>-<hash of the inputs and params>/`, and the next `run` continues from
//! it (see [`crate::train`]); the folder is removed when the training has returned its outputs.
//!
//! Defaults are the study's (SPEC.md): SGD momentum 0.9, L2 0.005, lr 1e-4 x0.3 every 10 epochs, at
//! most 100 epochs, patience 4, batch 64. They learn slowly on a CPU budget (a U-Net at lr 1e-4 reached
//! validation mIoU 0.43 where lr 1e-2 reached 0.75 in the same 20 minutes): the shipped pipelines set
//! values that learn and say why.

use std::path::PathBuf;
use std::sync::Arc;

use polars::prelude::*;
use serde::{Deserialize, Serialize};

use super::{Arity, BuildCtx, InputSpec, ItemInputs, ItemOutput, ItemSpec, MetaValue, OutFile, ParamError, Stage, UpstreamResults};
use crate::classes::ClassTable;
use crate::error::Result;
use crate::item_err;
use crate::models::{Arch, ModelSpec};
use crate::train::{self, Augment, Hyper, Monitor, Sample};

/// Params of `train`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// Network name (`mammoflow model summary` lists them).
    pub model: String,
    /// Channel multiplier (1 = the paper's network).
    pub width: f64,
    /// Network input side; default the network's own.
    pub input: Option<usize>,
    /// Class table: the network has `max id + 1` outputs.
    pub classes: String,
    /// A label the loss and the metrics ignore (must not be a class id); default 255, what rotations
    /// write where the rotated image does not reach.
    pub ignore: Option<u8>,
    pub epochs: usize,
    pub batch: usize,
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub lr_step: usize,
    pub lr_gamma: f64,
    pub patience: usize,
    /// `val_miou` or `val_loss`.
    pub monitor: Monitor,
    /// Default: the pipeline's seed.
    pub seed: Option<u64>,
    /// Horizontal flips of training windows.
    pub flip: bool,
    /// Contrast change of training windows (factor within 1 ± this, probability 0.5); 0 = off.
    pub contrast: f32,
    /// `cpu` (the only device this stage drives yet).
    pub device: String,
    /// Variable-name prefixes kept fixed (e.g. `["backbone."]`); the Dilation10 context network
    /// freezes its front end by itself.
    pub freeze: Vec<String>,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            model: "unet".into(),
            width: 1.0,
            input: None,
            classes: String::new(),
            ignore: Some(255),
            epochs: 100,
            batch: 64,
            lr: 1e-4,
            momentum: 0.9,
            weight_decay: 0.005,
            lr_step: 10,
            lr_gamma: 0.3,
            patience: 4,
            monitor: Monitor::ValMiou,
            seed: None,
            flip: true,
            contrast: 0.2,
            device: "cpu".into(),
            freeze: Vec::new(),
        }
    }
}

/// The `train` stage.
pub struct Train {
    id: String,
    spec: ModelSpec,
    hyper: Hyper,
    table: ClassTable,
    ignore: Option<u8>,
    state_root: PathBuf,
}

impl Train {
    /// Builds the stage.
    pub fn new(params: Params, ctx: &BuildCtx<'_>) -> Result<Self, ParamError> {
        let arch = Arch::parse(&params.model).map_err(|m| ParamError::at("model", m))?;
        if params.classes.is_empty() {
            return Err(ParamError::at("classes", "`classes` must name a class table (configs/)"));
        }
        let table = ClassTable::load(&ctx.resolve_path("classes", &params.classes)?).map_err(|m| ParamError::at("classes", m))?;
        let classes = table.classes.iter().map(|c| c.id as usize + 1).max().unwrap_or(1);
        let spec = ModelSpec { classes, width: params.width, input: params.input.map(|s| [s, s]), ..ModelSpec::new(arch) };
        spec.validate().map_err(|e| ParamError::at("width", e.to_string()))?;
        if let Some(ig) = params.ignore {
            if (ig as usize) < classes {
                return Err(ParamError::at("ignore", format!("ignore label {ig} is a class id of the table")));
            }
        }
        if params.epochs == 0 || params.batch == 0 || params.lr.is_nan() || params.lr < 0.0 {
            return Err(ParamError::at("epochs", "epochs and batch must be at least 1 and lr not negative"));
        }
        if params.device != "cpu" {
            return Err(ParamError::at("device", format!("the train stage runs on `cpu` only so far, not `{}`", params.device)));
        }
        let hyper = Hyper {
            epochs: params.epochs,
            batch: params.batch,
            lr: params.lr,
            momentum: params.momentum,
            weight_decay: params.weight_decay,
            lr_step: params.lr_step,
            lr_gamma: params.lr_gamma,
            patience: params.patience,
            monitor: params.monitor,
            seed: params.seed.unwrap_or(ctx.seed),
            augment: Augment { flip: params.flip, contrast: (params.contrast > 0.0).then_some(params.contrast) },
            freeze: params.freeze,
        };
        Ok(Train { id: ctx.stage_id.to_string(), spec, hyper, table, ignore: params.ignore, state_root: ctx.workspace.join("state").join("train") })
    }
}

impl Stage for Train {
    fn kind(&self) -> &'static str {
        "train"
    }
    fn version(&self) -> u32 {
        1
    }
    fn gathers(&self, input: usize) -> bool {
        input == 0
    }
    fn arity(&self) -> Arity {
        Arity::Between(2, 3)
    }
    fn params(&self) -> serde_json::Value {
        serde_json::json!({ "model": self.spec, "hyper": self.hyper, "table": self.table, "ignore": self.ignore })
    }
    fn items(&self, upstream: &[&[String]]) -> Result<Vec<ItemSpec>> {
        if upstream[0].is_empty() {
            return Ok(Vec::new());
        }
        if upstream[1] != ["assignment"] {
            return Err(item_err!("train: the second input must be a `split` stage (one `assignment` item)"));
        }
        let mut inputs: Vec<InputSpec> = upstream[0].iter().map(|id| InputSpec::Upstream { upstream: 0, item: id.clone() }).collect();
        inputs.push(InputSpec::Upstream { upstream: 1, item: "assignment".into() });
        if let Some(init) = upstream.get(2) {
            if *init != ["model"] {
                return Err(item_err!("train: the third input must be a `train` stage (its best checkpoint starts this training)"));
            }
            inputs.push(InputSpec::Upstream { upstream: 2, item: "model".into() });
        }
        Ok(vec![ItemSpec { id: "model".into(), inputs }])
    }
    /// Keeps the crops of `train` and `val` subjects (and the assignment and init checkpoint): test crops
    /// neither enter the key nor reach the training, so editing a test image re-scores it and never
    /// retrains. A crop without a subject is kept (and `compute` names it).
    fn narrow(&self, _id: &str, up: &dyn UpstreamResults) -> Result<Option<Vec<bool>>> {
        let Some(a) = (0..up.len()).find(|&i| up.input(i) == 1) else { return Ok(None) };
        let path = up.file(a, "assignment").ok_or_else(|| item_err!("the split item `{}` has no `assignment` output", up.item(a)))?;
        let folds = crate::folds::read_assignment(&path)?;
        Ok(Some(
            (0..up.len())
                .map(|i| {
                    up.input(i) != 0
                        || match up.meta(i).and_then(|m| m.get("subject")) {
                            Some(MetaValue::Str(s)) => matches!(folds.get(s).map(String::as_str), Some("train" | "val")),
                            _ => true,
                        }
                })
                .collect(),
        ))
    }
    fn compute(&self, _id: &str, inputs: &ItemInputs) -> Result<ItemOutput> {
        // Inputs: the crops, the assignment, then (optionally) the checkpoint that starts this training.
        let last = inputs.meta.len() - 1;
        let init = inputs.file(&format!("in{last}/best")).ok().map(std::path::Path::to_path_buf);
        let n = if init.is_some() { last - 1 } else { last };
        let assignment = inputs.file(&format!("in{n}/assignment"))?;
        let folds = crate::folds::read_assignment(assignment)?;
        let (mut train, mut val) = (Vec::new(), Vec::new());
        let classes = self.spec.classes;
        let mut pixels = vec![0u64; classes];
        // Class shares from the manifests' per-class pixel counts (`px_<class>`, which merging and
        // cropping record); inputs without them (e.g. `ingest-cityscapes`) are counted from the label
        // maps, which are in memory anyway.
        for (k, (item, meta)) in inputs.meta[..n].iter().enumerate() {
            let Some(MetaValue::Str(subject)) = meta.get("subject") else {
                return Err(item_err!("crop `{item}` has no `subject` column: cannot tell its fold"));
            };
            let fold = folds.get(subject).map(String::as_str).unwrap_or("");
            if fold != "train" && fold != "val" {
                continue; // test fold (or a subject the split did not see): never read
            }
            let sample = read_sample(inputs, k, item)?;
            if fold == "train" {
                let recorded: Vec<Option<u64>> = self.table.classes.iter().map(|c| match meta.get(&format!("px_{}", c.name)) {
                    Some(MetaValue::Int(v)) => Some(*v as u64),
                    _ => None,
                }).collect();
                if recorded.iter().all(Option::is_some) {
                    for (c, v) in self.table.classes.iter().zip(recorded) {
                        pixels[c.id as usize] += v.unwrap_or(0);
                    }
                } else {
                    for &l in &sample.labels.data {
                        if let Some(p) = pixels.get_mut(l as usize) {
                            *p += 1;
                        }
                    }
                }
                train.push(sample);
            } else {
                val.push(sample);
            }
        }
        let weights = crate::nn::loss::inverse_share_weights(&pixels);
        let data = train::Data { train: &train, val: &val, weights: weights.clone(), ignore: self.ignore };
        // The resume folder is named by what determines the training: the input files are
        // content-addressed, so their paths change exactly when their bytes do.
        let mut h = blake3::Hasher::new();
        h.update(self.params().to_string().as_bytes());
        for (role, path) in &inputs.files {
            h.update(role.as_bytes());
            h.update(path.to_string_lossy().as_bytes());
        }
        let state = self.state_root.join(format!("{}-{}", self.id, &h.finalize().to_hex()[..16]));
        let mut progress = EpochProgress::new(&self.id, self.hyper.epochs);
        let mut report = |e: train::Event<'_>| progress.event(e);
        let fitted = train::fit(&self.spec, &self.hyper, &data, init.as_deref(), Some(&state), None, &mut report)?.expect("no epoch limit was given");
        let mut out = ItemOutput::default();
        let best = &fitted.log[fitted.best_epoch.max(1) - 1];
        out.meta.insert("best_epoch".into(), MetaValue::Int(fitted.best_epoch as i64));
        out.meta.insert("epochs".into(), MetaValue::Int(fitted.log.len() as i64));
        out.meta.insert("stopped_early".into(), MetaValue::Int(fitted.stopped_early as i64));
        out.meta.insert("val_miou".into(), MetaValue::Float(best.val_miou));
        out.meta.insert("train_images".into(), MetaValue::Int(train.len() as i64));
        out.meta.insert("val_images".into(), MetaValue::Int(val.len() as i64));
        out.meta.insert("class_weights".into(), MetaValue::Str(format!("{weights:?}")));
        out.files.push(OutFile { role: "best".into(), ext: "safetensors", bytes: fitted.best });
        out.files.push(OutFile { role: "last".into(), ext: "safetensors", bytes: fitted.last });
        out.files.push(OutFile { role: "log".into(), ext: "parquet", bytes: log_table(&fitted.log)? });
        // The item is about to be stored: its resume state is no longer needed.
        let _ = std::fs::remove_dir_all(&state);
        Ok(out)
    }
}

/// Progress of a training on stderr: on a terminal a bar per epoch (batches, running loss, images/s,
/// ETA), otherwise a line every 30 s; a line per finished epoch in both cases.
struct EpochProgress {
    id: String,
    epochs: usize,
    bar: Option<indicatif::ProgressBar>,
    tty: bool,
    last_line: std::time::Instant,
}

impl EpochProgress {
    fn new(id: &str, epochs: usize) -> Self {
        use std::io::IsTerminal;
        EpochProgress { id: id.to_string(), epochs, bar: None, tty: std::io::stderr().is_terminal(), last_line: std::time::Instant::now() }
    }

    fn event(&mut self, e: train::Event<'_>) {
        match e {
            train::Event::Batch { epoch, done, total, loss, images_per_s } => {
                if self.tty {
                    let bar = self.bar.get_or_insert_with(|| {
                        let b = indicatif::ProgressBar::new(total as u64);
                        b.set_style(
                            indicatif::ProgressStyle::with_template("{prefix} [{bar:20}] {pos}/{len} {msg} ETA {eta}")
                                .expect("valid template")
                                .progress_chars("=> "),
                        );
                        b.set_prefix(format!("{} {epoch}/{}", self.id, self.epochs));
                        crate::term::bars().add(b)
                    });
                    bar.set_message(format!("loss {loss:.4} {images_per_s:.1} img/s"));
                    bar.set_position(done as u64);
                } else if self.last_line.elapsed().as_secs() >= 30 {
                    self.last_line = std::time::Instant::now();
                    crate::term::eprint_line(&format!("{}: epoch {epoch}/{}  batch {done}/{total}  loss {loss:.4}  {images_per_s:.1} img/s", self.id, self.epochs));
                }
            }
            train::Event::Epoch(l) => {
                if let Some(b) = self.bar.take() {
                    b.finish_and_clear();
                    crate::term::bars().remove(&b);
                }
                self.last_line = std::time::Instant::now();
                crate::term::eprint_line(&format!(
                    "{}: epoch {}/{}  lr {:.2e}  loss {:.4}  val loss {:.4}  val mIoU {:.4}  {:.1} img/s  {:.0} s",
                    self.id, l.epoch, self.epochs, l.lr, l.train_loss, l.val_loss, l.val_miou, l.images_per_s, l.seconds
                ));
            }
        }
    }
}

/// The image (16-bit `.npy`) and label map (8-bit PNG) of input `k`.
fn read_sample(inputs: &ItemInputs, k: usize, item: &str) -> Result<Sample> {
    let (img, lab) = super::pairs::read_image_pair(inputs, &format!("in{k}/")).map_err(|e| item_err!("crop `{item}`: {e}"))?;
    Ok(Sample { image: Arc::new(img), labels: Arc::new(lab) })
}

/// The training log as Parquet.
fn log_table(log: &[train::EpochLog]) -> Result<Vec<u8>> {
    let f = |g: fn(&train::EpochLog) -> f64| log.iter().map(g).collect::<Vec<f64>>();
    let mut df = DataFrame::new(
        log.len(),
        vec![
            Column::new("epoch".into(), log.iter().map(|l| l.epoch as u32).collect::<Vec<_>>()),
            Column::new("lr".into(), f(|l| l.lr)),
            Column::new("train_loss".into(), f(|l| l.train_loss)),
            Column::new("val_loss".into(), f(|l| l.val_loss)),
            Column::new("val_pa".into(), f(|l| l.val_pa)),
            Column::new("val_miou".into(), f(|l| l.val_miou)),
            Column::new("val_mca".into(), f(|l| l.val_mca)),
            Column::new("images_per_s".into(), f(|l| l.images_per_s)),
            Column::new("seconds".into(), f(|l| l.seconds)),
        ],
    )
    .map_err(|e| item_err!("building the training log: {e}"))?;
    crate::parquet::parquet_bytes(&mut df).map_err(|e| item_err!("writing the training log: {e}"))
}
