//! Command-line types (clap derive). Only declarations: the commands live in their own files.
//!
//! `--json`, `--workspace`, `--until` and `MAMMOFLOW_DATA` are a contract scripts rely on: keep their
//! meaning and output shapes stable.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Declarative, incremental pipelines for mammogram segmentation studies.
#[derive(Debug, Parser)]
#[command(name = "mammoflow", version, about, long_about = None)]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run what is stale in a pipeline (only changed stages, and in them only changed items).
    Run(RunArgs),
    /// Show, per stage, how many items are fresh, stale (and why) or failed; does no work.
    Status(StatusArgs),
    /// Print the stage graph (text, or Graphviz with --dot).
    Dag(DagArgs),
    /// Delete cached objects that no manifest refers to; prints the bytes freed.
    Gc(GcArgs),
    /// Re-hash every object the manifests name; delete corrupt ones and recompute them (as `git fsck`).
    Verify(VerifyArgs),
    /// Run a benchmark and print our figure beside the peer's from the same run.
    Bench(BenchArgs),
    /// Inspect the networks (`model summary NAME`).
    Model(ModelArgs),
    /// Write the study's tables (metrics, per_class, per_image, training_log) as Parquet into --out.
    Export(ExportArgs),
    /// Print every trained model's figures beside the paper's Table 10 row for the same network.
    Report(ReportArgs),
    /// Predict label maps (PNG) and coloured overlays for a folder of images with a checkpoint.
    Predict(PredictArgs),
    /// Score a checkpoint on a folder of images and label maps (the study's three metrics).
    Evaluate(EvaluateArgs),
}

/// `predict`.
#[derive(Debug, Args)]
pub struct PredictArgs {
    /// A checkpoint written by a `train` stage (`best` or `last` output; its network is in the file).
    #[arg(long, value_name = "FILE")]
    pub checkpoint: PathBuf,
    /// Folder of 8/16-bit grayscale PNG (or PGM) images and DICOM files (`.dcm`).
    #[arg(long, value_name = "DIR")]
    pub input: PathBuf,
    /// Folder for `<stem>_labels.png` (class ids) and `<stem>_overlay.png`, or `<stem>_seg.dcm` (created
    /// if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// `png`: label maps and overlays; `dicom-seg`: one DICOM Segmentation per DICOM image, referencing
    /// it (segments named and coloured by `--classes`), for a DICOM viewer.
    #[arg(long, value_enum, default_value_t = PredictFormat::Png)]
    pub format: PredictFormat,
    /// Overlap of neighbouring tiles, pixels.
    #[arg(long, default_value_t = 32)]
    pub overlap: usize,
    /// A class table (configs/) for the overlay colours; default a fixed palette.
    #[arg(long, value_name = "FILE")]
    pub classes: Option<PathBuf>,
}

/// What `predict` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PredictFormat {
    /// `<stem>_labels.png` and `<stem>_overlay.png`.
    Png,
    /// `<stem>_seg.dcm`, a DICOM Segmentation of the DICOM image.
    DicomSeg,
}

/// `evaluate`.
#[derive(Debug, Args)]
pub struct EvaluateArgs {
    /// A checkpoint written by a `train` stage.
    #[arg(long, value_name = "FILE")]
    pub checkpoint: PathBuf,
    /// Folder of grayscale PNG (or PGM) images.
    #[arg(long, value_name = "DIR")]
    pub images: PathBuf,
    /// Folder of label maps (8-bit PNG of class ids).
    #[arg(long, value_name = "DIR")]
    pub masks: PathBuf,
    /// Label map name for an image, `{stem}` = the image's name without extension.
    #[arg(long, default_value = "{stem}.png", value_name = "P")]
    pub mask_pattern: String,
    /// Overlap of neighbouring tiles, pixels.
    #[arg(long, default_value_t = 32)]
    pub overlap: usize,
    /// A truth label left out (not a class id), e.g. 255.
    #[arg(long)]
    pub ignore: Option<u8>,
    /// Print a JSON object (the three metrics and per-class IoU) as the last line of stdout.
    #[arg(long)]
    pub json: bool,
}

/// `export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub common: PipelineArgs,
    /// Folder for the Parquet files (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Print a JSON object (the files written, rows per table) as the last line of stdout.
    #[arg(long)]
    pub json: bool,
}

/// `report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub common: PipelineArgs,
    /// The fold to report (default: `test` when the split has one, else `val`).
    #[arg(long, value_name = "FOLD")]
    pub fold: Option<String>,
    /// Print a JSON object (one entry per model) as the last line of stdout.
    #[arg(long)]
    pub json: bool,
}

