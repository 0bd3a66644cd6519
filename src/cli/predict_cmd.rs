//! `mammoflow predict` and `mammoflow evaluate`: a checkpoint on any folder of images, outside pipelines.
//! The checkpoint carries its network's spec, so no other flag is needed to rebuild it.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::args::{EvaluateArgs, PredictArgs, PredictFormat};
use crate::metrics::Confusion;
use crate::predict::Loaded;
use crate::codec;
use crate::npy::Image;

/// Colours for class ids when no class table is given.
const PALETTE: [[u8; 3]; 8] = [[0, 0, 0], [60, 180, 75], [0, 130, 200], [145, 30, 180], [230, 25, 75], [255, 225, 25], [245, 130, 48], [70, 240, 240]];

fn load(path: &Path) -> anyhow::Result<Loaded> {
    let bytes = std::fs::read(path).with_context(|| format!("reading checkpoint {}", path.display()))?;
    Ok(Loaded::from_bytes(&bytes, &path.display().to_string())?)
}

fn is_dicom(p: &Path) -> bool {
    p.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case("dcm"))
}

/// The PNG / PGM (and, for `predict`, DICOM) files of a folder, sorted.
fn images(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    images_of(dir, false)
}

fn images_of(dir: &Path, dicom: bool) -> anyhow::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().and_then(|e| e.to_str()).is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "pgm")) || (dicom && is_dicom(p)))
        .collect();
    v.sort();
    anyhow::ensure!(!v.is_empty(), "no PNG or PGM{} images in {}", if dicom { " or DICOM" } else { "" }, dir.display());
    Ok(v)
}

/// A grayscale image as 16 bits (8-bit widened x257, as ingest does), or a colour one as 8-bit RGB
/// (for networks trained on colour images, e.g. Cityscapes).
fn read_image(path: &Path) -> anyhow::Result<Image> {
    if is_dicom(path) {
        // the window the file carries, as ingest-dicom's default; the pseudonym key is not needed
        // (subject columns are not used here)
        let opts = crate::dicom::decode::DecodeOptions { voi: crate::dicom::header::VoiChoice::Window, max_pixels: crate::stages::DEFAULT_MAX_PIXELS };
        return Ok(Image::gray(crate::dicom::decode::decode_path(path, opts, &[0u8; 32])?.image));
    }
    let bytes = crate::fsio::read_file(path)?;
    let what = path.display().to_string();
    // The colour type is in the header: decode once, as colour or through the gray path.
    let colour = image::ImageReader::new(std::io::Cursor::new(&bytes))
        .with_guessed_format()
        .ok()
        .and_then(|r| r.into_decoder().ok())
        .is_some_and(|d| image::ImageDecoder::color_type(&d).has_color());
    if colour {
        let img = image::load_from_memory(&bytes).with_context(|| format!("decoding {what}"))?.to_rgb8();
        let (w, h) = (img.width() as usize, img.height() as usize);
        anyhow::ensure!((w as u64) * (h as u64) <= crate::stages::DEFAULT_MAX_PIXELS, "{what}: {w} x {h} pixels exceeds the limit");
        return Ok(Image::rgb8(h, w, img.as_raw()));
    }
    Ok(Image::gray(codec::decode_gray(&bytes, &what, crate::stages::DEFAULT_MAX_PIXELS)?.into_u16()))
}

