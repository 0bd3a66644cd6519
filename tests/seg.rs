//! DICOM SEG out: a segmentation of a real CBIS-DDSM mammogram written with dicom-rs, read back by
//! dicom-rs (frames decode to the label map, references match the source) and by highdicom in
//! `scripts/check-seg.py`: the peers' Python (`MAMMOFLOW_PEERS_PYTHON`) when it has highdicom, else a
//! venv outside the repository (`~/.cache/mammoflow/seg-check-venv`) filled from PyPI on first use;
//! when neither can be had (no python3, no PyPI), the check is skipped and says why.
//!
//! And the same from a pipeline: an `export` stage with `dicom_seg = true` writes one SEG per evaluated
//! phantom DICOM image, equal to its prediction and referencing its source, rewrites only the SEGs
//! when their class table changes, and `export --out` copies them out.

mod util;

use std::path::Path;

use mammoflow::dicom::seg::{read_seg, write_seg, SegmentClass, SourceRef};
use util::*;

#[test]
fn a_seg_of_a_cbis_ddsm_mammogram_reads_back_with_dicom_rs_and_highdicom() {
    let src = data_root().join("dicom/mg-cbis-ddsm/P_00820_LEFT_CC.dcm");
    assert!(src.is_file(), "real data missing: {}", src.display());
    let opts = mammoflow::dicom::decode::DecodeOptions { voi: mammoflow::dicom::header::VoiChoice::None, max_pixels: u64::MAX };
    let img = mammoflow::dicom::decode::decode_path(&src, opts, &[0u8; 32]).unwrap().image;
    // A label map with the ddsm-tissue classes: intensity bands, and a block of the third class.
    let labels = mammoflow::npy::Tensor2 {
        height: img.height,
        width: img.width,
        data: img
            .data
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let (y, x) = (i / img.width, i % img.width);
                if y < img.height / 5 && x < img.width / 4 {
                    3
                } else if v > 40_000 {
                    2
                } else if v > 10_000 {
                    1
                } else {
                    0
                }
            })
            .collect(),
    };
    let table = mammoflow::classes::ClassTable::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/classes-ddsm-tissue.toml")).unwrap();
    let classes = SegmentClass::of_table(&table);
    let source = SourceRef::read(&src).unwrap();
    let bytes = write_seg(&labels, &classes, &source, "mammoflow test").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let seg_path = dir.path().join("P_00820_LEFT_CC_seg.dcm");
    std::fs::write(&seg_path, &bytes).unwrap();

    // dicom-rs
    let back = read_seg(&std::fs::read(&seg_path).unwrap()).unwrap();
    assert_eq!(back.size, (img.height, img.width));
    assert_eq!(back.labels, ["adipose", "fibroglandular", "pectoral"]);
    assert_eq!(back.references, (source.study_uid.clone(), source.series_uid.clone(), source.sop_instance_uid.clone()));
    let mut counts = Vec::new();
    for (k, (segment, px)) in back.frames.iter().enumerate() {
        assert_eq!(*segment as usize, k + 1);
        let id = classes[k].id;
        assert!(px.iter().zip(&labels.data).all(|(&p, &l)| (p == 1) == (l == id)), "frame {k} differs from the label map");
        counts.push(px.iter().filter(|&&p| p == 1).count());
    }
    assert!(counts.iter().all(|&c| c > 10_000), "every segment holds pixels: {counts:?}");

    // highdicom
    let py = match highdicom_python() {
        Ok(py) => py,
        Err(why) => {
            eprintln!("SKIPPED the highdicom check: {why}");
            return;
        }
    };
    let expected = serde_json::json!({ "labels": back.labels, "pixels": counts }).to_string();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/check-seg.py");
    let o = std::process::Command::new(&py).arg(&script).arg(&seg_path).arg(&src).arg(&expected).output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "highdicom refused the SEG:\n{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    let got: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(got["segmentation_type"], "BINARY", "{got}");
    eprintln!("highdicom {} read the SEG: {got}", got["highdicom"]);
}

