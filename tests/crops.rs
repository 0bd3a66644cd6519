//! `balanced-crop` in a pipeline: crops are items of their own, so changing the crop sizes recomputes
//! crops only, and adding a size computes only the new crops.

mod util;

use std::path::Path;

use util::*;

fn pipeline(dir: &Path) -> std::path::PathBuf {
    let classes = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/classes-phantom.toml");
    let head = labelled_phantom_head("c", 3, "count = 3, width = 192, height = 256");
    write_pipeline(
        dir,
        "c.toml",
        &format!(
            r#"{head}
[[stage]]
id = "crop"
kind = "balanced-crop"
inputs = ["merge"]
params = {{ classes = "{0}", sizes = [64, 128], per_image = 3 }}
"#,
            classes.display()
        ),
    )
}

#[test]
fn crop_sets_are_incremental_and_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path());
    let s = run_json(&p, &[]);
    assert_eq!(stage(&s, "crop")["computed"], 18, "3 images x 2 sizes x 3 crops");
    let ws = dir.path().join("ws");
    let rows = manifest_rows(&ws, "crop");
    for r in &rows {
        let size = match r.meta["size"] { mammoflow::stages::MetaValue::Int(v) => v, _ => panic!() };
        let (x0, y0) = match (&r.meta["x0"], &r.meta["y0"]) {
            (mammoflow::stages::MetaValue::Int(x), mammoflow::stages::MetaValue::Int(y)) => (*x, *y),
            _ => panic!(),
        };
        assert!(x0 >= 0 && y0 >= 0 && x0 + size <= 192 && y0 + size <= 256, "{} inside the image", r.item_id);
        assert!(matches!(&r.meta["centre_class"], mammoflow::stages::MetaValue::Str(c) if c != "mammary_gland" && c != "background"), "{:?}", r.meta["centre_class"]);
    }
    // a new size computes only its crops; the others are untouched
    let r = run_json(&p, &["--set", "crop.sizes=[64, 128, 96]"]);
    assert_eq!([stage(&r, "merge")["computed"].as_u64(), stage(&r, "crop")["computed"].as_u64()], [Some(0), Some(9)]);
    // dropping a size drops its crops; nothing is recomputed
    let r = run_json(&p, &["--set", "crop.sizes=[128]"]);
    assert_eq!(r["computed"], 0);
    assert_eq!(manifest_rows(&ws, "crop").len(), 9);
    // same seed, another workspace and worker count: the same crops
    let other = dir.path().join("other");
    run_json(&p, &["--set", "crop.sizes=[128]", "--workspace", other.to_str().unwrap(), "--workers", "1"]);
    assert_eq!(comparable(&ws, "crop"), comparable(&other, "crop"));
}
