//! Planning: which items of which stages are fresh, which are stale and why, with no work done.
//!
//! Keys depend only on kinds, versions, params and input keys (or source content hashes), so the key of
//! every item of every stage can be computed before anything runs: an item whose upstream is stale gets a
//! new key at once. [`plan`] is a pure function of the pipeline, the known records and two lookups
//! (source hashes, output validity); `status` prints its result and `run` executes it.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::hash::{cache_key, hash_value, KeyParts};
use crate::pipeline::Pipeline;
use crate::stages::InputSpec;
use crate::store::{OutputRef, Record, Status};

/// Why an item must be (re)computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// No record for this item id.
    NewItem,
    /// A source file's content changed.
    SourceChanged,
    /// The stage's params changed.
    ParamsChanged,
    /// The stage's code version changed.
    CodeVersionChanged,
    /// An upstream item's key changed.
    UpstreamChanged,
    /// Same key, but an output object is missing, truncated or corrupt.
    OutputMissing,
    /// Same key, failed before, and `--retry-failed` was given.
    RetryFailed,
}

impl Reason {
    /// The wording used in `status` output and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NewItem => "new item",
            Reason::SourceChanged => "source changed",
            Reason::ParamsChanged => "params changed",
            Reason::CodeVersionChanged => "code version changed",
            Reason::UpstreamChanged => "upstream changed",
            Reason::OutputMissing => "output missing",
            Reason::RetryFailed => "retry failed",
        }
    }
}

/// State of one planned item.
#[derive(Debug, Clone, PartialEq)]
pub enum ItemState {
    /// Cached result, reused.
    Fresh(Record),
    /// Cached deterministic failure (same key failed before).
    FreshFailed(Record),
    /// Must be computed.
    Stale(Reason),
}

/// One item of a stage, planned.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedItem {
    /// Item id.
    pub id: String,
    /// Cache key.
    pub key: String,
    /// `(role, key or content hash)` as hashed into the key.
    pub key_inputs: Vec<(String, String)>,
    /// Source files by role (role without the `src:` prefix).
    pub sources: Vec<(String, PathBuf)>,
    /// Upstream items: `(stage index in the pipeline, item id)`.
    pub upstream: Vec<(usize, String)>,
    /// Fresh or stale.
    pub state: ItemState,
}

/// One stage, planned.
#[derive(Debug, Clone)]
pub struct StagePlan {
    /// Index in [`Pipeline::stages`].
    pub stage: usize,
    /// Params hash.
    pub params_hash: String,
    /// Code version.
    pub version: u32,
    /// Items, sorted by id.
    pub items: Vec<PlannedItem>,
}

impl StagePlan {
    /// Counts: (fresh ok, stale, cached failures).
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut c = (0, 0, 0);
        for i in &self.items {
            match i.state {
                ItemState::Fresh(_) => c.0 += 1,
                ItemState::Stale(_) => c.1 += 1,
                ItemState::FreshFailed(_) => c.2 += 1,
            }
        }
        c
    }
}

/// The plan of a run: selected stages in topological order.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Planned stages.
    pub stages: Vec<StagePlan>,
}

impl Plan {
    /// The stage plan for pipeline stage index `stage`.
    pub fn stage(&self, stage: usize) -> Option<&StagePlan> {
        self.stages.iter().find(|s| s.stage == stage)
    }
    /// Number of stale items over all stages.
    pub fn stale(&self) -> usize {
        self.stages.iter().map(|s| s.counts().1).sum()
    }
}

/// Lookups the planner needs from the outside world.
pub trait PlanEnv {
    /// Content hash of a source file.
    fn source_hash(&mut self, path: &std::path::Path) -> String;
    /// Whether a recorded output object is present and intact enough to reuse.
    fn output_ok(&self, out: &OutputRef) -> bool;
}

