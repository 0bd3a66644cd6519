use super::*;
use crate::nn::weighted_cross_entropy;
use candle_core::{DType, Device, Tensor};

fn spec(arch: Arch, width: f64, input: usize) -> ModelSpec {
    ModelSpec { width, input: Some([input, input]), ..ModelSpec::new(arch) }
}

fn randn(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    crate::nn::gradcheck::pseudo_random(n, seed).unwrap().to_dtype(DType::F32).unwrap().reshape(shape).unwrap()
}

#[test]
fn every_network_builds_runs_forward_and_trains_one_step() {
    let cases = [
        (Arch::Fcn32, 64, 64),
        (Arch::Fcn16, 64, 64),
        (Arch::Fcn8, 64, 64),
        (Arch::Unet, 188, 4),
        (Arch::Dilation10Front, 40, 40),
        (Arch::Dilation10Context, 40, 40),
        (Arch::Dilation10Global, 40, 40),
        (Arch::Deeplabv3, 65, 65),
    ];
    for (arch, input, out) in cases {
        let s = ModelSpec { classes: 3, ..spec(arch, 1.0 / 16.0, input) };
        let mut vm = VarMap::new();
        let model = build(&s, &mut vm, DType::F32, &Device::Cpu).unwrap();
        let x = randn(&[2, 3, input, input], 1);
        let y = model.forward_t(&x, true).unwrap();
        assert_eq!(y.dims(), &[2, 3, out, out], "{arch}");
        assert_eq!(model.output_size(input, input), (out, out), "{arch}");
        let t = Tensor::from_vec((0..2 * out * out).map(|i| (i % 3) as u32).collect::<Vec<_>>(), (2, out, out), &Device::Cpu).unwrap();
        let loss = weighted_cross_entropy(&y, &t, Some(&[0.2, 0.3, 0.5])).unwrap();
        let vars = trainable_vars(model.as_ref(), &vm);
        let mut opt = crate::nn::SgdMomentum::new(vars.iter().map(|v| v.1.clone()).collect(), 1e-2, 0.9, 5e-3);
        let before: Vec<f32> = vars[0].1.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        let grads = loss.backward().unwrap();
        if arch == Arch::Dilation10Context {
            let front = vm.data().lock().unwrap()["front.fc6.weight"].as_tensor().clone();
            assert!(grads.get(&front).is_none(), "the frozen front gets no gradient");
        }
        let with_grad = vars.iter().filter(|(_, v)| grads.get(v.as_tensor()).is_some()).count();
        assert_eq!(with_grad, vars.len(), "{arch}: every trainable variable gets a gradient");
        opt.step(&grads).unwrap();
        let after: Vec<f32> = vars[0].1.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        assert_ne!(before, after, "{arch}: the step moved {}", vars[0].0);
    }
}

