//! `--set stage.param=value` overrides.
//!
//! The value is read as a TOML value when it parses as one (`3`, `0.5`, `true`, `[1, 2]`, `"text"`), and
//! as a plain string otherwise, so `--set ingest.root=/data/x` needs no quotes. Dotted keys reach into
//! nested tables (`--set crop.sizes=[256]`, `--set aug.noise.sigma=2`).

use std::str::FromStr;

use crate::error::{Error, Result};

/// One parsed `--set`.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    /// The text as given.
    pub spec: String,
    /// The stage id.
    pub stage: String,
    /// Param key path below the stage's `params`.
    pub key_path: Vec<String>,
    /// The value.
    pub value: toml::Value,
}

impl FromStr for Override {
    type Err = Error;

    fn from_str(spec: &str) -> Result<Self> {
        let bad = |m: &str| Error::Override { spec: spec.to_string(), message: m.to_string() };
        let (lhs, rhs) = spec.split_once('=').ok_or_else(|| bad("expected STAGE.PARAM=VALUE"))?;
        let mut parts = lhs.trim().split('.');
        let stage = parts.next().filter(|s| !s.is_empty()).ok_or_else(|| bad("missing stage id before `.`"))?;
        let key_path: Vec<String> = parts.map(str::to_string).collect();
        if key_path.is_empty() || key_path.iter().any(String::is_empty) {
            return Err(bad("expected STAGE.PARAM=VALUE (a param name after the stage id)"));
        }
        let value = parse_value(rhs.trim());
        Ok(Override { spec: spec.to_string(), stage: stage.to_string(), key_path, value })
    }
}

fn parse_value(s: &str) -> toml::Value {
    #[derive(serde::Deserialize)]
    struct Wrap {
        v: toml::Value,
    }
    match toml::from_str::<Wrap>(&format!("v = {s}")) {
        Ok(w) => w.v,
        Err(_) => toml::Value::String(s.to_string()),
    }
}

impl Override {
    /// Sets the value in a stage's params table, creating intermediate tables.
    pub fn apply(&self, table: &mut toml::Table) -> Result<()> {
        let mut t = table;
        for k in &self.key_path[..self.key_path.len() - 1] {
            let entry = t.entry(k.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            t = entry.as_table_mut().ok_or_else(|| Error::Override {
                spec: self.spec.clone(),
                message: format!("`{k}` is not a table"),
            })?;
        }
        t.insert(self.key_path.last().expect("non-empty key path").clone(), self.value.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_typed_and_plain_values() {
        let o: Override = "crop.size=96".parse().unwrap();
        assert_eq!((o.stage.as_str(), o.key_path.clone(), o.value.clone()), ("crop", vec!["size".to_string()], toml::Value::Integer(96)));
        let o: Override = "ingest.root=/data/x y".parse().unwrap();
        assert_eq!(o.value, toml::Value::String("/data/x y".into()));
        let o: Override = "a.b.c=[1, 2]".parse().unwrap();
        let mut t = toml::Table::new();
        o.apply(&mut t).unwrap();
        assert_eq!(t["b"]["c"].as_array().unwrap().len(), 2);
        assert!("nostage".parse::<Override>().is_err());
        assert!("stage=3".parse::<Override>().is_err());
    }
}
