//! Content hashes and cache keys.
//!
//! A cache key is the BLAKE3 hash of a *canonical* encoding of exactly what determines an item's output:
//! the stage kind, the stage's code version, its canonicalised params and the keys (or source content
//! hashes) of its inputs, sorted by role. Paths, mtimes and sizes never enter a key, so moving a data set
//! or touching a file does not invalidate anything (as in DVC's `dict_hash`).

use serde_json::Value;

/// Hex BLAKE3 of a byte slice.
pub fn hash_bytes(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// Canonical JSON: object keys sorted (serde_json's default map is a BTreeMap), no whitespace, integers
/// kept as integers. Floats print with Rust's shortest round-trip form, so `0.5` and `0.50` agree.
pub fn canonical_json(v: &Value) -> String {
    // serde_json::Map is sorted unless the `preserve_order` feature is on; it is off in this crate.
    serde_json::to_string(v).expect("a serde_json::Value always serialises")
}

/// Hex BLAKE3 of a canonical JSON value (used for params hashes).
pub fn hash_value(v: &Value) -> String {
    hash_bytes(canonical_json(v).as_bytes())
}

/// What goes into an item's cache key.
#[derive(Debug, Clone)]
pub struct KeyParts<'a> {
    /// Stage kind, e.g. `ingest-png`.
    pub kind: &'a str,
    /// The stage's code version.
    pub version: u32,
    /// Hash of the canonical params.
    pub params_hash: &'a str,
    /// `(role, key or content hash)` of every input; order does not matter.
    pub inputs: &'a [(String, String)],
    /// The item id, for generator stages whose output depends on it (and nothing else does).
    pub item_id: Option<&'a str>,
}

/// The canonical JSON of a key: fields in sorted order, as [`canonical_json`] writes an object, so the
/// key is the one a `serde_json::Value` of the same fields would give (a unit test holds them equal),
/// without building that value: keying is most of what a no-op rerun does, once per item.
#[derive(serde::Serialize)]
struct KeyJson<'a> {
    inputs: Vec<[&'a str; 2]>,
    item: Option<&'a str>,
    kind: &'a str,
    params: &'a str,
    version: u32,
}

/// Computes the cache key of an item.
pub fn cache_key(parts: &KeyParts<'_>) -> String {
    let mut inputs: Vec<[&str; 2]> = parts.inputs.iter().map(|(r, k)| [r.as_str(), k.as_str()]).collect();
    inputs.sort_unstable();
    let k = KeyJson { inputs, item: parts.item_id, kind: parts.kind, params: parts.params_hash, version: parts.version };
    let mut h = blake3::Hasher::new();
    serde_json::to_writer(&mut h, &k).expect("a key serialises");
    h.finalize().to_hex().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(inputs: &[(&str, &str)], version: u32) -> String {
        let inputs: Vec<(String, String)> =
            inputs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        cache_key(&KeyParts { kind: "k", version, params_hash: "p", inputs: &inputs, item_id: None })
    }

    #[test]
    fn key_ignores_input_order_but_not_content() {
        assert_eq!(key(&[("a", "1"), ("b", "2")], 1), key(&[("b", "2"), ("a", "1")], 1));
        assert_ne!(key(&[("a", "1"), ("b", "2")], 1), key(&[("a", "1"), ("b", "3")], 1));
        assert_ne!(key(&[("a", "1")], 1), key(&[("a", "1")], 2));
    }

    #[test]
    fn the_key_is_the_hash_of_the_canonical_json_value() {
        let inputs = vec![("src:image".to_string(), "ab\"c".to_string()), ("in0.0".to_string(), "é\n".to_string())];
        for item_id in [None, Some("x/ü 1")] {
            let parts = KeyParts { kind: "ingest-png", version: 3, params_hash: "p", inputs: &inputs, item_id };
            let mut sorted: Vec<&(String, String)> = inputs.iter().collect();
            sorted.sort();
            let v = serde_json::json!({
                "kind": parts.kind,
                "version": parts.version,
                "params": parts.params_hash,
                "inputs": sorted.iter().map(|(r, k)| [r.as_str(), k.as_str()]).collect::<Vec<_>>(),
                "item": parts.item_id,
            });
            assert_eq!(cache_key(&parts), hash_value(&v));
        }
    }

    #[test]
    fn canonical_json_sorts_keys() {
        let a: Value = serde_json::from_str(r#"{"b":1,"a":{"d":2,"c":3}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":{"c":3,"d":2},"b":1}"#).unwrap();
        assert_eq!(canonical_json(&a), canonical_json(&b));
        assert_eq!(hash_value(&a), hash_value(&b));
    }
}
