//! One unit of work: compute one stale item, store its outputs, return its manifest record.
//!
//! Tasks travel between workers and processes (timely serialises them with bincode), so they carry
//! everything needed: the stage index, the item, its key and the absolute paths of its input files.

use std::os::unix::ffi::OsStrExt;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::pipeline::Pipeline;
use crate::stages::{ItemInputs, ItemOutput, MetaValue};
use crate::store::{OutputRef, Record, Status, Workspace};

/// A stale item to compute.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Task {
    /// Stage index in the pipeline.
    pub stage: usize,
    /// The worker (global index) the driver hands the task to.
    pub worker: usize,
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
    /// Input files: `(role, absolute path as raw bytes)`: file names need not be UTF-8, and a lossy
    /// conversion would name a file that does not exist.
    pub files: Vec<(String, Vec<u8>)>,
    /// Set when an upstream item failed: the item fails with this message without running.
    pub upstream_failed: Option<String>,
    /// Failed upstream items left out (`stage/item`), by the stage's `on_failed_inputs = "skip"`.
    pub skipped: Vec<String>,
    /// Metadata of the upstream items, `(item id, columns)`.
    pub upstream_meta: Vec<(String, std::collections::BTreeMap<String, crate::store::MetaValue>)>,
}

/// A finished task: stage index and record.
pub type Done = (usize, Record);

/// Computes a task. Never panics: a panicking stage becomes a failed record.
///
/// Failures are told apart by cause: what a stage reports about the item's content
/// ([`crate::error::Error::Item`], an upstream failure) is `failed` and cached; an I/O error, a failure
/// to store an output, or a panic is `transient` and retried by the next run.
pub fn compute(pipeline: &Pipeline, ws: &Workspace, task: Task) -> Done {
    let start = Instant::now();
    let stage = &pipeline.stages[task.stage].stage;
    let result: Result<(Vec<OutputRef>, Meta), (String, Status)> = match &task.upstream_failed {
        Some(msg) => Err((msg.clone(), Status::Failed)),
        None => {
            let inputs = ItemInputs {
                files: task.files.iter().map(|(r, p)| (r.clone(), PathBuf::from(std::ffi::OsStr::from_bytes(p)))).collect(),
                meta: task.upstream_meta.clone(),
            };
            match std::panic::catch_unwind(AssertUnwindSafe(|| stage.compute(&task.item, &inputs))) {
                Err(p) => Err((
                    format!(
                        "stage panicked: {}",
                        p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default()
                    ),
                    Status::Transient,
                )),
                Ok(Err(e @ Error::Io { .. })) => {
                    // A missing or malformed file is the item's content (its key records it); anything
                    // else (permissions, EIO, a full disk, a folder in its place) may pass next time.
                    let lasting = matches!(&e, Error::Io { source, .. } if matches!(source.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof));
                    Err((e.to_string(), if lasting { Status::Failed } else { Status::Transient }))
                }
                Ok(Err(e)) => Err((e.to_string(), Status::Failed)),
                Ok(Ok(out)) => store(ws, stage.kind(), out, &task.skipped),
            }
        }
    };
    finish(task, start, result)
}

type Meta = std::collections::BTreeMap<String, MetaValue>;

/// Stores a computed item's outputs and completes its metadata.
fn store(ws: &Workspace, kind: &str, out: ItemOutput, skipped: &[String]) -> Result<(Vec<OutputRef>, Meta), (String, Status)> {
    if let Some(k) = out.meta.keys().find(|k| crate::store::manifest::CORE.contains(&k.as_str())).cloned() {
        // A manifest column of the same name would drop it, and the result read back would differ
        // from the one computed: refuse, naming the stage's bug.
        return Err((format!("stage `{kind}` wrote metadata `{k}`, the name of a manifest column (a bug in the stage)"), Status::Failed));
    }
    let cas = ws.cas();
    let mut refs = Vec::with_capacity(out.files.len());
    for f in &out.files {
        match cas.put(&f.bytes, f.ext) {
            Ok(file) => refs.push(OutputRef { role: f.role.clone(), file, size: f.bytes.len() as u64 }),
            Err(e) => return Err((format!("storing output `{}`: {e}", f.role), Status::Transient)),
        }
    }
    let mut meta = out.meta;
    if !skipped.is_empty() {
        meta.insert("skipped_inputs".into(), MetaValue::Int(skipped.len() as i64));
        let mut names = skipped.iter().take(20).cloned().collect::<Vec<_>>().join(", ");
        if skipped.len() > 20 {
            names.push_str(&format!(" and {} more", skipped.len() - 20));
        }
        meta.insert("skipped".into(), MetaValue::Str(names));
    }
    Ok((refs, meta))
}

fn finish(task: Task, start: Instant, result: Result<(Vec<OutputRef>, Meta), (String, Status)>) -> Done {
    let (status, error, outputs, meta) = match result {
        Ok((o, m)) => (Status::Ok, None, o, m),
        Err((e, status)) => (status, Some(e), Vec::new(), Default::default()),
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
