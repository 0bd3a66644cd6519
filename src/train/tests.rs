use std::sync::Arc;

use super::*;
use crate::models::Arch;
use crate::npy::Tensor2;

/// Bright discs on a darker textured background; label 1 inside the discs.
fn toy(n: usize, side: usize, seed: u64) -> Vec<Sample> {
    (0..n)
        .map(|i| {
            let h = mix(&[seed, i as u64]);
            let (cx, cy, r) = ((h % side as u64) as f64, ((h >> 16) % side as u64) as f64, 12.0 + ((h >> 32) % 12) as f64);
            let mut img = Vec::with_capacity(side * side);
            let mut lab = Vec::with_capacity(side * side);
            for y in 0..side {
                for x in 0..side {
                    let inside = ((x as f64 - cx).powi(2) + (y as f64 - cy).powi(2)).sqrt() < r;
                    let noise = (mix(&[h, (y * side + x) as u64]) % 8000) as u16;
                    img.push(if inside { 40000 + noise } else { 15000 + noise });
                    lab.push(inside as u8);
                }
            }
            Sample { image: Arc::new(crate::npy::Image::gray(Tensor2 { height: side, width: side, data: img })), labels: Arc::new(Tensor2 { height: side, width: side, data: lab }) }
        })
        .collect()
}

fn spec() -> ModelSpec {
    ModelSpec { width: 0.0625, input: Some([64, 64]), ..ModelSpec::new(Arch::Fcn8) }
}

fn hyper(epochs: usize) -> Hyper {
    Hyper {
        epochs,
        batch: 4,
        lr: 0.05,
        momentum: 0.9,
        weight_decay: 5e-4,
        lr_step: 2,
        lr_gamma: 0.5,
        patience: 0,
        monitor: Monitor::ValMiou,
        seed: 3,
        augment: Augment { flip: true, contrast: Some(0.2) },
        freeze: Vec::new(),
    }
}

/// An initial checkpoint both trainings of a comparison start from (candle's CPU generator cannot be
/// seeded).
fn init_file(dir: &Path) -> PathBuf {
    let mut vm = VarMap::new();
    models::build(&spec(), &mut vm, DType::F32, &Device::Cpu).unwrap();
    let p = dir.join("init.safetensors");
    std::fs::write(&p, checkpoint(&vm, &spec()).unwrap()).unwrap();
    p
}

#[test]
fn a_small_deeplab_learns_discs_and_logs_every_epoch() {
    let (train, val) = (toy(32, 72, 1), toy(6, 72, 2));
    let data = Data { train: &train, val: &val, weights: vec![0.3, 0.7], ignore: Some(255) };
    let (mut heard, mut batches) = (0, Vec::new());
    let s = ModelSpec { width: 0.125, input: Some([64, 64]), ..ModelSpec::new(Arch::Deeplabv3) };
    let h = Hyper { lr: 0.02, ..hyper(8) };
    let fitted = fit(&s, &h, &data, None, None, None, &mut |e| match e {
        Event::Epoch(_) => heard += 1,
        Event::Batch { epoch, done, total, loss, .. } => batches.push((epoch, done, total, loss)),
    })
    .unwrap()
    .unwrap();
    assert_eq!((fitted.log.len(), heard), (8, 8));
    // 32 images in batches of 4: every batch of every epoch is heard, the running loss is finite.
    assert_eq!(batches.len(), 8 * 8);
    assert!(batches.iter().all(|&(_, done, total, loss)| total == 8 && (1..=8).contains(&done) && loss.is_finite()));
    assert_eq!(batches.last().map(|b| (b.0, b.1)), Some((8, 8)));
    let (first, last) = (&fitted.log[0], &fitted.log[7]);
    assert!(last.train_loss < 0.8 * first.train_loss, "loss {} -> {}", first.train_loss, last.train_loss);
    assert_eq!(fitted.log[2].lr, 0.01, "x0.5 every 2 epochs");
    let best = &fitted.log[fitted.best_epoch - 1];
    assert!(fitted.log.iter().all(|l| l.val_miou <= best.val_miou));
    assert!(best.val_miou > 0.5, "best val mIoU {}", best.val_miou);
    // The checkpoint names its network.
    assert_eq!(checkpoint_spec(&fitted.best).unwrap(), s);
}

