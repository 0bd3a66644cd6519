//! The command-line interface: argument types in `args`, one file per command, errors printed as a
//! chain (`{:#}`) with exit code 2. `run` exits 1 when it completed but some items failed.

mod args;
mod bench_cmd;
mod dag;
mod export_cmd;
mod gc_cmd;
mod model_cmd;
mod predict_cmd;
mod run_cmd;
mod status_cmd;
mod verify_cmd;

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
        Command::Gc(a) => gc_cmd::gc(a),
        Command::Verify(a) => verify_cmd::verify(a),
        Command::Bench(a) => bench_cmd::bench(a),
        Command::Model(a) => model_cmd::model(a),
        Command::Export(a) => export_cmd::export(a),
        Command::Report(a) => export_cmd::report(a),
        Command::Predict(a) => predict_cmd::predict(a),
        Command::Evaluate(a) => predict_cmd::evaluate(a),
    }
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
