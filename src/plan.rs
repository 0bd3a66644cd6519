//! Planning: which items of which stages are fresh, which are stale and why, with no work done.
//!
//! An item's key covers its stage's kind, code version and params, the content hashes of its source
//! files, and the *results* of the upstream items it reads: a digest of their output objects (whose
//! names are content hashes) and metadata ([`Record::digest`]). Keying on results rather than on
//! upstream keys gives early cutoff: an upstream item recomputed to the same bytes (a split whose
//! assignment did not change, say) leaves everything below it fresh.
//!
//! So a key is known as soon as the results it reads are known. [`plan`] keys every item whose upstream
//! items are all fresh; an item that reads a stale one is [`ItemState::Pending`] until that one has run,
//! and the executor settles it then ([`Plan::settle`]), finding it fresh or stale. Before keying, a stage
//! may narrow an item's inputs to those that determine it (`train` keeps the crops of the training and
//! validation folds, so an edited test image never retrains: [`crate::stages::Stage::narrow`]).
//!
//! [`plan`] is a pure function of the pipeline, the known records and two lookups (source hashes, output
//! validity); `status` prints its result and `run` executes it.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::hash::{cache_key, hash_value, KeyParts};
use crate::pipeline::{Pipeline, StageDef};
use crate::stages::{InputSpec, UpstreamResults};
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
    /// The last attempt failed for a reason outside the item's content (I/O, disk space, a panic).
    TransientFailure,
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
            Reason::TransientFailure => "transient failure",
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
    /// Reads an upstream item that is stale (or itself pending): keyed once that one has run, when it
    /// may turn out fresh (the upstream result came out the same) or stale. The reason is what it will
    /// most likely be: a new item, or its upstream changed.
    Pending(Reason),
}

impl ItemState {
    /// Why the item is (or may be) recomputed: a pending item's upstream item is.
    pub fn reason(&self) -> Option<Reason> {
        match self {
            ItemState::Stale(r) => Some(*r),
            ItemState::Pending(r) => Some(*r),
            ItemState::Fresh(_) | ItemState::FreshFailed(_) => None,
        }
    }
}

/// One input of a planned item, as the stage declared it.
#[derive(Debug, Clone, PartialEq)]
pub enum PlannedInput {
    /// A source file or a per-item value: `(role, content hash)` as keyed.
    Fixed(String, String),
    /// An upstream item: which of the stage's inputs, its pipeline stage index, its item id.
    Upstream {
        /// Index among the stage's declared inputs.
        input: usize,
        /// Pipeline stage index.
        stage: usize,
        /// Item id.
        item: String,
    },
}

/// One item of a stage, planned.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedItem {
    /// Item id.
    pub id: String,
    /// Cache key (empty while pending).
    pub key: String,
    /// `(role, content hash or upstream result digest)` as hashed into the key (empty while pending).
    pub key_inputs: Vec<(String, String)>,
    /// Source files by role (role without the `src:` prefix).
    pub sources: Vec<(String, PathBuf)>,
    /// Upstream items the item reads, `(stage index in the pipeline, item id)`: every declared one
    /// while pending, those the stage kept ([`crate::stages::Stage::narrow`]) once keyed.
    pub upstream: Vec<(usize, String)>,
    /// Inputs as declared.
    pub inputs: Vec<PlannedInput>,
    /// Fresh, stale or pending.
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
    /// What is recorded for this stage (manifest and journal), by item id.
    known: HashMap<String, Record>,
    /// Recorded key -> id of the record to reuse for it (an ok one before a failure).
    by_key: HashMap<String, String>,
}

