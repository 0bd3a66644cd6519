//! `ingest-dicom`: DICOM mammograms from any vendor to full-precision 16-bit tensors plus a metadata
//! manifest without identifying data.
//!
//! Items come from a folder (`root`, searched recursively for `extensions`; id = relative path without
//! extension) or from an upstream stage whose items carry an `image` DICOM and `mask:{region}` PNGs (the
//! phantom). Each item stores the image after the full pixel pipeline ([`crate::dicom::pixels`]) as a
//! 16-bit `.npy`, and its metadata as manifest columns: rows, columns, bits, photometric interpretation,
//! transfer syntax, modality, laterality, view, manufacturer and model, pixel spacing, presentation
//! intent, keyed hashes of the study and series UIDs, and `subject`, the keyed hash of PatientID.
//! Multi-frame files are refused with a clear error (mammograms are single-frame).
//!
//! A third output, `reference` (JSON), holds what a DICOM SEG of the image must name: the study,
//! series, SOP instance and SOP class UIDs, the frame of reference, the pixel spacing and size, read
//! from the same header. Raw UIDs are not patient attributes, but they link to the source PACS, so
//! they live only in this object (which the `export` stage reads to write SEGs), never in a manifest.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Arity, BuildCtx, InputSpec, ItemInputs, ItemOutput, ItemSpec, MetaValue, OutFile, ParamError, Stage};
use crate::dicom::seg::SourceRef;
use crate::dicom::{self, DecodeOptions, VoiChoice};
use crate::error::Result;
use crate::item_err;
use crate::npy;

/// Params of `ingest-dicom`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// Data folder, searched recursively; required unless the stage has an input stage.
    pub root: Option<String>,
    /// File extensions taken as DICOM (case-insensitive); `""` matches files without an extension.
    pub extensions: Vec<String>,
    /// VOI transformation: `window` (first Window Center/Width), `lut` (VOI LUT Sequence) or `none`.
    pub voi: VoiChoice,
    /// Refuse images with more pixels than this (checked from the header, before decoding).
    pub max_pixels: u64,
    /// Mask path pattern relative to `root`, with `{stem}` (relative path without extension) and `{region}`.
    pub masks: String,
    /// Region names: one mask per region and image. Empty = images only.
    pub regions: Vec<String>,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            root: None,
            extensions: vec!["dcm".into(), "dicom".into()],
            voi: VoiChoice::Window,
            max_pixels: super::DEFAULT_MAX_PIXELS,
            masks: "masks/{stem}_{region}.png".into(),
            regions: Vec::new(),
        }
    }
}

/// The `ingest-dicom` stage.
pub struct IngestDicom {
    params: Params,
    root: Option<PathBuf>,
    /// The workspace's pseudonym key: read at build time if it exists, created by [`Stage::prepare`]
    /// (only `run` calls it), read from disk by a worker process that built the stage before it existed.
    key: std::sync::OnceLock<[u8; 32]>,
    workspace: PathBuf,
}

impl IngestDicom {
    /// Builds the stage (writes nothing: the pseudonym key is created by `prepare`).
    pub fn new(params: Params, ctx: &BuildCtx<'_>) -> Result<Self, ParamError> {
        let root = params.root.as_deref().map(|r| ctx.resolve_path("root", r)).transpose()?;
        let key = std::sync::OnceLock::new();
        if let Some(k) = dicom::subject::existing_key(ctx.workspace) {
            let _ = key.set(k);
        }
        Ok(IngestDicom { params, root, key, workspace: ctx.workspace.to_path_buf() })
    }

    fn key(&self) -> Result<&[u8; 32]> {
        if let Some(k) = self.key.get() {
            return Ok(k);
        }
        let k = dicom::subject::existing_key(&self.workspace).ok_or_else(|| item_err!("the workspace has no pseudonym key yet (state/subject.key): `run` creates it"))?;
        Ok(self.key.get_or_init(|| k))
    }
}

impl Stage for IngestDicom {
    fn kind(&self) -> &'static str {
        "ingest-dicom"
    }
    fn version(&self) -> u32 {
        // 2: a rescale whose range exceeds 16 bits keeps the image's own modality values
        // 3: a `reference` output (the UIDs a DICOM SEG of the image must name)
        3
    }
    fn arity(&self) -> Arity {
        Arity::ZeroOrOne
    }
    fn params(&self) -> serde_json::Value {
        // the pseudonym key changes every `subject` value, so its fingerprint is part of every key
        // (before the first run there is none: every item is new anyway)
        let key_id = self.key.get().map_or_else(|| "none".to_string(), |k| blake3::hash(k).to_hex()[..16].to_string());
        serde_json::json!({ "voi": self.params.voi, "max_pixels": self.params.max_pixels, "regions": self.params.regions, "key": key_id })
    }
    fn prepare(&self) -> Result<()> {
        if self.key.get().is_none() {
            let _ = self.key.set(dicom::subject::workspace_key(&self.workspace)?);
        }
        Ok(())
    }
    fn items(&self, upstream: &[&[String]]) -> Result<Vec<ItemSpec>> {
        super::upstream_or_root("ingest-dicom", upstream, self.root.as_ref(), |root| {
                let files = crate::fsio::walk_files(root, &self.params.extensions)?;
                let mut items: Vec<ItemSpec> = Vec::with_capacity(files.len());
                for path in files {
                    let rel = path.strip_prefix(root).unwrap_or(&path);
                    let stem = rel.with_extension("").to_string_lossy().into_owned();
                    if items.last().is_some_and(|l| l.id == stem) {
                        return Err(item_err!("two files would both be item `{stem}` under {}", root.display()));
                    }
                    let mut inputs = vec![InputSpec::Source { role: "image".into(), path }];
                    for r in &self.params.regions {
                        let rel = self.params.masks.replace("{stem}", &stem).replace("{region}", r);
                        inputs.push(InputSpec::Source { role: format!("mask:{r}"), path: root.join(rel) });
                    }
                    items.push(ItemSpec { id: stem, inputs });
                }
                Ok(items)
        })
    }
    fn compute(&self, _id: &str, inputs: &ItemInputs) -> Result<ItemOutput> {
        let path = inputs.file("image")?;
        let what = path.display().to_string();
        let opts = DecodeOptions { voi: self.params.voi, max_pixels: self.params.max_pixels };
        let file = dicom::open_bytes(&crate::fsio::read_file(path)?, &what)?;
        let d = dicom::decode(&file, &what, opts, self.key()?)?;
        // What a SEG of this image must reference (raw UIDs: an object, never a manifest column). An
        // image without them still ingests; a SEG of it is refused with this reason.
        let reference: std::result::Result<SourceRef, String> = SourceRef::of(&file, &what).map_err(|e| e.to_string());
        drop(file);
        let mut out = ItemOutput { files: Vec::new(), meta: d.meta };
        out.files.push(OutFile { role: "reference".into(), ext: "json", bytes: serde_json::to_vec(&reference).expect("a reference serialises") });
        let (min, max) = d.image.data.iter().fold((u16::MAX, 0u16), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        out.meta.insert("min".into(), MetaValue::Int(min as i64));
        out.meta.insert("max".into(), MetaValue::Int(max as i64));
        super::masks::ingest_masks(inputs, &self.params.regions, (d.image.width, d.image.height), &path.display().to_string(), self.params.max_pixels, &mut out)?;
        out.files.insert(0, OutFile { role: "image".into(), ext: "npy", bytes: npy::encode_u16(&d.image) });
        Ok(out)
    }
}
