//! GroupNorm with PyTorch's variable names (`weight`, `bias`), optionally followed by a ReLU: one fused
//! op on the CPU ([`super::kernels::norm`]), candle-nn's GroupNorm (and candle's ReLU) elsewhere.

use super::kernels;
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

#[derive(Clone, Debug)]
pub struct GroupNorm {
    inner: candle_nn::GroupNorm,
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
    relu: bool,
}

impl GroupNorm {
    /// `groups` groups over `channels` (weight 1, bias 0 initially), like `candle_nn::group_norm`.
    pub fn new(groups: usize, channels: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints(channels, "weight", candle_nn::Init::Const(1.))?;
        let bias = vb.get_with_hints(channels, "bias", candle_nn::Init::Const(0.))?;
        let inner = candle_nn::GroupNorm::new(weight.clone(), bias.clone(), channels, groups, eps)?;
        Ok(GroupNorm { inner, weight, bias, groups, eps, relu: false })
    }

    /// The same layer with a ReLU after it (fused on the CPU).
    pub fn with_relu(self) -> Self {
        GroupNorm { relu: true, ..self }
    }
}

impl Module for GroupNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if kernels::use_fast(x.device()) && x.rank() == 4 {
            return x.apply_op3(&self.weight, &self.bias, kernels::norm::GroupNorm::new(self.groups, self.eps, self.relu));
        }
        let y = self.inner.forward(x)?;
        if self.relu {
            relu_candle(&y)
        } else {
            Ok(y)
        }
    }
}

/// ReLU on both threads on the CPU (one graph node, a one-pass backward), candle's ops elsewhere.
pub fn relu(x: &Tensor) -> Result<Tensor> {
    if kernels::use_fast(x.device()) {
        return x.apply_op1(kernels::elementwise::Relu);
    }
    relu_candle(x)
}

/// ReLU from candle's ops with PyTorch's gradient at 0 (zero): candle's own `relu` passes the gradient
/// where the input is exactly 0, which happens wherever a ReLU'd zero meets an identity-initialised
/// layer (Dilation10's context module) or a group whose values are all equal (DeepLabv3's image
/// pooling branch), and then the two paths train differently.
pub fn relu_candle(x: &Tensor) -> Result<Tensor> {
    x * x.gt(0.0)?.to_dtype(x.dtype())?
}
