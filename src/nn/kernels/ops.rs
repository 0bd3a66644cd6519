//! The kernels as candle custom ops. Forward ops carry a `bwd` built from ops that have none (the
//! backward of a backward is never taken), so candle's autograd drives ours like its own.

use super::conv::{self, Geom};
use super::elementwise;
use super::{contiguous, timing, Elem};
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

fn dims4(l: &Layout, what: &str) -> Result<[usize; 4]> {
    match l.dims() {
        &[a, b, c, d] => Ok([a, b, c, d]),
        d => bail!("{what}: expected a 4-D tensor, got shape {d:?}"),
    }
}

/// The output gradient of a convolution must have the convolution's output shape.
fn check_output_grad(ldy: &Layout, g: &Geom) -> Result<()> {
    let dyd = dims4(ldy, "conv2d output gradient")?;
    if dyd != [g.n, g.cout, g.oh, g.ow] {
        bail!("conv2d backward: output gradient {dyd:?} does not match {:?}", [g.n, g.cout, g.oh, g.ow]);
    }
    Ok(())
}

fn geom_err(e: String) -> candle_core::Error {
    candle_core::Error::Msg(e)
}

/// Runs `$body` with `T` = f32 or f64 after checking that every storage has that dtype.
macro_rules! by_dtype {
    ($name:expr, [$($s:expr),+], |$t:ident| $body:expr) => {{
        if true $(&& matches!($s, CpuStorage::F32(_)))+ {
            type $t = f32;
            $body
        } else if true $(&& matches!($s, CpuStorage::F64(_)))+ {
            type $t = f64;
            $body
        } else {
            bail!("{}: our CPU kernels take f32 or f64 tensors of one dtype", $name)
        }
    }};
}

/// Convolution forward with optional bias and fused ReLU: `(x, w)` or `(x, w, b)`.
#[derive(Debug, Clone, Copy)]
pub struct Conv {
    pub stride: usize,
    pub pad: usize,
    pub dil: usize,
    pub relu: bool,
}

impl Conv {
    fn geom(&self, lx: &Layout, lw: &Layout) -> Result<Geom> {
        Geom::new(dims4(lx, "conv2d input")?, dims4(lw, "conv2d kernel")?, self.stride, self.pad, self.dil).map_err(geom_err)
    }
    fn run<T: Elem>(&self, sx: &CpuStorage, lx: &Layout, sw: &CpuStorage, lw: &Layout, b: Option<(&CpuStorage, &Layout)>) -> Result<(CpuStorage, Shape)> {
        let g = self.geom(lx, lw)?;
        let x = contiguous::<T>(sx, lx)?;
        let w = contiguous::<T>(sw, lw)?;
        let b = match b {
            Some((s, l)) => Some(contiguous::<T>(s, l)?),
            None => None,
        };
        let _t = timing::span_with(timing::Kind::ConvFwd, 2.0 * g.macs(), || format!("{g:?}"));
        let y = conv::forward(&x, &w, b.as_deref(), self.relu, &g);
        Ok((T::storage(y), Shape::from((g.n, g.cout, g.oh, g.ow))))
    }

    /// The gradient before the fused ReLU: zero where the output was clamped.
    fn pre_activation_grad(&self, res: &Tensor, grad: &Tensor) -> Result<Tensor> {
        if self.relu {
            res.apply_op2_no_bwd(grad, &elementwise::ReluBwd)
        } else {
            Ok(grad.clone())
        }
    }

    fn grads(&self, x: &Tensor, w: &Tensor, res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Tensor)> {
        let g = self.pre_activation_grad(res, grad)?;
        let dx = if x.track_op() { Some(g.apply_op2_no_bwd(w, &ConvData { stride: self.stride, pad: self.pad, dil: self.dil, x: x.dims4()?.into() })?) } else { None };
        let dw = if w.track_op() { Some(x.apply_op2_no_bwd(&g, &ConvWeights { stride: self.stride, pad: self.pad, dil: self.dil, w: w.dims4()?.into() })?) } else { None };
        Ok((dx, dw, g))
    }
}

