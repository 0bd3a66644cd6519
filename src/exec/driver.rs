//! The driver: turns a plan into tasks stage by stage, journals results as they arrive and writes each
//! stage's manifest when the stage is complete.

use std::collections::{HashMap, HashSet};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::Arc;
use std::time::Instant;

use super::progress::{ProgressMode, StageProgress};
use super::task::{Done, Task};
use crate::error::{IoContext, Result};
use crate::pipeline::{FailedInputs, Pipeline};
use crate::plan::{ItemState, Objects, Plan};
use crate::store::journal::Journal;
use crate::store::{manifest, Record, Status, Workspace};

/// What one stage did in a run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StageSummary {
    /// Stage id.
    pub id: String,
    /// Items in the stage.
    pub items: usize,
    /// Items computed in this run.
    pub computed: usize,
    /// Items reused from the cache (results and cached failures).
    pub cached: usize,
    /// Items whose record is a failure (new or cached).
    pub failed: usize,
    /// Wall seconds of the stage in this run.
    pub seconds: f64,
    /// Failed upstream items its items left out (`on_failed_inputs = "skip"`); absent when none.
    #[serde(skip_serializing_if = "is_zero")]
    pub skipped_inputs: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// A failed item, for the end of `run` and `status --failed`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FailedItem {
    /// Stage id.
    pub stage: String,
    /// Item id.
    pub item: String,
    /// The message.
    pub error: String,
    /// Retried by the next run (I/O, disk space, panic) rather than cached.
    pub transient: bool,
}

impl FailedItem {
    /// The failed item of a record, if it failed.
    pub fn of(stage: &str, r: &Record) -> Option<Self> {
        (r.status != Status::Ok).then(|| FailedItem {
            stage: stage.to_string(),
            item: r.item_id.clone(),
            error: r.error.clone().unwrap_or_default(),
            transient: r.status == Status::Transient,
        })
    }
}

/// Items that gathered many inputs and left failed ones out: `(stage, item, how many, names)`.
pub fn skipped_inputs(stage: &str, r: &Record) -> Option<(String, String, usize, String)> {
    let Some(crate::stages::MetaValue::Int(n)) = r.meta.get("skipped_inputs") else { return None };
    let names = match r.meta.get("skipped") {
        Some(crate::stages::MetaValue::Str(s)) => s.clone(),
        _ => String::new(),
    };
    Some((stage.to_string(), r.item_id.clone(), *n as usize, names))
}

/// State of the driving worker.
pub struct Driver {
    pipeline: Arc<Pipeline>,
    ws: Workspace,
    plan: Plan,
    /// Whether a stage's manifest must be rewritten even if nothing is computed (items removed, journal
    /// left by a killed run, unreadable manifest).
    must_write: Vec<bool>,
    /// Latest record of every item, by pipeline stage index.
    latest: HashMap<usize, HashMap<String, Record>>,
    /// Items computed in this run, by pipeline stage index: their downstream items are keyed again.
    recomputed: HashMap<usize, HashSet<String>>,
    mode: ProgressMode,
    journal: Option<Journal>,
    progress: Option<StageProgress>,
    started: Instant,
    computed: usize,
    new_failed: usize,
    /// One summary per finished stage.
    pub summaries: Vec<StageSummary>,
    /// Pictures written for people (contact sheets), by stage.
    pub pictures: Vec<std::path::PathBuf>,
    /// Every failed item of the selected stages (new or cached), in stage order.
    pub failures: Vec<FailedItem>,
    /// Items that left failed inputs out, `(stage, item, count, names)`.
    pub skipped: Vec<(String, String, usize, String)>,
}

impl Driver {
    /// A driver for `plan`; `must_write[k]` is for `plan.stages[k]`.
    pub fn new(pipeline: Arc<Pipeline>, ws: Workspace, plan: Plan, must_write: Vec<bool>, mode: ProgressMode) -> Self {
        let mut latest: HashMap<usize, HashMap<String, Record>> = HashMap::new();
        for sp in &plan.stages {
            let m = latest.entry(sp.stage).or_default();
            for it in &sp.items {
                if let ItemState::Fresh(r) | ItemState::FreshFailed(r) = &it.state {
                    m.insert(it.id.clone(), r.clone());
                }
            }
        }
        Driver {
            pipeline,
            ws,
            plan,
            must_write,
            latest,
            recomputed: HashMap::new(),
            mode,
            journal: None,
            progress: None,
            started: Instant::now(),
            computed: 0,
            new_failed: 0,
            summaries: Vec::new(),
            pictures: Vec::new(),
            failures: Vec::new(),
            skipped: Vec::new(),
        }
    }

