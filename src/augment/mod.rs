//! Tenfold augmentation: recipes (lists of ops with their parameters) applied to an image and its label
//! map. The ops themselves are in [`ops`]; a recipe is data, so a pipeline can change one replica's recipe
//! and recompute exactly that replica of every image.

pub mod ops;

use rand::Rng;
use serde::{Deserialize, Serialize};

use ops::{Plane, Sample};

/// One augmentation op and its parameters. Ranges are drawn uniformly per item (from the item's RNG).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub enum Op {
    /// Rotation about the centre by an angle in `[min_degrees, max_degrees]`; bilinear image, nearest
    /// labels; uncovered pixels take 0 and `fill_label`.
    Rotate {
        /// Smallest angle.
        min_degrees: f32,
        /// Largest angle.
        max_degrees: f32,
        /// Label of pixels rotated in from outside (255 = ignore).
        #[serde(default = "ignore_label")]
        fill_label: u8,
    },
    /// Left-right (`horizontal`) or top-bottom mirror.
    Mirror {
        /// Left-right when true.
        #[serde(default = "yes")]
        horizontal: bool,
    },
    /// Gaussian smoothing.
    Blur {
        /// Sigma in pixels.
        sigma: f32,
    },
    /// Unsharp-mask sharpening: `img + amount * (img - blur(img))`.
    Sharpen {
        /// Blur sigma.
        sigma: f32,
        /// Strength.
        amount: f32,
    },
    /// Additive Gaussian noise with sigma = `sigma_fraction` x the bit depth's maximum.
    Noise {
        /// Noise sigma as a fraction of the maximum value.
        sigma_fraction: f32,
    },
    /// Linear contrast stretch of the `[low, high]` percentiles to the full range.
    Stretch {
        /// Low percentile.
        low: f32,
        /// High percentile.
        high: f32,
    },
    /// Contrast-limited adaptive histogram equalisation.
    Clahe {
        /// Tiles across and down.
        tiles: [usize; 2],
        /// Clip limit.
        clip: f32,
    },
}

fn ignore_label() -> u8 {
    255
}
fn yes() -> bool {
    true
}

/// A named list of ops: one replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Name (in the manifest).
    pub name: String,
    /// Ops in order; empty = the original.
    #[serde(default)]
    pub ops: Vec<Op>,
}

/// The default ten recipes: the original, then each technique of the study alone, then two combinations.
pub fn default_recipes() -> Vec<Recipe> {
    let r = |name: &str, ops: Vec<Op>| Recipe { name: name.into(), ops };
    let rotate = |a: f32| Op::Rotate { min_degrees: -a, max_degrees: a, fill_label: 255 };
    vec![
        r("original", vec![]),
        r("rotate", vec![rotate(20.0)]),
        r("smooth", vec![Op::Blur { sigma: 1.5 }]),
        r("mirror", vec![Op::Mirror { horizontal: true }]),
        r("sharpen", vec![Op::Sharpen { sigma: 1.5, amount: 1.0 }]),
        r("noise", vec![Op::Noise { sigma_fraction: 0.02 }]),
        r("stretch", vec![Op::Stretch { low: 1.0, high: 99.0 }]),
        r("clahe", vec![Op::Clahe { tiles: [8, 8], clip: 2.0 }]),
        r("mirror+rotate", vec![Op::Mirror { horizontal: true }, rotate(20.0)]),
        r("rotate+clahe+noise", vec![rotate(10.0), Op::Clahe { tiles: [8, 8], clip: 2.0 }, Op::Noise { sigma_fraction: 0.01 }]),
    ]
}

impl Recipe {
    /// Applies the recipe: geometric ops move image and labels together, intensity ops touch the image only.
    pub fn apply<T: Sample>(&self, mut img: Plane<T>, mut labels: Plane<u8>, rng: &mut impl Rng) -> (Plane<T>, Plane<u8>) {
        for op in &self.ops {
            match op {
                Op::Rotate { min_degrees, max_degrees, fill_label } => {
                    let a = if max_degrees > min_degrees { rng.random_range(*min_degrees..=*max_degrees) } else { *min_degrees };
                    (img, labels) = ops::rotate(&img, &labels, a, T::from_f32_round_clamped(0.0), *fill_label);
                }
                Op::Mirror { horizontal } => (img, labels) = ops::mirror(&img, &labels, *horizontal),
                Op::Blur { sigma } => img = ops::gaussian_blur(&img, *sigma),
                Op::Sharpen { sigma, amount } => img = ops::unsharp(&img, *sigma, *amount),
                Op::Noise { sigma_fraction } => img = ops::gaussian_noise(&img, *sigma_fraction, rng),
                Op::Stretch { low, high } => img = ops::linear_stretch(&img, *low, *high),
                Op::Clahe { tiles, clip } => img = ops::clahe(&img, (tiles[0], tiles[1]), *clip),
            }
        }
        (img, labels)
    }

