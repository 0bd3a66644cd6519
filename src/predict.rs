//! Whole-image prediction with a trained checkpoint: the image is tiled with the network's input size,
//! tiles overlap by a chosen margin and their class scores are averaged where they overlap, then each
//! pixel takes the best class.
//!
//! Networks whose output is smaller than their input (the U-Net's valid convolutions) see the image
//! mirror-padded by their margin, so every pixel of the image is predicted from real context and the
//! prediction has the image's size. Images smaller than one output tile are mirror-padded up to it.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;

use crate::models::{self, ModelSpec, SegModel};
use crate::npy::{Image, Tensor2};
use crate::train::loader::{unit, CENTRE};

/// A network rebuilt from a checkpoint (its spec is in the file's metadata).
pub struct Loaded {
    /// What the checkpoint says the network is.
    pub spec: ModelSpec,
    model: Box<dyn SegModel>,
    _varmap: VarMap,
}

impl Loaded {
    /// Rebuilds the network of a checkpoint written by a `train` stage.
    pub fn from_bytes(bytes: &[u8], what: &str) -> crate::Result<Loaded> {
        let spec = crate::train::checkpoint_spec(bytes).map_err(|e| crate::item_err!("checkpoint {what}: {e}"))?;
        let mut varmap = VarMap::new();
        let model = models::build(&spec, &mut varmap, DType::F32, &Device::Cpu).map_err(|e| crate::item_err!("checkpoint {what}: building its network: {e}"))?;
        let tensors = candle_core::safetensors::load_buffer(bytes, &Device::Cpu).map_err(|e| crate::item_err!("checkpoint {what}: {e}"))?;
        let r = models::init::assign(&varmap, &tensors, what).map_err(|e| crate::item_err!("checkpoint {what}: {e}"))?;
        if !r.missing.is_empty() {
            return Err(crate::item_err!("checkpoint {what} lacks {} variables of its {} network ({})", r.missing.len(), spec.arch, r.missing.join(", ")));
        }
        Ok(Loaded { spec, model, _varmap: varmap })
    }

    /// Class ids of every pixel of `image`; tiles overlap by `overlap` output pixels (clamped to less
    /// than a tile) and go through the network `batch` at a time.
    pub fn predict(&self, image: &Image, overlap: usize, batch: usize) -> crate::Result<Tensor2<u8>> {
        let err = |e: candle_core::Error| crate::item_err!("prediction: {e}");
        let ic = image.channels;
        if ic != 1 && ic != self.spec.in_channels {
            return Err(crate::item_err!("the image has {ic} channels but the network takes {}", self.spec.in_channels));
        }
        let [s, _] = self.spec.input_hw();
        let (oh, ow) = self.model.output_size(s, s);
        let (my, mx) = ((s - oh) / 2, (s - ow) / 2);
        let (h, w) = (image.height.max(oh), image.width.max(ow));
        let ys = starts(h, oh, overlap);
        let xs = starts(w, ow, overlap);
        let k = self.spec.classes;
        let mut scores = vec![0f32; k * h * w];
        let mut counts = vec![0u16; h * w];
        let c = self.spec.in_channels;
        let windows: Vec<(usize, usize)> = ys.iter().flat_map(|&y| xs.iter().map(move |&x| (y, x))).collect();
        for chunk in windows.chunks(batch.max(1)) {
            let mut x = Vec::with_capacity(chunk.len() * c * s * s);
            for &(y0, x0) in chunk {
                let mut planes = vec![0f32; ic * s * s];
                for yy in 0..s {
                    let sy = reflect(y0 as isize + yy as isize - my as isize, image.height);
                    for xx in 0..s {
                        let sx = reflect(x0 as isize + xx as isize - mx as isize, image.width);
                        for ch in 0..ic {
                            planes[ch * s * s + yy * s + xx] = unit(image.data[(sy * image.width + sx) * ic + ch]) - CENTRE;
                        }
                    }
                }
                // Gray is replicated to the network's channels, as in training.
                for _ in 0..c / ic {
                    x.extend_from_slice(&planes);
                }
            }
            let xt = Tensor::from_vec(x, (chunk.len(), c, s, s), &Device::Cpu).map_err(err)?;
            let y = self.model.forward_t(&xt, false).map_err(err)?;
            let y = candle_nn::ops::softmax(&y, 1).map_err(err)?;
            let y: Vec<f32> = y.flatten_all().and_then(|t| t.to_vec1()).map_err(err)?;
            for (b, &(y0, x0)) in chunk.iter().enumerate() {
                for cls in 0..k {
                    let src = &y[(b * k + cls) * oh * ow..][..oh * ow];
                    for yy in 0..oh {
                        let dst = &mut scores[(cls * h + y0 + yy) * w + x0..][..ow];
                        dst.iter_mut().zip(&src[yy * ow..(yy + 1) * ow]).for_each(|(d, v)| *d += v);
                    }
                }
                for yy in 0..oh {
                    counts[(y0 + yy) * w + x0..][..ow].iter_mut().for_each(|n| *n += 1);
                }
            }
        }
        // Every pixel is covered (the last tile of each axis ends at the border); averaging does not
        // change the arg-max, so the sums are compared directly.
        debug_assert!(counts.iter().all(|&n| n > 0));
        let mut labels = Vec::with_capacity(image.height * image.width);
        for yy in 0..image.height {
            for xx in 0..image.width {
                let p = yy * w + xx;
                let best = (0..k).max_by(|&a, &b| scores[a * h * w + p].total_cmp(&scores[b * h * w + p]).then(b.cmp(&a))).unwrap_or(0);
                labels.push(best as u8);
            }
        }
        Ok(Tensor2 { height: image.height, width: image.width, data: labels })
    }
}