    /// Number of stage epochs.
    pub fn epochs(&self) -> usize {
        self.plan.stages.len()
    }

    /// Starts epoch `k`: keys the items that waited on upstream results (and those whose upstream item
    /// was recomputed), then returns the tasks of the stale items of `plan.stages[k]`.
    pub fn begin_stage(&mut self, k: usize) -> Vec<Task> {
        self.started = Instant::now();
        self.computed = 0;
        self.new_failed = 0;
        self.settle(k);
        let sp = &self.plan.stages[k];
        let sd = &self.pipeline.stages[sp.stage];
        let mut tasks = Vec::new();
        for it in sp.items.iter().filter(|i| matches!(i.state, ItemState::Stale(_) | ItemState::Pending(_))) {
            let mut files: Vec<(String, Vec<u8>)> = it.sources.iter().map(|(r, p)| (r.clone(), p.as_os_str().as_bytes().to_vec())).collect();
            let mut upstream_failed = None;
            let mut skipped = Vec::new();
            let mut upstream_meta = Vec::with_capacity(it.upstream.len());
            let gathers = |s: usize| sd.input_idx.iter().position(|&x| x == s).is_some_and(|i| sd.stage.gathers(i));
            let skip_failed = sd.on_failed_inputs == FailedInputs::Skip;
            // An item gathering many inputs numbers its roles by the inputs it gets (`in0/`, `in1/`, ...).
            let ok: Vec<(&String, &Record)> = it
                .upstream
                .iter()
                .filter_map(|(s, item)| {
                    let name = || format!("{}/{item}", self.pipeline.stages[*s].id);
                    match self.latest.get(s).and_then(|m| m.get(item)) {
                        Some(r) if r.status == Status::Ok => return Some((item, r)),
                        Some(_) | None if skip_failed && gathers(*s) => skipped.push(name()),
                        Some(r) => {
                            let why = r.error.as_deref().unwrap_or("failed");
                            upstream_failed.get_or_insert(format!("upstream item {} failed: {why}", name()));
                        }
                        None => {
                            upstream_failed.get_or_insert(format!("upstream item {} was not computed", name()));
                        }
                    }
                    None
                })
                .collect();
            let prefixed = it.upstream.len() > 1;
            for (n, (item, r)) in ok.into_iter().enumerate() {
                upstream_meta.push((item.clone(), r.meta.clone()));
                for o in &r.outputs {
                    let role = if prefixed { format!("in{n}/{}", o.role) } else { o.role.clone() };
                    files.push((role, self.ws.root.join(&o.file).into_os_string().into_vec()));
                }
            }
            tasks.push(Task {
                stage: sp.stage,
                worker: 0,
                item: it.id.clone(),
                key: it.key.clone(),
                params_hash: sp.params_hash.clone(),
                version: sp.version,
                key_inputs: it.key_inputs.clone(),
                files,
                upstream_failed,
                skipped,
                upstream_meta,
            });
        }
        if !tasks.is_empty() {
            self.progress = Some(StageProgress::start(self.mode, &sd.id, tasks.len() as u64));
        }
        tasks
    }

    /// Records a finished item: journal first (so a kill after this point keeps it), then memory.
    pub fn on_done(&mut self, (stage, record): Done) -> Result<()> {
        if self.journal.is_none() {
            self.journal = Some(Journal::open(&self.ws.journal(&self.pipeline.stages[stage].id))?);
        }
        self.journal.as_mut().expect("opened above").append(&record)?;
        let failed = record.status != Status::Ok;
        self.computed += 1;
        self.new_failed += failed as usize;
        if let Some(p) = self.progress.as_mut() {
            p.inc(failed);
        }
        self.recomputed.entry(stage).or_default().insert(record.item_id.clone());
        self.latest.entry(stage).or_default().insert(record.item_id.clone(), record);
        Ok(())
    }

