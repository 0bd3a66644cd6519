//! The `train` stage in a pipeline: phantom -> ingest -> merge -> split (train / val / test) and
//! balanced crops -> train -> evaluate. It trains, stores its checkpoints and log, reads no crop of a
//! test subject, scores every whole image, and a rerun computes nothing; changing an evaluation param
//! re-scores without retraining.

mod util;

use std::path::Path;

use mammoflow::stages::MetaValue;
use polars::prelude::SerReader;
use util::*;

fn int(m: &MetaValue) -> i64 {
    match m {
        MetaValue::Int(v) => *v,
        other => panic!("not an int: {other:?}"),
    }
}

#[test]
fn train_stage_trains_on_the_train_fold_stores_checkpoints_and_is_cached() {
    let dir = tempfile::tempdir().unwrap();
    let p = trained_phantom_pipeline(dir.path(), 2);
    let r = run_json(&p, &[]);
    assert_eq!(r["failed"], 0, "{r}");
    assert_eq!(stage(&r, "train")["computed"], 1);
    let ws = dir.path().join("ws");
    let rows = manifest_rows(&ws, "train");
    assert_eq!(rows.len(), 1);
    let m = &rows[0].meta;
    assert_eq!(int(&m["epochs"]), 2);
    // 8 women: 4 train, 2 val, 2 test; 2 crops each. The test fold's crops are not read.
    assert_eq!((int(&m["train_images"]), int(&m["val_images"])), (8, 4), "{m:?}");
    let split = &manifest_rows(&ws, "split")[0].meta;
    assert_eq!((int(&split["subjects_train"]), int(&split["subjects_val"]), int(&split["subjects_test"])), (4, 2, 2));
    // Checkpoints name their network; the log has one row per epoch.
    let best = rows[0].outputs.iter().find(|o| o.role == "best").expect("a best checkpoint");
    let bytes = std::fs::read(ws.join(&best.file)).unwrap();
    let spec = mammoflow::train::checkpoint_spec(&bytes).unwrap();
    assert_eq!((spec.arch.name(), spec.classes), ("deeplabv3", 8));
    let log = rows[0].outputs.iter().find(|o| o.role == "log").unwrap();
    let df = polars::prelude::ParquetReader::new(std::fs::File::open(ws.join(&log.file)).unwrap()).finish().unwrap();
    assert_eq!(df.height(), 2);
    assert!(df.column("train_loss").unwrap().f64().unwrap().iter().all(|v| v.is_some_and(f64::is_finite)));
    // Nothing left in the resume folder once stored; a rerun computes nothing.
    assert!(std::fs::read_dir(ws.join("state/train")).map(|d| d.count() == 0).unwrap_or(true));
    let again = run_json(&p, &[]);
    assert_eq!(again["computed"], 0, "{again}");
}

