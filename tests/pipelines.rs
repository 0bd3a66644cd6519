//! The shipped real-data pipeline for mini-MIAS runs its preparation end to end (ingest -> merge ->
//! split, merge -> augment -> crop -> contact sheet) and draws its picture; a rerun computes nothing.
//! (Its training, minutes on 2 cores, is left to `mammoflow run`: the file is cut before it.)

mod util;

use util::*;

#[test]
fn mias_pipeline_runs_end_to_end_and_draws_its_picture() {
    let dir = tempfile::tempdir().unwrap();
    let p = shipped_pipeline_before(dir.path(), "mias", "\n# Lesion / background", &["classes-mias.toml"]);
    let ws = dir.path().join("ws");
    let go = || {
        let o = cmd(&["run", p.to_str().unwrap(), "--workspace", ws.to_str().unwrap(), "--json", "--quiet"]).env("MAMMOFLOW_DATA", data_root()).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        last_json(&String::from_utf8_lossy(&o.stdout))
    };
    let s = go();
    let counts: Vec<u64> = ["ingest", "merge", "split", "augment", "crop", "sheet"].iter().map(|id| stage(&s, id)["computed"].as_u64().unwrap()).collect();
    assert_eq!(counts, vec![80, 80, 1, 800, 1600, 1], "{s}");
    assert_eq!(s["failed"], 0);
    let sheet = image::open(ws.join("pictures/sheet.png")).unwrap();
    assert!(sheet.width() > 1000 && sheet.height() > 500);
    // Centres drawn from lesion and background alike: about half of the 70 abnormal images x 10
    // replicas x 2 crops sit on a lesion (a rotation can turn a lesion near the border out of the frame).
    let crops = manifest_rows(&ws, "crop");
    let on_lesion = crops.iter().filter(|r| r.meta.get("centre_class") == Some(&mammoflow::stages::MetaValue::Str("lesion".into()))).count();
    assert!((600..=800).contains(&on_lesion), "{on_lesion} crops centred on a lesion");
    assert_eq!(go()["computed"], 0);
}

#[test]
fn mass_roi_pipeline_prepares_every_crop_and_splits_by_case() {
    let dir = tempfile::tempdir().unwrap();
    let p = shipped_pipeline_before(dir.path(), "mass-roi-crops", "\n# The masses sit", &["classes-mass.toml"]);
    let ws = dir.path().join("ws");
    let o = cmd(&["run", p.to_str().unwrap(), "--workspace", ws.to_str().unwrap(), "--json", "--quiet"]).env("MAMMOFLOW_DATA", data_root()).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = last_json(&String::from_utf8_lossy(&o.stdout));
    let counts: Vec<u64> = ["ingest", "merge", "split", "augment", "crop"].iter().map(|id| stage(&s, id)["computed"].as_u64().unwrap()).collect();
    assert_eq!(counts, vec![40, 40, 1, 400, 800], "{s}");
    // Every crop holds mass pixels or background; 40 cases, one subject each: 24 / 4 / 12.
    let split = &manifest_rows(&ws, "split")[0].meta;
    let n = |k: &str| match &split[k] {
        mammoflow::stages::MetaValue::Int(v) => *v,
        other => panic!("{other:?}"),
    };
    assert_eq!((n("subjects_train"), n("subjects_val"), n("subjects_test")), (24, 4, 12));
    let mass: i64 = manifest_rows(&ws, "merge").iter().map(|r| match r.meta.get("px_mass") {
        Some(mammoflow::stages::MetaValue::Int(v)) => *v,
        _ => 0,
    }).sum();
    assert!(mass > 40 * 1000, "{mass} mass pixels in 40 images");
}
