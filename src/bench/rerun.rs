//! `bench rerun`: what a rerun costs when little or nothing changed, against DVC.
//!
//! The same two-stage per-image pipeline as `../shared/peers/dvc_pipeline.sh` (ingest PNG -> tensor,
//! centre crop of `size`), over N generated 256 x 256 8-bit PNGs. Every figure is the wall time of a whole
//! `mammoflow` process (start-up included), as DVC's are of whole `dvc` commands: first run, no-op rerun
//! and `status` (median of 3), rerun after changing one image, rerun after changing the crop size.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context};

use super::{peers_dir, peers_python, BenchOptions, Report, Row};
use crate::codec;
use crate::npy::Tensor2;

fn gen_image(i: usize, seed: u64, side: usize) -> Tensor2<u8> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed * 1_000_003 + i as u64);
    let mut data = Vec::with_capacity(side * side);
    for y in 0..side {
        for x in 0..side {
            let base = x as f64 * 0.6 + y as f64 * 0.3 + (i % 97) as f64;
            let noise: f64 = (0..4).map(|_| rng.random::<f64>() - 0.5).sum::<f64>() * 35.0;
            data.push((base + noise).clamp(0.0, 255.0) as u8);
        }
    }
    Tensor2 { height: side, width: side, data }
}

/// Image side for `n` items: 256 as the DVC peer uses, 32 above 10,000 items so that 100,000 fit the
/// disk (what is measured is the cost per item of knowing nothing changed, not pixels).
fn side_for(n: usize) -> usize {
    if n > 10_000 {
        32
    } else {
        256
    }
}

