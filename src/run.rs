//! `run` and `status`: load what is known, plan, and (for `run`) execute and write manifests.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::error::Result;
use crate::exec::{self, Cluster, Driver, FailedItem, Order, ProgressMode, StageSummary};
use crate::pipeline::Pipeline;
use crate::plan::settled::{self, Settled};
use crate::plan::{self, ItemState, Objects, Plan, PlanEnv, Reason};
use crate::store::{Cas, OutputRef, Record, StatCache, Workspace, WorkspaceLock};

/// Options of `run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// `--until STAGE`.
    pub until: Option<String>,
    /// Where the workers are.
    pub cluster: Cluster,
    /// Recompute items whose failure is cached.
    pub retry_failed: bool,
    /// Progress display.
    pub progress: ProgressMode,
    /// Text describing the command, written into the lock file.
    pub command: String,
    /// Streaming (the default) or stage by stage (only `bench stream` asks for it, to compare).
    pub order: Order,
}

/// What a run did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RunReport {
    /// Per stage.
    pub stages: Vec<StageSummary>,
    /// Items computed.
    pub computed: usize,
    /// Items reused.
    pub cached: usize,
    /// Items failed (new or cached).
    pub failed: usize,
    /// Things the user should know (ignored unreadable manifests, ...).
    #[serde(skip)]
    pub warnings: Vec<String>,
    /// Pictures written for people (contact sheets).
    #[serde(skip)]
    pub pictures: Vec<std::path::PathBuf>,
    /// Every failed item (new or cached), in stage order.
    #[serde(skip)]
    pub failures: Vec<FailedItem>,
    /// Items that left failed inputs out: `(stage, item, count, names)`.
    #[serde(skip)]
    pub skipped: Vec<(String, String, usize, String)>,
}

struct DiskEnv<'a> {
    ws: &'a Workspace,
    stat: StatCache,
}

impl PlanEnv for DiskEnv<'_> {
    fn source_hash(&mut self, path: &Path) -> String {
        self.stat.hash(path)
    }
}

impl Objects for DiskEnv<'_> {
    fn output_ok(&self, out: &OutputRef) -> bool {
        Cas::looks_valid(&self.ws.root, &out.file, out.size)
    }
    fn object_path(&self, file: &str) -> std::path::PathBuf {
        self.ws.root.join(file)
    }
}

/// A plan plus what was loaded to make it.
pub struct Planned {
    /// The plan.
    pub plan: Plan,
    /// Per plan stage: whether the manifest must be rewritten even with nothing to compute.
    pub must_write: Vec<bool>,
    /// Warnings.
    pub warnings: Vec<String>,
    stat: StatCache,
}

