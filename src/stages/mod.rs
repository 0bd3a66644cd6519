//! Stage kinds: what each does to one item, and how its items are derived from its inputs.
//!
//! A stage is pure per item: given the item's input files (upstream outputs or source files) it returns
//! output bytes and a few metadata values. Everything about caching, scheduling and manifests lives in
//! [`crate::plan`], [`crate::exec`] and [`crate::store`]; a stage only declares
//! - its `kind` and code `version` (bump the version whenever the bytes it writes change),
//! - its canonical params (hashed into every item key),
//! - the items it will produce, derived from upstream item ids alone, so a whole run can be planned (and
//!   `status` answered) without computing anything.

mod annotations;
mod augment;
mod balanced_crop;
mod center_crop;
mod contact_sheet;
pub mod evaluate;
mod export;
mod ingest_cityscapes;
mod ingest_dicom;
mod ingest_png;
mod masks;
mod merge_masks;
mod phantom;
mod phantom_anatomy;
mod pairs;
pub mod subject;
pub mod split;
mod train;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::error::Result;
pub use crate::store::MetaValue;

pub use augment::Augment;
pub use balanced_crop::BalancedCrop;
pub use center_crop::CenterCrop;
pub use contact_sheet::ContactSheet;
pub use evaluate::Evaluate;
pub use export::Export;
pub use ingest_cityscapes::IngestCityscapes;
pub use ingest_dicom::IngestDicom;
pub use ingest_png::IngestPng;
pub use merge_masks::MergeMasks;
pub use phantom::PhantomStage;
pub use split::Split;
pub use train::Train;

/// The default `max_pixels` of the ingest stages: 64 M pixels (8192 x 8192), three times the largest
/// mammograms (a 4096 x 5120 detector is 21 M). Decoding one such 16-bit image needs about 0.5 GB; the
/// old default of 400 M let a single file ask for 2 GB.
pub const DEFAULT_MAX_PIXELS: u64 = 64_000_000;

/// Every stage kind a pipeline may name.
pub const KINDS: &[&str] = &["phantom", "ingest-png", "ingest-dicom", "ingest-cityscapes", "merge-masks", "split", "augment", "balanced-crop", "center-crop", "contact-sheet", "train", "evaluate", "export"];

/// What a stage needs to know at build time.
pub struct BuildCtx<'a> {
    /// The stage's id in the pipeline.
    pub stage_id: &'a str,
    /// The pipeline file (for `${MAMMOFLOW_DATA}`'s default).
    pub pipeline_file: &'a Path,
    /// `[pipeline] name`.
    pub pipeline_name: &'a str,
    /// Relative paths in params are relative to this folder (the pipeline file's).
    pub base_dir: &'a Path,
    /// The pipeline's seed.
    pub seed: u64,
    /// The workspace (for per-workspace state such as the pseudonym key).
    pub workspace: &'a Path,
    /// The stage's declared inputs (stage ids).
    pub inputs: &'a [String],
    /// The stages built before this one (every upstream stage among them): a stage that reports on
    /// others (`export`) finds the trainings and splits behind its inputs here.
    pub earlier: &'a [crate::export::StageRef],
}

impl BuildCtx<'_> {
    /// Expands `${VAR}`s and makes a path param absolute (relative to the pipeline file).
    pub fn resolve_path(&self, key: &str, p: &str) -> Result<PathBuf, ParamError> {
        let expanded = crate::vars::expand_vars(p, self.pipeline_file).map_err(|m| ParamError::at(key, m))?;
        let path = PathBuf::from(expanded);
        Ok(if path.is_absolute() { path } else { self.base_dir.join(path) })
    }
}

/// A problem with a stage's params: the message, the param key if one is to blame, a hint.
#[derive(Debug, Clone)]
pub struct ParamError {
    /// What is wrong.
    pub message: String,
    /// The param at fault (its line is reported).
    pub key: Option<String>,
    /// A `did you mean` or other hint.
    pub hint: Option<String>,
}

