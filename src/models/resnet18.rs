//! ResNet18 trunk with GroupNorm in place of BatchNorm and atrous convolutions in the last blocks.
//!
//! The study trains DeepLabv3 with batches of 2, too small for BatchNorm statistics, hence GroupNorm
//! (32 groups, fewer at narrow widths: [`super::layers::gn_groups`]). Output stride 8 keeps layer3 and
//! layer4 at stride 1 with dilations 2 and 4; stride 16 dilates layer4 only (2); stride 32 is the plain
//! ResNet. As in torchvision's `replace_stride_with_dilation`, the first block of a dilated layer keeps
//! the previous dilation. Names follow torchvision (`layer3.0.conv1`, `downsample.0`), with `gn` for `bn`.

use super::{ch, layers, Probe};
use candle_core::{Module, Result, Tensor};
use crate::nn::{Conv2d, GroupNorm};
use candle_nn::VarBuilder;

struct BasicBlock {
    conv1: Conv2d,
    gn1: GroupNorm,
    conv2: Conv2d,
    gn2: GroupNorm,
    downsample: Option<(Conv2d, GroupNorm)>,
}

impl BasicBlock {
    #[allow(clippy::too_many_arguments)]
    fn new(cin: usize, cout: usize, stride: usize, d1: usize, d2: usize, groups: usize, vb: VarBuilder) -> Result<Self> {
        let conv1 = layers::conv_nobias(cin, cout, 3, stride, d1, d1, vb.pp("conv1"))?;
        let gn1 = layers::group_norm(cout, groups, vb.pp("gn1"))?.with_relu();
        let conv2 = layers::conv_nobias(cout, cout, 3, 1, d2, d2, vb.pp("conv2"))?;
        let gn2 = layers::group_norm(cout, groups, vb.pp("gn2"))?;
        let downsample = if stride != 1 || cin != cout {
            Some((layers::conv_nobias(cin, cout, 1, stride, 0, 1, vb.pp("downsample.0"))?, layers::group_norm(cout, groups, vb.pp("downsample.1"))?))
        } else {
            None
        };
        Ok(BasicBlock { conv1, gn1, conv2, gn2, downsample })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.gn1.forward(&self.conv1.forward(x)?)?;
        let h = self.gn2.forward(&self.conv2.forward(&h)?)?;
        let id = match &self.downsample {
            Some((c, g)) => g.forward(&c.forward(x)?)?,
            None => x.clone(),
        };
        crate::nn::relu(&(h + id)?)
    }
}

pub struct ResNet18Gn {
    conv1: Conv2d,
    gn1: GroupNorm,
    layers: Vec<Vec<BasicBlock>>,
    out_channels: usize,
}

impl ResNet18Gn {
    pub fn new(in_channels: usize, width: f64, output_stride: usize, groups: usize, vb: VarBuilder) -> Result<Self> {
        // (stride, dilation) of layer3 and layer4 for each output stride.
        let (l3, l4) = match output_stride {
            8 => ((1, 2), (1, 4)),
            16 => ((2, 1), (1, 2)),
            32 => ((2, 1), (2, 1)),
            other => candle_core::bail!("ResNet18 output stride {other}: use 8, 16 or 32"),
        };
        let c0 = ch(64, width);
        let conv1 = layers::conv_nobias(in_channels, c0, 7, 2, 3, 1, vb.pp("conv1"))?;
        let gn1 = layers::group_norm(c0, groups, vb.pp("gn1"))?.with_relu();
        let plan = [(64, 1, 1), (128, 2, 1), (256, l3.0, l3.1), (512, l4.0, l4.1)];
        let mut cin = c0;
        let mut prev_dilation = 1;
        let mut all = Vec::new();
        for (li, &(c, stride, dilation)) in plan.iter().enumerate() {
            let cout = ch(c, width);
            let v = vb.pp(format!("layer{}", li + 1));
            let b0 = BasicBlock::new(cin, cout, stride, prev_dilation, dilation, groups, v.pp("0"))?;
            let b1 = BasicBlock::new(cout, cout, 1, dilation, dilation, groups, v.pp("1"))?;
            all.push(vec![b0, b1]);
            cin = cout;
            prev_dilation = dilation;
        }
        Ok(ResNet18Gn { conv1, gn1, layers: all, out_channels: cin })
    }

    pub fn out_channels(&self) -> usize {
        self.out_channels
    }

    pub fn forward(&self, x: &Tensor, probe: &mut Probe) -> Result<Tensor> {
        let h = self.gn1.forward(&self.conv1.forward(x)?)?;
        probe.record("conv1", &h);
        let mut h = crate::nn::max_pool2d_padded(&h, 3, 2, 1)?;
        probe.record("maxpool", &h);
        for (i, layer) in self.layers.iter().enumerate() {
            for blk in layer {
                h = blk.forward(&h)?;
            }
            probe.record(&format!("layer{}", i + 1), &h);
        }
        Ok(h)
    }
}
