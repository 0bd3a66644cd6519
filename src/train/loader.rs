//! The input pipeline of training: random windows of the network's input size, flips and contrast
//! changes (colour images also brightness and saturation), gray replicated to the network's channels,
//! scaled to [-0.5, 0.5], batched in background threads while the network trains.
//!
//! Determinism: the epoch's order is a permutation drawn from `(seed, epoch)` and every batch draws its
//! augmentations from its own generator seeded by `(seed, epoch, batch index)`. A batch is therefore the
//! same whichever thread builds it and however many threads there are, and a training resumed at epoch
//! `e` sees exactly the batches an uninterrupted one would have.

use std::collections::BTreeMap;
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::npy::{Image, Tensor2};

/// One training example: a whole crop and its label map (the same size).
#[derive(Debug, Clone)]
pub struct Sample {
    /// Gray or RGB image.
    pub image: Arc<Image>,
    /// Class ids.
    pub labels: Arc<Tensor2<u8>>,
}

/// What the network needs from a batch.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Network input side (square windows).
    pub input: usize,
    /// Network output `(height, width)` for that input: the label window is its centre.
    pub output: (usize, usize),
    /// Input channels (gray replicated).
    pub channels: usize,
}

/// Augmentations applied to training batches (never to validation ones).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Augment {
    /// Horizontal flip with probability 0.5.
    pub flip: bool,
    /// Contrast scaled about the window's mean by a factor in `[1 − c, 1 + c]`, probability 0.5. Colour
    /// images also get, each with probability 0.5, a brightness shift in `[−c, c]` and a saturation
    /// factor in `[1 − c, 1 + c]` (the study's RGB augmentations).
    pub contrast: Option<f32>,
}

/// A batch ready for the network: `x` is `(n, channels, input, input)`, `t` is `(n, oh, ow)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Images in the batch.
    pub n: usize,
    /// Network input, row-major NCHW.
    pub x: Vec<f32>,
    /// Labels of the output window, row-major NHW.
    pub t: Vec<u32>,
}

/// A 16-bit pixel in [0, 1]. Networks see `unit(v) − CENTRE`, the study's [-0.5, 0.5]; training
/// windows and whole-image prediction must agree on it.
pub fn unit(v: u16) -> f32 {
    v as f32 / 65535.0
}

/// Subtracted from [`unit`] values before they enter a network.
pub const CENTRE: f32 = 0.5;

/// A 64-bit seed from parts (SplitMix64 over them), so nearby `(epoch, batch)` pairs are unrelated.
pub fn mix(parts: &[u64]) -> u64 {
    let mut h = 0x9E37_79B9_7F4A_7C15u64;
    for &p in parts {
        h ^= p.wrapping_add(0x9E37_79B9_7F4A_7C15).wrapping_add(h << 6).wrapping_add(h >> 2);
        let mut z = h;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        h = z ^ (z >> 31);
    }
    h
}

/// The order of `n` samples in epoch `epoch`.
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(mix(&[seed, epoch as u64, 0x5348_5546]));
    for i in (1..n).rev() {
        order.swap(i, rng.random_range(0..=i));
    }
    order
}