impl ParamError {
    /// An error about param `key`.
    pub fn at(key: &str, message: impl Into<String>) -> Self {
        ParamError { message: message.into(), key: Some(key.to_string()), hint: None }
    }
}

/// Deserialises a params table into a stage's typed `Params` (`deny_unknown_fields`, defaults).
///
/// The table is written back to TOML text and parsed from there, because errors from text carry a span,
/// from which the offending param key is recovered (errors from an in-memory value do not name it).
pub fn parse_params<P: DeserializeOwned>(table: &toml::Table) -> Result<P, ParamError> {
    let text = toml::to_string(table).map_err(|e| ParamError { message: e.to_string(), key: None, hint: None })?;
    toml::from_str::<P>(&text).map_err(|e| {
        let msg = e.message().trim().to_string();
        let key = e.span().and_then(|sp| key_at(&text, sp.start)).or_else(|| {
            msg.strip_prefix("unknown field `").and_then(|r| r.split('`').next()).map(str::to_string)
        });
        let hint = msg.strip_prefix("unknown field `").and_then(|rest| {
            let (field, tail) = rest.split_once('`')?;
            let expected: Vec<&str> = tail.split('`').skip(1).step_by(2).collect();
            crate::suggest::did_you_mean(field, expected.into_iter()).map(|h| format!("did you mean `{h}`?"))
        });
        let message = match &key {
            Some(k) if !msg.contains(&format!("`{k}`")) => format!("param `{k}`: {msg}"),
            _ => msg,
        };
        ParamError { message, key, hint }
    })
}

/// The top-level key whose line (or `[table]` section) contains byte `offset` of serialised params.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let upto = &text[..offset.min(text.len())];
    let line_start = upto.rfind('\n').map(|p| p + 1).unwrap_or(0);
    let line = text[line_start..].lines().next().unwrap_or("");
    // inside a `[section]`? then the section's first segment is the param
    if let Some(header) = upto.lines().rev().find(|l| l.trim_start().starts_with('[')) {
        let name = header.trim().trim_matches(|c| c == '[' || c == ']');
        return Some(name.split('.').next().unwrap_or(name).trim_matches('"').to_string());
    }
    let key = line.split('=').next()?.trim();
    (!key.is_empty()).then(|| key.split('.').next().unwrap_or(key).trim_matches('"').to_string())
}

/// How many upstream stages a stage takes.
#[derive(Debug, Clone, Copy)]
pub enum Arity {
    /// Exactly this many.
    Exactly(usize),
    /// Zero (reads sources itself) or one upstream stage.
    ZeroOrOne,
    /// From `.0` to `.1` upstream stages.
    Between(usize, usize),
    /// This many or more.
    AtLeast(usize),
}

impl Arity {
    /// Whether `n` inputs are acceptable.
    pub fn accepts(self, n: usize) -> bool {
        match self {
            Arity::Exactly(k) => n == k,
            Arity::ZeroOrOne => n <= 1,
            Arity::Between(a, b) => (a..=b).contains(&n),
            Arity::AtLeast(a) => n >= a,
        }
    }
    /// For messages.
    pub fn describe(self) -> String {
        match self {
            Arity::Exactly(0) => "no inputs".into(),
            Arity::Exactly(1) => "exactly one input stage".into(),
            Arity::Exactly(k) => format!("exactly {k} input stages"),
            Arity::ZeroOrOne => "zero or one input stage".into(),
            Arity::Between(a, b) => format!("{a} to {b} input stages"),
            Arity::AtLeast(a) => format!("at least {a} input stage{}", if a == 1 { "" } else { "s" }),
        }
    }
}

/// One input of an item, as planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputSpec {
    /// All outputs of an upstream item. `upstream` indexes the stage's inputs.
    Upstream { upstream: usize, item: String },
    /// A source file, hashed by content; `role` names it for the stage (`image`, `mask:fibroglandular`).
    Source { role: String, path: PathBuf },
    /// A per-item setting (one augmentation recipe, say), hashed into this item's key only, so changing
    /// it recomputes exactly the items that use it.
    Value { role: String, value: String },
}

