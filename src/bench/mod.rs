//! Benchmarks (`mammoflow bench NAME`): every speed or memory target is checked here, never in timed
//! tests. Each prints our figure beside the peer's measured in the same run, when the peer's Python is
//! available (`MAMMOFLOW_PEERS_PYTHON`, a venv's `python`), and `null` otherwise.

mod augment;
mod dicom;
mod peer;
mod rerun;
mod stream;
mod train_step;

pub use peer::{peers_dir, peers_python};

use serde::Serialize;

/// One benchmark row.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Row {
    /// What is measured.
    pub case: String,
    /// Unit of `ours` and `peer`.
    pub unit: String,
    /// Our figure.
    pub ours: f64,
    /// The peer's figure from the same run.
    pub peer: Option<f64>,
    /// How many times faster we are (> 1 = faster).
    pub speedup: Option<f64>,
    /// The same case on plain candle ops (`train-step`), same unit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candle: Option<f64>,
    /// Our peak resident memory for this case, MiB (`train-step`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_mib: Option<f64>,
    /// The peer's peak resident memory for this case, MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_rss_mib: Option<f64>,
    /// Achieved GFLOP/s (`train-step --layers`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gflops: Option<f64>,
    /// Calls per step (`train-step --layers`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calls: Option<f64>,
}

impl Row {
    /// A row for a time (lower is better): speedup = peer / ours.
    pub fn time(case: &str, unit: &str, ours: f64, peer: Option<f64>) -> Row {
        Row { case: case.into(), unit: unit.into(), ours, peer, speedup: peer.map(|p| p / ours.max(1e-12)), candle: None, rss_mib: None, peer_rss_mib: None, gflops: None, calls: None }
    }
}

/// A benchmark's result.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Benchmark name.
    pub bench: String,
    /// Rows.
    pub rows: Vec<Row>,
    /// Free-form notes printed under the table (not in the JSON contract's required keys).
    #[serde(skip)]
    pub notes: Vec<String>,
}

/// Options shared by benchmarks.
#[derive(Debug, Clone, Default)]
pub struct BenchOptions {
    /// Number of items, where the benchmark takes one.
    pub items: Option<usize>,
    /// Do not run the peer.
    pub no_peer: bool,
    /// Device for benchmarks that run networks (`cpu`, `cuda:N`, `auto`; default cpu).
    pub device: Option<String>,
    /// `train-step --layers`: time per layer type instead of per network.
    pub layers: bool,
    /// `train-step`: only this network; `stream`: only this pipeline.
    pub model: Option<String>,
    /// `train-step`: run one case in this process (`INDEX:ours|candle`), for the parent's RSS figure.
    pub child: Option<String>,
}

/// Benchmark names.
pub const NAMES: &[&str] = &["rerun", "stream", "dicom", "augment", "train-step"];

/// Runs a benchmark by name.
pub fn run(name: &str, opts: &BenchOptions) -> anyhow::Result<Report> {
    match name {
        "rerun" => rerun::run(opts),
        "stream" => stream::run_bench(opts),
        "dicom" => dicom::run(opts),
        "augment" => augment::run(opts),
        "train-step" => train_step::run(opts),
        other => anyhow::bail!(
            "unknown benchmark `{other}` (known: {}){}",
            NAMES.join(", "),
            crate::pipeline::did_you_mean(other, NAMES.iter().copied()).map(|h| format!("; did you mean `{h}`?")).unwrap_or_default()
        ),
    }
}
