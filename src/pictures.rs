//! Pictures of a study's result, like the paper's Fig. 8: for each evaluated model, a few held-out
//! images with the truth and the prediction coloured over them, side by side, written under
//! `<workspace>/pictures/`.

use std::path::PathBuf;

use image::{imageops, Rgb, RgbImage};

use crate::classes::ClassTable;
use crate::export::{folds, output, records, stage, subject};
use crate::pipeline::Pipeline;
use crate::codec;
use crate::store::record::Status;

/// Rows per picture, and the side of each tile.
const ROWS: usize = 4;
const TILE: u32 = 256;

/// Writes `report-<evaluate stage>.png` for every evaluate stage: up to four images of `fold` (sorted
/// ids), each as [image | truth | prediction]. Returns the paths.
pub fn truth_vs_prediction(p: &Pipeline, fold: &str) -> crate::Result<Vec<PathBuf>> {
    let refs = p.stage_refs();
    let p = &p.tables_source(&refs);
    let err = |m: String| crate::Error::Execution(m);
    let mut written = Vec::new();
    for e in p.stages.iter().filter(|s| s.kind == "evaluate") {
        let images = stage(p, &e.inputs[0])?;
        let t = stage(p, &e.inputs[1])?;
        let folds = folds(p, &t.inputs[1])?;
        let table: Option<ClassTable> = serde_json::from_value(t.params["table"].clone()).ok();
        let mut colour = [[255u8, 255, 255]; 256];
        if let Some(t) = &table {
            for c in &t.classes {
                colour[c.id as usize] = c.colour;
            }
        }
        let sources = records(p, &images.id)?;
        let mut chosen: Vec<_> = records(p, &e.id)?
            .into_iter()
            .filter(|r| r.status == Status::Ok)
            .filter(|r| folds.get(&subject(r)).map(String::as_str) == Some(fold))
            .collect();
        chosen.sort_by(|a, b| a.item_id.cmp(&b.item_id));
        chosen.truncate(ROWS);
        if chosen.is_empty() {
            continue;
        }
        let gap = 6;
        let mut sheet = RgbImage::from_pixel(3 * TILE + 2 * gap, chosen.len() as u32 * (TILE + gap) - gap, Rgb([40, 40, 40]));
        for (row, r) in chosen.iter().enumerate() {
            let src = sources.iter().find(|s| s.item_id == r.item_id).ok_or_else(|| err(format!("no `{}` item {} behind its evaluation", images.id, r.item_id)))?;
            let file = |rec, role: &str| output(p, rec, role).ok_or_else(|| err(format!("item {} has no `{role}` output", r.item_id)));
            let img = crate::npy::decode_image(&crate::fsio::read_file(&file(src, "image")?)?)?.luma();
            let truth = codec::read_labels(&file(src, "labels")?)?;
            let pred = codec::read_labels(&file(r, "prediction")?)?;
            let gray = |x: u32, y: u32| (img.data[y as usize * img.width + x as usize] >> 8) as u16;
            let over = |labels: &crate::npy::Tensor2<u8>| {
                RgbImage::from_fn(img.width as u32, img.height as u32, |x, y| {
                    let c = colour[labels.data[y as usize * labels.width + x as usize] as usize];
                    let g = gray(x, y);
                    Rgb([((c[0] as u16 * 2 + g) / 3) as u8, ((c[1] as u16 * 2 + g) / 3) as u8, ((c[2] as u16 * 2 + g) / 3) as u8])
                })
            };
            let plain = RgbImage::from_fn(img.width as u32, img.height as u32, |x, y| {
                let g = gray(x, y) as u8;
                Rgb([g, g, g])
            });
            let y0 = row as i64 * (TILE + gap) as i64;
            for (k, picture) in [plain, over(&truth), over(&pred)].into_iter().enumerate() {
                // Fit inside the tile, keeping the aspect ratio.
                let s = (TILE as f64 / picture.width().max(picture.height()) as f64).min(1.0);
                let (w, h) = (((picture.width() as f64 * s) as u32).max(1), ((picture.height() as f64 * s) as u32).max(1));
                let small = imageops::resize(&picture, w, h, imageops::FilterType::Triangle);
                imageops::replace(&mut sheet, &small, k as i64 * (TILE + gap) as i64, y0);
            }
        }
        let dir = p.workspace.join("pictures");
        std::fs::create_dir_all(&dir).map_err(|e| err(format!("creating {}: {e}", dir.display())))?;
        let path = dir.join(format!("report-{}.png", e.id));
        sheet.save(&path).map_err(|e| err(format!("writing {}: {e}", path.display())))?;
        written.push(path);
    }
    Ok(written)
}
