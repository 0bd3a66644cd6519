//! The no-op shortcut: a stamp a run leaves when every item ended settled, with which the next `run`
//! or `status` learns that nothing is stale without reading a manifest.
//!
//! A plan is a pure function of: the selected stages (kind, code version, params, inputs), the items
//! they enumerate (ids and declared inputs), the content hashes of those items' source files, the
//! records on file (manifests and journals), and which recorded output objects are present with their
//! recorded size ([`crate::plan::plan`]). The stamp holds a digest of the first three, the identity of
//! every manifest file, every object with its size, and what the settled plan reports (items, cached
//! failures, left-out inputs, pictures). When all of that still holds, planning in full would find
//! every item fresh or a cached failure, so the stamp's report is the answer: at 100,000 images this
//! costs a folder listing and one `stat` per source file and per object, where planning decodes
//! 200,000 manifest rows and hashes as many keys.
//!
//! A source file enters the digest by the `(size, mtime, inode)` that the source hash cache recorded
//! beside the content hash the plan used, not by that hash: checking then needs the one `stat` the
//! cache would need and never loads the cache (a fifth of a 100,000-image no-op). The two agree:
//! planning in full takes a source's hash from the cache exactly when that identity still holds.
//!
//! Anything that does not match falls back to planning in full, which is always right: a journal (a
//! killed run), a manifest rewritten, a source whose `(size, mtime, inode)` changed (it must be read
//! again), an object missing or of another size, a picture gone, another executable (a
//! rebuilt `mammoflow` may plan differently), `--retry-failed` with failures on file. The stamp is
//! removed before a run changes anything and written only by a run whose every item ended ok or with
//! a failure that is cached; `status` only reads it.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

use super::{Plan, PlannedInput};
use crate::error::Result;
use crate::fsio::{FileIdentity, Folder};
use crate::hash::{hash_bytes, hash_value};
use crate::pipeline::{Pipeline, StageDef};
use crate::stages::InputSpec;
use crate::store::statcache::MISSING;
use crate::store::{Record, StatCache, Status, Workspace};

/// Bumped when the stamp's layout or the digest's content changes.
const FORMAT: u32 = 2;

/// The stamp's path in a workspace.
pub fn stamp_path(ws: &Workspace) -> PathBuf {
    ws.root.join("state").join("settled")
}

/// Removes the stamp (before a run changes anything). A missing stamp is fine.
pub fn clear(ws: &Workspace) -> Result<()> {
    let p = stamp_path(ws);
    match std::fs::remove_file(&p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(crate::error::Error::io("remove", &p, e)),
        _ => Ok(()),
    }
}

/// What a settled plan reports for one stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SettledStage {
    /// Stage id.
    pub id: String,
    /// Items.
    pub items: usize,
    /// Cached failures among them: `(item, message)`.
    pub failures: Vec<(String, String)>,
    /// Items that left failed inputs out: `(item, how many, names)`.
    pub skipped: Vec<(String, usize, String)>,
}

/// What the stamp says a no-op run or status reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settled {
    /// Per selected stage, in pipeline order.
    pub stages: Vec<SettledStage>,
    /// Pictures published for people, with their size.
    pub pictures: Vec<(PathBuf, u64)>,
}

/// Identity of a file: any rewrite (always a rename into place) changes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct FileId {
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
    inode: u64,
}

impl FileId {
    fn of(path: &Path) -> Option<Self> {
        let m = std::fs::metadata(path).ok()?;
        Some(FileId { size: m.len(), mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(), ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(), inode: m.ino() })
    }
}

/// The stamp's first line; the object list follows, one `path<TAB>size` per line.
#[derive(Debug, Serialize, Deserialize)]
struct Header {
    format: u32,
    /// [`Digest`] of the plan's inputs.
    inputs: String,
    /// Per selected stage: its manifest's identity (`None`: no manifest).
    manifests: Vec<Option<FileId>>,
    settled: Settled,
}

/// A digest of everything a plan is made from except records and objects: the executable, the selected
/// stages and the items they enumerate with their inputs (source identities, value hashes, upstream
/// item names). Fields are length-prefixed, so no two different inputs hash alike by concatenation.
struct Digest {
    hasher: blake3::Hasher,
    buf: Vec<u8>,
}

