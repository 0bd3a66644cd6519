//! mammoflow: a mammogram-segmentation study as a declarative, incremental pipeline.
//!
//! A pipeline is a TOML file of stages (`pipeline`); each stage kind (`stages`) computes one item at a
//! time; every item has a cache key derived from what determines it (`hash`), so a run (`run`) plans
//! exactly what is stale (`plan`), computes it on timely dataflow workers (`exec`) and records it in
//! Parquet manifests and a content-addressed store (`store`). The CLI (`cli`) is a thin layer on top.

pub mod augment;
pub mod bench;
pub mod classes;
pub mod codec;
pub mod cli;
pub mod dicom;
pub mod error;
pub mod folds;
pub mod fsio;
pub mod exec;
pub mod export;
pub mod gc;
pub mod hash;
pub mod metrics;
pub mod models;
pub mod nn;
pub mod parquet;
pub mod pipeline;
pub mod chart;
pub mod pictures;
pub mod plan;
pub mod predict;
pub mod qupath;
pub mod run;
pub mod stages;
pub mod suggest;
pub mod store;
pub mod npy;
pub mod term;
pub mod train;
pub mod vars;
pub mod verify;

pub use error::{Error, Result};
pub use pipeline::{LoadOptions, Pipeline};
pub use run::{run, status, RunOptions, RunReport};
