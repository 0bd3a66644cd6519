//! `augment` in a pipeline: one recipe changed recomputes exactly that replica of every image (and its
//! crops); both orders (augment then crop, crop then augment) work.

mod util;

use std::path::Path;

use util::*;

fn pipeline(dir: &Path, crop_first: bool) -> std::path::PathBuf {
    let classes = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/classes-phantom.toml");
    let (aug_in, crop_in) = if crop_first { ("crop", "merge") } else { ("merge", "augment") };
    write_pipeline(
        dir,
        &format!("a{crop_first}.toml"),
        &format!(
            r#"[pipeline]
name = "a"
workspace = "ws{crop_first}"
seed = 9

[[stage]]
id = "phantom"
kind = "phantom"
params = {{ count = 2, width = 160, height = 192, bits = 14, format = "dicom", photometric = "alternate" }}

[[stage]]
id = "ingest"
kind = "ingest-dicom"
inputs = ["phantom"]
params = {{ regions = ["mammary_gland", "pectoral_muscle", "nipple", "mass", "calcification", "text", "lymph_node"] }}

[[stage]]
id = "merge"
kind = "merge-masks"
inputs = ["ingest"]
params = {{ classes = "{0}" }}

[[stage]]
id = "augment"
kind = "augment"
inputs = ["{aug_in}"]

[[stage]]
id = "crop"
kind = "balanced-crop"
inputs = ["{crop_in}"]
params = {{ classes = "{0}", sizes = [64], per_image = 2 }}
"#,
            classes.display()
        ),
    )
}

#[test]
fn one_recipe_changed_recomputes_that_replica_and_its_crops_only() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), false);
    let s = run_json(&p, &[]);
    assert_eq!([stage(&s, "augment")["computed"].as_u64(), stage(&s, "crop")["computed"].as_u64()], [Some(20), Some(40)]);
    let ws = dir.path().join("wsfalse");
    let rows = manifest_rows(&ws, "augment");
    let r0 = rows.iter().find(|r| r.item_id == "phantom_0000/r0").unwrap();
    let merged = manifest_rows(&ws, "merge");
    assert_eq!(r0.outputs[0].file, merged[0].outputs[0].file, "replica 0 is the original, the very same object");
    assert!(matches!(&r0.meta["subject"], mammoflow::stages::MetaValue::Str(_)), "subject travels with replicas");
    // change recipe 5 (noise) only
    let mut recipes = mammoflow::augment::default_recipes();
    recipes[5].ops = vec![mammoflow::augment::Op::Noise { sigma_fraction: 0.05 }];
    let toml = recipes.iter().map(|r| format!("[[recipe]]\n{}", toml::to_string(r).unwrap())).collect::<Vec<_>>().join("\n");
    let text = std::fs::read_to_string(&p).unwrap().replace("inputs = [\"merge\"]\n\n[[stage]]\nid = \"crop\"", &format!("inputs = [\"merge\"]\n[stage.params]\n{}\n[[stage]]\nid = \"crop\"", toml.replace("[[recipe]]", "[[stage.params.recipe]]").replace("[[ops]]", "[[stage.params.recipe.ops]]")));
    std::fs::write(&p, text).unwrap();
    let st = status_json(&p, &[]);
    assert_eq!(stage(&st, "augment")["reasons"], serde_json::json!({"params changed": 2}), "{st}");
    let stale: Vec<&str> = stage(&st, "augment")["stale_items"].as_array().unwrap().iter().map(|i| i["item"].as_str().unwrap()).collect();
    assert_eq!(stale, vec!["phantom_0000/r5", "phantom_0001/r5"]);
    let s = run_json(&p, &[]);
    assert_eq!([stage(&s, "merge")["computed"].as_u64(), stage(&s, "augment")["computed"].as_u64(), stage(&s, "crop")["computed"].as_u64()], [Some(0), Some(2), Some(4)]);
    // the crop size changes crops only
    let s = run_json(&p, &["--set", "crop.sizes=[48]"]);
    assert_eq!([stage(&s, "augment")["computed"].as_u64(), stage(&s, "crop")["computed"].as_u64()], [Some(0), Some(40)]);
}

#[test]
fn crop_then_augment_works_too_and_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), true);
    let s = run_json(&p, &[]);
    assert_eq!([stage(&s, "crop")["computed"].as_u64(), stage(&s, "augment")["computed"].as_u64()], [Some(4), Some(40)]);
    let ws = dir.path().join("wstrue");
    let again = dir.path().join("again");
    run_json(&p, &["--workspace", again.to_str().unwrap(), "--workers", "1"]);
    // subjects (and so keys) are keyed per workspace; the replicas' pixels are the same
    let objects = |w: &Path| manifest_rows(w, "augment").into_iter().flat_map(|r| r.outputs.into_iter().map(|o| o.file)).collect::<Vec<_>>();
    let (a, b) = (objects(&ws), objects(&again));
    assert!(a == b, "same seed, same replicas ({} vs {} objects)", a.len(), b.len());
    let img = manifest_rows(&ws, "augment").into_iter().find(|r| r.item_id.ends_with("/r1")).unwrap();
    let npy = std::fs::read(ws.join(&img.outputs[0].file)).unwrap();
    assert!(String::from_utf8_lossy(&npy[..80]).contains("'<u2'"), "uint16 in, uint16 out");
}
