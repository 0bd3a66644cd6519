//! The content-addressed object store under `<workspace>/cas/`.
//!
//! An object's file name is the BLAKE3 of its bytes plus an extension (`cas/ab/abcdef....npy`), so equal
//! outputs are stored once and an object is valid exactly when its bytes hash to its name. Writes go to
//! `<workspace>/tmp/` first and are renamed into place, so a killed run never leaves a half-written object
//! under a valid name.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{IoContext, Result};
use crate::hash::hash_bytes;

/// Handle on a workspace's object store.
#[derive(Debug, Clone)]
pub struct Cas {
    root: PathBuf,
    tmp: PathBuf,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to `dest` atomically: a unique temp file in `tmp_dir`, then rename.
pub fn write_atomic(tmp_dir: &Path, dest: &Path, bytes: &[u8]) -> Result<()> {
    write_via_temp(tmp_dir, dest, bytes, false)
}

/// [`write_atomic`] that survives a power loss: the temp file is flushed to disk before the rename, and
/// the folder after it, so the name never points at unwritten blocks. For manifests and other small
/// files whose loss would lose many items; objects are not synced (too many, and a corrupt one is
/// found by hashing when it is read and recomputed).
pub fn write_durable(tmp_dir: &Path, dest: &Path, bytes: &[u8]) -> Result<()> {
    write_via_temp(tmp_dir, dest, bytes, true)
}

fn write_via_temp(tmp_dir: &Path, dest: &Path, bytes: &[u8], durable: bool) -> Result<()> {
    std::fs::create_dir_all(tmp_dir).at("create folder", tmp_dir)?;
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = tmp_dir.join(format!("{}-{:?}-{n}.tmp", std::process::id(), std::thread::current().id()).replace(['(', ')'], ""));
    let mut f = std::fs::File::create(&tmp).at("create", &tmp)?;
    f.write_all(bytes).at("write", &tmp)?;
    if durable {
        f.sync_all().at("sync", &tmp)?;
    }
    drop(f);
    let parent = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).at("create folder", parent)?;
    std::fs::rename(&tmp, dest).at("rename into place", dest)?;
    if durable {
        sync_folder(parent)?;
    }
    Ok(())
}

/// Flushes a folder's entries (a rename or a new file in it) to disk.
pub fn sync_folder(dir: &Path) -> Result<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).at("sync folder", dir)
}

impl Cas {
    /// The store of a workspace.
    pub fn new(workspace: &Path) -> Self {
        Cas { root: workspace.join("cas"), tmp: workspace.join("tmp") }
    }

    /// Path of an object, relative to the workspace (what manifests record).
    pub fn rel_path(hash: &str, ext: &str) -> String {
        format!("cas/{}/{hash}.{ext}", &hash[..2])
    }

    /// Stores bytes; returns the workspace-relative path. An existing object is rewritten unless it
    /// holds exactly these bytes: a same-sized file may be a corrupt copy (a flipped bit, a block
    /// zeroed by a crash), and keeping it would poison every item that reads it.
    pub fn put(&self, bytes: &[u8], ext: &str) -> Result<String> {
        let hash = hash_bytes(bytes);
        let rel = Self::rel_path(&hash, ext);
        let dest = self.root.parent().expect("cas has a parent").join(&rel);
        let intact = match std::fs::metadata(&dest) {
            Ok(m) if m.is_file() && m.len() == bytes.len() as u64 => std::fs::read(&dest).is_ok_and(|old| old == bytes),
            _ => false,
        };
        if !intact {
            write_atomic(&self.tmp, &dest, bytes)?;
        }
        Ok(rel)
    }

    /// Cheap validity check used when planning: the object exists with the recorded size.
    pub fn looks_valid(workspace: &Path, rel: &str, size: u64) -> bool {
        std::fs::metadata(workspace.join(rel)).map(|m| m.is_file() && m.len() == size).unwrap_or(false)
    }

    /// Full check: the bytes hash to the object's name. Used before an object is read as an input.
    pub fn verify(workspace: &Path, rel: &str) -> bool {
        let Some(name) = Path::new(rel).file_stem().and_then(|s| s.to_str()) else { return false };
        match std::fs::read(workspace.join(rel)) {
            Ok(bytes) => hash_bytes(&bytes) == name,
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_is_content_addressed_and_verifiable() {
        let dir = tempfile::tempdir().unwrap();
        let cas = Cas::new(dir.path());
        let a = cas.put(b"hello", "bin").unwrap();
        assert_eq!(a, cas.put(b"hello", "bin").unwrap());
        assert!(Cas::looks_valid(dir.path(), &a, 5));
        assert!(!Cas::looks_valid(dir.path(), &a, 4));
        assert!(Cas::verify(dir.path(), &a));
        std::fs::write(dir.path().join(&a), b"hellO").unwrap();
        assert!(Cas::looks_valid(dir.path(), &a, 5), "same size: the cheap check passes");
        assert!(!Cas::verify(dir.path(), &a), "the full check catches the corruption");
        assert!(!Cas::verify(dir.path(), "cas/xx/missing.bin"));
        // Storing the same bytes again repairs the corrupt copy instead of trusting its size.
        assert_eq!(cas.put(b"hello", "bin").unwrap(), a);
        assert_eq!(std::fs::read(dir.path().join(&a)).unwrap(), b"hello");
    }
}
