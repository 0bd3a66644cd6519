//! QuPath annotations in: hand-made GeoJSON fixtures filled pixel-exactly by `ingest-png`
//! (`masks_from = "qupath"`), clear per-item errors for what cannot be filled, ddsm-tissue masks traced
//! to polygons and filled back, and the shipped QuPath pipeline training through `merge-masks`.

mod util;

use std::path::Path;

use util::*;

const TABLE: &str = r#"background = "background"
[[class]]
name = "background"
id = 0
priority = 0
[[class]]
name = "adipose"
id = 1
priority = 10
[[class]]
name = "pectoral"
id = 2
priority = 20
"#;

fn feature(class: &str, name: &str, geometry: &str) -> String {
    format!(r#"{{"type":"Feature","geometry":{geometry},"properties":{{"objectType":"annotation","name":"{name}","classification":{{"name":"{class}","color":[1,2,3]}}}}}}"#)
}

fn collection(features: &[String]) -> String {
    format!(r#"{{"type":"FeatureCollection","features":[{}]}}"#, features.join(","))
}

/// A folder of 8 x 8 images with one GeoJSON each and a pipeline ingesting it; returns the pipeline.
fn fixture_folder(dir: &Path, annotations: &[(&str, String)]) -> std::path::PathBuf {
    let root = dir.join("data");
    std::fs::create_dir_all(root.join("images")).unwrap();
    std::fs::create_dir_all(root.join("annotations")).unwrap();
    for (stem, text) in annotations {
        let img = mammoflow::npy::Tensor2 { height: 8, width: 8, data: (0..64).map(|i| i as u8 * 3).collect() };
        std::fs::write(root.join(format!("images/{stem}.png")), mammoflow::codec::encode_u8(&img)).unwrap();
        std::fs::write(root.join(format!("annotations/{stem}.geojson")), text).unwrap();
    }
    std::fs::write(dir.join("classes.toml"), TABLE).unwrap();
    write_pipeline(
        dir,
        "q.toml",
        "[pipeline]\nname = \"q\"\nworkspace = \"ws\"\n\n[[stage]]\nid = \"ingest\"\nkind = \"ingest-png\"\n[stage.params]\nroot = \"data\"\nmasks_from = \"qupath\"\nclasses = \"classes.toml\"\nregions = [\"adipose\", \"pectoral\"]\n\n[[stage]]\nid = \"merge\"\nkind = \"merge-masks\"\ninputs = [\"ingest\"]\n[stage.params]\nclasses = \"classes.toml\"\nsmoothing = false\n",
    )
}

/// The stored mask of `region` for `item`, as rows of `#` and `.`.
fn mask_rows(ws: &Path, item: &str, region: &str) -> Vec<String> {
    let r = manifest_rows(ws, "ingest").into_iter().find(|r| r.item_id == item).unwrap_or_else(|| panic!("no item {item}"));
    let o = r.outputs.iter().find(|o| o.role == format!("mask:{region}")).unwrap_or_else(|| panic!("{item} has no {region} mask: {:?}", r.error));
    let m = mammoflow::codec::decode_u8(&std::fs::read(ws.join(&o.file)).unwrap(), "mask", u64::MAX, "mask").unwrap();
    m.data.chunks(m.width).map(|row| row.iter().map(|&v| if v > 0 { '#' } else { '.' }).collect()).collect()
}

fn meta_int(ws: &Path, item: &str, key: &str) -> i64 {
    let r = manifest_rows(ws, "ingest").into_iter().find(|r| r.item_id == item).unwrap();
    match r.meta.get(key) {
        Some(mammoflow::stages::MetaValue::Int(v)) => *v,
        other => panic!("{item} {key}: {other:?}"),
    }
}

#[test]
fn fixtures_fill_pixel_exactly_and_bad_annotations_fail_alone_naming_file_and_feature() {
    let dir = tempfile::tempdir().unwrap();
    let sq = |x0: f64, y0: f64, x1: f64, y1: f64| format!("[[{x0},{y0}],[{x1},{y0}],[{x1},{y1}],[{x0},{y1}],[{x0},{y0}]]");
    let poly = |rings: &[String]| format!(r#"{{"type":"Polygon","coordinates":[{}]}}"#, rings.join(","));
    let items = [
        // a square with a hole
        ("a_hole", collection(&[feature("adipose", "ring", &poly(&[sq(1.0, 1.0, 7.0, 7.0), sq(3.0, 3.0, 5.0, 5.0)]))])),
        // two classes overlapping (each keeps its own mask; merge-masks gives pectoral the overlap), a
        // MultiPolygon, and a point, a line and an unclassified area that are counted and left out;
        // `Pectoral` in another case still finds its class
        (
            "b_overlap",
            collection(&[
                feature("adipose", "big", &poly(&[sq(0.0, 0.0, 6.0, 4.0)])),
                feature("Pectoral", "corner", &poly(&[sq(4.0, 2.0, 8.0, 6.0)])),
                feature("adipose", "two", &format!(r#"{{"type":"MultiPolygon","coordinates":[[{}],[{}]]}}"#, sq(0.0, 6.0, 2.0, 8.0), sq(6.0, 7.0, 8.0, 8.0))),
                r#"{"type":"Feature","geometry":{"type":"Point","coordinates":[1,1]},"properties":{"classification":{"name":"adipose"}}}"#.into(),
                r#"{"type":"Feature","geometry":{"type":"LineString","coordinates":[[0,0],[3,3]]},"properties":{"name":"ruler"}}"#.into(),
                r#"{"type":"Feature","geometry":{"type":"Polygon","coordinates":[[[0,0],[1,0],[1,1],[0,0]]]},"properties":{"name":"nobody"}}"#.into(),
            ]),
        ),
        // partly outside: clipped and counted
        ("c_clipped", collection(&[feature("pectoral", "edge", &poly(&[sq(-3.0, -3.0, 2.0, 2.0)]))])),
        // failures, one each
        ("d_unknown", collection(&[feature("pectorl", "typo", &poly(&[sq(0.0, 0.0, 2.0, 2.0)]))])),
        ("e_outside", collection(&[feature("adipose", "far", &poly(&[sq(20.0, 20.0, 30.0, 30.0)]))])),
        ("f_bowtie", collection(&[feature("adipose", "bow", r#"{"type":"Polygon","coordinates":[[[0,0],[4,4],[4,0],[0,4],[0,0]]]}"#)])),
        ("g_text", "this is not GeoJSON".to_string()),
    ];
    let p = fixture_folder(dir.path(), &items);
    let o = run(&["run", p.to_str().unwrap(), "--json", "--quiet"]);
    assert_eq!(o.status.code(), Some(1), "completed with failed items: {}", String::from_utf8_lossy(&o.stderr));
    let s = last_json(&String::from_utf8_lossy(&o.stdout));
    assert_eq!((stage(&s, "ingest")["computed"].as_u64(), stage(&s, "ingest")["failed"].as_u64()), (Some(7), Some(4)), "{s}");
    let ws = dir.path().join("ws");

    assert_eq!(mask_rows(&ws, "a_hole", "adipose"), ["........", ".######.", ".######.", ".##..##.", ".##..##.", ".######.", ".######.", "........"]);
    assert_eq!(mask_rows(&ws, "a_hole", "pectoral"), ["........"; 8], "no annotation of that class: an empty mask");
    assert_eq!(mask_rows(&ws, "b_overlap", "adipose"), ["######..", "######..", "######..", "######..", "........", "........", "##......", "##....##"]);
    assert_eq!(mask_rows(&ws, "b_overlap", "pectoral"), ["........", "........", "....####", "....####", "....####", "....####", "........", "........"]);
    assert_eq!((meta_int(&ws, "b_overlap", "annotations"), meta_int(&ws, "b_overlap", "annotations_left_out")), (3, 3));
    let b = manifest_rows(&ws, "ingest").into_iter().find(|r| r.item_id == "b_overlap").unwrap();
    let Some(mammoflow::stages::MetaValue::Str(names)) = b.meta.get("annotations_left_out_names") else { panic!("{:?}", b.meta) };
    assert!(names.contains("a point") && names.contains("\"ruler\"") && names.contains("no classification"), "{names}");
    assert_eq!(mask_rows(&ws, "c_clipped", "pectoral"), ["##......", "##......", "........", "........", "........", "........", "........", "........"]);
    assert_eq!(meta_int(&ws, "c_clipped", "annotations_clipped"), 1);
    // merged: pectoral (priority 20) over adipose where they overlap
    let merged = manifest_rows(&ws, "merge").into_iter().find(|r| r.item_id == "b_overlap").unwrap();
    let labels = mammoflow::codec::read_labels(&ws.join(&merged.outputs.iter().find(|o| o.role == "labels").unwrap().file)).unwrap();
    assert_eq!(&labels.data[2 * 8..3 * 8], &[1, 1, 1, 1, 2, 2, 2, 2]);

    let err = |item: &str| manifest_rows(&ws, "ingest").into_iter().find(|r| r.item_id == item).unwrap().error.unwrap_or_default();
    for (item, want) in [
        ("d_unknown", vec!["d_unknown.geojson", "feature 1 (\"typo\")", "class `pectorl`", "did you mean `pectoral`"]),
        ("e_outside", vec!["e_outside.geojson", "feature 1 (\"far\")", "outside the 8 x 8 image"]),
        ("f_bowtie", vec!["f_bowtie.geojson", "feature 1 (\"bow\")", "self-intersection"]),
        ("g_text", vec!["g_text.geojson", "not GeoJSON"]),
    ] {
        let e = err(item);
        assert!(want.iter().all(|w| e.contains(w)), "{item}: {e}");
    }
}

#[test]
fn ddsm_tissue_masks_traced_to_polygons_fill_back_to_the_originals() {
    let dir = tempfile::tempdir().unwrap();
    let data = copy_ddsm(dir.path(), Some(3));
    let regions = ["background", "adipose", "fibroglandular", "pectoral"];
    std::fs::create_dir_all(data.join("annotations")).unwrap();
    let mut stems: Vec<String> = std::fs::read_dir(data.join("images")).unwrap().map(|e| e.unwrap().path().file_stem().unwrap().to_string_lossy().into_owned()).collect();
    stems.sort();
    let mut originals = Vec::new();
    for stem in &stems {
        // the test's tracer: every region's mask to polygons, written as QuPath would export them
        let shapes: Vec<(String, Vec<mammoflow::qupath::Polygon<f64>>)> = regions
            .iter()
            .map(|r| {
                let m = mammoflow::codec::decode_u8(&std::fs::read(data.join(format!("masks/{stem}_{r}.png"))).unwrap(), "mask", u64::MAX, "mask").unwrap();
                let polys = mammoflow::qupath::trace(&m.data, m.width, m.height);
                originals.push((stem.clone(), r.to_string(), m));
                (r.to_string(), polys)
            })
            .collect();
        std::fs::write(data.join(format!("annotations/{stem}.geojson")), mammoflow::qupath::feature_collection(&shapes)).unwrap();
        // the mask PNGs are not read in this mode: remove them to be sure
        for r in regions {
            std::fs::remove_file(data.join(format!("masks/{stem}_{r}.png"))).unwrap();
        }
    }
    let p = write_pipeline(
        dir.path(),
        "d.toml",
        &"[pipeline]\nname = \"d\"\nworkspace = \"ws\"\n\n[[stage]]\nid = \"ingest\"\nkind = \"ingest-png\"\n[stage.params]\nroot = \"ddsm-tissue\"\nmasks_from = \"qupath\"\nclasses = \"CLASSES\"\nregions = [\"background\", \"adipose\", \"fibroglandular\", \"pectoral\"]\n"
            .replace("CLASSES", &Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/classes-ddsm-tissue.toml").to_string_lossy()),
    );
    let s = run_json(&p, &[]);
    assert_eq!((stage(&s, "ingest")["computed"].as_u64(), s["failed"].as_u64()), (Some(3), Some(0)), "{s}");
    let ws = dir.path().join("ws");
    let rows = manifest_rows(&ws, "ingest");
    for (stem, region, m) in originals {
        let r = rows.iter().find(|r| r.item_id == stem).unwrap();
        let o = r.outputs.iter().find(|o| o.role == format!("mask:{region}")).unwrap();
        let back = mammoflow::codec::decode_u8(&std::fs::read(ws.join(&o.file)).unwrap(), "mask", u64::MAX, "mask").unwrap();
        assert_eq!((back.width, back.height), (m.width, m.height));
        // Required: every differing pixel lies within 1 pixel of the original's border. Found: none
        // differs (the outlines pass between pixel centres, which the fill tests).
        let on = |x: usize, y: usize| m.data[y * m.width + x] > 0;
        let differing: Vec<(usize, usize)> = (0..m.height).flat_map(|y| (0..m.width).map(move |x| (x, y))).filter(|&(x, y)| (back.data[y * m.width + x] > 0) != on(x, y)).collect();
        for &(x, y) in &differing {
            let near_border = (y.saturating_sub(1)..=(y + 1).min(m.height - 1)).any(|yy| (x.saturating_sub(1)..=(x + 1).min(m.width - 1)).any(|xx| on(xx, yy) != on(x, y)));
            assert!(near_border, "{stem} {region}: pixel ({x}, {y}) differs away from any border");
        }
        assert!(differing.is_empty(), "{stem} {region}: {} pixels differ", differing.len());
        assert!(m.data.iter().any(|&v| v > 0) || region == "pectoral", "{stem} {region} is empty: a weak check");
    }
}

#[test]
fn the_shipped_qupath_pipeline_gives_the_phantoms_own_masks_and_trains() {
    let dir = tempfile::tempdir().unwrap();
    let p = shipped_pipeline_before(dir.path(), "qupath-phantom", "", &["classes-phantom.toml"]);
    let small = ["--set", "phantom.count=6", "--set", "train.epochs=1", "--set", "crop.sizes=[128]", "--set", "train.input=64"];
    let go = |ws: &str, extra: &[&str]| {
        let ws = dir.path().join(ws);
        let mut args = vec!["run", p.to_str().unwrap(), "--workspace", ws.to_str().unwrap(), "--json", "--quiet"];
        args.extend_from_slice(&small);
        args.extend_from_slice(extra);
        (last_json(&run_ok(&args)), ws)
    };
    let (s, ws) = go("geojson", &[]);
    for id in ["phantom", "ingest", "merge", "split", "augment", "crop", "train", "evaluate", "tables"] {
        assert!(stage(&s, id)["computed"].as_u64().unwrap() > 0, "{id}: {s}");
    }
    assert_eq!(s["failed"], 0, "{s}");
    // the phantom exported annotations, not masks
    let ph = &manifest_rows(&ws, "phantom")[0];
    assert!(ph.outputs.iter().any(|o| o.role == "annotations") && !ph.outputs.iter().any(|o| o.role.starts_with("mask:")), "{:?}", ph.outputs);
    // the same phantom with mask PNGs merges to the very same label maps
    let (s2, ws2) = go("png", &["--until", "merge", "--set", "phantom.annotations=false", "--set", "ingest.masks_from=png"]);
    assert_eq!(s2["failed"], 0);
    let labels = |ws: &Path| manifest_rows(ws, "merge").into_iter().map(|r| (r.item_id, r.outputs.into_iter().map(|o| o.file).collect::<Vec<_>>())).collect::<Vec<_>>();
    assert_eq!(labels(&ws), labels(&ws2));
}
