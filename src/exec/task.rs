//! One unit of work: compute one stale item, store its outputs, return its manifest record.
//!
//! Tasks travel between workers and processes (timely serialises them with bincode), so they carry
//! everything needed: the stage index, the item, its key and the absolute paths of its input files.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::pipeline::Pipeline;
use crate::stages::ItemInputs;
use crate::store::{OutputRef, Record, Status, Workspace};

/// A stale item to compute.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Task {
    /// Stage index in the pipeline.
    pub stage: usize,
    /// Item id.
    pub item: String,
    /// Cache key.
    pub key: String,
    /// Params hash (recorded).
    pub params_hash: String,
    /// Code version (recorded).
    pub version: u32,
    /// Key inputs (recorded).
    pub key_inputs: Vec<(String, String)>,
    /// Input files: `(role, absolute path)`.
    pub files: Vec<(String, String)>,
    /// Set when an upstream item failed: the item fails with this message without running.
    pub upstream_failed: Option<String>,
    /// Metadata of the upstream items, `(item id, columns)`.
    pub upstream_meta: Vec<(String, std::collections::BTreeMap<String, crate::stages::MetaValue>)>,
}

/// A finished task: stage index and record.
pub type Done = (usize, Record);

/// Computes a task. Never panics: a panicking stage becomes a failed record.
pub fn compute(pipeline: &Pipeline, ws: &Workspace, task: Task) -> Done {
    let start = Instant::now();
    let stage = &pipeline.stages[task.stage].stage;
    let result: Result<Vec<OutputRef>, String> = match &task.upstream_failed {
        Some(msg) => Err(msg.clone()),
        None => {
            let inputs = ItemInputs {
                files: task.files.iter().map(|(r, p)| (r.clone(), PathBuf::from(p))).collect(),
                meta: task.upstream_meta.clone(),
            };
            match std::panic::catch_unwind(AssertUnwindSafe(|| stage.compute(&task.item, &inputs))) {
                Err(p) => Err(format!(
                    "stage panicked: {}",
                    p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default()
                )),
                Ok(Err(e)) => Err(e.to_string()),
                Ok(Ok(out)) if out.meta.keys().any(|k| crate::store::manifest::CORE.contains(&k.as_str())) => {
                    // A manifest column of the same name would drop it, and the result read back would
                    // differ from the one computed: refuse, naming the stage's bug.
                    let k = out.meta.keys().find(|k| crate::store::manifest::CORE.contains(&k.as_str())).cloned().unwrap_or_default();
                    Err(format!("stage `{}` wrote metadata `{k}`, the name of a manifest column (a bug in the stage)", stage.kind()))
                }
                Ok(Ok(out)) => {
                    let cas = ws.cas();
                    let mut refs = Vec::with_capacity(out.files.len());
                    let mut err = None;
                    for f in &out.files {
                        match cas.put(&f.bytes, f.ext) {
                            Ok(file) => refs.push(OutputRef { role: f.role.clone(), file, size: f.bytes.len() as u64 }),
                            Err(e) => {
                                err = Some(format!("storing output `{}`: {e}", f.role));
                                break;
                            }
                        }
                    }
                    match err {
                        Some(e) => Err(e),
                        None => return finish(task, start, Ok((refs, out.meta))),
                    }
                }
            }
        }
    };
    finish(task, start, result.map(|r| (r, Default::default())))
}

fn finish(task: Task, start: Instant, result: Result<(Vec<OutputRef>, std::collections::BTreeMap<String, crate::stages::MetaValue>), String>) -> Done {
    let (status, error, outputs, meta) = match result {
        Ok((o, m)) => (Status::Ok, None, o, m),
        Err(e) => (Status::Failed, Some(e), Vec::new(), Default::default()),
    };
    (
        task.stage,
        Record {
            item_id: task.item,
            key: task.key,
            status,
            error,
            version: task.version,
            params_hash: task.params_hash,
            inputs: task.key_inputs,
            outputs,
            seconds: start.elapsed().as_secs_f64(),
            meta,
        },
    )
}