/// An item a stage will produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemSpec {
    /// Item id, unique within the stage.
    pub id: String,
    /// Its inputs.
    pub inputs: Vec<InputSpec>,
}

/// The items of an ingest stage: one per upstream item (a `phantom` stage feeding it) or, with no input
/// stage, those `from_root` finds under its `root` param; naming both, or neither, is an error.
pub fn upstream_or_root<R>(kind: &str, upstream: &[&[String]], root: Option<R>, from_root: impl FnOnce(R) -> Result<Vec<ItemSpec>>) -> Result<Vec<ItemSpec>> {
    match (upstream.first(), root) {
        (Some(ids), None) => Ok(one_per_upstream_item(ids)),
        (None, Some(root)) => from_root(root),
        (Some(_), Some(_)) => Err(crate::item_err!("{kind}: give either `root` or an input stage, not both")),
        (None, None) => Err(crate::item_err!("{kind}: param `root` is required when the stage has no input stage")),
    }
}

/// The RNG of one random draw of a stage: seeded by (pipeline seed, stage id, item, index) and nothing
/// else, so a draw does not depend on which worker computes it, in which order, or on any other item.
pub fn item_rng(seed: u64, stage: &str, item: &str, index: usize) -> rand_chacha::ChaCha8Rng {
    use rand::SeedableRng;
    let h = blake3::hash(format!("{seed}\u{0}{stage}\u{0}{item}\u{0}{index}").as_bytes());
    rand_chacha::ChaCha8Rng::from_seed(*h.as_bytes())
}

/// One item per item of the (first) upstream stage, with the same id: the shape of every per-image stage.
pub fn one_per_upstream_item(ids: &[String]) -> Vec<ItemSpec> {
    ids.iter().map(|id| ItemSpec { id: id.clone(), inputs: vec![InputSpec::Upstream { upstream: 0, item: id.clone() }] }).collect()
}

/// The files handed to [`Stage::compute`], by role: source roles as planned, upstream outputs by their
/// output role.
#[derive(Debug, Clone, Default)]
pub struct ItemInputs {
    /// `(role, absolute path)`.
    pub files: Vec<(String, PathBuf)>,
    /// The manifest metadata of each upstream item, `(item id, columns)`, in input order: how values
    /// such as `subject` travel down the pipeline.
    pub meta: Vec<(String, BTreeMap<String, MetaValue>)>,
}

impl ItemInputs {
    /// The file with this role.
    pub fn file(&self, role: &str) -> Result<&Path> {
        self.files
            .iter()
            .find(|(r, _)| r == role)
            .map(|(_, p)| p.as_path())
            .ok_or_else(|| crate::item_err!("input `{role}` is missing"))
    }

    /// A metadata value of the (first) upstream item.
    pub fn upstream_meta(&self, name: &str) -> Option<&MetaValue> {
        self.meta.first().and_then(|(_, m)| m.get(name))
    }
}

/// The results of an item's upstream items, as [`Stage::narrow`] sees them (in input order).
pub trait UpstreamResults {
    /// Number of upstream items.
    fn len(&self) -> usize;
    /// Whether there are none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Which of the stage's declared inputs upstream item `i` comes from.
    fn input(&self, i: usize) -> usize;
    /// Its item id.
    fn item(&self, i: usize) -> &str;
    /// Its manifest metadata (`None` if it failed).
    fn meta(&self, i: usize) -> Option<&BTreeMap<String, MetaValue>>;
    /// The absolute path of its output `role`.
    fn file(&self, i: usize, role: &str) -> Option<PathBuf>;
}


/// One output file of an item.
#[derive(Debug, Clone)]
pub struct OutFile {
    /// Role (`image`, `mask:nipple`).
    pub role: String,
    /// File extension, for humans and tools (`npy`, `png`).
    pub ext: &'static str,
    /// Content.
    pub bytes: Vec<u8>,
}

