//! VGG16's convolutional part (thirteen 3x3 convolutions, SAME padding), the encoder of FCN and Dilation10.
//!
//! Variables are named `conv{block}_{layer}` as in the Caffe models (`conv1_1` .. `conv5_3`), so a
//! VGG16 checkpoint maps onto them by name ([`super::init::load_vgg16`]).

use super::{ch, layers, Probe};
use candle_core::{Module, Result, Tensor};
use crate::nn::Conv2d;
use candle_nn::VarBuilder;

/// Channels and layer count of the five blocks.
pub const BLOCKS: [(usize, usize); 5] = [(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)];

pub struct Vgg16 {
    blocks: Vec<Vec<Conv2d>>,
    pool_after: [bool; 5],
}

impl Vgg16 {
    /// `pool_after[b]`: 2x2 max-pool after block `b` (FCN: all five; Dilation10: the first three).
    /// `dilation[b]`: dilation of block `b`'s convolutions (Dilation10: 2 in block 5).
    pub fn new(in_channels: usize, width: f64, pool_after: [bool; 5], dilation: [usize; 5], vb: VarBuilder) -> Result<Self> {
        let mut blocks = Vec::new();
        let mut c = in_channels;
        for (b, &(cout, n)) in BLOCKS.iter().enumerate() {
            let cout = ch(cout, width);
            let mut convs = Vec::new();
            for l in 0..n {
                convs.push(layers::conv_same(c, cout, 3, dilation[b], vb.pp(format!("conv{}_{}", b + 1, l + 1)))?.with_relu());
                c = cout;
            }
            blocks.push(convs);
        }
        Ok(Vgg16 { blocks, pool_after })
    }

    /// Channels of block `b`'s output at `width`.
    pub fn channels(b: usize, width: f64) -> usize {
        ch(BLOCKS[b].0, width)
    }

    /// Returns each block's output (after its pool, when it has one).
    pub fn forward(&self, x: &Tensor, probe: &mut Probe) -> Result<Vec<Tensor>> {
        let mut outs = Vec::with_capacity(5);
        let mut h = x.clone();
        for (b, convs) in self.blocks.iter().enumerate() {
            for conv in convs {
                h = conv.forward(&h)?;
            }
            if self.pool_after[b] {
                h = crate::nn::max_pool2x2(&h)?;
                probe.record(&format!("pool{}", b + 1), &h);
            } else {
                probe.record(&format!("conv{}_{}", b + 1, convs.len()), &h);
            }
            outs.push(h.clone());
        }
        Ok(outs)
    }
}

/// fc6 and fc7 of VGG16 as convolutions (7x7 with the given dilation, then 1x1; 4096 channels at width 1),
/// each followed by ReLU and, in training, dropout: the part FCN and Dilation10's front share after the
/// convolutional blocks.
pub struct FcLayers {
    fc6: Conv2d,
    fc7: Conv2d,
    dropout: f32,
}

impl FcLayers {
    pub fn new(cin: usize, width: f64, fc6_dilation: usize, dropout: f32, vb: VarBuilder) -> Result<Self> {
        let fc = Self::channels(width);
        Ok(FcLayers {
            fc6: layers::conv_same(cin, fc, 7, fc6_dilation, vb.pp("fc6"))?.with_relu(),
            fc7: layers::conv_same(fc, fc, 1, 1, vb.pp("fc7"))?.with_relu(),
            dropout,
        })
    }

    /// Output channels at `width`.
    pub fn channels(width: f64) -> usize {
        ch(4096, width)
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let f = layers::dropout(&self.fc6.forward(x)?, self.dropout, train)?;
        layers::dropout(&self.fc7.forward(&f)?, self.dropout, train)
    }
}
