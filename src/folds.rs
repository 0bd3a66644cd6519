//! The split's assignment table (`subject`, `fold`, `item`; Parquet): written by the `split` stage, read
//! by `train` (which crops to learn from) and by the study's tables (which fold a figure belongs to).

use std::collections::HashMap;
use std::path::Path;

use polars::prelude::*;

use crate::error::Result;
use crate::item_err;

/// The table's bytes: one row per item, `(item, subject)` with its fold.
pub fn assignment_bytes(items: &[(String, String)], fold_of: &[&str]) -> Result<Vec<u8>> {
    let mut df = DataFrame::new(
        items.len(),
        vec![
            Column::new("subject".into(), items.iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>()),
            Column::new("fold".into(), fold_of.to_vec()),
            Column::new("item".into(), items.iter().map(|(i, _)| i.as_str()).collect::<Vec<_>>()),
        ],
    )
    .map_err(|e| item_err!("building the assignment table: {e}"))?;
    crate::parquet::parquet_bytes(&mut df).map_err(|e| item_err!("writing the assignment table: {e}"))
}

/// subject -> fold, read back from an assignment table.
pub fn read_assignment(path: &Path) -> Result<HashMap<String, String>> {
    let bad = |e: &dyn std::fmt::Display| item_err!("reading the split assignment {}: {e}", path.display());
    let file = std::fs::File::open(path).map_err(|e| bad(&e))?;
    let df = ParquetReader::new(file).finish().map_err(|e| bad(&e))?;
    let col = |n: &str| -> Result<Vec<String>> {
        Ok(df.column(n).map_err(|e| bad(&e))?.str().map_err(|e| bad(&e))?.iter().map(|o| o.unwrap_or_default().to_string()).collect())
    };
    Ok(col("subject")?.into_iter().zip(col("fold")?).collect())
}
