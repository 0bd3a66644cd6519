//! `bench train-step`: one training step (forward, weighted cross-entropy, backward, SGD momentum 0.9)
//! per network, three ways from one run: ours (our CPU kernels), plain candle ops (the same layers with
//! candle's own convolution, pooling and ReLU: what training cost before the kernels), and PyTorch from
//! the peers' scripts (`../shared/peers/torch_*.py`), with the ratio PyTorch / ours.
//!
//! Each of our figures comes from a child process (this binary, a hidden `--child` flag) so that its
//! peak RSS is that configuration's alone and can sit beside the peer's `peak_rss_MiB`.
//!
//! Timing: the median over the steps after a warm-up, wall clock, inputs and targets fixed (as the peer
//! does), on the same number of threads (the peer runs `--threads N`). `--layers` times the U-Net step
//! per layer type instead (our kernels' own counters; the rest is candle: concat, crops, loss, the
//! gradient sums of its autograd and SGD).

use super::{peers_dir, peers_python, BenchOptions, Report, Row};
use crate::models::{self, Arch, ModelSpec};
use crate::nn::kernels::{self, timing};
use crate::nn::{weighted_cross_entropy, SgdMomentum};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use std::process::Command;
use std::time::Instant;

struct Case {
    arch: Arch,
    width: f64,
    input: usize,
    batch: usize,
    warmup: usize,
    steps: usize,
    /// Steps for the plain-candle column (several times slower).
    candle_steps: usize,
    peer: Option<(&'static str, Vec<String>)>,
}

impl Case {
    fn label(&self) -> String {
        let w = if self.width == 1.0 { "w1".to_string() } else { format!("w1/{}", (1.0 / self.width).round()) };
        format!("{} {w} {} x{}", self.arch, self.input, self.batch)
    }
}

fn args(a: &str) -> Vec<String> {
    a.split_whitespace().map(str::to_string).collect()
}

fn cases(steps: Option<usize>) -> Vec<Case> {
    let s = |d: usize| steps.unwrap_or(d);
    let c = |arch, width, input, batch, warmup, steps, candle_steps, peer| Case { arch, width, input, batch, warmup, steps, candle_steps, peer };
    vec![
        c(Arch::Unet, 0.25, 252, 1, 2, s(10), 3, Some(("torch_unet.py", args("--one --base 16 --size 252 --batch 1 --warmup 2 --steps 10")))),
        c(Arch::Unet, 0.25, 252, 4, 2, s(8), 3, Some(("torch_unet.py", args("--one --base 16 --size 252 --batch 4 --warmup 2 --steps 8")))),
        c(Arch::Unet, 1.0, 252, 1, 1, s(5), 2, Some(("torch_unet.py", args("--one --base 64 --size 252 --batch 1 --warmup 1 --steps 5")))),
        c(Arch::Fcn8, 0.25, 256, 4, 2, s(8), 3, Some(("torch_fcn8.py", args("--one --div 4 --size 256 --batch 4 --warmup 2 --steps 8")))),
        c(Arch::Fcn32, 0.25, 256, 4, 1, s(5), 2, None),
        c(Arch::Fcn16, 0.25, 256, 4, 1, s(5), 2, None),
        c(Arch::Dilation10Front, 0.25, 256, 4, 1, s(5), 2, Some(("torch_dilation10.py", args("--one --variant front --div 4 --size 256 --batch 4 --warmup 1 --steps 5")))),
        c(Arch::Dilation10Context, 0.25, 256, 4, 1, s(5), 2, Some(("torch_dilation10.py", args("--one --variant context --div 4 --size 256 --batch 4 --warmup 1 --steps 5")))),
        c(Arch::Dilation10Global, 0.25, 256, 4, 1, s(5), 2, Some(("torch_dilation10.py", args("--one --variant global --div 4 --size 256 --batch 4 --warmup 1 --steps 5")))),
        c(Arch::Deeplabv3, 0.25, 256, 4, 1, s(5), 2, Some(("torch_deeplabv3.py", args("--one --div 4 --size 256 --batch 4 --warmup 1 --steps 5")))),
    ]
}

/// A model, its optimiser and one fixed batch, ready to step.
pub struct Stepper {
    model: Box<dyn models::SegModel>,
    opt: SgdMomentum,
    x: Tensor,
    t: Tensor,
    device: Device,
}

impl Stepper {
    pub fn new(arch: Arch, width: f64, input: usize, batch: usize, device: &Device) -> anyhow::Result<Stepper> {
        let spec = ModelSpec { width, input: Some([input, input]), ..ModelSpec::new(arch) };
        let mut vm = VarMap::new();
        let model = models::build(&spec, &mut vm, DType::F32, device)?;
        let vars: Vec<_> = models::trainable_vars(model.as_ref(), &vm).into_iter().map(|(_, v)| v).collect();
        let opt = SgdMomentum::new(vars, 0.01, 0.9, 0.0);
        let (oh, ow) = model.output_size(input, input);
        let x = Tensor::randn(0f32, 1.0, (batch, spec.in_channels, input, input), device)?;
        let t = Tensor::rand(0f32, 2.0, (batch, oh, ow), device)?.floor()?.to_dtype(DType::U32)?;
        Ok(Stepper { model, opt, x, t, device: device.clone() })
    }