/// Arguments every command that takes a pipeline accepts.
#[derive(Debug, Args, Clone)]
pub struct PipelineArgs {
    /// The pipeline file (TOML).
    pub pipeline: PathBuf,
    /// Use this workspace (cache folder) instead of the pipeline's.
    #[arg(long, value_name = "DIR")]
    pub workspace: Option<PathBuf>,
    /// Only this stage and the stages it depends on.
    #[arg(long, value_name = "STAGE")]
    pub until: Option<String>,
    /// Override a stage param: STAGE.PARAM=VALUE (repeatable; VALUE is TOML or a plain string).
    #[arg(long = "set", value_name = "STAGE.PARAM=VALUE")]
    pub set: Vec<String>,
}

/// `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub common: PipelineArgs,
    /// Worker threads per process (default: all cores).
    #[arg(long, short = 'w', value_name = "N")]
    pub workers: Option<usize>,
    /// Print a JSON summary as the last line of stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress output.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Recompute items whose failure is cached (failures are cached like results by default, since the
    /// same inputs fail the same way).
    #[arg(long)]
    pub retry_failed: bool,
    /// Number of processes in a cluster run (timely networking).
    #[arg(long, value_name = "P", requires = "hostfile")]
    pub processes: Option<usize>,
    /// This process's index in the cluster (0 drives the run and writes manifests).
    #[arg(long, value_name = "I", requires = "processes")]
    pub process_index: Option<usize>,
    /// File with one `host:port` per line, one line per process.
    #[arg(long, value_name = "FILE", requires = "processes")]
    pub hostfile: Option<PathBuf>,
}

/// `status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub common: PipelineArgs,
    /// Print a JSON object as the last line of stdout.
    #[arg(long)]
    pub json: bool,
    /// List every failed item (stage, item, message; transient ones are retried by the next run).
    /// With --json the last line is `{"failed":[{"stage","item","error","transient"}]}`.
    #[arg(long)]
    pub failed: bool,
}

/// `dag`.
#[derive(Debug, Args)]
pub struct DagArgs {
    #[command(flatten)]
    pub common: PipelineArgs,
    /// Graphviz dot output.
    #[arg(long)]
    pub dot: bool,
}

/// `gc`.
#[derive(Debug, Args)]
pub struct GcArgs {
    #[command(flatten)]
    pub common: PipelineArgs,
    /// Print a JSON object as the last line of stdout.
    #[arg(long)]
    pub json: bool,
}

/// `verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub common: PipelineArgs,
    /// Report only: do not delete corrupt objects or recompute anything.
    #[arg(long)]
    pub no_repair: bool,
    /// Print a JSON object as the last line of stdout:
    /// `{"objects","bytes","corrupt":[{"stage","item","file"}],"missing":[...],"recomputed"}`.
    #[arg(long)]
    pub json: bool,
}

/// `bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Benchmark name: rerun, stream, dicom, augment, train-step.
    pub name: String,
    /// Print a JSON object as the last line of stdout.
    #[arg(long)]
    pub json: bool,
    /// Number of items (rerun: default 1000; dicom: files in the memory run, default 200;
    /// train-step: timed steps per network).
    #[arg(long)]
    pub items: Option<usize>,
    /// Skip the peer even when its Python is available.
    #[arg(long)]
    pub no_peer: bool,
    /// Device for benchmarks that run networks: cpu, cuda:N or auto.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// train-step: time the step per layer type (ms and GFLOP/s) instead of per network.
    #[arg(long)]
    pub layers: bool,
    /// train-step: only this network (a `model summary` name), e.g. with --layers (default: unet).
    #[arg(long)]
    pub model: Option<String>,
    /// Internal: run one train-step case in this process (INDEX:ours|candle).
    #[arg(long, hide = true)]
    pub child: Option<String>,
}

/// `model`.
#[derive(Debug, Args)]
pub struct ModelArgs {
    #[command(subcommand)]
    pub command: ModelCommand,
}

/// Model commands.
#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Parameter count, output shape and intermediate map shapes of a network.
    Summary(SummaryArgs),
}

/// `model summary NAME`.
#[derive(Debug, Args)]
pub struct SummaryArgs {
    /// fcn32, fcn16, fcn8, unet, dilation10-front, dilation10-context, dilation10-global, deeplabv3.
    pub name: String,
    /// Channel multiplier (1 = the paper's network, 0.25 = a quarter of the channels).
    #[arg(long, default_value_t = 1.0)]
    pub width: f64,
    /// Input height and width (default: the paper's size for the network).
    #[arg(long, num_args = 2, value_names = ["H", "W"])]
    pub input: Option<Vec<usize>>,
    /// Output classes.
    #[arg(long, default_value_t = 2)]
    pub classes: usize,
    /// Input channels (3: gray replicated, as the study feeds the networks).
    #[arg(long, default_value_t = 3)]
    pub in_channels: usize,
    /// DeepLabv3 output stride: 8 or 16.
    #[arg(long)]
    pub output_stride: Option<usize>,
    /// cpu, cuda:N or auto.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Print a JSON object as the last line of stdout.
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
