//! `split`: subjects (women) to folds, decided on the un-augmented images.
//!
//! The study split its 1000 augmented images 70/30 at random, so replicas of one woman could sit on both
//! sides. Here the unit is the subject: every image of one woman, and so every replica and crop made from
//! them, lands on the same side. Subjects come from the upstream items' `subject` column (a keyed hash of
//! PatientID for DICOM, a naming rule for PNG folders).
//!
//! The assignment is one item (`assignment`) over all upstream items: subjects are ordered by a keyed
//! hash of (pipeline seed, subject), then `holdout` puts the first round(train x S) in `train`, and
//! - with `val` set (e.g. `train = 0.6, val = 0.1`), the next ones up to round((train + val) x S) in
//!   `val` and the rest in `test`: training stops early on `val` and the reported figures come from a
//!   `test` fold that training never saw;
//! - without `val`, the rest in `val`: the study's two-way split, where the same fold chose the epoch and
//!   gave the figures, which makes them optimistic;
//!
//! (so proportions are within one subject of the target), and `kfold` deals them to `folds` folds in turn
//! (fold sizes differ by at most one subject). Its output is a Parquet table
//! `subject, fold, item`; the manifest row carries the counts. Augmentation and cropping do not depend
//! on the assignment, so a changed split never recomputes a replica: training joins crops to folds by
//! subject.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Arity, BuildCtx, InputSpec, ItemInputs, ItemOutput, ItemSpec, MetaValue, OutFile, ParamError, Stage};
use crate::error::Result;
use crate::item_err;

/// How to split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Train / validation hold-out.
    Holdout,
    /// k folds.
    Kfold,
}

/// Params of `split`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// `holdout` or `kfold`.
    pub method: Method,
    /// Hold-out: share of subjects in `train`.
    pub train: f64,
    /// Hold-out: share of subjects in `val`; the rest go to `test`. Unset: the rest go to `val` (two-way).
    pub val: Option<f64>,
    /// k-fold: number of folds.
    pub folds: usize,
}

impl Default for Params {
    fn default() -> Self {
        Params { method: Method::Holdout, train: 0.7, val: None, folds: 5 }
    }
}

/// The `split` stage.
pub struct Split {
    params: Params,
    seed: u64,
}

impl Split {
    /// Builds the stage.
    pub fn new(params: Params, ctx: &BuildCtx<'_>) -> Result<Self, ParamError> {
        if !(0.0..=1.0).contains(&params.train) {
            return Err(ParamError::at("train", format!("train must be between 0 and 1, got {}", params.train)));
        }
        if let Some(v) = params.val {
            if !(0.0..=1.0).contains(&v) || params.train + v > 1.0 + 1e-9 {
                return Err(ParamError::at("val", format!("train + val must be at most 1 (the rest is the test fold), got {} + {v}", params.train)));
            }
            if params.method == Method::Kfold {
                return Err(ParamError::at("val", "`val` belongs to the holdout method; k-fold uses `folds`"));
            }
        }
        if params.method == Method::Kfold && params.folds < 2 {
            return Err(ParamError::at("folds", "k-fold needs at least 2 folds"));
        }
        Ok(Split { params, seed: ctx.seed })
    }
}

/// Subject -> fold name (`train` / `val` [/ `test`], or `fold0..`).
pub fn assign(subjects: &[String], method: Method, train: f64, val: Option<f64>, folds: usize, seed: u64) -> BTreeMap<String, String> {
    let mut order: Vec<(String, &String)> = subjects.iter().map(|s| (blake3::hash(format!("{seed}\u{0}{s}").as_bytes()).to_hex().to_string(), s)).collect();
    order.sort();
    order.dedup_by(|a, b| a.1 == b.1);
    let n = order.len();
    let n_train = (train * n as f64).round() as usize;
    let n_val_end = val.map_or(n, |v| (((train + v) * n as f64).round() as usize).clamp(n_train, n));
    order
        .into_iter()
        .enumerate()
        .map(|(rank, (_, s))| {
            let fold = match method {
                Method::Holdout if rank < n_train => "train".to_string(),
                Method::Holdout if rank < n_val_end => "val".to_string(),
                Method::Holdout => "test".to_string(),
                Method::Kfold => format!("fold{}", rank % folds),
            };
            (s.clone(), fold)
        })
        .collect()
}


