//! Evidence a node serves about a job it ran, for spot checks and disputes:
//! one trace leaf (its output hash, its RFC 6962 audit path and, if asked,
//! the tensor itself as data chunks), or one of the job's retained inputs.
//! The client checks every answer against the trace root and input hashes
//! of the receipt it holds, so nothing here needs to be trusted.

use lockstep_limits::{
    MAX_AUDIT_PATH_HASHES, MAX_RECEIPT_BYTES, MAX_SIGNATURE_FILE_BYTES, MAX_TENSOR_NAME_BYTES,
};
use serde::{Deserialize, Serialize};

use crate::message::{MessageError, TensorHeader};

/// Why the requester may read a job's evidence. Evidence is the job's
/// inputs and every intermediate tensor: the submitter's data, so a node
/// serves it only to whoever holds the job's signed receipt: the submitter,
/// and anyone the submitter handed the receipt to (a verifier, a referee
/// settling a dispute). Knowing a job id is not enough.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EvidenceAccess {
    /// The job's receipt exactly as this node signed it (canonical JSON
    /// bytes and the minisign signature file). The node checks its own
    /// signature and that the receipt names the requested job.
    Receipt { receipt: Vec<u8>, signature: String },
}

/// Client → node: leaf `index` of job `job_id`'s trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeafRequest {
    pub job_id: [u8; 16],
    pub index: u64,
    /// Send the output tensor too (else only its hash and audit path: the
    /// cheap answer a bisection step needs).
    pub with_data: bool,
    pub access: EvidenceAccess,
}

/// Node → client: the leaf; when `tensor` is set, its data chunks follow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeafEvidence {
    pub index: u64,
    /// Leaves in the job's trace.
    pub size: u64,
    /// The op's output SHA-256 (the leaf data).
    pub leaf: [u8; 32],
    /// Audit path, leaf to root.
    pub path: Vec<[u8; 32]>,
    pub tensor: Option<TensorHeader>,
}

/// Client → node: the retained program input `name` of job `job_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputRequest {
    pub job_id: [u8; 16],
    pub name: String,
    pub access: EvidenceAccess,
}

pub(crate) fn check_access(a: &EvidenceAccess) -> Result<(), MessageError> {
    match a {
        EvidenceAccess::Receipt { receipt, signature } => {
            if receipt.len() > MAX_RECEIPT_BYTES || signature.len() > MAX_SIGNATURE_FILE_BYTES {
                return Err(MessageError::Bound(format!(
                    "an access receipt of {} bytes with a {}-byte signature; at most {MAX_RECEIPT_BYTES} and {MAX_SIGNATURE_FILE_BYTES}",
                    receipt.len(),
                    signature.len()
                )));
            }
            Ok(())
        }
    }
}

pub(crate) fn check_leaf(e: &LeafEvidence) -> Result<(), MessageError> {
    if e.path.len() > MAX_AUDIT_PATH_HASHES {
        return Err(MessageError::Bound(format!(
            "an audit path of {} hashes; at most {MAX_AUDIT_PATH_HASHES}",
            e.path.len()
        )));
    }
    Ok(())
}

pub(crate) fn check_name(name: &str) -> Result<(), MessageError> {
    if name.len() > MAX_TENSOR_NAME_BYTES {
        return Err(MessageError::Bound(format!(
            "a tensor name of {} bytes; at most {MAX_TENSOR_NAME_BYTES}",
            name.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Frame;
    use crate::message::Message;

    fn payload(m: &Message) -> Vec<u8> {
        let Frame::Control(p) = m.to_frame() else {
            panic!("control frame expected")
        };
        p
    }

    fn access(receipt_bytes: usize) -> EvidenceAccess {
        EvidenceAccess::Receipt {
            receipt: vec![b'{'; receipt_bytes],
            signature: "sig".into(),
        }
    }

    #[test]
    fn evidence_messages_round_trip_and_are_bounded() {
        let leaf = |n: usize| {
            Message::Leaf(LeafEvidence {
                index: 5,
                size: 9,
                leaf: [1; 32],
                path: vec![[2; 32]; n],
                tensor: None,
            })
        };
        for m in [
            Message::FetchLeaf(LeafRequest {
                job_id: [3; 16],
                index: 5,
                with_data: true,
                access: access(10),
            }),
            leaf(4),
            Message::FetchInput(InputRequest {
                job_id: [3; 16],
                name: "x".into(),
                access: access(10),
            }),
        ] {
            assert_eq!(Message::decode(&payload(&m)).unwrap(), m);
        }
        let too_long = payload(&leaf(MAX_AUDIT_PATH_HASHES + 1));
        assert!(matches!(
            Message::decode(&too_long),
            Err(MessageError::Bound(_))
        ));
        let long_name = Message::FetchInput(InputRequest {
            job_id: [0; 16],
            name: "n".repeat(MAX_TENSOR_NAME_BYTES + 1),
            access: access(10),
        });
        assert!(matches!(
            Message::decode(&payload(&long_name)),
            Err(MessageError::Bound(_))
        ));
        let huge_receipt = Message::FetchLeaf(LeafRequest {
            job_id: [0; 16],
            index: 0,
            with_data: false,
            access: access(MAX_RECEIPT_BYTES + 1),
        });
        assert!(matches!(
            Message::decode(&payload(&huge_receipt)),
            Err(MessageError::Bound(_))
        ));
    }
}