impl StagePlan {
    /// Counts: (fresh ok, stale or pending, cached failures).
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut c = (0, 0, 0);
        for i in &self.items {
            match i.state {
                ItemState::Fresh(_) => c.0 += 1,
                ItemState::Stale(_) | ItemState::Pending(_) => c.1 += 1,
                ItemState::FreshFailed(_) => c.2 += 1,
            }
        }
        c
    }

    /// The record on file for item `id` (manifest or journal), whatever its key.
    pub fn recorded(&self, id: &str) -> Option<&Record> {
        self.known.get(id)
    }

    /// Keys item `j` from the results of its upstream items and finds it fresh or stale. `result`
    /// gives an upstream item's record when it is known; when one is not, the item stays pending,
    /// or, with `last_chance` (the executor, whose upstream stages are done), is keyed as reading a
    /// missing result (its task then fails naming that item).
    fn settle(&mut self, sd: &StageDef, j: usize, result: &Results<'_>, objects: &dyn Objects, retry_failed: bool, last_chance: bool) {
        let it = &self.items[j];
        let mut ups: Vec<Upstream<'_>> = Vec::new();
        for inp in &it.inputs {
            if let PlannedInput::Upstream { input, stage, item } = inp {
                let record = result(*stage, item);
                if record.is_none() && !last_chance {
                    let why = if self.known.contains_key(&self.items[j].id) { Reason::UpstreamChanged } else { Reason::NewItem };
                    self.items[j].state = ItemState::Pending(why);
                    return;
                }
                ups.push(Upstream { input: *input, item: item.clone(), record });
            }
        }
        // A stage narrows only complete, successful inputs: otherwise it reads them all and fails
        // naming the one that failed. An error while narrowing keeps every input too (and the item's
        // own run reports it).
        let keep = if ups.iter().all(|u| u.record.is_some_and(|r| r.status == Status::Ok)) {
            sd.stage.narrow(&it.id, &UpstreamView { ups: &ups, objects }).ok().flatten().filter(|k| k.len() == ups.len())
        } else {
            None
        };
        let mut key_inputs = Vec::with_capacity(it.inputs.len());
        let mut upstream = Vec::with_capacity(ups.len());
        let mut ordinal: HashMap<usize, usize> = HashMap::new();
        let mut k = 0;
        for inp in &it.inputs {
            match inp {
                PlannedInput::Fixed(role, hash) => key_inputs.push((role.clone(), hash.clone())),
                PlannedInput::Upstream { input, stage, item } => {
                    let u = &ups[k];
                    k += 1;
                    if keep.as_ref().is_some_and(|m| !m[k - 1]) {
                        continue;
                    }
                    let n = ordinal.entry(*input).or_insert(0);
                    key_inputs.push((format!("in{input}.{n}"), u.record.map_or_else(|| "missing".to_string(), Record::digest)));
                    *n += 1;
                    upstream.push((*stage, item.clone()));
                }
            }
        }
        let key = cache_key(&KeyParts {
            kind: sd.stage.kind(),
            version: self.version,
            params_hash: &self.params_hash,
            inputs: &key_inputs,
            // Always the item id: a result may depend on it (a subject from the file name, a seed),
            // so two items with the same inputs must not share a record (the other's subject).
            item_id: Some(it.id.as_str()),
        });
        let recorded = self.by_key.get(&key).and_then(|id| self.known.get(id));
        let state = match recorded {
            // A reused record moves into the item (keys include the item id, so no other item has
            // this key): a no-op rerun copies no record. A later settle finds it there.
            Some(r) if r.status == Status::Ok && r.outputs.iter().all(|o| objects.output_ok(o)) => ItemState::Fresh(take(&mut self.known, &self.by_key[&key], &it.id)),
            Some(r) if r.status == Status::Failed && !retry_failed => ItemState::FreshFailed(take(&mut self.known, &self.by_key[&key], &it.id)),
            Some(r) if r.status == Status::Failed => ItemState::Stale(Reason::RetryFailed),
            Some(r) if r.status == Status::Transient => ItemState::Stale(Reason::TransientFailure),
            Some(_) => ItemState::Stale(Reason::OutputMissing),
            None => ItemState::Stale(match self.known.get(&it.id) {
                None => Reason::NewItem,
                Some(prev) => why_changed(prev, self.version, &self.params_hash, &key_inputs),
            }),
        };
        let it = &mut self.items[j];
        it.key = key;
        it.key_inputs = key_inputs;
        it.upstream = upstream;
        it.state = state;
    }
}

/// An upstream item's record when it is known: `(pipeline stage index, item id) -> record`.
pub type Results<'a> = dyn Fn(usize, &str) -> Option<&'a Record> + 'a;