#[test]
fn evaluation_scores_every_image_and_its_params_never_retrain() {
    let dir = tempfile::tempdir().unwrap();
    let p = trained_phantom_pipeline(dir.path(), 1);
    let r = run_json(&p, &[]);
    assert_eq!(r["failed"], 0, "{r}");
    let ws = dir.path().join("ws");
    let rows = manifest_rows(&ws, "eval");
    assert_eq!(rows.len(), 8);
    let mut total = mammoflow::metrics::Confusion::new(8);
    for row in &rows {
        assert!(matches!(row.meta.get("subject"), Some(MetaValue::Str(_))), "{:?}", row.meta);
        let f = row.outputs.iter().find(|o| o.role == "confusion").unwrap();
        let c: mammoflow::stages::evaluate::StoredConfusion = serde_json::from_slice(&std::fs::read(ws.join(&f.file)).unwrap()).unwrap();
        let c = mammoflow::metrics::Confusion::from_rows(&c.rows).unwrap();
        // Every pixel of the 160 x 192 image is scored.
        assert_eq!(c.metrics().pixels, 160 * 192);
        total.merge(&c).unwrap();
    }
    assert!(total.metrics().pixel_accuracy.is_some_and(|v| (0.0..=1.0).contains(&v)));
    // export: one metrics row per fold (4 / 2 / 2 women), one row per image, the epoch log.
    let out = dir.path().join("tables");
    let e = last_json(&run_ok(&["export", p.to_str().unwrap(), "--out", out.to_str().unwrap(), "--json"]));
    assert_eq!(e["rows"], serde_json::json!({"metrics": 3, "per_class": 24, "per_image": 8, "training_log": 1}), "{e}");
    let metrics = polars::prelude::ParquetReader::new(std::fs::File::open(out.join("metrics.parquet")).unwrap()).finish().unwrap();
    let folds: Vec<String> = metrics.column("fold").unwrap().str().unwrap().iter().map(|v| v.unwrap().to_string()).collect();
    assert_eq!(folds, vec!["test", "train", "val"]);
    let images: Vec<u64> = metrics.column("images").unwrap().u64().unwrap().iter().map(|v| v.unwrap()).collect();
    assert_eq!(images, vec![2, 4, 2]);
    for col in ["mean_iou", "pixel_accuracy", "mean_class_accuracy", "iou_background", "dice_mammary_gland", "train_key", "eval_keys"] {
        assert!(metrics.column(col).is_ok(), "metrics.parquet lacks {col}");
    }
    // The pixels of all folds add up to the summed matrix of every image.
    let px: u64 = metrics.column("pixels").unwrap().u64().unwrap().iter().map(|v| v.unwrap()).sum();
    assert_eq!(px, total.metrics().pixels);
    // report: the test fold beside the paper's row for the same network.
    let r = last_json(&run_ok(&["report", p.to_str().unwrap(), "--json"]));
    assert_eq!((r["fold"].as_str(), r["models"][0]["model"].as_str(), r["models"][0]["images"].as_u64()), (Some("test"), Some("deeplabv3"), Some(2)), "{r}");
    assert_eq!(r["models"][0]["paper"]["mean_iou"], 51.34);
    // The picture of the test fold: 2 images, each as image | truth | prediction.
    let pic = image::open(ws.join("pictures/report-eval.png")).unwrap();
    assert_eq!(r["pictures"][0].as_str().map(|s| s.ends_with("report-eval.png")), Some(true));
    assert!(pic.width() > 3 * 100 && pic.height() > 2 * 100, "{}x{}", pic.width(), pic.height());
    // ... and the bar chart of the three metrics.
    let chart = image::open(r["chart"].as_str().expect("a chart path")).unwrap().to_rgb8();
    assert!(chart.width() >= 400 && chart.height() >= 300, "{}x{}", chart.width(), chart.height());
    assert!(chart.pixels().any(|p| *p == mammoflow::chart::COLOURS[1]), "no mean IoU bar in the chart");
    // The export stage stored the same metrics table as the command wrote.
    let stored = &manifest_rows(&ws, "tables")[0];
    let f = stored.outputs.iter().find(|o| o.role == "metrics").unwrap();
    let staged = polars::prelude::ParquetReader::new(std::fs::File::open(ws.join(&f.file)).unwrap()).finish().unwrap();
    assert!(staged.equals_missing(&metrics), "{staged}\n{metrics}");
    // Evaluation params: evaluation and export recompute, training does not.
    let computed = |r: &serde_json::Value| ["train", "eval", "tables"].map(|s| stage(r, s)["computed"].as_u64().unwrap());
    let r = run_json(&p, &["--set", "eval.overlap=8"]);
    assert_eq!(computed(&r), [0, 8, 1], "{r}");
    // One epoch: the last checkpoint is the best one, so every image scores as before and the tables,
    // keyed by the evaluation results, are not rebuilt (early cutoff).
    let r = run_json(&p, &["--set", "eval.overlap=8", "--set", "eval.checkpoint=\"last\""]);
    assert_eq!(computed(&r), [0, 8, 0], "{r}");
    let r = run_json(&p, &["--set", "eval.overlap=8", "--set", "eval.checkpoint=\"last\""]);
    assert_eq!(computed(&r), [0, 0, 0], "{r}");
}