/// What computing one item produced.
#[derive(Debug, Clone, Default)]
pub struct ItemOutput {
    /// Output files.
    pub files: Vec<OutFile>,
    /// Manifest metadata.
    pub meta: BTreeMap<String, MetaValue>,
}

/// A stage kind's implementation.
pub trait Stage: Send + Sync {
    /// The kind name used in pipeline files.
    fn kind(&self) -> &'static str;
    /// Code version: bump when the output bytes for the same inputs and params change.
    fn version(&self) -> u32;
    /// Accepted number of upstream stages.
    fn arity(&self) -> Arity;
    /// Canonical params (defaults filled in, paths resolved) hashed into every key. Source *paths* do not
    /// belong here: sources enter keys by content.
    fn params(&self) -> serde_json::Value;
    /// The items this stage produces, from the item ids of each upstream stage (in declared input order).
    fn items(&self, upstream: &[&[String]]) -> Result<Vec<ItemSpec>>;
    /// Creates what the stage needs in the workspace before a run (the DICOM pseudonym key). Only
    /// `run` calls it, so `status` and `dag` write nothing.
    fn prepare(&self) -> Result<()> {
        Ok(())
    }
    /// Whether the stage's items gather many items of declared input `input` (split, contact sheet,
    /// training, export): a failed one among them is left out under `on_failed_inputs = "skip"` (the
    /// default) instead of failing the whole item.
    fn gathers(&self, _input: usize) -> bool {
        false
    }
    /// Which of an item's upstream items determine its result, once their results are known (`None`:
    /// all of them). Only those enter the key and reach [`Stage::compute`]: `train` keeps the crops of
    /// the training and validation folds, so an edited test image never retrains. Called only when
    /// every upstream item succeeded; an error keeps every input (and `compute` reports the problem).
    fn narrow(&self, _id: &str, _upstream: &dyn UpstreamResults) -> Result<Option<Vec<bool>>> {
        Ok(None)
    }
    /// Whether output `role` is published for people as `pictures/<stage id><suffix>` (a contact sheet's
    /// PNG): the suffix, or `None`. The executor copies what a stage marks and knows no stage.
    fn publishes(&self, _role: &str) -> Option<&'static str> {
        None
    }
    /// Computes one item.
    fn compute(&self, id: &str, inputs: &ItemInputs) -> Result<ItemOutput>;
}

/// Builds a stage from its kind and params.
pub fn build(kind: &str, params: &toml::Table, ctx: &BuildCtx<'_>) -> Result<Arc<dyn Stage>, ParamError> {
    Ok(match kind {
        "phantom" => Arc::new(PhantomStage::new(parse_params(params)?, ctx)?),
        "ingest-png" => Arc::new(IngestPng::new(parse_params(params)?, ctx)?),
        "ingest-dicom" => Arc::new(IngestDicom::new(parse_params(params)?, ctx)?),
        "ingest-cityscapes" => Arc::new(IngestCityscapes::new(parse_params(params)?, ctx)?),
        "merge-masks" => Arc::new(MergeMasks::new(parse_params(params)?, ctx)?),
        "split" => Arc::new(Split::new(parse_params(params)?, ctx)?),
        "augment" => Arc::new(Augment::new(parse_params(params)?, ctx)?),
        "balanced-crop" => Arc::new(BalancedCrop::new(parse_params(params)?, ctx)?),
        "contact-sheet" => Arc::new(ContactSheet::new(parse_params(params)?, ctx)?),
        "center-crop" => Arc::new(CenterCrop::new(parse_params(params)?)?),
        "train" => Arc::new(Train::new(parse_params(params)?, ctx)?),
        "evaluate" => Arc::new(Evaluate::new(parse_params(params)?, ctx)?),
        "export" => Arc::new(Export::new(parse_params(params)?, ctx)?),
        other => return Err(ParamError { message: format!("unknown stage kind `{other}`"), key: None, hint: None }),
    })
}
