//! The shipped real-data pipeline for mini-MIAS runs end to end (ingest -> merge -> split, merge ->
//! augment -> crop -> contact sheet) and draws its picture; a rerun computes nothing.

mod util;

use std::path::Path;

use util::*;

#[test]
fn mias_pipeline_runs_end_to_end_and_draws_its_picture() {
    let dir = tempfile::tempdir().unwrap();
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/mias.toml");
    let ws = dir.path().join("ws");
    let go = || {
        let o = cmd(&["run", p.to_str().unwrap(), "--workspace", ws.to_str().unwrap(), "--json", "--quiet"]).env("MAMMOFLOW_DATA", data_root()).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        last_json(&String::from_utf8_lossy(&o.stdout))
    };
    let s = go();
    let counts: Vec<u64> = ["ingest", "merge", "split", "augment", "crop", "sheet"].iter().map(|id| stage(&s, id)["computed"].as_u64().unwrap()).collect();
    assert_eq!(counts, vec![80, 80, 1, 800, 3200, 1], "{s}");
    assert_eq!(s["failed"], 0);
    let sheet = image::open(ws.join("pictures/sheet.png")).unwrap();
    assert!(sheet.width() > 1000 && sheet.height() > 500);
    // crops centred on lesions where an image has one (normal images have none: uniform centres)
    let crops = manifest_rows(&ws, "crop");
    let on_lesion = crops.iter().filter(|r| r.meta.get("centre_class") == Some(&mammoflow::stages::MetaValue::Str("lesion".into()))).count();
    // 70 abnormal images x 10 replicas x 4 crops; a rotation can turn a lesion near the border out of
    // the frame, which leaves that replica without a candidate (uniform centre)
    assert!((70 * 10 * 4 * 95 / 100..=70 * 10 * 4).contains(&on_lesion), "{on_lesion} crops centred on a lesion");
    assert_eq!(go()["computed"], 0);
}