    /// One step; returns its wall time in ms.
    pub fn step(&mut self) -> anyhow::Result<f64> {
        let t0 = Instant::now();
        let y = self.model.forward_t(&self.x, true)?;
        let loss = weighted_cross_entropy(&y, &self.t, Some(&[0.3f32, 0.7]))?;
        self.opt.backward_step(&loss)?;
        self.device.synchronize()?;
        Ok(t0.elapsed().as_secs_f64() * 1e3)
    }

    pub fn num_params(&self) -> usize {
        self.opt.num_params()
    }
}

/// Median ms per step and trainable parameters, on our kernels (`fast`) or candle's ops.
#[allow(clippy::too_many_arguments)]
pub fn time_ours(arch: Arch, input: usize, batch: usize, width: f64, warmup: usize, steps: usize, device: &Device, fast: bool) -> anyhow::Result<(f64, usize)> {
    kernels::set_fast(fast);
    let mut s = Stepper::new(arch, width, input, batch, device)?;
    let mut times = Vec::new();
    for i in 0..warmup + steps.max(1) {
        let ms = s.step()?;
        if i >= warmup {
            times.push(ms);
        }
    }
    times.sort_by(f64::total_cmp);
    Ok((times[times.len() / 2], s.num_params()))
}

/// Peak resident memory of this process so far, MiB.
pub fn peak_rss_mib() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    u.ru_maxrss as f64 / 1024.0
}

