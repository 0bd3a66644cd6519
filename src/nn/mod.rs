//! Building blocks the networks need that candle 0.11 lacks or gets wrong for training.
//!
//! - [`resize`]: a differentiable bilinear resize (candle's `upsample_bilinear2d` has no backward);
//! - [`pool`]: max pooling with a correct gradient (candle's backward scales it by 1/k²), with padding
//!   and overlapping windows for ResNet's 3x3 / 2 stem;
//! - [`conv`]: a 2-D convolution whose backward is right for strided convolutions of maps whose height
//!   and width have different parities (candle's derives the output padding from the height alone);
//! - [`norm`]: GroupNorm with an optional fused ReLU;
//! - [`loss`]: class-weighted pixel cross-entropy with an ignore label, PyTorch's definition;
//! - [`sgd`]: SGD with momentum and L2 weight decay, PyTorch's update rule (candle-nn's SGD has no momentum);
//! - [`device`]: `--device cpu|cuda:N|auto`;
//! - [`kernels`]: our CPU kernels behind these layers (convolutions, pooling, ReLU), candle custom ops;
//! - [`gradcheck`]: finite-difference checks of every layer type the networks use.

pub mod conv;
pub mod device;
pub mod gradcheck;
pub mod kernels;
pub mod loss;
pub mod norm;
pub mod pool;
pub mod resize;
pub mod sgd;

pub use device::parse_device;
pub use loss::weighted_cross_entropy;
pub use norm::{relu, GroupNorm};
pub use conv::{Conv2d, ConvTranspose2d};
pub use pool::{max_pool2d_padded, max_pool2x2};
pub use resize::resize_bilinear;
pub use sgd::SgdMomentum;
