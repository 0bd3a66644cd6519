//! The driver: hands out an item as soon as the items it reads are done, whatever their stage; journals
//! results as they arrive, and writes a stage's manifest as soon as its last item is done.
//!
//! It keeps, for every item not yet done, how many of the items it reads are not done either. When that
//! count reaches zero the item is keyed (if it read results made in this run: early cutoff may find it
//! fresh) and, if stale, becomes ready. Ready items of later stages go first, so one image travels
//! ingest -> merge -> augment -> crop before the next is read: the first crop comes early and what is
//! in flight stays bounded. An item gathering many others (split, contact sheet, training, export) is
//! ready exactly when its last input is done: the driver learns that from the records it journals,
//! which every result passes through anyway before anything may read it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::Arc;
use std::time::Instant;

use super::progress::{Progress, ProgressMode};
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
    /// Seconds from the start of the run to this stage's first computed item; absent when none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_result_s: Option<f64>,
    /// Seconds from the start of the run to the stage's end.
    pub finished_s: f64,
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
    r.skipped_inputs().map(|(n, names)| (stage.to_string(), r.item_id.clone(), n, names))
}

/// Order in which ready items are handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// As soon as an item's inputs are done, later stages first.
    #[default]
    Streaming,
    /// Stage by stage: no item of a stage starts before every earlier stage is complete (only for
    /// `bench stream`, which compares the two).
    Barrier,
}

/// A run's state in one stage.
#[derive(Default)]
struct StageRun {
    /// Items not yet done.
    remaining: usize,
    /// Items computed in this run.
    computed: usize,
    first_dispatch: Option<Instant>,
    first_result: Option<f64>,
    journal: Option<Journal>,
    finished: bool,
    /// Filled when the stage ends.
    summary: Option<StageSummary>,
    failures: Vec<FailedItem>,
    skipped: Vec<(String, String, usize, String)>,
}

/// State of the driving worker.
pub struct Driver {
    pipeline: Arc<Pipeline>,
    ws: Workspace,
    plan: Plan,
    order: Order,
    /// Whether a stage's manifest must be rewritten even if nothing is computed (items removed, journal
    /// left by a killed run, unreadable manifest).
    must_write: Vec<bool>,
    /// Latest record of every item, by pipeline stage index.
    latest: HashMap<usize, HashMap<String, Record>>,
    /// Plan position of each pipeline stage.
    position: HashMap<usize, usize>,
    /// Per plan stage and item: upstream items not done yet (`u32::MAX`: the item is done).
    waiting: Vec<Vec<u32>>,
    /// Per plan stage and item: whether it read a result made in this run (it is keyed again).
    resettle: Vec<Vec<bool>>,
    /// Per plan stage and item: the items reading it that wait for it.
    dependents: HashMap<(usize, usize), Vec<(usize, usize)>>,
    /// Items whose inputs are done, by priority.
    ready: BinaryHeap<(i64, Reverse<usize>, usize)>,
    stages: Vec<StageRun>,
    progress: Progress,
    started: Instant,
    /// One summary per stage, in plan order (filled when every stage is done).
    pub summaries: Vec<StageSummary>,
    /// Files published for people (contact sheets), by stage.
    pub pictures: Vec<std::path::PathBuf>,
    /// Every failed item of the selected stages (new or cached), in stage order.
    pub failures: Vec<FailedItem>,
    /// Items that left failed inputs out, `(stage, item, count, names)`.
    pub skipped: Vec<(String, String, usize, String)>,
}

const DONE: u32 = u32::MAX;

