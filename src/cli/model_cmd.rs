//! `mammoflow model summary NAME`: a table, and with `--json` a last line holding the summary object
//! (`model`, `params`, `trainable_params`, `output`, `output_stride`, `maps`, ...).

use super::args::{ModelArgs, ModelCommand, SummaryArgs};
use crate::models::{summary, Arch, ModelSpec};

pub(crate) fn model(a: ModelArgs) -> anyhow::Result<i32> {
    match a.command {
        ModelCommand::Summary(s) => summarize(s),
    }
}

fn summarize(a: SummaryArgs) -> anyhow::Result<i32> {
    let arch = Arch::parse(&a.name).map_err(anyhow::Error::msg)?;
    let input = a.input.map(|v| [v[0], v[1]]);
    let spec = ModelSpec { arch, classes: a.classes, in_channels: a.in_channels, width: a.width, input, output_stride: a.output_stride };
    let device = crate::nn::parse_device(&a.device)?;
    let s = summary::summarize(&spec, &device)?;
    println!("{s}");
    if a.json {
        println!("{}", serde_json::to_string(&s)?);
    }
    Ok(0)
}
