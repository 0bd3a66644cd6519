//! FCN32s, FCN16s, FCN8s (Long, Shelhamer & Darrell) on a VGG16 encoder with SAME padding.
//!
//! fc6 / fc7 become a 7x7 and a 1x1 convolution (4096 channels at full width), `score_fr` a 1x1 to the
//! classes. FCN16 adds a learned x2 transposed convolution (k4, s2, p1, initialised bilinear) and the 1x1
//! scores of pool4; FCN8 one more with the scores of pool3. The last step is a bilinear resize to the
//! input size (x32, x16, x8), differentiable here (candle's own has no backward). As in the FCN paper's
//! staged training, the skip score layers start at zero, so a fresh FCN16 initialised from an FCN32
//! ([`super::init::init_from`]) computes exactly what the FCN32 did.
//!
//! No ReLU on the score path (scores, up-convolutions): the reference FCN does not have one either.

use super::vgg16::{FcLayers, Vgg16};
use super::{layers, Probe, SegModel};
use crate::nn::resize_bilinear;
use candle_core::{Module, Result, Tensor};
use crate::nn::{Conv2d, ConvTranspose2d};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    Fcn32,
    Fcn16,
    Fcn8,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub variant: Variant,
    pub classes: usize,
    pub in_channels: usize,
    pub width: f64,
    /// `[height, width]`, multiples of 32 (five 2x2 pools, and the skips must line up).
    pub input: [usize; 2],
    /// Dropout after fc6 and fc7 in training.
    pub dropout: f32,
}

pub struct Fcn {
    cfg: Config,
    vgg: Vgg16,
    fc: FcLayers,
    score_fr: Conv2d,
    score_pool4: Option<Conv2d>,
    upscore2: Option<ConvTranspose2d>,
    score_pool3: Option<Conv2d>,
    upscore_pool4: Option<ConvTranspose2d>,
}

impl Fcn {
    pub fn new(cfg: Config, vb: VarBuilder) -> Result<Self> {
        let [h, w] = cfg.input;
        if h % 32 != 0 || w % 32 != 0 || h == 0 || w == 0 {
            candle_core::bail!(
                "FCN input {h}x{w}: both sides must be multiples of 32 (e.g. {}x{})",
                (h.max(32) / 32) * 32,
                (w.max(32) / 32) * 32
            );
        }
        let wd = cfg.width;
        let k = cfg.classes;
        let vgg = Vgg16::new(cfg.in_channels, wd, [true; 5], [1; 5], vb.clone())?;
        let fc = FcLayers::new(Vgg16::channels(4, wd), wd, 1, cfg.dropout, vb.clone())?;
        let score_fr = layers::conv_same(FcLayers::channels(wd), k, 1, 1, vb.pp("score_fr"))?;
        let (mut score_pool4, mut upscore2, mut score_pool3, mut upscore_pool4) = (None, None, None, None);
        if cfg.variant != Variant::Fcn32 {
            score_pool4 = Some(layers::conv_same(Vgg16::channels(3, wd), k, 1, 1, vb.pp("score_pool4"))?);
            upscore2 = Some(layers::upconv(k, k, 4, 2, 1, false, vb.pp("upscore2"))?);
        }
        if cfg.variant == Variant::Fcn8 {
            score_pool3 = Some(layers::conv_same(Vgg16::channels(2, wd), k, 1, 1, vb.pp("score_pool3"))?);
            upscore_pool4 = Some(layers::upconv(k, k, 4, 2, 1, false, vb.pp("upscore_pool4"))?);
        }
        Ok(Fcn { cfg, vgg, fc, score_fr, score_pool4, upscore2, score_pool3, upscore_pool4 })
    }
}

impl SegModel for Fcn {
    fn forward_probe(&self, x: &Tensor, train: bool, probe: &mut Probe) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let feats = self.vgg.forward(x, probe)?;
        let mut s = self.score_fr.forward(&self.fc.forward(&feats[4], train)?)?;
        probe.record("score_fr", &s);
        if let (Some(up), Some(sp4)) = (&self.upscore2, &self.score_pool4) {
            s = (up.forward(&s)? + sp4.forward(&feats[3])?)?;
            probe.record("fuse_pool4", &s);
        }
        if let (Some(up), Some(sp3)) = (&self.upscore_pool4, &self.score_pool3) {
            s = (up.forward(&s)? + sp3.forward(&feats[2])?)?;
            probe.record("fuse_pool3", &s);
        }
        resize_bilinear(&s, h, w)
    }

    fn init_overrides(&self) -> Result<Vec<(String, Tensor)>> {
        let k = self.cfg.classes;
        let mut v = Vec::new();
        if let Some(sp4) = &self.score_pool4 {
            v.push(("upscore2.weight".to_string(), layers::bilinear_kernel(k, 4)?));
            v.push(("score_pool4.weight".to_string(), sp4.weight().zeros_like()?));
            v.push(("score_pool4.bias".to_string(), Tensor::zeros(k, sp4.weight().dtype(), sp4.weight().device())?));
        }
        if let Some(sp3) = &self.score_pool3 {
            v.push(("upscore_pool4.weight".to_string(), layers::bilinear_kernel(k, 4)?));
            v.push(("score_pool3.weight".to_string(), sp3.weight().zeros_like()?));
            v.push(("score_pool3.bias".to_string(), Tensor::zeros(k, sp3.weight().dtype(), sp3.weight().device())?));
        }
        Ok(v)
    }
}