/// Runs a whole `mammoflow` process; returns its wall seconds and stdout.
fn timed(exe: &Path, args: &[&str]) -> anyhow::Result<(f64, String)> {
    let t = Instant::now();
    let out = Command::new(exe).args(args).output().with_context(|| format!("starting {}", exe.display()))?;
    let s = t.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("`mammoflow {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    Ok((s, String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// Median of three timed runs.
fn median3(exe: &Path, args: &[&str]) -> anyhow::Result<f64> {
    let mut v = (0..3).map(|_| timed(exe, args).map(|t| t.0)).collect::<anyhow::Result<Vec<f64>>>()?;
    v.sort_by(f64::total_cmp);
    Ok(v[1])
}

fn computed(stdout: &str) -> u64 {
    last_json(stdout.as_bytes()).and_then(|v| v["computed"].as_u64()).unwrap_or(0)
}

fn last_json(stdout: &[u8]) -> Option<serde_json::Value> {
    String::from_utf8_lossy(stdout).lines().rev().find(|l| l.trim_start().starts_with('{')).and_then(|l| serde_json::from_str(l).ok())
}

/// Runs the benchmark.
pub fn run(opts: &BenchOptions) -> anyhow::Result<Report> {
    let n = opts.items.unwrap_or(1000);
    let exe = std::env::current_exe()?;
    let dir = tempfile_dir()?;
    let images = dir.join("data/images");
    std::fs::create_dir_all(&images)?;
    let side = side_for(n);
    for i in 0..n {
        std::fs::write(images.join(format!("img_{i:06}.png")), codec::encode_u8(&gen_image(i, 0, side)))?;
    }
    let pipe = dir.join("bench.toml");
    std::fs::write(
        &pipe,
        "[pipeline]\nname = \"bench-rerun\"\nworkspace = \"ws\"\n\n[[stage]]\nid = \"ingest\"\nkind = \"ingest-png\"\nparams = { root = \"data\" }\n\n\
         [[stage]]\nid = \"crop\"\nkind = \"center-crop\"\ninputs = [\"ingest\"]\nparams = { size = CROP }\n"
            .replace("CROP", &(side / 2).to_string()),
    )?;
    let p = pipe.to_string_lossy().into_owned();
    let run_args = ["run", p.as_str(), "--quiet", "--json"];
    let (first, _) = timed(&exe, &run_args)?;
    let noop = median3(&exe, &run_args)?;
    let status = median3(&exe, &["status", p.as_str(), "--json"])?;
    // the same no-op planned in full, as after any change (the run stamps again)
    std::fs::remove_file(dir.join("ws/state/settled")).context("the first run left no stamp (ws/state/settled)")?;
    let (full, _) = timed(&exe, &run_args)?;
    std::fs::write(images.join("img_000000.png"), codec::encode_u8(&gen_image(0, 7, side)))?;
    let (one, out) = timed(&exe, &run_args)?;
    let one_computed = computed(&out);
    let new_size = format!("crop.size={}", side * 3 / 8);
    let (param, out) = timed(&exe, &["run", p.as_str(), "--quiet", "--json", "--set", &new_size])?;
    let param_computed = computed(&out);
    let _ = std::fs::remove_dir_all(&dir);

    let mut notes = vec![
        format!("{n} generated {side} x {side} 8-bit PNGs, ingest -> centre crop {}; times are whole processes, start-up included (medians of 3 for no-op and status)", side / 2),
        format!(
            "per item ({} items in 2 stages): no-op rerun {:.1} us, status {:.1} us, answered from the stamp the last run left (state/settled: one stat per source and per object); planned in full (manifests read, every key hashed) {:.1} us",
            2 * n,
            noop / (2 * n) as f64 * 1e6,
            status / (2 * n) as f64 * 1e6,
            full / (2 * n) as f64 * 1e6
        ),
        format!("ours: one changed image recomputed {one_computed} items; the crop-size change recomputed {param_computed}"),
        "DVC's first repro excludes its `dvc add` of the images; our first run includes hashing them".into(),
    ];
    let peer = if opts.no_peer {
        None
    } else if n > 10_000 {
        notes.push("peer: DVC is not run above 10,000 items (its first repro alone would take hours here)".into());
        None
    } else {
        run_dvc(n, &mut notes)
    };
    let g = |k: &str| peer.as_ref().and_then(|v: &serde_json::Value| v[k].as_f64().or_else(|| v[format!("{k}_median")].as_f64()));
    Ok(Report {
        bench: "rerun".into(),
        rows: vec![
            Row::time("first run", "s", first, g("first_repro_s")),
            Row::time("no-op rerun", "s", noop, g("noop_repro_s")),
            Row::time("status", "s", status, g("status_s")),
            Row::time("no-op, planned in full", "s", full, None),
            Row::time("one image changed", "s", one, g("one_image_repro_s")),
            Row::time("crop size changed", "s", param, g("param_repro_s")),
        ],
        notes,
    })
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let d = std::env::temp_dir().join(format!("mammoflow-bench-rerun-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

/// Runs the DVC peer script; `None` (with a note) when its Python is not set up.
fn run_dvc(n: usize, notes: &mut Vec<String>) -> Option<serde_json::Value> {
    let Some(py) = peers_python() else {
        notes.push("peer: set MAMMOFLOW_PEERS_PYTHON to a venv python with dvc installed to measure DVC side by side".into());
        return None;
    };
    let venv = py.parent()?.parent()?.to_path_buf();
    let script = peers_dir().join("dvc_pipeline.sh");
    let out = Command::new("bash").arg(&script).arg(n.to_string()).env("PEERS_VENV", &venv).output();
    match out {
        Ok(o) if o.status.success() => {
            let v = last_json(&o.stdout);
            if let Some(v) = &v {
                notes.push(format!(
                    "peer: DVC {} reprocessed {} + {} images after one image changed",
                    v["dvc_version"].as_str().unwrap_or("?"),
                    v["one_image_ingested"], v["one_image_cropped"]
                ));
            }
            v
        }
        Ok(o) => {
            notes.push(format!("peer: {} failed: {}", script.display(), String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or("")));
            None
        }
        Err(e) => {
            notes.push(format!("peer: cannot run {}: {e}", script.display()));
            None
        }
    }
}
