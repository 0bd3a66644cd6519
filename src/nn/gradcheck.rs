//! Finite-difference gradient checks.
//!
//! candle's backward passes for transposed and dilated convolutions, pooling and the ops our own layers
//! are built from are checked here against central differences in f64 on small shapes: a wrong gradient
//! trains silently badly, which no forward-only test would show.

use candle_core::{Result, Tensor, Var};

/// Largest disagreement found between analytic and numeric gradients.
#[derive(Debug, Clone, Copy)]
pub struct GradReport {
    /// max |analytic − numeric| / max(1, |numeric|) over the checked entries.
    pub max_rel_err: f64,
    /// Entries compared.
    pub checked: usize,
}

/// Checks `f`'s gradients with respect to every tensor in `inputs` (f64). The scalar under test is
/// `Σ f(inputs) ⊙ r` for a fixed pseudo-random `r`, so every output entry matters. At most
/// `max_per_input` entries of each input are perturbed (evenly spread), by `±eps`.
pub fn check<F>(f: F, inputs: &[Tensor], eps: f64, max_per_input: usize) -> Result<GradReport>
where
    F: Fn(&[Tensor]) -> Result<Tensor>,
{
    let vars: Vec<Var> = inputs.iter().map(Var::from_tensor).collect::<Result<_>>()?;
    let var_ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let y = f(&var_ts)?;
    let r = pseudo_random(y.elem_count(), 7)?.reshape(y.shape())?.to_device(y.device())?;
    let loss = (&y * &r)?.sum_all()?;
    let grads = loss.backward()?;
    let scalar = |xs: &[Tensor]| -> Result<f64> { (f(xs)? * &r)?.sum_all()?.to_scalar::<f64>() };

    let mut report = GradReport { max_rel_err: 0.0, checked: 0 };
    for (k, v) in vars.iter().enumerate() {
        let analytic: Vec<f64> = match grads.get(v.as_tensor()) {
            Some(g) => g.flatten_all()?.to_vec1()?,
            None => vec![0.0; v.elem_count()],
        };
        let base: Vec<f64> = inputs[k].flatten_all()?.to_vec1()?;
        let n = base.len();
        let step = (n / max_per_input.max(1)).max(1);
        for idx in (0..n).step_by(step) {
            let eval = |delta: f64| -> Result<f64> {
                let mut p = base.clone();
                p[idx] += delta;
                let mut xs: Vec<Tensor> = inputs.to_vec();
                xs[k] = Tensor::from_vec(p, inputs[k].shape(), inputs[k].device())?;
                scalar(&xs)
            };
            let numeric = (eval(eps)? - eval(-eps)?) / (2.0 * eps);
            let err = (analytic[idx] - numeric).abs() / numeric.abs().max(1.0);
            report.max_rel_err = report.max_rel_err.max(err);
            report.checked += 1;
        }
    }
    Ok(report)
}

