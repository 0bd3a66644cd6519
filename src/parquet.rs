//! Parquet bytes from a polars frame, as every table mammoflow writes (manifests, split assignments,
//! training logs, the study's tables) is written: one place decides the schema's compatibility level.

use polars::prelude::*;

/// Writes a DataFrame as Parquet bytes that every reader understands.
///
/// polars embeds its Arrow schema at its newest compatibility level, where strings are `string_view`,
/// and pandas cannot convert a list of `string_view`. The embedded schema is replaced by the oldest-level
/// one (`large_string`): the Parquet data is the same UTF-8 either way, and every reader (pandas, pyarrow,
/// polars, DuckDB) then agrees on the types.
pub fn parquet_bytes(df: &mut DataFrame) -> PolarsResult<Vec<u8>> {
    let mut buf = Vec::new();
    let arrow = df.schema().to_arrow(CompatLevel::oldest());
    let schema_kv = polars_parquet::write::schema_to_metadata_key(&arrow);
    let kv = polars::prelude::KeyValueMetadata::from_static(vec![
        (schema_kv.key, schema_kv.value.unwrap_or_default()),
        ("written_by".into(), format!("mammoflow {}", env!("CARGO_PKG_VERSION"))),
    ]);
    ParquetWriter::new(&mut buf).with_key_value_metadata(Some(kv)).finish(df)?;
    Ok(buf)
}
