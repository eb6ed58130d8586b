//! A reference file (`NAME.ref.json`, written by `lockstep permit`, read
//! by `lockstep submit exec --ref`): one output of a signed receipt, where
//! its producer is, and the submitter's permission for named consumers to
//! fetch it.

use std::io::Read as _;
use std::path::Path;

use lockstep_protocol::{Permission, TensorReference};
use serde::{Deserialize, Serialize};

use crate::failure::Failure;

/// The `format` field of a reference file.
pub const FORMAT: &str = "lockstep-reference/1";

/// Largest reference file read: a receipt, two signatures and a permission
/// are a few KiB.
const MAX_BYTES: u64 = 256 * 1024;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PermissionText {
    statement: String,
    signature: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReferenceText {
    format: String,
    producer: String,
    address: String,
    job_id: String,
    output: String,
    sha256: String,
    receipt: String,
    signature: String,
    permission: PermissionText,
}

/// Writes `r` (its `input` is not part of the file: the consumer names it).
pub fn write(path: &Path, r: &TensorReference) -> Result<(), Failure> {
    let text = |b: &[u8], what: &str| {
        String::from_utf8(b.to_vec())
            .map_err(|_| Failure::Runtime(format!("{what} is not UTF-8 text")))
    };
    let file = ReferenceText {
        format: FORMAT.into(),
        producer: r.producer.clone(),
        address: r.address.clone(),
        job_id: hex::encode(r.job_id),
        output: r.output.clone(),
        sha256: hex::encode(r.sha256),
        receipt: text(&r.receipt, "the receipt")?,
        signature: r.signature.clone(),
        permission: PermissionText {
            statement: text(&r.permission.statement, "the permission")?,
            signature: r.permission.signature.clone(),
        },
    };
    let mut bytes = serde_json::to_vec_pretty(&file).expect("strings serialize");
    bytes.push(b'\n');
    std::fs::write(path, bytes).map_err(|e| Failure::Runtime(format!("{}: {e}", path.display())))
}

/// Reads a reference file as the reference for input `input_name`.
pub fn read(path: &Path, input_name: &str) -> Result<TensorReference, Failure> {
    let bad = |m: &dyn std::fmt::Display| Failure::Input(format!("{}: {m}", path.display()));
    let file = std::fs::File::open(path).map_err(|e| bad(&e))?;
    let mut bytes = Vec::new();
    file.take(MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| bad(&e))?;
    if bytes.len() as u64 > MAX_BYTES {
        return Err(bad(&format!(
            "larger than {MAX_BYTES} bytes: not a reference file"
        )));
    }
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| bad(&format!("not a reference file: {e}")))?;
    match value.get("format").and_then(|f| f.as_str()) {
        Some(FORMAT) => {}
        Some(other) => {
            return Err(bad(&format!(
                "unknown format {other:?}; this lockstep reads {FORMAT}"
            )))
        }
        None => return Err(bad(&"not a reference file: no format")),
    }
    let file: ReferenceText =
        serde_json::from_value(value).map_err(|e| bad(&format!("not a reference file: {e}")))?;
    let job_id = hex::decode(&file.job_id)
        .ok()
        .and_then(|v| <[u8; 16]>::try_from(v).ok())
        .ok_or_else(|| bad(&format!("job_id {:?} is not 16 bytes of hex", file.job_id)))?;
    let sha256 = hex::decode(&file.sha256)
        .ok()
        .and_then(|v| <[u8; 32]>::try_from(v).ok())
        .ok_or_else(|| bad(&format!("sha256 {:?} is not 32 bytes of hex", file.sha256)))?;
    Ok(TensorReference {
        input: input_name.to_string(),
        producer: file.producer,
        address: file.address,
        job_id,
        output: file.output,
        sha256,
        receipt: file.receipt.into_bytes(),
        signature: file.signature,
        permission: Permission {
            statement: file.permission.statement.into_bytes(),
            signature: file.permission.signature,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference() -> TensorReference {
        TensorReference {
            input: "w1".into(),
            producer: "RWQ".into(),
            address: "127.0.0.1:4433".into(),
            job_id: [7; 16],
            output: "w1".into(),
            sha256: [9; 32],
            receipt: b"{\"format\":4}".to_vec(),
            signature: "untrusted comment: x\nsig\n".into(),
            permission: Permission {
                statement: b"{\"format\":\"p\"}".to_vec(),
                signature: "untrusted comment: y\nsig\n".into(),
            },
        }
    }

    #[test]
    fn a_written_reference_reads_back_under_the_consumer_s_input_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w1.ref.json");
        write(&path, &reference()).unwrap();
        let back = read(&path, "x").unwrap();
        assert_eq!(back.input, "x");
        assert_eq!(
            back,
            TensorReference {
                input: "x".into(),
                ..reference()
            }
        );
    }

    #[test]
    fn unknown_formats_and_oversized_files_are_bad_input() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        std::fs::write(&path, r#"{"format":"lockstep-reference/9"}"#).unwrap();
        assert!(matches!(read(&path, "x"), Err(Failure::Input(m)) if m.contains("unknown format")));
        std::fs::write(&path, vec![b' '; 300 * 1024]).unwrap();
        assert!(matches!(read(&path, "x"), Err(Failure::Input(m)) if m.contains("larger")));
    }
}
