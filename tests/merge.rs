//! `merge-masks` on the real ddsm-tissue set and on small hand-made cases.

mod util;

use std::path::Path;

use mammoflow::npy::Tensor2;
use util::*;

fn table(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("configs").join(name).display().to_string()
}

#[test]
fn ddsm_masks_merge_back_into_the_published_label_maps_exactly() {
    let root = data_root().join("ddsm-tissue");
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(
        dir.path(),
        "m.toml",
        &format!(
            "[pipeline]\nname = \"m\"\nworkspace = \"ws\"\n[[stage]]\nid = \"ingest\"\nkind = \"ingest-png\"\n\
             params = {{ root = \"{}\", regions = [\"background\", \"adipose\", \"fibroglandular\", \"pectoral\"] }}\n\
             [[stage]]\nid = \"merge\"\nkind = \"merge-masks\"\ninputs = [\"ingest\"]\nparams = {{ classes = \"{}\", smoothing = false }}\n",
            root.display(),
            table("classes-ddsm-tissue.toml")
        ),
    );
    let s = run_json(&p, &[]);
    assert_eq!((stage(&s, "merge")["computed"].as_u64(), s["failed"].as_u64()), (Some(60), Some(0)), "{s}");
    let ws = dir.path().join("ws");
    let rows = manifest_rows(&ws, "merge");
    assert_eq!(rows.len(), 60);
    let value = [64u8, 128, 192, 255];
    for r in &rows {
        let f = &r.outputs.iter().find(|o| o.role == "labels").unwrap().file;
        let merged = image::open(ws.join(f)).unwrap().to_luma8();
        let truth = image::open(root.join("labels").join(format!("{}_LI.png", r.item_id))).unwrap().to_luma8();
        assert_eq!(merged.dimensions(), truth.dimensions());
        let same = merged.as_raw().iter().zip(truth.as_raw()).all(|(&m, &t)| value[m as usize] == t);
        assert!(same, "{}: merged map differs from labels/", r.item_id);
    }
    // editing the class table invalidates exactly the merged maps
    let edited = dir.path().join("edited.toml");
    std::fs::write(&edited, std::fs::read_to_string(table("classes-ddsm-tissue.toml")).unwrap().replace("[0, 130, 200]", "[0, 131, 200]")).unwrap();
    let st = status_json(&p, &["--set", &format!("merge.classes={}", edited.display())]);
    assert_eq!(stage(&st, "ingest")["stale"], 0);
    assert_eq!(stage(&st, "merge")["reasons"], serde_json::json!({"params changed": 60}));
}

fn png(dir: &Path, name: &str, w: usize, h: usize, f: impl Fn(usize, usize) -> u8) {
    let data = (0..w * h).map(|i| f(i % w, i / w)).collect();
    std::fs::write(dir.join(name), mammoflow::codec::encode_u8(&Tensor2 { height: h, width: w, data })).unwrap();
}

#[test]
fn overlaps_follow_priority_and_bad_masks_fail_alone() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("images")).unwrap();
    std::fs::create_dir_all(data.join("masks")).unwrap();
    for id in ["a", "b"] {
        png(&data.join("images"), &format!("{id}.png"), 8, 8, |x, y| (x * 8 + y) as u8);
        // gland: left half; mass: a square overlapping it; mass has the higher priority
        png(&data.join("masks"), &format!("{id}_mammary_gland.png"), 8, 8, |x, _| if x < 4 { 255 } else { 0 });
        png(&data.join("masks"), &format!("{id}_mass.png"), 8, 8, |x, y| if (2..6).contains(&x) && (2..6).contains(&y) { 255 } else { 0 });
    }
    // b's mass mask is not binary
    png(&data.join("masks"), "b_mass.png", 8, 8, |x, _| [0, 128, 255][x % 3]);
    std::fs::write(
        dir.path().join("classes.toml"),
        "background = \"background\"\n[[class]]\nname = \"background\"\nid = 0\npriority = 0\n\
         [[class]]\nname = \"mass\"\nid = 4\npriority = 40\n[[class]]\nname = \"mammary_gland\"\nid = 1\npriority = 10\n",
    )
    .unwrap();
    let p = write_pipeline(
        dir.path(),
        "o.toml",
        "[pipeline]\nname = \"o\"\nworkspace = \"ws\"\n[[stage]]\nid = \"ingest\"\nkind = \"ingest-png\"\nparams = { root = \"data\", regions = [\"mammary_gland\", \"mass\"] }\n\
         [[stage]]\nid = \"merge\"\nkind = \"merge-masks\"\ninputs = [\"ingest\"]\nparams = { classes = \"classes.toml\", smoothing = false }\n",
    );
    let o = run(&["run", p.to_str().unwrap(), "--json", "--quiet"]);
    assert_eq!(o.status.code(), Some(1));
    let ws = dir.path().join("ws");
    let rows = manifest_rows(&ws, "merge");
    let a = &rows[0];
    let labels = image::open(ws.join(&a.outputs[1].file)).unwrap().to_luma8();
    let at = |x: u32, y: u32| labels.get_pixel(x, y).0[0];
    assert_eq!((at(0, 0), at(3, 3), at(5, 5), at(7, 7)), (1, 4, 4, 0), "gland=1, mass=4 on top, background=0");
    assert_eq!(a.meta.get("px_mass"), Some(&mammoflow::stages::MetaValue::Int(16)));
    let e = rows[1].error.as_deref().unwrap();
    // caught when ingesting, naming the mask file
    assert!(e.contains("b_mass.png") && e.contains("not binary (values 0, 128 and 255)"), "{e}");
    assert_eq!(rows[1].item_id, "b");
}
