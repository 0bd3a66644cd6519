//! Reading user files: whole-file reads whose errors say what is wrong with the path, and folder walks
//! that survive symbolic-link loops and name dangling links.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::item_err;

/// Reads a whole file. A missing file or a dangling symbolic link is the item's content (a lasting
/// [`Error::Item`] naming the path); any other I/O error ([`Error::Io`]) may pass on a later run.
pub fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => match std::fs::read_link(path) {
            Ok(target) => item_err!("{}: dangling symbolic link (to {}, which does not exist)", path.display(), target.display()),
            Err(_) => item_err!("{}: file not found", path.display()),
        },
        _ => Error::io("read", path, e),
    })
}

/// What says a file changed without reading it: `(size, mtime in ns, inode)`, following a symbolic
/// link as `stat` does. Any rewrite changes it (writes are renames into place, or change size or
/// mtime); the source hash cache and the no-op stamp compare it.
pub type FileIdentity = (u64, i64, u64);

/// The [`FileIdentity`] in `md`.
pub fn identity_of(md: &std::fs::Metadata) -> FileIdentity {
    (md.len(), md.mtime() * 1_000_000_000 + md.mtime_nsec(), md.ino())
}

/// The [`FileIdentity`] of `path`; `None` if it cannot be found.
pub fn identity(path: &Path) -> Option<FileIdentity> {
    std::fs::metadata(path).ok().map(|md| identity_of(&md))
}

/// An open folder, for looking up many files in it by name: `fstatat` relative to the folder's handle
/// skips resolving the folder's own path for every file, which is most of a `stat`'s cost when a no-op
/// rerun checks 200,000 cache objects.
pub struct Folder {
    handle: std::fs::File,
}

impl Folder {
    /// Opens `dir` (`None` if it cannot be opened: then none of its files exist for the caller).
    pub fn open(dir: &Path) -> Option<Self> {
        std::fs::File::open(dir).ok().map(|handle| Folder { handle })
    }

    /// The size of the regular file `name` in this folder, following a symbolic link as `stat` does;
    /// `None` if it does not exist, is not a regular file, or its name holds a NUL byte.
    pub fn file_size(&self, name: &str) -> Option<u64> {
        use std::os::fd::AsRawFd;
        let c = std::ffi::CString::new(name).ok()?;
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: `c` is a NUL-terminated string and `st` a buffer of the right type, both alive for the
        // call; the handle is an open folder; the struct is read only when the call filled it.
        let st = unsafe {
            if libc::fstatat(self.handle.as_raw_fd(), c.as_ptr(), st.as_mut_ptr(), 0) != 0 {
                return None;
            }
            st.assume_init()
        };
        ((st.st_mode & libc::S_IFMT) == libc::S_IFREG).then_some(st.st_size as u64)
    }

    /// The [`FileIdentity`] of the entry `name` in this folder, as [`identity`] gives it for the joined
    /// path (with one path component to resolve, not the whole path); `None` if it cannot be found or
    /// its name holds a NUL byte.
    pub fn identity(&self, name: &std::ffi::OsStr) -> Option<FileIdentity> {
        use std::os::fd::AsRawFd;
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(name.as_bytes()).ok()?;
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: as in `file_size`.
        let st = unsafe {
            if libc::fstatat(self.handle.as_raw_fd(), c.as_ptr(), st.as_mut_ptr(), 0) != 0 {
                return None;
            }
            st.assume_init()
        };
        Some((st.st_size as u64, st.st_mtime * 1_000_000_000 + st.st_mtime_nsec, st.st_ino))
    }
}

/// Every file under `root` (recursively, following symbolic links) whose extension is one of `exts`
/// (case-insensitive), sorted. A folder reached twice (a link loop, or two links to one folder) is
/// walked once; a dangling link with a wanted extension is listed, so that its item fails naming it.
/// Iterative, so deep trees cannot overflow the stack.
pub fn walk_files(root: &Path, exts: &[String]) -> Result<Vec<PathBuf>> {
    let wanted = |p: &Path| {
        let ext = p.extension().map(|x| x.to_string_lossy().to_lowercase()).unwrap_or_default();
        exts.iter().any(|e| e.eq_ignore_ascii_case(&ext))
    };
    let mut out = Vec::new();
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let meta = std::fs::metadata(&dir).map_err(|e| Error::io("list", &dir, e))?;
        if !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        let rd = std::fs::read_dir(&dir).map_err(|e| Error::io("list", &dir, e))?;
        for e in rd.filter_map(|e| e.ok()) {
            let p = e.path();
            match std::fs::metadata(&p) {
                Ok(m) if m.is_dir() => stack.push(p),
                Ok(_) if wanted(&p) => out.push(p),
                Ok(_) => {}
                // dangling link (or a file gone since listing): its item will say so
                Err(_) if wanted(&p) => out.push(p),
                Err(_) => {}
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_sizes_follow_links_and_refuse_folders_and_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.npy"), b"12345").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("a.npy"), dir.path().join("link")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("gone"), dir.path().join("dangling")).unwrap();
        let f = Folder::open(dir.path()).unwrap();
        assert_eq!(f.file_size("a.npy"), Some(5));
        assert_eq!(f.file_size("link"), Some(5));
        assert_eq!(f.file_size("sub"), None);
        assert_eq!(f.file_size("dangling"), None);
        assert_eq!(f.file_size("nope"), None);
        assert_eq!(f.file_size("a\0b"), None);
        assert!(Folder::open(&dir.path().join("nope")).is_none());
        assert_eq!(f.identity("link".as_ref()), identity(&dir.path().join("link")), "the link's target, as metadata gives it");
        assert!(f.identity("link".as_ref()).is_some());
        assert_eq!(f.identity("nope".as_ref()), None);
    }

    #[test]
    fn loops_are_walked_once_and_dangling_links_are_listed_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/x.DCM"), b"x").unwrap();
        std::fs::write(root.join("a/y.txt"), b"y").unwrap();
        std::os::unix::fs::symlink(root, root.join("a/b/loop")).unwrap();
        std::os::unix::fs::symlink(root.join("a"), root.join("again")).unwrap();
        std::os::unix::fs::symlink(root.join("gone.dcm"), root.join("a/dangling.dcm")).unwrap();
        let files = walk_files(root, &["dcm".into()]).unwrap();
        assert_eq!(files, vec![root.join("a/b/x.DCM"), root.join("a/dangling.dcm")]);
        let e = read_file(&root.join("a/dangling.dcm")).unwrap_err().to_string();
        assert!(e.contains("dangling.dcm") && e.contains("dangling symbolic link"), "{e}");
        assert!(read_file(&root.join("none.dcm")).unwrap_err().to_string().contains("file not found"));
        assert!(matches!(read_file(root), Err(Error::Io { .. })), "a folder is an I/O error");
    }
}