/// Builds one batch from `samples[idx]` for each index. With `augment`, windows are random and
/// augmented from `rng_seed`; without, they are the crops' centres.
pub fn make_batch(samples: &[Sample], idx: &[usize], shape: Shape, augment: Option<Augment>, rng_seed: u64) -> Batch {
    let (s, (oh, ow), c) = (shape.input, shape.output, shape.channels);
    let mut rng = ChaCha8Rng::seed_from_u64(rng_seed);
    let mut x = Vec::with_capacity(idx.len() * c * s * s);
    let mut t = Vec::with_capacity(idx.len() * oh * ow);
    let mut planes: Vec<f32> = Vec::new();
    for &i in idx {
        let (img, lab) = (&samples[i].image, &samples[i].labels);
        let ic = img.channels;
        let (x0, y0) = match augment {
            Some(_) => (rng.random_range(0..=img.width - s), rng.random_range(0..=img.height - s)),
            None => ((img.width - s) / 2, (img.height - s) / 2),
        };
        let flip = augment.is_some_and(|a| a.flip) && rng.random_bool(0.5);
        let contrast = augment.and_then(|a| a.contrast).filter(|_| rng.random_bool(0.5)).map(|c| 1.0 + rng.random_range(-c..=c));
        // Colour jitter draws come after the gray ones, so gray batches are what they always were.
        let (brightness, saturation) = match augment.and_then(|a| a.contrast).filter(|_| ic == 3) {
            Some(c) => {
                let b = rng.random_bool(0.5).then(|| rng.random_range(-c..=c));
                (b, rng.random_bool(0.5).then(|| 1.0 + rng.random_range(-c..=c)))
            }
            None => (None, None),
        };
        planes.clear();
        planes.resize(ic * s * s, 0.0);
        for y in 0..s {
            let row = &img.data[((y0 + y) * img.width + x0) * ic..][..s * ic];
            for xx in 0..s {
                let sx = if flip { s - 1 - xx } else { xx };
                for ch in 0..ic {
                    planes[ch * s * s + y * s + xx] = unit(row[sx * ic + ch]);
                }
            }
        }
        if let Some(f) = contrast {
            let mean = planes.iter().sum::<f32>() / planes.len() as f32;
            planes.iter_mut().for_each(|v| *v = ((*v - mean) * f + mean).clamp(0.0, 1.0));
        }
        if let Some(b) = brightness {
            planes.iter_mut().for_each(|v| *v = (*v + b).clamp(0.0, 1.0));
        }
        if let Some(f) = saturation {
            let n = s * s;
            for p in 0..n {
                let g = (planes[p] + planes[n + p] + planes[2 * n + p]) / 3.0;
                for ch in 0..3 {
                    let v = &mut planes[ch * n + p];
                    *v = (g + (*v - g) * f).clamp(0.0, 1.0);
                }
            }
        }
        if ic == c {
            x.extend(planes.iter().map(|v| v - CENTRE));
        } else {
            // Gray into a network of `c` channels: the plane replicated, as the study fed its networks.
            for _ in 0..c {
                x.extend(planes.iter().map(|v| v - CENTRE));
            }
        }
        let (my, mx) = ((s - oh) / 2, (s - ow) / 2);
        for y in 0..oh {
            let row = &lab.data[(y0 + my + y) * lab.width + x0..][..s];
            for xx in 0..ow {
                let col = if flip { s - 1 - (mx + xx) } else { mx + xx };
                t.push(row[col] as u32);
            }
        }
    }
    Batch { n: idx.len(), x, t }
}

