//! Canonical JSON: the one byte form of a JSON document that Lockstep hashes
//! and signs (bundle manifests now; receipts and reports later).
//!
//! Rules: object keys sorted by their UTF-8 bytes, no insignificant
//! whitespace, strings escaped as `serde_json` escapes them (only `"`, `\`
//! and control characters), numbers only as integers. Floats are refused:
//! their text form is not unique, so anything float-valued that must be
//! hashed is carried as bits or as a string.
//!
//! The ordering is done here, not left to `serde_json::Map`, because whether
//! that map is sorted depends on a cargo feature any crate in the build could
//! switch on.

#![forbid(unsafe_code)]

use serde::Serialize;
use serde_json::Value;

/// Why a value has no canonical form.
#[derive(Debug, thiserror::Error)]
pub enum CanonicalJsonError {
    #[error("cannot serialise to JSON: {0}")]
    Serialize(#[from] serde_json::Error),
    #[error(
        "canonical JSON allows integers only, found {0}; carry floats as bit patterns or strings"
    )]
    Float(String),
}

/// The canonical bytes of any serialisable value.
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CanonicalJsonError> {
    let value = serde_json::to_value(value)?;
    let mut out = Vec::new();
    write_value(&value, &mut out)?;
    Ok(out)
}

/// Pretty, still key-sorted form for files people read and diff; parsing it
/// and calling [`to_vec`] gives the canonical bytes back.
pub fn to_pretty_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CanonicalJsonError> {
    let canonical = to_vec(value)?;
    // Re-parse the canonical form so the pretty printer sees sorted keys
    // whatever the map's own ordering.
    let value: Value = serde_json::from_slice(&canonical)?;
    let mut out = serde_json::to_vec_pretty(&sorted(&value))?;
    out.push(b'\n');
    Ok(out)
}

fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let mut out = serde_json::Map::new();
            for k in keys {
                out.insert(k.clone(), sorted(&map[k]));
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

fn write_value(value: &Value, out: &mut Vec<u8>) -> Result<(), CanonicalJsonError> {
    match value {
        Value::Null | Value::Bool(_) | Value::String(_) => {
            serde_json::to_writer(&mut *out, value)?;
        }
        Value::Number(n) => {
            if n.is_f64() {
                return Err(CanonicalJsonError::Float(n.to_string()));
            }
            serde_json::to_writer(&mut *out, value)?;
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, out)?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, k)?;
                out.push(b':');
                write_value(v, out)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sorts_keys_and_drops_whitespace() {
        let v = json!({"b": 1, "a": {"z": [1, 2, {"y": true, "x": null}], "c": "s\"q"}});
        let bytes = to_vec(&v).unwrap();
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            r#"{"a":{"c":"s\"q","z":[1,2,{"x":null,"y":true}]},"b":1}"#
        );
    }

    #[test]
    fn pretty_form_round_trips_to_the_same_canonical_bytes() {
        let v = json!({"k": [3, {"b": -1, "a": "é"}], "a": 0});
        let pretty = to_pretty_vec(&v).unwrap();
        let reparsed: Value = serde_json::from_slice(&pretty).unwrap();
        assert_eq!(to_vec(&reparsed).unwrap(), to_vec(&v).unwrap());
    }

    #[test]
    fn refuses_floats() {
        assert!(matches!(
            to_vec(&json!({"x": 1.5})),
            Err(CanonicalJsonError::Float(_))
        ));
    }
}
