//! The workspace on disk: objects, manifests, journals, source-hash cache and the lock.
//!
//! ```text
//! <workspace>/
//!   lock                      flock'ed by the running `mammoflow run`
//!   cas/ab/abcd....npy        content-addressed outputs
//!   manifests/<stage>.parquet one row per item (see manifest.rs)
//!   journal/<stage>.jsonl     items finished since the manifest was last written
//!   state/sources.parquet     (size, mtime, inode) -> content hash of source files
//!   state/subject.key         reserved for keyed hashes of patient ids
//!   tmp/                      temp files, renamed into place
//! ```

pub mod cas;
pub mod journal;
mod lock;
pub mod manifest;
pub mod record;
pub mod statcache;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub use cas::Cas;
pub use lock::WorkspaceLock;
pub use record::{OutputRef, Record, Status};
pub use statcache::StatCache;

/// Paths of one workspace.
#[derive(Debug, Clone)]
pub struct Workspace {
    /// Root folder.
    pub root: PathBuf,
}

impl Workspace {
    /// A workspace rooted at `root` (nothing is created).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Workspace { root: root.into() }
    }
    /// The manifest of a stage.
    pub fn manifest(&self, stage: &str) -> PathBuf {
        self.root.join("manifests").join(format!("{stage}.parquet"))
    }
    /// The journal of a stage.
    pub fn journal(&self, stage: &str) -> PathBuf {
        self.root.join("journal").join(format!("{stage}.jsonl"))
    }
    /// The source-hash cache.
    pub fn statcache(&self) -> PathBuf {
        self.root.join("state").join("sources.parquet")
    }
    /// Temp folder for atomic writes.
    pub fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }
    /// The object store.
    pub fn cas(&self) -> Cas {
        Cas::new(&self.root)
    }

    /// What is known about a stage's items: the manifest plus any journal left by an unfinished run (the
    /// journal is newer). An unreadable manifest is reported in `warnings` and treated as empty.
    pub fn known_records(&self, stage: &str, warnings: &mut Vec<String>) -> HashMap<String, Record> {
        let mut by_id: HashMap<String, Record> = HashMap::new();
        match manifest::read(&self.manifest(stage)) {
            Ok(rows) => by_id.extend(rows.into_iter().map(|r| (r.item_id.clone(), r))),
            Err(e) => warnings.push(format!("{e}: ignoring it, its items will be recomputed")),
        }
        for r in journal::read(&self.journal(stage)) {
            by_id.insert(r.item_id.clone(), r);
        }
        by_id
    }

    /// Whether `path` is inside this workspace.
    pub fn contains(&self, path: &Path) -> bool {
        path.starts_with(&self.root)
    }
}
