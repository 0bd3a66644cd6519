//! Class tables: which label id each anatomical class gets, which class wins where masks overlap, which
//! masks are smoothed before merging, and the colour used in pictures.
//!
//! A class table is data, not code: a TOML file under `configs/` that a pipeline names. Its canonical
//! content is part of the params of the stages that use it, so editing it invalidates exactly their items.
//!
//! ```toml
//! background = "background"   # fills pixels no mask covers
//! [[class]]
//! name = "mass"               # also the mask's region name unless `mask` says otherwise
//! id = 4
//! priority = 40               # higher overwrites lower where masks overlap
//! smooth = true               # Gaussian-smoothed and thresholded at 0.5 before merging
//! colour = [230, 25, 75]
//! ```

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// One class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Class {
    /// Class name.
    pub name: String,
    /// Region name of its binary mask (default: `name`).
    #[serde(default)]
    pub mask: Option<String>,
    /// Label id in merged maps.
    pub id: u8,
    /// Merge priority: higher overwrites lower.
    pub priority: i32,
    /// Smooth the mask before merging.
    #[serde(default)]
    pub smooth: bool,
    /// RGB colour for pictures.
    #[serde(default)]
    pub colour: [u8; 3],
}

impl Class {
    /// The region name of its mask.
    pub fn mask_region(&self) -> &str {
        self.mask.as_deref().unwrap_or(&self.name)
    }
}

/// A class table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassTable {
    /// The class that fills pixels no mask covers.
    pub background: String,
    /// Classes.
    #[serde(rename = "class")]
    pub classes: Vec<Class>,
}

impl ClassTable {
    /// Reads and validates a table; errors name the file.
    pub fn load(path: &Path) -> Result<ClassTable, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read class table {}: {e}", path.display()))?;
        let t: ClassTable = toml::from_str(&text).map_err(|e| format!("class table {}: {}", path.display(), e.message().trim()))?;
        t.validate().map_err(|m| format!("class table {}: {m}", path.display()))?;
        Ok(t)
    }

    /// Unique names and ids, an existing background class.
    pub fn validate(&self) -> Result<(), String> {
        let mut names = HashSet::new();
        let mut ids = HashSet::new();
        for c in &self.classes {
            if !names.insert(c.name.as_str()) {
                return Err(format!("class `{}` appears twice", c.name));
            }
            if !ids.insert(c.id) {
                return Err(format!("label id {} is used twice (class `{}`)", c.id, c.name));
            }
        }
        if self.class(&self.background).is_none() {
            return Err(format!("background class `{}` is not in the table", self.background));
        }
        Ok(())
    }

    /// A class by name.
    pub fn class(&self, name: &str) -> Option<&Class> {
        self.classes.iter().find(|c| c.name == name)
    }

    /// The background class.
    pub fn background(&self) -> &Class {
        self.class(&self.background).expect("validated")
    }

    /// Classes in merge order (ascending priority; ties by id, so the order is total).
    pub fn merge_order(&self) -> Vec<&Class> {
        let mut v: Vec<&Class> = self.classes.iter().collect();
        v.sort_by_key(|c| (c.priority, c.id));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_tables_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.file_name().unwrap().to_string_lossy().starts_with("classes-") {
                ClassTable::load(&p).unwrap();
                n += 1;
            }
        }
        assert!(n >= 3);
    }

    #[test]
    fn duplicates_and_missing_background_are_refused() {
        let c = |name: &str, id| Class { name: name.into(), mask: None, id, priority: 0, smooth: false, colour: [0; 3] };
        let t = ClassTable { background: "bg".into(), classes: vec![c("bg", 0), c("a", 0)] };
        assert!(t.validate().unwrap_err().contains("label id 0"));
        let t = ClassTable { background: "none".into(), classes: vec![c("bg", 0)] };
        assert!(t.validate().unwrap_err().contains("background class"));
    }
}
