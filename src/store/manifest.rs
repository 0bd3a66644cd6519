//! Stage manifests as Parquet (polars): one row per item, the scriptable record of what ran.
//!
//! Columns: `item_id, key, status, error, version, params_hash, inputs (list of "role=hash"),
//! output_roles, output_files, output_sizes (lists), bytes, seconds`, then one column per stage metadata
//! name. Rows are sorted by item id, so the file does not depend on worker count or completion order
//! (only `seconds` does). A manifest that cannot be read is treated as empty: every item is then a miss,
//! never a wrong hit.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use polars::prelude::*;

use super::record::{OutputRef, Record, Status};
use crate::error::{Error, Result};
use crate::store::MetaValue;

/// The manifest's own columns: a stage's metadata may not use these names (they would be lost).
pub const CORE: &[&str] = &[
    "item_id", "key", "status", "error", "version", "params_hash", "inputs", "output_roles", "output_files", "output_sizes", "bytes", "seconds",
];

fn merr(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Manifest { path: path.to_path_buf(), message: e.to_string() }
}

/// A list-of-strings column, built in place (no series per row: a manifest has a row per item).
fn list_str<'a, R: Iterator<Item = &'a str>>(name: &str, n: usize, rows: impl Iterator<Item = R>) -> Column {
    let mut b = ListStringChunkedBuilder::new(name.into(), n, n);
    for row in rows {
        b.append_values_iter(row);
    }
    b.finish().into_series().into_column()
}

/// Builds the manifest DataFrame (rows sorted by item id).
pub fn to_frame<'a>(records: impl IntoIterator<Item = &'a Record>) -> Result<DataFrame> {
    let mut recs: Vec<&Record> = records.into_iter().collect();
    recs.sort_by(|a, b| a.item_id.cmp(&b.item_id));
    let n = recs.len();
    let mut cols: Vec<Column> = vec![
        Column::new("item_id".into(), recs.iter().map(|r| r.item_id.as_str()).collect::<Vec<_>>()),
        Column::new("key".into(), recs.iter().map(|r| r.key.as_str()).collect::<Vec<_>>()),
        Column::new("status".into(), recs.iter().map(|r| r.status.as_str()).collect::<Vec<_>>()),
        Column::new("error".into(), recs.iter().map(|r| r.error.as_deref()).collect::<Vec<_>>()),
        Column::new("version".into(), recs.iter().map(|r| r.version).collect::<Vec<_>>()),
        Column::new("params_hash".into(), recs.iter().map(|r| r.params_hash.as_str()).collect::<Vec<_>>()),
        {
            let joined: Vec<Vec<String>> = recs.iter().map(|r| r.inputs.iter().map(|(a, b)| format!("{a}={b}")).collect()).collect();
            list_str("inputs", n, joined.iter().map(|v| v.iter().map(String::as_str)))
        },
        list_str("output_roles", n, recs.iter().map(|r| r.outputs.iter().map(|o| o.role.as_str()))),
        list_str("output_files", n, recs.iter().map(|r| r.outputs.iter().map(|o| o.file.as_str()))),
        {
            let mut b = ListPrimitiveChunkedBuilder::<UInt64Type>::new("output_sizes".into(), n, n, DataType::UInt64);
            for r in &recs {
                b.append_values_iter(r.outputs.iter().map(|o| o.size));
            }
            b.finish().into_series().into_column()
        },
        Column::new("bytes".into(), recs.iter().map(|r| r.bytes()).collect::<Vec<_>>()),
        Column::new("seconds".into(), recs.iter().map(|r| r.seconds).collect::<Vec<_>>()),
    ];
    let names: BTreeSet<&str> = recs.iter().flat_map(|r| r.meta.keys().map(String::as_str)).filter(|k| !CORE.contains(k)).collect();
    for name in names {
        let vals: Vec<Option<&MetaValue>> = recs.iter().map(|r| r.meta.get(name)).collect();
        let col = if vals.iter().flatten().all(|v| matches!(v, MetaValue::Int(_))) {
            Column::new(name.into(), vals.iter().map(|v| v.map(|v| if let MetaValue::Int(i) = v { *i } else { 0 })).collect::<Vec<Option<i64>>>())
        } else if vals.iter().flatten().all(|v| matches!(v, MetaValue::Int(_) | MetaValue::Float(_))) {
            Column::new(
                name.into(),
                vals.iter()
                    .map(|v| v.map(|v| match v {
                        MetaValue::Int(i) => *i as f64,
                        MetaValue::Float(f) => *f,
                        MetaValue::Str(_) => f64::NAN,
                    }))
                    .collect::<Vec<Option<f64>>>(),
            )
        } else {
            Column::new(
                name.into(),
                vals.iter()
                    .map(|v| v.map(|v| match v {
                        MetaValue::Int(i) => i.to_string(),
                        MetaValue::Float(f) => f.to_string(),
                        MetaValue::Str(s) => s.clone(),
                    }))
                    .collect::<Vec<Option<String>>>(),
            )
        };
        cols.push(col);
    }
    DataFrame::new(n, cols).map_err(|e| Error::Manifest { path: "<memory>".into(), message: e.to_string() })
}