impl Driver {
    /// A driver for `plan`; `must_write[k]` is for `plan.stages[k]`.
    ///
    /// The records of items already done (fresh, reading nothing recomputed) move from the plan into
    /// the driver: a no-op rerun copies no record.
    pub fn new(pipeline: Arc<Pipeline>, ws: Workspace, mut plan: Plan, must_write: Vec<bool>, mode: ProgressMode, order: Order) -> Self {
        let n = plan.stages.len();
        let position: HashMap<usize, usize> = plan.stages.iter().enumerate().map(|(k, sp)| (sp.stage, k)).collect();
        let mut latest: HashMap<usize, HashMap<String, Record>> = HashMap::new();
        let mut waiting: Vec<Vec<u32>> = Vec::with_capacity(n);
        let mut resettle: Vec<Vec<bool>> = Vec::with_capacity(n);
        let mut dependents: HashMap<(usize, usize), Vec<(usize, usize)>> = HashMap::new();
        let mut stages: Vec<StageRun> = (0..n).map(|_| StageRun::default()).collect();
        let mut ready = BinaryHeap::new();
        // Stages with an item not done: an item whose upstream items are all in other stages is
        // checked without a lookup (the whole no-op rerun).
        let mut open: Vec<bool> = vec![false; n];
        for k in 0..n {
            let stage = plan.stages[k].stage;
            let len = plan.stages[k].items.len();
            let mut m = HashMap::with_capacity(len);
            let mut w = Vec::with_capacity(len);
            let mut again = vec![false; len];
            for j in 0..len {
                let mut count = 0u32;
                // Every declared upstream item, not only those a narrowed key kept: keying the item
                // again reads them all (an object found corrupt after planning can make a narrowed
                // input stale while another declared one is too).
                let declared = plan.stages[k].items[j].inputs.iter().filter_map(|i| match i {
                    crate::plan::PlannedInput::Upstream { stage, item, .. } => Some((stage, item)),
                    crate::plan::PlannedInput::Fixed(..) => None,
                });
                for (s, item) in declared {
                    let Some(&uk) = position.get(s).filter(|&&uk| open[uk]) else { continue };
                    let Ok(uj) = plan.stages[uk].items.binary_search_by(|x| x.id.as_str().cmp(item)) else { continue };
                    if waiting[uk][uj] != DONE {
                        count += 1;
                        dependents.entry((uk, uj)).or_default().push((k, j));
                    }
                }
                again[j] = count > 0;
                let it = &mut plan.stages[k].items[j];
                let fresh = matches!(it.state, ItemState::Fresh(_) | ItemState::FreshFailed(_));
                if fresh && count == 0 {
                    // done: its record moves here (the plan keeps a placeholder it never reads again)
                    if let ItemState::Fresh(r) | ItemState::FreshFailed(r) = std::mem::replace(&mut it.state, ItemState::Pending(crate::plan::Reason::NewItem)) {
                        m.insert(it.id.clone(), r);
                    }
                    w.push(DONE);
                } else {
                    stages[k].remaining += 1;
                    open[k] = true;
                    if count == 0 {
                        ready.push((priority(order, k), Reverse(j), k));
                    }
                    w.push(count);
                }
            }
            waiting.push(w);
            resettle.push(again);
            latest.insert(stage, m);
        }
        let expected = plan.stages.iter().zip(&stages).map(|(sp, s)| (pipeline.stages[sp.stage].id.clone(), s.remaining as u64)).collect();
        let progress = Progress::new(mode, expected);
        Driver {
            pipeline,
            ws,
            plan,
            order,
            must_write,
            latest,
            position,
            waiting,
            resettle,
            dependents,
            ready,
            stages,
            progress,
            started: Instant::now(),
            summaries: Vec::new(),
            pictures: Vec::new(),
            failures: Vec::new(),
            skipped: Vec::new(),
        }
    }

    /// Ends the stages that have nothing to do (writing their manifests where needed). Call once,
    /// before handing out tasks.
    pub fn start(&mut self) -> Result<()> {
        self.started = Instant::now();
        for k in 0..self.stages.len() {
            if self.stages[k].remaining == 0 {
                self.finish_stage(k)?;
            }
        }
        Ok(())
    }

    /// Whether every stage is complete.
    pub fn is_done(&self) -> bool {
        self.stages.iter().all(|s| s.finished)
    }

    /// Stages not complete yet, for a message.
    pub fn unfinished(&self) -> Vec<String> {
        self.stages.iter().enumerate().filter(|(_, s)| !s.finished).map(|(k, _)| self.pipeline.stages[self.plan.stages[k].stage].id.clone()).collect()
    }

