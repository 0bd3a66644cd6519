//! `${VAR}` expansion in path-like params.
//!
//! Pipelines that read real data name their root `${MAMMOFLOW_DATA}`. When the variable is unset it
//! defaults to `../shared/datasets` relative to the repository root (the nearest folder above the pipeline
//! file that holds a `Cargo.toml`, else the folder this binary was built from), so
//! `MAMMOFLOW_DATA=/elsewhere mammoflow run pipelines/ddsm-tissue.toml` works without editing the file.

use std::path::{Path, PathBuf};

/// The data root used for `${MAMMOFLOW_DATA}` when the variable is not set.
pub fn default_data_root(pipeline_file: &Path) -> PathBuf {
    let start = pipeline_file
        .canonicalize()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."));
    let repo = start
        .ancestors()
        .find(|d| d.join("Cargo.toml").is_file())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    repo.join("..").join("shared").join("datasets")
}

/// Expands `${NAME}` and `${NAME:-default}` from the environment. `MAMMOFLOW_DATA` has a built-in default.
///
/// # Errors
/// A message naming the variable when it is unset and has no default, or when a `${` is not closed.
pub fn expand_vars(s: &str, pipeline_file: &Path) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(p) = rest.find("${") {
        out.push_str(&rest[..p]);
        let after = &rest[p + 2..];
        let Some(end) = after.find('}') else { return Err(format!("unclosed `${{` in `{s}`")) };
        let inner = &after[..end];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        let value = match std::env::var(name) {
            Ok(v) if !v.is_empty() => v,
            _ => match (default, name) {
                (Some(d), _) => d.to_string(),
                (None, "MAMMOFLOW_DATA") => default_data_root(pipeline_file).to_string_lossy().into_owned(),
                (None, _) => return Err(format!("environment variable `{name}` is not set (used in `{s}`)")),
            },
        };
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_defaults_and_reports_missing() {
        let f = Path::new("pipelines/x.toml");
        assert_eq!(expand_vars("a/${MAMMOFLOW_TEST_UNSET_VAR:-d}/b", f).unwrap(), "a/d/b");
        assert!(expand_vars("${MAMMOFLOW_TEST_UNSET_VAR}", f).unwrap_err().contains("MAMMOFLOW_TEST_UNSET_VAR"));
        assert!(expand_vars("${OOPS", f).is_err());
        assert_eq!(expand_vars("plain", f).unwrap(), "plain");
    }

    #[test]
    fn data_root_defaults_next_to_repo() {
        let root = default_data_root(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")));
        assert!(root.ends_with("shared/datasets"), "{}", root.display());
    }
}