#[test]
fn dilation10_stages_freeze_by_prefix() {
    let mut vm = VarMap::new();
    let m = build(&spec(Arch::Dilation10Context, 1.0 / 16.0, 40), &mut vm, DType::F32, &Device::Cpu).unwrap();
    let vars = trainable_vars(m.as_ref(), &vm);
    assert_eq!(vars.len(), 20, "ten context layers, weight and bias");
    assert!(vars.iter().all(|(n, _)| n.starts_with("context.")));
    let all = vm.all_vars().len();
    assert!(all > vars.len());
    let mut vm = VarMap::new();
    let m = build(&spec(Arch::Dilation10Global, 1.0 / 16.0, 40), &mut vm, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(trainable_vars(m.as_ref(), &vm).len(), vm.all_vars().len());
}

#[test]
fn identity_context_starts_from_the_front_scores() {
    // Front and context share the front's variables (same VarMap); a fresh identity context module
    // outputs ReLU(front scores): nine identity layers with ReLU and an identity 1x1.
    let mut vm = VarMap::new();
    let front = build(&spec(Arch::Dilation10Front, 1.0 / 16.0, 48), &mut vm, DType::F32, &Device::Cpu).unwrap();
    let ctx = build(&spec(Arch::Dilation10Context, 1.0 / 16.0, 48), &mut vm, DType::F32, &Device::Cpu).unwrap();
    let x = randn(&[1, 3, 48, 48], 3);
    let (mut pf, mut pc) = (Probe::on(), Probe::on());
    front.forward_probe(&x, false, &mut pf).unwrap();
    ctx.forward_probe(&x, false, &mut pc).unwrap();
    let s = pf.get("front scores (stride 8)").unwrap();
    assert_eq!(s.dims(), &[1, 2, 6, 6]);
    let want: Vec<f32> = s.relu().unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let got: Vec<f32> = pc.get("context scores").unwrap().flatten_all().unwrap().to_vec1().unwrap();
    for (a, b) in got.iter().zip(&want) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
}

#[test]
fn shapes_of_the_papers_configurations() {
    // Spatial shapes do not depend on the width, so narrow networks check the full-size inputs cheaply.
    let s = summary::summarize(&ModelSpec { width: 1.0 / 16.0, ..ModelSpec::new(Arch::Unet) }, &Device::Cpu).unwrap();
    assert_eq!(s.output, vec![1, 2, 388, 388]);
    let s = summary::summarize(&ModelSpec { width: 1.0 / 16.0, ..ModelSpec::new(Arch::Dilation10Front) }, &Device::Cpu).unwrap();
    assert_eq!(s.output_stride, Some(8));
    assert_eq!(s.output, vec![1, 2, 632, 632]);
    let s = summary::summarize(&ModelSpec { width: 1.0 / 16.0, ..ModelSpec::new(Arch::Deeplabv3) }, &Device::Cpu).unwrap();
    let feat = s.maps.iter().find(|(n, _)| n == "features before ASPP").unwrap();
    assert_eq!(&feat.1[2..], &[97, 97]);
    assert_eq!(s.output_stride, Some(8));
    assert_eq!(s.output, vec![1, 2, 769, 769]);
    let s16 = summary::summarize(&ModelSpec { width: 1.0 / 16.0, output_stride: Some(16), ..ModelSpec::new(Arch::Deeplabv3) }, &Device::Cpu).unwrap();
    assert_eq!(s16.output_stride, Some(16));
    for (arch, stride) in [(Arch::Fcn32, 32), (Arch::Fcn16, 16), (Arch::Fcn8, 8)] {
        let s = summary::summarize(&ModelSpec { width: 1.0 / 16.0, ..ModelSpec::new(arch) }, &Device::Cpu).unwrap();
        assert_eq!(s.output_stride, Some(stride), "{arch}");
        assert_eq!(s.output, vec![1, 2, 256, 256]);
    }
}

#[test]
fn full_size_parameter_counts() {
    // U-Net: 31.03 M (Ronneberger et al.); FCN-8s on VGG16: about 134 M (Long et al.).
    let unet = summary::count_params(&ModelSpec::new(Arch::Unet)).unwrap();
    assert!((31_025_000..31_035_000).contains(&unet), "U-Net {unet}");
    let fcn8 = summary::count_params(&ModelSpec { classes: 21, ..ModelSpec::new(Arch::Fcn8) }).unwrap();
    assert!((133_500_000..135_000_000).contains(&fcn8), "FCN-8s {fcn8}");
    // Width 1/4 of FCN-8s is the peer's --div 4 (8.4 M).
    let quarter = summary::count_params(&ModelSpec { width: 0.25, ..ModelSpec::new(Arch::Fcn8) }).unwrap();
    assert!((8_350_000..8_450_000).contains(&quarter), "FCN-8s /4 {quarter}");
    // U-Net base 16 (width 1/4): 1.94 M.
    let base16 = summary::count_params(&ModelSpec { width: 0.25, ..ModelSpec::new(Arch::Unet) }).unwrap();
    assert!((1_935_000..1_945_000).contains(&base16), "U-Net base 16 {base16}");
}

#[test]
fn bad_configurations_are_refused_with_the_reason() {
    let e = build(&spec(Arch::Unet, 0.25, 256), &mut VarMap::new(), DType::F32, &Device::Cpu).err().unwrap().to_string();
    assert!(e.contains("252") && e.contains("268"), "{e}");
    let e = build(&spec(Arch::Fcn8, 0.25, 250), &mut VarMap::new(), DType::F32, &Device::Cpu).err().unwrap().to_string();
    assert!(e.contains("multiples of 32"), "{e}");
    let e = build(&ModelSpec { output_stride: Some(4), ..spec(Arch::Deeplabv3, 0.25, 65) }, &mut VarMap::new(), DType::F32, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("use 8 or 16"), "{e}");
    let e = Arch::parse("fcn-9s").unwrap_err();
    assert!(e.contains("did you mean fcn8"), "{e}");
    assert_eq!(Arch::parse("FCN-8s"), Ok(Arch::Fcn8));
}

#[test]
fn fcn16_starts_from_fcn32_weights() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fcn32.safetensors");
    let mut vm32 = VarMap::new();
    build(&spec(Arch::Fcn32, 1.0 / 16.0, 64), &mut vm32, DType::F32, &Device::Cpu).unwrap();
    vm32.save(&path).unwrap();
    let mut vm16 = VarMap::new();
    build(&spec(Arch::Fcn16, 1.0 / 16.0, 64), &mut vm16, DType::F32, &Device::Cpu).unwrap();
    let report = init::init_from(&vm16, &path).unwrap();
    assert_eq!(report.loaded.len(), vm32.all_vars().len());
    assert_eq!(report.missing, vec!["score_pool4.bias", "score_pool4.weight", "upscore2.weight"]);
    let a = vm32.data().lock().unwrap()["fc6.weight"].as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = vm16.data().lock().unwrap()["fc6.weight"].as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(a, b);
    // And FCN16 into FCN8: only the pool3 skip starts fresh.
    let path16 = dir.path().join("fcn16.safetensors");
    vm16.save(&path16).unwrap();
    let mut vm8 = VarMap::new();
    build(&spec(Arch::Fcn8, 1.0 / 16.0, 64), &mut vm8, DType::F32, &Device::Cpu).unwrap();
    let report = init::init_from(&vm8, &path16).unwrap();
    assert_eq!(report.missing, vec!["score_pool3.bias", "score_pool3.weight", "upscore_pool4.weight"]);
    assert!(report.unused.is_empty());
    // A file of another width is refused, naming the tensor.
    let mut wide = VarMap::new();
    build(&spec(Arch::Fcn16, 1.0 / 8.0, 64), &mut wide, DType::F32, &Device::Cpu).unwrap();
    let e = init::init_from(&wide, &path).unwrap_err().to_string();
    assert!(e.contains("has shape") && e.contains("fcn32.safetensors"), "{e}");
}