    /// The next task to hand out, if an item is ready (and, in [`Order::Barrier`], its stage may start).
    pub fn next_task(&mut self) -> Option<Task> {
        let &(_, Reverse(j), k) = self.ready.peek()?;
        if self.order == Order::Barrier && self.stages[..k].iter().any(|s| !s.finished) {
            return None;
        }
        self.ready.pop();
        let stage = &mut self.stages[k];
        if stage.first_dispatch.is_none() {
            stage.first_dispatch = Some(Instant::now());
            self.progress.begin(k);
        }
        Some(self.task(k, j))
    }

    /// The task computing item `j` of `plan.stages[k]`, whose upstream items are all done.
    fn task(&self, k: usize, j: usize) -> Task {
        let sp = &self.plan.stages[k];
        let sd = &self.pipeline.stages[sp.stage];
        let it = &sp.items[j];
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
        Task {
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
        }
    }

    /// Records a finished item: journal first (so a kill after this point keeps it), then memory; then
    /// readies the items that waited only for it, and ends its stage if it was the last.
    pub fn on_done(&mut self, (stage, record): Done) -> Result<()> {
        let k = *self.position.get(&stage).ok_or_else(|| crate::error::Error::Execution(format!("a result for stage {stage}, which this run does not run")))?;
        let j = self.plan.stages[k].items.binary_search_by(|x| x.id.cmp(&record.item_id)).map_err(|_| crate::error::Error::Execution(format!("a result for unknown item `{}`", record.item_id)))?;
        let run = &mut self.stages[k];
        if run.journal.is_none() {
            run.journal = Some(Journal::open(&self.ws.journal(&self.pipeline.stages[stage].id))?);
        }
        run.journal.as_mut().expect("opened above").append(&record)?;
        run.computed += 1;
        run.first_result.get_or_insert(self.started.elapsed().as_secs_f64());
        self.progress.inc(k, record.status != Status::Ok);
        self.latest.entry(stage).or_default().insert(record.item_id.clone(), record);
        self.item_done(k, j)
    }

    /// Item `j` of `plan.stages[k]` is done: its dependents may become ready.
    fn item_done(&mut self, k: usize, j: usize) -> Result<()> {
        let mut done = vec![(k, j)];
        while let Some((k, j)) = done.pop() {
            self.waiting[k][j] = DONE;
            let run = &mut self.stages[k];
            run.remaining -= 1;
            if run.remaining == 0 {
                self.finish_stage(k)?;
            }
            for (dk, dj) in self.dependents.remove(&(k, j)).unwrap_or_default() {
                let w = &mut self.waiting[dk][dj];
                *w -= 1;
                if *w == 0 && self.activate(dk, dj) {
                    done.push((dk, dj));
                }
            }
        }
        Ok(())
    }

    /// Item `j` of `plan.stages[k]` has every input done: keys it again if it read a result made in
    /// this run (a pending item turns fresh or stale; a fresh one stays fresh if that result came out as
    /// recorded: early cutoff), then makes it ready if stale. Returns whether it is done (fresh).
    fn activate(&mut self, k: usize, j: usize) -> bool {
        if self.resettle[k][j] {
            let before = self.plan.stages[k].items[j].key.clone();
            let objects = WorkspaceObjects(&self.ws);
            let latest = &self.latest;
            let result = |s: usize, item: &str| latest.get(&s).and_then(|m| m.get(item));
            self.plan.settle(&self.pipeline, k, j, &result, &objects);
            if self.plan.stages[k].items[j].key != before {
                self.must_write[k] = true;
            }
        }
        let sp = &self.plan.stages[k];
        match &sp.items[j].state {
            ItemState::Fresh(r) | ItemState::FreshFailed(r) => {
                let r = r.clone();
                self.latest.entry(sp.stage).or_default().insert(r.item_id.clone(), r);
                self.progress.shrink(k);
                true
            }
            ItemState::Stale(_) | ItemState::Pending(_) => {
                self.ready.push((priority(self.order, k), Reverse(j), k));
                false
            }
        }
    }

