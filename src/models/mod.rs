//! The study's networks in candle, one per file, each with a serde `Config`, `new(cfg, vb)` and
//! `forward_t(x, train)`:
//!
//! | file | networks |
//! |---|---|
//! | [`fcn`] | FCN32, FCN16, FCN8 on [`vgg16`] |
//! | [`unet`] | the original unpadded U-Net |
//! | [`dilation10`] | Dilation10 front / context / global on [`vgg16`] |
//! | [`deeplabv3`] | DeepLabv3 with ASPP on a GroupNorm [`resnet18`] |
//!
//! Width and input size are configuration, so the same code builds the paper's full-size networks for a
//! GPU and narrow ones (width 1/4, 1/8) that train on a CPU. [`ModelSpec`] is the one description the
//! CLI and pipelines use; [`build`] turns it into a model whose variables live in a `VarMap`.

pub mod deeplabv3;
pub mod dilation10;
pub mod fcn;
pub mod init;
pub mod layers;
pub mod resnet18;
pub mod summary;
pub mod unet;
pub mod vgg16;

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

/// A segmentation network: `(N, C_in, H, W)` images to `(N, classes, H', W')` logits.
pub trait SegModel {
    /// Forward pass; `train` turns dropout on. `probe` collects the shapes of named intermediate maps
    /// (for `model summary`); pass [`Probe::off`] otherwise.
    fn forward_probe(&self, x: &Tensor, train: bool, probe: &mut Probe) -> Result<Tensor>;

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_probe(x, train, &mut Probe::off())
    }

    /// Prefixes of the variable names the optimiser trains; empty means all of them. Dilation10's
    /// context stage trains `context.` only: freezing is leaving the front's variables out of the optimiser.
    fn trainable_prefixes(&self) -> Vec<&'static str> {
        Vec::new()
    }

    /// Initial values that are not random (bilinear transposed convolutions, identity context layers,
    /// zero skip scores), set after construction by [`build`].
    fn init_overrides(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(Vec::new())
    }

    /// Output spatial size for an input size (the U-Net's is smaller than its input).
    fn output_size(&self, h: usize, w: usize) -> (usize, usize) {
        (h, w)
    }
}

/// Collects named intermediate maps when on (for `model summary` and tests); free when off.
#[derive(Debug, Default)]
pub struct Probe {
    on: bool,
    pub maps: Vec<(String, Tensor)>,
}

impl Probe {
    pub fn off() -> Self {
        Probe { on: false, maps: Vec::new() }
    }
    pub fn on() -> Self {
        Probe { on: true, maps: Vec::new() }
    }
    pub fn record(&mut self, name: &str, t: &Tensor) {
        if self.on {
            self.maps.push((name.to_string(), t.clone()));
        }
    }
    /// The map recorded under `name`.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.maps.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }
}

/// The networks of the study.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Arch {
    Fcn32,
    Fcn16,
    Fcn8,
    Unet,
    Dilation10Front,
    Dilation10Context,
    Dilation10Global,
    Deeplabv3,
}

impl Arch {
    pub const ALL: [Arch; 8] = [
        Arch::Fcn32,
        Arch::Fcn16,
        Arch::Fcn8,
        Arch::Unet,
        Arch::Dilation10Front,
        Arch::Dilation10Context,
        Arch::Dilation10Global,
        Arch::Deeplabv3,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Arch::Fcn32 => "fcn32",
            Arch::Fcn16 => "fcn16",
            Arch::Fcn8 => "fcn8",
            Arch::Unet => "unet",
            Arch::Dilation10Front => "dilation10-front",
            Arch::Dilation10Context => "dilation10-context",
            Arch::Dilation10Global => "dilation10-global",
            Arch::Deeplabv3 => "deeplabv3",
        }
    }

    /// Parses a name; a few spellings from the papers are accepted, and an unknown name gets the list
    /// and the closest one.
    pub fn parse(s: &str) -> std::result::Result<Arch, String> {
        let k = s.trim().to_ascii_lowercase().replace('_', "-");
        let alias = match k.as_str() {
            "fcn-32s" | "fcn32s" => "fcn32",
            "fcn-16s" | "fcn16s" => "fcn16",
            "fcn-8s" | "fcn8s" => "fcn8",
            "u-net" => "unet",
            "deeplabv3-resnet18" | "deeplab" | "deeplabv3-resnet18-gn" => "deeplabv3",
            other => other,
        };
        if let Some(a) = Arch::ALL.iter().find(|a| a.name() == alias) {
            return Ok(*a);
        }
        let names: Vec<&str> = Arch::ALL.iter().map(|a| a.name()).collect();
        let best = names
            .iter()
            .map(|n| (strsim::jaro_winkler(n, &k), *n))
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .filter(|(score, _)| *score > 0.7)
            .map(|(_, n)| format!(" (did you mean {n}?)"))
            .unwrap_or_default();
        Err(format!("unknown model {s:?}{best}; models: {}", names.join(", ")))
    }

    /// The paper's input size for this network (SPEC: FCN 256, U-Net 572, Dilation10 632 for the front
    /// stage, DeepLabv3 769).
    pub fn default_input(self) -> usize {
        match self {
            Arch::Fcn32 | Arch::Fcn16 | Arch::Fcn8 => 256,
            Arch::Unet => 572,
            Arch::Dilation10Front | Arch::Dilation10Context | Arch::Dilation10Global => 632,
            Arch::Deeplabv3 => 769,
        }
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

fn default_in_channels() -> usize {
    3
}
fn default_width() -> f64 {
    1.0
}
fn default_classes() -> usize {
    2
}

/// What the CLI and pipelines say about a network; [`ModelSpec::build`] picks the model file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub arch: Arch,
    /// Output classes (default 2).
    #[serde(default = "default_classes")]
    pub classes: usize,
    /// Input channels: 3, gray replicated, as the study feeds ImageNet-shaped networks (default 3).
    #[serde(default = "default_in_channels")]
    pub in_channels: usize,
    /// Channel multiplier: 1 = the paper's network, 0.25 = a quarter of every layer's channels.
    #[serde(default = "default_width")]
    pub width: f64,
    /// `[height, width]` of the input; default: the paper's size for the network.
    #[serde(default)]
    pub input: Option<[usize; 2]>,
    /// DeepLabv3 only: 8 (default) or 16.
    #[serde(default)]
    pub output_stride: Option<usize>,
}