/// Writes a manifest atomically (temp file + rename).
pub fn write<'a>(path: &Path, tmp_dir: &Path, records: impl IntoIterator<Item = &'a Record>) -> Result<()> {
    let mut df = to_frame(records)?;
    let buf = crate::parquet::parquet_bytes(&mut df).map_err(|e| merr(path, e))?;
    super::cas::write_durable(tmp_dir, path, &buf)
}

fn strs(c: &Column, path: &Path) -> Result<Vec<Option<String>>> {
    Ok(c.str().map_err(|e| merr(path, e))?.iter().map(|o| o.map(str::to_string)).collect())
}

/// A list column, row by row (one reused series, not one allocated per row: this runs once per item
/// of every no-op rerun).
fn list_strs(c: &Column, path: &Path) -> Result<Vec<Vec<String>>> {
    let l = c.list().map_err(|e| merr(path, e))?;
    l.amortized_iter()
        .map(|o| match o {
            None => Ok(Vec::new()),
            Some(s) => Ok(s.as_ref().str().map_err(|e| merr(path, e))?.iter().map(|x| x.unwrap_or_default().to_string()).collect()),
        })
        .collect()
}

/// One metadata column, typed once.
enum MetaCol<'a> {
    Int(&'a Int64Chunked),
    Float(&'a Float64Chunked),
    Str(&'a StringChunked),
}

/// Reads a manifest. A missing file is an empty manifest; an unreadable one is an error the caller
/// turns into "no cached rows".
pub fn read(path: &Path) -> Result<Vec<Record>> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("open manifest", path, e)),
    };
    let df = ParquetReader::new(file).finish().map_err(|e| merr(path, e))?;
    let col = |n: &str| df.column(n).map_err(|e| merr(path, e));
    let mut ids = strs(col("item_id")?, path)?;
    let mut keys = strs(col("key")?, path)?;
    let status = strs(col("status")?, path)?;
    let mut errors = strs(col("error")?, path)?;
    let versions: Vec<Option<u32>> = col("version")?.u32().map_err(|e| merr(path, e))?.iter().collect();
    let mut params = strs(col("params_hash")?, path)?;
    let inputs = list_strs(col("inputs")?, path)?;
    let mut roles = list_strs(col("output_roles")?, path)?;
    let mut files = list_strs(col("output_files")?, path)?;
    let sizes: Vec<Vec<u64>> = col("output_sizes")?
        .list()
        .map_err(|e| merr(path, e))?
        .amortized_iter()
        .map(|o| o.map(|s| s.as_ref().u64().map(|c| c.iter().map(|x| x.unwrap_or(0)).collect()).unwrap_or_default()).unwrap_or_default())
        .collect();
    let seconds: Vec<Option<f64>> = col("seconds")?.f64().map_err(|e| merr(path, e))?.iter().collect();
    let meta_cols: Vec<(String, MetaCol<'_>)> = df
        .columns()
        .iter()
        .filter(|c| !CORE.contains(&c.name().as_str()))
        .filter_map(|c| {
            let typed = match c.dtype() {
                DataType::Int64 => MetaCol::Int(c.i64().ok()?),
                DataType::Float64 => MetaCol::Float(c.f64().ok()?),
                DataType::String => MetaCol::Str(c.str().ok()?),
                _ => return None,
            };
            Some((c.name().to_string(), typed))
        })
        .collect();

    let mut out = Vec::with_capacity(df.height());
    for i in 0..df.height() {
        let mut meta = BTreeMap::new();
        for (name, c) in &meta_cols {
            let v = match c {
                MetaCol::Int(a) => a.get(i).map(MetaValue::Int),
                MetaCol::Float(a) => a.get(i).map(MetaValue::Float),
                MetaCol::Str(a) => a.get(i).map(|s| MetaValue::Str(s.to_string())),
            };
            if let Some(v) = v {
                meta.insert(name.clone(), v);
            }
        }
        let status = match status[i].as_deref() {
            Some("ok") => Status::Ok,
            Some("failed") => Status::Failed,
            Some("transient") => Status::Transient,
            other => return Err(merr(path, format!("row {i}: bad status {other:?}"))),
        };
        if roles[i].len() != files[i].len() || files[i].len() != sizes[i].len() {
            return Err(merr(path, format!("row {i}: output lists differ in length")));
        }
        out.push(Record {
            item_id: ids[i].take().ok_or_else(|| merr(path, format!("row {i}: null item_id")))?,
            key: keys[i].take().ok_or_else(|| merr(path, format!("row {i}: null key")))?,
            status,
            error: errors[i].take(),
            version: versions[i].unwrap_or(0),
            params_hash: params[i].take().unwrap_or_default(),
            inputs: inputs[i].iter().map(|s| s.split_once('=').map(|(a, b)| (a.to_string(), b.to_string())).unwrap_or_else(|| (s.clone(), String::new()))).collect(),
            outputs: std::mem::take(&mut roles[i])
                .into_iter()
                .zip(std::mem::take(&mut files[i]))
                .zip(&sizes[i])
                .map(|((role, file), s)| OutputRef { role, file, size: *s })
                .collect(),
            seconds: seconds[i].unwrap_or(0.0),
            meta,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, status: Status, meta: &[(&str, MetaValue)]) -> Record {
        Record {
            item_id: id.into(),
            key: format!("k-{id}"),
            status,
            error: (status == Status::Failed).then(|| "boom".to_string()),
            version: 3,
            params_hash: "p".into(),
            inputs: vec![("src:image".into(), "h1".into()), ("in0.0".into(), "k0".into())],
            outputs: if status == Status::Ok { vec![OutputRef { role: "image".into(), file: "cas/ab/ab.npy".into(), size: 10 }] } else { vec![] },
            seconds: 0.5,
            meta: meta.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
        }
    }

    #[test]
    fn roundtrip_sorted_with_meta_and_failures() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.parquet");
        let rows = vec![
            rec("b", Status::Ok, &[("width", MetaValue::Int(5)), ("view", MetaValue::Str("MLO".into()))]),
            rec("a", Status::Failed, &[]),
        ];
        write(&p, dir.path(), &rows).unwrap();
        let back = read(&p).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0], rows[1]);
        assert_eq!(back[1], rows[0]);
        assert_eq!(read(&dir.path().join("none.parquet")).unwrap(), vec![]);
        write(&p, dir.path(), &[]).unwrap();
        assert!(read(&p).unwrap().is_empty());
        std::fs::write(&p, b"garbage").unwrap();
        assert!(read(&p).is_err());
    }

    #[test]
    fn a_result_read_back_has_the_digest_it_was_computed_with() {
        // Columns widen: an integer beside a float becomes a float, a number beside text becomes text.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.parquet");
        let rows = vec![
            rec("a", Status::Ok, &[("share", MetaValue::Int(3)), ("label", MetaValue::Int(7)), ("score", MetaValue::Float(f64::NAN))]),
            rec("b", Status::Ok, &[("share", MetaValue::Float(0.25)), ("label", MetaValue::Str("x".into()))]),
            rec("c", Status::Failed, &[]),
        ];
        write(&p, dir.path(), &rows).unwrap();
        let back = read(&p).unwrap();
        assert_eq!(back[0].meta["share"], MetaValue::Float(3.0), "the column widened");
        for (a, b) in rows.iter().zip(&back) {
            assert_eq!(a.digest(), b.digest(), "{a:?}\n{b:?}");
        }
        assert_ne!(rows[0].digest(), rows[1].digest());
    }
}
