//! Locating the peers' scripts and their Python.

use std::path::PathBuf;

/// `../shared/peers` beside the repository (or `MAMMOFLOW_PEERS`).
pub fn peers_dir() -> PathBuf {
    match std::env::var_os("MAMMOFLOW_PEERS") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("shared").join("peers"),
    }
}

/// The peers' Python (`MAMMOFLOW_PEERS_PYTHON`), if set and present.
pub fn peers_python() -> Option<PathBuf> {
    let p = PathBuf::from(std::env::var_os("MAMMOFLOW_PEERS_PYTHON")?);
    p.exists().then_some(p)
}
