//! DICOM decoding on the real files of ../shared/datasets/dicom (see its README), and PHI.

mod util;

use std::path::{Path, PathBuf};

use dicom_dictionary_std::tags;
use dicom_pixeldata::PixelDecoder;
use mammoflow::dicom::{decode_path, DecodeOptions, Decoded, VoiChoice};
use mammoflow::stages::MetaValue;
use util::*;

fn dicom_root() -> PathBuf {
    let d = data_root().join("dicom");
    assert!(d.join("non-mg/RG3_J2KR.dcm").is_file(), "real DICOM files missing under {}", d.display());
    d
}

fn dec(rel: &str, voi: VoiChoice) -> mammoflow::Result<Decoded> {
    decode_path(&dicom_root().join(rel), DecodeOptions { voi, max_pixels: 400_000_000 }, &[7; 32])
}

fn meta_str(d: &Decoded, k: &str) -> String {
    match d.meta.get(k) {
        Some(MetaValue::Str(s)) => s.clone(),
        other => panic!("{k}: {other:?}"),
    }
}

/// Stored values as dicom-pixeldata decodes them (no LUTs), for independent checks.
fn stored(rel: &str) -> Vec<u16> {
    let f = dicom_object::open_file(dicom_root().join(rel)).unwrap();
    f.decode_pixel_data().unwrap().data_ow()
}

#[test]
fn rg3_lossless_codecs_decode_to_identical_inverted_pixels() {
    let j2k = dec("non-mg/RG3_J2KR.dcm", VoiChoice::None).unwrap();
    let jpll = dec("non-mg/RG3_JPLL.dcm", VoiChoice::None).unwrap();
    let jls = dec("non-mg/RG3_JLSL.dcm", VoiChoice::None).unwrap();
    assert_eq!((j2k.image.width, j2k.image.height), (1760, 1760));
    assert!(j2k.image.data == jpll.image.data, "JPEG 2000 and JPEG lossless differ");
    assert!(j2k.image.data == jls.image.data, "JPEG 2000 and JPEG-LS differ");
    // MONOCHROME1: 10 bits stored, inverted so that dense is bright
    assert_eq!(meta_str(&j2k, "photometric"), "MONOCHROME1");
    let raw = stored("non-mg/RG3_J2KR.dcm");
    assert!(raw.iter().zip(&j2k.image.data).all(|(&s, &o)| o == 1023 - (s & 1023)), "output is not 1023 - stored");
    // windowed (the default): still identical across codecs, over the full 16-bit range
    let a = dec("non-mg/RG3_J2KR.dcm", VoiChoice::Window).unwrap();
    let c = dec("non-mg/RG3_JLSL.dcm", VoiChoice::Window).unwrap();
    assert!(a.image.data == c.image.data);
    assert_eq!(meta_str(&a, "voi"), "window");
    // WC 550 / WW 1024 over stored 0..1023: the window's lower edge (38) saturates (to 65535 after
    // inversion); its upper edge (1061) lies beyond the data, so the darkest output stays above 0
    let (lo, hi) = (*a.image.data.iter().min().unwrap(), *a.image.data.iter().max().unwrap());
    assert_eq!(hi, 65535);
    assert!(lo > 0 && lo < 4000, "{lo}");
}

#[test]
fn cbis_ddsm_mg_files_decode_full_size_and_full_16_bit_range() {
    for (name, rows, cols) in [("P_00820_LEFT_CC", 4736, 2624), ("P_00820_LEFT_MLO", 4680, 2576)] {
        let d = dec(&format!("mg-cbis-ddsm/{name}.dcm"), VoiChoice::Window).unwrap();
        assert_eq!((d.image.height, d.image.width), (rows, cols), "{name}");
        assert_eq!((d.image.data.iter().min(), d.image.data.iter().max()), (Some(&0), Some(&65535)), "{name}");
        assert_eq!(meta_str(&d, "modality"), "MG");
        assert_eq!(meta_str(&d, "voi"), "none", "no window in these files");
        assert_eq!(meta_str(&d, "transfer_syntax"), "1.2.840.10008.1.2.5");
        assert_eq!(meta_str(&d, "laterality"), "L");
        assert_eq!(d.meta.get("bits_stored"), Some(&MetaValue::Int(16)));
        // identity pipeline: output = stored values
        assert!(stored(&format!("mg-cbis-ddsm/{name}.dcm")) == d.image.data);
    }
}