impl ModelSpec {
    pub fn new(arch: Arch) -> Self {
        ModelSpec {
            arch,
            classes: default_classes(),
            in_channels: default_in_channels(),
            width: default_width(),
            input: None,
            output_stride: None,
        }
    }

    pub fn input_hw(&self) -> [usize; 2] {
        self.input.unwrap_or([self.arch.default_input(); 2])
    }

    /// Checks the numbers that every network needs; each model checks its own constraints in `new`.
    pub fn validate(&self) -> Result<()> {
        if self.classes < 1 {
            candle_core::bail!("{}: classes must be at least 1", self.arch);
        }
        if self.in_channels < 1 {
            candle_core::bail!("{}: in_channels must be at least 1", self.arch);
        }
        if !(self.width > 0.0 && self.width <= 4.0) {
            candle_core::bail!("{}: width {} must be in (0, 4]", self.arch, self.width);
        }
        if self.output_stride.is_some() && self.arch != Arch::Deeplabv3 {
            candle_core::bail!("{}: output_stride applies to deeplabv3 only", self.arch);
        }
        Ok(())
    }

    /// Constructs the network; its variables are created (or looked up) through `vb`.
    pub fn construct(&self, vb: VarBuilder) -> Result<Box<dyn SegModel>> {
        self.validate()?;
        let input = self.input_hw();
        Ok(match self.arch {
            Arch::Fcn32 | Arch::Fcn16 | Arch::Fcn8 => {
                let variant = match self.arch {
                    Arch::Fcn32 => fcn::Variant::Fcn32,
                    Arch::Fcn16 => fcn::Variant::Fcn16,
                    _ => fcn::Variant::Fcn8,
                };
                let cfg = fcn::Config { variant, classes: self.classes, in_channels: self.in_channels, width: self.width, input, dropout: 0.5 };
                Box::new(fcn::Fcn::new(cfg, vb)?)
            }
            Arch::Unet => {
                let cfg = unet::Config { classes: self.classes, in_channels: self.in_channels, width: self.width, input, depth: 4 };
                Box::new(unet::UNet::new(cfg, vb)?)
            }
            Arch::Dilation10Front | Arch::Dilation10Context | Arch::Dilation10Global => {
                let stage = match self.arch {
                    Arch::Dilation10Front => dilation10::Stage::Front,
                    Arch::Dilation10Context => dilation10::Stage::Context,
                    _ => dilation10::Stage::Global,
                };
                let cfg = dilation10::Config { stage, classes: self.classes, in_channels: self.in_channels, width: self.width, input, dropout: 0.5 };
                Box::new(dilation10::Dilation10::new(cfg, vb)?)
            }
            Arch::Deeplabv3 => {
                let cfg = deeplabv3::Config {
                    classes: self.classes,
                    in_channels: self.in_channels,
                    width: self.width,
                    input,
                    output_stride: self.output_stride.unwrap_or(8),
                    groups: 32,
                    dropout: 0.5,
                };
                Box::new(deeplabv3::DeepLabV3::new(cfg, vb)?)
            }
        })
    }
}

/// Builds a network with fresh variables in `varmap` (random, plus the model's [`init_overrides`]).
///
/// [`init_overrides`]: SegModel::init_overrides
pub fn build(spec: &ModelSpec, varmap: &mut VarMap, dtype: DType, device: &Device) -> Result<Box<dyn SegModel>> {
    let vb = VarBuilder::from_varmap(varmap, dtype, device);
    let model = spec.construct(vb)?;
    for (name, value) in model.init_overrides()? {
        varmap.set_one(&name, value.to_dtype(dtype)?.to_device(device)?)?;
    }
    Ok(model)
}

/// The variables the optimiser should update for `model`: all, or those under its trainable prefixes.
pub fn trainable_vars(model: &dyn SegModel, varmap: &VarMap) -> Vec<(String, candle_core::Var)> {
    let prefixes = model.trainable_prefixes();
    let data = varmap.data().lock().expect("varmap lock");
    let mut vars: Vec<(String, candle_core::Var)> = data
        .iter()
        .filter(|(name, _)| prefixes.is_empty() || prefixes.iter().any(|p| name.starts_with(p)))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

/// Channels of a layer that has `c` channels in the paper's network, at width multiplier `width`.
pub fn ch(c: usize, width: f64) -> usize {
    ((c as f64 * width).round() as usize).max(1)
}

#[cfg(test)]
mod tests;