/// The batches of one epoch, built by `threads` background threads (at most `ahead` waiting), handed to
/// `consume` in order. `consume` returning an error stops the epoch.
#[allow(clippy::too_many_arguments)]
pub fn for_each_batch<E>(
    samples: &[Sample],
    order: &[usize],
    batch: usize,
    shape: Shape,
    augment: Option<Augment>,
    seed: u64,
    threads: usize,
    mut consume: impl FnMut(usize, Batch) -> Result<(), E>,
) -> Result<(), E> {
    let chunks: Vec<&[usize]> = order.chunks(batch.max(1)).collect();
    let threads = threads.clamp(1, chunks.len().max(1));
    let (tx, rx) = crossbeam_channel::bounded::<(usize, Batch)>(2 * threads);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let stop = &stop;
    std::thread::scope(|scope| {
        for w in 0..threads {
            let tx = tx.clone();
            let chunks = &chunks;
            scope.spawn(move || {
                for k in (w..chunks.len()).step_by(threads) {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        return;
                    }
                    let b = make_batch(samples, chunks[k], shape, augment, mix(&[seed, k as u64]));
                    if tx.send((k, b)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(tx);
        let mut pending: BTreeMap<usize, Batch> = BTreeMap::new();
        let mut next = 0;
        let mut result = Ok(());
        while next < chunks.len() {
            let Ok((k, b)) = rx.recv() else { break };
            pending.insert(k, b);
            while let Some(b) = pending.remove(&next) {
                if let Err(e) = consume(next, b) {
                    result = Err(e);
                    break;
                }
                next += 1;
            }
            if result.is_err() {
                break;
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        // Unblock producers waiting on a full channel.
        while rx.try_recv().is_ok() {}
        drop(rx);
        result
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(n: usize, side: usize) -> Vec<Sample> {
        (0..n)
            .map(|i| Sample {
                image: Arc::new(Image::gray(Tensor2 { height: side, width: side + 3, data: (0..side * (side + 3)).map(|p| ((p * 37 + i * 1000) % 65536) as u16).collect() })),
                labels: Arc::new(Tensor2 { height: side, width: side + 3, data: (0..side * (side + 3)).map(|p| ((p + i) % 3) as u8).collect() }),
            })
            .collect()
    }

    #[test]
    fn batches_are_the_same_with_one_or_three_threads_and_differ_between_epochs() {
        let s = samples(7, 20);
        let shape = Shape { input: 16, output: (12, 12), channels: 3 };
        let aug = Some(Augment { flip: true, contrast: Some(0.25) });
        let collect = |threads: usize, epoch: usize| {
            let order = epoch_order(s.len(), 9, epoch);
            let mut out = Vec::new();
            for_each_batch::<()>(&s, &order, 3, shape, aug, mix(&[9, epoch as u64]), threads, |k, b| {
                out.push((k, b));
                Ok(())
            })
            .unwrap();
            out
        };
        let one = collect(1, 0);
        assert_eq!(one.iter().map(|(k, _)| *k).collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(one[2].1.n, 1, "the last batch holds the remainder");
        assert_eq!(one, collect(3, 0));
        assert_ne!(one, collect(1, 1));
        let b = &one[0].1;
        assert_eq!((b.x.len(), b.t.len()), (3 * 3 * 16 * 16, 3 * 12 * 12));
        assert!(b.x.iter().all(|v| (-0.5..=0.5).contains(v)));
        // Gray replicated: the three channels of an image are equal.
        assert_eq!(b.x[..256], b.x[256..512]);
    }

    #[test]
    fn centre_windows_without_augmentation_and_labels_follow_a_flip() {
        let s = samples(1, 20);
        let shape = Shape { input: 16, output: (16, 16), channels: 1 };
        let b = make_batch(&s, &[0], shape, None, 1);
        let (x0, y0) = ((23 - 16) / 2, (20 - 16) / 2);
        assert_eq!(b.t[0], s[0].labels.data[y0 * 23 + x0] as u32);
        assert!((b.x[0] - (s[0].image.data[y0 * 23 + x0] as f32 / 65535.0 - 0.5)).abs() < 1e-6);
        // With flips, every window's labels stay aligned with its pixels: find a flipped batch and
        // check its first row against the source read backwards.
        for seed in 0..50 {
            let a = make_batch(&s, &[0], shape, Some(Augment { flip: true, contrast: None }), seed);
            let img = &s[0].image;
            let row0: Vec<f32> = a.x[..16].to_vec();
            let found = (0..=img.height - 16).flat_map(|y| (0..=img.width - 16).map(move |x| (x, y))).find(|&(x, y)| {
                (0..16).all(|i| (row0[i] - (img.data[y * img.width + x + 15 - i] as f32 / 65535.0 - 0.5)).abs() < 1e-6)
            });
            if let Some((x, y)) = found {
                assert_eq!(a.t[0], s[0].labels.data[y * img.width + x + 15] as u32, "seed {seed}");
                return;
            }
        }
        panic!("no flipped window in 50 seeds");
    }
}
