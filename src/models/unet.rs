//! The original U-Net (Ronneberger, Fischer & Brox): unpadded 3x3 convolutions, so a 572 x 572 input
//! gives the 388 x 388 centre; 2x2 max-pools down, 2x2 transposed convolutions up, the encoder map of the
//! same level centre-cropped and concatenated before each decoder block; a final 1x1 to the classes.
//! Channels 64-128-256-512-1024 at width 1 (31.03 M parameters with 3 input channels and 2 classes).

use super::{ch, layers, Probe, SegModel};
use candle_core::{Module, Result, Tensor};
use crate::nn::{Conv2d, ConvTranspose2d};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub classes: usize,
    pub in_channels: usize,
    pub width: f64,
    pub input: [usize; 2],
    /// Pooling levels (4 in the paper).
    pub depth: usize,
}

/// Output side for an input side, or `None` when some level would have an odd or empty map.
pub fn output_side(mut s: usize, depth: usize) -> Option<usize> {
    for _ in 0..depth {
        s = s.checked_sub(4)?;
        if s == 0 || s % 2 == 1 {
            return None;
        }
        s /= 2;
    }
    s = s.checked_sub(4)?;
    if s == 0 {
        return None;
    }
    for _ in 0..depth {
        s = (s * 2).checked_sub(4)?;
        if s == 0 {
            return None;
        }
    }
    Some(s)
}

/// Valid input sides nearest to `s` (one below, one above).
pub fn nearest_valid(s: usize, depth: usize) -> (Option<usize>, Option<usize>) {
    let below = (1..=s).rev().find(|&v| output_side(v, depth).is_some());
    let above = (s..s + 64 * (1 << depth)).find(|&v| output_side(v, depth).is_some());
    (below, above)
}

struct DoubleConv {
    conv1: Conv2d,
    conv2: Conv2d,
}

impl DoubleConv {
    fn new(cin: usize, cout: usize, vb: VarBuilder) -> Result<Self> {
        Ok(DoubleConv { conv1: layers::conv_valid(cin, cout, 3, vb.pp("conv1"))?.with_relu(), conv2: layers::conv_valid(cout, cout, 3, vb.pp("conv2"))?.with_relu() })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.conv2.forward(&self.conv1.forward(x)?)
    }
}

pub struct UNet {
    cfg: Config,
    down: Vec<DoubleConv>,
    bottom: DoubleConv,
    up: Vec<ConvTranspose2d>,
    upconv: Vec<DoubleConv>,
    head: Conv2d,
}

impl UNet {
    pub fn new(cfg: Config, vb: VarBuilder) -> Result<Self> {
        for side in cfg.input {
            if output_side(side, cfg.depth).is_none() {
                let (lo, hi) = nearest_valid(side, cfg.depth);
                let fmt = |v: Option<usize>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
                candle_core::bail!(
                    "U-Net input side {side} is not valid for unpadded convolutions at depth {}: nearest valid sides {} and {} (572 -> 388, 252 -> 68, 188 -> 4)",
                    cfg.depth, fmt(lo), fmt(hi)
                );
            }
        }
        let chans: Vec<usize> = (0..=cfg.depth).map(|i| ch(64 << i, cfg.width)).collect();
        let mut down = Vec::new();
        let mut c = cfg.in_channels;
        for (i, &ci) in chans.iter().enumerate().take(cfg.depth) {
            down.push(DoubleConv::new(c, ci, vb.pp(format!("down.{i}")))?);
            c = ci;
        }
        let bottom = DoubleConv::new(chans[cfg.depth - 1], chans[cfg.depth], vb.pp("bottom"))?;
        let mut up = Vec::new();
        let mut upconv = Vec::new();
        for (k, i) in (0..cfg.depth).rev().enumerate() {
            up.push(layers::upconv(chans[i + 1], chans[i], 2, 2, 0, true, vb.pp(format!("up.{k}")))?);
            upconv.push(DoubleConv::new(chans[i] * 2, chans[i], vb.pp(format!("upconv.{k}")))?);
        }
        let head = layers::conv_valid(chans[0], cfg.classes, 1, vb.pp("head"))?;
        Ok(UNet { cfg, down, bottom, up, upconv, head })
    }
}

impl SegModel for UNet {
    fn forward_probe(&self, x: &Tensor, _train: bool, probe: &mut Probe) -> Result<Tensor> {
        let mut skips = Vec::with_capacity(self.down.len());
        let mut h = x.clone();
        for (i, blk) in self.down.iter().enumerate() {
            h = blk.forward(&h)?;
            probe.record(&format!("down.{i}"), &h);
            skips.push(h.clone());
            h = crate::nn::max_pool2x2(&h)?;
        }
        h = self.bottom.forward(&h)?;
        probe.record("bottom", &h);
        for ((up, blk), skip) in self.up.iter().zip(&self.upconv).zip(skips.iter().rev()) {
            h = up.forward(&h)?;
            let (_, _, uh, uw) = h.dims4()?;
            h = Tensor::cat(&[&layers::center_crop(skip, uh, uw)?, &h], 1)?;
            h = blk.forward(&h)?;
        }
        self.head.forward(&h)
    }

    fn output_size(&self, h: usize, w: usize) -> (usize, usize) {
        (output_side(h, self.cfg.depth).unwrap_or(0), output_side(w, self.cfg.depth).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_sides_match_the_paper() {
        assert_eq!(output_side(572, 4), Some(388));
        assert_eq!(output_side(380, 4), Some(196));
        assert_eq!(output_side(252, 4), Some(68));
        assert_eq!(output_side(188, 4), Some(4));
        assert_eq!(output_side(256, 4), None);
        assert_eq!(nearest_valid(256, 4), (Some(252), Some(268)));
    }
}
