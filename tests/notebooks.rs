//! Every notebook in `notebooks/` runs top to bottom (`jupyter nbconvert --execute`) against a small
//! trained, evaluated and exported pipeline, so a notebook that reads a column that no longer exists
//! fails the tests.
//!
//! The notebooks' Python packages live in a virtual environment outside the repository,
//! `$MAMMOFLOW_NOTEBOOK_VENV` or `~/.cache/mammoflow/notebook-venv`, created and filled from PyPI on
//! first use (about a minute).

mod util;

use std::path::{Path, PathBuf};
use std::process::Command;

use util::*;

const PACKAGES: &[&str] = &["nbconvert", "nbclient", "ipykernel", "pandas", "polars", "pyarrow", "matplotlib", "numpy", "pillow"];
const IMPORTS: &str = "import nbconvert, nbclient, ipykernel, pandas, polars, pyarrow, matplotlib, numpy, PIL";

fn venv() -> PathBuf {
    let dir = std::env::var_os("MAMMOFLOW_NOTEBOOK_VENV").map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("HOME").expect("HOME is not set: set MAMMOFLOW_NOTEBOOK_VENV to a folder for the notebooks' venv");
        PathBuf::from(home).join(".cache/mammoflow/notebook-venv")
    });
    let python = dir.join("bin/python");
    let ready = || Command::new(&python).args(["-c", IMPORTS]).output().is_ok_and(|o| o.status.success());
    if ready() {
        return dir;
    }
    if !python.exists() {
        let o = Command::new("python3").arg("-m").arg("venv").arg(&dir).output().expect("python3 is needed to run the notebooks");
        assert!(o.status.success(), "creating the notebooks' venv {}: {}", dir.display(), String::from_utf8_lossy(&o.stderr));
    }
    let o = Command::new(dir.join("bin/pip")).args(["install", "--quiet", "--disable-pip-version-check"]).args(PACKAGES).output().expect("running pip");
    assert!(o.status.success(), "installing {PACKAGES:?} into {} (PyPI needed once): {}", dir.display(), String::from_utf8_lossy(&o.stderr));
    assert!(ready(), "the notebooks' venv {} still lacks a package after pip install", dir.display());
    dir
}

#[test]
fn every_notebook_runs_top_to_bottom_on_an_exported_pipeline() {
    let venv = venv();
    let dir = tempfile::tempdir().unwrap();
    let p = trained_phantom_pipeline(dir.path(), 2);
    let r = run_json(&p, &[]);
    assert_eq!(r["failed"], 0, "{r}");
    let ws = dir.path().join("ws");
    let tables = ws.join("tables");
    run_ok(&["export", p.to_str().unwrap(), "--out", tables.to_str().unwrap()]);
    let notebooks = Path::new(env!("CARGO_MANIFEST_DIR")).join("notebooks");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&notebooks).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "ipynb")).collect();
    names.sort();
    assert!(names.len() >= 2, "{names:?}");
    let out = dir.path().join("executed");
    for nb in &names {
        let o = Command::new(venv.join("bin/python"))
            .args(["-m", "nbconvert", "--to", "notebook", "--execute", "--ExecutePreprocessor.timeout=300", "--output-dir"])
            .arg(&out)
            .arg(nb)
            .current_dir(&notebooks)
            .env("MAMMOFLOW_WORKSPACE", &ws)
            .env("MAMMOFLOW_TABLES", &tables)
            .env("MPLBACKEND", "Agg")
            .output()
            .unwrap();
        assert!(o.status.success(), "{} failed:\n{}", nb.display(), String::from_utf8_lossy(&o.stderr));
        let name = nb.file_name().unwrap();
        let executed: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join(name)).unwrap()).unwrap();
        let code = executed["cells"].as_array().unwrap().iter().filter(|c| c["cell_type"] == "code");
        assert!(code.clone().count() > 0 && code.clone().all(|c| c["execution_count"].is_number()), "{} has cells that did not run", nb.display());
    }
}