#[test]
fn vgg16_weights_load_from_torchvision_names() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vgg16.safetensors");
    let w = 1.0 / 16.0;
    let mut ts = std::collections::HashMap::new();
    let c11 = ch(64, w);
    ts.insert("features.0.weight".to_string(), Tensor::ones((c11, 3, 3, 3), DType::F32, &Device::Cpu).unwrap());
    ts.insert("features.28.bias".to_string(), Tensor::ones(ch(512, w), DType::F32, &Device::Cpu).unwrap());
    ts.insert("classifier.0.weight".to_string(), Tensor::ones((ch(4096, w), ch(512, w) * 49), DType::F32, &Device::Cpu).unwrap());
    candle_core::safetensors::save(&ts, &path).unwrap();
    let mut vm = VarMap::new();
    build(&spec(Arch::Dilation10Front, w, 40), &mut vm, DType::F32, &Device::Cpu).unwrap();
    let r = init::load_vgg16(&vm, &path, "front.").unwrap();
    assert_eq!(r.loaded, vec!["front.conv1_1.weight", "front.conv5_3.bias", "front.fc6.weight"]);
    let fc6 = vm.data().lock().unwrap()["front.fc6.weight"].as_tensor().sum_all().unwrap().to_scalar::<f32>().unwrap();
    assert_eq!(fc6 as usize, ch(4096, w) * ch(512, w) * 49);
}