/// Plans the selected stages.
///
/// `known[i]` holds what is recorded for stage `i` (manifest + journal), by item id.
pub fn plan(pipeline: &Pipeline, selected: &[bool], known: &[HashMap<String, Record>], retry_failed: bool, env: &mut dyn PlanEnv) -> Result<Plan> {
    let mut stages: Vec<StagePlan> = Vec::new();
    // stage index -> (item id -> key) for upstream lookups
    let mut keys: HashMap<usize, HashMap<String, String>> = HashMap::new();
    let mut ids: HashMap<usize, Vec<String>> = HashMap::new();
    for (si, sd) in pipeline.stages.iter().enumerate() {
        if !selected[si] {
            continue;
        }
        let stage = &sd.stage;
        let params_hash = hash_value(&stage.params());
        let version = stage.version();
        let upstream_ids: Vec<&[String]> = sd.input_idx.iter().map(|u| ids.get(u).map(Vec::as_slice).unwrap_or(&[])).collect();
        let specs = stage.items(&upstream_ids).map_err(|e| Error::Execution(format!("stage `{}`: {e}", sd.id)))?;
        let mut by_key: HashMap<&str, &Record> = HashMap::new();
        for r in known[si].values() {
            by_key.entry(r.key.as_str()).and_modify(|cur| {
                if cur.status != Status::Ok && r.status == Status::Ok {
                    *cur = r;
                }
            }).or_insert(r);
        }
        let mut items = Vec::with_capacity(specs.len());
        let mut seen = std::collections::HashSet::new();
        for spec in specs {
            if !seen.insert(spec.id.clone()) {
                return Err(Error::Execution(format!("stage `{}` produced item id `{}` twice", sd.id, spec.id)));
            }
            let mut key_inputs = Vec::new();
            let mut sources = Vec::new();
            let mut upstream = Vec::new();
            let mut ordinal: HashMap<usize, usize> = HashMap::new();
            for input in &spec.inputs {
                match input {
                    InputSpec::Source { role, path } => {
                        key_inputs.push((format!("src:{role}"), env.source_hash(path)));
                        sources.push((role.clone(), path.clone()));
                    }
                    InputSpec::Value { role, value } => {
                        key_inputs.push((format!("val:{role}"), crate::hash::hash_bytes(value.as_bytes())));
                    }
                    InputSpec::Upstream { upstream: u, item } => {
                        let up_stage = *sd.input_idx.get(*u).ok_or_else(|| Error::Execution(format!("stage `{}` names input {u}, which it does not have", sd.id)))?;
                        let k = keys.get(&up_stage).and_then(|m| m.get(item)).ok_or_else(|| {
                            Error::Execution(format!("stage `{}` item `{}` needs `{}/{item}`, which does not exist", sd.id, spec.id, pipeline.stages[up_stage].id))
                        })?;
                        let n = ordinal.entry(*u).or_insert(0);
                        key_inputs.push((format!("in{u}.{n}"), k.clone()));
                        *n += 1;
                        upstream.push((up_stage, item.clone()));
                    }
                }
            }
            let key = cache_key(&KeyParts {
                kind: stage.kind(),
                version,
                params_hash: &params_hash,
                inputs: &key_inputs,
                item_id: stage.key_includes_item_id().then_some(spec.id.as_str()),
            });
            let state = match by_key.get(key.as_str()) {
                Some(r) if r.status == Status::Ok && r.outputs.iter().all(|o| env.output_ok(o)) => ItemState::Fresh(with_id(r, &spec.id)),
                Some(r) if r.status == Status::Failed && !retry_failed => ItemState::FreshFailed(with_id(r, &spec.id)),
                Some(r) if r.status == Status::Failed => ItemState::Stale(Reason::RetryFailed),
                Some(_) => ItemState::Stale(Reason::OutputMissing),
                None => ItemState::Stale(match known[si].get(&spec.id) {
                    None => Reason::NewItem,
                    Some(prev) => why_changed(prev, version, &params_hash, &key_inputs),
                }),
            };
            items.push(PlannedItem { id: spec.id, key, key_inputs, sources, upstream, state });
        }
        items.sort_by(|a, b| a.id.cmp(&b.id));
        keys.insert(si, items.iter().map(|i| (i.id.clone(), i.key.clone())).collect());
        ids.insert(si, items.iter().map(|i| i.id.clone()).collect());
        stages.push(StagePlan { stage: si, params_hash, version, items });
    }
    Ok(Plan { stages })
}

/// A cached record reused under another item id keeps the new id.
fn with_id(r: &Record, id: &str) -> Record {
    let mut r = r.clone();
    r.item_id = id.to_string();
    r
}

/// The cheapest explanation first, as DVC's `changed()` does.
fn why_changed(prev: &Record, version: u32, params_hash: &str, inputs: &[(String, String)]) -> Reason {
    if prev.version != version {
        return Reason::CodeVersionChanged;
    }
    if prev.params_hash != params_hash {
        return Reason::ParamsChanged;
    }
    let old: HashMap<&str, &str> = prev.inputs.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let differs = |(role, h): &&(String, String)| old.get(role.as_str()) != Some(&h.as_str());
    if inputs.iter().filter(|(r, _)| r.starts_with("src:")).any(|x| differs(&x)) {
        return Reason::SourceChanged;
    }
    if inputs.iter().filter(|(r, _)| r.starts_with("val:")).any(|x| differs(&x)) {
        return Reason::ParamsChanged;
    }
    if inputs.iter().any(|x| differs(&x)) || old.len() != inputs.len() {
        return Reason::UpstreamChanged;
    }
    Reason::ParamsChanged
}

#[cfg(test)]
mod tests;
