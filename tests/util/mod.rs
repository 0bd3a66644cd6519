//! Helpers for the end-to-end tests: run the real binary in a temp folder, read its JSON and manifests.
#![allow(dead_code, unused_imports)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub use mammoflow::store::{manifest, Record, Status};

/// The binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mammoflow"))
}

/// A command for the binary with a clean environment for the variables it reads.
pub fn cmd(args: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.args(args).env_remove("MAMMOFLOW_DATA");
    c
}

/// Runs `mammoflow args...`.
pub fn run(args: &[&str]) -> Output {
    cmd(args).output().expect("start mammoflow")
}

/// Runs and asserts the exit code, returning stdout.
pub fn run_ok(args: &[&str]) -> String {
    let o = run(args);
    assert!(o.status.success(), "mammoflow {args:?} failed ({:?}):\n{}\n{}", o.status.code(), String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

/// The last line of stdout, parsed as JSON.
pub fn last_json(stdout: &str) -> serde_json::Value {
    let line = stdout.lines().last().unwrap_or_else(|| panic!("no output"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {line}"))
}

/// `run --json --quiet` plus args; returns the summary.
pub fn run_json(pipeline: &Path, extra: &[&str]) -> serde_json::Value {
    let p = pipeline.to_str().unwrap();
    let mut args = vec!["run", p, "--json", "--quiet"];
    args.extend_from_slice(extra);
    last_json(&run_ok(&args))
}

/// `status --json` plus args.
pub fn status_json(pipeline: &Path, extra: &[&str]) -> serde_json::Value {
    let p = pipeline.to_str().unwrap();
    let mut args = vec!["status", p, "--json"];
    args.extend_from_slice(extra);
    last_json(&run_ok(&args))
}

/// The summary entry of a stage.
pub fn stage<'a>(summary: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    summary["stages"].as_array().unwrap().iter().find(|s| s["id"] == id).unwrap_or_else(|| panic!("no stage {id} in {summary}"))
}

/// Writes a pipeline file into `dir`.
pub fn write_pipeline(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Reads a stage manifest of a workspace.
pub fn manifest_rows(ws: &Path, stage: &str) -> Vec<Record> {
    manifest::read(&ws.join("manifests").join(format!("{stage}.parquet"))).unwrap()
}

/// Manifest rows without the timing column, for comparing runs.
pub fn comparable(ws: &Path, stage: &str) -> Vec<Record> {
    manifest_rows(ws, stage)
        .into_iter()
        .map(|mut r| {
            r.seconds = 0.0;
            r
        })
        .collect()
}

/// The real data sets: `MAMMOFLOW_DATA` or `../shared/datasets` beside the repository. Fails loudly when
/// missing: these tests are part of what must pass.
pub fn data_root() -> PathBuf {
    let root = std::env::var_os("MAMMOFLOW_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/datasets"));
    assert!(
        root.join("ddsm-tissue/images").is_dir(),
        "real data not found at {} (set MAMMOFLOW_DATA to the folder holding ddsm-tissue/): these tests need it",
        root.display()
    );
    root
}

/// Copies `n` ddsm-tissue images (and their masks) into `dest/ddsm-tissue` (all 60 when `n` is None).
pub fn copy_ddsm(dest: &Path, n: Option<usize>) -> PathBuf {
    let src = data_root().join("ddsm-tissue");
    let out = dest.join("ddsm-tissue");
    std::fs::create_dir_all(out.join("images")).unwrap();
    std::fs::create_dir_all(out.join("masks")).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(src.join("images")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    for name in names.iter().take(n.unwrap_or(usize::MAX)) {
        std::fs::copy(src.join("images").join(name), out.join("images").join(name)).unwrap();
        let stem = name.trim_end_matches(".png");
        for r in ["background", "adipose", "fibroglandular", "pectoral"] {
            let m = format!("{stem}_{r}.png");
            std::fs::copy(src.join("masks").join(&m), out.join("masks").join(&m)).unwrap();
        }
    }
    out
}

/// A small phantom pipeline (phantom -> ingest -> crop) with its workspace in `dir/ws`.
pub fn phantom_pipeline(dir: &Path, count: usize) -> PathBuf {
    write_pipeline(
        dir,
        "p.toml",
        &format!(
            r#"[pipeline]
name = "t"
workspace = "ws"
seed = 5

[[stage]]
id = "phantom"
kind = "phantom"
params = {{ count = {count}, width = 128, height = 160 }}

[[stage]]
id = "ingest"
kind = "ingest-png"
inputs = ["phantom"]
params = {{ regions = ["mammary_gland", "nipple", "mass"] }}

[[stage]]
id = "crop"
kind = "center-crop"
inputs = ["ingest"]
params = {{ size = 64 }}
"#
        ),
    )
}

/// Every object file under a workspace's `cas/`, as (relative path, bytes).
pub fn cas_files(ws: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(shards) = std::fs::read_dir(ws.join("cas")) else { return out };
    for s in shards {
        for f in std::fs::read_dir(s.unwrap().path()).unwrap() {
            let p = f.unwrap().path();
            out.push((p.strip_prefix(ws).unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()));
        }
    }
    out.sort();
    out
}

/// The head of a pipeline that makes labelled phantom images: `[pipeline]` (workspace `ws`), then
/// `phantom` (PNG, `phantom_params` inline, e.g. `count = 3, width = 192, height = 256`), `ingest`
/// (every region) and `merge` (the phantom class table). Stages follow as text.
pub fn labelled_phantom_head(name: &str, seed: u64, phantom_params: &str) -> String {
    let classes = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/classes-phantom.toml");
    format!(
        r#"[pipeline]
name = "{name}"
workspace = "ws"
seed = {seed}

[[stage]]
id = "phantom"
kind = "phantom"
params = {{ {phantom_params} }}

[[stage]]
id = "ingest"
kind = "ingest-png"
inputs = ["phantom"]
params = {{ regions = ["mammary_gland", "pectoral_muscle", "nipple", "mass", "calcification", "text", "lymph_node"] }}

[[stage]]
id = "merge"
kind = "merge-masks"
inputs = ["ingest"]
params = {{ classes = "{}" }}
"#,
        classes.display()
    )
}

/// A copy of shipped pipeline `name` (`pipelines/<name>.toml`) up to the line `marker`, with the class
/// tables it names, under `dir` so every relative path resolves as in the repository: the preparation
/// stages of a real-data pipeline without its trainings (which take many minutes). An empty marker
/// copies the whole file.
#[allow(dead_code)]
pub fn shipped_pipeline_before(dir: &Path, name: &str, marker: &str, tables: &[&str]) -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(repo.join(format!("pipelines/{name}.toml"))).unwrap();
    let cut = if marker.is_empty() { text.len() } else { text.find(marker).unwrap_or_else(|| panic!("the marker {marker:?} in pipelines/{name}.toml")) };
    std::fs::create_dir_all(dir.join("pipelines")).unwrap();
    std::fs::create_dir_all(dir.join("configs")).unwrap();
    for t in tables {
        std::fs::copy(repo.join("configs").join(t), dir.join("configs").join(t)).unwrap();
    }
    let p = dir.join(format!("pipelines/{name}.toml"));
    std::fs::write(&p, &text[..cut]).unwrap();
    p
}

/// 8 labelled phantom women -> split 4 / 2 / 2 -> 2 crops each -> a small DeepLabv3 trained `epochs`
/// epochs (`train`) -> every image scored (`eval`) -> the tables (`tables`).
#[allow(dead_code)]
pub fn trained_phantom_pipeline(dir: &Path, epochs: usize) -> PathBuf {
    let head = labelled_phantom_head("t", 11, "count = 8, width = 160, height = 192");
    write_pipeline(dir, "t.toml", &format!("{head}{}", training_stages(epochs, r#"inputs = ["eval"]"#)))
}

/// The stages of [`trained_phantom_pipeline`] after `merge`: `split`, `crop`, `train` (`epochs`),
/// `eval` and `tables`, an export stage whose `inputs` (and params) are the lines `export`.
pub fn training_stages(epochs: usize, export: &str) -> String {
    let classes = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/classes-phantom.toml");
    format!(
        r#"
[[stage]]
id = "split"
kind = "split"
inputs = ["merge"]
params = {{ train = 0.5, val = 0.25 }}

[[stage]]
id = "crop"
kind = "balanced-crop"
inputs = ["merge"]
params = {{ classes = "{0}", sizes = [80], per_image = 2 }}

[[stage]]
id = "train"
kind = "train"
inputs = ["crop", "split"]
params = {{ model = "deeplabv3", width = 0.125, input = 64, classes = "{0}", epochs = {epochs}, batch = 4, lr = 0.01, patience = 0 }}

[[stage]]
id = "eval"
kind = "evaluate"
inputs = ["merge", "train"]
params = {{ overlap = 16 }}

[[stage]]
id = "tables"
kind = "export"
{export}
"#,
        classes.display()
    )
}