    /// Ends stage `k`: writes the manifest if anything changed, publishes what its stage marks for
    /// people, drops the journal, records the summary.
    fn finish_stage(&mut self, k: usize) -> Result<()> {
        self.progress.finish(k);
        let sp = &self.plan.stages[k];
        let sd = &self.pipeline.stages[sp.stage];
        let latest = self.latest.get(&sp.stage);
        let records: Vec<&Record> = sp.items.iter().filter_map(|it| latest.and_then(|m| m.get(&it.id))).collect();
        let run = &mut self.stages[k];
        run.finished = true;
        if run.computed > 0 || self.must_write[k] {
            manifest::write(&self.ws.manifest(&sd.id), &self.ws.tmp(), records.iter().copied())?;
        }
        for r in &records {
            for o in r.outputs.iter() {
                let Some(name) = sd.stage.publishes(&o.role) else { continue };
                let dest = self.ws.root.join("pictures").join(format!("{}{name}", sd.id));
                if std::fs::metadata(&dest).map(|m| m.len()).ok() != Some(o.size) || run.computed > 0 {
                    let bytes = std::fs::read(self.ws.root.join(&o.file)).at("read", self.ws.root.join(&o.file))?;
                    crate::store::cas::write_atomic(&self.ws.tmp(), &dest, &bytes)?;
                }
                self.pictures.push(dest);
            }
        }
        run.journal = None;
        let jp = self.ws.journal(&sd.id);
        if jp.exists() {
            std::fs::remove_file(&jp).at("remove journal", &jp)?;
        }
        let failed = records.iter().filter(|r| r.status != Status::Ok).count();
        run.failures = records.iter().filter_map(|r| FailedItem::of(&sd.id, r)).collect();
        let skipped: Vec<_> = records.iter().filter_map(|r| skipped_inputs(&sd.id, r)).collect();
        let skipped_inputs = skipped.iter().map(|s| s.2).sum();
        run.skipped = skipped;
        let now = Instant::now();
        run.summary = Some(StageSummary {
            id: sd.id.clone(),
            items: sp.items.len(),
            computed: run.computed,
            cached: sp.items.len() - run.computed,
            failed,
            seconds: run.first_dispatch.map_or(0.0, |t| (now - t).as_secs_f64()),
            skipped_inputs,
            first_result_s: run.first_result,
            finished_s: (now - self.started).as_secs_f64(),
        });
        if self.is_done() {
            for s in &mut self.stages {
                self.summaries.extend(s.summary.take());
                self.failures.append(&mut s.failures);
                self.skipped.append(&mut s.skipped);
            }
        }
        Ok(())
    }

    /// The final record of every item, per plan stage: `(items in the stage, their records)` (fewer
    /// records than items only if the run did not finish).
    pub fn final_records(&self) -> Vec<(usize, Vec<&Record>)> {
        self.plan
            .stages
            .iter()
            .map(|sp| {
                let latest = self.latest.get(&sp.stage);
                (sp.items.len(), sp.items.iter().filter_map(|it| latest.and_then(|m| m.get(&it.id))).collect())
            })
            .collect()
    }

    /// Runs every stage in this thread, without a dataflow: used when nothing is stale, so a no-op rerun
    /// does not pay for starting workers.
    pub fn finish_inline(&mut self) -> Result<()> {
        self.start()?;
        while let Some(t) = self.next_task() {
            let done = super::task::compute(&self.pipeline.clone(), &self.ws.clone(), t);
            self.on_done(done)?;
        }
        if !self.is_done() {
            return Err(crate::error::Error::Execution(format!("stages {} never became ready (a bug in the driver)", self.unfinished().join(", "))));
        }
        Ok(())
    }
}

/// Ready items with a larger priority go first: later stages when streaming, earlier ones under the
/// barrier order.
fn priority(order: Order, k: usize) -> i64 {
    match order {
        Order::Streaming => k as i64,
        Order::Barrier => -(k as i64),
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
