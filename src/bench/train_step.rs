//! `bench train-step`: one training step (forward, weighted cross-entropy, backward, SGD momentum 0.9)
//! per network at a narrow width, beside PyTorch's from the same run for the configurations the peers
//! script: U-Net base 16 (width 1/4), input 252, batch 4 (`torch_unet.py`) and FCN-8s width 1/4,
//! input 256, batch 4 (`torch_fcn8.py`). The other networks have no peer script; their figures are ours
//! alone, at the same width and batch on a 256 input (U-Net: 252).
//!
//! Timing: the median over the steps after a warm-up, wall clock, inputs and targets fixed (as the peer
//! does), both on the same threads (the peer runs `--threads 2`).

use super::{peers_dir, peers_python, BenchOptions, Report, Row};
use crate::models::{self, Arch, ModelSpec};
use crate::nn::{weighted_cross_entropy, SgdMomentum};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use std::process::Command;
use std::time::Instant;

struct Case {
    arch: Arch,
    input: usize,
    warmup: usize,
    steps: usize,
    peer: Option<(&'static str, Vec<&'static str>)>,
}

const BATCH: usize = 4;
const WIDTH: f64 = 0.25;

fn cases(steps: Option<usize>) -> Vec<Case> {
    let s = |d| steps.unwrap_or(d);
    vec![
        Case { arch: Arch::Unet, input: 252, warmup: 2, steps: s(8), peer: Some(("torch_unet.py", vec!["--one", "--base", "16", "--size", "252", "--batch", "4", "--warmup", "2", "--steps", "8", "--threads"])) },
        Case { arch: Arch::Fcn8, input: 256, warmup: 2, steps: s(10), peer: Some(("torch_fcn8.py", vec!["--one", "--div", "4", "--size", "256", "--batch", "4", "--warmup", "2", "--steps", "10", "--threads"])) },
        Case { arch: Arch::Fcn32, input: 256, warmup: 1, steps: s(5), peer: None },
        Case { arch: Arch::Fcn16, input: 256, warmup: 1, steps: s(5), peer: None },
        Case { arch: Arch::Dilation10Front, input: 256, warmup: 1, steps: s(5), peer: None },
        Case { arch: Arch::Dilation10Context, input: 256, warmup: 1, steps: s(5), peer: None },
        Case { arch: Arch::Dilation10Global, input: 256, warmup: 1, steps: s(5), peer: None },
        Case { arch: Arch::Deeplabv3, input: 256, warmup: 1, steps: s(5), peer: None },
    ]
}

/// Median ms per step of our training step.
pub fn time_ours(arch: Arch, input: usize, batch: usize, width: f64, warmup: usize, steps: usize, device: &Device) -> anyhow::Result<(f64, usize)> {
    let spec = ModelSpec { width, input: Some([input, input]), ..ModelSpec::new(arch) };
    let mut vm = VarMap::new();
    let model = models::build(&spec, &mut vm, DType::F32, device)?;
    let vars: Vec<_> = models::trainable_vars(model.as_ref(), &vm).into_iter().map(|(_, v)| v).collect();
    let mut opt = SgdMomentum::new(vars, 0.01, 0.9, 0.0);
    let (oh, ow) = model.output_size(input, input);
    let x = Tensor::randn(0f32, 1.0, (batch, spec.in_channels, input, input), device)?;
    let t = Tensor::rand(0f32, 2.0, (batch, oh, ow), device)?.floor()?.to_dtype(DType::U32)?;
    let weights = [0.3f32, 0.7];
    let mut times = Vec::new();
    for i in 0..warmup + steps {
        let t0 = Instant::now();
        let y = model.forward_t(&x, true)?;
        let loss = weighted_cross_entropy(&y, &t, Some(&weights))?;
        opt.backward_step(&loss)?;
        device.synchronize()?;
        if i >= warmup {
            times.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    times.sort_by(f64::total_cmp);
    Ok((times[times.len() / 2], opt.num_params()))
}

fn peer(script: &str, args: &[&str], notes: &mut Vec<String>) -> Option<f64> {
    let py = peers_python()?;
    let threads = candle_core::utils::get_num_threads().to_string();
    let o = Command::new(&py).arg(peers_dir().join(script)).args(args).arg(&threads).output();
    match o {
        Ok(o) if o.status.success() => {
            let line = String::from_utf8_lossy(&o.stdout).lines().rev().find(|l| l.starts_with('{')).map(str::to_string)?;
            let v: serde_json::Value = serde_json::from_str(&line).ok()?;
            notes.push(format!("peer {script}: {line}"));
            v["ms_step_median"].as_f64()
        }
        Ok(o) => {
            notes.push(format!("peer {script} failed: {}", String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or("")));
            None
        }
        Err(e) => {
            notes.push(format!("peer: cannot run {}: {e}", py.display()));
            None
        }
    }
}

/// Runs the benchmark on `opts.device` (default CPU). `--items N` sets the number of timed steps.
pub fn run(opts: &BenchOptions) -> anyhow::Result<Report> {
    let device = crate::nn::parse_device(opts.device.as_deref().unwrap_or("cpu"))?;
    let dev_name = crate::nn::device::device_name(&device);
    let mut notes = vec![format!(
        "ms per training step (forward + weighted cross-entropy + backward + SGD momentum 0.9), median after warm-up; width 1/4, batch {BATCH}, f32, {dev_name} with {} threads; peer = PyTorch (torch_unet.py / torch_fcn8.py) from the same run",
        candle_core::utils::get_num_threads()
    )];
    if peers_python().is_none() && !opts.no_peer {
        notes.push("peer: set MAMMOFLOW_PEERS_PYTHON to a venv python with torch (see ../shared/peers/README.md) to measure PyTorch side by side".into());
    }
    let mut rows = Vec::new();
    for c in cases(opts.items) {
        // The peer first: it waits for an idle machine and should not overlap our threads.
        let theirs = match (&c.peer, opts.no_peer || !device.is_cpu()) {
            (Some((script, args)), false) => peer(script, args, &mut notes),
            _ => None,
        };
        let (ours, params) = time_ours(c.arch, c.input, BATCH, WIDTH, c.warmup, c.steps, &device)?;
        let case = format!("{} {} x{BATCH}", c.arch, c.input);
        notes.push(format!("{case}: {params} trainable parameters, {:.2} img/s", BATCH as f64 * 1e3 / ours));
        rows.push(Row::time(&case, "ms", ours, theirs));
    }
    notes.push("speedup < 1 means PyTorch is faster; the fast-kernels issue drives this down".into());
    Ok(Report { bench: "train-step".into(), rows, notes })
}