/// One upstream item of an item being keyed.
struct Upstream<'a> {
    input: usize,
    item: String,
    record: Option<&'a Record>,
}

/// What [`crate::stages::Stage::narrow`] sees of the upstream items.
struct UpstreamView<'a, 'b> {
    ups: &'a [Upstream<'b>],
    objects: &'a dyn Objects,
}

impl UpstreamResults for UpstreamView<'_, '_> {
    fn len(&self) -> usize {
        self.ups.len()
    }
    fn input(&self, i: usize) -> usize {
        self.ups[i].input
    }
    fn item(&self, i: usize) -> &str {
        &self.ups[i].item
    }
    fn meta(&self, i: usize) -> Option<&std::collections::BTreeMap<String, crate::store::MetaValue>> {
        self.ups[i].record.filter(|r| r.status == Status::Ok).map(|r| &r.meta)
    }
    fn file(&self, i: usize, role: &str) -> Option<PathBuf> {
        let r = self.ups[i].record?;
        r.outputs.iter().find(|o| o.role == role).map(|o| self.objects.object_path(&o.file))
    }
}

/// The plan of a run: selected stages in topological order.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Planned stages.
    pub stages: Vec<StagePlan>,
    /// Whether cached failures are recomputed.
    retry_failed: bool,
}

impl Plan {
    /// The stage plan for pipeline stage index `stage`.
    pub fn stage(&self, stage: usize) -> Option<&StagePlan> {
        self.stages.iter().find(|s| s.stage == stage)
    }
    /// Number of stale and pending items over all stages.
    pub fn stale(&self) -> usize {
        self.stages.iter().map(|s| s.counts().1).sum()
    }
    /// Keys item `j` of `stages[k]` again now that its upstream stages have run (`result` knows every
    /// upstream record there is): a pending item becomes fresh or stale; a fresh one whose upstream
    /// item was recomputed stays fresh if that result came out the same; a stale one stays stale (an
    /// object found corrupt when planning, say) under the key of the inputs it will now read.
    pub fn settle(&mut self, pipeline: &Pipeline, k: usize, j: usize, result: &Results<'_>, objects: &dyn Objects) {
        let retry = self.retry_failed;
        let sp = &mut self.stages[k];
        let sd = &pipeline.stages[sp.stage];
        let before = sp.items[j].state.clone();
        // a record the item reused went into the item: it is known again for this keying
        if let ItemState::Fresh(r) | ItemState::FreshFailed(r) = &before {
            sp.known.insert(r.item_id.clone(), r.clone());
        }
        sp.settle(sd, j, result, objects, retry, true);
        if let ItemState::Stale(why) = before {
            if !matches!(sp.items[j].state, ItemState::Stale(_)) {
                sp.items[j].state = ItemState::Stale(why);
            }
        }
    }
}

/// The workspace's objects, as the planner sees them.
pub trait Objects {
    /// Whether a recorded output object is present and intact enough to reuse.
    fn output_ok(&self, out: &OutputRef) -> bool;
    /// The absolute path of a workspace-relative object file.
    fn object_path(&self, file: &str) -> PathBuf;
}

/// Lookups the planner needs from the outside world.
pub trait PlanEnv: Objects {
    /// Content hash of a source file.
    fn source_hash(&mut self, path: &std::path::Path) -> String;
}

