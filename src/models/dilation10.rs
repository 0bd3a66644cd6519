//! Dilation10 (Yu & Koltun, "Multi-scale context aggregation by dilated convolutions").
//!
//! Front module: VGG16 with pool4 and pool5 removed, conv5_x dilated by 2, fc6 a 7x7 convolution dilated
//! by 4 (4096 channels), fc7 1x1 (4096), `score` 1x1 to the classes: output stride 8. Context module
//! (the "basic" one: `classes` channels throughout): nine 3x3 convolutions dilated 1, 1, 2, 4, 8, 16, 32,
//! 64, 1, each with ReLU, then a 1x1 output; identity-initialised, so adding it to a trained front starts
//! from the front's scores. The scores are resized x8 (bilinear) to the input.
//!
//! The three variants of the study are three training stages of one network: `front` (no context
//! module), `context` (front frozen: only `context.*` variables are trainable, and the backward pass stops
//! at the front's scores) and `global` (all trained).
//! Padding is SAME everywhere (the Caffe original pads the input by reflection and uses valid
//! convolutions; SAME keeps the output stride exactly 8 for any input).

use super::vgg16::{FcLayers, Vgg16};
use super::{layers, Probe, SegModel};
use crate::nn::resize_bilinear;
use candle_core::{Module, Result, Tensor};
use crate::nn::Conv2d;
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

/// Dilations of the context module's nine 3x3 layers (the Cityscapes model's).
pub const CONTEXT_DILATIONS: [usize; 9] = [1, 1, 2, 4, 8, 16, 32, 64, 1];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Front,
    Context,
    Global,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub stage: Stage,
    pub classes: usize,
    pub in_channels: usize,
    pub width: f64,
    pub input: [usize; 2],
    pub dropout: f32,
}

pub struct Dilation10 {
    cfg: Config,
    vgg: Vgg16,
    fc: FcLayers,
    score: Conv2d,
    context: Vec<Conv2d>,
}

impl Dilation10 {
    pub fn new(cfg: Config, vb: VarBuilder) -> Result<Self> {
        let [h, w] = cfg.input;
        if h < 8 || w < 8 {
            candle_core::bail!("Dilation10 input {h}x{w}: both sides must be at least 8");
        }
        let front = vb.pp("front");
        let wd = cfg.width;
        let vgg = Vgg16::new(cfg.in_channels, wd, [true, true, true, false, false], [1, 1, 1, 1, 2], front.clone())?;
        let fc = FcLayers::new(Vgg16::channels(4, wd), wd, 4, cfg.dropout, front.clone())?;
        let score = layers::conv_same(FcLayers::channels(wd), cfg.classes, 1, 1, front.pp("score"))?;
        let mut context = Vec::new();
        if cfg.stage != Stage::Front {
            let c = cfg.classes;
            let vc = vb.pp("context");
            for (i, &d) in CONTEXT_DILATIONS.iter().enumerate() {
                context.push(layers::conv_same(c, c, 3, d, vc.pp(format!("ctx{}", i + 1)))?);
            }
            context.push(layers::conv_same(c, c, 1, 1, vc.pp("out"))?);
        }
        Ok(Dilation10 { cfg, vgg, fc, score, context })
    }
}

impl SegModel for Dilation10 {
    fn forward_probe(&self, x: &Tensor, train: bool, probe: &mut Probe) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let feats = self.vgg.forward(x, probe)?;
        let mut s = self.score.forward(&self.fc.forward(&feats[4], train)?)?;
        probe.record("front scores (stride 8)", &s);
        if self.cfg.stage == Stage::Context {
            // The front is frozen in this stage: cut the graph here so the backward pass stops at the
            // context module instead of computing gradients nobody applies (3x cheaper per step).
            s = s.detach();
        }
        let n = self.context.len();
        for (i, conv) in self.context.iter().enumerate() {
            s = conv.forward(&s)?;
            if i + 1 < n {
                s = crate::nn::relu(&s)?;
            }
        }
        if n > 0 {
            probe.record("context scores", &s);
        }
        resize_bilinear(&s, h, w)
    }

    fn trainable_prefixes(&self) -> Vec<&'static str> {
        match self.cfg.stage {
            Stage::Front => vec!["front."],
            Stage::Context => vec!["context."],
            Stage::Global => Vec::new(),
        }
    }

    fn init_overrides(&self) -> Result<Vec<(String, Tensor)>> {
        let c = self.cfg.classes;
        let mut v = Vec::new();
        for i in 0..self.context.len() {
            let (name, k) = if i < CONTEXT_DILATIONS.len() { (format!("context.ctx{}", i + 1), 3) } else { ("context.out".to_string(), 1) };
            v.push((format!("{name}.weight"), layers::identity_kernel(c, k)?));
            v.push((format!("{name}.bias"), Tensor::zeros(c, candle_core::DType::F32, &candle_core::Device::Cpu)?));
        }
        Ok(v)
    }
}
