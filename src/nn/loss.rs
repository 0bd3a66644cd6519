//! Class-weighted pixel cross-entropy.
//!
//! The study weights each class by `1 - share` of the training labels (SPEC, Training). The definition is
//! PyTorch's `F.cross_entropy(logits, target, weight=w, ignore_index=i)` with mean reduction:
//! `Σ w[yᵢ]·(−log softmax(zᵢ)[yᵢ]) / Σ w[yᵢ]` over pixels whose label is not ignored, so a loss curve
//! from either framework means the same thing.

use candle_core::{DType, Result, Tensor};

/// `logits`: `(N, K, H, W)` float; `target`: `(N, H, W)` u32 class ids. Pixels whose id is `>= K`
/// (the ignore label, e.g. 255) contribute nothing. `weights`: `K` per-class weights, `None` = all 1.
pub fn weighted_cross_entropy(logits: &Tensor, target: &Tensor, weights: Option<&[f32]>) -> Result<Tensor> {
    let (n, k, h, w) = logits.dims4()?;
    let (tn, th, tw) = target.dims3()?;
    if (tn, th, tw) != (n, h, w) {
        candle_core::bail!("cross-entropy: target is {tn}x{th}x{tw} but the logits are {n}x{k}x{h}x{w}");
    }
    if let Some(ws) = weights {
        if ws.len() != k {
            candle_core::bail!("cross-entropy: {} class weights for {k} classes", ws.len());
        }
    }
    let dev = logits.device();
    let dtype = logits.dtype();
    let logp = candle_nn::ops::log_softmax(logits, 1)?;
    let ids = Tensor::arange(0u32, k as u32, dev)?.reshape((1, k, 1, 1))?;
    let onehot = target.to_dtype(DType::U32)?.unsqueeze(1)?.broadcast_eq(&ids)?.to_dtype(dtype)?;
    let wv: Vec<f32> = weights.map(|w| w.to_vec()).unwrap_or_else(|| vec![1.0; k]);
    let wt = Tensor::from_vec(wv, (1, k, 1, 1), dev)?.to_dtype(dtype)?;
    let wm = onehot.broadcast_mul(&wt)?;
    let num = (logp * &wm)?.sum_all()?;
    let den = wm.sum_all()?;
    num.neg()?.div(&den)
}

/// Per-class weights `1 - share` from pixel counts, the study's rule.
pub fn inverse_share_weights(counts: &[u64]) -> Vec<f32> {
    let total: u64 = counts.iter().sum();
    counts
        .iter()
        .map(|&c| if total == 0 { 1.0 } else { 1.0 - c as f32 / total as f32 })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_the_definition_by_hand() {
        // Two pixels, two classes. logits (0, 0) -> log p = -ln 2 for both; (2, 0) -> p1 = e^0/(e^2+1).
        let z = Tensor::new(&[[[[0f64, 2.0]], [[0.0, 0.0]]]], &Device::Cpu).unwrap(); // (1,2,1,2)
        let t = Tensor::new(&[[[1u32, 1]]], &Device::Cpu).unwrap();
        let l = weighted_cross_entropy(&z, &t, Some(&[0.25, 0.75])).unwrap().to_scalar::<f64>().unwrap();
        let want = (2f64.ln() + (2f64.exp() + 1.0).ln()) / 2.0;
        assert!((l - want).abs() < 1e-12, "{l} vs {want}");
        // Pixel 0 labelled 0 (weight 0.25), pixel 1 labelled 1 (weight 0.75): weighted mean (weights
        // exactly representable in f32, as the loss takes f32 weights).
        let t = Tensor::new(&[[[0u32, 1]]], &Device::Cpu).unwrap();
        let l = weighted_cross_entropy(&z, &t, Some(&[0.25, 0.75])).unwrap().to_scalar::<f64>().unwrap();
        let want = 0.25 * 2f64.ln() + 0.75 * (2f64.exp() + 1.0).ln();
        assert!((l - want).abs() < 1e-12, "{l} vs {want}");
        // The ignore label drops a pixel.
        let t = Tensor::new(&[[[255u32, 1]]], &Device::Cpu).unwrap();
        let l = weighted_cross_entropy(&z, &t, Some(&[0.25, 0.75])).unwrap().to_scalar::<f64>().unwrap();
        assert!((l - (2f64.exp() + 1.0).ln()).abs() < 1e-12);
    }

    #[test]
    fn weights_are_one_minus_share() {
        assert_eq!(inverse_share_weights(&[75, 25]), vec![0.25, 0.75]);
        assert_eq!(inverse_share_weights(&[0, 0]), vec![1.0, 1.0]);
    }
}