impl Stage for Split {
    fn kind(&self) -> &'static str {
        "split"
    }
    fn version(&self) -> u32 {
        1
    }
    fn gathers(&self, input: usize) -> bool {
        input == 0
    }
    fn arity(&self) -> Arity {
        Arity::Exactly(1)
    }
    fn params(&self) -> serde_json::Value {
        let mut v = serde_json::json!({ "method": self.params.method, "seed": self.seed });
        match self.params.method {
            Method::Holdout => {
                v["train"] = self.params.train.into();
                if let Some(val) = self.params.val {
                    v["val"] = val.into();
                }
            }
            Method::Kfold => v["folds"] = self.params.folds.into(),
        }
        v
    }
    fn items(&self, upstream: &[&[String]]) -> Result<Vec<ItemSpec>> {
        let inputs = upstream[0].iter().map(|id| InputSpec::Upstream { upstream: 0, item: id.clone() }).collect();
        Ok(vec![ItemSpec { id: "assignment".into(), inputs }])
    }
    fn compute(&self, _id: &str, inputs: &ItemInputs) -> Result<ItemOutput> {
        let mut items: Vec<(String, String)> = Vec::with_capacity(inputs.meta.len());
        for (item, meta) in &inputs.meta {
            match meta.get("subject") {
                Some(MetaValue::Str(s)) if !s.is_empty() => items.push((item.clone(), s.clone())),
                _ => return Err(item_err!("upstream item `{item}` has no `subject` column (ingest stages set it; see their `subject` param)")),
            }
        }
        let subjects: Vec<String> = items.iter().map(|(_, s)| s.clone()).collect();
        let folds = assign(&subjects, self.params.method, self.params.train, self.params.val, self.params.folds, self.seed);
        items.sort();
        let fold_of: Vec<&str> = items.iter().map(|(_, s)| folds[s].as_str()).collect();
        let bytes = crate::folds::assignment_bytes(&items, &fold_of)?;
        let mut out = ItemOutput::default();
        out.meta.insert("subjects".into(), MetaValue::Int(folds.len() as i64));
        let mut counts: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
        for f in folds.values() {
            counts.entry(f.as_str()).or_default().0 += 1;
        }
        for f in &fold_of {
            counts.entry(f).or_default().1 += 1;
        }
        for (f, (s, i)) in counts {
            out.meta.insert(format!("subjects_{f}"), MetaValue::Int(s));
            out.meta.insert(format!("items_{f}"), MetaValue::Int(i));
        }
        out.files.push(OutFile { role: "assignment".into(), ext: "parquet", bytes });
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holdout_proportions_within_one_subject_and_kfold_balanced() {
        for n in [1usize, 2, 3, 7, 10, 33, 100] {
            let subjects: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
            let a = assign(&subjects, Method::Holdout, 0.7, None, 5, 42);
            let train = a.values().filter(|f| *f == "train").count() as f64;
            assert!((train - 0.7 * n as f64).abs() <= 1.0, "n={n}: {train} in train");
            let k = assign(&subjects, Method::Kfold, 0.7, None, 5, 42);
            let sizes: Vec<usize> = (0..5).map(|f| k.values().filter(|v| **v == format!("fold{f}")).count()).collect();
            assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1, "{sizes:?}");
        }
    }

    #[test]
    fn three_way_holdout_has_every_fold_within_one_subject_and_keeps_the_train_fold() {
        for n in [3usize, 10, 33, 100] {
            let subjects: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
            let a = assign(&subjects, Method::Holdout, 0.6, Some(0.1), 5, 7);
            let count = |f: &str| a.values().filter(|v| *v == f).count() as f64;
            for (fold, share) in [("train", 0.6), ("val", 0.1), ("test", 0.3)] {
                assert!((count(fold) - share * n as f64).abs() <= 1.0, "n={n}: {} in {fold}", count(fold));
            }
            // Adding a validation fold takes subjects from the held-out side only.
            let two = assign(&subjects, Method::Holdout, 0.6, None, 5, 7);
            for (s, f) in &two {
                assert_eq!(f == "train", a[s] == "train", "{s}");
            }
        }
    }

    #[test]
    fn a_subject_has_one_fold_whatever_its_image_count_and_the_seed_matters() {
        let subjects: Vec<String> = ["a", "a", "b", "c", "c", "c", "d"].iter().map(|s| s.to_string()).collect();
        let a = assign(&subjects, Method::Holdout, 0.5, None, 2, 1);
        assert_eq!(a.len(), 4, "one entry per subject");
        let many: Vec<String> = (0..50).map(|i| format!("s{i}")).collect();
        assert_ne!(assign(&many, Method::Holdout, 0.7, None, 2, 1), assign(&many, Method::Holdout, 0.7, None, 2, 2));
        assert_eq!(assign(&many, Method::Holdout, 0.7, None, 2, 1), assign(&many, Method::Holdout, 0.7, None, 2, 1));
    }
}
