//! `bench stream`: the quickstart and ddsm-tissue pipelines from an empty workspace, up to their contact
//! sheets (every per-image stage: ingest, merge, augment, crop; a training is one item that uses the
//! cores by itself and would hide the difference), run twice in this process with 2 workers: items
//! streaming across stages (what `run` does) and stage by stage (the barrier order, kept for this
//! comparison only). Reported: wall time, time to the first finished crop, and how busy the cores were
//! (the process's CPU time sampled every 100 ms). The `peer` column is the barrier order, same build,
//! same run.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::{BenchOptions, Report, Row};
use crate::exec::{Cluster, Order, ProgressMode};
use crate::pipeline::{LoadOptions, Pipeline};
use crate::run::{run, RunOptions};

/// One measured run.
struct Measured {
    wall: f64,
    first_crop: Option<f64>,
    /// Mean cores in use over the run.
    cores: f64,
    /// Share of 100 ms samples with more than 1.5 cores in use.
    both_busy: f64,
    computed: usize,
}

/// The process's CPU seconds (user + system, every thread).
fn cpu_seconds() -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct it is given.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn measure(file: &Path, order: Order, workers: usize) -> anyhow::Result<Measured> {
    let ws = std::env::temp_dir().join(format!("mammoflow-bench-stream-{}-{order:?}", std::process::id()));
    let _ = std::fs::remove_dir_all(&ws);
    let opts = LoadOptions { workspace: Some(ws.clone()), until: Some("sheet".into()), ..Default::default() };
    let pipeline = Pipeline::load(file, &opts).with_context(|| format!("loading {}", file.display()))?;
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut samples = Vec::new();
            let (mut t, mut c) = (Instant::now(), cpu_seconds());
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                let (t2, c2) = (Instant::now(), cpu_seconds());
                samples.push((c2 - c) / (t2 - t).as_secs_f64().max(1e-9));
                (t, c) = (t2, c2);
            }
            samples
        })
    };
    let start = Instant::now();
    let cpu0 = cpu_seconds();
    let report = run(
        pipeline,
        &RunOptions { until: Some("sheet".into()), cluster: Cluster::Local { workers }, retry_failed: false, progress: ProgressMode::Quiet, command: "mammoflow bench stream".into(), order },
    );
    let wall = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.join().unwrap_or_default();
    let _ = std::fs::remove_dir_all(&ws);
    let report = report?;
    let first_crop = report.stages.iter().find(|s| s.id == "crop").and_then(|s| s.first_result_s);
    let both_busy = samples.iter().filter(|&&c| c > 1.5).count() as f64 / samples.len().max(1) as f64;
    Ok(Measured { wall, first_crop, cores: cpu / wall, both_busy, computed: report.computed })
}

fn pipelines_dir() -> PathBuf {
    let here = PathBuf::from("pipelines");
    if here.join("quickstart.toml").is_file() {
        here
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines")
    }
}

/// Runs the benchmark.
pub fn run_bench(opts: &BenchOptions) -> anyhow::Result<Report> {
    let workers = 2;
    let dir = pipelines_dir();
    let mut rows = Vec::new();
    let mut notes = vec![format!(
        "up to `sheet`, empty workspace, {workers} workers on {} logical cores; peer column = the same build stage by stage (barrier order), same run",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    )];
    for name in ["quickstart", "ddsm-tissue"] {
        if opts.model.as_deref().is_some_and(|m| m != name) {
            continue;
        }
        let file = dir.join(format!("{name}.toml"));
        let streaming = match measure(&file, Order::Streaming, workers) {
            Ok(m) => m,
            Err(e) if name != "quickstart" => {
                notes.push(format!("{name}: not measured: {e:#}"));
                continue;
            }
            Err(e) => return Err(e),
        };
        let barrier = measure(&file, Order::Barrier, workers)?;
        anyhow::ensure!(streaming.computed == barrier.computed, "{name}: streaming computed {} items, barrier {}", streaming.computed, barrier.computed);
        rows.push(Row::time(&format!("{name}: wall"), "s", streaming.wall, Some(barrier.wall)));
        if let (Some(s), Some(b)) = (streaming.first_crop, barrier.first_crop) {
            rows.push(Row::time(&format!("{name}: first crop"), "s", s, Some(b)));
        }
        let mut cores = Row::time(&format!("{name}: cores in use (mean)"), "cores", streaming.cores, Some(barrier.cores));
        cores.speedup = Some(streaming.cores / barrier.cores.max(1e-9));
        rows.push(cores);
        let mut busy = Row::time(&format!("{name}: time with both cores busy"), "share", streaming.both_busy, Some(barrier.both_busy));
        busy.speedup = None;
        rows.push(busy);
        notes.push(format!("{name}: {} items computed in each order", streaming.computed));
    }
    Ok(Report { bench: "stream".into(), rows, notes })
}
