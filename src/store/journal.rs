//! The per-stage journal: completed items appended one JSON line each, as they finish.
//!
//! Parquet files cannot be appended to, so a running stage records each finished item here first; the
//! manifest is rewritten when the stage ends and the journal is then removed. After a kill, the next run
//! reads manifest + journal, so finished items are not recomputed. A torn last line (killed mid-write)
//! does not parse and is ignored: that item simply counts as not done.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::record::Record;
use crate::error::{IoContext, Result};

/// An open journal.
///
/// Appends are flushed to disk at most once a second and when the journal is dropped (the stage
/// ended): a power loss forgets at most the last second of finished items, which are then recomputed
/// (a kill forgets nothing: the data is in the page cache). Syncing every line would cost a disk flush
/// per item.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: std::fs::File,
    last_sync: std::time::Instant,
    dirty: bool,
}

impl Journal {
    /// Opens (creating) a journal for appending.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(p) = path.parent() {
            std::fs::create_dir_all(p).at("create folder", p)?;
        }
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path).at("open journal", path)?;
        if let Some(p) = path.parent() {
            super::cas::sync_folder(p)?;
        }
        Ok(Journal { path: path.to_path_buf(), file, last_sync: std::time::Instant::now(), dirty: false })
    }

    /// Appends one record as a single write.
    pub fn append(&mut self, r: &Record) -> Result<()> {
        let mut line = serde_json::to_vec(r).expect("records serialise");
        line.push(b'\n');
        self.file.write_all(&line).at("append to journal", &self.path)?;
        self.dirty = true;
        if self.last_sync.elapsed().as_secs_f64() >= 1.0 {
            self.sync()?;
        }
        Ok(())
    }

    /// Flushes what was appended to disk.
    pub fn sync(&mut self) -> Result<()> {
        if self.dirty {
            self.file.sync_data().at("sync journal", &self.path)?;
            self.dirty = false;
        }
        self.last_sync = std::time::Instant::now();
        Ok(())
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        let _ = self.sync();
    }
}

/// Reads a journal's complete lines; a missing journal is empty.
pub fn read(path: &Path) -> Vec<Record> {
    let Ok(text) = std::fs::read(path) else { return Vec::new() };
    text.split(|&b| b == b'\n').filter(|l| !l.is_empty()).filter_map(|l| serde_json::from_slice(l).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::record::Status;

    #[test]
    fn torn_last_line_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j/s.jsonl");
        let r = Record {
            item_id: "a".into(),
            key: "k".into(),
            status: Status::Ok,
            error: None,
            version: 1,
            params_hash: "p".into(),
            inputs: vec![],
            outputs: vec![],
            seconds: 0.1,
            meta: Default::default(),
        };
        let mut j = Journal::open(&p).unwrap();
        j.append(&r).unwrap();
        drop(j);
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"{\"item_id\":\"b\",\"ke").unwrap();
        assert_eq!(read(&p), vec![r]);
        assert!(read(&dir.path().join("missing")).is_empty());
    }
}