/// Loads records and plans the selected stages. With `verify_inputs`, the outputs that stale items will
/// read are hashed in full first, and any corrupt one makes its own item stale ("output missing").
pub fn make_plan(pipeline: &Pipeline, ws: &Workspace, until: Option<&str>, retry_failed: bool, verify_inputs: bool) -> Result<Planned> {
    let selected = pipeline.selected(until)?;
    let mut warnings = Vec::new();
    let mut known: Vec<HashMap<String, Record>> = Vec::with_capacity(pipeline.stages.len());
    let mut manifest_state: Vec<(bool, usize)> = Vec::new(); // (journal present or manifest unreadable, manifest rows)
    // The manifests and the source hash cache are read side by side: decoding them is most of what a
    // no-op rerun does.
    let (mut manifests, stat) = std::thread::scope(|s| {
        let stat = s.spawn(|| StatCache::load(&ws.statcache()));
        let reads: Vec<_> = pipeline.stages.iter().zip(&selected).map(|(sd, &sel)| sel.then(|| s.spawn(move || crate::store::manifest::read(&ws.manifest(&sd.id))))).collect();
        let manifests: Vec<Option<Result<Vec<Record>>>> = reads.into_iter().map(|h| h.map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))).collect();
        (manifests, stat.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
    });
    for (i, sd) in pipeline.stages.iter().enumerate() {
        let Some(read) = manifests[i].take() else {
            known.push(HashMap::new());
            manifest_state.push((false, 0));
            continue;
        };
        let mut dirty = false;
        let rows = match read {
            Ok(r) => r,
            Err(e) => {
                warnings.push(format!("{e}: ignoring it, its items will be recomputed"));
                dirty = true;
                Vec::new()
            }
        };
        manifest_state.push((false, rows.len()));
        let mut by_id: HashMap<String, Record> = HashMap::with_capacity(rows.len());
        for r in rows {
            by_id.insert(r.item_id.clone(), r);
        }
        let journal = crate::store::journal::read(&ws.journal(&sd.id));
        dirty |= !journal.is_empty();
        for r in journal {
            by_id.insert(r.item_id.clone(), r);
        }
        manifest_state.last_mut().expect("pushed").0 = dirty;
        known.push(by_id);
    }
    let mut env = DiskEnv { ws, stat };
    let mut plan = plan::plan(pipeline, &selected, known, retry_failed, &mut env)?;
    if verify_inputs {
        verify_stale_inputs(&mut plan, ws);
    }
    // Without a journal, what is known is the manifest itself: a fresh item's record is its own row
    // (every key includes the item id, and a reused record carries the item's id), so the manifest is
    // rewritten only if an item is added, removed or not fresh.
    let must_write = plan
        .stages
        .iter()
        .map(|sp| {
            let (dirty, rows) = manifest_state[sp.stage];
            dirty
                || rows != sp.items.len()
                || sp.items.iter().any(|it| matches!(it.state, ItemState::Stale(_) | ItemState::Pending(_)))
        })
        .collect();
    Ok(Planned { plan, must_write, warnings, stat: env.stat })
}

/// Hashes, in full, every cached output a stale item is about to read; a corrupt one turns its item stale.
/// Repeats until nothing changes, since a newly stale item makes its own inputs worth checking.
fn verify_stale_inputs(plan: &mut Plan, ws: &Workspace) {
    if plan.stale() == 0 {
        return;
    }
    // (stage, item id) -> (position in plan.stages, position in its items)
    let index: HashMap<(usize, &str), (usize, usize)> = plan
        .stages
        .iter()
        .enumerate()
        .flat_map(|(k, sp)| sp.items.iter().enumerate().map(move |(j, it)| ((sp.stage, it.id.as_str()), (k, j))))
        .collect();
    let mut checked: HashMap<&str, bool> = HashMap::new();
    let mut corrupt: Vec<(usize, usize)> = Vec::new();
    let mut queue: Vec<(usize, usize)> =
        plan.stages.iter().enumerate().flat_map(|(k, sp)| sp.items.iter().enumerate().filter(|(_, i)| matches!(i.state, ItemState::Stale(_) | ItemState::Pending(_))).map(move |(j, _)| (k, j))).collect();
    let mut seen: std::collections::HashSet<(usize, usize)> = queue.iter().copied().collect();
    // a newly stale item makes its own inputs worth checking: walk until nothing new turns stale
    while let Some((k, j)) = queue.pop() {
        for (s, item) in &plan.stages[k].items[j].upstream {
            let Some(&(uk, uj)) = index.get(&(*s, item.as_str())) else { continue };
            if let ItemState::Fresh(r) = &plan.stages[uk].items[uj].state {
                let bad = r.outputs.iter().any(|o| !*checked.entry(o.file.as_str()).or_insert_with(|| Cas::verify(&ws.root, &o.file)));
                if bad && seen.insert((uk, uj)) {
                    corrupt.push((uk, uj));
                    queue.push((uk, uj));
                }
            }
        }
    }
    drop(index);
    for (k, j) in corrupt {
        plan.stages[k].items[j].state = ItemState::Stale(Reason::OutputMissing);
    }
}

