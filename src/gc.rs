//! `gc`: delete cached objects no manifest or journal of the pipeline refers to.
//!
//! Only the pipeline's own stages are consulted, so two pipelines must not share a workspace if both
//! are to keep their caches (each pipeline has its own workspace by default).

use std::collections::HashSet;

use crate::error::{IoContext, Result};
use crate::pipeline::Pipeline;
use crate::store::{journal, manifest, Workspace, WorkspaceLock};

/// What `gc` did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct GcReport {
    /// Objects deleted.
    pub files: usize,
    /// Bytes freed.
    pub bytes: u64,
    /// Objects kept.
    pub kept: usize,
}

/// Deletes unreferenced objects and leftover temp files.
pub fn gc(pipeline: &Pipeline) -> Result<GcReport> {
    let ws = Workspace::new(&pipeline.workspace);
    let _lock = WorkspaceLock::acquire(&ws.root, "mammoflow gc")?;
    let mut keep: HashSet<String> = HashSet::new();
    for sd in &pipeline.stages {
        // an unreadable manifest aborts gc: deleting what it may reference would lose results
        for r in manifest::read(&ws.manifest(&sd.id))?.into_iter().chain(journal::read(&ws.journal(&sd.id))) {
            keep.extend(r.outputs.into_iter().map(|o| o.file));
        }
    }
    let mut report = GcReport::default();
    for dir in [ws.root.join("cas"), ws.tmp()] {
        let Ok(shards) = std::fs::read_dir(&dir) else { continue };
        for shard in shards.filter_map(|e| e.ok()) {
            let paths: Vec<std::path::PathBuf> = if shard.path().is_dir() {
                std::fs::read_dir(shard.path()).at("list", shard.path())?.filter_map(|e| e.ok()).map(|e| e.path()).collect()
            } else {
                vec![shard.path()]
            };
            for p in paths {
                let rel = p.strip_prefix(&ws.root).map(|r| r.to_string_lossy().into_owned()).unwrap_or_default();
                if keep.contains(&rel) {
                    report.kept += 1;
                    continue;
                }
                let size = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
                std::fs::remove_file(&p).at("delete", &p)?;
                report.files += 1;
                report.bytes += size;
            }
        }
    }
    Ok(report)
}
