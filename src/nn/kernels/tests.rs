//! Our kernels against candle's own ops (forward and every gradient) and against finite differences,
//! on odd shapes, non-contiguous inputs, strides, dilations and kernel sizes the networks use.

use super::ops::{conv2d, conv_transpose2d};
use super::pool::MaxPool;
use super::with_candle_ops;
use crate::nn::gradcheck::{check, pseudo_random};
use candle_core::{Device, Result, Tensor, Var};

fn rnd(shape: &[usize], seed: u64) -> Tensor {
    let n = shape.iter().product();
    pseudo_random(n, seed).unwrap().reshape(shape).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims());
    let a: Vec<f64> = a.flatten_all().unwrap().to_vec1().unwrap();
    let b: Vec<f64> = b.flatten_all().unwrap().to_vec1().unwrap();
    a.iter().zip(&b).map(|(p, q)| (p - q).abs()).fold(0.0, f64::max)
}

/// Candle's own ops for the same layer (the fixed strided wrapper of `nn::conv`, bias, ReLU).
fn candle_conv(x: &Tensor, w: &Tensor, b: Option<&Tensor>, stride: usize, pad: usize, dil: usize, relu: bool) -> Result<Tensor> {
    let mut y = crate::nn::conv::conv2d(x, w, pad, stride, dil)?;
    if let Some(b) = b {
        y = y.broadcast_add(&b.reshape((1, b.elem_count(), 1, 1))?)?;
    }
    if relu {
        y = y.relu()?;
    }
    Ok(y)
}

/// Forward and the gradients of every input agree between `ours` and `reference` (f64, 1e-10).
fn same_forward_and_grads(inputs: &[Tensor], ours: impl Fn(&[Tensor]) -> Result<Tensor>, reference: impl Fn(&[Tensor]) -> Result<Tensor>, what: &str) {
    let run = |f: &dyn Fn(&[Tensor]) -> Result<Tensor>| -> (Tensor, Vec<Tensor>) {
        let vars: Vec<Var> = inputs.iter().map(|t| Var::from_tensor(t).unwrap()).collect();
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let y = f(&ts).unwrap();
        let r = pseudo_random(y.elem_count(), 11).unwrap().reshape(y.shape()).unwrap();
        let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let g = vars.iter().map(|v| grads.get(v.as_tensor()).cloned().unwrap_or_else(|| v.as_tensor().zeros_like().unwrap())).collect();
        (y, g)
    };
    let (y1, g1) = run(&ours);
    let (y2, g2) = with_candle_ops(|| run(&reference));
    let d = max_abs_diff(&y1, &y2);
    assert!(d < 1e-10, "{what}: forward differs by {d}");
    for (i, (a, b)) in g1.iter().zip(&g2).enumerate() {
        let d = max_abs_diff(a, b);
        assert!(d < 1e-10, "{what}: gradient of input {i} differs by {d}");
    }
}

#[test]
fn convolution_matches_candle_and_finite_differences() {
    // (x shape, cout, k, stride, pad, dilation, bias, relu)
    // (input shape, cout, kernel, stride, padding, dilation, bias, relu)
    type Case = ([usize; 4], usize, usize, usize, usize, usize, bool, bool);
    let cases: &[Case] = &[
        ([2, 3, 9, 8], 4, 3, 1, 1, 1, true, true),
        ([1, 2, 11, 7], 3, 3, 2, 1, 1, true, false),
        ([2, 4, 13, 12], 3, 3, 1, 2, 2, false, true),
        ([1, 3, 17, 19], 2, 3, 1, 4, 4, true, false),
        ([2, 5, 7, 9], 6, 1, 1, 0, 1, true, true),
        ([1, 2, 16, 15], 3, 7, 2, 3, 1, false, false),
        ([1, 3, 10, 10], 2, 7, 1, 0, 1, true, false),
        ([2, 3, 9, 10], 4, 1, 2, 0, 1, false, false),
        ([1, 2, 12, 12], 3, 3, 1, 0, 1, true, true),
        // Dilation10's context module on a 5 x 5 score map: dilations beyond the map.
        ([2, 3, 5, 5], 3, 3, 1, 2, 2, true, false),
        ([2, 3, 5, 5], 3, 3, 1, 8, 8, true, true),
        // Maps of 512 output pixels or more take the tiled route (the ones above the batched one).
        ([1, 3, 33, 34], 4, 3, 1, 1, 1, true, true),
        ([2, 2, 50, 47], 3, 3, 2, 1, 1, true, false),
        ([1, 2, 30, 31], 3, 3, 1, 2, 2, false, true),
        ([1, 3, 24, 23], 2, 1, 1, 0, 1, true, false),
        // Wide padding with dilation (a quarter of the taps or more read zeros): the grid route (fc6, ASPP).
        ([2, 2, 24, 24], 3, 7, 1, 12, 4, true, true),
        ([1, 2, 32, 32], 2, 3, 1, 24, 24, false, false),
    ];
    for (i, &(xs, cout, k, s, p, d, bias, relu)) in cases.iter().enumerate() {
        let x = rnd(&xs, 1 + i as u64);
        let w = (rnd(&[cout, xs[1], k, k], 100 + i as u64) * 0.5).unwrap();
        let mut inputs = vec![x, w];
        if bias {
            inputs.push(rnd(&[cout], 200 + i as u64));
        }
        let ours = |t: &[Tensor]| conv2d(&t[0], &t[1], t.get(2), s, p, d, relu);
        let reference = |t: &[Tensor]| candle_conv(&t[0], &t[1], t.get(2), s, p, d, relu);
        let what = format!("conv {xs:?} k{k} s{s} p{p} d{d} bias {bias} relu {relu}");
        same_forward_and_grads(&inputs, ours, reference, &what);
        let r = check(ours, &inputs, 1e-6, 40).unwrap();
        assert!(r.max_rel_err < 1e-6, "{what}: finite differences {r:?}");
    }
}

