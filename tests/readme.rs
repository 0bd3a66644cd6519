//! Every command of the README's "Using it" block is valid as written: each parses with the real CLI,
//! each pipeline command loads its pipeline with its own `--set` and `--until`, and the commands that
//! are quick run for real, exiting 0, in a scratch workspace (`--workspace`, the only change). The long
//! ones (a whole study, benchmarks, commands that need a trained model or a GPU toolchain) are checked
//! up to the point where they would start working.

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Parser;
use mammoflow::cli::{Cli, Command as Cmd};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The commands of the first ```bash block after `## Using it`, comments and pipes cut, `[...]`
/// optional parts kept without brackets.
fn using_it() -> Vec<Vec<String>> {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let section = readme.split("## Using it").nth(1).expect("README has a `## Using it` section");
    let block = section.split("```bash").nth(1).unwrap().split("```").next().unwrap();
    block
        .lines()
        .map(|l| l.split(" # ").next().unwrap().split('|').next().unwrap().trim())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split_whitespace().map(|w| w.trim_matches(|c| c == '[' || c == ']').to_string()).collect())
        .collect()
}

#[test]
fn every_using_it_command_parses_loads_and_the_quick_ones_run() {
    let cmds = using_it();
    assert!(cmds.len() >= 15, "the block lists {} commands", cmds.len());
    let scratch = tempfile::tempdir().unwrap();
    let mut ran = 0;
    for words in &cmds {
        let line = words.join(" ");
        if words[0] != "mammoflow" {
            // a script of the repository
            assert!(repo().join(&words[0]).is_file(), "`{line}`: {} does not exist", words[0]);
            continue;
        }
        let cli = Cli::try_parse_from(words).unwrap_or_else(|e| panic!("`{line}` does not parse:\n{e}"));
        let common = match &cli.command {
            Cmd::Run(a) => Some(&a.common),
            Cmd::Status(a) => Some(&a.common),
            Cmd::Dag(a) => Some(&a.common),
            Cmd::Gc(a) => Some(&a.common),
            Cmd::Verify(a) => Some(&a.common),
            Cmd::Export(a) => Some(&a.common),
            Cmd::Report(a) => Some(&a.common),
            _ => None,
        };
        if let Some(c) = common {
            let overrides = c.set.iter().map(|s| s.parse()).collect::<Result<Vec<_>, _>>().unwrap_or_else(|e| panic!("`{line}`: {e}"));
            let opts = mammoflow::LoadOptions { overrides, workspace: c.workspace.clone(), until: c.until.clone() };
            mammoflow::Pipeline::load(&repo().join(&c.pipeline), &opts).unwrap_or_else(|e| panic!("`{line}`: {e}"));
        }
        // Quick enough to run for real: everything on the quickstart up to its merged masks, `status`
        // of any pipeline, and the model summary.
        let quick = match &cli.command {
            Cmd::Status(_) | Cmd::Dag(_) | Cmd::Gc(_) | Cmd::Verify(_) | Cmd::Model(_) => true,
            Cmd::Run(a) => a.common.until.is_some() && a.common.pipeline.ends_with("quickstart.toml"),
            _ => false,
        };
        if !quick {
            continue;
        }
        let mut args: Vec<String> = words[1..].to_vec();
        if common.is_some() {
            let name = Path::new(&common.unwrap().pipeline).file_stem().unwrap().to_string_lossy().into_owned();
            args.push("--workspace".into());
            args.push(scratch.path().join(name).display().to_string());
        }
        let out = Command::new(env!("CARGO_BIN_EXE_mammoflow")).args(&args).current_dir(repo()).output().unwrap();
        assert!(out.status.success(), "`{line}` exited {:?}:\n{}", out.status.code(), String::from_utf8_lossy(&out.stderr));
        ran += 1;
    }
    assert!(ran >= 7, "only {ran} commands ran");
}
