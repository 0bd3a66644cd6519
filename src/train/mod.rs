//! Training one network as the study did: SGD with momentum and L2, a step learning-rate schedule,
//! class-weighted cross-entropy, validation every epoch, early stopping, the best epoch's weights kept.
//!
//! [`fit`] is independent of pipelines: the `train` stage gathers the samples, class weights and
//! hyper-parameters and stores what it returns. With a state folder, every finished epoch leaves a
//! checkpoint there (weights, momentum buffers, the log and the early-stopping counters, written to a
//! temporary file and renamed), and a later call with the same folder resumes after the last finished
//! epoch. Batches, augmentations and dropout masks are drawn from `(seed, epoch, batch)`, and our
//! kernels reduce in a fixed order, so a resumed training ends with the weights an uninterrupted one
//! would have from the same initial weights.

pub mod loader;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

use crate::metrics::Confusion;
use crate::models::{self, ModelSpec};
use crate::nn::{weighted_cross_entropy, SgdMomentum};
pub use loader::{Augment, Sample};
use loader::{epoch_order, for_each_batch, mix, Shape};

/// What early stopping and the best checkpoint watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Monitor {
    /// Validation mean IoU (higher is better).
    ValMiou,
    /// Validation loss (lower is better).
    ValLoss,
}

/// Hyper-parameters of one training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hyper {
    /// Most epochs.
    pub epochs: usize,
    /// Images per step.
    pub batch: usize,
    /// Initial learning rate.
    pub lr: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// L2 weight decay.
    pub weight_decay: f64,
    /// The learning rate is multiplied by `lr_gamma` every `lr_step` epochs (0: never).
    pub lr_step: usize,
    /// See `lr_step`.
    pub lr_gamma: f64,
    /// Stop after this many epochs without improvement of `monitor` (0: never stop early).
    pub patience: usize,
    /// What decides the best epoch.
    pub monitor: Monitor,
    /// Seed of the batches' order, the augmentations and dropout.
    pub seed: u64,
    /// Training-batch augmentations.
    pub augment: Augment,
    /// Variables whose names start with one of these stay as they are (on top of what the network
    /// itself keeps fixed, e.g. Dilation10's front end while its context module trains).
    #[serde(default)]
    pub freeze: Vec<String>,
}

/// One epoch's line of the training log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochLog {
    /// 1-based.
    pub epoch: usize,
    /// Learning rate used.
    pub lr: f64,
    /// Mean training loss over the epoch's images.
    pub train_loss: f64,
    /// Mean validation loss (NaN without validation images).
    pub val_loss: f64,
    /// Validation pixel accuracy (NaN when undefined).
    pub val_pa: f64,
    /// Validation mean IoU.
    pub val_miou: f64,
    /// Validation mean per-class accuracy.
    pub val_mca: f64,
    /// Training images per second.
    pub images_per_s: f64,
    /// Wall time of the epoch, validation included.
    pub seconds: f64,
}

/// What a training tells its caller while it runs.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// A training batch finished: `done` of `total` in epoch `epoch` (1-based), the mean loss so far
    /// in this epoch and the images per second.
    Batch { epoch: usize, done: usize, total: usize, loss: f64, images_per_s: f64 },
    /// An epoch finished (validation included).
    Epoch(&'a EpochLog),
}

/// The data of one training.
pub struct Data<'a> {
    /// Training samples (crops at least the network's input size).
    pub train: &'a [Sample],
    /// Validation samples; empty: the best epoch is the one with the lowest training loss.
    pub val: &'a [Sample],
    /// Per-class loss weights.
    pub weights: Vec<f32>,
    /// Label ignored by the loss and the metrics (must not be a class id).
    pub ignore: Option<u8>,
}

/// What a training produced.
pub struct Fitted {
    /// Weights of the best epoch, safetensors bytes with the model spec in the metadata.
    pub best: Vec<u8>,
    /// Weights after the last epoch, same format.
    pub last: Vec<u8>,
    /// One line per epoch.
    pub log: Vec<EpochLog>,
    /// The best epoch (1-based).
    pub best_epoch: usize,
    /// Whether early stopping ended it.
    pub stopped_early: bool,
}

/// Where a training stands between epochs; stored in the state folder's metadata.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Progress {
    epochs_done: usize,
    best_score: f64,
    best_epoch: usize,
    bad_epochs: usize,
    log: Vec<EpochLog>,
}

/// Metadata key of the model spec in every checkpoint: `predict` and `evaluate` rebuild the network
/// from it alone.
pub const SPEC_KEY: &str = "mammoflow.model";
const PROGRESS_KEY: &str = "mammoflow.progress";
const MOMENTUM_PREFIX: &str = "momentum/";