    /// Keys the pending items of `plan.stages[k]` and those reading an item recomputed in this run,
    /// now that every upstream stage is done: each turns fresh (its upstream results came out as
    /// recorded: early cutoff) or stale.
    fn settle(&mut self, k: usize) {
        let recomputed = &self.recomputed;
        let todo: Vec<usize> = self.plan.stages[k]
            .items
            .iter()
            .enumerate()
            .filter(|(_, it)| matches!(it.state, ItemState::Pending(_)) || it.upstream.iter().any(|(s, i)| recomputed.get(s).is_some_and(|set| set.contains(i))))
            .map(|(j, _)| j)
            .collect();
        if todo.is_empty() {
            return;
        }
        let objects = WorkspaceObjects(&self.ws);
        let mut fresh = Vec::new();
        {
            let latest = &self.latest;
            let result = |s: usize, item: &str| latest.get(&s).and_then(|m| m.get(item));
            for j in todo {
                let before = self.plan.stages[k].items[j].key.clone();
                self.plan.settle(&self.pipeline, k, j, &result, &objects);
                let it = &self.plan.stages[k].items[j];
                if let ItemState::Fresh(r) | ItemState::FreshFailed(r) = &it.state {
                    if it.key != before {
                        self.must_write[k] = true;
                    }
                    fresh.push(r.clone());
                }
            }
        }
        let stage = self.plan.stages[k].stage;
        let m = self.latest.entry(stage).or_default();
        for r in fresh {
            m.insert(r.item_id.clone(), r);
        }
    }

    /// Ends epoch `k`: writes the manifest if anything changed, drops the journal, records the summary.
    pub fn finish_stage(&mut self, k: usize) -> Result<()> {
        if let Some(p) = self.progress.take() {
            p.finish();
        }
        let sp = &self.plan.stages[k];
        let sd = &self.pipeline.stages[sp.stage];
        let latest = self.latest.get(&sp.stage);
        let records: Vec<Record> = sp.items.iter().filter_map(|it| latest.and_then(|m| m.get(&it.id)).cloned()).collect();
        if self.computed > 0 || self.must_write[k] {
            manifest::write(&self.ws.manifest(&sd.id), &self.ws.tmp(), &records)?;
        }
        // pictures (contact sheets) also get a stable name a person can open: pictures/<stage>.png
        for r in &records {
            for o in r.outputs.iter().filter(|o| o.role == "sheet") {
                let dest = self.ws.root.join("pictures").join(format!("{}.png", sd.id));
                if std::fs::metadata(&dest).map(|m| m.len()).ok() != Some(o.size) || self.computed > 0 {
                    let bytes = std::fs::read(self.ws.root.join(&o.file)).at("read", self.ws.root.join(&o.file))?;
                    crate::store::cas::write_atomic(&self.ws.tmp(), &dest, &bytes)?;
                }
                self.pictures.push(dest);
            }
        }
        self.journal = None;
        let jp = self.ws.journal(&sd.id);
        if jp.exists() {
            std::fs::remove_file(&jp).at("remove journal", &jp)?;
        }
        let failed = records.iter().filter(|r| r.status != Status::Ok).count();
        self.failures.extend(records.iter().filter_map(|r| FailedItem::of(&sd.id, r)));
        let skipped: Vec<_> = records.iter().filter_map(|r| skipped_inputs(&sd.id, r)).collect();
        let skipped_inputs = skipped.iter().map(|s| s.2).sum();
        self.skipped.extend(skipped);
        self.summaries.push(StageSummary {
            id: sd.id.clone(),
            items: sp.items.len(),
            computed: self.computed,
            cached: sp.items.len() - self.computed,
            failed,
            seconds: self.started.elapsed().as_secs_f64(),
            skipped_inputs,
        });
        Ok(())
    }

    /// Runs every stage in this thread, without a dataflow: used when nothing is stale, so a no-op rerun
    /// does not pay for starting workers.
    pub fn finish_inline(&mut self) -> Result<()> {
        for k in 0..self.epochs() {
            for t in self.begin_stage(k) {
                let done = super::task::compute(&self.pipeline.clone(), &self.ws.clone(), t);
                self.on_done(done)?;
            }
            self.finish_stage(k)?;
        }
        Ok(())
    }
}

/// Objects of a workspace, for keying items during a run.
pub(crate) struct WorkspaceObjects<'a>(pub &'a crate::store::Workspace);

impl Objects for WorkspaceObjects<'_> {
    fn output_ok(&self, out: &crate::store::OutputRef) -> bool {
        crate::store::Cas::looks_valid(&self.0.root, &out.file, out.size)
    }
    fn object_path(&self, file: &str) -> std::path::PathBuf {
        self.0.root.join(file)
    }
}