#[test]
fn mg1_12_bit_jpeg_extended_matches_j2k_or_fails_clearly() {
    let j2k = dec("mg-nema-wg04/MG1_J2KI.dcm", VoiChoice::None).unwrap();
    assert_eq!((j2k.image.height, j2k.image.width), (4664, 3064));
    assert!(*j2k.image.data.iter().max().unwrap() <= 4095);
    match dec("mg-nema-wg04/MG1_JPLY.dcm", VoiChoice::None) {
        Ok(jply) => {
            let mad: f64 = jply.image.data.iter().zip(&j2k.image.data).map(|(a, b)| (*a as f64 - *b as f64).abs()).sum::<f64>() / j2k.image.data.len() as f64;
            assert!(mad < 20.0, "mean |JPLY - J2KI| = {mad}");
        }
        Err(e) => {
            let e = e.to_string();
            assert!(e.contains("MG1_JPLY.dcm") && e.contains("1.2.840.10008.1.2.4.51"), "{e}");
        }
    }
}

#[test]
fn voi_lut_sequence_is_applied() {
    let rel = "non-mg/vlut_04.dcm";
    let d = dec(rel, VoiChoice::Lut).unwrap();
    assert_eq!(meta_str(&d, "voi"), "lut");
    let f = dicom_object::open_file(dicom_root().join(rel)).unwrap();
    let item = &f.element(tags::VOILUT_SEQUENCE).unwrap().items().unwrap()[0];
    let desc: Vec<i64> = item.element(tags::LUT_DESCRIPTOR).unwrap().to_multi_int().unwrap();
    let lut: Vec<u16> = item.element(tags::LUT_DATA).unwrap().to_multi_int().unwrap();
    let bits = desc[2] as u32;
    let raw = stored(rel);
    let bytes_per = f.element(tags::BITS_ALLOCATED).unwrap().to_int::<u16>().unwrap() / 8;
    let samples: Vec<i64> = if bytes_per == 1 { raw.iter().flat_map(|v| v.to_ne_bytes()).map(|b| b as i64).collect() } else { raw.iter().map(|&v| v as i64).collect() };
    let max = ((1u32 << bits) - 1) as f64;
    for (i, &s) in samples.iter().enumerate().step_by(997).take(200) {
        let idx = (s - desc[1]).clamp(0, lut.len() as i64 - 1) as usize;
        let expect = (lut[idx] as f64 * 65535.0 / max).round() as u16;
        assert_eq!(d.image.data[i], expect, "pixel {i}: stored {s}");
    }
    let plain = dec(rel, VoiChoice::None).unwrap();
    assert_ne!(plain.image.data, d.image.data, "the LUT changes the image");
}

#[test]
fn modality_lut_sequence_is_applied_to_signed_data() {
    let rel = "non-mg/mlut_18.dcm";
    let d = dec(rel, VoiChoice::None).unwrap();
    let f = dicom_object::open_file(dicom_root().join(rel)).unwrap();
    assert_eq!(f.element(tags::PIXEL_REPRESENTATION).unwrap().to_int::<u16>().unwrap(), 1);
    let item = &f.element(tags::MODALITY_LUT_SEQUENCE).unwrap().items().unwrap()[0];
    let desc: Vec<i64> = item.element(tags::LUT_DESCRIPTOR).unwrap().to_multi_int().unwrap();
    let lut: Vec<u16> = item.element(tags::LUT_DATA).unwrap().to_multi_int().unwrap();
    let first = if desc[1] >= 32768 { desc[1] - 65536 } else { desc[1] };
    let bits_stored = f.element(tags::BITS_STORED).unwrap().to_int::<u32>().unwrap();
    let raw = stored(rel);
    for (i, &r) in raw.iter().enumerate().step_by(101).take(500) {
        let m = (r as i64) & ((1 << bits_stored) - 1);
        let v = if m >= 1 << (bits_stored - 1) { m - (1 << bits_stored) } else { m };
        let idx = (v - first).clamp(0, lut.len() as i64 - 1) as usize;
        assert_eq!(d.image.data[i], lut[idx], "pixel {i}: stored {v}");
    }
}

#[test]
fn signed_16_bit_jpeg_lossless_decodes() {
    let d = dec("non-mg/JPEG-LL.dcm", VoiChoice::None).unwrap();
    assert_eq!((d.image.height, d.image.width), (1024, 256));
    assert_eq!(d.meta.get("signed"), Some(&MetaValue::Int(1)));
}

