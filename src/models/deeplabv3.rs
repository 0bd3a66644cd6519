//! DeepLabv3 (Chen et al.) on a GroupNorm ResNet18 ([`super::resnet18`]).
//!
//! ASPP: a 1x1 convolution, three 3x3 atrous convolutions (rates 12, 24, 36 at output stride 8; 6, 12, 18
//! at 16), and image-level pooling (global mean, 1x1, broadcast back); concatenated and projected by a 1x1
//! to 256 channels (width 1), then torchvision's head (3x3, norm, ReLU, 1x1 to the classes) and a
//! bilinear resize to the input. The pooling branch's GroupNorm sees a 1 x 1 map, so it normalises across
//! a group's channels only: it keeps 8 channels per group (32 groups at width 1, as everywhere) at every
//! width, where the other norms would drop to one channel per group at narrow widths and turn that branch
//! into a constant. Every normalisation is GroupNorm. On a 769 input at output stride 8 the trunk's
//! map is 97 x 97.

use super::{ch, layers, resnet18::ResNet18Gn, Probe, SegModel};
use crate::nn::resize_bilinear;
use candle_core::{Module, Result, Tensor};
use crate::nn::{Conv2d, GroupNorm};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub classes: usize,
    pub in_channels: usize,
    pub width: f64,
    pub input: [usize; 2],
    /// 8 (layer3 and layer4 dilated 2 and 4) or 16 (layer4 dilated 2).
    pub output_stride: usize,
    /// GroupNorm groups at full width (32).
    pub groups: usize,
    /// Dropout after the ASPP projection in training (torchvision's 0.5).
    pub dropout: f32,
}

struct ConvGn {
    conv: Conv2d,
    gn: GroupNorm,
}

impl ConvGn {
    fn new(cin: usize, cout: usize, k: usize, dilation: usize, groups: usize, vb: VarBuilder) -> Result<Self> {
        let pad = dilation * (k - 1) / 2;
        Ok(ConvGn { conv: layers::conv_nobias(cin, cout, k, 1, pad, dilation, vb.pp("conv"))?, gn: layers::group_norm(cout, groups, vb.pp("gn"))?.with_relu() })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.gn.forward(&self.conv.forward(x)?)
    }
}

pub struct DeepLabV3 {
    cfg: Config,
    backbone: ResNet18Gn,
    branches: Vec<ConvGn>,
    pool: ConvGn,
    project: ConvGn,
    head: ConvGn,
    cls: Conv2d,
}

impl DeepLabV3 {
    pub fn new(cfg: Config, vb: VarBuilder) -> Result<Self> {
        let rates = match cfg.output_stride {
            8 => [12, 24, 36],
            16 => [6, 12, 18],
            other => candle_core::bail!("DeepLabv3 output stride {other}: use 8 or 16"),
        };
        let [h, w] = cfg.input;
        if h < cfg.output_stride * 2 || w < cfg.output_stride * 2 {
            candle_core::bail!("DeepLabv3 input {h}x{w} is too small for output stride {}", cfg.output_stride);
        }
        let backbone = ResNet18Gn::new(cfg.in_channels, cfg.width, cfg.output_stride, cfg.groups, vb.pp("backbone"))?;
        let cin = backbone.out_channels();
        let a = ch(256, cfg.width);
        let g = cfg.groups;
        let va = vb.pp("aspp");
        let mut branches = vec![ConvGn::new(cin, a, 1, 1, g, va.pp("b0"))?];
        for (i, r) in rates.iter().enumerate() {
            branches.push(ConvGn::new(cin, a, 3, *r, g, va.pp(format!("b{}", i + 1)))?);
        }
        let pool = ConvGn::new(cin, a, 1, 1, (a / 8).clamp(1, g), va.pp("pool"))?;
        let project = ConvGn::new(5 * a, a, 1, 1, g, va.pp("project"))?;
        let head = ConvGn::new(a, a, 3, 1, g, vb.pp("head"))?;
        let cls = layers::conv_same(a, cfg.classes, 1, 1, vb.pp("cls"))?;
        Ok(DeepLabV3 { cfg, backbone, branches, pool, project, head, cls })
    }
}

impl SegModel for DeepLabV3 {
    fn forward_probe(&self, x: &Tensor, train: bool, probe: &mut Probe) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let f = self.backbone.forward(x, probe)?;
        probe.record("features before ASPP", &f);
        let mut outs = Vec::with_capacity(5);
        for b in &self.branches {
            outs.push(b.forward(&f)?);
        }
        let pooled = self.pool.forward(&f.mean_keepdim(2)?.mean_keepdim(3)?)?;
        outs.push(pooled.broadcast_as(outs[0].shape())?.contiguous()?);
        let cat = Tensor::cat(&outs, 1)?;
        let a = layers::dropout(&self.project.forward(&cat)?, self.cfg.dropout, train)?;
        probe.record("ASPP", &a);
        let s = self.cls.forward(&self.head.forward(&a)?)?;
        probe.record("scores", &s);
        resize_bilinear(&s, h, w)
    }
}