impl Digest {
    fn new(pipeline: &Pipeline, selected: &[bool]) -> Self {
        let mut d = Digest { hasher: blake3::Hasher::new(), buf: Vec::with_capacity(1 << 16) };
        d.field(&FORMAT.to_le_bytes());
        d.field(env!("CARGO_PKG_VERSION").as_bytes());
        let exe = std::env::current_exe().ok().and_then(|p| FileId::of(&p));
        d.field(serde_json::to_string(&exe).unwrap_or_default().as_bytes());
        d.field(&selected.iter().map(|&s| u8::from(s)).collect::<Vec<_>>());
        d.field(&(pipeline.stages.len() as u64).to_le_bytes());
        d
    }
    fn field(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= 1 << 16 {
            self.hasher.update(&self.buf);
            self.buf.clear();
        }
    }
    fn stage(&mut self, sd: &StageDef, params_hash: &str, version: u32, items: usize) {
        self.field(b"stage");
        self.field(sd.id.as_bytes());
        self.field(sd.stage.kind().as_bytes());
        self.field(&version.to_le_bytes());
        self.field(params_hash.as_bytes());
        self.field(&sd.input_idx.iter().flat_map(|i| (*i as u64).to_le_bytes()).collect::<Vec<_>>());
        self.field(format!("{:?}", sd.on_failed_inputs).as_bytes());
        self.field(&(items as u64).to_le_bytes());
    }
    fn item(&mut self, id: &str) {
        self.field(b"item");
        self.field(id.as_bytes());
    }
    fn value(&mut self, role: &str, hash: &str) {
        self.field(b"v");
        self.field(role.as_bytes());
        self.field(hash.as_bytes());
    }
    /// A source file by its identity; a file that cannot be found by a fixed marker (of another length).
    fn source(&mut self, role: &str, id: Option<FileIdentity>) {
        self.field(b"s");
        self.field(role.as_bytes());
        match id {
            Some((size, mtime_ns, inode)) => {
                let mut b = [0u8; 24];
                b[..8].copy_from_slice(&size.to_le_bytes());
                b[8..16].copy_from_slice(&mtime_ns.to_le_bytes());
                b[16..].copy_from_slice(&inode.to_le_bytes());
                self.field(&b);
            }
            None => self.field(MISSING.as_bytes()),
        }
    }
    fn upstream(&mut self, input: usize, stage: usize, item: &str) {
        self.field(b"u");
        self.field(&(input as u64).to_le_bytes());
        self.field(&(stage as u64).to_le_bytes());
        self.field(item.as_bytes());
    }
    fn finish(mut self) -> String {
        self.hasher.update(&self.buf);
        self.hasher.finalize().to_hex().to_string()
    }
}

/// The digest of a plan's inputs, from the plan and the source hash cache it was made with (call before
/// the executor takes records out of the plan: only the declared inputs are read, which it never
/// changes). `None` when a source's hash is not the one the cache holds for it (no stamp then).
pub fn inputs_digest(pipeline: &Pipeline, selected: &[bool], plan: &Plan, stat: &StatCache) -> Option<String> {
    let mut d = Digest::new(pipeline, selected);
    for sp in &plan.stages {
        d.stage(&pipeline.stages[sp.stage], &sp.params_hash, sp.version, sp.items.len());
        for it in &sp.items {
            d.item(&it.id);
            // the item's source paths, in the order of its `src:` inputs
            let mut sources = it.sources.iter();
            for inp in &it.inputs {
                match inp {
                    PlannedInput::Fixed(role, hash) if role.starts_with("src:") => {
                        let (_, path) = sources.next()?;
                        let id = if hash == MISSING { None } else { Some(stat.identity(path, hash)?) };
                        d.source(role, id);
                    }
                    PlannedInput::Fixed(role, hash) => d.value(role, hash),
                    PlannedInput::Upstream { input, stage, item } => d.upstream(*input, *stage, item),
                }
            }
        }
    }
    Some(d.finish())
}

/// The same digest made from the stages' own enumeration and the metadata of the source files, reading
/// no file: `None` when the enumeration fails (planning in full then says why) or `stop` is set.
fn digest_from_disk(pipeline: &Pipeline, selected: &[bool], stop: &AtomicBool) -> Option<String> {
    let mut d = Digest::new(pipeline, selected);
    // pipeline stage index -> its items' ids, sorted (what `plan` hands the stages reading it)
    let mut ids: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for (si, sd) in pipeline.stages.iter().enumerate() {
        if !selected[si] {
            continue;
        }
        let upstream_ids: Vec<&[String]> = sd.input_idx.iter().map(|u| ids.get(u).map_or(&[][..], Vec::as_slice)).collect();
        let mut specs = sd.stage.items(&upstream_ids).ok()?;
        specs.sort_by(|a, b| a.id.cmp(&b.id));
        if specs.windows(2).any(|w| w[0].id == w[1].id) {
            return None;
        }
        let sources: Vec<&Path> = specs.iter().flat_map(|s| &s.inputs).filter_map(|i| if let InputSpec::Source { path, .. } = i { Some(path.as_path()) } else { None }).collect();
        let mut found = identities(&sources, stop)?.into_iter();
        d.stage(sd, &hash_value(&sd.params_value()), sd.stage.version(), specs.len());
        let mut role = String::new();
        for spec in &specs {
            d.item(&spec.id);
            for input in &spec.inputs {
                match input {
                    InputSpec::Source { role: r, .. } => {
                        role.clear();
                        role.push_str("src:");
                        role.push_str(r);
                        d.source(&role, found.next()?);
                    }
                    InputSpec::Value { role: r, value } => d.value(&format!("val:{r}"), &hash_bytes(value.as_bytes())),
                    InputSpec::Upstream { upstream, item } => {
                        let up = *sd.input_idx.get(*upstream)?;
                        ids.get(&up)?.binary_search(item).ok()?;
                        d.upstream(*upstream, up, item);
                    }
                }
            }
        }
        ids.insert(si, specs.into_iter().map(|s| s.id).collect());
    }
    Some(d.finish())
}

