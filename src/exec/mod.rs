//! Running a plan on timely dataflow.
//!
//! One dataflow serves the whole run. The driver (global worker 0) hands out each item as soon as the
//! items it reads are done, whatever stage they belong to, on demand: at most four per worker (thread or
//! process) at a time, the next one to whichever worker has the fewest. Finished records flow back to
//! worker 0, which journals each one as it arrives, readies the items it unblocks and writes a stage's
//! manifest when its last item is done ([`Driver`]). Tasks are built only when ready, so they can name
//! their upstream outputs, and what is in flight stays bounded whatever the number of items.
//! Outputs are content-addressed and manifests sorted by item id: 1 worker or N, 1 process or P, the
//! bytes written are the same.

mod compute_op;
mod driver;
pub mod progress;
pub mod task;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use timely::dataflow::operators::{Exchange, Input, Inspect, Probe};
use timely::dataflow::{InputHandleVec, ProbeHandle};

pub use compute_op::ComputeItems;
pub use driver::{skipped_inputs, Driver, FailedItem, Order, StageSummary};
pub use progress::ProgressMode;
pub use task::{Done, Task};

use crate::error::{Error, Result};
use crate::pipeline::Pipeline;
use crate::store::Workspace;

/// Where the workers are.
#[derive(Debug, Clone)]
pub enum Cluster {
    /// This process only, with `workers` threads.
    Local {
        /// Worker threads.
        workers: usize,
    },
    /// Several processes (timely's own TCP networking).
    Processes {
        /// Worker threads per process.
        workers: usize,
        /// This process's index.
        index: usize,
        /// `host:port` of every process, in index order.
        addresses: Vec<String>,
    },
}

impl Cluster {
    fn config(&self) -> timely::Config {
        match self {
            Cluster::Local { workers } => timely::Config::process((*workers).max(1)),
            Cluster::Processes { workers, index, addresses } => timely::Config {
                communication: timely::CommunicationConfig::Cluster {
                    threads: (*workers).max(1),
                    process: *index,
                    addresses: addresses.clone(),
                    report: false,
                    zerocopy: false,
                },
                worker: timely::WorkerConfig::default(),
            },
        }
    }
    /// Whether this process drives the run (writes manifests).
    pub fn is_driver(&self) -> bool {
        match self {
            Cluster::Local { .. } => true,
            Cluster::Processes { index, .. } => *index == 0,
        }
    }
}

/// Every worker's `(process, fingerprint)`, exchanged before any work: every worker sees all of them
/// and refuses to go on if one differs, so that processes started with another pipeline file, `--set`,
/// `--until` or workspace stop with a message instead of computing other params under the driver's keys.
fn agree_on_fingerprint(worker: &mut timely::worker::Worker, fingerprint: &str, process: usize) -> std::result::Result<(), String> {
    use timely::dataflow::operators::vec::Broadcast;
    let mut input: InputHandleVec<u64, (usize, String)> = InputHandleVec::new();
    let probe = ProbeHandle::new();
    let seen: Rc<RefCell<Vec<(usize, String)>>> = Rc::new(RefCell::new(Vec::new()));
    let sink = seen.clone();
    worker.dataflow::<u64, _, _>(|scope| {
        scope
            .input_from(&mut input)
            .container::<Vec<(usize, String)>>()
            .broadcast()
            .inspect_core(move |event: Result<(&timely::progress::Stamp<u64>, &Vec<(usize, String)>), &[u64]>| {
                if let Ok((_, batch)) = event {
                    sink.borrow_mut().extend(batch.iter().cloned());
                }
            })
            .probe_with(&probe);
    });
    input.send((process, fingerprint.to_string()));
    input.advance_to(1);
    while probe.less_than(input.time()) {
        worker.step();
    }
    let seen = seen.borrow();
    match seen.iter().find(|(_, f)| f != fingerprint) {
        Some((other, f)) => Err(format!(
            "process {other} runs another pipeline, --set, --until, workspace or version (fingerprint {f}, this process {process}: {fingerprint}); start every process with the same command line"
        )),
        None => Ok(()),
    }
}

/// Tasks a worker may hold at once: one computing and three queued, so that a worker does not idle
/// while the driver (itself a worker) is busy computing and cannot hand out more; at the end of a
/// run at most three tasks wait on one worker while another is free.
const DEPTH: usize = 4;