/// Every string of the files' identifying elements, to search for in what a run writes.
fn phi_strings(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let f = dicom_object::open_file(e.unwrap().path()).unwrap();
        for tag in [tags::PATIENT_ID, tags::PATIENT_NAME, tags::PATIENT_BIRTH_DATE, tags::ACCESSION_NUMBER, tags::INSTITUTION_NAME] {
            if let Some(v) = f.get(tag).and_then(|e| e.to_str().ok()) {
                let v = v.trim().trim_end_matches('\0').to_string();
                if v.len() >= 4 {
                    out.push(v);
                }
            }
        }
    }
    out
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files_under(&p, out)
        } else {
            out.push(p)
        }
    }
}

#[test]
fn no_patient_identifiers_in_anything_a_run_writes() {
    let mg = dicom_root().join("mg-cbis-ddsm");
    let phi = phi_strings(&mg);
    assert!(phi.iter().any(|s| s.contains("P_00820")), "the test needs the PatientID strings: {phi:?}");
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(
        dir.path(),
        "mg.toml",
        &format!("[pipeline]\nname = \"mg\"\nworkspace = \"ws\"\n[[stage]]\nid = \"ingest\"\nkind = \"ingest-dicom\"\nparams = {{ root = \"{}\" }}\n", mg.display()),
    );
    let o = run(&["run", p.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let st = run(&["status", p.to_str().unwrap(), "--json"]);
    let mut written: Vec<(String, Vec<u8>)> = vec![("stdout".into(), o.stdout), ("stderr".into(), o.stderr), ("status".into(), st.stdout)];
    let mut files = Vec::new();
    files_under(&dir.path().join("ws"), &mut files);
    assert!(files.len() > 3);
    for f in files {
        written.push((f.display().to_string(), std::fs::read(&f).unwrap()));
    }
    for (name, bytes) in &written {
        for s in &phi {
            assert!(!bytes.windows(s.len()).any(|w| w == s.as_bytes()), "{name} contains identifying value {s:?}");
        }
    }
    let rows = manifest_rows(&dir.path().join("ws"), "ingest");
    for r in &rows {
        match r.meta.get("subject") {
            Some(MetaValue::Str(s)) => assert!(s.len() == 32 && s.chars().all(|c| c.is_ascii_hexdigit()), "{s}"),
            other => panic!("subject: {other:?}"),
        }
    }
}

#[test]
fn dicom_sample_pipeline_outcome_per_file_is_as_the_readme_says() {
    let dir = tempfile::tempdir().unwrap();
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/dicom-sample.toml");
    let o = cmd(&["run", p.to_str().unwrap(), "--workspace", dir.path().to_str().unwrap(), "--json", "--quiet"])
        .env("MAMMOFLOW_DATA", data_root())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "one file fails by design: {}", String::from_utf8_lossy(&o.stderr));
    let rows = manifest_rows(dir.path(), "ingest");
    assert_eq!(rows.len(), 12);
    for r in &rows {
        if r.item_id == "mg-nema-wg04/MG1_JPLY" {
            assert_eq!(r.status, Status::Failed);
            let e = r.error.as_deref().unwrap();
            assert!(e.contains("1.2.840.10008.1.2.4.51") && e.contains("12-bit"), "{e}");
        } else {
            assert_eq!(r.status, Status::Ok, "{}: {:?}", r.item_id, r.error);
        }
    }
}

#[test]
fn a_center_crop_of_ingested_dicom_crops_image_and_masks_and_drops_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let head = labelled_phantom_head("cc", 3, r#"count = 2, width = 96, height = 128, format = "dicom""#).replace(r#"kind = "ingest-png""#, r#"kind = "ingest-dicom""#);
    let p = write_pipeline(dir.path(), "cc.toml", &format!("{head}\n[[stage]]\nid = \"crop\"\nkind = \"center-crop\"\ninputs = [\"ingest\"]\nparams = {{ size = 64 }}\n"));
    let r = run_json(&p, &["--until", "crop"]);
    assert_eq!(r["failed"], 0, "{r}");
    let ingest = manifest_rows(&dir.path().join("ws"), "ingest");
    assert!(ingest[0].outputs.iter().any(|o| o.role == "reference"), "ingest-dicom keeps the reference");
    for row in manifest_rows(&dir.path().join("ws"), "crop") {
        let roles: Vec<&str> = row.outputs.iter().map(|o| o.role.as_str()).collect();
        assert_eq!(roles.len(), 8, "the image and 7 masks: {roles:?}");
        assert!(roles[0] == "image" && roles[1..].iter().all(|r| r.starts_with("mask:")), "{roles:?}");
    }
}
