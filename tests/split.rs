//! `split` on mini-MIAS: both images of a woman on one side; train / val / test 60 / 10 / 30 % of the
//! women, each within one subject.

mod util;

use std::collections::HashMap;
use std::path::Path;

use polars::prelude::*;
use util::*;

#[test]
fn mias_split_keeps_each_woman_on_one_side() {
    let dir = tempfile::tempdir().unwrap();
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/mias.toml");
    let ws = dir.path().join("ws");
    let o = cmd(&["run", p.to_str().unwrap(), "--workspace", ws.to_str().unwrap(), "--until", "split", "--json", "--quiet"])
        .env("MAMMOFLOW_DATA", data_root())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows = manifest_rows(&ws, "split");
    assert_eq!(rows.len(), 1);
    let table = ParquetReader::new(std::fs::File::open(ws.join(&rows[0].outputs[0].file)).unwrap()).finish().unwrap();
    assert_eq!(table.height(), 80);
    let subjects = table.column("subject").unwrap().str().unwrap().clone();
    let folds = table.column("fold").unwrap().str().unwrap().clone();
    let items = table.column("item").unwrap().str().unwrap().clone();
    let mut side: HashMap<String, String> = HashMap::new();
    for i in 0..table.height() {
        let (s, f, item) = (subjects.get(i).unwrap(), folds.get(i).unwrap(), items.get(i).unwrap());
        if let Some(prev) = side.insert(s.to_string(), f.to_string()) {
            assert_eq!(prev, f, "subject {s} ({item}) on two sides");
        }
    }
    let n = side.len() as f64;
    let train = side.values().filter(|f| *f == "train").count() as f64;
    assert!(n < 80.0, "pairs share a subject: {n} subjects for 80 images");
    let val = side.values().filter(|f| *f == "val").count() as f64;
    assert!((train - 0.6 * n).abs() <= 1.0, "{train} of {n} subjects in train");
    assert!((val - 0.1 * n).abs() <= 1.0, "{val} of {n} subjects in val");
    assert!(side.values().all(|f| ["train", "val", "test"].contains(&f.as_str())));
    // the split runs on the un-augmented images and nothing downstream depends on it
    assert!(!ws.join("manifests/crop.parquet").exists());
}
