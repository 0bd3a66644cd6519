//! Source content hashes, remembered by `(size, mtime, inode)` so unchanged files are not re-read.
//!
//! Keys always use the content hash (BLAKE3); this cache only decides whether a file must be hashed again.
//! Any change of size, modification time or inode re-hashes it. It lives in
//! `<workspace>/state/sources.parquet`; a lost or unreadable cache only costs time.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use polars::prelude::*;

use crate::error::Result;
use crate::fsio::{identity_of, FileIdentity};
use crate::hash::hash_bytes;

#[derive(Debug, Clone, PartialEq)]
struct Entry {
    id: FileIdentity,
    hash: String,
}

/// The cache, loaded in memory.
#[derive(Debug, Default)]
pub struct StatCache {
    entries: HashMap<PathBuf, Entry>,
    dirty: bool,
    /// Files hashed (not served from the cache) since load.
    pub hashed: usize,
}

/// The content hash of a missing file: it never equals a real hash, and it changes when the file appears.
pub const MISSING: &str = "missing";

impl StatCache {
    /// Loads the cache (empty if absent or unreadable).
    pub fn load(path: &Path) -> Self {
        let Ok(file) = std::fs::File::open(path) else { return Self::default() };
        let Ok(df) = ParquetReader::new(file).finish() else { return Self::default() };
        let get = || -> Option<HashMap<PathBuf, Entry>> {
            let p = df.column("path").ok()?.str().ok()?;
            let s = df.column("size").ok()?.u64().ok()?;
            let m = df.column("mtime_ns").ok()?.i64().ok()?;
            let i = df.column("inode").ok()?.u64().ok()?;
            let h = df.column("hash").ok()?.str().ok()?;
            let mut out = HashMap::with_capacity(df.height());
            for r in 0..df.height() {
                out.insert(PathBuf::from(p.get(r)?), Entry { id: (s.get(r)?, m.get(r)?, i.get(r)?), hash: h.get(r)?.to_string() });
            }
            Some(out)
        };
        StatCache { entries: get().unwrap_or_default(), dirty: false, hashed: 0 }
    }

    /// Content hash of a file ([`MISSING`] when it does not exist or cannot be read).
    pub fn hash(&mut self, path: &Path) -> String {
        let Ok(md) = std::fs::metadata(path) else { return MISSING.to_string() };
        let id = identity_of(&md);
        if let Some(e) = self.entries.get(path).filter(|e| e.id == id) {
            return e.hash.clone();
        }
        let Ok(bytes) = std::fs::read(path) else { return MISSING.to_string() };
        let hash = hash_bytes(&bytes);
        self.hashed += 1;
        self.entries.insert(path.to_path_buf(), Entry { id, hash: hash.clone() });
        self.dirty = true;
        hash
    }

    /// The content hash of a file if this cache can give it without reading the file: the recorded one
    /// when `(size, mtime, inode)` still match, [`MISSING`] when the file cannot be found; `None` when
    /// it would have to be hashed. Gives what [`StatCache::hash`] would, reading nothing but metadata.
    pub fn cached(&self, path: &Path) -> Option<&str> {
        let Ok(md) = std::fs::metadata(path) else { return Some(MISSING) };
        let e = self.entries.get(path)?;
        (e.id == identity_of(&md)).then_some(e.hash.as_str())
    }

    /// The identity recorded for a file whose recorded content hash is `hash`: what a later `stat` must
    /// show for [`StatCache::cached`] to give that hash again. Reads no metadata.
    pub fn identity(&self, path: &Path, hash: &str) -> Option<FileIdentity> {
        let e = self.entries.get(path)?;
        (e.hash == hash).then_some(e.id)
    }

    /// Saves the cache if anything changed.
    pub fn save(&self, path: &Path, tmp_dir: &Path) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let mut rows: Vec<(&PathBuf, &Entry)> = self.entries.iter().collect();
        rows.sort_by(|a, b| a.0.cmp(b.0));
        let mut df = DataFrame::new(rows.len(), vec![
            Column::new("path".into(), rows.iter().map(|(p, _)| p.to_string_lossy().into_owned()).collect::<Vec<_>>()),
            Column::new("size".into(), rows.iter().map(|(_, e)| e.id.0).collect::<Vec<_>>()),
            Column::new("mtime_ns".into(), rows.iter().map(|(_, e)| e.id.1).collect::<Vec<_>>()),
            Column::new("inode".into(), rows.iter().map(|(_, e)| e.id.2).collect::<Vec<_>>()),
            Column::new("hash".into(), rows.iter().map(|(_, e)| e.hash.as_str()).collect::<Vec<_>>()),
        ])
        .map_err(|e| crate::error::Error::Manifest { path: path.to_path_buf(), message: e.to_string() })?;
        let buf = crate::parquet::parquet_bytes(&mut df).map_err(|e| crate::error::Error::Manifest { path: path.to_path_buf(), message: e.to_string() })?;
        super::cas::write_atomic(tmp_dir, path, &buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rehashes_only_changed_files() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.png");
        std::fs::write(&f, b"one").unwrap();
        let mut c = StatCache::default();
        let h1 = c.hash(&f);
        assert_eq!(h1, hash_bytes(b"one"));
        let cache = dir.path().join("s.parquet");
        c.save(&cache, dir.path()).unwrap();
        let mut c = StatCache::load(&cache);
        assert_eq!(c.hash(&f), h1);
        assert_eq!(c.hashed, 0, "served from the cache");
        std::fs::write(&f, b"two!").unwrap();
        assert_eq!(c.hash(&f), hash_bytes(b"two!"));
        assert_eq!(c.hashed, 1);
        assert_eq!(c.hash(&dir.path().join("nope")), MISSING);
        assert_eq!(c.cached(&f), Some(hash_bytes(b"two!").as_str()));
        assert_eq!(c.cached(&dir.path().join("nope")), Some(MISSING));
        let now = crate::fsio::identity(&f).unwrap();
        assert_eq!(c.identity(&f, &hash_bytes(b"two!")), Some(now), "the identity the hash was taken at");
        assert_eq!(c.identity(&f, &h1), None, "not the hash on record");
        std::fs::write(&f, b"three").unwrap();
        assert_eq!(c.cached(&f), None, "changed since hashed");
    }
}
