//! `ingest-png`: grayscale PNG (or PGM) mammograms plus one binary mask per anatomical region.
//!
//! Items come either from a folder (`root`, with `images` and a mask naming pattern such as
//! `masks/{stem}_{region}.png`) or from an upstream stage whose items carry an `image` PNG and
//! `mask:{region}` PNGs (the phantom). Each item stores the image as a 16-bit `.npy` (8-bit input is
//! widened by x257 so every image spans the same range) and its masks as 8-bit PNGs after checking that
//! every mask exists, is grayscale and has the image's size. With `masks_from = "qupath"` the masks are
//! filled from one QuPath GeoJSON export per image instead ([`super::annotations`]).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::codec::{self, Gray};
use super::{Arity, BuildCtx, InputSpec, ItemInputs, ItemOutput, ItemSpec, MetaValue, OutFile, ParamError, Stage};
use crate::error::Result;
use crate::item_err;
use crate::npy;

/// Params of `ingest-png`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// Data set folder; required unless the stage has an upstream stage. `${MAMMOFLOW_DATA}` expands.
    pub root: Option<String>,
    /// Folder of the images, relative to `root`; every file in it with one of `extensions` is one item
    /// (id = file stem).
    pub images: String,
    /// Image file extensions (case-insensitive): `png`, and `pgm` for raw mini-MIAS files.
    pub extensions: Vec<String>,
    /// Mask path pattern relative to `root`, with `{stem}` and `{region}`.
    pub masks: String,
    /// Region names: one mask per region and image. Empty = images only.
    pub regions: Vec<String>,
    /// Refuse images with more pixels than this (checked before decoding).
    pub max_pixels: u64,
    /// How to tell an image's subject (woman) from its id: `id`, `mias-pairs` or a regex with a capture
    /// group (see [`super::subject`]).
    pub subject: String,
    /// Where the region masks come from: `png` (one binary PNG per region, `masks`) or `qupath` (one
    /// QuPath GeoJSON export per image, `annotations`, rasterised through the class table `classes`).
    pub masks_from: String,
    /// GeoJSON path pattern relative to `root`, with `{stem}` (`masks_from = "qupath"`, folder mode;
    /// under an upstream stage its items' `annotations` outputs are read).
    pub annotations: String,
    /// Class table mapping annotation classes to mask regions (`masks_from = "qupath"`).
    pub classes: Option<String>,
}

impl Default for Params {
    fn default() -> Self {
        Params { root: None, images: "images".into(), extensions: vec!["png".into()], masks: "masks/{stem}_{region}.png".into(), regions: Vec::new(), max_pixels: super::DEFAULT_MAX_PIXELS, subject: "id".into(), masks_from: "png".into(), annotations: "annotations/{stem}.geojson".into(), classes: None }
    }
}

/// The `ingest-png` stage.
pub struct IngestPng {
    params: Params,
    root: Option<PathBuf>,
    subject: super::subject::SubjectRule,
    /// The class table when masks come from QuPath annotations.
    table: Option<crate::classes::ClassTable>,
}

impl IngestPng {
    /// Builds the stage.
    pub fn new(params: Params, ctx: &BuildCtx<'_>) -> Result<Self, ParamError> {
        let root = params.root.as_deref().map(|r| ctx.resolve_path("root", r)).transpose()?;
        if !params.masks.contains("{stem}") || (!params.regions.is_empty() && !params.masks.contains("{region}")) {
            return Err(ParamError::at("masks", "the mask pattern must contain `{stem}` and `{region}`"));
        }
        let subject = super::subject::SubjectRule::parse(&params.subject).map_err(|m| ParamError::at("subject", m))?;
        let table = match params.masks_from.as_str() {
            "png" => None,
            "qupath" => {
                if !params.annotations.contains("{stem}") {
                    return Err(ParamError::at("annotations", "the annotation pattern must contain `{stem}`"));
                }
                let classes = params.classes.as_deref().ok_or_else(|| ParamError::at("classes", "`masks_from = \"qupath\"` needs a class table mapping annotation classes to regions (e.g. \"../configs/classes-ddsm-tissue.toml\")"))?;
                let path = ctx.resolve_path("classes", classes)?;
                Some(crate::classes::ClassTable::load(&path).map_err(|m| ParamError::at("classes", m))?)
            }
            other => return Err(ParamError::at("masks_from", format!("expected \"png\" or \"qupath\", got \"{other}\""))),
        };
        Ok(IngestPng { params, root, subject, table })
    }

