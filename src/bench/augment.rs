//! `bench augment`: image + label-map pairs per second on one core for each augmentation op and for the
//! chain (rotate -> blur -> mirror -> sharpen -> noise -> CLAHE), uint8 and uint16, 1024 and 256 px,
//! beside albumentations from `../shared/peers/albu_aug.py` in the same run.
//!
//! Parameters follow the peer: rotation by an angle uniform in [-180, 180] (bilinear image, nearest
//! labels), Gaussian blur sigma 1, sharpening (ours: unsharp mask sigma 1, amount 0.5; the peer: a 3x3
//! sharpen kernel with alpha 0.5), noise sigma 2% of the maximum, CLAHE 8 x 8 tiles clip 2, contrast
//! (ours: linear stretch of the 1st-99th percentiles; the peer: a linear contrast factor in [0.8, 1.2]).

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use rand::{Rng, SeedableRng};

use super::{peers_dir, peers_python, BenchOptions, Report, Row};
use crate::augment::ops::{self, Plane, Sample};

const OPS: [&str; 8] = ["rotate", "blur", "hflip", "sharpen", "noise", "clahe", "contrast", "pipeline"];

fn make_pair<T: Sample>(size: usize) -> (Plane<T>, Plane<u8>) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let noise = Plane { width: size, height: size, data: (0..size * size).map(|_| T::from_f32_round_clamped(rng.random::<f32>() * T::MAX)).collect() };
    let tex = ops::gaussian_blur(&noise, size as f32 / 128.0);
    let mut img = Vec::with_capacity(size * size);
    let mut lab = Vec::with_capacity(size * size);
    for y in 0..size {
        for x in 0..size {
            let (xx, yy) = (x as f32 / size as f32, y as f32 / size as f32);
            let base = (-((xx - 0.3).powi(2) / 0.08 + (yy - 0.5).powi(2) / 0.2)).exp();
            let t = tex.data[y * size + x].to_f32() / T::MAX - 0.5;
            img.push(T::from_f32_round_clamped((0.8 * base + 0.2 * t).clamp(0.0, 1.0) * T::MAX));
            lab.push(((xx - 0.35).powi(2) + (yy - 0.45).powi(2) < 0.01) as u8);
        }
    }
    (Plane { width: size, height: size, data: img }, Plane { width: size, height: size, data: lab })
}

fn apply<T: Sample>(op: &str, img: &Plane<T>, lab: &Plane<u8>, rng: &mut rand_chacha::ChaCha8Rng) -> (Plane<T>, Plane<u8>) {
    let zero = T::from_f32_round_clamped(0.0);
    match op {
        "rotate" => ops::rotate(img, lab, rng.random_range(-180.0..180.0), zero, 0),
        "blur" => (ops::gaussian_blur(img, 1.0), lab.clone()),
        "hflip" => ops::mirror(img, lab, true),
        "sharpen" => (ops::unsharp(img, 1.0, 0.5), lab.clone()),
        "noise" => (ops::gaussian_noise(img, 0.02, rng), lab.clone()),
        "clahe" => (ops::clahe(img, (8, 8), 2.0), lab.clone()),
        "contrast" => (ops::linear_stretch(img, 1.0, 99.0), lab.clone()),
        _ => {
            let (i, l) = ops::rotate(img, lab, rng.random_range(-180.0..180.0), zero, 0);
            let i = ops::gaussian_blur(&i, 1.0);
            let (i, l) = ops::mirror(&i, &l, true);
            let i = ops::unsharp(&i, 1.0, 0.5);
            let i = ops::gaussian_noise(&i, 0.02, rng);
            (ops::clahe(&i, (8, 8), 2.0), l)
        }
    }
}

/// Pairs per second of one op, at least `min_time` seconds and 5 calls after a warm-up.
fn rate<T: Sample>(op: &str, img: &Plane<T>, lab: &Plane<u8>, min_time: f64) -> f64 {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    std::hint::black_box(apply(op, img, lab, &mut rng));
    let t = Instant::now();
    let mut n = 0;
    loop {
        std::hint::black_box(apply(op, img, lab, &mut rng));
        n += 1;
        let e = t.elapsed().as_secs_f64();
        if n >= 5 && e >= min_time {
            return n as f64 / e;
        }
    }
}

/// Pins this process to its first allowed core, as the peer pins itself.
fn pin_one_core() {
    // SAFETY: plain libc calls on a zeroed cpu_set_t owned by this frame.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0 {
            if let Some(first) = (0..libc::CPU_SETSIZE as usize).find(|&c| libc::CPU_ISSET(c, &set)) {
                libc::CPU_ZERO(&mut set);
                libc::CPU_SET(first, &mut set);
                libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
            }
        }
    }
}

fn peer(notes: &mut Vec<String>) -> Vec<serde_json::Value> {
    let Some(py) = peers_python() else {
        notes.push("peer: set MAMMOFLOW_PEERS_PYTHON to a venv python with albumentations and opencv to measure them side by side".into());
        return Vec::new();
    };
    let out: PathBuf = std::env::temp_dir().join(format!("mammoflow-albu-{}.json", std::process::id()));
    let o = Command::new(&py)
        .arg(peers_dir().join("albu_aug.py"))
        .args(["--min-time", "0.5", "--out"])
        .arg(&out)
        .env("PEERS_MAX_WAIT", "60")
        .output();
    let _ = std::fs::remove_file(&out);
    match o {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).filter(|v| v.get("lib").is_some()).collect(),
        Ok(o) => {
            notes.push(format!("peer failed: {}", String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or("")));
            Vec::new()
        }
        Err(e) => {
            notes.push(format!("peer: cannot run {}: {e}", py.display()));
            Vec::new()
        }
    }
}

/// Runs the benchmark.
pub fn run(opts: &BenchOptions) -> anyhow::Result<Report> {
    let mut notes = vec!["pairs/s (image + label map) on one pinned core; peer = albumentations 2 (OpenCV) in the same run; ops as in the module doc".to_string()];
    let peers = if opts.no_peer { Vec::new() } else { peer(&mut notes) };
    pin_one_core();
    let mut rows = Vec::new();
    for size in [1024usize, 256] {
        for dtype in ["uint8", "uint16"] {
            let p = peers.iter().find(|v| v["lib"] == "albumentations" && v["dtype"] == dtype && v["size"] == size);
            for op in OPS {
                let ours = if dtype == "uint8" {
                    let (i, l) = make_pair::<u8>(size);
                    rate(op, &i, &l, 0.5)
                } else {
                    let (i, l) = make_pair::<u16>(size);
                    rate(op, &i, &l, 0.5)
                };
                let theirs = p.and_then(|v| v[op].as_f64());
                if let Some(fail) = p.and_then(|v| v[op].as_str()) {
                    notes.push(format!("albumentations {dtype} {size} {op}: {fail}"));
                }
                rows.push(Row { case: format!("{dtype} {size} {op}"), unit: "pairs/s".into(), ours, peer: theirs, speedup: theirs.map(|t| ours / t), ..Default::default() });
            }
        }
    }
    Ok(Report { bench: "augment".into(), rows, notes })
}