/// Runs what is stale.
///
/// # Errors
/// A locked workspace, an unreadable source folder, a failed cluster connection, a failed manifest write.
/// Failed *items* are not errors: they are counted in the report.
pub fn run(pipeline: Pipeline, opts: &RunOptions) -> Result<RunReport> {
    let ws = Workspace::new(&pipeline.workspace);
    let pipeline = Arc::new(pipeline);
    if !opts.cluster.is_driver() {
        exec::execute(pipeline, ws, &opts.cluster, None)?;
        return Ok(RunReport::default());
    }
    let _lock = WorkspaceLock::acquire(&ws.root, &opts.command)?;
    let started = std::time::Instant::now();
    let selected = pipeline.selected(opts.until.as_deref())?;
    for (sd, _) in pipeline.stages.iter().zip(&selected).filter(|(_, s)| **s) {
        sd.stage.prepare()?;
    }
    let local_only = matches!(opts.cluster, Cluster::Local { .. });
    if local_only {
        if let Some(s) = settled::check(&pipeline, &ws, &selected, opts.retry_failed) {
            return Ok(settled_report(s, started));
        }
    }
    let planned = make_plan(&pipeline, &ws, opts.until.as_deref(), opts.retry_failed, true)?;
    let inputs = settled::inputs_digest(&pipeline, &selected, &planned.plan, &planned.stat);
    settled::clear(&ws)?;
    planned.stat.save(&ws.statcache(), &ws.tmp())?;
    let stale = planned.plan.stale();
    let mut driver = Driver::new(pipeline.clone(), ws.clone(), planned.plan, planned.must_write, opts.progress, opts.order);
    let mut driver = if stale == 0 && local_only {
        driver.finish_inline()?;
        driver
    } else {
        exec::execute(pipeline.clone(), ws.clone(), &opts.cluster, Some(driver))?
            .ok_or_else(|| crate::error::Error::Execution("the driving worker returned nothing".into()))?
    };
    let mut report = RunReport { warnings: planned.warnings, ..Default::default() };
    // only a cache: a stamp that cannot be written costs the next no-op its shortcut, nothing else
    if let Err(e) = settled::write(&ws, &pipeline, &selected, inputs, &driver.final_records(), &driver.pictures) {
        report.warnings.push(format!("{e} (the next no-op rerun plans in full)"));
    }
    for s in &driver.summaries {
        report.computed += s.computed;
        report.cached += s.cached;
        report.failed += s.failed;
    }
    report.pictures = std::mem::take(&mut driver.pictures);
    report.failures = std::mem::take(&mut driver.failures);
    report.skipped = std::mem::take(&mut driver.skipped);
    report.stages = std::mem::take(&mut driver.summaries);
    drop_later(driver);
    Ok(report)
}

/// The report of a run that found, by the stamp, every item settled: nothing computed, every item
/// reused as the planner would have found it.
fn settled_report(s: Settled, started: std::time::Instant) -> RunReport {
    let mut report = RunReport::default();
    for st in &s.stages {
        let skipped_inputs = st.skipped.iter().map(|x| x.1).sum();
        report.stages.push(StageSummary {
            id: st.id.clone(),
            items: st.items,
            computed: 0,
            cached: st.items,
            failed: st.failures.len(),
            seconds: 0.0,
            skipped_inputs,
            first_result_s: None,
            finished_s: started.elapsed().as_secs_f64(),
        });
        report.cached += st.items;
        report.failed += st.failures.len();
        report.failures.extend(st.failures.iter().map(|(item, error)| FailedItem { stage: st.id.clone(), item: item.clone(), error: error.clone(), transient: false }));
        report.skipped.extend(st.skipped.iter().map(|(item, n, names)| (st.id.clone(), item.clone(), *n, names.clone())));
    }
    report.pictures = s.pictures.into_iter().map(|p| p.0).collect();
    report
}