/// Trains `spec` on `data`. `init`: a checkpoint whose variables of the same names start the training
/// (the previous stage of FCN32 -> 16 -> 8 or Dilation10 front -> context -> global). `state`: the
/// resume folder. `max_epochs_now` stops after that many epochs in this call (a simulated kill, for
/// tests), returning `Ok(None)`. `report` hears every finished batch and epoch.
pub fn fit(
    spec: &ModelSpec,
    hyper: &Hyper,
    data: &Data<'_>,
    init: Option<&Path>,
    state: Option<&Path>,
    max_epochs_now: Option<usize>,
    report: &mut dyn FnMut(Event<'_>),
) -> crate::Result<Option<Fitted>> {
    let err = |what: &str, e: &dyn std::fmt::Display| crate::item_err!("{what}: {e}");
    let device = Device::Cpu;
    let [ih, iw] = spec.input_hw();
    if ih != iw {
        return Err(crate::item_err!("training needs a square network input, got {ih}x{iw}"));
    }
    if data.train.is_empty() {
        return Err(crate::item_err!("no training images (is the train fold empty?)"));
    }
    if let Some(ig) = data.ignore {
        if (ig as usize) < spec.classes {
            return Err(crate::item_err!("ignore label {ig} is one of the {} classes", spec.classes));
        }
    }
    for (which, set) in [("training", data.train), ("validation", data.val)] {
        if let Some(s) = set.iter().find(|s| s.image.channels != 1 && s.image.channels != spec.in_channels) {
            return Err(crate::item_err!("a {which} image has {} channels but the network takes {}", s.image.channels, spec.in_channels));
        }
        if let Some(s) = set.iter().find(|s| s.image.width < ih || s.image.height < ih) {
            return Err(crate::item_err!("a {which} crop is {}x{}, smaller than the network input {ih}: use larger crops or a smaller `input`", s.image.width, s.image.height));
        }
    }
    // candle's CPU generator cannot be seeded: the initial weights of a training started from scratch
    // are its own draw (a resumed one continues from the stored weights; `init` fixes them).
    let mut varmap = VarMap::new();
    let model = models::build(spec, &mut varmap, DType::F32, &device).map_err(|e| err("building the network", &e))?;
    if let Some(p) = init {
        let r = models::init::init_from(&varmap, p).map_err(|e| err(&format!("initialising from {}", p.display()), &e))?;
        if r.loaded.is_empty() {
            return Err(crate::item_err!("initialising from {}: it shares no variable with a {} network", p.display(), spec.arch));
        }
    }
    let mut named = models::trainable_vars(model.as_ref(), &varmap);
    if !hyper.freeze.is_empty() {
        let all: Vec<String> = varmap.data().lock().expect("varmap lock").keys().cloned().collect();
        if let Some(p) = hyper.freeze.iter().find(|p| !all.iter().any(|n| n.starts_with(p.as_str()))) {
            let mut some: Vec<&str> = all.iter().map(|n| n.split('.').next().unwrap_or(n)).collect();
            some.sort_unstable();
            some.dedup();
            return Err(crate::item_err!("freeze: no variable of a {} network starts with `{p}` (its top-level names: {})", spec.arch, some.join(", ")));
        }
        named.retain(|(n, _)| !hyper.freeze.iter().any(|p| n.starts_with(p.as_str())));
        if named.is_empty() {
            return Err(crate::item_err!("freeze: every trainable variable is frozen, nothing would train"));
        }
    }
    let names: Vec<String> = named.iter().map(|(n, _)| n.clone()).collect();
    let mut opt = SgdMomentum::new(named.into_iter().map(|(_, v)| v).collect(), hyper.lr, hyper.momentum, hyper.weight_decay);
    let (oh, ow) = model.output_size(ih, ih);
    let shape = Shape { input: ih, output: (oh, ow), channels: spec.in_channels };

    let mut progress = Progress { epochs_done: 0, best_score: f64::NEG_INFINITY, best_epoch: 0, bad_epochs: 0, log: Vec::new() };
    let mut best: Option<Vec<u8>> = None;
    if let Some(dir) = state {
        if let Some(p) = resume(dir, &varmap, &mut opt, &names)? {
            progress = p;
            best = std::fs::read(dir.join("best.safetensors")).ok();
        }
    }
    let mut ran = 0;
    let mut stopped_early = false;
    while progress.epochs_done < hyper.epochs {
        if hyper.patience > 0 && progress.bad_epochs >= hyper.patience {
            stopped_early = true;
            break;
        }
        if max_epochs_now.is_some_and(|m| ran >= m) {
            return Ok(None);
        }
        let epoch = progress.epochs_done;
        let lr = epoch.checked_div(hyper.lr_step).map_or(hyper.lr, |k| hyper.lr * hyper.lr_gamma.powi(k as i32));
        opt.lr = lr;
        let t0 = Instant::now();
        let order = epoch_order(data.train.len(), hyper.seed, epoch);
        let (mut loss_sum, mut seen) = (0.0f64, 0usize);
        let total = data.train.len().div_ceil(hyper.batch);
        for_each_batch(data.train, &order, hyper.batch, shape, Some(hyper.augment), mix(&[hyper.seed, epoch as u64, 1]), 1, |k, b| {
            crate::nn::kernels::elementwise::set_dropout_seed(mix(&[hyper.seed, epoch as u64, k as u64, 2]));
            let x = Tensor::from_vec(b.x, (b.n, shape.channels, ih, ih), &device).map_err(|e| err("batch", &e))?;
            let t = Tensor::from_vec(b.t, (b.n, oh, ow), &device).map_err(|e| err("batch", &e))?;
            let y = model.forward_t(&x, true).map_err(|e| err("forward pass", &e))?;
            let loss = weighted_cross_entropy(&y, &t, Some(&data.weights)).map_err(|e| err("loss", &e))?;
            let l = loss.to_scalar::<f32>().map_err(|e| err("loss", &e))? as f64;
            if !l.is_finite() {
                return Err(crate::item_err!("the training loss became {l} in epoch {} (lower the learning rate?)", epoch + 1));
            }
            opt.backward_step(&loss).map_err(|e| err("backward pass", &e))?;
            loss_sum += l * b.n as f64;
            seen += b.n;
            let images_per_s = seen as f64 / t0.elapsed().as_secs_f64().max(1e-9);
            report(Event::Batch { epoch: epoch + 1, done: k + 1, total, loss: loss_sum / seen as f64, images_per_s });
            Ok(())
        })?;
        let train_secs = t0.elapsed().as_secs_f64();
        let train_loss = loss_sum / seen.max(1) as f64;
        let (val_loss, confusion) = validate(model.as_ref(), spec.classes, data, shape)?;
        let m = confusion.metrics();
        let nan = |v: Option<f64>| v.unwrap_or(f64::NAN);
        let line = EpochLog {
            epoch: epoch + 1,
            lr,
            train_loss,
            val_loss,
            val_pa: nan(m.pixel_accuracy),
            val_miou: nan(m.mean_iou),
            val_mca: nan(m.mean_class_accuracy),
            images_per_s: seen as f64 / train_secs.max(1e-9),
            seconds: t0.elapsed().as_secs_f64(),
        };
        let score = match (data.val.is_empty(), hyper.monitor) {
            (true, _) => -train_loss,
            (false, Monitor::ValMiou) => m.mean_iou.unwrap_or(f64::NEG_INFINITY),
            (false, Monitor::ValLoss) => -val_loss,
        };
        report(Event::Epoch(&line));
        progress.log.push(line);
        progress.epochs_done = epoch + 1;
        if score > progress.best_score {
            progress.best_score = score;
            progress.best_epoch = epoch + 1;
            progress.bad_epochs = 0;
            best = Some(checkpoint(&varmap, spec)?);
        } else {
            progress.bad_epochs += 1;
        }
        if let Some(dir) = state {
            save_state(dir, &varmap, &opt, spec, &names, &progress, best.as_deref(), progress.best_epoch == epoch + 1)?;
        }
        ran += 1;
    }
    let last = checkpoint(&varmap, spec)?;
    Ok(Some(Fitted { best: best.unwrap_or_else(|| last.clone()), last, best_epoch: progress.best_epoch, log: progress.log, stopped_early }))
}

/// Mean validation loss and the summed confusion matrix of the centre windows.
fn validate(model: &dyn models::SegModel, classes: usize, data: &Data<'_>, shape: Shape) -> crate::Result<(f64, Confusion)> {
    let err = |what: &str, e: &dyn std::fmt::Display| crate::item_err!("validation {what}: {e}");
    let mut confusion = Confusion::new(classes);
    let (mut loss_sum, mut seen) = (0.0, 0usize);
    let order: Vec<usize> = (0..data.val.len()).collect();
    let (oh, ow) = shape.output;
    for_each_batch(data.val, &order, 4, shape, None, 0, 1, |_, b| {
        let x = Tensor::from_vec(b.x, (b.n, shape.channels, shape.input, shape.input), &Device::Cpu).map_err(|e| err("batch", &e))?;
        let t = Tensor::from_vec(b.t.clone(), (b.n, oh, ow), &Device::Cpu).map_err(|e| err("batch", &e))?;
        let y = model.forward_t(&x, false).map_err(|e| err("forward pass", &e))?;
        let l = weighted_cross_entropy(&y, &t, Some(&data.weights)).and_then(|l| l.to_scalar::<f32>()).map_err(|e| err("loss", &e))? as f64;
        if l.is_finite() {
            loss_sum += l * b.n as f64;
            seen += b.n;
        }
        let pred: Vec<u8> = y.argmax(1).and_then(|p| p.flatten_all()).and_then(|p| p.to_vec1::<u32>()).map_err(|e| err("argmax", &e))?.into_iter().map(|v| v as u8).collect();
        let truth: Vec<u8> = b.t.iter().map(|&v| v as u8).collect();
        confusion.add(&truth, &pred, data.ignore).map_err(|e| crate::item_err!("validation labels: {e}"))?;
        Ok(())
    })?;
    Ok((if seen > 0 { loss_sum / seen as f64 } else { f64::NAN }, confusion))
}

/// Every variable of the network as safetensors bytes, the model spec in the header.
fn checkpoint(varmap: &VarMap, spec: &ModelSpec) -> crate::Result<Vec<u8>> {
    serialize(variables(varmap), spec, None)
}

/// The network's variables, sorted by name.
fn variables(varmap: &VarMap) -> Vec<(String, Tensor)> {
    let data = varmap.data().lock().expect("varmap lock");
    let mut tensors: Vec<(String, Tensor)> = data.iter().map(|(n, v)| (n.clone(), v.as_tensor().clone())).collect();
    drop(data);
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    tensors
}

fn serialize(tensors: Vec<(String, Tensor)>, spec: &ModelSpec, extra: Option<(&str, String)>) -> crate::Result<Vec<u8>> {
    let mut meta = HashMap::new();
    meta.insert(SPEC_KEY.to_string(), serde_json::to_string(spec).expect("a model spec serialises"));
    if let Some((k, v)) = extra {
        meta.insert(k.to_string(), v);
    }
    safetensors::serialize(tensors.iter().map(|(n, t)| (n.as_str(), t)), Some(meta)).map_err(|e| crate::item_err!("writing a checkpoint: {e}"))
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a kill leaves the old file or
/// the new one, never half of one.
fn write_atomic(path: &Path, bytes: &[u8]) -> crate::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, path)).map_err(|e| crate::item_err!("writing {}: {e}", path.display()))
}