impl CustomOp2 for Conv {
    fn name(&self) -> &'static str {
        "mammoflow-conv2d"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        by_dtype!(<Self as CustomOp2>::name(self), [s1, s2], |T| self.run::<T>(s1, l1, s2, l2, None))
    }
    fn bwd(&self, x: &Tensor, w: &Tensor, res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = self.grads(x, w, res, grad)?;
        Ok((dx, dw))
    }
}

impl CustomOp3 for Conv {
    fn name(&self) -> &'static str {
        "mammoflow-conv2d-bias"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        by_dtype!(<Self as CustomOp3>::name(self), [s1, s2, s3], |T| self.run::<T>(s1, l1, s2, l2, Some((s3, l3))))
    }
    fn bwd(&self, x: &Tensor, w: &Tensor, b: &Tensor, res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, g) = self.grads(x, w, res, grad)?;
        let db = if b.track_op() { Some(g.apply_op1_no_bwd(&BiasGrad)?) } else { None };
        Ok((dx, dw, db))
    }
}

/// `(dy, w) -> dx` of a convolution whose input had shape `x` (the transposed convolution's forward).
#[derive(Debug, Clone, Copy)]
pub struct ConvData {
    pub stride: usize,
    pub pad: usize,
    pub dil: usize,
    pub x: [usize; 4],
}

impl ConvData {
    fn run<T: Elem>(&self, sdy: &CpuStorage, ldy: &Layout, sw: &CpuStorage, lw: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = Geom::new(self.x, dims4(lw, "conv2d kernel")?, self.stride, self.pad, self.dil).map_err(geom_err)?;
        check_output_grad(ldy, &g)?;
        let dy = contiguous::<T>(sdy, ldy)?;
        let w = contiguous::<T>(sw, lw)?;
        let _t = timing::span_with(timing::Kind::ConvBwdData, 2.0 * g.macs(), || format!("{g:?}"));
        let dx = conv::backward_data(&dy, &w, &g);
        Ok((T::storage(dx), Shape::from(self.x.to_vec())))
    }
}

impl CustomOp2 for ConvData {
    fn name(&self) -> &'static str {
        "mammoflow-conv2d-bwd-data"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        by_dtype!(<Self as CustomOp2>::name(self), [s1, s2], |T| self.run::<T>(s1, l1, s2, l2))
    }
}

/// `(x, dy) -> dw` of a convolution with kernel shape `w`.
#[derive(Debug, Clone, Copy)]
pub struct ConvWeights {
    pub stride: usize,
    pub pad: usize,
    pub dil: usize,
    pub w: [usize; 4],
}

impl ConvWeights {
    fn run<T: Elem>(&self, sx: &CpuStorage, lx: &Layout, sdy: &CpuStorage, ldy: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = Geom::new(dims4(lx, "conv2d input")?, self.w, self.stride, self.pad, self.dil).map_err(geom_err)?;
        check_output_grad(ldy, &g)?;
        let x = contiguous::<T>(sx, lx)?;
        let dy = contiguous::<T>(sdy, ldy)?;
        let _t = timing::span_with(timing::Kind::ConvBwdWeights, 2.0 * g.macs(), || format!("{g:?}"));
        let dw = conv::backward_weights(&x, &dy, &g);
        Ok((T::storage(dw), Shape::from(self.w.to_vec())))
    }
}

impl CustomOp2 for ConvWeights {
    fn name(&self) -> &'static str {
        "mammoflow-conv2d-bwd-weights"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        by_dtype!(<Self as CustomOp2>::name(self), [s1, s2], |T| self.run::<T>(s1, l1, s2, l2))
    }
}

/// `dy (n, c, h, w) -> db (c)`: the sum over images and pixels.
#[derive(Debug, Clone, Copy)]
pub struct BiasGrad;

impl CustomOp1 for BiasGrad {
    fn name(&self) -> &'static str {
        "mammoflow-bias-grad"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let [n, c, h, w] = dims4(l, "bias gradient")?;
        by_dtype!(self.name(), [s], |T| {
            let dy = contiguous::<T>(s, l)?;
            let _t = timing::span(timing::Kind::Elementwise, 0.0);
            Ok((T::storage(conv::bias_grad(&dy, n, c, h * w)), Shape::from(c)))
        })
    }
}

/// Transposed convolution `(u, w)` or `(u, w, b)` with weights `(cin, cout, kh, kw)` (PyTorch's layout).
#[derive(Debug, Clone, Copy)]
pub struct ConvTranspose {
    pub stride: usize,
    pub pad: usize,
    pub out_pad: usize,
    pub dil: usize,
}

