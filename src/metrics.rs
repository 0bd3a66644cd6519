//! Segmentation metrics from a confusion matrix: the study's pixel accuracy, mean IoU and mean per-class
//! accuracy (SPEC.md), plus per-class IoU and Dice.
//!
//! Evaluation sums one confusion matrix per held-out image (so a changed image re-scores only itself) and
//! computes every figure from the sum, never by averaging per-image figures: that is what the formulas
//! say, and a per-image mean would weigh a small image like a large one.
//!
//! # Absent classes
//! With `n_ij` the pixels of true class `i` predicted as `j`, `t_i = Σ_j n_ij` and `p_i = Σ_j n_ji`:
//! - IoU of class `i` is `n_ii / (t_i + p_i − n_ii)`. A class absent from both truth and prediction has
//!   no IoU (0/0) and is left out of the mean: counting it as 1 would reward every network for classes a
//!   test fold happens not to contain, counting it as 0 would punish it for them. A class predicted but
//!   absent from the truth has IoU 0 and stays in the mean (those pixels are wrong).
//! - Per-class accuracy is `n_ii / t_i`; classes with `t_i = 0` have none and are left out of the mean.
//! - Dice is `2 n_ii / (t_i + p_i)`, left out the same way as IoU.
//!
//! Pixels whose truth is the ignore label (Cityscapes' void, say) are not counted at all; predictions are
//! always one of the classes.

use serde::{Deserialize, Serialize};

/// A `classes x classes` matrix of pixel counts, rows = truth, columns = prediction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confusion {
    classes: usize,
    counts: Vec<u64>,
}

impl Confusion {
    /// An empty matrix for `classes` classes (label ids `0..classes`).
    pub fn new(classes: usize) -> Confusion {
        Confusion { classes, counts: vec![0; classes * classes] }
    }

    /// A matrix from its rows (truth), e.g. read back from a stored item.
    pub fn from_rows(rows: &[Vec<u64>]) -> Result<Confusion, String> {
        let classes = rows.len();
        if rows.iter().any(|r| r.len() != classes) {
            return Err(format!("a confusion matrix must be square: {classes} rows of lengths {:?}", rows.iter().map(Vec::len).collect::<Vec<_>>()));
        }
        Ok(Confusion { classes, counts: rows.concat() })
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// `n_ij`: pixels of true class `i` predicted as `j`.
    pub fn get(&self, truth: usize, pred: usize) -> u64 {
        self.counts[truth * self.classes + pred]
    }

    /// The rows (truth), for storage.
    pub fn rows(&self) -> Vec<Vec<u64>> {
        self.counts.chunks(self.classes.max(1)).map(<[u64]>::to_vec).collect()
    }

    /// Counts one label map against its prediction (same length). Truth pixels equal to `ignore` are
    /// skipped; any other truth or prediction outside `0..classes` is an error naming it.
    pub fn add(&mut self, truth: &[u8], pred: &[u8], ignore: Option<u8>) -> Result<(), String> {
        if truth.len() != pred.len() {
            return Err(format!("truth has {} pixels, prediction {}", truth.len(), pred.len()));
        }
        let c = self.classes;
        for (&t, &p) in truth.iter().zip(pred) {
            if Some(t) == ignore {
                continue;
            }
            let (t, p) = (t as usize, p as usize);
            if t >= c || p >= c {
                return Err(format!("label {} outside the {c} classes (ignore label: {ignore:?})", t.max(p)));
            }
            self.counts[t * c + p] += 1;
        }
        Ok(())
    }

    /// Adds another matrix of the same size.
    pub fn merge(&mut self, other: &Confusion) -> Result<(), String> {
        if other.classes != self.classes {
            return Err(format!("cannot add a {0}x{0} confusion matrix to a {1}x{1} one", other.classes, self.classes));
        }
        self.counts.iter_mut().zip(&other.counts).for_each(|(a, b)| *a += b);
        Ok(())
    }

    /// Every metric, following the module's rules for absent classes.
    pub fn metrics(&self) -> Metrics {
        let c = self.classes;
        let truth: Vec<u64> = (0..c).map(|i| (0..c).map(|j| self.get(i, j)).sum()).collect();
        let pred: Vec<u64> = (0..c).map(|j| (0..c).map(|i| self.get(i, j)).sum()).collect();
        let hit: Vec<u64> = (0..c).map(|i| self.get(i, i)).collect();
        let total: u64 = truth.iter().sum();
        let ratio = |a: u64, b: u64| (b > 0).then(|| a as f64 / b as f64);
        let iou: Vec<Option<f64>> = (0..c).map(|i| ratio(hit[i], truth[i] + pred[i] - hit[i])).collect();
        let dice: Vec<Option<f64>> = (0..c).map(|i| ratio(2 * hit[i], truth[i] + pred[i])).collect();
        let accuracy: Vec<Option<f64>> = (0..c).map(|i| ratio(hit[i], truth[i])).collect();
        Metrics {
            pixel_accuracy: ratio(hit.iter().sum(), total),
            mean_iou: mean(&iou),
            mean_class_accuracy: mean(&accuracy),
            iou,
            dice,
            class_accuracy: accuracy,
            pixels: total,
        }
    }
}

/// The mean of the defined values; `None` when there are none.
fn mean(v: &[Option<f64>]) -> Option<f64> {
    let defined: Vec<f64> = v.iter().flatten().copied().collect();
    (!defined.is_empty()).then(|| defined.iter().sum::<f64>() / defined.len() as f64)
}

/// The figures of one confusion matrix; `None` where undefined (no pixels, or an absent class).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    /// `Σ n_ii / Σ t_i`.
    pub pixel_accuracy: Option<f64>,
    /// Mean of the defined per-class IoUs.
    pub mean_iou: Option<f64>,
    /// Mean of the defined per-class accuracies.
    pub mean_class_accuracy: Option<f64>,
    /// Per-class IoU.
    pub iou: Vec<Option<f64>>,
    /// Per-class Dice.
    pub dice: Vec<Option<f64>>,
    /// Per-class accuracy (recall).
    pub class_accuracy: Vec<Option<f64>>,
    /// Pixels counted (ignore label excluded).
    pub pixels: u64,
}

