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