fn stem(p: &Path) -> String {
    p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

pub(crate) fn predict(a: PredictArgs) -> anyhow::Result<i32> {
    let model = load(&a.checkpoint)?;
    let mut colours: Vec<[u8; 3]> = (0..256).map(|i| PALETTE[i % PALETTE.len()]).collect();
    if let Some(t) = &a.classes {
        let table = crate::classes::ClassTable::load(t).map_err(anyhow::Error::msg)?;
        for c in &table.classes {
            colours[c.id as usize] = c.colour;
        }
    }
    // segments: the table's classes except its background, or every class the network predicts
    let segments: Vec<crate::dicom::seg::SegmentClass> = match &a.classes {
        Some(t) => {
            let table = crate::classes::ClassTable::load(t).map_err(anyhow::Error::msg)?;
            crate::dicom::seg::SegmentClass::of_table(&table)
        }
        None => (1..model.spec.classes.min(256)).map(|id| crate::dicom::seg::SegmentClass { id: id as u8, name: format!("class {id}"), colour: colours[id] }).collect(),
    };
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let files = images_of(&a.input, true)?;
    if a.format == PredictFormat::DicomSeg {
        if let Some(f) = files.iter().find(|f| !is_dicom(f)) {
            anyhow::bail!("{}: a DICOM SEG references the DICOM image it segments; this is not a DICOM file (.dcm)", f.display());
        }
    }
    for (i, f) in files.iter().enumerate() {
        let img = read_image(f)?;
        let labels = model.predict(&img, a.overlap, 4)?;
        let s = stem(f);
        if a.format == PredictFormat::DicomSeg {
            let source = crate::dicom::seg::SourceRef::read(f)?;
            let algorithm = format!("mammoflow {}", a.checkpoint.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
            let bytes = crate::dicom::seg::write_seg(&labels, &segments, &source, &algorithm)?;
            std::fs::write(a.out.join(format!("{s}_seg.dcm")), bytes).with_context(|| format!("writing the SEG of {}", f.display()))?;
            eprintln!("predict: {}/{} {}", i + 1, files.len(), f.display());
            continue;
        }
        std::fs::write(a.out.join(format!("{s}_labels.png")), codec::encode_u8(&labels))?;
        let luma = img.luma();
        let overlay = image::RgbImage::from_fn(img.width as u32, img.height as u32, |x, y| {
            let p = y as usize * img.width + x as usize;
            let g = (luma.data[p] >> 8) as u16;
            let c = colours[labels.data[p] as usize];
            image::Rgb([((c[0] as u16 + g) / 2) as u8, ((c[1] as u16 + g) / 2) as u8, ((c[2] as u16 + g) / 2) as u8])
        });
        overlay.save(a.out.join(format!("{s}_overlay.png"))).with_context(|| format!("writing the overlay of {}", f.display()))?;
        eprintln!("predict: {}/{} {}", i + 1, files.len(), f.display());
    }
    match a.format {
        PredictFormat::Png => println!("wrote {} label maps and overlays to {}", files.len(), a.out.display()),
        PredictFormat::DicomSeg => println!("wrote {} DICOM SEG files to {}", files.len(), a.out.display()),
    }
    Ok(0)
}

pub(crate) fn evaluate(a: EvaluateArgs) -> anyhow::Result<i32> {
    let model = load(&a.checkpoint)?;
    let classes = model.spec.classes;
    let mut total = Confusion::new(classes);
    let files = images(&a.images)?;
    for (i, f) in files.iter().enumerate() {
        let mask = a.masks.join(a.mask_pattern.replace("{stem}", &stem(f)));
        anyhow::ensure!(mask.is_file(), "no label map {} for image {} (see --mask-pattern)", mask.display(), f.display());
        let truth = codec::read_labels(&mask)?;
        let img = read_image(f)?;
        anyhow::ensure!((img.width, img.height) == (truth.width, truth.height), "{} is {}x{} but its label map {} is {}x{}", f.display(), img.width, img.height, mask.display(), truth.width, truth.height);
        let pred = model.predict(&img, a.overlap, 4)?;
        total.add(&truth.data, &pred.data, a.ignore).map_err(|e| anyhow::anyhow!("{}: {e}", mask.display()))?;
        eprintln!("evaluate: {}/{} {}", i + 1, files.len(), f.display());
    }
    let m = total.metrics();
    let pct = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{:.2} %", 100.0 * x));
    println!("{} images, {} pixels: pixel accuracy {}, mean IoU {}, mean class accuracy {}", files.len(), m.pixels, pct(m.pixel_accuracy), pct(m.mean_iou), pct(m.mean_class_accuracy));
    for (c, v) in m.iou.iter().enumerate() {
        println!("  class {c}: IoU {}  Dice {}", pct(*v), pct(m.dice[c]));
    }
    if a.json {
        let v = serde_json::json!({
            "images": files.len(), "pixels": m.pixels, "pixel_accuracy": m.pixel_accuracy, "mean_iou": m.mean_iou,
            "mean_class_accuracy": m.mean_class_accuracy, "iou": m.iou, "dice": m.dice,
        });
        println!("{}", serde_json::to_string(&v)?);
    }
    Ok(0)
}
