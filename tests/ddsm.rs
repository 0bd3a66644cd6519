//! The real ddsm-tissue set (read from ../shared/datasets, copied to a temp folder before any change):
//! a rerun computes nothing; changing one source PNG makes exactly that item (and its descendant) stale
//! with reason "source changed", and a run recomputes exactly those.

mod util;

use util::*;

#[test]
fn one_changed_png_is_exactly_one_stale_item() {
    let dir = tempfile::tempdir().unwrap();
    copy_ddsm(dir.path(), None);
    let ws = dir.path().join("ws");
    let p = shipped_pipeline_before(dir.path(), "ddsm-tissue", "\n# The study's networks", &["classes-ddsm-tissue.toml"]);
    let ps = p.to_str().unwrap();
    let wss = ws.to_str().unwrap();
    // MAMMOFLOW_DATA points the shipped pipeline's preparation stages at the temp copy
    let go = |args: &[&str]| {
        let o = cmd(args).env("MAMMOFLOW_DATA", dir.path()).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        last_json(&String::from_utf8_lossy(&o.stdout))
    };
    let first = go(&["run", ps, "--workspace", wss, "--json", "--quiet"]);
    assert_eq!((stage(&first, "ingest")["computed"].as_u64(), stage(&first, "merge")["computed"].as_u64(), stage(&first, "crop")["computed"].as_u64()), (Some(60), Some(60), Some(2400)), "{first}");
    assert_eq!(first["failed"], 0);
    let rows = manifest_rows(&ws, "ingest");
    assert_eq!(rows.len(), 60);
    assert!(rows.iter().all(|r| r.outputs.len() == 5 && r.meta.get("width") == Some(&mammoflow::stages::MetaValue::Int(480))));

    let again = go(&["run", ps, "--workspace", wss, "--json", "--quiet"]);
    assert_eq!(again["computed"], 0);

    // change one pixel of one image
    let victim = dir.path().join("ddsm-tissue/images/B_3620_1.RIGHT_MLO.png");
    let img = image::open(&victim).unwrap().to_luma8();
    let mut img = img;
    let px = img.get_pixel_mut(100, 100);
    px.0[0] = px.0[0].wrapping_add(1);
    img.save(&victim).unwrap();

    let st = go(&["status", ps, "--workspace", wss, "--json"]);
    let ing = stage(&st, "ingest");
    assert_eq!((ing["stale"].as_u64(), ing["fresh"].as_u64()), (Some(1), Some(59)), "{st}");
    assert_eq!(ing["reasons"], serde_json::json!({"source changed": 1}));
    assert_eq!(ing["stale_items"][0]["item"], "B_3620_1.RIGHT_MLO");
    assert_eq!(stage(&st, "merge")["reasons"], serde_json::json!({"upstream changed": 1}));
    assert_eq!(stage(&st, "augment")["reasons"], serde_json::json!({"upstream changed": 10}));
    assert_eq!(stage(&st, "crop")["reasons"], serde_json::json!({"upstream changed": 40}));
    assert_eq!(stage(&st, "split")["reasons"], serde_json::json!({"upstream changed": 1}), "the one assignment item");
    assert_eq!(st["stale"], 1 + 1 + 1 + 10 + 40);

    let r = go(&["run", ps, "--workspace", wss, "--json", "--quiet"]);
    assert_eq!((stage(&r, "ingest")["computed"].as_u64(), stage(&r, "crop")["computed"].as_u64(), r["computed"].as_u64()), (Some(1), Some(40), Some(53)), "{r}");

    // touching a file without changing its content changes nothing (keys are content hashes)
    let bytes = std::fs::read(&victim).unwrap();
    std::fs::remove_file(&victim).unwrap();
    std::fs::write(&victim, bytes).unwrap();
    assert_eq!(go(&["status", ps, "--workspace", wss, "--json"])["stale"], 0);

    // a new image and its masks: only it is computed
    let src = dir.path().join("ddsm-tissue");
    for r in ["background", "adipose", "fibroglandular", "pectoral"] {
        std::fs::copy(src.join(format!("masks/A_0002_1.RIGHT_MLO_{r}.png")), src.join(format!("masks/Z_new_{r}.png"))).unwrap();
    }
    // an exact copy of an existing image is still a new item (its id, and so its subject, differ: it
    // must not reuse the other's record); its objects are stored once
    std::fs::copy(src.join("images/A_0002_1.RIGHT_MLO.png"), src.join("images/Z_new.png")).unwrap();
    let st = go(&["status", ps, "--workspace", wss, "--json"]);
    assert_eq!((stage(&st, "ingest")["items"].as_u64(), stage(&st, "ingest")["stale"].as_u64(), stage(&st, "merge")["stale"].as_u64()), (Some(61), Some(1), Some(1)), "{st}");
    let r = go(&["run", ps, "--workspace", wss, "--json", "--quiet"]);
    // + the contact sheet: one more crop shifts its evenly spaced sample
    assert_eq!(r["computed"], 1 + 1 + 1 + 10 + 40 + 1, "ingest, merge, the split assignment, its 10 replicas, 40 crops and the sheet");
    let subject = |id: &str| manifest_rows(&ws, "ingest").into_iter().find(|r| r.item_id == id).unwrap().meta["subject"].clone();
    assert_ne!(subject("Z_new"), subject("A_0002_1.RIGHT_MLO"), "the copy keeps its own subject");
    assert_eq!(manifest_rows(&ws, "crop").len(), 2440);
    // different pixels: a new item, computed alone
    let mut img = image::open(src.join("images/Z_new.png")).unwrap().to_luma8();
    img.get_pixel_mut(5, 5).0[0] ^= 1;
    img.save(src.join("images/Z_new.png")).unwrap();
    let st = go(&["status", ps, "--workspace", wss, "--json"]);
    assert_eq!(stage(&st, "ingest")["reasons"], serde_json::json!({"source changed": 1}));
    let r = go(&["run", ps, "--workspace", wss, "--json", "--quiet"]);
    let computed = |s: &str| stage(&r, s)["computed"].as_u64().unwrap();
    assert_eq!((computed("ingest"), computed("merge"), computed("augment")), (1, 1, 10), "{r}");
    // Early cutoff: a replica that comes out byte for byte as before (the changed corner pixel rotated
    // or clipped away) leaves its 4 crops alone; the others' crops are recomputed.
    let crops = computed("crop");
    assert!(crops % 4 == 0 && (4..=40).contains(&crops), "{r}");
}
