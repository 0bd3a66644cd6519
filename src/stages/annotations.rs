//! Per-region masks from a QuPath GeoJSON export instead of mask PNGs: every classified area is mapped
//! through the class table to its mask region and filled at the image's resolution ([`crate::qupath`]
//! has the parsing and the fill convention). The masks are stored exactly as mask PNGs would be, so
//! `merge-masks` and everything after it cannot tell the difference.

use super::{ItemInputs, ItemOutput, MetaValue, OutFile};
use crate::classes::ClassTable;
use crate::codec;
use crate::error::Result;
use crate::item_err;
use crate::npy::Tensor2;
use crate::qupath::{self, Placement};

/// How many names a record lists of what it left out (the count is always complete).
const LISTED: usize = 5;

/// Reads the `annotations` input and stores one 8-bit PNG mask per region of `regions` (empty where
/// no annotation has that region's class), with the `px_<region>` counts and, in the record, how many
/// annotations were used, left out (points, lines, empty, unclassified, classes of other regions) and
/// clipped at the image's border.
pub fn annotation_masks(inputs: &ItemInputs, table: &ClassTable, regions: &[String], (width, height): (usize, usize), out: &mut ItemOutput) -> Result<()> {
    let path = inputs.file("annotations")?;
    let what = path.display().to_string();
    let bytes = crate::fsio::read_file(path)?;
    let text = std::str::from_utf8(&bytes).map_err(|_| item_err!("{what}: not GeoJSON (not UTF-8 text)"))?;
    let parsed = qupath::parse(text, &what)?;
    let mut masks: Vec<Vec<u8>> = regions.iter().map(|_| vec![0u8; width * height]).collect();
    let mut left_out = parsed.ignored;
    let (mut used, mut clipped) = (0usize, 0usize);
    for shape in &parsed.shapes {
        let class = table.class(&shape.class).or_else(|| table.classes.iter().find(|c| c.name.eq_ignore_ascii_case(&shape.class)));
        let Some(class) = class else {
            let hint = crate::suggest::did_you_mean(&shape.class, table.classes.iter().map(|c| c.name.as_str())).map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default();
            let known: Vec<&str> = table.classes.iter().map(|c| c.name.as_str()).collect();
            return Err(item_err!("{what}: {}: class `{}` is not in the class table{hint}; it has {}", shape.label, shape.class, known.join(", ")));
        };
        let Some(k) = regions.iter().position(|r| r == class.mask_region()) else {
            left_out.push(format!("{}: class `{}` (region `{}`) is not among this stage's regions", shape.label, class.name, class.mask_region()));
            continue;
        };
        for p in &shape.polygons {
            match qupath::placement(p, width, height) {
                Placement::Outside => return Err(item_err!("{what}: {}: lies outside the {width} x {height} image", shape.label)),
                Placement::Clipped => clipped += 1,
                Placement::Inside => {}
            }
            qupath::fill(&mut masks[k], width, height, p);
        }
        used += 1;
    }
    for (region, data) in regions.iter().zip(masks) {
        let covered = data.iter().filter(|&&v| v > 0).count();
        out.meta.insert(format!("px_{region}"), MetaValue::Int(covered as i64));
        out.files.push(OutFile { role: format!("mask:{region}"), ext: "png", bytes: codec::encode_u8(&Tensor2 { height, width, data }) });
    }
    out.meta.insert("annotations".into(), MetaValue::Int(used as i64));
    out.meta.insert("annotations_clipped".into(), MetaValue::Int(clipped as i64));
    out.meta.insert("annotations_left_out".into(), MetaValue::Int(left_out.len() as i64));
    if !left_out.is_empty() {
        let mut names = left_out.iter().take(LISTED).cloned().collect::<Vec<_>>().join("; ");
        if left_out.len() > LISTED {
            names.push_str(&format!("; and {} more", left_out.len() - LISTED));
        }
        out.meta.insert("annotations_left_out_names".into(), MetaValue::Str(names));
    }
    Ok(())
}
