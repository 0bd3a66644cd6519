//! DICOM SEG out: a segmentation of a real CBIS-DDSM mammogram written with dicom-rs, read back by
//! dicom-rs (frames decode to the label map, references match the source) and by highdicom in
//! `scripts/check-seg.py`: the peers' Python (`MAMMOFLOW_PEERS_PYTHON`) when it has highdicom, else a
//! venv outside the repository (`~/.cache/mammoflow/seg-check-venv`) filled from PyPI on first use;
//! when neither can be had (no python3, no PyPI), the check is skipped and says why.

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
    let classes: Vec<SegmentClass> = table.classes.iter().filter(|c| c.name != table.background).map(|c| SegmentClass { id: c.id, name: c.name.clone(), colour: c.colour }).collect();
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
