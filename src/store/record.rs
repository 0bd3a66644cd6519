//! One manifest row: what was computed for an item, from what, and where the output is.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A metadata value recorded in the manifest (one column per name).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MetaValue {
    /// Integer.
    Int(i64),
    /// Float.
    Float(f64),
    /// Text.
    Str(String),
}

/// Outcome of an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Outputs written.
    Ok,
    /// The item failed; `error` says why. The same bytes fail the same way, so the failure is cached
    /// like a result.
    Failed,
    /// The item failed for a reason outside its content (an I/O error, a full disk, a panic): recorded
    /// so `status` can show it, never reused: the next run tries again.
    Transient,
}

impl Status {
    /// `ok` / `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Failed => "failed",
            Status::Transient => "transient",
        }
    }
}

/// One output file of an item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputRef {
    /// Role (`image`, `mask:nipple`).
    pub role: String,
    /// Workspace-relative object path (`cas/ab/ab....npy`).
    pub file: String,
    /// Size in bytes.
    pub size: u64,
}

/// A manifest row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Item id.
    pub item_id: String,
    /// Cache key.
    pub key: String,
    /// ok / failed.
    pub status: Status,
    /// Failure message.
    pub error: Option<String>,
    /// Stage code version the key was made with.
    pub version: u32,
    /// Hash of the canonical params.
    pub params_hash: String,
    /// `(role, key or content hash)` of every input: `src:*` roles are source files, `in*` upstream items.
    pub inputs: Vec<(String, String)>,
    /// Output objects.
    pub outputs: Vec<OutputRef>,
    /// Wall seconds spent computing (timing only: not part of the result).
    pub seconds: f64,
    /// Stage-specific metadata columns.
    pub meta: BTreeMap<String, MetaValue>,
}

impl Record {
    /// Total output bytes.
    pub fn bytes(&self) -> u64 {
        self.outputs.iter().map(|o| o.size).sum()
    }

    /// Failed inputs this item left out (a stage gathering many items, `on_failed_inputs = "skip"`):
    /// how many, and their names.
    pub fn skipped_inputs(&self) -> Option<(usize, String)> {
        let Some(MetaValue::Int(n)) = self.meta.get("skipped_inputs") else { return None };
        let names = match self.meta.get("skipped") {
            Some(MetaValue::Str(s)) => s.clone(),
            _ => String::new(),
        };
        Some((*n as usize, names))
    }

    /// A digest of the item's *result*: status, error, output objects (their names are content
    /// hashes) and metadata; not its key, id or timing. Downstream keys hash this rather than the
    /// key, so an item recomputed to the same result changes nothing below it (early cutoff).
    ///
    /// Metadata values are hashed as text (`3`, `0.5`, `NaN`), so a record read back from a manifest,
    /// whose column may have widened an integer to a float or a number to text, has the digest of the
    /// record as computed.
    pub fn digest(&self) -> String {
        let mut h = blake3::Hasher::new();
        h.update(self.status.as_str().as_bytes());
        h.update(&[0]);
        h.update(self.error.as_deref().unwrap_or("").as_bytes());
        h.update(&[0]);
        for o in &self.outputs {
            h.update(o.role.as_bytes());
            h.update(&[0]);
            h.update(o.file.as_bytes());
            h.update(&[0]);
        }
        for (k, v) in &self.meta {
            h.update(k.as_bytes());
            h.update(&[0]);
            match v {
                MetaValue::Int(i) => h.update(i.to_string().as_bytes()),
                MetaValue::Float(f) => h.update(f.to_string().as_bytes()),
                MetaValue::Str(s) => h.update(s.as_bytes()),
            };
            h.update(&[0]);
        }
        h.finalize().to_hex().to_string()
    }
}
