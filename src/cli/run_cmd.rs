//! `mammoflow run`.

use crate::exec::{Cluster, ProgressMode};
use crate::run::{run as run_pipeline, RunOptions};

use super::args::RunArgs;

pub(crate) fn run(a: RunArgs) -> anyhow::Result<i32> {
    let pipeline = super::load(&a.common)?;
    let workers = a.workers.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    anyhow::ensure!(workers >= 1, "--workers must be at least 1");
    let cluster = match (a.processes, a.process_index, &a.hostfile) {
        (Some(p), Some(i), Some(h)) => {
            anyhow::ensure!(i < p, "--process-index {i} must be below --processes {p}");
            Cluster::Processes { workers, index: i, addresses: super::read_hostfile(h, p)? }
        }
        (Some(_), _, _) => anyhow::bail!("--processes needs --process-index and --hostfile"),
        _ => Cluster::Local { workers },
    };
    let progress = if a.quiet { ProgressMode::Quiet } else { ProgressMode::Auto };
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let is_driver = cluster.is_driver();
    let opts = RunOptions { until: a.common.until.clone(), cluster, retry_failed: a.retry_failed, progress, command, order: Default::default() };
    let report = run_pipeline(pipeline, &opts)?;
    if !is_driver {
        if !a.quiet {
            eprintln!("process {}: done", a.process_index.unwrap_or(0));
        }
        return Ok(0);
    }
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    for (stage, item, n, names) in &report.skipped {
        eprintln!("warning: {stage}/{item} left out {n} failed input(s): {names}");
    }
    // Why items failed, on stderr so that `--json` keeps its last stdout line.
    for f in report.failures.iter().take(20) {
        eprintln!("failed: {}/{}: {}{}", f.stage, f.item, f.error, if f.transient { " (transient: the next run retries it)" } else { "" });
    }
    if report.failures.len() > 20 {
        eprintln!("failed: ... and {} more ({} in all; `mammoflow status --failed` lists them)", report.failures.len() - 20, report.failures.len());
    }
    if !a.quiet || !a.json {
        let w = report.stages.iter().map(|s| s.id.len()).max().unwrap_or(0).max(16);
        for s in &report.stages {
            println!("{:<w$} {:>6} items  {:>6} computed  {:>6} cached  {:>5} failed  {:>8.2} s", s.id, s.items, s.computed, s.cached, s.failed, s.seconds);
        }
        println!("total: {} computed, {} cached, {} failed", report.computed, report.cached, report.failed);
        for p in &report.pictures {
            println!("picture: {}", p.display());
        }
        if report.failed > 0 {
            println!("{} item(s) failed: `mammoflow status --failed` lists them all", report.failed);
        }
        // A pipeline that evaluates ends with the study's table (what `mammoflow report` prints).
        if !a.json {
            let p = super::load(&a.common)?;
            let evaluated = report.stages.iter().any(|s| s.items > 0 && p.stages.iter().any(|d| d.id == s.id && d.kind == "evaluate"));
            if evaluated {
                println!();
                if let Err(e) = super::export_cmd::table(&p, None) {
                    eprintln!("warning: no comparison table: {e:#}");
                }
            }
        }
    }
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(if report.failed > 0 { 1 } else { 0 })
}