    fn folder_items(&self, root: &std::path::Path) -> Result<Vec<ItemSpec>> {
        let dir = root.join(&self.params.images);
        let rd = std::fs::read_dir(&dir).map_err(|e| crate::error::Error::io("list images in", &dir, e))?;
        let mut files: Vec<(String, PathBuf)> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| self.params.extensions.iter().any(|e| x.eq_ignore_ascii_case(e))))
            .filter_map(|p| Some((p.file_stem()?.to_string_lossy().into_owned(), p)))
            .collect();
        files.sort();
        if let Some(w) = files.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(item_err!("{} and {} would both be item `{}`", w[0].1.display(), w[1].1.display(), w[0].0));
        }
        Ok(files
            .into_iter()
            .map(|(stem, path)| {
                let mut inputs = vec![InputSpec::Source { role: "image".into(), path }];
                if self.table.is_some() {
                    inputs.push(InputSpec::Source { role: "annotations".into(), path: root.join(self.params.annotations.replace("{stem}", &stem)) });
                    return ItemSpec { id: stem, inputs };
                }
                for r in &self.params.regions {
                    let rel = self.params.masks.replace("{stem}", &stem).replace("{region}", r);
                    inputs.push(InputSpec::Source { role: format!("mask:{r}"), path: root.join(rel) });
                }
                ItemSpec { id: stem, inputs }
            })
            .collect())
    }
}

impl Stage for IngestPng {
    fn kind(&self) -> &'static str {
        "ingest-png"
    }
    fn version(&self) -> u32 {
        3
    }
    fn arity(&self) -> Arity {
        Arity::ZeroOrOne
    }
    fn params(&self) -> serde_json::Value {
        // `root`, `images` and `masks` only say where sources are; sources enter keys by content.
        let mut v = serde_json::json!({ "regions": self.params.regions, "max_pixels": self.params.max_pixels, "subject": self.params.subject });
        // (added only when used, so PNG-mask keys are as before) the table's content maps classes to regions
        if let Some(t) = &self.table {
            v["qupath_classes"] = serde_json::json!(t);
        }
        v
    }

    fn items(&self, upstream: &[&[String]]) -> Result<Vec<ItemSpec>> {
        super::upstream_or_root("ingest-png", upstream, self.root.as_ref(), |root| self.folder_items(root))
    }

    fn compute(&self, id: &str, inputs: &ItemInputs) -> Result<ItemOutput> {
        let image_path = inputs.file("image")?;
        let what = image_path.display().to_string();
        let bytes = crate::fsio::read_file(image_path)?;
        let gray = codec::decode_gray(&bytes, &what, self.params.max_pixels)?;
        let bits = if matches!(gray, Gray::U8(_)) { 8 } else { 16 };
        let img = gray.into_u16();
        let (min, max) = img.data.iter().fold((u16::MAX, 0u16), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        let mut out = ItemOutput::default();
        match &self.table {
            Some(table) => super::annotations::annotation_masks(inputs, table, &self.params.regions, (img.width, img.height), &mut out)?,
            None => super::masks::ingest_masks(inputs, &self.params.regions, (img.width, img.height), &what, self.params.max_pixels, &mut out)?,
        }
        out.meta.insert("subject".into(), MetaValue::Str(self.subject.subject(id)?));
        out.meta.insert("width".into(), MetaValue::Int(img.width as i64));
        out.meta.insert("height".into(), MetaValue::Int(img.height as i64));
        out.meta.insert("source_bits".into(), MetaValue::Int(bits));
        out.meta.insert("min".into(), MetaValue::Int(min as i64));
        out.meta.insert("max".into(), MetaValue::Int(max as i64));
        out.files.insert(0, OutFile { role: "image".into(), ext: "npy", bytes: npy::encode_u16(&img) });
        Ok(out)
    }
}