/// The peer's JSON line, or `None` with a note saying why.
fn peer(script: &str, args: &[String], notes: &mut Vec<String>) -> Option<serde_json::Value> {
    let py = peers_python()?;
    let threads = candle_core::utils::get_num_threads().to_string();
    let o = Command::new(&py).arg(peers_dir().join(script)).args(args).arg("--threads").arg(&threads).output();
    match o {
        Ok(o) if o.status.success() => {
            let line = String::from_utf8_lossy(&o.stdout).lines().rev().find(|l| l.starts_with('{')).map(str::to_string)?;
            notes.push(format!("peer {script}: {line}"));
            serde_json::from_str(&line).ok()
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

/// Runs one case in a child process of this binary: `(ms per step, peak RSS MiB)`.
fn child(index: usize, fast: bool, steps: Option<usize>, device: &str) -> anyhow::Result<(f64, f64)> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.args(["bench", "train-step", "--json", "--device", device, "--child"]).arg(format!("{index}:{}", if fast { "ours" } else { "candle" }));
    if let Some(s) = steps {
        cmd.arg("--items").arg(s.to_string());
    }
    let o = cmd.output()?;
    if !o.status.success() {
        anyhow::bail!("train-step child {index} failed: {}", String::from_utf8_lossy(&o.stderr).trim());
    }
    let out = String::from_utf8_lossy(&o.stdout);
    let line = out.lines().rev().find(|l| l.starts_with('{')).ok_or_else(|| anyhow::anyhow!("train-step child {index}: no JSON line"))?;
    let v: serde_json::Value = serde_json::from_str(line)?;
    let row = &v["rows"][0];
    Ok((row["ours"].as_f64().unwrap_or(f64::NAN), row["rss_mib"].as_f64().unwrap_or(f64::NAN)))
}

/// Runs the benchmark on `opts.device` (default CPU). `--items N` sets the number of timed steps.
pub fn run(opts: &BenchOptions) -> anyhow::Result<Report> {
    let dev_str = opts.device.clone().unwrap_or_else(|| "cpu".into());
    let device = crate::nn::parse_device(&dev_str)?;
    let cases = cases(opts.items);
    if let Some(spec) = &opts.child {
        let (i, mode) = spec.split_once(':').ok_or_else(|| anyhow::anyhow!("--child wants INDEX:ours|candle"))?;
        let c = cases.get(i.parse::<usize>()?).ok_or_else(|| anyhow::anyhow!("--child: no case {i}"))?;
        let fast = mode == "ours";
        let steps = if fast { c.steps } else { opts.items.unwrap_or(c.candle_steps) };
        let (ms, params) = time_ours(c.arch, c.input, c.batch, c.width, c.warmup.min(if fast { 9 } else { 1 }), steps, &device, fast)?;
        let mut row = Row::time(&c.label(), "ms", ms, None);
        row.rss_mib = Some(peak_rss_mib());
        return Ok(Report { bench: "train-step".into(), rows: vec![row], notes: vec![format!("{params} trainable parameters")] });
    }
    let only: Option<Arch> = match &opts.model {
        Some(m) => Some(Arch::parse(m).map_err(|e| anyhow::anyhow!("{e}"))?),
        None => None,
    };
    if opts.layers {
        let c = cases.iter().find(|c| c.arch == only.unwrap_or(Arch::Unet)).expect("every network has a case");
        return layers(c, &device);
    }
    let dev_name = crate::nn::device::device_name(&device);
    let threads = candle_core::utils::get_num_threads();
    let mut notes = vec![format!(
        "ms per training step (forward + weighted cross-entropy + backward + SGD momentum 0.9), median after warm-up, f32, {dev_name}, {threads} threads; `candle` = the same layers on candle's own ops; peer = PyTorch from ../shared/peers, same run, same threads; peak RSS of each configuration in its own process"
    )];
    if peers_python().is_none() && !opts.no_peer {
        notes.push("peer: set MAMMOFLOW_PEERS_PYTHON to a venv python with torch (see ../shared/peers/README.md) to measure PyTorch side by side".into());
    }
    let mut rows = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        if only.is_some_and(|a| a != c.arch) {
            continue;
        }
        let case = c.label();
        eprintln!("train-step: {case}");
        // The peer first: it waits for an idle machine and must not overlap our threads.
        let theirs = match (&c.peer, opts.no_peer || !device.is_cpu()) {
            (Some((script, args)), false) => peer(script, args, &mut notes),
            _ => None,
        };
        let (ours, rss) = child(i, true, opts.items, &dev_str)?;
        let plain = if device.is_cpu() { Some(child(i, false, None, &dev_str)?.0) } else { None };
        let mut row = Row::time(&case, "ms", ours, theirs.as_ref().and_then(|v| v["ms_step_median"].as_f64()));
        row.candle = plain;
        row.rss_mib = Some(rss);
        row.peer_rss_mib = theirs.as_ref().and_then(|v| v["peak_rss_MiB"].as_f64());
        notes.push(format!("{case}: {:.2} img/s ours", c.batch as f64 * 1e3 / ours));
        rows.push(row);
    }
    notes.push("speedup = PyTorch ms / ours (> 1: we are faster); candle = plain candle ops, ms".into());
    Ok(Report { bench: "train-step".into(), rows, notes })
}

/// `--layers`: one network's step (default the U-Net base 16 / 252 / batch 4) per layer type, ms per
/// step and GFLOP/s.
fn layers(c: &Case, device: &Device) -> anyhow::Result<Report> {
    let (warmup, steps) = (2, 6);
    let mut s = Stepper::new(c.arch, c.width, c.input, c.batch, device)?;
    for _ in 0..warmup {
        s.step()?;
    }
    timing::start();
    let mut total = 0.0;
    for _ in 0..steps {
        total += s.step()?;
    }
    let per_kind = timing::stop();
    let n = steps as f64;
    let mut rows = Vec::new();
    let mut accounted = 0.0;
    for (kind, secs, flops, calls) in per_kind {
        let ms = secs * 1e3 / n;
        accounted += ms;
        let mut row = Row::time(kind.name(), "ms", ms, None);
        row.gflops = (flops > 0.0 && secs > 0.0).then(|| flops / secs / 1e9);
        row.calls = Some(calls as f64 / n);
        rows.push(row);
    }
    let mut rest = Row::time("rest (candle: cat, crop, loss, grad sums, SGD)", "ms", (total / n - accounted).max(0.0), None);
    rest.calls = None;
    rows.push(rest);
    rows.push(Row::time("whole step", "ms", total / n, None));
    let notes = vec![format!("{}, our kernels, {} threads, mean of {steps} steps after {warmup} warm-up; GFLOP/s counts 2 x multiply-adds", c.label(), candle_core::utils::get_num_threads())];
    Ok(Report { bench: "train-step --layers".into(), rows, notes })
}
