//! SGD with momentum and L2 weight decay, PyTorch's update rule.
//!
//! candle-nn's `SGD` has no momentum; the study trains with momentum 0.9 and L2 0.005. The update is
//! `torch.optim.SGD(dampening=0, nesterov=False)`'s: `g ← ∇ + λ·p; v ← μ·v + g (v = g on the first step);
//! p ← p − lr·v`, so a learning rate tuned in PyTorch means the same here.

use crate::nn::kernels::optim::{Axpy, MomentumUpdate};
use candle_core::{backprop::GradStore, Result, Tensor, Var};

/// Optimiser state: one momentum buffer per trainable variable.
pub struct SgdMomentum {
    vars: Vec<(Var, Option<Tensor>)>,
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
}

impl SgdMomentum {
    /// `vars` are the trainable variables (a frozen prefix is simply not passed).
    pub fn new(vars: Vec<Var>, lr: f64, momentum: f64, weight_decay: f64) -> Self {
        SgdMomentum { vars: vars.into_iter().map(|v| (v, None)).collect(), lr, momentum, weight_decay }
    }

    /// Number of scalars this optimiser updates.
    pub fn num_params(&self) -> usize {
        self.vars.iter().map(|(v, _)| v.elem_count()).sum()
    }

    /// One update from the gradients of a `loss.backward()`; variables without a gradient are left alone.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        for (var, buf) in self.vars.iter_mut() {
            let Some(g) = grads.get(var.as_tensor()) else { continue };
            if crate::nn::kernels::use_fast(var.device()) && var.as_tensor().is_contiguous() {
                // In place: v ← μ·v + g + λ·p, then p ← p − lr·v (two passes, no allocation).
                let v = match buf.take() {
                    Some(b) if b.is_contiguous() && self.momentum != 0.0 => b,
                    _ => var.as_tensor().zeros_like()?,
                };
                v.inplace_op3(g, var.as_tensor(), &MomentumUpdate { momentum: self.momentum, weight_decay: self.weight_decay })?;
                var.as_tensor().inplace_op2(&v, &Axpy { alpha: -self.lr })?;
                *buf = Some(v);
                continue;
            }
            // Detached: a momentum buffer computed from the variable itself would keep every earlier
            // step's buffer alive through its op graph (memory grew by the model size per step).
            let g = if self.weight_decay != 0.0 {
                (g + (var.as_tensor().detach() * self.weight_decay)?)?
            } else {
                g.clone()
            };
            let v = match buf.take() {
                Some(b) if self.momentum != 0.0 => ((b * self.momentum)? + g)?,
                _ => g,
            };
            var.set(&(var.as_tensor().detach() - (&v * self.lr)?)?)?;
            *buf = Some(v.detach());
        }
        Ok(())
    }

    /// The momentum buffers, in the order of the variables given to [`new`](Self::new) (`None` before a
    /// variable's first update): with the variables, what a resumed training needs.
    pub fn buffers(&self) -> Vec<Option<Tensor>> {
        self.vars.iter().map(|(_, b)| b.clone()).collect()
    }

    /// Restores [`buffers`](Self::buffers) (same order); missing entries stay empty.
    pub fn set_buffers(&mut self, buffers: Vec<Option<Tensor>>) {
        for ((_, b), v) in self.vars.iter_mut().zip(buffers) {
            *b = v;
        }
    }

    /// `loss.backward()` then [`step`](Self::step).
    pub fn backward_step(&mut self, loss: &Tensor) -> Result<()> {
        let grads = loss.backward()?;
        self.step(&grads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn follows_pytorch_sgd_momentum() {
        follows_pytorch(); // in place, on our kernels
        crate::nn::kernels::with_candle_ops(follows_pytorch); // candle's ops
    }

    fn follows_pytorch() {
        // Minimise 0.5·p² from p = 1 with lr 0.1, μ 0.9, λ 0.01. By hand (PyTorch's rule):
        let (lr, mu, wd) = (0.1, 0.9, 0.01);
        let p = Var::new(&[1f64], &Device::Cpu).unwrap();
        let mut opt = SgdMomentum::new(vec![p.clone()], lr, mu, wd);
        let (mut pv, mut v) = (1f64, 0f64);
        for step in 0..5 {
            let loss = (p.as_tensor().sqr().unwrap() * 0.5).unwrap().sum_all().unwrap();
            opt.backward_step(&loss).unwrap();
            let g = pv + wd * pv;
            v = if step == 0 { g } else { mu * v + g };
            pv -= lr * v;
            let got = p.as_tensor().to_vec1::<f64>().unwrap()[0];
            assert!((got - pv).abs() < 1e-12, "step {step}: {got} vs {pv}");
        }
    }
}
