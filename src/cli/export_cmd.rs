//! `mammoflow export` and `mammoflow report`: the study's tables and its comparison with the paper.

use anyhow::Context;

use super::args::{ExportArgs, ReportArgs};
use crate::export;

pub(crate) fn export(a: ExportArgs) -> anyhow::Result<i32> {
    let p = super::load(&a.common)?;
    let refs = p.stage_refs();
    let mut t = export::tables(&p.tables_source(&refs))?;
    let rows = [t.metrics.height(), t.per_class.height(), t.per_image.height(), t.training_log.height()];
    let files = export::write(&mut t, &a.out)?;
    for (f, n) in files.iter().zip(rows) {
        println!("wrote {} ({n} rows)", f.display());
    }
    let segs = copy_segs(&p, &a.out)?;
    let (stages, _) = crate::run::status(&p, None)?;
    let stale: usize = stages.iter().map(|s| s.stale).sum();
    if stale > 0 {
        eprintln!("warning: the pipeline has {stale} stale item(s): what was written is as of its last run (`mammoflow run` first to bring it up to date)");
    }
    if !segs.is_empty() {
        println!("wrote {} DICOM SEG files under {}", segs.len(), a.out.join("seg").display());
    }
    if a.json {
        let v = serde_json::json!({
            "files": files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
            "rows": { "metrics": rows[0], "per_class": rows[1], "per_image": rows[2], "training_log": rows[3] },
            "seg_files": segs.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string(&v)?);
    }
    Ok(0)
}

/// Copies the DICOM SEGs that the pipeline's `export` stages stored at their last run to
/// `out/seg/<evaluate stage>/<image>_seg.dcm`, and removes the `_seg.dcm` files an earlier export left
/// in those folders for images no longer evaluated.
fn copy_segs(p: &crate::Pipeline, out: &std::path::Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let mut written: Vec<std::path::PathBuf> = Vec::new();
    let mut from_stage: std::collections::HashMap<std::path::PathBuf, &str> = std::collections::HashMap::new();
    let mut folders = std::collections::BTreeSet::new();
    for sd in p.stages.iter().filter(|s| s.kind == "export") {
        let manifest = p.workspace.join("manifests").join(format!("{}.parquet", sd.id));
        let records = crate::store::manifest::read(&manifest).with_context(|| format!("reading {}", manifest.display()))?;
        for r in records.iter().filter(|r| r.status == crate::store::Status::Ok) {
            let (Some(rest), Some(o)) = (r.item_id.strip_prefix("seg/"), r.outputs.iter().find(|o| o.role == "seg")) else { continue };
            anyhow::ensure!(rest.split('/').all(|c| !c.is_empty() && c != "." && c != ".."), "{}: item `{}` is not a relative path", manifest.display(), r.item_id);
            let dest = out.join("seg").join(format!("{rest}_seg.dcm"));
            if let Some(other) = from_stage.insert(dest.clone(), &sd.id) {
                anyhow::bail!("export stages `{other}` and `{}` both write a SEG of `{rest}`: keep `dicom_seg = true` on one of them", sd.id);
            }
            if let Some(eval) = rest.split('/').next() {
                folders.insert(out.join("seg").join(eval));
            }
            if let Some(dir) = dest.parent() {
                std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            }
            let from = p.workspace.join(&o.file);
            std::fs::copy(&from, &dest).with_context(|| format!("copying {} to {}", from.display(), dest.display()))?;
            written.push(dest);
        }
    }
    if written.is_empty() {
        return Ok(written);
    }
    let mut removed = 0;
    for dir in &folders {
        for f in crate::fsio::walk_files(dir, &["dcm".to_string()])? {
            if f.to_string_lossy().ends_with("_seg.dcm") && !from_stage.contains_key(&f) {
                std::fs::remove_file(&f).with_context(|| format!("removing {}", f.display()))?;
                removed += 1;
            }
        }
    }
    if removed > 0 {
        println!("removed {removed} SEG file(s) of images no longer evaluated from {}", out.join("seg").display());
    }
    Ok(written)
}

pub(crate) fn report(a: ReportArgs) -> anyhow::Result<i32> {
    let p = super::load(&a.common)?;
    let json = table(&p, a.fold.as_deref())?;
    if a.json {
        println!("{}", serde_json::to_string(&json)?);
    }
    Ok(0)
}

/// Prints the comparison table of one fold (default `test`, else `val`); returns it as JSON.
pub(crate) fn table(p: &crate::Pipeline, fold: Option<&str>) -> anyhow::Result<serde_json::Value> {
    let refs = p.stage_refs();
    let scores = export::scores(&p.tables_source(&refs))?;
    anyhow::ensure!(!scores.is_empty(), "no evaluated model in {} (add `train` and `evaluate` stages, then `mammoflow run`)", p.path.display());
    let fold = fold.map(str::to_string).unwrap_or_else(|| if scores.iter().any(|s| s.fold == "test") { "test".into() } else { "val".into() });
    let chosen: Vec<_> = scores.iter().filter(|s| s.fold == fold).collect();
    anyhow::ensure!(!chosen.is_empty(), "no evaluated images in fold `{fold}` (folds present: {:?})", scores.iter().map(|s| s.fold.as_str()).collect::<std::collections::BTreeSet<_>>());
    println!("{} -- fold `{fold}`, figures in %; the paper's columns are its Table 10 on a different, private mammogram set", p.name);
    println!("{:<20} {:<20} {:>6} {:>7} {:>7} {:>7}   {:>8} {:>8} {:>8}", "model", "stage", "images", "PA", "mIoU", "MCA", "paper PA", "mIoU", "MCA");
    let pct = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{:.2}", 100.0 * x));
    let mut json = Vec::new();
    for s in &chosen {
        let m = &s.metrics;
        let paper = export::paper_row(&s.model);
        let pp = |i: usize| paper.map_or("-".to_string(), |r| format!("{:.2}", r[i]));
        println!("{:<20} {:<20} {:>6} {:>7} {:>7} {:>7}   {:>8} {:>8} {:>8}", s.model, s.eval_stage, s.images, pct(m.pixel_accuracy), pct(m.mean_iou), pct(m.mean_class_accuracy), pp(0), pp(1), pp(2));
        json.push(serde_json::json!({
            "model": s.model, "eval_stage": s.eval_stage, "train_stage": s.train_stage, "fold": s.fold, "images": s.images,
            "pixel_accuracy": m.pixel_accuracy, "mean_iou": m.mean_iou, "mean_class_accuracy": m.mean_class_accuracy,
            "iou": s.class_names.iter().zip(&m.iou).map(|(n, v)| (n.clone(), *v)).collect::<std::collections::BTreeMap<_, _>>(),
            "paper": paper.map(|r| serde_json::json!({"pixel_accuracy": r[0], "mean_iou": r[1], "mean_class_accuracy": r[2]})),
        }));
    }
    let pictures = crate::pictures::truth_vs_prediction(p, &fold)?;
    for path in &pictures {
        println!("picture: {} (image | truth | prediction, fold `{fold}`)", path.display());
    }
    let chart = crate::chart::metrics_chart(&chosen, &format!("{}: {} FOLD (%)", p.name, fold));
    let dir = p.workspace.join("pictures");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let chart_path = dir.join(format!("metrics-{fold}.png"));
    chart.save(&chart_path).with_context(|| format!("writing {}", chart_path.display()))?;
    println!("chart: {} (pixel accuracy, mean IoU, mean class accuracy per model)", chart_path.display());
    Ok(serde_json::json!({ "pipeline": p.name, "fold": fold, "models": json, "pictures": pictures, "chart": chart_path }))
}