/// The stored form of a confusion matrix (the `evaluate` stage's `confusion` output, JSON; read back by
/// the study's tables).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredConfusion {
    /// Rows = truth, columns = prediction.
    pub rows: Vec<Vec<u64>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-12)
    }

    #[test]
    fn three_classes_by_hand() {
        // truth \ pred   0  1  2
        //   0            5  1  0     t0 = 6
        //   1            2  3  1     t1 = 6
        //   2            0  0  4     t2 = 4
        // p = (7, 4, 5); hits 5, 3, 4; total 16
        let m = Confusion::from_rows(&[vec![5, 1, 0], vec![2, 3, 1], vec![0, 0, 4]]).unwrap().metrics();
        assert!(close(m.pixel_accuracy, 12.0 / 16.0));
        // IoU: 5/(6+7-5) = 5/8, 3/(6+4-3) = 3/7, 4/(4+5-4) = 4/5
        assert!(close(m.iou[0], 5.0 / 8.0) && close(m.iou[1], 3.0 / 7.0) && close(m.iou[2], 0.8));
        assert!(close(m.mean_iou, (5.0 / 8.0 + 3.0 / 7.0 + 0.8) / 3.0));
        assert!(close(m.mean_class_accuracy, (5.0 / 6.0 + 3.0 / 6.0 + 1.0) / 3.0));
        // Dice: 10/13, 6/10, 8/9
        assert!(close(m.dice[0], 10.0 / 13.0) && close(m.dice[1], 0.6) && close(m.dice[2], 8.0 / 9.0));
        assert_eq!(m.pixels, 16);
    }

    #[test]
    fn a_class_absent_from_truth_and_prediction_is_left_out_of_the_means() {
        // Class 2 never occurs: only classes 0 and 1 count.
        let m = Confusion::from_rows(&[vec![3, 1, 0], vec![0, 4, 0], vec![0, 0, 0]]).unwrap().metrics();
        assert_eq!(m.iou[2], None);
        assert_eq!(m.dice[2], None);
        assert_eq!(m.class_accuracy[2], None);
        assert!(close(m.mean_iou, (3.0 / 4.0 + 4.0 / 5.0) / 2.0));
        assert!(close(m.mean_class_accuracy, (3.0 / 4.0 + 1.0) / 2.0));
    }

    #[test]
    fn a_class_predicted_but_absent_from_truth_scores_zero_iou_and_no_accuracy() {
        // Two pixels of class 0 predicted as class 2, which the truth never has.
        let m = Confusion::from_rows(&[vec![4, 0, 2], vec![0, 2, 0], vec![0, 0, 0]]).unwrap().metrics();
        assert!(close(m.iou[2], 0.0));
        assert_eq!(m.class_accuracy[2], None);
        assert!(close(m.mean_iou, (4.0 / 6.0 + 1.0 + 0.0) / 3.0));
        assert!(close(m.mean_class_accuracy, (4.0 / 6.0 + 1.0) / 2.0));
    }

    #[test]
    fn the_ignore_label_is_not_counted_and_bad_labels_are_errors() {
        let mut c = Confusion::new(2);
        let truth = [0u8, 0, 1, 255, 1, 255];
        let pred = [0u8, 1, 1, 0, 1, 1];
        c.add(&truth, &pred, Some(255)).unwrap();
        assert_eq!(c.rows(), vec![vec![1, 1], vec![0, 2]]);
        assert!(close(c.metrics().pixel_accuracy, 0.75));
        let err = Confusion::new(2).add(&truth, &pred, None).unwrap_err();
        assert!(err.contains("255"), "{err}");
        assert!(Confusion::new(2).add(&[0, 1], &[0], None).is_err());
    }

    #[test]
    fn merged_matrices_equal_one_matrix_over_all_pixels() {
        let (t1, p1) = ([0u8, 1, 2, 2], [0u8, 2, 2, 1]);
        let (t2, p2) = ([1u8, 1, 0], [1u8, 0, 0]);
        let mut a = Confusion::new(3);
        a.add(&t1, &p1, None).unwrap();
        let mut b = Confusion::new(3);
        b.add(&t2, &p2, None).unwrap();
        a.merge(&b).unwrap();
        let mut all = Confusion::new(3);
        all.add(&[t1.as_slice(), &t2].concat(), &[p1.as_slice(), &p2].concat(), None).unwrap();
        assert_eq!(a, all);
        assert!(a.merge(&Confusion::new(2)).is_err());
        let empty = Confusion::new(3).metrics();
        assert_eq!((empty.pixel_accuracy, empty.mean_iou, empty.mean_class_accuracy), (None, None, None));
    }
}