/// Tile origins along an axis of `n` pixels for tiles of `t` overlapping by `overlap`: a regular
/// stride, the last tile flush with the end.
fn starts(n: usize, t: usize, overlap: usize) -> Vec<usize> {
    let step = t.saturating_sub(overlap.min(t.saturating_sub(1))).max(1);
    let mut v: Vec<usize> = (0..=n - t).step_by(step).collect();
    if *v.last().unwrap() != n - t {
        v.push(n - t);
    }
    v
}

/// Mirror index (`dcb|abcd|cba`), repeated for pads wider than the axis.
fn reflect(i: isize, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n as isize - 1);
    let m = i.rem_euclid(period);
    (if m < n as isize { m } else { period - m }) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_cover_the_axis_and_mirror_indices_stay_inside() {
        assert_eq!(starts(10, 4, 0), vec![0, 4, 6]);
        assert_eq!(starts(10, 4, 2), vec![0, 2, 4, 6]);
        assert_eq!(starts(4, 4, 1), vec![0]);
        assert_eq!(starts(5, 4, 9), vec![0, 1], "overlap clamped below a tile");
        assert_eq!((-3..8).map(|i| reflect(i, 4)).collect::<Vec<_>>(), vec![3, 2, 1, 0, 1, 2, 3, 2, 1, 0, 1]);
        assert_eq!(reflect(-7, 1), 0);
    }

    #[test]
    fn a_unet_checkpoint_predicts_every_pixel_of_an_image_smaller_or_larger_than_its_tiles() {
        // An untrained U-Net (output 36 x 36 for 220 x 220): shapes, class range, bad files.
        let spec = ModelSpec { width: 0.0625, input: Some([220, 220]), classes: 3, ..ModelSpec::new(crate::models::Arch::Unet) };
        let mut vm = VarMap::new();
        models::build(&spec, &mut vm, DType::F32, &Device::Cpu).unwrap();
        let vars: Vec<(String, Tensor)> = {
            let d = vm.data().lock().unwrap();
            d.iter().map(|(n, v)| (n.clone(), v.as_tensor().clone())).collect()
        };
        let mut meta = std::collections::HashMap::new();
        meta.insert(crate::train::SPEC_KEY.to_string(), serde_json::to_string(&spec).unwrap());
        let bytes = safetensors::serialize(vars.iter().map(|(n, t)| (n.as_str(), t)), Some(meta)).unwrap();
        let loaded = Loaded::from_bytes(&bytes, "test").unwrap();
        let img = Image::gray(Tensor2 { height: 70, width: 50, data: (0..3500).map(|i| (i * 97 % 65536) as u16).collect() });
        for overlap in [0, 8] {
            let a = loaded.predict(&img, overlap, 2).unwrap();
            assert_eq!((a.height, a.width, a.data.len()), (70, 50, 3500));
            assert!(a.data.iter().all(|&v| v < 3));
        }
        let small = Image::gray(Tensor2 { height: 20, width: 9, data: vec![1000u16; 180] });
        assert_eq!(loaded.predict(&small, 4, 1).unwrap().data.len(), 180);
        assert!(Loaded::from_bytes(b"not a checkpoint", "junk").is_err());
    }
}