/// Runs the driver's plan on the workers. On the driving process pass the [`Driver`]; it is returned
/// when every stage is done. Other processes pass `None` and compute what they are handed.
pub fn execute(pipeline: Arc<Pipeline>, ws: Workspace, cluster: &Cluster, driver: Option<Driver>) -> Result<Option<Driver>> {
    let slot = Arc::new(Mutex::new(driver));
    let process = match cluster {
        Cluster::Local { .. } => 0,
        Cluster::Processes { index, .. } => *index,
    };
    let check = matches!(cluster, Cluster::Processes { .. });
    let guards = timely::execute(cluster.config(), move |worker| -> std::result::Result<Option<Driver>, String> {
        if check {
            agree_on_fingerprint(worker, &pipeline.fingerprint, process)?;
        }
        let mut driver = if worker.index() == 0 { slot.lock().map_err(|e| e.to_string())?.take() } else { None };
        let mut input: InputHandleVec<u64, Task> = InputHandleVec::new();
        let probe = ProbeHandle::new();
        let inbox: Rc<RefCell<Vec<Done>>> = Rc::new(RefCell::new(Vec::new()));
        {
            let (p, w, sink) = (pipeline.clone(), ws.clone(), inbox.clone());
            worker.dataflow::<u64, _, _>(|scope| {
                scope
                    .input_from(&mut input)
                    .container::<Vec<Task>>()
                    .compute_items(p, w)
                    .exchange(|_: &Done| 0)
                    .inspect_core(move |event: Result<(&timely::progress::Stamp<u64>, &Vec<Done>), &[u64]>| {
                        if let Ok((_, batch)) = event {
                            sink.borrow_mut().extend(batch.iter().cloned());
                        }
                    })
                    .probe_with(&probe);
            });
        }
        let mut failure = None;
        if let Some(d) = driver.as_mut() {
            failure = drive(worker, d, &mut input, &inbox).err();
        }
        // Every worker's input closes (the driver's once everything is handed out and back); the
        // dataflow then drains and the probe's frontier empties.
        input.close();
        while !probe.done() {
            worker.step_or_park(Some(std::time::Duration::from_millis(1)));
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(driver),
        }
    })
    .map_err(Error::Execution)?;
    let mut out = None;
    for r in guards.join() {
        match r {
            Ok(Ok(Some(d))) => out = Some(d),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => return Err(Error::Execution(e)),
            Err(e) => return Err(Error::Execution(format!("a worker failed: {e}"))),
        }
    }
    Ok(out)
}

/// The driving worker's loop: hands out ready items on demand, at most [`DEPTH`] outstanding per worker,
/// the next one to whichever worker has the fewest (a slow item never leaves another worker idle while
/// work remains; results do not depend on who computed what: objects are content-addressed and
/// manifests sorted), and feeds results back to the driver, which readies the items they unblock.
fn drive(worker: &mut timely::worker::Worker, d: &mut Driver, input: &mut InputHandleVec<u64, Task>, inbox: &Rc<RefCell<Vec<Done>>>) -> std::result::Result<(), String> {
    d.start().map_err(|e| e.to_string())?;
    let peers = worker.peers();
    let mut outstanding = vec![0usize; peers];
    let mut assigned: HashMap<(usize, String), usize> = HashMap::new();
    loop {
        let mut sent = false;
        while let Some(w) = (0..peers).filter(|&w| outstanding[w] < DEPTH).min_by_key(|&w| (outstanding[w], w)) {
            let Some(mut t) = d.next_task() else { break };
            t.worker = w;
            outstanding[w] += 1;
            assigned.insert((t.stage, t.item.clone()), w);
            input.send(t);
            sent = true;
        }
        // Sent tasks leave only when their time closes: each round of dispatch is one tick.
        if sent {
            let next = input.time() + 1;
            input.advance_to(next);
        }
        if d.is_done() {
            return Ok(());
        }
        if !sent && outstanding.iter().all(|&n| n == 0) {
            return Err(format!("stages {} wait for nothing that runs (a bug in the driver)", d.unfinished().join(", ")));
        }
        worker.step_or_park(Some(std::time::Duration::from_millis(1)));
        let batch: Vec<Done> = inbox.borrow_mut().drain(..).collect();
        for done in batch {
            if let Some(w) = assigned.remove(&(done.0, done.1.item_id.clone())) {
                outstanding[w] -= 1;
            }
            d.on_done(done).map_err(|e| e.to_string())?;
        }
    }
}
