//! Parity with PyTorch: U-Net and FCN-8s at a narrow width, on fixed weights and inputs, give the
//! reference's forward output and the reference's gradients of a class-weighted cross-entropy to 1e-4
//! (relative to the largest magnitude of each tensor). The reference was made once by
//! `tests/reference/make_reference.py` (PyTorch 2.15) and is committed; PyTorch is not needed here.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use mammoflow::models::{self, init, Arch, ModelSpec};
use mammoflow::nn::weighted_cross_entropy;
use std::collections::HashMap;
use std::path::PathBuf;

const TOL: f64 = 1e-4;

fn reference(name: &str) -> HashMap<String, Tensor> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/reference").join(format!("{name}.safetensors"));
    candle_core::safetensors::load(&path, &Device::Cpu).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// max |a - b| / max |b|.
fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims());
    let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
    let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
    let scale = b.iter().fold(0f64, |m, v| m.max(v.abs() as f64)).max(1e-30);
    a.iter().zip(&b).fold(0f64, |m, (x, y)| m.max((*x as f64 - *y as f64).abs())) / scale
}

fn check(name: &str, spec: ModelSpec) {
    let r = reference(name);
    let mut vm = VarMap::new();
    let model = models::build(&spec, &mut vm, DType::F32, &Device::Cpu).unwrap();
    let weights: HashMap<String, Tensor> =
        r.iter().filter_map(|(k, v)| k.strip_prefix("w.").map(|n| (n.to_string(), v.clone()))).collect();
    let report = init::assign(&vm, &weights, name).unwrap();
    assert!(report.missing.is_empty() && report.unused.is_empty(), "{name}: names differ: {report}");

    let out = model.forward_t(&r["x"], false).unwrap();
    let e = rel_err(&out, &r["out"]);
    assert!(e < TOL, "{name}: forward differs by {e:.2e}");

    let target = r["target"].to_dtype(DType::U32).unwrap();
    let cw: Vec<f32> = r["class_weights"].to_vec1().unwrap();
    let loss = weighted_cross_entropy(&out, &target, Some(&cw)).unwrap();
    let e = rel_err(&loss.reshape(1).unwrap(), &r["loss"]);
    assert!(e < TOL, "{name}: loss differs by {e:.2e}");

    let grads = loss.backward().unwrap();
    let data = vm.data().lock().unwrap();
    let mut worst = (0f64, String::new());
    for (n, var) in data.iter() {
        let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("{name}: no gradient for {n}"));
        let e = rel_err(g, &r[&format!("g.{n}")]);
        if e > worst.0 {
            worst = (e, n.clone());
        }
    }
    assert!(worst.0 < TOL, "{name}: gradient of {} differs by {:.2e}", worst.1, worst.0);
    eprintln!("{name}: {} gradients within {:.1e} (worst {} at {:.2e})", data.len(), TOL, worst.1, worst.0);
}

#[test]
fn unet_matches_pytorch() {
    let spec = ModelSpec { classes: 3, width: 1.0 / 16.0, input: Some([188, 188]), ..ModelSpec::new(Arch::Unet) };
    check("unet", spec);
}

#[test]
fn fcn8_matches_pytorch() {
    let spec = ModelSpec { classes: 3, width: 1.0 / 32.0, input: Some([64, 96]), ..ModelSpec::new(Arch::Fcn8) };
    check("fcn8", spec);
}