/// The [`FileIdentity`] of every path, in order, as the source hash cache compares them (`None` for a
/// file that cannot be found); `None` overall once `stop` is set (the answer is no longer needed). Two
/// threads: this is one `stat` per source file.
fn identities(paths: &[&Path], stop: &AtomicBool) -> Option<Vec<Option<FileIdentity>>> {
    let part = |ps: &[&Path]| -> Option<Vec<Option<FileIdentity>>> {
        let mut out = Vec::with_capacity(ps.len());
        // sources mostly share a folder: each is looked up by name in its folder, opened once per run of
        // paths in it; a path with no folder part, or a folder that cannot be opened, by its whole path
        let mut folder: Option<(&Path, Option<Folder>)> = None;
        for chunk in ps.chunks(512) {
            if stop.load(Ordering::Relaxed) {
                return None;
            }
            for p in chunk {
                let in_folder = match (p.parent(), p.file_name()) {
                    (Some(dir), Some(name)) if !dir.as_os_str().is_empty() => {
                        if folder.as_ref().is_none_or(|(d, _)| *d != dir) {
                            folder = Some((dir, Folder::open(dir)));
                        }
                        folder.as_ref().and_then(|(_, f)| f.as_ref()).map(|f| f.identity(name))
                    }
                    _ => None,
                };
                out.push(in_folder.unwrap_or_else(|| crate::fsio::identity(p)));
            }
        }
        Some(out)
    };
    if paths.len() < 4096 {
        return part(paths);
    }
    let (a, b) = paths.split_at(paths.len() / 2);
    std::thread::scope(|s| {
        let first = s.spawn(|| part(a));
        let second = part(b);
        let mut first = first.join().ok()??;
        first.extend(second?);
        Some(first)
    })
}

/// Whether every object of the list (`cas/ab/name<TAB>size` lines) is a regular file of that size.
/// Gives up (false) as soon as one is not, or `stop` is set; sets `stop` when it finds one missing.
fn objects_present(ws: &Workspace, list: &str, stop: &AtomicBool) -> bool {
    let lines: Vec<&str> = list.lines().collect();
    let check = |part: &[&str]| -> bool {
        let mut folder: Option<(&str, Option<crate::fsio::Folder>)> = None;
        for (n, line) in part.iter().enumerate() {
            if n % 512 == 0 && stop.load(Ordering::Relaxed) {
                return false;
            }
            let mut present = || {
                let (rel, size) = line.split_once('\t')?;
                let size = size.parse::<u64>().ok()?;
                let (dir, name) = rel.rsplit_once('/').unwrap_or(("", rel));
                if folder.as_ref().is_none_or(|(d, _)| *d != dir) {
                    folder = Some((dir, crate::fsio::Folder::open(&ws.root.join(dir))));
                }
                let (_, Some(f)) = folder.as_ref()? else { return None };
                (f.file_size(name) == Some(size)).then_some(())
            };
            if present().is_none() {
                stop.store(true, Ordering::Relaxed);
                return false;
            }
        }
        true
    };
    if lines.len() < 4096 {
        return check(&lines);
    }
    // split at a folder boundary so each thread opens each folder once
    fn dir_of(l: &str) -> &str {
        l.rsplit_once('/').map_or("", |x| x.0)
    }
    let mut mid = lines.len() / 2;
    while mid < lines.len() && dir_of(lines[mid]) == dir_of(lines[mid - 1]) {
        mid += 1;
    }
    let (a, b) = lines.split_at(mid);
    std::thread::scope(|s| {
        let first = s.spawn(|| check(a));
        let second = check(b);
        first.join().unwrap_or(false) && second
    })
}