#[test]
fn a_training_killed_after_an_epoch_resumes_to_the_same_weights() {
    let dir = tempfile::tempdir().unwrap();
    let init = init_file(dir.path());
    let (train, val) = (toy(10, 72, 5), toy(4, 72, 6));
    let data = Data { train: &train, val: &val, weights: vec![0.4, 0.6], ignore: None };
    let whole = fit(&spec(), &hyper(3), &data, Some(&init), Some(&dir.path().join("a")), None, &mut |_| {}).unwrap().unwrap();
    let state = dir.path().join("b");
    assert!(fit(&spec(), &hyper(3), &data, Some(&init), Some(&state), Some(1), &mut |_| {}).unwrap().is_none());
    let mut resumed_epochs = Vec::new();
    let resumed = fit(&spec(), &hyper(3), &data, Some(&init), Some(&state), None, &mut |e| if let Event::Epoch(l) = e { resumed_epochs.push(l.epoch) }).unwrap().unwrap();
    assert_eq!(resumed_epochs, vec![2, 3], "only the missing epochs run");
    // Everything but the timings.
    let strip = |log: &[EpochLog]| log.iter().map(|l| EpochLog { images_per_s: 0.0, seconds: 0.0, ..l.clone() }).collect::<Vec<_>>();
    assert_eq!(strip(&resumed.log), strip(&whole.log));
    assert_eq!(resumed.best_epoch, whole.best_epoch);
    assert!(resumed.last == whole.last, "final weights differ after resuming");
    assert!(resumed.best == whole.best);
}

#[test]
fn early_stopping_and_clear_errors() {
    let (train, val) = (toy(4, 72, 8), toy(2, 72, 9));
    // A learning rate of 0 never improves after the first epoch: patience 2 stops at epoch 3.
    let h = Hyper { lr: 0.0, patience: 2, ..hyper(10) };
    let data = Data { train: &train, val: &val, weights: vec![1.0, 1.0], ignore: None };
    let fitted = fit(&spec(), &h, &data, None, None, None, &mut |_| {}).unwrap().unwrap();
    assert!(fitted.stopped_early);
    assert_eq!((fitted.log.len(), fitted.best_epoch), (3, 1));
    let small = toy(2, 40, 1);
    let e = fit(&spec(), &hyper(1), &Data { train: &small, val: &[], weights: vec![1.0, 1.0], ignore: None }, None, None, None, &mut |_| {}).err().unwrap();
    assert!(e.to_string().contains("smaller than the network input 64"), "{e}");
    let e = fit(&spec(), &hyper(1), &Data { train: &train, val: &[], weights: vec![1.0, 1.0], ignore: Some(1) }, None, None, None, &mut |_| {}).err().unwrap();
    assert!(e.to_string().contains("ignore label 1"), "{e}");
}

#[test]
fn frozen_variables_keep_their_initial_values_and_a_prefix_that_matches_nothing_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let init = init_file(dir.path());
    let (train, val) = (toy(4, 72, 8), toy(2, 72, 9));
    let data = Data { train: &train, val: &val, weights: vec![1.0, 1.0], ignore: None };
    let h = Hyper { freeze: vec!["conv1_".into(), "score_fr".into()], ..hyper(1) };
    let fitted = fit(&spec(), &h, &data, Some(&init), None, None, &mut |_| {}).unwrap().unwrap();
    let before = candle_core::safetensors::load(&init, &Device::Cpu).unwrap();
    let after = candle_core::safetensors::load_buffer(&fitted.last, &Device::Cpu).unwrap();
    let same = |n: &str| {
        let (a, b) = (before[n].flatten_all().unwrap().to_vec1::<f32>().unwrap(), after[n].flatten_all().unwrap().to_vec1::<f32>().unwrap());
        a == b
    };
    let frozen: Vec<&String> = before.keys().filter(|n| n.starts_with("conv1_") || n.starts_with("score_fr")).collect();
    assert!(frozen.len() >= 4, "{frozen:?}");
    assert!(frozen.iter().all(|n| same(n)), "a frozen variable changed");
    assert!(before.keys().filter(|n| n.starts_with("conv2_")).all(|n| !same(n)), "an unfrozen variable did not train");
    let h = Hyper { freeze: vec!["nothing_like_this".into()], ..hyper(1) };
    let e = fit(&spec(), &h, &data, Some(&init), None, None, &mut |_| {}).err().unwrap();
    assert!(e.to_string().contains("no variable of a") && e.to_string().contains("nothing_like_this"), "{e}");
}
