//! `balanced-crop`: class-balanced crops, the study's answer to class imbalance.
//!
//! For each crop: take the label map's unique labels, drop the excluded ones (mammary gland and
//! background by default: one of them is almost always present; and the ignore label `pad_label`, which
//! rotated replicas carry where the image rotated in from outside), pick one remaining label uniformly at
//! random, then one pixel of that label uniformly at random: that pixel is the crop centre. With no
//! candidate label the centre is uniform over the image. A crop that would leave the image is shifted
//! inside it; an image smaller than the crop is padded (`pad_value`, `pad_label`).
//!
//! Items are `{source}/s{size}/c{index}`: every size in `sizes` is its own crop set and `per_image`
//! crops are drawn per size. Every draw comes from an RNG seeded by (pipeline seed, stage id, source item
//! id, crop index) only, so results do not depend on worker count or order, and the crops of one index
//! share their centre across sizes. Changing `sizes` or `per_image` adds or drops items without touching
//! the others.

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::codec;
use super::{Arity, BuildCtx, InputSpec, ItemInputs, ItemOutput, ItemSpec, MetaValue, OutFile, ParamError, Stage};
use crate::classes::ClassTable;
use crate::error::Result;
use crate::item_err;
use crate::npy::{self, Tensor2};

/// Params of `balanced-crop`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// The class table (names for `exclude`, names in the manifest).
    pub classes: String,
    /// Crop sizes in pixels; each is its own crop set.
    pub sizes: Vec<usize>,
    /// Crops per image and size.
    pub per_image: usize,
    /// Class names never chosen as crop centre.
    pub exclude: Vec<String>,
    /// Image value of padding (when the image is smaller than the crop).
    pub pad_value: u16,
    /// Label of padding (default 255 = ignore).
    pub pad_label: u8,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            classes: "../configs/classes-phantom.toml".into(),
            sizes: vec![256, 700, 900, 1500],
            per_image: 4,
            exclude: vec!["background".into(), "mammary_gland".into()],
            pad_value: 0,
            pad_label: 255,
        }
    }
}

/// The `balanced-crop` stage.
pub struct BalancedCrop {
    params: Params,
    table: ClassTable,
    exclude_ids: Vec<u8>,
    seed: u64,
    stage_id: String,
}

impl BalancedCrop {
    /// Builds the stage.
    pub fn new(params: Params, ctx: &BuildCtx<'_>) -> Result<Self, ParamError> {
        let table = ClassTable::load(&ctx.resolve_path("classes", &params.classes)?).map_err(|m| ParamError::at("classes", m))?;
        let mut exclude_ids = Vec::new();
        for name in &params.exclude {
            match table.class(name) {
                Some(c) => exclude_ids.push(c.id),
                None => {
                    let hint = crate::suggest::did_you_mean(name, table.classes.iter().map(|c| c.name.as_str())).map(|h| format!("did you mean `{h}`?"));
                    return Err(ParamError { message: format!("exclude: no class `{name}` in the class table"), key: Some("exclude".into()), hint });
                }
            }
        }
        if params.sizes.is_empty() || params.sizes.iter().any(|&s| s == 0 || s > 20000) {
            return Err(ParamError::at("sizes", "sizes must be a non-empty list of crop sizes between 1 and 20000"));
        }
        // the ignore label (rotation fill, padding) is never a crop centre
        exclude_ids.push(params.pad_label);
        Ok(BalancedCrop { params, table, exclude_ids, seed: ctx.seed, stage_id: ctx.stage_id.to_string() })
    }
}

/// The RNG of one crop: (pipeline seed, stage id, source item, crop index) and nothing else.
fn crop_rng(seed: u64, stage: &str, item: &str, index: usize) -> rand_chacha::ChaCha8Rng {
    super::item_rng(seed, stage, item, index)
}