/// What the stamp reports, if it still holds for this pipeline, selection and workspace; `None` means
/// plan in full. Reads the stamp and the metadata of the manifests and of every source file and object.
pub fn check(pipeline: &Pipeline, ws: &Workspace, selected: &[bool], retry_failed: bool) -> Option<Settled> {
    let text = std::fs::read_to_string(stamp_path(ws)).ok()?;
    let (first, objects) = text.split_once('\n').unwrap_or((&text, ""));
    let header: Header = serde_json::from_str(first).ok()?;
    let chosen: Vec<&StageDef> = pipeline.stages.iter().zip(selected).filter(|(_, s)| **s).map(|(sd, _)| sd).collect();
    if header.format != FORMAT || header.manifests.len() != chosen.len() || header.settled.stages.len() != chosen.len() {
        return None;
    }
    for ((sd, id), st) in chosen.iter().zip(&header.manifests).zip(&header.settled.stages) {
        if st.id != sd.id || ws.journal(&sd.id).symlink_metadata().is_ok() || FileId::of(&ws.manifest(&sd.id)) != *id {
            return None;
        }
    }
    if retry_failed && header.settled.stages.iter().any(|s| !s.failures.is_empty()) {
        return None;
    }
    if header.settled.pictures.iter().any(|(p, size)| std::fs::metadata(p).map(|m| m.len()).ok() != Some(*size)) {
        return None;
    }
    // the objects are checked while the stages enumerate their items and the sources are looked up;
    // the first difference either side finds stops the other (planning in full follows)
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let objects = s.spawn(|| objects_present(ws, objects, &stop));
        let digest = digest_from_disk(pipeline, selected, &stop);
        if digest.as_deref() != Some(header.inputs.as_str()) {
            stop.store(true, Ordering::Relaxed);
        }
        let present = objects.join().unwrap_or(false);
        (present && digest.as_deref() == Some(header.inputs.as_str())).then_some(())
    })?;
    Some(header.settled)
}

/// Writes the stamp for a run that ended with every item settled. `stages` holds, per selected stage,
/// its item count and the final record of each item; `inputs` is [`inputs_digest`] of the run's plan
/// (`None`: no stamp); `pictures` what the run published. Writes nothing (and removes an old stamp) if a record is missing
/// or a transient failure, which the next run retries. Call after every manifest is written.
pub fn write(ws: &Workspace, pipeline: &Pipeline, selected: &[bool], inputs: Option<String>, stages: &[(usize, Vec<&Record>)], pictures: &[PathBuf]) -> Result<()> {
    let Some(inputs) = inputs else { return clear(ws) };
    let chosen: Vec<&StageDef> = pipeline.stages.iter().zip(selected).filter(|(_, s)| **s).map(|(sd, _)| sd).collect();
    if chosen.len() != stages.len() || stages.iter().any(|(n, rs)| *n != rs.len() || rs.iter().any(|r| r.status == Status::Transient)) {
        return clear(ws);
    }
    let mut objects: Vec<(&str, u64)> = Vec::new();
    let mut summary = Vec::with_capacity(stages.len());
    for (sd, (items, records)) in chosen.iter().zip(stages) {
        objects.extend(records.iter().flat_map(|r| r.outputs.iter().map(|o| (o.file.as_str(), o.size))));
        summary.push(SettledStage {
            id: sd.id.clone(),
            items: *items,
            failures: records.iter().filter(|r| r.status != Status::Ok).map(|r| (r.item_id.clone(), r.error.clone().unwrap_or_default())).collect(),
            skipped: records.iter().filter_map(|r| r.skipped_inputs().map(|(n, names)| (r.item_id.clone(), n, names))).collect(),
        });
    }
    objects.sort_unstable();
    objects.dedup();
    let pictures = pictures.iter().map(|p| std::fs::metadata(p).map(|m| (p.clone(), m.len()))).collect::<std::io::Result<Vec<_>>>();
    let Ok(pictures) = pictures else { return clear(ws) };
    let manifests = chosen.iter().map(|sd| FileId::of(&ws.manifest(&sd.id))).collect();
    let header = Header { format: FORMAT, inputs, manifests, settled: Settled { stages: summary, pictures } };
    let mut out = serde_json::to_vec(&header).map_err(|e| crate::error::Error::Execution(format!("stamp: {e}")))?;
    out.push(b'\n');
    for (file, size) in objects {
        if file.contains(['\n', '\t']) {
            return clear(ws);
        }
        writeln!(out, "{file}\t{size}").expect("writing to memory");
    }
    let dir = ws.root.join("state");
    std::fs::create_dir_all(&dir).map_err(|e| crate::error::Error::io("create folder", &dir, e))?;
    crate::store::cas::write_atomic(&ws.tmp(), &stamp_path(ws), &out)
}
