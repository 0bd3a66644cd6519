//! The command-line interface: argument types in `args`, one file per command, errors printed as a
//! chain (`{:#}`) with exit code 2. `run` exits 1 when it completed but some items failed.

mod args;
mod bench_cmd;
mod dag;
mod export_cmd;
mod model_cmd;
mod predict_cmd;
mod run_cmd;
mod status_cmd;

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

pub use args::{Cli, Command};

use crate::pipeline::{LoadOptions, Override, Pipeline};

/// Parses arguments, runs the command and returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            2
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Run(a) => run_cmd::run(a),
        Command::Status(a) => status_cmd::status(a),
        Command::Dag(a) => dag::dag(a),
        Command::Gc(a) => {
            let p = load(&a.common)?;
            let r = crate::gc::gc(&p)?;
            println!("gc: deleted {} objects, freed {} bytes ({:.1} MiB), kept {}", r.files, r.bytes, r.bytes as f64 / 1048576.0, r.kept);
            if a.json {
                println!("{}", serde_json::to_string(&r)?);
            }
            Ok(0)
        }
        Command::Verify(a) => verify(a),
        Command::Bench(a) => bench_cmd::bench(a),
        Command::Model(a) => model_cmd::model(a),
        Command::Export(a) => export_cmd::export(a),
        Command::Report(a) => export_cmd::report(a),
        Command::Predict(a) => predict_cmd::predict(a),
        Command::Evaluate(a) => predict_cmd::evaluate(a),
    }
}

/// `verify`: hash every object; repair by deleting the corrupt ones and running the selected stages.
fn verify(a: args::VerifyArgs) -> anyhow::Result<i32> {
    let p = load(&a.common)?;
    let report = crate::verify::verify(&p, a.common.until.as_deref(), !a.no_repair)?;
    println!("verify: {} objects ({:.1} MiB) intact, {} corrupt, {} missing", report.objects, report.bytes as f64 / 1048576.0, report.corrupt.len(), report.missing.len());
    for b in report.corrupt.iter().take(20) {
        println!("corrupt: {}/{}: {}", b.stage, b.item, b.file);
    }
    for b in report.missing.iter().take(20) {
        println!("missing: {}/{}: {}", b.stage, b.item, b.file);
    }
    let broken = report.corrupt.len() + report.missing.len();
    let mut recomputed = 0;
    if broken > 0 && !a.no_repair {
        let opts = crate::run::RunOptions {
            until: a.common.until.clone(),
            cluster: crate::exec::Cluster::Local { workers: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) },
            retry_failed: false,
            progress: crate::exec::ProgressMode::Quiet,
            command: "mammoflow verify".into(),
        };
        let run = crate::run::run(load(&a.common)?, &opts)?;
        recomputed = run.computed;
        println!("repaired: {recomputed} item(s) recomputed");
    }
    if a.json {
        let mut v = serde_json::to_value(&report)?;
        v["recomputed"] = recomputed.into();
        println!("{}", serde_json::to_string(&v)?);
    }
    Ok(if broken > 0 && a.no_repair { 1 } else { 0 })
}

/// Loads the pipeline named by the common arguments, with overrides.
pub(crate) fn load(a: &args::PipelineArgs) -> anyhow::Result<Pipeline> {
    let overrides = a.set.iter().map(|s| s.parse::<Override>()).collect::<Result<Vec<_>, _>>()?;
    let opts = LoadOptions { overrides, workspace: a.workspace.clone(), until: a.until.clone() };
    Ok(Pipeline::load(&a.pipeline, &opts)?)
}

/// Reads a hostfile: one `host:port` per line; blank lines and `#` comments are skipped.
pub(crate) fn read_hostfile(path: &PathBuf, processes: usize) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading hostfile {}", path.display()))?;
    let hosts: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_string).collect();
    anyhow::ensure!(hosts.len() >= processes, "hostfile {} lists {} hosts but --processes is {processes}", path.display(), hosts.len());
    Ok(hosts.into_iter().take(processes).collect())
}