#[test]
fn the_start_is_logged_and_unusable_files_refused() {
    let mut vm = VarMap::new();
    build(&spec(Arch::Fcn32, 1.0 / 16.0, 64), &mut vm, DType::F32, &Device::Cpu).unwrap();
    let line = init::apply_start(&vm, Arch::Fcn32, &init::StartFrom::default()).unwrap();
    assert!(line.contains("training from scratch") && line.contains("VGG16"), "{line}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fcn32.safetensors");
    vm.save(&path).unwrap();
    let mut vm16 = VarMap::new();
    build(&spec(Arch::Fcn16, 1.0 / 16.0, 64), &mut vm16, DType::F32, &Device::Cpu).unwrap();
    let line = init::apply_start(&vm16, Arch::Fcn16, &init::StartFrom { init_from: Some(path.clone()), vgg16: None }).unwrap();
    assert!(line.contains("initialised from") && line.contains("kept their initial values"), "{line}");
    // A file with nothing in common, or VGG16 weights for a network without VGG16, are errors.
    let mut vm_unet = VarMap::new();
    build(&spec(Arch::Unet, 1.0 / 16.0, 188), &mut vm_unet, DType::F32, &Device::Cpu).unwrap();
    let e = init::apply_start(&vm_unet, Arch::Unet, &init::StartFrom { init_from: Some(path.clone()), vgg16: None }).unwrap_err().to_string();
    assert!(e.contains("no tensor matched"), "{e}");
    let e = init::apply_start(&vm_unet, Arch::Unet, &init::StartFrom { init_from: None, vgg16: Some(path) }).unwrap_err().to_string();
    assert!(e.contains("no VGG16 encoder"), "{e}");
}

/// Every network computes the same forward output and the same gradient for every variable on our CPU
/// kernels as on candle's own ops (f64, eval mode so dropout is off, random inputs and weights).
#[test]
fn every_network_gets_the_same_gradients_on_our_kernels_and_on_candles_ops() {
    let cases = [(Arch::Fcn8, 64), (Arch::Fcn8, 96), (Arch::Fcn16, 64), (Arch::Unet, 188), (Arch::Dilation10Front, 40), (Arch::Dilation10Global, 40), (Arch::Deeplabv3, 65)];
    for (arch, input) in cases {
        let s = ModelSpec { classes: 3, ..spec(arch, 1.0 / 16.0, input) };
        let mut vm = VarMap::new();
        let model = build(&s, &mut vm, DType::F64, &Device::Cpu).unwrap();
        // Non-zero skip scores, so the FCN skips' gradients are exercised too, and a random context
        // module (its identity start passes exact zeros into ReLUs, where candle's ReLU gradient is 1 and
        // PyTorch's, like ours, 0).
        for (name, var) in vm.data().lock().unwrap().iter() {
            if name.starts_with("score_pool") || name.starts_with("context.") {
                var.set(&randn(var.dims(), 9).to_dtype(DType::F64).unwrap()).unwrap();
            }
        }
        let x = randn(&[2, 3, input, input], 1).to_dtype(DType::F64).unwrap();
        let (out, _) = model.output_size(input, input);
        let t = Tensor::from_vec((0..2 * out * out).map(|i| ((i * 7) % 3) as u32).collect::<Vec<_>>(), (2, out, out), &Device::Cpu).unwrap();
        let run = || {
            let y = model.forward_t(&x, false).unwrap();
            let loss = weighted_cross_entropy(&y, &t, Some(&[0.2, 0.3, 0.5])).unwrap();
            let g = loss.backward().unwrap();
            let vars = trainable_vars(model.as_ref(), &vm);
            let grads: Vec<(String, Vec<f64>)> = vars.iter().filter_map(|(n, v)| g.get(v.as_tensor()).map(|g| (n.clone(), g.flatten_all().unwrap().to_vec1().unwrap()))).collect();
            (y.flatten_all().unwrap().to_vec1::<f64>().unwrap(), grads)
        };
        let (y1, g1) = run();
        let (y2, g2) = crate::nn::kernels::with_candle_ops(run);
        let rel = |a: &[f64], b: &[f64]| {
            let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-6); // exactly-zero gradients (GroupNorm on a 1 x 1 map) come out as 1e-19 noise
            a.iter().zip(b).fold(0.0f64, |m, (p, q)| m.max((p - q).abs() / scale))
        };
        assert!(rel(&y1, &y2) < 1e-10, "{arch} {input}: forward differs by {}", rel(&y1, &y2));
        assert_eq!(g1.len(), g2.len(), "{arch}: the same variables get gradients");
        for ((n1, a), (n2, b)) in g1.iter().zip(&g2) {
            assert_eq!(n1, n2);
            assert!(rel(a, b) < 1e-9, "{arch} {input}: gradient of {n1} differs by {} (of its largest entry): {:?} vs {:?}", rel(a, b), &a[..a.len().min(6)], &b[..b.len().min(6)]);
        }
    }
}