/// Plans the selected stages.
///
/// `known[i]` holds what is recorded for stage `i` (manifest + journal), by item id.
pub fn plan(pipeline: &Pipeline, selected: &[bool], known: Vec<HashMap<String, Record>>, retry_failed: bool, env: &mut dyn PlanEnv) -> Result<Plan> {
    let mut known = known;
    known.resize_with(pipeline.stages.len(), HashMap::new);
    let mut stages: Vec<StagePlan> = Vec::new();
    // pipeline stage index -> (position in `stages`, item id -> position in its items)
    let mut index: HashMap<usize, (usize, HashMap<String, usize>)> = HashMap::new();
    for (si, sd) in pipeline.stages.iter().enumerate() {
        if !selected[si] {
            continue;
        }
        let stage = &sd.stage;
        let upstream_ids: Vec<Vec<String>> =
            sd.input_idx.iter().map(|u| index.get(u).map(|(k, _)| stages[*k].items.iter().map(|i| i.id.clone()).collect()).unwrap_or_default()).collect();
        let upstream_refs: Vec<&[String]> = upstream_ids.iter().map(Vec::as_slice).collect();
        let specs = stage.items(&upstream_refs).map_err(|e| Error::Execution(format!("stage `{}`: {e}", sd.id)))?;
        let mut items = Vec::with_capacity(specs.len());
        let mut seen = HashSet::new();
        for spec in specs {
            if !seen.insert(spec.id.clone()) {
                return Err(Error::Execution(format!("stage `{}` produced item id `{}` twice", sd.id, spec.id)));
            }
            let mut inputs = Vec::with_capacity(spec.inputs.len());
            let mut sources = Vec::new();
            let mut upstream = Vec::new();
            for input in &spec.inputs {
                match input {
                    InputSpec::Source { role, path } => {
                        inputs.push(PlannedInput::Fixed(format!("src:{role}"), env.source_hash(path)));
                        sources.push((role.clone(), path.clone()));
                    }
                    InputSpec::Value { role, value } => {
                        inputs.push(PlannedInput::Fixed(format!("val:{role}"), crate::hash::hash_bytes(value.as_bytes())));
                    }
                    InputSpec::Upstream { upstream: u, item } => {
                        let up_stage = *sd.input_idx.get(*u).ok_or_else(|| Error::Execution(format!("stage `{}` names input {u}, which it does not have", sd.id)))?;
                        if !index.get(&up_stage).is_some_and(|(_, ids)| ids.contains_key(item)) {
                            return Err(Error::Execution(format!("stage `{}` item `{}` needs `{}/{item}`, which does not exist", sd.id, spec.id, pipeline.stages[up_stage].id)));
                        }
                        inputs.push(PlannedInput::Upstream { input: *u, stage: up_stage, item: item.clone() });
                        upstream.push((up_stage, item.clone()));
                    }
                }
            }
            items.push(PlannedItem { id: spec.id, key: String::new(), key_inputs: Vec::new(), sources, upstream, inputs, state: ItemState::Pending(Reason::NewItem) });
        }
        items.sort_by(|a, b| a.id.cmp(&b.id));
        let known_here = std::mem::take(&mut known[si]);
        let mut by_key: HashMap<String, String> = HashMap::with_capacity(known_here.len());
        for r in known_here.values() {
            match by_key.get(&r.key).and_then(|id| known_here.get(id)) {
                // prefer an ok record, then a cached failure, then a transient one
                Some(cur) if rank(cur.status) <= rank(r.status) => {}
                _ => {
                    by_key.insert(r.key.clone(), r.item_id.clone());
                }
            }
        }
        let mut sp = StagePlan { stage: si, params_hash: hash_value(&sd.params_value()), version: stage.version(), items, known: known_here, by_key };
        {
            let result = |s: usize, item: &str| -> Option<&Record> {
                let (k, ids) = index.get(&s)?;
                match &stages[*k].items[*ids.get(item)?].state {
                    ItemState::Fresh(r) | ItemState::FreshFailed(r) => Some(r),
                    ItemState::Stale(_) | ItemState::Pending(_) => None,
                }
            };
            for j in 0..sp.items.len() {
                sp.settle(sd, j, &result, env, retry_failed, false);
            }
        }
        index.insert(si, (stages.len(), sp.items.iter().enumerate().map(|(j, i)| (i.id.clone(), j)).collect()));
        stages.push(sp);
    }
    Ok(Plan { stages, retry_failed })
}

/// Preference among records of one key: lower is better.
fn rank(s: Status) -> u8 {
    match s {
        Status::Ok => 0,
        Status::Failed => 1,
        Status::Transient => 2,
    }
}

/// Takes the record `rid` out of what is known, for item `id` (which it names).
fn take(known: &mut HashMap<String, Record>, rid: &str, id: &str) -> Record {
    let mut r = known.remove(rid).expect("looked up above");
    if r.item_id != id {
        r.item_id = id.to_string();
    }
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

pub mod settled;

#[cfg(test)]
mod tests;
