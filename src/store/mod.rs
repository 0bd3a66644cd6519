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
//!   state/settled             the no-op stamp: what the last settled run would plan (plan/settled.rs)
//!   tmp/                      temp files, renamed into place
//! ```

pub mod cas;
pub mod journal;
mod lock;
pub mod manifest;
pub mod record;
pub mod statcache;

use std::path::PathBuf;

pub use cas::Cas;
pub use lock::WorkspaceLock;
pub use record::{MetaValue, OutputRef, Record, Status};
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
}
