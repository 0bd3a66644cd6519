//! Keyed hashes for identifiers (PatientID, study and series UIDs).
//!
//! Later stages need to know which images belong to one woman (to keep her on one side of a split), but
//! manifests must never hold her id. A keyed BLAKE3 hash with a random key kept in the workspace
//! (`state/subject.key`, created once) gives a stable pseudonym per workspace that cannot be reversed or
//! recomputed from a list of ids without the key.

use std::io::Write;
use std::path::Path;

use crate::error::{IoContext, Result};

/// The workspace's 32-byte key, created on first use. Creation is atomic and first-wins (temp file +
/// hard link), so concurrent processes agree on one key.
pub fn workspace_key(workspace: &Path) -> Result<[u8; 32]> {
    let path = workspace.join("state").join("subject.key");
    if let Some(k) = read_key(&path) {
        return Ok(k);
    }
    let dir = workspace.join("state");
    std::fs::create_dir_all(&dir).at("create folder", &dir)?;
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut seed)).at("read", "/dev/urandom")?;
    let tmp = dir.join(format!("subject.key.{}.tmp", std::process::id()));
    let mut f = std::fs::File::create(&tmp).at("create", &tmp)?;
    f.write_all(hex::encode(seed).as_bytes()).at("write", &tmp)?;
    f.sync_all().at("sync", &tmp)?;
    drop(f);
    let _ = std::fs::hard_link(&tmp, &path); // fails if another process won: its key is used
    let _ = std::fs::remove_file(&tmp);
    read_key(&path).ok_or_else(|| crate::item_err!("cannot read the subject key {}", path.display()))
}

/// The workspace's key if it exists (creates nothing: what `status` and `dag` use).
pub fn existing_key(workspace: &Path) -> Option<[u8; 32]> {
    read_key(&workspace.join("state").join("subject.key"))
}

fn read_key(path: &Path) -> Option<[u8; 32]> {
    let text = std::fs::read_to_string(path).ok()?;
    let bytes = hex::decode(text.trim()).ok()?;
    bytes.try_into().ok()
}

/// Keyed hash of an identifier, 32 hex characters (128 bits: plenty to avoid collisions).
pub fn pseudonym(key: &[u8; 32], value: &str) -> String {
    blake3::keyed_hash(key, value.as_bytes()).to_hex()[..32].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_created_once_and_pseudonyms_are_stable_and_keyed() {
        let d = tempfile::tempdir().unwrap();
        let k1 = workspace_key(d.path()).unwrap();
        let k2 = workspace_key(d.path()).unwrap();
        assert_eq!(k1, k2);
        assert_eq!(pseudonym(&k1, "P1"), pseudonym(&k2, "P1"));
        assert_ne!(pseudonym(&k1, "P1"), pseudonym(&k1, "P2"));
        let other = tempfile::tempdir().unwrap();
        assert_ne!(pseudonym(&workspace_key(other.path()).unwrap(), "P1"), pseudonym(&k1, "P1"));
    }
}
