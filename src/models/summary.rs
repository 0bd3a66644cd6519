//! `mammoflow model summary`: parameter counts and shapes of a network without training it.
//!
//! Parameters are counted by building the network on a variable source that records every requested
//! tensor and hands out zeros (no random initialisation of 134 M weights); shapes come from a real
//! forward pass of one zero image through those zero weights, so they are what the code computes, not a
//! formula beside it.

use super::{Arch, ModelSpec, Probe};
use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub model: String,
    pub classes: usize,
    pub in_channels: usize,
    pub width: f64,
    pub input: [usize; 2],
    pub params: usize,
    /// Parameters the optimiser updates (Dilation10 context: the context module only).
    pub trainable_params: usize,
    pub tensors: usize,
    /// `[N, classes, H, W]` for one image.
    pub output: Vec<usize>,
    /// Input side over the side of the map the scores are computed at (FCN32 32, FCN8 8, ...).
    pub output_stride: Option<usize>,
    /// Named intermediate maps `[N, C, H, W]`, in forward order.
    pub maps: Vec<(String, Vec<usize>)>,
    pub forward_seconds: f64,
    pub device: String,
}

/// Records `(name, shape)` of every variable the network asks for; returns zeros.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<VarShape>>>);

type VarShape = (String, Vec<usize>);

impl SimpleBackend for Recorder {
    fn get(&self, s: Shape, name: &str, _h: candle_nn::Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        self.0.lock().expect("recorder").push((name.to_string(), s.dims().to_vec()));
        Tensor::zeros(s, dtype, dev)
    }
    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> Result<Tensor> {
        candle_core::bail!("summary: {name} requested without a shape")
    }
    fn contains_tensor(&self, _name: &str) -> bool {
        false
    }
}

/// The map whose resolution defines the network's output stride.
fn stride_map(arch: Arch) -> Option<&'static str> {
    match arch {
        Arch::Fcn32 => Some("score_fr"),
        Arch::Fcn16 => Some("fuse_pool4"),
        Arch::Fcn8 => Some("fuse_pool3"),
        Arch::Unet => None,
        Arch::Dilation10Front | Arch::Dilation10Context | Arch::Dilation10Global => Some("front scores (stride 8)"),
        Arch::Deeplabv3 => Some("features before ASPP"),
    }
}

/// Builds `spec` with zero weights; returns the network and every variable it asked for.
fn build_recorded(spec: &ModelSpec, device: &Device) -> Result<(Box<dyn super::SegModel>, Vec<VarShape>)> {
    let rec = Recorder::default();
    let vb = VarBuilder::from_backend(Box::new(rec.clone()), DType::F32, device.clone());
    let model = spec.construct(vb)?;
    let vars = rec.0.lock().expect("recorder").clone();
    Ok((model, vars))
}

fn count(v: &VarShape) -> usize {
    v.1.iter().product()
}

/// Builds `spec` with zero weights, counts its parameters and runs one zero image through it.
pub fn summarize(spec: &ModelSpec, device: &Device) -> Result<Summary> {
    let (model, vars) = build_recorded(spec, device)?;
    let params: usize = vars.iter().map(count).sum();
    let prefixes = model.trainable_prefixes();
    let trainable_params: usize = vars
        .iter()
        .filter(|v| prefixes.is_empty() || prefixes.iter().any(|p| v.0.starts_with(p)))
        .map(count)
        .sum();
    let [h, w] = spec.input_hw();
    let x = Tensor::zeros((1, spec.in_channels, h, w), DType::F32, device)?;
    let mut probe = Probe::on();
    let t0 = Instant::now();
    let y = model.forward_probe(&x, false, &mut probe)?;
    let forward_seconds = t0.elapsed().as_secs_f64();
    let output_stride = stride_map(spec.arch)
        .and_then(|n| probe.get(n))
        .map(|t| (h as f64 / t.dims()[2] as f64).round() as usize);
    Ok(Summary {
        model: spec.arch.name().to_string(),
        classes: spec.classes,
        in_channels: spec.in_channels,
        width: spec.width,
        input: [h, w],
        params,
        trainable_params,
        tensors: vars.len(),
        output: y.dims().to_vec(),
        output_stride,
        maps: probe.maps.iter().map(|(n, t)| (n.clone(), t.dims().to_vec())).collect(),
        forward_seconds,
        device: crate::nn::device::device_name(device),
    })
}

/// Counts parameters only (no forward pass).
pub fn count_params(spec: &ModelSpec) -> Result<usize> {
    Ok(build_recorded(spec, &Device::Cpu)?.1.iter().map(count).sum())
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "model         {}", self.model)?;
        writeln!(f, "width         {}   classes {}   input channels {}", self.width, self.classes, self.in_channels)?;
        writeln!(f, "parameters    {} ({:.2} M) in {} tensors", self.params, self.params as f64 / 1e6, self.tensors)?;
        if self.trainable_params != self.params {
            writeln!(f, "trainable     {} ({:.2} M): the rest is frozen in this stage", self.trainable_params, self.trainable_params as f64 / 1e6)?;
        }
        let shape = |s: &[usize]| s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(" x ");
        writeln!(f, "input         1 x {} x {} x {}", self.in_channels, self.input[0], self.input[1])?;
        for (name, s) in &self.maps {
            writeln!(f, "  {:<26} {}", name, shape(s))?;
        }
        writeln!(f, "output        {}", shape(&self.output))?;
        if let Some(s) = self.output_stride {
            writeln!(f, "output stride {s}")?;
        }
        write!(f, "forward pass  {:.2} s on {} (one zero image, zero weights)", self.forward_seconds, self.device)
    }
}