impl ConvTranspose {
    fn geom(&self, lu: &Layout, lw: &Layout) -> Result<Geom> {
        Geom::transposed(dims4(lu, "conv_transpose2d input")?, dims4(lw, "conv_transpose2d kernel")?, self.stride, self.pad, self.out_pad, self.dil).map_err(geom_err)
    }
    fn run<T: Elem>(&self, su: &CpuStorage, lu: &Layout, sw: &CpuStorage, lw: &Layout, b: Option<(&CpuStorage, &Layout)>) -> Result<(CpuStorage, Shape)> {
        let g = self.geom(lu, lw)?;
        let u = contiguous::<T>(su, lu)?;
        let w = contiguous::<T>(sw, lw)?;
        let _t = timing::span(timing::Kind::ConvTranspose, 2.0 * g.macs());
        let mut z = conv::backward_data(&u, &w, &g);
        if let Some((s, l)) = b {
            let b = contiguous::<T>(s, l)?;
            elementwise::add_channel_bias(&mut z, &b, g.h * g.w);
        }
        Ok((T::storage(z), Shape::from((g.n, g.cin, g.h, g.w))))
    }
    fn grads(&self, u: &Tensor, w: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // z = convᵀ(u, w) is the backward-data of the convolution z -> u: its input gradient is that
        // convolution's forward, its weight gradient that convolution's backward-weights with dz as input.
        let (stride, pad, dil) = (self.stride, self.pad, self.dil);
        let g = Geom::transposed(u.dims4()?.into(), w.dims4()?.into(), stride, pad, self.out_pad, dil).map_err(geom_err)?;
        // The outer span takes the time of both inner ops (they are this layer's backward).
        let _t = timing::span(timing::Kind::ConvTranspose, 4.0 * g.macs());
        let du = if u.track_op() { Some(grad.apply_op2_no_bwd(w, &Conv { stride, pad, dil, relu: false })?) } else { None };
        let dw = if w.track_op() { Some(grad.apply_op2_no_bwd(u, &ConvWeights { stride, pad, dil, w: w.dims4()?.into() })?) } else { None };
        Ok((du, dw))
    }
}

impl CustomOp2 for ConvTranspose {
    fn name(&self) -> &'static str {
        "mammoflow-conv-transpose2d"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        by_dtype!(<Self as CustomOp2>::name(self), [s1, s2], |T| self.run::<T>(s1, l1, s2, l2, None))
    }
    fn bwd(&self, u: &Tensor, w: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        self.grads(u, w, grad)
    }
}

impl CustomOp3 for ConvTranspose {
    fn name(&self) -> &'static str {
        "mammoflow-conv-transpose2d-bias"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        by_dtype!(<Self as CustomOp3>::name(self), [s1, s2, s3], |T| self.run::<T>(s1, l1, s2, l2, Some((s3, l3))))
    }
    fn bwd(&self, u: &Tensor, w: &Tensor, b: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (du, dw) = self.grads(u, w, grad)?;
        let db = if b.track_op() { Some(grad.apply_op1_no_bwd(&BiasGrad)?) } else { None };
        Ok((du, dw, db))
    }
}

/// `conv2d(x, w) [+ b] [-> ReLU]` on our kernels (CPU tensors, f32 or f64).
pub fn conv2d(x: &Tensor, w: &Tensor, b: Option<&Tensor>, stride: usize, pad: usize, dil: usize, relu: bool) -> Result<Tensor> {
    let op = Conv { stride, pad, dil, relu };
    match b {
        Some(b) => x.apply_op3(w, b, op),
        None => x.apply_op2(w, op),
    }
}

/// `conv_transpose2d(x, w) [+ b]` on our kernels, weights `(cin, cout, kh, kw)`.
pub fn conv_transpose2d(x: &Tensor, w: &Tensor, b: Option<&Tensor>, stride: usize, pad: usize, out_pad: usize, dil: usize) -> Result<Tensor> {
    let op = ConvTranspose { stride, pad, out_pad, dil };
    match b {
        Some(b) => x.apply_op3(w, b, op),
        None => x.apply_op2(w, op),
    }
}