/// Deterministic values in [-1, 1) (a fixed LCG: the check must not depend on a seed elsewhere).
pub fn pseudo_random(n: usize, seed: u64) -> Result<Tensor> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let v: Vec<f64> = (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        })
        .collect();
    Tensor::from_vec(v, n, &candle_core::Device::Cpu)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::{conv::conv2d, max_pool2d_padded, max_pool2x2, resize_bilinear, weighted_cross_entropy};
    use candle_core::{Device, Module};

    const TOL: f64 = 1e-6;

    fn rnd(shape: &[usize], seed: u64) -> Tensor {
        let n = shape.iter().product();
        pseudo_random(n, seed).unwrap().reshape(shape).unwrap()
    }

    fn assert_ok(name: &str, r: GradReport) {
        assert!(r.checked > 0, "{name}: nothing checked");
        assert!(r.max_rel_err < TOL, "{name}: gradient error {:.3e} over {} entries", r.max_rel_err, r.checked);
    }

    #[test]
    fn conv2d_with_stride_padding_and_dilation() {
        for (stride, padding, dilation) in [(1, 1, 1), (2, 1, 1), (1, 2, 2), (1, 4, 4), (2, 3, 2)] {
            let x = rnd(&[2, 3, 9, 8], 1);
            let w = rnd(&[4, 3, 3, 3], 2);
            let r = check(|t| conv2d(&t[0], &t[1], padding, stride, dilation), &[x, w], 1e-6, 60).unwrap();
            assert_ok(&format!("conv2d s{stride} p{padding} d{dilation}"), r);
        }
        // 7x7 with dilation 4 (Dilation10's fc6) and a 1x1.
        let x = rnd(&[1, 2, 30, 29], 3);
        let w = rnd(&[3, 2, 7, 7], 4);
        assert_ok("conv2d 7x7 d4", check(|t| t[0].conv2d(&t[1], 12, 1, 4, 1), &[x, w], 1e-6, 60).unwrap());
        let x = rnd(&[2, 5, 4, 4], 5);
        let w = rnd(&[3, 5, 1, 1], 6);
        assert_ok("conv2d 1x1", check(|t| t[0].conv2d(&t[1], 0, 1, 1, 1), &[x, w], 1e-6, 60).unwrap());
    }

    #[test]
    fn conv_transpose2d_k4_s2_p1_and_k2_s2() {
        for (k, padding, h) in [(4, 1, 5), (2, 0, 4), (2, 0, 5)] {
            let x = rnd(&[2, 3, h, h + 1], 11);
            let w = rnd(&[3, 2, k, k], 12);
            let r = check(|t| t[0].conv_transpose2d(&t[1], padding, 0, 2, 1), &[x, w], 1e-6, 60).unwrap();
            assert_ok(&format!("conv_transpose2d k{k} p{padding}"), r);
        }
    }

    #[test]
    fn max_pools() {
        let x = rnd(&[2, 2, 8, 6], 21);
        assert_ok("max_pool 2/2", check(|t| max_pool2x2(&t[0]), std::slice::from_ref(&x), 1e-6, 200).unwrap());
        let x = rnd(&[1, 2, 7, 5], 23);
        assert_ok("max_pool 2/2 odd", check(|t| max_pool2x2(&t[0]), &[x], 1e-6, 200).unwrap());
        let x = rnd(&[2, 2, 7, 9], 22);
        assert_ok("max_pool 3/2 pad 1", check(|t| max_pool2d_padded(&t[0], 3, 2, 1), &[x], 1e-6, 200).unwrap());
    }

    /// A canary: candle 0.11's own max-pool backward passes 1/4 of the gradient. When a candle upgrade
    /// fixes it this test fails; then `max_pool2x2` may go back to candle's kernel.
    #[test]
    fn candles_max_pool_backward_is_still_wrong() {
        let x = rnd(&[1, 1, 4, 4], 24);
        let r = check(|t| t[0].max_pool2d(2), &[x], 1e-6, 16).unwrap();
        assert!(r.max_rel_err > 0.5, "candle's max_pool2d backward is now right ({:.1e}): use it again", r.max_rel_err);
    }

    /// The other canary: candle's strided conv backward fails on mixed parities (see `nn::conv`).
    #[test]
    fn candles_strided_conv_backward_still_fails_on_mixed_parity() {
        let x = rnd(&[1, 1, 9, 8], 25);
        let w = rnd(&[1, 1, 3, 3], 26);
        assert!(check(|t| t[0].conv2d(&t[1], 1, 2, 1, 1), &[x, w], 1e-6, 10).is_err(), "candle fixed strided conv backward: nn::conv may go");
    }

    #[test]
    fn bilinear_resize_up_and_down() {
        for (h, w, oh, ow) in [(3, 4, 24, 32), (8, 8, 16, 16), (9, 7, 4, 5), (2, 2, 2, 9)] {
            let x = rnd(&[2, 3, h, w], 31);
            let r = check(|t| resize_bilinear(&t[0], oh, ow), &[x], 1e-6, 200).unwrap();
            assert_ok(&format!("bilinear {h}x{w}->{oh}x{ow}"), r);
        }
    }

    #[test]
    fn group_norm() {
        let x = rnd(&[2, 6, 5, 4], 41);
        let g = rnd(&[6], 42);
        let b = rnd(&[6], 43);
        let r = check(
            |t| candle_nn::GroupNorm::new(t[1].clone(), t[2].clone(), 6, 3, 1e-5)?.forward(&t[0]),
            &[x, g, b],
            1e-6,
            100,
        )
        .unwrap();
        assert_ok("group_norm", r);
    }

    #[test]
    fn weighted_cross_entropy_gradient() {
        let z = rnd(&[2, 3, 4, 5], 51);
        let t: Vec<u32> = (0..40).map(|i| [0, 1, 2, 255][i % 4]).collect();
        let t = Tensor::from_vec(t, (2, 4, 5), &Device::Cpu).unwrap();
        let r = check(
            |x| weighted_cross_entropy(&x[0], &t, Some(&[0.2, 0.5, 0.9])),
            &[z],
            1e-6,
            120,
        )
        .unwrap();
        assert_ok("weighted cross-entropy", r);
    }
}