#[test]
fn convolution_reads_non_contiguous_inputs() {
    // A transposed view and a narrowed window: both must give what their contiguous copies give.
    let base = rnd(&[2, 3, 12, 10], 5);
    let w = rnd(&[4, 3, 3, 3], 6);
    for x in [base.transpose(2, 3).unwrap(), base.narrow(2, 1, 9).unwrap().narrow(3, 2, 7).unwrap(), base.narrow(1, 1, 2).unwrap()] {
        assert!(!x.is_contiguous());
        let w = w.narrow(1, 0, x.dim(1).unwrap()).unwrap();
        let a = conv2d(&x, &w, None, 1, 1, 1, false).unwrap();
        let b = conv2d(&x.contiguous().unwrap(), &w.contiguous().unwrap(), None, 1, 1, 1, false).unwrap();
        assert_eq!(max_abs_diff(&a, &b), 0.0);
        let r = check(|t| conv2d(&t[0].transpose(2, 3)?, &t[1], None, 2, 1, 1, true), &[base.transpose(2, 3).unwrap().contiguous().unwrap(), rnd(&[4, 3, 3, 3], 7)], 1e-6, 30).unwrap();
        assert!(r.max_rel_err < 1e-6, "{r:?}");
    }
}

#[test]
fn transposed_convolution_matches_candle_and_finite_differences() {
    // U-Net's 2x2 / 2 (bias) and FCN's 4x4 / 2 / pad 1 (no bias), odd input sides.
    for (i, &(xs, cout, k, s, p, bias)) in [([2, 4, 5, 7], 3, 2, 2, 0, true), ([1, 3, 6, 5], 3, 4, 2, 1, false), ([2, 2, 3, 4], 2, 3, 1, 1, true), ([1, 2, 16, 17], 2, 2, 2, 0, true), ([1, 2, 13, 12], 2, 4, 2, 1, false)].iter().enumerate() {
        let x = rnd(&xs, 30 + i as u64);
        let w = rnd(&[xs[1], cout, k, k], 40 + i as u64);
        let mut inputs = vec![x, w];
        if bias {
            inputs.push(rnd(&[cout], 50 + i as u64));
        }
        let ours = |t: &[Tensor]| conv_transpose2d(&t[0], &t[1], t.get(2), s, p, 0, 1);
        let reference = |t: &[Tensor]| {
            let y = t[0].conv_transpose2d(&t[1], p, 0, s, 1)?;
            match t.get(2) {
                Some(b) => y.broadcast_add(&b.reshape((1, b.elem_count(), 1, 1))?),
                None => Ok(y),
            }
        };
        let what = format!("conv_transpose {xs:?} k{k} s{s} p{p}");
        same_forward_and_grads(&inputs, ours, reference, &what);
        let r = check(ours, &inputs, 1e-6, 40).unwrap();
        assert!(r.max_rel_err < 1e-6, "{what}: finite differences {r:?}");
    }
}