/// The crop centre `(x, y)` and the chosen class (None = no candidate, uniform centre).
pub fn choose_centre(labels: &[u8], width: usize, exclude: &[u8], rng: &mut impl Rng) -> (usize, usize, Option<u8>) {
    let mut present = [false; 256];
    labels.iter().for_each(|&l| present[l as usize] = true);
    let candidates: Vec<u8> = (0..=255u8).filter(|&l| present[l as usize] && !exclude.contains(&l)).collect();
    if candidates.is_empty() {
        let i = rng.random_range(0..labels.len());
        return (i % width, i / width, None);
    }
    let class = candidates[rng.random_range(0..candidates.len())];
    let count = labels.iter().filter(|&&l| l == class).count();
    let k = rng.random_range(0..count);
    let i = labels.iter().enumerate().filter(|(_, &l)| l == class).nth(k).map(|(i, _)| i).expect("k < count");
    (i % width, i / width, Some(class))
}

/// Top-left corner on one axis: centred on `c`, shifted inside `[0, len)`; negative (padding) when the
/// image is smaller than the crop, then centred.
pub fn place(c: usize, size: usize, len: usize) -> i64 {
    if size >= len {
        return -(((size - len) / 2) as i64);
    }
    (c as i64 - (size / 2) as i64).clamp(0, (len - size) as i64)
}

fn cut<T: Copy>(t: &Tensor2<T>, x0: i64, y0: i64, size: usize, pad: T) -> Tensor2<T> {
    let mut data = Vec::with_capacity(size * size);
    for y in y0..y0 + size as i64 {
        for x in x0..x0 + size as i64 {
            let inside = y >= 0 && x >= 0 && (y as usize) < t.height && (x as usize) < t.width;
            data.push(if inside { t.data[y as usize * t.width + x as usize] } else { pad });
        }
    }
    Tensor2 { height: size, width: size, data }
}