#[test]
fn predict_and_evaluate_commands_use_a_checkpoint_alone() {
    let dir = tempfile::tempdir().unwrap();
    let p = trained_phantom_pipeline(dir.path(), 1);
    assert_eq!(run_json(&p, &["--until", "train"])["failed"], 0);
    let ws = dir.path().join("ws");
    let train = &manifest_rows(&ws, "train")[0];
    let ckpt = ws.join(&train.outputs.iter().find(|o| o.role == "best").unwrap().file);
    // Two phantom images (16-bit PNG) with their merged label maps.
    let (images, masks) = (dir.path().join("images"), dir.path().join("masks"));
    std::fs::create_dir_all(&images).unwrap();
    std::fs::create_dir_all(&masks).unwrap();
    let phantom = manifest_rows(&ws, "phantom");
    let merge = manifest_rows(&ws, "merge");
    for ph in &phantom[..2] {
        let img = ph.outputs.iter().find(|o| o.role == "image").unwrap();
        std::fs::copy(ws.join(&img.file), images.join(format!("{}.png", ph.item_id))).unwrap();
        let lab = merge.iter().find(|r| r.item_id == ph.item_id).unwrap().outputs.iter().find(|o| o.role == "labels").unwrap();
        std::fs::copy(ws.join(&lab.file), masks.join(format!("{}.png", ph.item_id))).unwrap();
    }
    let c = ckpt.to_str().unwrap();
    let v = last_json(&run_ok(&["evaluate", "--checkpoint", c, "--images", images.to_str().unwrap(), "--masks", masks.to_str().unwrap(), "--json"]));
    assert_eq!((v["images"].as_u64(), v["pixels"].as_u64()), (Some(2), Some(2 * 160 * 192)), "{v}");
    assert!(v["mean_iou"].as_f64().is_some_and(|x| (0.0..=1.0).contains(&x)));
    assert_eq!(v["iou"].as_array().unwrap().len(), 8);
    let out = dir.path().join("pred");
    run_ok(&["predict", "--checkpoint", c, "--input", images.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    for ph in &phantom[..2] {
        for suffix in ["labels", "overlay"] {
            assert!(out.join(format!("{}_{suffix}.png", ph.item_id)).is_file());
        }
    }
    // A DICOM image: a DICOM SEG per image, whose frames are the label map `png` gives for it.
    let dcm = dir.path().join("dicom");
    std::fs::create_dir_all(&dcm).unwrap();
    let img16 = mammoflow::codec::decode_gray(&std::fs::read(images.join(format!("{}.png", phantom[0].item_id))).unwrap(), "phantom", u64::MAX).unwrap().into_u16();
    let spec = mammoflow::dicom::write::MgSpec { monochrome1: false, bits_stored: 16, rle: false, window: None, laterality: 'L', view: "CC".into(), patient_id: "SYNTHETIC-1".into(), uid_seed: 7, pixel_spacing: 0.1 };
    std::fs::write(dcm.join("one.dcm"), mammoflow::dicom::write::write_mg(&img16, &spec).unwrap()).unwrap();
    let (seg_out, png_out) = (dir.path().join("seg"), dir.path().join("seg-png"));
    let table = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/classes-phantom.toml");
    run_ok(&["predict", "--checkpoint", c, "--input", dcm.to_str().unwrap(), "--out", seg_out.to_str().unwrap(), "--format", "dicom-seg", "--classes", table.to_str().unwrap()]);
    run_ok(&["predict", "--checkpoint", c, "--input", dcm.to_str().unwrap(), "--out", png_out.to_str().unwrap()]);
    let seg = mammoflow::dicom::seg::read_seg(&std::fs::read(seg_out.join("one_seg.dcm")).unwrap()).unwrap();
    let labels = mammoflow::codec::read_labels(&png_out.join("one_labels.png")).unwrap();
    let source = mammoflow::dicom::seg::SourceRef::read(&dcm.join("one.dcm")).unwrap();
    assert_eq!(seg.references, (source.study_uid, source.series_uid, source.sop_instance_uid));
    assert_eq!(seg.labels, ["mammary_gland", "pectoral_muscle", "lymph_node", "mass", "calcification", "nipple", "text"]);
    for (k, (_, px)) in seg.frames.iter().enumerate() {
        let id = k as u8 + 1;
        assert!(px.iter().zip(&labels.data).all(|(&p, &l)| (p == 1) == (l == id)), "segment {} differs from the label map", k + 1);
    }
    // a PNG cannot be the source of a SEG
    let o = mammoflow_cmd(&["predict", "--checkpoint", c, "--input", images.to_str().unwrap(), "--out", seg_out.to_str().unwrap(), "--format", "dicom-seg"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("not a DICOM file"), "{}", String::from_utf8_lossy(&o.stderr));
    // A missing label map is named.
    std::fs::remove_file(masks.join(format!("{}.png", phantom[1].item_id))).unwrap();
    let o = mammoflow_cmd(&["evaluate", "--checkpoint", c, "--images", images.to_str().unwrap(), "--masks", masks.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no label map"), "{}", String::from_utf8_lossy(&o.stderr));
}

fn mammoflow_cmd(args: &[&str]) -> std::process::Output {
    util::run(args)
}

#[test]
fn a_train_stage_starts_from_an_earlier_one_by_variable_name() {
    // FCN32 -> FCN16 -> FCN8 and Dilation10 front -> context -> global chain trainings this way. With a
    // learning rate of 0 the second training must end exactly where the first one's best epoch was.
    let dir = tempfile::tempdir().unwrap();
    let p = trained_phantom_pipeline(dir.path(), 1);
    let classes = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/classes-phantom.toml");
    let mut text = std::fs::read_to_string(&p).unwrap();
    text.push_str(&format!(
        r#"
[[stage]]
id = "again"
kind = "train"
inputs = ["crop", "split", "train"]
params = {{ model = "deeplabv3", width = 0.125, input = 64, classes = "{}", epochs = 1, batch = 4, lr = 0.0, weight_decay = 0.0, patience = 0 }}
"#,
        classes.display()
    ));
    std::fs::write(&p, text).unwrap();
    let r = run_json(&p, &["--until", "again"]);
    assert_eq!((r["failed"].as_u64(), stage(&r, "again")["computed"].as_u64()), (Some(0), Some(1)), "{r}");
    let ws = dir.path().join("ws");
    let best = |stage: &str| {
        let row = &manifest_rows(&ws, stage)[0];
        std::fs::read(ws.join(&row.outputs.iter().find(|o| o.role == "best").unwrap().file)).unwrap()
    };
    assert!(best("again") == best("train"), "the started training did not begin from the earlier checkpoint");
    // A new first training makes the second one stale.
    let st = status_json(&p, &["--set", "train.lr=0.02"]);
    assert_eq!(stage(&st, "again")["stale"], 1, "{st}");
}

/// A Cityscapes-layout folder: `cities` cities of two 96 x 80 RGB frames each (sky, buildings, a car,
/// road; a strip of unlabelled pixels), with `gtFine` label ids.
fn cityscapes_fixture(root: &Path, cities: usize) {
    for c in 0..cities {
        let city = format!("city{c}");
        for f in 0..2 {
            let name = format!("{city}_000000_{f:06}");
            let (w, h) = (96u32, 80u32);
            let car = (10 + 13 * (c as u32 + f) % 40, 20 + 7 * c as u32 % 15);
            let label = |x: u32, y: u32| -> u8 {
                if y < 4 {
                    0 // unlabelled: ignored
                } else if y < 24 {
                    23 // sky
                } else if y < 44 {
                    if (car.0..car.0 + 30).contains(&x) && y >= 34 { 26 } else { 11 } // car, building
                } else if (car.0..car.0 + 30).contains(&x) && y < 52 {
                    26
                } else {
                    7 // road
                }
            };
            let colour = |l: u8| -> [u8; 3] { match l {
                23 => [70, 130, 180],
                11 => [90, 80, 70],
                26 => [20, 20, 150],
                7 => [128, 64, 128],
                _ => [0, 0, 0],
            } };
            let img = image::RgbImage::from_fn(w, h, |x, y| {
                let n = ((x * 31 + y * 17 + c as u32 * 7 + f) % 23) as u8;
                let [r, g, b] = colour(label(x, y));
                image::Rgb([r.saturating_add(n), g.saturating_add(n), b.saturating_add(n)])
            });
            let labels = image::GrayImage::from_fn(w, h, |x, y| image::Luma([label(x, y)]));
            let id = root.join("leftImg8bit/train").join(&city);
            let gt = root.join("gtFine/train").join(&city);
            std::fs::create_dir_all(&id).unwrap();
            std::fs::create_dir_all(&gt).unwrap();
            img.save(id.join(format!("{name}_leftImg8bit.png"))).unwrap();
            labels.save(gt.join(format!("{name}_gtFine_labelIds.png"))).unwrap();
        }
    }
}

#[test]
fn a_cityscapes_folder_trains_through_the_rgb_path_and_is_scored() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cityscapes");
    cityscapes_fixture(&root, 5);
    let classes = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/classes-cityscapes.toml");
    let p = write_pipeline(
        dir.path(),
        "c.toml",
        &format!(
            r#"[pipeline]
name = "cityscapes-fixture"
workspace = "ws"
seed = 2

[[stage]]
id = "ingest"
kind = "ingest-cityscapes"
params = {{ root = "{0}" }}

[[stage]]
id = "split"
kind = "split"
inputs = ["ingest"]
params = {{ train = 0.6, val = 0.2 }}

[[stage]]
id = "train"
kind = "train"
inputs = ["ingest", "split"]
params = {{ model = "deeplabv3", width = 0.125, input = 64, classes = "{1}", epochs = 2, batch = 2, lr = 0.01, patience = 0 }}

[[stage]]
id = "eval"
kind = "evaluate"
inputs = ["ingest", "train"]
params = {{ overlap = 16 }}
"#,
            root.display(),
            classes.display()
        ),
    );
    let r = run_json(&p, &[]);
    assert_eq!(r["failed"], 0, "{r}");
    let ws = dir.path().join("ws");
    // Ingest keeps the colour: (h, w, 3) uint8, and the city as the subject.
    let ingest = manifest_rows(&ws, "ingest");
    assert_eq!(ingest.len(), 10);
    let img = ingest[0].outputs.iter().find(|o| o.role == "image").unwrap();
    let decoded = mammoflow::npy::decode_image(&std::fs::read(ws.join(&img.file)).unwrap()).unwrap();
    assert_eq!((decoded.height, decoded.width, decoded.channels), (80, 96, 3));
    assert_eq!(ingest[0].meta.get("subject"), Some(&MetaValue::Str("city0".into())));
    // 5 cities: 3 train, 1 val, 1 test, two frames each.
    let m = &manifest_rows(&ws, "train")[0].meta;
    assert_eq!((int(&m["train_images"]), int(&m["val_images"])), (6, 2), "{m:?}");
    let row = &manifest_rows(&ws, "train")[0];
    let ckpt = row.outputs.iter().find(|o| o.role == "best").unwrap();
    let spec = mammoflow::train::checkpoint_spec(&std::fs::read(ws.join(&ckpt.file)).unwrap()).unwrap();
    assert_eq!((spec.classes, spec.in_channels), (19, 3));
    let log = row.outputs.iter().find(|o| o.role == "log").unwrap();
    let log = polars::prelude::ParquetReader::new(std::fs::File::open(ws.join(&log.file)).unwrap()).finish().unwrap();
    let losses: Vec<f64> = log.column("train_loss").unwrap().f64().unwrap().iter().map(|v| v.unwrap()).collect();
    assert_eq!(losses.len(), 2);
    assert!(losses.iter().all(|l| l.is_finite() && *l > 0.0), "{losses:?}");
    // Every frame is scored; the report has the network's test-fold row (2 frames).
    assert_eq!(manifest_rows(&ws, "eval").len(), 10);
    let r = last_json(&run_ok(&["report", p.to_str().unwrap(), "--json"]));
    let model = &r["models"][0];
    assert_eq!((model["model"].as_str(), model["images"].as_u64()), (Some("deeplabv3"), Some(2)), "{r}");
    for k in ["pixel_accuracy", "mean_iou", "mean_class_accuracy"] {
        assert!(model[k].as_f64().is_some_and(|v| (0.0..=100.0).contains(&v)), "{k}: {r}");
    }
}

/// Writes the images and masks of a phantom workspace's `phantom` stage as a folder `ingest-png` reads
/// (`images/<id>.png`, `masks/<id>_<region>.png`).
fn phantom_folder(ws: &Path, dest: &Path) {
    std::fs::create_dir_all(dest.join("images")).unwrap();
    std::fs::create_dir_all(dest.join("masks")).unwrap();
    for row in manifest_rows(ws, "phantom") {
        for o in &row.outputs {
            let to = match o.role.strip_prefix("mask:") {
                Some(region) => dest.join(format!("masks/{}_{region}.png", row.item_id)),
                None => dest.join(format!("images/{}.png", row.item_id)),
            };
            std::fs::copy(ws.join(&o.file), to).unwrap();
        }
    }
}

#[test]
fn editing_a_test_image_rescores_it_and_never_retrains() {
    let dir = tempfile::tempdir().unwrap();
    // The trained phantom pipeline, with its images read from a folder instead of the phantom stage.
    let p = trained_phantom_pipeline(dir.path(), 1);
    assert_eq!(run_json(&p, &["--until", "phantom"])["failed"], 0);
    let data = dir.path().join("data");
    phantom_folder(&dir.path().join("ws"), &data);
    let text = std::fs::read_to_string(&p).unwrap();
    let from_folder = text.replacen("inputs = [\"phantom\"]\nparams = {", &format!("params = {{ root = \"{}\",", data.display()), 1);
    assert_ne!(from_folder, text, "the ingest stage of the trained phantom pipeline reads the phantom stage");
    let p = write_pipeline(dir.path(), "folder.toml", &from_folder);
    let r = run_json(&p, &[]);
    assert_eq!((r["failed"].as_u64(), stage(&r, "train")["computed"].as_u64()), (Some(0), Some(1)), "{r}");
    let ws = dir.path().join("ws");
    let assignment = manifest_rows(&ws, "split")[0].outputs[0].file.clone();
    let folds = mammoflow::folds::read_assignment(&ws.join(assignment)).unwrap();
    let image_of = |fold: &str| {
        let subject = folds.iter().filter(|(_, f)| *f == fold).map(|(s, _)| s.clone()).min().unwrap();
        data.join(format!("images/{subject}.png"))
    };
    let brighten = |path: &Path| {
        let mut img = image::open(path).unwrap().to_luma16();
        for px in img.pixels_mut() {
            px.0[0] = px.0[0].saturating_add(3000);
        }
        img.save(path).unwrap();
    };
    let computed = |r: &serde_json::Value| ["ingest", "split", "crop", "train", "eval", "tables"].map(|s| stage(r, s)["computed"].as_u64().unwrap());

    // A test image: it is ingested, merged and cropped again, the split recomputes to the same
    // assignment, the training is not redone, and only that image is scored again.
    brighten(&image_of("test"));
    let st = status_json(&p, &[]);
    assert_eq!(stage(&st, "ingest")["stale"], 1, "{st}");
    let r = run_json(&p, &[]);
    assert_eq!(r["failed"], 0, "{r}");
    assert_eq!(computed(&r), [1, 1, 2, 0, 1, 1], "{r}");
    assert_eq!(status_json(&p, &[])["stale"], 0);

    // A training image does retrain (its crops are among the training's inputs).
    brighten(&image_of("train"));
    let r = run_json(&p, &[]);
    assert_eq!(computed(&r), [1, 1, 2, 1, 8, 1], "{r}");
}