#[test]
fn max_pool_matches_the_candle_path_and_finite_differences() {
    for (i, &(xs, k, s, p)) in [([2, 3, 8, 6], 2, 2, 0), ([1, 2, 7, 9], 2, 2, 0), ([2, 2, 9, 8], 3, 2, 1), ([1, 1, 5, 5], 3, 1, 1)].iter().enumerate() {
        // Distinct values: no ties, so the arg-max (and the gradient) is unique.
        let n: usize = xs.iter().product();
        let v: Vec<f64> = (0..n).map(|j| ((j * 7919 + i * 13) % n) as f64 / n as f64).collect();
        let x = Tensor::from_vec(v, &xs, &Device::Cpu).unwrap();
        let ours = |t: &[Tensor]| t[0].apply_op1(MaxPool::new(k, s, p));
        let reference = |t: &[Tensor]| crate::nn::max_pool2d_padded(&t[0], k, s, p);
        let what = format!("max pool {xs:?} k{k} s{s} p{p}");
        same_forward_and_grads(std::slice::from_ref(&x), ours, reference, &what);
        let r = check(ours, &[x], 1e-7, 50).unwrap();
        assert!(r.max_rel_err < 1e-6, "{what}: finite differences {r:?}");
    }
}

#[test]
fn layers_switch_between_our_kernels_and_candles() {
    let x = rnd(&[1, 2, 6, 6], 9).to_dtype(candle_core::DType::F32).unwrap();
    let vm = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&vm, candle_core::DType::F32, &Device::Cpu);
    let cfg = candle_nn::Conv2dConfig { padding: 1, stride: 1, dilation: 1, groups: 1, cudnn_fwd_algo: None };
    let conv = crate::nn::Conv2d::from(candle_nn::conv2d(2, 3, 3, cfg, vb.pp("c")).unwrap()).with_relu();
    let calls = super::timing::calls_on_this_thread;
    let c0 = calls();
    let ours = candle_core::Module::forward(&conv, &x).unwrap();
    let c1 = calls();
    let theirs = with_candle_ops(|| candle_core::Module::forward(&conv, &x).unwrap());
    assert_eq!(c1 - c0, 1, "the CPU path takes our fused op");
    assert_eq!(calls(), c1, "with_candle_ops takes candle's");
    let d = max_abs_diff(&ours.to_dtype(candle_core::DType::F64).unwrap(), &theirs.to_dtype(candle_core::DType::F64).unwrap());
    assert!(d < 1e-5, "{d}");
}

#[test]
fn group_norm_matches_candle_and_finite_differences() {
    for (i, &(xs, groups, relu)) in [([2, 6, 5, 4], 3, false), ([1, 8, 3, 7], 4, true), ([2, 4, 1, 1], 2, true)].iter().enumerate() {
        let x = rnd(&xs, 60 + i as u64);
        let g = (rnd(&[xs[1]], 70 + i as u64) + 1.0).unwrap();
        let b = rnd(&[xs[1]], 80 + i as u64);
        let ours = |t: &[Tensor]| t[0].apply_op3(&t[1], &t[2], super::norm::GroupNorm::new(groups, 1e-5, relu));
        let reference = |t: &[Tensor]| {
            let y = candle_core::Module::forward(&candle_nn::GroupNorm::new(t[1].clone(), t[2].clone(), xs[1], groups, 1e-5)?, &t[0])?;
            if relu {
                y.relu()
            } else {
                Ok(y)
            }
        };
        let what = format!("group norm {xs:?} groups {groups} relu {relu}");
        let inputs = [x, g, b];
        same_forward_and_grads(&inputs, ours, reference, &what);
        let r = check(ours, &inputs, 1e-6, 40).unwrap();
        assert!(r.max_rel_err < 1e-6, "{what}: finite differences {r:?}");
    }
}

#[test]
fn relu_matches_candle_and_finite_differences() {
    let x = rnd(&[2, 3, 5, 7], 90);
    let ours = |t: &[Tensor]| t[0].apply_op1(super::elementwise::Relu);
    let reference = |t: &[Tensor]| t[0].relu();
    same_forward_and_grads(std::slice::from_ref(&x), ours, reference, "relu");
    let r = check(ours, &[x], 1e-7, 50).unwrap();
    assert!(r.max_rel_err < 1e-6, "relu: finite differences {r:?}");
}

#[test]
fn dropout_keeps_about_1_minus_p_scales_and_passes_the_gradient_through_the_same_mask() {
    let x = Var::from_tensor(&(Tensor::ones((4, 8, 32, 32), candle_core::DType::F32, &Device::Cpu).unwrap())).unwrap();
    let y = x.as_tensor().apply_op1(super::elementwise::Dropout::new(0.5)).unwrap();
    let v: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
    let kept = v.iter().filter(|a| **a != 0.0).count() as f64 / v.len() as f64;
    assert!((kept - 0.5).abs() < 0.02, "kept {kept}");
    assert!(v.iter().all(|a| *a == 0.0 || *a == 2.0));
    let g = y.sum_all().unwrap().backward().unwrap();
    let gv: Vec<f32> = g.get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(gv, v, "d(sum y)/dx = mask / (1 - p) = y for x = 1");
}