impl Stage for BalancedCrop {
    fn kind(&self) -> &'static str {
        "balanced-crop"
    }
    fn version(&self) -> u32 {
        3
    }
    fn arity(&self) -> Arity {
        Arity::Exactly(1)
    }
    fn params(&self) -> serde_json::Value {
        // `sizes` and `per_image` only decide which items exist; size and index are in the item id
        serde_json::json!({ "table": self.table, "exclude": self.exclude_ids, "pad_value": self.params.pad_value,
                            "pad_label": self.params.pad_label, "seed": self.seed, "stage": self.stage_id })
    }
    fn items(&self, upstream: &[&[String]]) -> Result<Vec<ItemSpec>> {
        let mut out = Vec::new();
        for src in upstream[0] {
            for &size in &self.params.sizes {
                for k in 0..self.params.per_image {
                    out.push(ItemSpec { id: format!("{src}/s{size}/c{k}"), inputs: vec![InputSpec::Upstream { upstream: 0, item: src.clone() }] });
                }
            }
        }
        Ok(out)
    }
    fn compute(&self, id: &str, inputs: &ItemInputs) -> Result<ItemOutput> {
        let (rest, k) = id.rsplit_once("/c").ok_or_else(|| item_err!("bad crop id `{id}`"))?;
        let (src, size) = rest.rsplit_once("/s").ok_or_else(|| item_err!("bad crop id `{id}`"))?;
        let (size, k): (usize, usize) = (size.parse().map_err(|_| item_err!("bad size in `{id}`"))?, k.parse().map_err(|_| item_err!("bad index in `{id}`"))?);
        let (img, labels) = super::pairs::read_image_and_labels(inputs)?;
        if labels.data.is_empty() || labels.width == 0 {
            return Err(item_err!("image `{src}` has no pixels ({} x {}): nothing to crop", labels.width, labels.height));
        }
        let mut rng = crop_rng(self.seed, &self.stage_id, src, k);
        let (cx, cy, class) = choose_centre(&labels.data, labels.width, &self.exclude_ids, &mut rng);
        let (x0, y0) = (place(cx, size, img.width), place(cy, size, img.height));
        let crop_img = cut(&img, x0, y0, size, self.params.pad_value);
        let crop_lab = cut(&labels, x0, y0, size, self.params.pad_label);
        let mut out = ItemOutput::default();
        out.meta.insert("source".into(), MetaValue::Str(src.to_string()));
        if let Some(subject) = inputs.upstream_meta("subject") {
            out.meta.insert("subject".into(), subject.clone());
        }
        out.meta.insert("size".into(), MetaValue::Int(size as i64));
        out.meta.insert("x0".into(), MetaValue::Int(x0));
        out.meta.insert("y0".into(), MetaValue::Int(y0));
        let name = |id: u8| self.table.classes.iter().find(|c| c.id == id).map(|c| c.name.clone()).unwrap_or_else(|| format!("label_{id}"));
        out.meta.insert("centre_class".into(), MetaValue::Str(class.map(name).unwrap_or_else(|| "none".into())));
        for c in &self.table.classes {
            out.meta.insert(format!("px_{}", c.name), MetaValue::Int(crop_lab.data.iter().filter(|&&l| l == c.id).count() as i64));
        }
        out.files.push(OutFile { role: "image".into(), ext: "npy", bytes: npy::encode_u16(&crop_img) });
        out.files.push(OutFile { role: "labels".into(), ext: "png", bytes: codec::encode_u8(&crop_lab) });
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lesion_is_the_centre_in_the_expected_share_and_crops_stay_inside() {
        // 200 x 100 image: background 0, gland 1 (left half), a 3 x 3 lesion (4), a pectoral strip (2)
        let (w, h) = (200, 100);
        let mut labels = vec![0u8; w * h];
        for y in 0..h {
            for x in 0..w / 2 {
                labels[y * w + x] = 1;
            }
        }
        for y in 50..53 {
            for x in 150..153 {
                labels[y * w + x] = 4;
            }
        }
        let lesion_only = labels.clone();
        for y in 0..h {
            labels[y * w + 199] = 2;
        }
        // only the lesion is a candidate: every crop is centred on it
        for k in 0..50 {
            let (x, y, c) = choose_centre(&lesion_only, w, &[0, 1], &mut crop_rng(1, "crop", "img", k));
            assert_eq!(c, Some(4));
            assert!((150..153).contains(&x) && (50..53).contains(&y));
        }
        // lesion and pectoral: each chosen about half of the time although the lesion has 9 pixels
        let n = 2000;
        let lesion = (0..n).filter(|&k| choose_centre(&labels, w, &[0, 1], &mut crop_rng(1, "crop", "img", k)).2 == Some(4)).count();
        assert!((n * 45 / 100..n * 55 / 100).contains(&lesion), "{lesion} of {n}");
        // crops are shifted inside the image
        for c in [0, 5, 99, 150, 199] {
            let x0 = place(c, 64, w);
            assert!(x0 >= 0 && x0 as usize + 64 <= w, "{c} -> {x0}");
        }
        assert_eq!(place(100, 64, w), 68, "centred when it fits");
        assert_eq!(place(10, 300, w), -50, "padded equally when the image is smaller");
    }

    #[test]
    fn no_candidate_centres_uniformly_and_padding_uses_pad_values() {
        let labels = vec![0u8; 16];
        let (_, _, c) = choose_centre(&labels, 4, &[0], &mut crop_rng(0, "s", "i", 0));
        assert_eq!(c, None);
        let t = Tensor2 { height: 2, width: 2, data: vec![1u16, 2, 3, 4] };
        assert_eq!(cut(&t, -1, -1, 4, 9).data, vec![9, 9, 9, 9, 9, 1, 2, 9, 9, 3, 4, 9, 9, 9, 9, 9]);
    }

    #[test]
    fn the_rng_depends_on_seed_stage_item_and_index_only() {
        let a: u64 = crop_rng(1, "crop", "x", 2).random();
        assert_eq!(a, crop_rng(1, "crop", "x", 2).random::<u64>());
        assert_ne!(a, crop_rng(1, "crop", "x", 3).random::<u64>());
        assert_ne!(a, crop_rng(2, "crop", "x", 2).random::<u64>());
    }
}