/// A python with highdicom: the peers' when it has it, else a venv under `~/.cache/mammoflow` made on
/// first use. `Err` says why there is none.
fn highdicom_python() -> Result<std::path::PathBuf, String> {
    use std::process::Command;
    let has = |py: &Path| Command::new(py).args(["-c", "import highdicom, pydicom, numpy"]).output().is_ok_and(|o| o.status.success());
    if let Some(py) = std::env::var_os("MAMMOFLOW_PEERS_PYTHON").map(std::path::PathBuf::from).filter(|p| has(p)) {
        return Ok(py);
    }
    let home = std::env::var_os("HOME").ok_or("HOME is not set and MAMMOFLOW_PEERS_PYTHON has no highdicom")?;
    let dir = std::path::PathBuf::from(home).join(".cache/mammoflow/seg-check-venv");
    let py = dir.join("bin/python");
    if has(&py) {
        return Ok(py);
    }
    if !py.exists() {
        let o = Command::new("python3").args(["-m", "venv"]).arg(&dir).output().map_err(|e| format!("no python3 ({e})"))?;
        if !o.status.success() {
            return Err(format!("python3 -m venv {}: {}", dir.display(), String::from_utf8_lossy(&o.stderr)));
        }
    }
    let o = Command::new(dir.join("bin/pip")).args(["install", "--quiet", "--disable-pip-version-check", "highdicom"]).output().map_err(|e| format!("running pip: {e}"))?;
    if !o.status.success() || !has(&py) {
        return Err(format!("pip install highdicom into {} failed (PyPI needed once): {}", dir.display(), String::from_utf8_lossy(&o.stderr)));
    }
    Ok(py)
}