    /// Checks parameters; the message names the op.
    pub fn validate(&self) -> Result<(), String> {
        for op in &self.ops {
            let bad = match op {
                Op::Rotate { min_degrees, max_degrees, .. } if !(min_degrees.is_finite() && max_degrees.is_finite() && min_degrees.abs() <= 360.0 && max_degrees.abs() <= 360.0) => {
                    Some("rotate: degrees must be finite numbers within -360 .. 360")
                }
                Op::Rotate { min_degrees, max_degrees, .. } => (min_degrees > max_degrees).then_some("rotate: min_degrees > max_degrees"),
                Op::Blur { sigma } | Op::Sharpen { sigma, .. } => (!(*sigma > 0.0 && *sigma < 50.0)).then_some("sigma must be in (0, 50)"),
                Op::Noise { sigma_fraction } => (!(0.0..=1.0).contains(sigma_fraction)).then_some("noise: sigma_fraction must be in [0, 1]"),
                Op::Stretch { low, high } => (!(0.0 <= *low && low < high && *high <= 100.0)).then_some("stretch: need 0 <= low < high <= 100"),
                Op::Clahe { tiles, clip } => {
                    (!(1..=256).contains(&tiles[0]) || !(1..=256).contains(&tiles[1]) || !(clip.is_finite() && *clip > 0.0)).then_some("clahe: tiles must be 1 .. 256 and clip a finite number > 0")
                }
                Op::Mirror { .. } => None,
            };
            if let Some(m) = bad {
                return Err(format!("recipe `{}`: {m}", self.name));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn default_recipes_are_valid_and_replica_0_is_the_original() {
        let rs = default_recipes();
        assert_eq!(rs.len(), 10);
        rs.iter().for_each(|r| r.validate().unwrap());
        let img = Plane { width: 4, height: 3, data: (0..12u16).map(|v| v * 5000).collect() };
        let lab = Plane { width: 4, height: 3, data: vec![1u8; 12] };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let (i, l) = rs[0].apply(img.clone(), lab.clone(), &mut rng);
        assert_eq!((i, l), (img, lab));
    }

    #[test]
    fn nan_infinite_and_huge_op_params_are_refused() {
        let bad = [
            Op::Rotate { min_degrees: f32::NAN, max_degrees: 10.0, fill_label: 255 },
            Op::Rotate { min_degrees: -10.0, max_degrees: f32::INFINITY, fill_label: 255 },
            Op::Clahe { tiles: [8, 8], clip: f32::NAN },
            Op::Clahe { tiles: [100_000, 8], clip: 2.0 },
            Op::Blur { sigma: f32::NAN },
            Op::Noise { sigma_fraction: f32::NAN },
            Op::Stretch { low: f32::NAN, high: 99.0 },
        ];
        for op in bad {
            let r = Recipe { name: "r".into(), ops: vec![op.clone()] };
            assert!(r.validate().is_err(), "{op:?} passed");
        }
    }

    #[test]
    fn intensity_ops_never_touch_labels_and_u16_stays_u16() {
        // large enough that CLAHE's 8 x 8 tiles hold 1024 pixels each (tiny tiles have few levels anyway)
        let img = Plane { width: 256, height: 256, data: (0..256 * 256).map(|i| i as u16).collect() };
        let lab = Plane { width: 256, height: 256, data: (0..256 * 256).map(|i| (i % 5) as u8).collect() };
        for r in default_recipes().iter().filter(|r| r.ops.iter().all(|o| !matches!(o, Op::Rotate { .. } | Op::Mirror { .. }))) {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
            let (i, l) = r.apply(img.clone(), lab.clone(), &mut rng);
            assert_eq!(l, lab, "{}", r.name);
            let distinct: std::collections::HashSet<u16> = i.data.iter().copied().collect();
            assert!(distinct.len() > 256 || r.name == "noise", "{}: {} distinct values", r.name, distinct.len());
        }
    }
}
