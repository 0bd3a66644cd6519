//! The workspace lock: one run at a time per workspace.
//!
//! An exclusive `flock` on `<workspace>/lock`, taken without waiting. The kernel drops it when the process
//! dies, even by SIGKILL, so a crashed run never leaves a stale lock. The file holds a line describing the
//! holder (pid, host, start time, command), which the refused run prints.

use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::error::{Error, IoContext, Result};

/// Held while alive.
#[derive(Debug)]
pub struct WorkspaceLock {
    _file: std::fs::File,
}

impl WorkspaceLock {
    /// Takes the lock or fails at once naming the holder.
    pub fn acquire(workspace: &Path, what: &str) -> Result<Self> {
        std::fs::create_dir_all(workspace).at("create workspace", workspace)?;
        let path = workspace.join("lock");
        let mut file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).at("open", &path)?;
        // SAFETY-free: flock on a valid fd owned by `file`.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(Error::Locked {
                workspace: workspace.to_path_buf(),
                holder: if holder.is_empty() { "unknown holder".into() } else { holder.to_string() },
            });
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let line = format!("pid {} on {} since unix time {secs}: {what}\n", std::process::id(), host.trim());
        file.set_len(0).at("truncate", &path)?;
        file.rewind().at("seek", &path)?;
        file.write_all(line.as_bytes()).at("write", &path)?;
        Ok(WorkspaceLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_fails_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let l = WorkspaceLock::acquire(dir.path(), "mammoflow run test").unwrap();
        let e = WorkspaceLock::acquire(dir.path(), "other").unwrap_err().to_string();
        assert!(e.contains("locked by another run") && e.contains(&format!("pid {}", std::process::id())), "{e}");
        drop(l);
        WorkspaceLock::acquire(dir.path(), "again").unwrap();
    }
}
