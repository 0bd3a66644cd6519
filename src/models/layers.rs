//! Small constructors shared by the model files.

use candle_core::{Result, Tensor};
use crate::nn::{Conv2d, ConvTranspose2d, GroupNorm};
use candle_nn::{Conv2dConfig, ConvTranspose2dConfig, VarBuilder};

/// `k x k` convolution with bias, SAME padding for odd `k` at any dilation.
pub fn conv_same(cin: usize, cout: usize, k: usize, dilation: usize, vb: VarBuilder) -> Result<Conv2d> {
    let cfg = Conv2dConfig { padding: dilation * (k - 1) / 2, stride: 1, dilation, groups: 1, cudnn_fwd_algo: None };
    Ok(candle_nn::conv2d(cin, cout, k, cfg, vb)?.into())
}

/// Unpadded (`valid`) `k x k` convolution with bias.
pub fn conv_valid(cin: usize, cout: usize, k: usize, vb: VarBuilder) -> Result<Conv2d> {
    Ok(candle_nn::conv2d(cin, cout, k, Conv2dConfig::default(), vb)?.into())
}

/// Convolution without bias (followed by a normalisation), any stride / padding / dilation.
pub fn conv_nobias(cin: usize, cout: usize, k: usize, stride: usize, padding: usize, dilation: usize, vb: VarBuilder) -> Result<Conv2d> {
    let cfg = Conv2dConfig { padding, stride, dilation, groups: 1, cudnn_fwd_algo: None };
    Ok(candle_nn::conv2d_no_bias(cin, cout, k, cfg, vb)?.into())
}

/// Transposed convolution, stride `s`, padding `p`.
pub fn upconv(cin: usize, cout: usize, k: usize, s: usize, p: usize, bias: bool, vb: VarBuilder) -> Result<ConvTranspose2d> {
    let cfg = ConvTranspose2dConfig { padding: p, output_padding: 0, stride: s, dilation: 1 };
    Ok(if bias { candle_nn::conv_transpose2d(cin, cout, k, cfg, vb)? } else { candle_nn::conv_transpose2d_no_bias(cin, cout, k, cfg, vb)? }.into())
}

/// The largest group count `<= max_groups` that divides `channels`: 32 groups at full width, fewer
/// when a narrow width leaves fewer channels (a group must hold whole channels).
pub fn gn_groups(channels: usize, max_groups: usize) -> usize {
    (1..=max_groups.min(channels)).rev().find(|g| channels.is_multiple_of(*g)).unwrap_or(1)
}

/// GroupNorm over `channels` with [`gn_groups`] groups (weight 1, bias 0 initially).
pub fn group_norm(channels: usize, max_groups: usize, vb: VarBuilder) -> Result<GroupNorm> {
    GroupNorm::new(gn_groups(channels, max_groups), channels, 1e-5, vb)
}

/// Dropout in training, identity otherwise.
pub fn dropout(x: &Tensor, p: f32, train: bool) -> Result<Tensor> {
    if train && p > 0.0 && crate::nn::kernels::use_fast(x.device()) {
        x.apply_op1(crate::nn::kernels::elementwise::Dropout::new(p as f64))
    } else if train && p > 0.0 {
        candle_nn::ops::dropout(x, p)
    } else {
        Ok(x.clone())
    }
}

/// The centre `h x w` window of an `(N, C, H, W)` map (U-Net's skip connections).
pub fn center_crop(x: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let (_, _, hh, ww) = x.dims4()?;
    if h > hh || w > ww {
        candle_core::bail!("centre crop {h}x{w} is larger than the map {hh}x{ww}");
    }
    x.narrow(2, (hh - h) / 2, h)?.narrow(3, (ww - w) / 2, w)
}

/// The `k x k` bilinear up-sampling kernel of FCN (Long et al.'s `upsample_filt`), `(c, c, k, k)` with the
/// kernel on the channel diagonal: a transposed convolution initialised with it starts as a bilinear
/// x2 resize.
pub fn bilinear_kernel(c: usize, k: usize) -> Result<Tensor> {
    let factor = k.div_ceil(2) as f64;
    let center = if k % 2 == 1 { factor - 1.0 } else { factor - 0.5 };
    let og: Vec<f64> = (0..k).map(|i| 1.0 - (i as f64 - center).abs() / factor).collect();
    let mut w = vec![0f32; c * c * k * k];
    for i in 0..c {
        for y in 0..k {
            for x in 0..k {
                w[((i * c + i) * k + y) * k + x] = (og[y] * og[x]) as f32;
            }
        }
    }
    Tensor::from_vec(w, (c, c, k, k), &candle_core::Device::Cpu)
}

/// Identity initialisation of a `k x k` convolution `c -> c` (Yu & Koltun's context module): the centre tap
/// of each channel's own filter is 1, all else 0, so the layer starts by passing its input through.
pub fn identity_kernel(c: usize, k: usize) -> Result<Tensor> {
    let mut w = vec![0f32; c * c * k * k];
    for i in 0..c {
        w[((i * c + i) * k + k / 2) * k + k / 2] = 1.0;
    }
    Tensor::from_vec(w, (c, c, k, k), &candle_core::Device::Cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_divide_channels() {
        assert_eq!(gn_groups(64, 32), 32);
        assert_eq!(gn_groups(16, 32), 16);
        assert_eq!(gn_groups(24, 32), 24);
        assert_eq!(gn_groups(48, 32), 24);
        assert_eq!(gn_groups(7, 32), 7);
        assert_eq!(gn_groups(1, 32), 1);
    }

    #[test]
    fn bilinear_kernel_is_fcns() {
        // FCN's upsample_filt(4): [0.25, 0.75, 0.75, 0.25] outer itself.
        let k = bilinear_kernel(2, 4).unwrap();
        let v: Vec<f32> = k.narrow(0, 0, 1).unwrap().narrow(1, 0, 1).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let og = [0.25f32, 0.75, 0.75, 0.25];
        for y in 0..4 {
            for x in 0..4 {
                assert_eq!(v[y * 4 + x], og[y] * og[x]);
            }
        }
        let off: f32 = k.narrow(0, 0, 1).unwrap().narrow(1, 1, 1).unwrap().abs().unwrap().sum_all().unwrap().to_scalar().unwrap();
        assert_eq!(off, 0.0);
    }

    #[test]
    fn transposed_conv_with_bilinear_kernel_upsamples_a_constant() {
        let x = Tensor::full(2f32, (1, 3, 5, 5), &candle_core::Device::Cpu).unwrap();
        let y = x.conv_transpose2d(&bilinear_kernel(3, 4).unwrap(), 1, 0, 2, 1).unwrap();
        assert_eq!(y.dims(), &[1, 3, 10, 10]);
        // Away from the border the x2 bilinear of a constant is the constant.
        let inner: Vec<f32> = y.narrow(2, 1, 8).unwrap().narrow(3, 1, 8).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert!(inner.iter().all(|v| (v - 2.0).abs() < 1e-6));
    }
}