/// A pipeline over 8 phantom DICOM images: ingest-dicom -> merge -> split / crops -> train (1 epoch)
/// -> evaluate -> export with SEGs, reading `export_inputs`.
fn dicom_seg_pipeline(dir: &Path, export_inputs: &str) -> std::path::PathBuf {
    let head = labelled_phantom_head("seg", 5, r#"count = 8, width = 160, height = 192, format = "dicom", bits = 14, compression = "rle""#);
    assert!(head.contains(r#"kind = "ingest-png""#));
    let head = head.replace(r#"kind = "ingest-png""#, r#"kind = "ingest-dicom""#);
    write_pipeline(dir, "seg.toml", &format!("{head}{}", training_stages(1, &format!("inputs = {export_inputs}\nparams = {{ dicom_seg = true }}"))))
}

#[test]
fn the_export_stage_writes_a_seg_per_evaluated_dicom_image_and_rewrites_only_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    // Without the ingest stage among the inputs there is nothing to reference: a clear refusal.
    let p = dicom_seg_pipeline(dir.path(), r#"["eval"]"#);
    let o = run(&["run", p.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("needs the `ingest-dicom` stage") && err.contains(r#"inputs = ["eval", "ingest"]"#), "{err}");

    let p = dicom_seg_pipeline(dir.path(), r#"["eval", "ingest"]"#);
    let r = run_json(&p, &[]);
    assert_eq!(r["failed"], 0, "{r}");
    assert_eq!(stage(&r, "tables")["computed"], 9, "the tables and 8 SEGs: {r}");
    let ws = dir.path().join("ws");
    let table = mammoflow::classes::ClassTable::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/classes-phantom.toml")).unwrap();
    let classes = SegmentClass::of_table(&table);
    let evals = manifest_rows(&ws, "eval");
    let phantoms = manifest_rows(&ws, "phantom");
    let exports = manifest_rows(&ws, "tables");
    assert_eq!(exports.len(), 9);
    let mut first = None;
    for e in &evals {
        let row = exports.iter().find(|r| r.item_id == format!("seg/eval/{}", e.item_id)).unwrap_or_else(|| panic!("no SEG of {}", e.item_id));
        let seg = row.outputs.iter().find(|o| o.role == "seg").unwrap();
        let back = read_seg(&std::fs::read(ws.join(&seg.file)).unwrap()).unwrap();
        // every frame is its class in the evaluation's predicted label map
        let pred = e.outputs.iter().find(|o| o.role == "prediction").unwrap();
        let labels = mammoflow::codec::read_labels(&ws.join(&pred.file)).unwrap();
        assert_eq!(back.size, (192, 160));
        assert_eq!(back.labels, classes.iter().map(|c| c.name.clone()).collect::<Vec<_>>());
        for (k, (_, px)) in back.frames.iter().enumerate() {
            assert!(px.iter().zip(&labels.data).all(|(&p, &l)| (p == 1) == (l == classes[k].id)), "{}: frame {k} differs from the prediction", e.item_id);
        }
        // ... and it references the phantom DICOM file the image was ingested from
        let dcm = phantoms.iter().find(|r| r.item_id == e.item_id).unwrap().outputs.iter().find(|o| o.role == "image").unwrap();
        let source = SourceRef::read(&ws.join(&dcm.file)).unwrap();
        assert_eq!(back.references, (source.study_uid.clone(), source.series_uid.clone(), source.sop_instance_uid.clone()), "{}", e.item_id);
        // no raw UID in any manifest column
        assert!(!row.meta.values().chain(e.meta.values()).any(|v| format!("{v:?}").contains(&source.study_uid)), "{:?}", row.meta);
        first.get_or_insert((ws.join(&seg.file), ws.join(&dcm.file), back.labels.clone(), back.frames.iter().map(|(_, px)| px.iter().filter(|&&p| p == 1).count()).collect::<Vec<_>>()));
    }
    let study = SourceRef::read(&first.as_ref().unwrap().1).unwrap().study_uid;
    for m in ["ingest", "merge", "eval", "tables"] {
        let bytes = std::fs::read(ws.join(format!("manifests/{m}.parquet"))).unwrap();
        assert!(!bytes.windows(study.len()).any(|w| w == study.as_bytes()), "the raw study UID is in manifests/{m}.parquet");
    }

    // A no-op rerun computes nothing; another class table (colours) rewrites the SEGs only.
    assert_eq!(run_json(&p, &[])["computed"], 0);
    let other = dir.path().join("other-colours.toml");
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/classes-phantom.toml")).unwrap();
    assert!(text.contains("colour = [60, 180, 75]"));
    std::fs::write(&other, text.replace("colour = [60, 180, 75]", "colour = [61, 180, 75]")).unwrap();
    let set = format!("tables.classes=\"{}\"", other.display());
    let r = run_json(&p, &["--set", &set]);
    let computed = |s: &str| stage(&r, s)["computed"].as_u64().unwrap();
    assert_eq!([computed("ingest"), computed("train"), computed("eval"), computed("tables")], [0, 0, 0, 8], "{r}");

    // Switching SEGs off keeps the tables item as it was.
    let text = std::fs::read_to_string(&p).unwrap();
    let off = write_pipeline(dir.path(), "off.toml", &text.replace(r#"inputs = ["eval", "ingest"]"#, r#"inputs = ["eval"]"#).replace("dicom_seg = true", "dicom_seg = false"));
    let r = run_json(&off, &[]);
    assert_eq!((stage(&r, "tables")["items"].as_u64(), stage(&r, "tables")["computed"].as_u64()), (Some(1), Some(0)), "{r}");
    let r = run_json(&p, &["--set", &set]);
    assert_eq!(stage(&r, "tables")["computed"], 8, "the SEGs are made again, the tables kept: {r}");

    // `export --out` copies the SEGs stored by the last run, and removes one an earlier export left
    // for an image no longer evaluated.
    let out = dir.path().join("out");
    std::fs::create_dir_all(out.join("seg/eval")).unwrap();
    std::fs::write(out.join("seg/eval/gone_seg.dcm"), b"old").unwrap();
    let e = last_json(&run_ok(&["export", p.to_str().unwrap(), "--out", out.to_str().unwrap(), "--json"]));
    let files = e["seg_files"].as_array().unwrap();
    assert_eq!(files.len(), 8, "{e}");
    for ev in &evals {
        assert!(out.join(format!("seg/eval/{}_seg.dcm", ev.item_id)).is_file(), "{}", ev.item_id);
    }
    assert!(!out.join("seg/eval/gone_seg.dcm").exists());

    // highdicom reads one of them against its source.
    let (seg_path, src, labels, counts) = first.unwrap();
    let py = match highdicom_python() {
        Ok(py) => py,
        Err(why) => {
            eprintln!("SKIPPED the highdicom check: {why}");
            return;
        }
    };
    let expected = serde_json::json!({ "labels": labels, "pixels": counts }).to_string();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/check-seg.py");
    let o = std::process::Command::new(&py).arg(&script).arg(&seg_path).arg(&src).arg(&expected).output().unwrap();
    assert!(o.status.success(), "highdicom refused the exported SEG:\n{}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    eprintln!("highdicom read the exported SEG: {}", String::from_utf8_lossy(&o.stdout).trim());
}
