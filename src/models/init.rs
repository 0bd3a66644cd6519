//! Starting a network from saved weights: FCN32 -> FCN16 -> FCN8 staged training, and VGG16 checkpoints.
//!
//! Weights are matched by variable name; a name in both with different shapes is an error naming the
//! tensor (a silently skipped layer would train from random without anyone knowing). The report says what
//! was loaded and what was not, for the logs.

use candle_core::{Device, Result, Tensor};
use candle_nn::VarMap;
use std::collections::HashMap;
use std::path::Path;

#[derive(Debug, Default, Clone, PartialEq)]
pub struct LoadReport {
    /// Variables set from the file.
    pub loaded: Vec<String>,
    /// Variables of the model the file does not have (they keep their initial values).
    pub missing: Vec<String>,
    /// Tensors of the file the model does not have.
    pub unused: Vec<String>,
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} tensors loaded, {} kept their initial values", self.loaded.len(), self.missing.len())?;
        if !self.missing.is_empty() {
            write!(f, " ({})", self.missing.join(", "))?;
        }
        if !self.unused.is_empty() {
            write!(f, "; {} in the file unused", self.unused.len())?;
        }
        Ok(())
    }
}

/// Sets every variable of `varmap` that `tensors` has under the same name.
pub fn assign(varmap: &VarMap, tensors: &HashMap<String, Tensor>, source: &str) -> Result<LoadReport> {
    let data = varmap.data().lock().expect("varmap lock");
    let mut report = LoadReport::default();
    for (name, var) in data.iter() {
        match tensors.get(name) {
            Some(t) => {
                if t.dims() != var.dims() {
                    candle_core::bail!("{source}: tensor {name} has shape {:?} but the model's is {:?}", t.dims(), var.dims());
                }
                var.set(&t.to_dtype(var.dtype())?.to_device(var.device())?)?;
                report.loaded.push(name.clone());
            }
            None => report.missing.push(name.clone()),
        }
    }
    report.unused = tensors.keys().filter(|k| !data.contains_key(*k)).cloned().collect();
    report.loaded.sort();
    report.missing.sort();
    report.unused.sort();
    Ok(report)
}

/// Loads a safetensors file of an earlier stage (e.g. FCN32's weights into an FCN16) by name.
pub fn init_from(varmap: &VarMap, path: &Path) -> Result<LoadReport> {
    let tensors = candle_core::safetensors::load(path, &Device::Cpu)
        .map_err(|e| candle_core::Error::Msg(format!("{}: {e}", path.display())))?;
    assign(varmap, &tensors, &path.display().to_string())
}

/// torchvision's `vgg16().features` indices of the thirteen convolutions, in order.
const TORCHVISION_CONV_INDEX: [usize; 13] = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28];

/// Loads VGG16 weights (ImageNet, when the user has a copy; nothing is downloaded) into the VGG16 part
/// of a network whose VGG variables live under `prefix` (`""` for FCN, `"front."` for Dilation10).
/// Accepts our names (`conv1_1.weight`) or torchvision's (`features.0.weight`, `classifier.0.weight` for
/// fc6, reshaped to 7x7, and `classifier.3.weight` for fc7).
pub fn load_vgg16(varmap: &VarMap, path: &Path, prefix: &str) -> Result<LoadReport> {
    let raw = candle_core::safetensors::load(path, &Device::Cpu)
        .map_err(|e| candle_core::Error::Msg(format!("{}: {e}", path.display())))?;
    let mut names: Vec<String> = Vec::new();
    for (b, &(_, n)) in super::vgg16::BLOCKS.iter().enumerate() {
        for l in 0..n {
            names.push(format!("conv{}_{}", b + 1, l + 1));
        }
    }
    let mut mapped = HashMap::new();
    for (k, t) in raw {
        let ours = if let Some(rest) = k.strip_prefix("features.") {
            let (idx, kind) = rest.split_once('.').unwrap_or((rest, ""));
            idx.parse::<usize>()
                .ok()
                .and_then(|i| TORCHVISION_CONV_INDEX.iter().position(|&c| c == i))
                .map(|p| format!("{}.{kind}", names[p]))
        } else if let Some(kind) = k.strip_prefix("classifier.0.") {
            Some(format!("fc6.{kind}"))
        } else if let Some(kind) = k.strip_prefix("classifier.3.") {
            Some(format!("fc7.{kind}"))
        } else {
            Some(k.clone())
        };
        let Some(ours) = ours else { continue };
        // Fully connected weights become convolutions: (out, in·7·7) -> (out, in, 7, 7), (out, in) -> 1x1.
        let t = if ours.ends_with(".weight") && t.rank() == 2 {
            let (o, i) = t.dims2()?;
            if ours.starts_with("fc6") {
                t.reshape((o, i / 49, 7, 7))?
            } else {
                t.reshape((o, i, 1, 1))?
            }
        } else {
            t
        };
        mapped.insert(format!("{prefix}{ours}"), t);
    }
    let mut report = assign(varmap, &mapped, &path.display().to_string())?;
    // Variables outside the VGG16 part are expected to be missing; keep only the VGG ones in the report.
    report.missing.retain(|n| {
        let n = n.strip_prefix(prefix).unwrap_or(n);
        n.starts_with("conv") || n.starts_with("fc6") || n.starts_with("fc7")
    });
    Ok(report)
}

/// Where a network's starting weights come from, for the train stage.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StartFrom {
    /// A safetensors file of an earlier stage (FCN32 for FCN16, FCN16 for FCN8, Dilation10 front for
    /// context, ...), matched by variable name.
    pub init_from: Option<std::path::PathBuf>,
    /// VGG16 weights (ImageNet), for the networks with a VGG16 encoder.
    pub vgg16: Option<std::path::PathBuf>,
}

/// Applies `start` to a freshly built network and returns the line the train stage logs. With nothing to
/// start from, the line says the network trains from scratch (ImageNet weights cannot be downloaded here),
/// so a result table is never mistaken for a pre-trained run.
pub fn apply_start(varmap: &VarMap, arch: super::Arch, start: &StartFrom) -> Result<String> {
    use super::Arch;
    let mut lines = Vec::new();
    if let Some(p) = &start.vgg16 {
        let prefix = match arch {
            Arch::Fcn32 | Arch::Fcn16 | Arch::Fcn8 => "",
            Arch::Dilation10Front | Arch::Dilation10Context | Arch::Dilation10Global => "front.",
            other => candle_core::bail!("{other} has no VGG16 encoder: drop the vgg16 weights for it"),
        };
        let r = load_vgg16(varmap, p, prefix)?;
        if r.loaded.is_empty() {
            candle_core::bail!("{}: no VGG16 tensor matched the network's names", p.display());
        }
        lines.push(format!("VGG16 weights from {}: {r}", p.display()));
    }
    if let Some(p) = &start.init_from {
        let r = init_from(varmap, p)?;
        if r.loaded.is_empty() {
            candle_core::bail!("{}: no tensor matched the network's variable names", p.display());
        }
        lines.push(format!("initialised from {}: {r}", p.display()));
    }
    if lines.is_empty() {
        let what = match arch {
            Arch::Fcn32 | Arch::Fcn16 | Arch::Fcn8 | Arch::Dilation10Front | Arch::Dilation10Context | Arch::Dilation10Global => {
                " (no VGG16 ImageNet weights given, and they cannot be downloaded here: the paper started from them)"
            }
            _ => "",
        };
        lines.push(format!("{arch}: training from scratch, random initial weights{what}"));
    }
    Ok(lines.join("; "))
}
