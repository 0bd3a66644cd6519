//! A 2-D convolution layer whose backward pass is right for every shape.
//!
//! candle 0.11 computes a strided convolution's input gradient with a transposed convolution whose
//! output padding it derives from the height only and applies to the width too: a stride-2 convolution
//! of a 9 x 8 map then gets a 9 x 7 gradient and the backward fails (or, with other shapes, is wrong).
//! When the two remainders differ, this layer pads explicitly and drops the trailing rows / columns no
//! window reads, so both remainders are zero and candle's backward holds; the result is the same.
//!
//! On the CPU the layers run on our kernels ([`super::kernels`]): bias and ReLU are the convolution's
//! epilogue there, one graph node instead of three (each node of candle's autograd costs a zero-filled
//! gradient buffer and an add on top of its own backward). On CUDA they are candle's ops.

use super::kernels;
use candle_core::{Module, Result, Tensor};

/// Wraps candle-nn's `Conv2d` (same variables, same forward result), optionally followed by a ReLU.
#[derive(Clone, Debug)]
pub struct Conv2d {
    inner: candle_nn::Conv2d,
    relu: bool,
}

impl From<candle_nn::Conv2d> for Conv2d {
    fn from(inner: candle_nn::Conv2d) -> Self {
        Conv2d { inner, relu: false }
    }
}

impl Conv2d {
    /// The same layer with a ReLU after it (fused into the convolution on the CPU).
    pub fn with_relu(self) -> Self {
        Conv2d { relu: true, ..self }
    }
    pub fn weight(&self) -> &Tensor {
        self.inner.weight()
    }
    pub fn bias(&self) -> Option<&Tensor> {
        self.inner.bias()
    }
}

/// `x.conv2d(w, padding, stride, dilation, 1)` with a correct backward for any input shape.
pub fn conv2d(x: &Tensor, w: &Tensor, padding: usize, stride: usize, dilation: usize) -> Result<Tensor> {
    let (_, _, h, wd) = x.dims4()?;
    let (_, _, kh, kw) = w.dims4()?;
    let rem = |n: usize, k: usize| (n + 2 * padding).checked_sub(dilation * (k - 1) + 1).map(|v| v % stride);
    let (rh, rw) = match (rem(h, kh), rem(wd, kw)) {
        (Some(rh), Some(rw)) if stride > 1 && rh != rw => (rh, rw),
        _ => return x.conv2d(w, padding, stride, dilation, 1),
    };
    let xp = x.pad_with_zeros(2, padding, padding)?.pad_with_zeros(3, padding, padding)?;
    let xp = xp.narrow(2, 0, h + 2 * padding - rh)?.narrow(3, 0, wd + 2 * padding - rw)?;
    xp.conv2d(w, 0, stride, dilation, 1)
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let cfg = self.inner.config();
        if cfg.groups == 1 && kernels::use_fast(x.device()) {
            return kernels::ops::conv2d(x, self.inner.weight(), self.inner.bias(), cfg.stride, cfg.padding, cfg.dilation, self.relu);
        }
        let y = if cfg.stride == 1 || cfg.groups != 1 {
            self.inner.forward(x)?
        } else {
            let y = conv2d(x, self.inner.weight(), cfg.padding, cfg.stride, cfg.dilation)?;
            match self.inner.bias() {
                Some(b) => y.broadcast_add(&b.reshape((1, b.elem_count(), 1, 1))?)?,
                None => y,
            }
        };
        if self.relu {
            super::norm::relu_candle(&y)
        } else {
            Ok(y)
        }
    }
}

/// A transposed convolution with PyTorch's weight layout `(cin, cout, kh, kw)` and variable names
/// (`weight`, `bias`): candle-nn's on CUDA, ours on the CPU.
#[derive(Clone, Debug)]
pub struct ConvTranspose2d {
    inner: candle_nn::ConvTranspose2d,
}

impl From<candle_nn::ConvTranspose2d> for ConvTranspose2d {
    fn from(inner: candle_nn::ConvTranspose2d) -> Self {
        ConvTranspose2d { inner }
    }
}

impl ConvTranspose2d {
    pub fn weight(&self) -> &Tensor {
        self.inner.weight()
    }
    pub fn bias(&self) -> Option<&Tensor> {
        self.inner.bias()
    }
}

impl Module for ConvTranspose2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let cfg = self.inner.config();
        if kernels::use_fast(x.device()) {
            return kernels::ops::conv_transpose2d(x, self.inner.weight(), self.inner.bias(), cfg.stride, cfg.padding, cfg.output_padding, cfg.dilation);
        }
        self.inner.forward(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_result_as_candles_conv() {
        let x = crate::nn::gradcheck::pseudo_random(2 * 3 * 9 * 8, 1).unwrap().reshape((2, 3, 9, 8)).unwrap();
        let w = crate::nn::gradcheck::pseudo_random(4 * 3 * 3 * 3, 2).unwrap().reshape((4, 3, 3, 3)).unwrap();
        let a: Vec<f64> = conv2d(&x, &w, 1, 2, 1).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f64> = x.conv2d(&w, 1, 2, 1, 1).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(a.len(), b.len());
        for (p, q) in a.iter().zip(&b) {
            assert!((p - q).abs() < 1e-12);
        }
    }
}
