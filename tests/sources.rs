//! Other sources: raw mini-MIAS PGM files through ingest-png, and the Cityscapes folder layout on a tiny
//! tree the test builds itself.

mod util;

use mammoflow::npy::Tensor2;
use util::*;

#[test]
fn mini_mias_pgm_matches_its_png() {
    let mias = data_root().join("mias-mini");
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(
        dir.path(),
        "pgm.toml",
        &format!(
            "[pipeline]\nname = \"pgm\"\nworkspace = \"ws\"\n[[stage]]\nid = \"pgm\"\nkind = \"ingest-png\"\nparams = {{ root = \"{0}\", images = \"pgm\", extensions = [\"pgm\"] }}\n\
             [[stage]]\nid = \"png\"\nkind = \"ingest-png\"\nparams = {{ root = \"{0}\", images = \"images\" }}\n",
            mias.display()
        ),
    );
    let s = run_json(&p, &[]);
    assert_eq!(stage(&s, "pgm")["items"], 2);
    let ws = dir.path().join("ws");
    let pgm = manifest_rows(&ws, "pgm");
    let png = manifest_rows(&ws, "png");
    for r in &pgm {
        let twin = png.iter().find(|q| q.item_id == r.item_id).unwrap_or_else(|| panic!("{} has no PNG twin", r.item_id));
        // pixel-identical sources give the same tensor object (content-addressed)
        assert_eq!(r.outputs[0].file, twin.outputs[0].file, "{}", r.item_id);
    }
}

fn png_rgb(path: &std::path::Path, w: u32, h: u32, seed: u8) {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8 ^ seed, y as u8, seed]));
    img.save(path).unwrap();
}

#[test]
fn cityscapes_layout_maps_label_ids_to_train_ids() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cityscapes");
    for (city, name) in [("aachen", "aachen_000000_000019"), ("aachen", "aachen_000001_000019"), ("bochum", "bochum_000000_000313")] {
        let img_dir = root.join("leftImg8bit/train").join(city);
        let gt_dir = root.join("gtFine/train").join(city);
        std::fs::create_dir_all(&img_dir).unwrap();
        std::fs::create_dir_all(&gt_dir).unwrap();
        png_rgb(&img_dir.join(format!("{name}_leftImg8bit.png")), 8, 4, name.len() as u8);
        // label ids 0..32 across the image: 7 (road) -> 0, 26 (car) -> 13, 33 (bicycle) -> 18, 6 -> ignore
        let ids: Vec<u8> = (0..32).map(|i| [7u8, 26, 33, 6][i % 4]).collect();
        std::fs::write(gt_dir.join(format!("{name}_gtFine_labelIds.png")), mammoflow::codec::encode_u8(&Tensor2 { height: 4, width: 8, data: ids })).unwrap();
        // files that are not part of the layout are ignored
        std::fs::write(gt_dir.join(format!("{name}_gtFine_color.png")), b"x").unwrap();
    }
    let p = write_pipeline(
        dir.path(),
        "cs.toml",
        "[pipeline]\nname = \"cs\"\nworkspace = \"ws\"\n[[stage]]\nid = \"cs\"\nkind = \"ingest-cityscapes\"\nparams = { root = \"cityscapes\", split = \"train\" }\n",
    );
    let s = run_json(&p, &[]);
    assert_eq!((s["computed"].as_u64(), s["failed"].as_u64()), (Some(3), Some(0)), "{s}");
    let ws = dir.path().join("ws");
    let rows = manifest_rows(&ws, "cs");
    assert_eq!(rows.iter().map(|r| r.item_id.as_str()).collect::<Vec<_>>(), vec!["aachen/aachen_000000_000019", "aachen/aachen_000001_000019", "bochum/bochum_000000_000313"]);
    let labels = rows[0].outputs.iter().find(|o| o.role == "labels").unwrap();
    let l = image::open(ws.join(&labels.file)).unwrap().to_luma8();
    assert_eq!(&l.as_raw()[..4], &[0, 13, 18, 255]);
    let img = rows[0].outputs.iter().find(|o| o.role == "image").unwrap();
    let npy = std::fs::read(ws.join(&img.file)).unwrap();
    assert!(String::from_utf8_lossy(&npy[..80]).contains("'shape': (4, 8, 3)"));
    // a missing label map fails that item only, naming the file
    std::fs::remove_file(root.join("gtFine/train/bochum/bochum_000000_000313_gtFine_labelIds.png")).unwrap();
    let o = run(&["run", p.to_str().unwrap(), "--json", "--quiet"]);
    assert_eq!(o.status.code(), Some(1));
    let rows = manifest_rows(&ws, "cs");
    assert!(rows[2].error.as_deref().unwrap().contains("bochum_000000_000313_gtFine_labelIds.png"));
    assert_eq!(rows[0].status, Status::Ok);
}
