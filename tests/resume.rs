//! A run killed with SIGKILL mid-stage leaves the cache consistent; the next run recomputes only the
//! unfinished items and ends with exactly what an uninterrupted run writes.

mod util;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use util::*;

fn journal_lines(ws: &Path, stage: &str) -> usize {
    mammoflow::store::journal::read(&ws.join("journal").join(format!("{stage}.jsonl"))).len()
}

fn pipeline(dir: &Path) -> std::path::PathBuf {
    write_pipeline(
        dir,
        "k.toml",
        r#"[pipeline]
name = "k"
workspace = "ws"
seed = 11

[[stage]]
id = "phantom"
kind = "phantom"
params = { count = 40, width = 384, height = 512 }

[[stage]]
id = "ingest"
kind = "ingest-png"
inputs = ["phantom"]
params = { regions = ["mammary_gland", "pectoral_muscle", "nipple", "mass", "calcification", "text", "lymph_node"] }
"#,
    )
}

/// Items of `stage` finished so far: in its manifest or its journal.
fn recorded(ws: &Path, stage: &str) -> usize {
    let manifest = ws.join("manifests").join(format!("{stage}.parquet"));
    let mut ids: std::collections::BTreeSet<String> = mammoflow::store::manifest::read(&manifest).unwrap_or_default().into_iter().map(|r| r.item_id).collect();
    ids.extend(mammoflow::store::journal::read(&ws.join("journal").join(format!("{stage}.jsonl"))).into_iter().map(|r| r.item_id));
    ids.len()
}

/// Starts a run and SIGKILLs it once `stage`'s journal holds at least `at` items; returns how many it held.
fn kill_during(p: &Path, ws: &Path, stage: &str, at: usize) -> usize {
    let mut child = cmd(&["run", p.to_str().unwrap(), "--workers", "1", "--quiet"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let start = Instant::now();
    loop {
        if journal_lines(ws, stage) >= at {
            child.kill().unwrap();
            child.wait().unwrap();
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run finished ({status}) before {at} {stage} items were journaled: make items slower");
        }
        assert!(start.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(2));
    }
    journal_lines(ws, stage)
}

#[test]
fn sigkill_mid_stage_then_rerun_recomputes_only_unfinished_items() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path());
    let ws = dir.path().join("ws");

    // killed during the first stage
    let done = kill_during(&p, &ws, "phantom", 3);
    assert!(done < 40, "killed before the stage finished");
    let st = status_json(&p, &[]);
    assert_eq!(stage(&st, "phantom")["stale"].as_u64(), Some(40 - done as u64), "{st}");

    // killed again during the second stage: items stream, so ingest runs while phantom may still have
    // items to do; whatever either stage finished (manifest or journal) is kept
    let done2 = kill_during(&p, &ws, "ingest", 5);
    let phantom_done = recorded(&ws, "phantom");
    assert!(phantom_done >= done2, "an ingest item ran before its phantom item");
    let st = status_json(&p, &[]);
    assert_eq!((stage(&st, "phantom")["stale"].as_u64(), stage(&st, "ingest")["stale"].as_u64()), (Some(40 - phantom_done as u64), Some(40 - done2 as u64)), "{st}");

    let r = run_json(&p, &[]);
    assert_eq!((stage(&r, "phantom")["computed"].as_u64(), stage(&r, "ingest")["computed"].as_u64()), (Some(40 - phantom_done as u64), Some(40 - done2 as u64)), "{r}");
    assert_eq!(manifest_rows(&ws, "phantom").len(), 40, "the finished stage's manifest was written");
    assert!(!ws.join("journal/ingest.jsonl").exists(), "journal folded into the manifest");

    // identical to an uninterrupted run
    let clean = dir.path().join("clean");
    run_json(&p, &["--workspace", clean.to_str().unwrap()]);
    for s in ["phantom", "ingest"] {
        assert_eq!(comparable(&ws, s), comparable(&clean, s), "stage {s}");
    }
    let referenced: std::collections::BTreeSet<String> =
        ["phantom", "ingest"].iter().flat_map(|s| manifest_rows(&ws, s)).flat_map(|r| r.outputs.into_iter().map(|o| o.file)).collect();
    let clean_objects: std::collections::BTreeSet<String> = cas_files(&clean).into_iter().map(|(f, _)| f).collect();
    assert_eq!(referenced, clean_objects);
}