/// Frees a large value (a plan and every record of a run: hundreds of MB at 100,000 items) on another
/// thread: freeing takes about as long as the rest of a no-op rerun, and a command that is about to
/// exit need not wait for it.
fn drop_later<T: Send + 'static>(value: T) {
    // (if no thread can be made, the value is freed here, by `spawn` dropping the closure)
    let _ = std::thread::Builder::new().name("drop".into()).spawn(move || drop(value));
}

/// Per-stage status without doing any work.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StageStatus {
    /// Stage id.
    pub id: String,
    /// Items.
    pub items: usize,
    /// Fresh (cached ok) items.
    pub fresh: usize,
    /// Stale items.
    pub stale: usize,
    /// Cached failures.
    pub failed: usize,
    /// Stale items per reason.
    pub reasons: std::collections::BTreeMap<String, usize>,
    /// Each stale item and its reason.
    pub stale_items: Vec<StaleItem>,
    /// Failed upstream items left out by this stage's items (`on_failed_inputs = "skip"`); absent when none.
    #[serde(skip_serializing_if = "is_zero")]
    pub skipped_inputs: usize,
    /// Failed items: cached failures, and transient ones the next run retries.
    #[serde(skip)]
    pub failures: Vec<FailedItem>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// One stale item.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StaleItem {
    /// Item id.
    pub item: String,
    /// Why it is stale.
    pub reason: String,
}

/// Computes the status of every selected stage (reads only; takes no lock).
pub fn status(pipeline: &Pipeline, until: Option<&str>) -> Result<(Vec<StageStatus>, Vec<String>)> {
    let ws = Workspace::new(&pipeline.workspace);
    let selected = pipeline.selected(until)?;
    if let Some(s) = settled::check(pipeline, &ws, &selected, false) {
        return Ok((settled_status(s), Vec::new()));
    }
    let planned = make_plan(pipeline, &ws, until, false, false)?;
    let out = planned
        .plan
        .stages
        .iter()
        .map(|sp| {
            let (fresh, stale, failed) = sp.counts();
            let mut reasons = std::collections::BTreeMap::new();
            let mut stale_items = Vec::new();
            let mut failures = Vec::new();
            let mut skipped_inputs = 0;
            let id = &pipeline.stages[sp.stage].id;
            for it in &sp.items {
                if let Some(r) = it.state.reason() {
                    *reasons.entry(r.as_str().to_string()).or_insert(0) += 1;
                    stale_items.push(StaleItem { item: it.id.clone(), reason: r.as_str().to_string() });
                }
                let record = match &it.state {
                    ItemState::Fresh(r) | ItemState::FreshFailed(r) => Some(r),
                    ItemState::Stale(Reason::TransientFailure) => sp.recorded(&it.id),
                    _ => None,
                };
                if let Some(r) = record {
                    failures.extend(FailedItem::of(id, r));
                    skipped_inputs += crate::exec::skipped_inputs(id, r).map_or(0, |s| s.2);
                }
            }
            StageStatus { id: id.clone(), items: sp.items.len(), fresh, stale, failed, reasons, stale_items, skipped_inputs, failures }
        })
        .collect();
    let warnings = planned.warnings.clone();
    drop_later(planned);
    Ok((out, warnings))
}

/// Status of stages that the stamp says are settled.
fn settled_status(s: Settled) -> Vec<StageStatus> {
    s.stages
        .into_iter()
        .map(|st| StageStatus {
            items: st.items,
            fresh: st.items - st.failures.len(),
            stale: 0,
            failed: st.failures.len(),
            reasons: Default::default(),
            stale_items: Vec::new(),
            skipped_inputs: st.skipped.iter().map(|x| x.1).sum(),
            failures: st.failures.into_iter().map(|(item, error)| FailedItem { stage: st.id.clone(), item, error, transient: false }).collect(),
            id: st.id,
        })
        .collect()
}