#[allow(clippy::too_many_arguments)]
fn save_state(dir: &Path, varmap: &VarMap, opt: &SgdMomentum, spec: &ModelSpec, names: &[String], progress: &Progress, best: Option<&[u8]>, best_changed: bool) -> crate::Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| crate::item_err!("creating {}: {e}", dir.display()))?;
    // The best weights first: a state that names epoch e as best always has e's weights beside it.
    if let (true, Some(b)) = (best_changed, best) {
        write_atomic(&dir.join("best.safetensors"), b)?;
    }
    let mut tensors = variables(varmap);
    for (name, buf) in names.iter().zip(opt.buffers()) {
        if let Some(b) = buf {
            tensors.push((format!("{MOMENTUM_PREFIX}{name}"), b));
        }
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let bytes = serialize(tensors, spec, Some((PROGRESS_KEY, serde_json::to_string(progress).expect("progress serialises"))))?;
    write_atomic(&dir.join("state.safetensors"), &bytes)
}

/// Loads the state folder's checkpoint into `varmap` and `opt`; `None` when there is none.
fn resume(dir: &Path, varmap: &VarMap, opt: &mut SgdMomentum, names: &[String]) -> crate::Result<Option<Progress>> {
    let path: PathBuf = dir.join("state.safetensors");
    let Ok(bytes) = std::fs::read(&path) else { return Ok(None) };
    let bad = |e: &dyn std::fmt::Display| crate::item_err!("resuming from {}: {e}", path.display());
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(&e))?;
    let progress: Progress = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get(PROGRESS_KEY))
        .ok_or_else(|| bad(&"no progress record"))
        .and_then(|s| serde_json::from_str(s).map_err(|e| bad(&e)))?;
    let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).map_err(|e| bad(&e))?;
    let data = varmap.data().lock().expect("varmap lock");
    for (name, var) in data.iter() {
        let t = tensors.get(name).ok_or_else(|| bad(&format!("variable `{name}` missing")))?;
        var.set(t).map_err(|e| bad(&e))?;
    }
    drop(data);
    let buffers = names.iter().map(|n| tensors.get(&format!("{MOMENTUM_PREFIX}{n}")).cloned()).collect();
    opt.set_buffers(buffers);
    Ok(Some(progress))
}

/// The model spec stored in a checkpoint's metadata.
pub fn checkpoint_spec(bytes: &[u8]) -> Result<ModelSpec, String> {
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| format!("not a safetensors file: {e}"))?;
    let s = meta.metadata().as_ref().and_then(|m| m.get(SPEC_KEY)).ok_or("no model spec in its metadata (not written by mammoflow?)")?;
    serde_json::from_str(s).map_err(|e| format!("its model spec does not parse: {e}"))
}

#[cfg(test)]
mod tests;
