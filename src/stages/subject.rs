//! Which woman an image belongs to, so that splits keep all her images on one side.
//!
//! DICOM ingest takes it from PatientID (as a keyed hash). Folder-of-PNG data sets encode it in file
//! names, if at all: `subject = "id"` (every image its own subject), `"mias-pairs"` (mini-MIAS numbers
//! come in pairs, odd = right and even = left breast of one woman: mdb001 and mdb002 are one subject), or
//! a regular expression whose first capture group is the subject (`"^(P_\\d+)_"`).

use crate::item_err;

/// A rule from item id to subject.
#[derive(Debug, Clone)]
pub enum SubjectRule {
    /// The item id itself.
    Id,
    /// mini-MIAS pairs.
    MiasPairs,
    /// First capture group of a regular expression.
    Regex(regex::Regex),
}

impl SubjectRule {
    /// Parses the param value.
    pub fn parse(s: &str) -> Result<Self, String> {
        Ok(match s {
            "id" => SubjectRule::Id,
            "mias-pairs" => SubjectRule::MiasPairs,
            re => {
                let r = regex::Regex::new(re).map_err(|e| format!("bad subject regex `{re}`: {e}"))?;
                if r.captures_len() < 2 {
                    return Err(format!("subject regex `{re}` needs a capture group"));
                }
                SubjectRule::Regex(r)
            }
        })
    }

    /// The subject of an item.
    pub fn subject(&self, id: &str) -> crate::error::Result<String> {
        match self {
            SubjectRule::Id => Ok(id.to_string()),
            SubjectRule::MiasPairs => {
                let n: u32 = id.trim_start_matches("mdb").parse().map_err(|_| item_err!("`{id}` is not a mini-MIAS name (mdbNNN)"))?;
                Ok(format!("mias-{:03}", n.div_ceil(2)))
            }
            SubjectRule::Regex(r) => r
                .captures(id)
                .and_then(|c| c.get(1))
                .map(|m| m.as_str().to_string())
                .ok_or_else(|| item_err!("subject regex `{}` does not match `{id}`", r.as_str())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        assert_eq!(SubjectRule::parse("id").unwrap().subject("a").unwrap(), "a");
        let m = SubjectRule::parse("mias-pairs").unwrap();
        assert_eq!(m.subject("mdb001").unwrap(), m.subject("mdb002").unwrap());
        assert_ne!(m.subject("mdb002").unwrap(), m.subject("mdb003").unwrap());
        let r = SubjectRule::parse(r"^(P_\d+)_").unwrap();
        assert_eq!(r.subject("P_00820_LEFT_CC").unwrap(), "P_00820");
        assert!(r.subject("x").is_err());
        assert!(SubjectRule::parse("no group").is_err());
    }
}
