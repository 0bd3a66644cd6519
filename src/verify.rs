//! `verify`: re-hash every object the manifests name, like `git fsck`, and repair what can be
//! recomputed.
//!
//! Objects are not flushed to disk one by one (too costly), so after a power loss an object may exist
//! with the right size and wrong bytes. Planning checks sizes, and the inputs of stale items are hashed
//! before they are read; `verify` hashes the rest (final outputs such as checkpoints, which nothing
//! reads). A corrupt object is deleted, which makes its item stale ("output missing"); the repair is
//! then an ordinary run of the selected stages.

use std::collections::BTreeSet;

use crate::error::{IoContext, Result};
use crate::pipeline::Pipeline;
use crate::store::{journal, manifest, Cas, Workspace, WorkspaceLock};

/// One bad object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct BadObject {
    /// Stage id.
    pub stage: String,
    /// Item id.
    pub item: String,
    /// Workspace-relative object path.
    pub file: String,
}

/// What `verify` found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct VerifyReport {
    /// Distinct objects hashed.
    pub objects: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Objects whose bytes do not hash to their name (deleted when repairing).
    pub corrupt: Vec<BadObject>,
    /// Objects named by a manifest but absent.
    pub missing: Vec<BadObject>,
}

/// Hashes every object named by the manifests (and journals) of the selected stages; with `delete`,
/// removes the corrupt ones so that the next run recomputes their items.
pub fn verify(pipeline: &Pipeline, until: Option<&str>, delete: bool) -> Result<VerifyReport> {
    let ws = Workspace::new(&pipeline.workspace);
    let _lock = WorkspaceLock::acquire(&ws.root, "mammoflow verify")?;
    let selected = pipeline.selected(until)?;
    let mut report = VerifyReport::default();
    let mut good: BTreeSet<String> = BTreeSet::new();
    let mut bad: BTreeSet<String> = BTreeSet::new();
    for (sd, _) in pipeline.stages.iter().zip(&selected).filter(|(_, s)| **s) {
        for r in manifest::read(&ws.manifest(&sd.id))?.into_iter().chain(journal::read(&ws.journal(&sd.id))) {
            for o in &r.outputs {
                let at = || BadObject { stage: sd.id.clone(), item: r.item_id.clone(), file: o.file.clone() };
                if good.contains(&o.file) {
                    continue;
                }
                let path = ws.root.join(&o.file);
                if bad.contains(&o.file) {
                    report.corrupt.push(at());
                } else if !path.is_file() {
                    report.missing.push(at());
                } else if Cas::verify(&ws.root, &o.file) {
                    report.objects += 1;
                    report.bytes += o.size;
                    good.insert(o.file.clone());
                } else {
                    report.corrupt.push(at());
                    bad.insert(o.file.clone());
                }
            }
        }
    }
    if delete {
        for f in &bad {
            let p = ws.root.join(f);
            std::fs::remove_file(&p).at("remove corrupt object", &p)?;
        }
    }
    Ok(report)
}
