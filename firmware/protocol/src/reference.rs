//! Tensor references: a job input given as another node's output
//! (docs/protocol.md, "References").
//!
//! A [`TensorReference`] names the producing node (id and address), its
//! job, the output and its SHA-256, and carries that job's signed receipt
//! and a [`Permission`]: a capability the job's submitter signed, naming
//! the output, the nodes that may fetch it, and an expiry.
//!
//! Three checks, all pure functions of bytes, keys and the time given:
//! - [`check_reference`]: the consuming node, before it runs anything or
//!   opens a connection: the receipt verifies under the producer's key,
//!   names the job and this output with this hash, and the permission is
//!   the submitter's, for this output, this consumer and still valid.
//! - [`check_fetch`]: the producing node, before it reads a byte of the
//!   output: the same permission checks against its own retained receipt,
//!   and the consumer's proof that it holds the key the permission names,
//!   bound to this connection's TLS session ([`proof_message`]), so a
//!   permission overheard or leaked is no use to anybody else.
//! - the bytes against the hash, as they arrive ([`crate::TensorReceiver`]).
//!
//! Every refusal is a [`ReferenceError`]: the input it concerns, a typed
//! [`ReferenceRefusal`], and one line saying what to do.

use std::time::{SystemTime, UNIX_EPOCH};

use lockstep_identity::{NodeId, Signature, SigningKey};
use lockstep_limits::{
    MAX_PEER_ADDRESS_BYTES, MAX_PERMISSION_BYTES, MAX_PERMISSION_CONSUMERS,
    MAX_PERMISSION_VALIDITY_S, MAX_PUBLIC_KEY_TEXT_BYTES, MAX_RECEIPT_BYTES,
    MAX_SIGNATURE_FILE_BYTES, MAX_TENSOR_NAME_BYTES,
};
use serde::{Deserialize, Serialize};

use crate::message::{ErrorKind, JobError, MessageError};
use crate::receipt::{parse_rfc3339, Receipt, ReferenceRecord};

/// The `format` of a [`PermissionStatement`].
pub const PERMISSION_FORMAT: &str = "lockstep-fetch-permission/1";

/// The TLS exporter label both ends of a fetch derive the session binding
/// from (RFC 8446 section 7.5; RFC 5705 names the label).
pub const FETCH_EXPORTER_LABEL: &[u8] = b"EXPORTER-lockstep-peer-fetch";

/// Why a reference was refused: what a test, a client or an operator
/// dashboard can branch on. The message beside it says what to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ReferenceRefusal {
    /// The reference itself is not well formed (a bad node id, address or
    /// length).
    Malformed,
    /// The source receipt does not verify under the producer's key, is not
    /// canonical, or names another node or job.
    ForgedReceipt,
    /// The source receipt has no such output, or says another hash.
    NotInReceipt,
    /// No valid permission: none, not signed by the job's submitter (or the
    /// job had none), for another output, or not naming this consumer; or
    /// the consumer did not prove it holds the key it names.
    NoPermission,
    /// The permission's expiry has passed.
    PermissionExpired,
    /// The producer no longer holds the output (evicted after its retention
    /// window or for space, or never ran the job).
    NotRetained,
    /// The producer could not be reached, or its key did not match.
    Unreachable,
    /// The producer was over a budget for every attempt.
    Busy,
    /// The producer stopped sending mid-transfer.
    Stalled,
    /// The bytes that arrived do not hash to the reference's SHA-256, or
    /// have another shape than the program declares.
    DataMismatch,
}

/// A refused reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("input '{input}' (a reference): {message}")]
pub struct ReferenceError {
    /// The consuming job's input name.
    pub input: String,
    pub refusal: ReferenceRefusal,
    /// One line, saying what to do next.
    pub message: String,
}

impl ReferenceError {
    pub fn new(input: &str, refusal: ReferenceRefusal, message: impl Into<String>) -> Self {
        ReferenceError {
            input: input.to_string(),
            refusal,
            message: message.into(),
        }
    }

    /// The reply a node sends for it.
    pub fn to_job_error(&self) -> JobError {
        JobError {
            kind: ErrorKind::Reference(self.refusal),
            message: self.to_string(),
        }
    }
}

/// What the submitter signs: the producer may serve `output` of `job_id`
/// (with this hash) to the `consumers` until `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PermissionStatement {
    pub format: String,
    /// The producing node's id.
    pub producer: String,
    /// Hex of the producing job's id.
    pub job_id: String,
    pub output: String,
    /// Hex SHA-256 of the output's canonical `.npy` bytes.
    pub sha256: String,
    /// Node ids allowed to fetch it.
    pub consumers: Vec<String>,
    /// RFC 3339 UTC, second precision.
    pub expires_at: String,
    /// The submitter's public key, which signed this (it must be the
    /// producing receipt's `submitter`).
    pub submitter: String,
}

impl PermissionStatement {
    /// The exact bytes that are signed.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        lockstep_canonical_json::to_vec(self).expect("permissions hold only strings")
    }
}

/// A signed [`PermissionStatement`]: its canonical bytes and the
/// submitter's minisign signature file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permission {
    pub statement: Vec<u8>,
    pub signature: String,
}

impl Permission {
    /// The submitter (`key`) permits `consumers` to fetch output `output`
    /// of the job `receipt` records, until `expires_at`.
    pub fn grant(
        key: &SigningKey,
        receipt: &Receipt,
        output: &str,
        consumers: &[NodeId],
        expires_at: SystemTime,
    ) -> Result<Permission, String> {
        let sha256 = receipt
            .outputs
            .get(output)
            .ok_or_else(|| format!("the receipt has no output named '{output}'"))?;
        if receipt.submitter.as_deref() != Some(key.public().to_base64().as_str()) {
            return Err(match &receipt.submitter {
                None => "the job was submitted without a submitter key, so nobody can permit fetching its outputs; resubmit it with --submitter-key".into(),
                Some(s) => format!("the job was submitted by key {s}; only that key can permit fetching its outputs"),
            });
        }
        if consumers.is_empty() || consumers.len() > MAX_PERMISSION_CONSUMERS {
            return Err(format!(
                "a permission names 1 to {MAX_PERMISSION_CONSUMERS} consumer nodes, not {}",
                consumers.len()
            ));
        }
        let statement = PermissionStatement {
            format: PERMISSION_FORMAT.into(),
            producer: receipt.node.clone(),
            job_id: receipt.job_id.clone(),
            output: output.into(),
            sha256: sha256.clone(),
            consumers: consumers.iter().map(NodeId::to_base64).collect(),
            expires_at: crate::receipt::rfc3339(expires_at),
            submitter: key.public().to_base64(),
        };
        let bytes = statement.canonical_bytes();
        let comment = format!(
            "lockstep fetch permission job {} output {output}",
            receipt.job_id
        );
        let signature = key.sign_minisign(&bytes, &comment).to_file();
        Ok(Permission {
            statement: bytes,
            signature,
        })
    }

    /// Checks that this permits `consumer` to fetch `output` of the job
    /// `receipt` records, at `now`; returns the statement.
    pub fn check(
        &self,
        input: &str,
        receipt: &Receipt,
        output: &str,
        consumer: &NodeId,
        now: SystemTime,
    ) -> Result<PermissionStatement, ReferenceError> {
        let no = |m: String| ReferenceError::new(input, ReferenceRefusal::NoPermission, m);
        let submitter = receipt.submitter.as_deref().ok_or_else(|| {
            no("the producing job was submitted without a submitter key, so no permission can be given for its outputs; its submitter must resubmit it with a key".into())
        })?;
        let submitter_id = NodeId::parse(submitter)
            .map_err(|e| no(format!("the receipt's submitter key: {e}")))?;
        Signature::parse(&self.signature)
            .and_then(|s| s.verify(&submitter_id, &self.statement))
            .map_err(|e| {
                no(format!(
                    "the permission is not signed by the job's submitter {submitter}: {e}"
                ))
            })?;
        let statement: PermissionStatement = serde_json::from_slice(&self.statement)
            .map_err(|e| no(format!("the permission is not a fetch permission: {e}")))?;
        if statement.canonical_bytes() != self.statement || statement.format != PERMISSION_FORMAT {
            return Err(no(format!(
                "the permission is not a canonical {PERMISSION_FORMAT} statement"
            )));
        }
        let same = statement.submitter == submitter
            && statement.producer == receipt.node
            && statement.job_id == receipt.job_id
            && statement.output == output
            && receipt.outputs.get(output) == Some(&statement.sha256);
        if !same {
            return Err(no(format!(
                "the permission is for output '{}' of job {} on node {}, not output '{output}' of job {} on node {}",
                statement.output, statement.job_id, statement.producer, receipt.job_id, receipt.node
            )));
        }
        if statement.consumers.len() > MAX_PERMISSION_CONSUMERS {
            return Err(no(format!(
                "the permission names {} consumers; at most {MAX_PERMISSION_CONSUMERS}",
                statement.consumers.len()
            )));
        }
        if !statement.consumers.contains(&consumer.to_base64()) {
            return Err(no(format!(
                "the permission does not name node {consumer}; ask the submitter for one that does"
            )));
        }
        let expires = parse_rfc3339(&statement.expires_at).ok_or_else(|| {
            no(format!(
                "expiry {:?} is not RFC 3339 UTC",
                statement.expires_at
            ))
        })?;
        let now_s = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if now_s >= expires {
            return Err(ReferenceError::new(
                input,
                ReferenceRefusal::PermissionExpired,
                format!(
                    "the permission expired at {}; ask the submitter for a new one",
                    statement.expires_at
                ),
            ));
        }
        if expires - now_s > MAX_PERMISSION_VALIDITY_S {
            return Err(no(format!(
                "the permission is valid until {}, more than {MAX_PERMISSION_VALIDITY_S} s from now; ask for a shorter one",
                statement.expires_at
            )));
        }
        Ok(statement)
    }
}

/// A job input given as another node's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorReference {
    /// The consuming job's input name.
    pub input: String,
    /// The producing node's id; the fetch pins it.
    pub producer: String,
    /// Where the producer listens (`host:port`, UDP).
    pub address: String,
    pub job_id: [u8; 16],
    /// The output's name in the producing job.
    pub output: String,
    pub sha256: [u8; 32],
    /// The producing job's receipt, exactly as signed, and its minisign
    /// signature file.
    pub receipt: Vec<u8>,
    pub signature: String,
    pub permission: Permission,
}

impl TensorReference {
    /// What the consuming receipt records of it.
    pub fn record(&self) -> ReferenceRecord {
        use sha2::{Digest, Sha256};
        ReferenceRecord {
            producer: self.producer.clone(),
            job_id: hex::encode(self.job_id),
            output: self.output.clone(),
            source_receipt_sha256: hex::encode(Sha256::digest(&self.receipt)),
        }
    }
}

/// The consuming node's check of a reference, before any work: the source
/// receipt under the producer's key, the output and hash in it, the
/// permission for `consumer` at `now`. Returns the producer's id, its
/// address and the verified receipt.
pub fn check_reference(
    r: &TensorReference,
    consumer: &NodeId,
    now: SystemTime,
) -> Result<(NodeId, std::net::SocketAddr, Receipt), ReferenceError> {
    let input = r.input.as_str();
    let malformed = |m: String| ReferenceError::new(input, ReferenceRefusal::Malformed, m);
    let producer = NodeId::parse(&r.producer)
        .map_err(|e| malformed(format!("the producer's node id: {e}")))?;
    let address: std::net::SocketAddr = r
        .address
        .parse()
        .map_err(|_| malformed(format!("producer address {:?} is not host:port", r.address)))?;
    let receipt = Receipt::verify(&r.receipt, &r.signature, &producer).map_err(|e| {
        ReferenceError::new(
            input,
            ReferenceRefusal::ForgedReceipt,
            format!("the source receipt does not verify under the producer's key: {e}"),
        )
    })?;
    if receipt.job_id != hex::encode(r.job_id) {
        return Err(ReferenceError::new(
            input,
            ReferenceRefusal::ForgedReceipt,
            format!(
                "the source receipt is for job {}, not job {}",
                receipt.job_id,
                hex::encode(r.job_id)
            ),
        ));
    }
    match receipt.outputs.get(&r.output) {
        Some(h) if *h == hex::encode(r.sha256) => {}
        Some(h) => {
            return Err(ReferenceError::new(
                input,
                ReferenceRefusal::NotInReceipt,
                format!(
                    "the reference says output '{}' has SHA-256 {}, but the producer's receipt says {h}",
                    r.output,
                    hex::encode(r.sha256)
                ),
            ))
        }
        None => {
            return Err(ReferenceError::new(
                input,
                ReferenceRefusal::NotInReceipt,
                format!("the producer's receipt has no output named '{}'", r.output),
            ))
        }
    }
    r.permission
        .check(input, &receipt, &r.output, consumer, now)?;
    Ok((producer, address, receipt))
}

/// Consumer → producer: send output `output` of job `job_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputRequest {
    pub job_id: [u8; 16],
    pub output: String,
    pub permission: Permission,
    /// The consuming node's id.
    pub consumer: String,
    /// The consumer's minisign signature of [`proof_message`] with its
    /// device key.
    pub proof: String,
}

/// What a consumer signs to prove, on this connection only, that it holds
/// its key: the TLS exporter value of the session (both ends compute it;
/// nobody else can), and what it asks for.
pub fn proof_message(
    exporter: &[u8; 32],
    producer: &str,
    job_id: &[u8; 16],
    output: &str,
) -> Vec<u8> {
    let mut m = b"lockstep-peer-fetch/1\n".to_vec();
    m.extend_from_slice(hex::encode(exporter).as_bytes());
    m.push(b'\n');
    m.extend_from_slice(producer.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(hex::encode(job_id).as_bytes());
    m.push(b'\n');
    m.extend_from_slice(output.as_bytes());
    m
}

/// The producing node's check of a fetch, against its own `receipt` of the
/// job (retained), the connection's TLS `exporter` value and `now`.
/// Returns the output's SHA-256.
pub fn check_fetch(
    request: &OutputRequest,
    receipt: &Receipt,
    exporter: &[u8; 32],
    now: SystemTime,
) -> Result<[u8; 32], ReferenceError> {
    let input = request.output.as_str();
    let no = |m: String| ReferenceError::new(input, ReferenceRefusal::NoPermission, m);
    let consumer =
        NodeId::parse(&request.consumer).map_err(|e| no(format!("the consumer's node id: {e}")))?;
    let message = proof_message(exporter, &receipt.node, &request.job_id, &request.output);
    Signature::parse(&request.proof)
        .and_then(|s| s.verify(&consumer, &message))
        .map_err(|e| {
            no(format!(
                "the fetch is not signed by node {consumer} for this connection: {e}"
            ))
        })?;
    request
        .permission
        .check(input, receipt, &request.output, &consumer, now)?;
    let sha = receipt
        .outputs
        .get(&request.output)
        .and_then(|h| hex::decode(h).ok())
        .and_then(|h| <[u8; 32]>::try_from(h).ok())
        .ok_or_else(|| {
            ReferenceError::new(
                input,
                ReferenceRefusal::NotInReceipt,
                format!(
                    "job {} has no output named '{}'",
                    receipt.job_id, request.output
                ),
            )
        })?;
    Ok(sha)
}

/// Lineage → a node that ran a job: the source of its referenced input
/// `input` (the reference it was given, less the permission).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRequest {
    pub job_id: [u8; 16],
    pub input: String,
    pub access: crate::evidence::EvidenceAccess,
}

/// Node → lineage: where a referenced input came from, and the source
/// receipt, which hashes to the digest the job's receipt records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceEvidence {
    pub input: String,
    pub producer: String,
    pub address: String,
    pub job_id: [u8; 16],
    pub output: String,
    pub receipt: Vec<u8>,
    pub signature: String,
}

/// Lineage → a node that ran a job: its program (canonical postcard).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgramRequest {
    pub job_id: [u8; 16],
    pub access: crate::evidence::EvidenceAccess,
}

fn bound(what: &str, len: usize, max: usize) -> Result<(), MessageError> {
    if len > max {
        return Err(MessageError::Bound(format!(
            "{what} of {len} bytes; at most {max}"
        )));
    }
    Ok(())
}

pub(crate) fn check_permission(p: &Permission) -> Result<(), MessageError> {
    bound(
        "a permission statement",
        p.statement.len(),
        MAX_PERMISSION_BYTES,
    )?;
    bound(
        "a permission signature",
        p.signature.len(),
        MAX_SIGNATURE_FILE_BYTES,
    )
}

pub(crate) fn check_reference_bounds(r: &TensorReference) -> Result<(), MessageError> {
    bound(
        "a reference's input name",
        r.input.len(),
        MAX_TENSOR_NAME_BYTES,
    )?;
    bound(
        "a reference's output name",
        r.output.len(),
        MAX_TENSOR_NAME_BYTES,
    )?;
    bound("a producer id", r.producer.len(), MAX_PUBLIC_KEY_TEXT_BYTES)?;
    bound(
        "a producer address",
        r.address.len(),
        MAX_PEER_ADDRESS_BYTES,
    )?;
    bound("a source receipt", r.receipt.len(), MAX_RECEIPT_BYTES)?;
    bound(
        "a source receipt signature",
        r.signature.len(),
        MAX_SIGNATURE_FILE_BYTES,
    )?;
    check_permission(&r.permission)
}

pub(crate) fn check_output_request(r: &OutputRequest) -> Result<(), MessageError> {
    bound("an output name", r.output.len(), MAX_TENSOR_NAME_BYTES)?;
    bound("a consumer id", r.consumer.len(), MAX_PUBLIC_KEY_TEXT_BYTES)?;
    bound("a fetch proof", r.proof.len(), MAX_SIGNATURE_FILE_BYTES)?;
    check_permission(&r.permission)
}

pub(crate) fn check_source(e: &SourceEvidence) -> Result<(), MessageError> {
    bound("an input name", e.input.len(), MAX_TENSOR_NAME_BYTES)?;
    bound("an output name", e.output.len(), MAX_TENSOR_NAME_BYTES)?;
    bound("a producer id", e.producer.len(), MAX_PUBLIC_KEY_TEXT_BYTES)?;
    bound(
        "a producer address",
        e.address.len(),
        MAX_PEER_ADDRESS_BYTES,
    )?;
    bound("a source receipt", e.receipt.len(), MAX_RECEIPT_BYTES)?;
    bound(
        "a source receipt signature",
        e.signature.len(),
        MAX_SIGNATURE_FILE_BYTES,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receipt::{DeviceRecord, RECEIPT_FORMAT};
    use lockstep_identity::{DeviceKey, KeyProtection};
    use std::collections::BTreeMap;
    use std::time::Duration;

    struct World {
        producer: DeviceKey,
        consumer: DeviceKey,
        submitter: SigningKey,
        receipt: Receipt,
        bytes: Vec<u8>,
        signature: String,
    }

    fn key() -> DeviceKey {
        let dir = tempfile::tempdir().unwrap();
        DeviceKey::load_or_create(dir.path()).unwrap().0
    }

    fn world() -> World {
        let producer = key();
        let submitter = SigningKey::generate();
        let receipt = Receipt {
            format: RECEIPT_FORMAT,
            node: producer.node_id().to_base64(),
            job_id: hex::encode([7u8; 16]),
            bundle_id: "b".repeat(64),
            device: DeviceRecord {
                backend: "cpu".into(),
                name: "reference".into(),
                vendor_id: 0,
                device_id: 0,
                driver_id: 0,
                driver_version: 0,
                api_version: 0,
                uuid: Some("00".repeat(16)),
                index: Some(0),
            },
            program_sha256: "c".repeat(64),
            inputs: BTreeMap::new(),
            outputs: [("w".to_string(), "d".repeat(64))].into(),
            trace_root: "e".repeat(64),
            started_at: "2026-12-03T00:00:00Z".into(),
            finished_at: "2026-12-03T00:00:01Z".into(),
            certified: false,
            key_protection: Some(KeyProtection::File),
            chain_address: Some("0x0000000000000000000000000000000000000001".into()),
            submitter: Some(submitter.public().to_base64()),
            references: Some(BTreeMap::new()),
        };
        let (bytes, signature) = receipt.sign(&producer);
        World {
            producer,
            consumer: key(),
            submitter,
            receipt,
            bytes,
            signature: signature.to_file(),
        }
    }

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(parse_rfc3339("2026-12-03T01:00:00Z").unwrap())
    }

    fn reference(w: &World, consumers: &[NodeId], ttl_s: u64) -> TensorReference {
        let permission = Permission::grant(
            &w.submitter,
            &w.receipt,
            "w",
            consumers,
            now() + Duration::from_secs(ttl_s),
        )
        .unwrap();
        TensorReference {
            input: "w_in".into(),
            producer: w.producer.node_id().to_base64(),
            address: "127.0.0.1:4433".into(),
            job_id: [7; 16],
            output: "w".into(),
            sha256: [0xdd; 32],
            receipt: w.bytes.clone(),
            signature: w.signature.clone(),
            permission,
        }
    }

    fn refusal(r: &TensorReference, consumer: &NodeId, at: SystemTime) -> ReferenceRefusal {
        check_reference(r, consumer, at).unwrap_err().refusal
    }

    #[test]
    fn a_good_reference_passes_and_each_fault_has_its_refusal() {
        let w = world();
        let me = w.consumer.node_id().clone();
        let good = reference(&w, std::slice::from_ref(&me), 600);
        let (producer, address, receipt) = check_reference(&good, &me, now()).unwrap();
        assert_eq!(&producer, w.producer.node_id());
        assert_eq!(address.port(), 4433);
        assert_eq!(receipt, w.receipt);

        let mut forged = good.clone();
        forged.receipt[10] ^= 1;
        assert_eq!(
            refusal(&forged, &me, now()),
            ReferenceRefusal::ForgedReceipt
        );
        let mut other_producer = good.clone();
        other_producer.producer = me.to_base64();
        assert_eq!(
            refusal(&other_producer, &me, now()),
            ReferenceRefusal::ForgedReceipt
        );
        let mut wrong_hash = good.clone();
        wrong_hash.sha256[0] ^= 1;
        assert_eq!(
            refusal(&wrong_hash, &me, now()),
            ReferenceRefusal::NotInReceipt
        );
        let mut no_output = good.clone();
        no_output.output = "nope".into();
        assert_eq!(
            refusal(&no_output, &me, now()),
            ReferenceRefusal::NotInReceipt
        );

        let stranger = key();
        assert_eq!(
            refusal(&good, stranger.node_id(), now()),
            ReferenceRefusal::NoPermission
        );
        let mut unsigned = good.clone();
        unsigned.permission.signature = String::new();
        assert_eq!(
            refusal(&unsigned, &me, now()),
            ReferenceRefusal::NoPermission
        );
        let late = now() + Duration::from_secs(601);
        assert_eq!(
            refusal(&good, &me, late),
            ReferenceRefusal::PermissionExpired
        );
        let too_long = reference(
            &w,
            std::slice::from_ref(&me),
            MAX_PERMISSION_VALIDITY_S + 10,
        );
        assert_eq!(
            refusal(&too_long, &me, now()),
            ReferenceRefusal::NoPermission
        );

        // A permission signed by someone else than the submitter.
        let mut receipt = w.receipt.clone();
        let other = SigningKey::generate();
        receipt.submitter = Some(other.public().to_base64());
        let by_other = Permission::grant(
            &other,
            &receipt,
            "w",
            std::slice::from_ref(&me),
            now() + Duration::from_secs(60),
        )
        .unwrap();
        let mut hijacked = good.clone();
        hijacked.permission = by_other;
        assert_eq!(
            refusal(&hijacked, &me, now()),
            ReferenceRefusal::NoPermission
        );

        let mut bad_address = good;
        bad_address.address = "nowhere".into();
        assert_eq!(
            refusal(&bad_address, &me, now()),
            ReferenceRefusal::Malformed
        );
    }

    #[test]
    fn only_the_submitter_can_grant() {
        let w = world();
        let me = w.consumer.node_id().clone();
        let other = SigningKey::generate();
        assert!(
            Permission::grant(&other, &w.receipt, "w", std::slice::from_ref(&me), now()).is_err()
        );
        let mut anonymous = w.receipt.clone();
        anonymous.submitter = None;
        assert!(Permission::grant(&w.submitter, &anonymous, "w", &[me], now()).is_err());
    }

    #[test]
    fn a_fetch_is_bound_to_its_connection_and_consumer() {
        let w = world();
        let me = w.consumer.node_id().clone();
        let r = reference(&w, std::slice::from_ref(&me), 600);
        let exporter = [5u8; 32];
        let request = |exporter: &[u8; 32], key: &DeviceKey| OutputRequest {
            job_id: [7; 16],
            output: "w".into(),
            permission: r.permission.clone(),
            consumer: key.node_id().to_base64(),
            proof: key
                .sign_minisign(
                    &proof_message(exporter, &w.receipt.node, &[7; 16], "w"),
                    "fetch",
                )
                .to_file(),
        };
        assert_eq!(
            check_fetch(
                &request(&exporter, &w.consumer),
                &w.receipt,
                &exporter,
                now()
            )
            .unwrap(),
            [0xdd; 32]
        );
        // Replayed on another connection.
        let replay = check_fetch(
            &request(&exporter, &w.consumer),
            &w.receipt,
            &[6; 32],
            now(),
        );
        assert_eq!(replay.unwrap_err().refusal, ReferenceRefusal::NoPermission);
        // A node the permission does not name, with a proof of its own key.
        let stranger = key();
        let other = check_fetch(&request(&exporter, &stranger), &w.receipt, &exporter, now());
        assert_eq!(other.unwrap_err().refusal, ReferenceRefusal::NoPermission);
        // Claims to be the consumer without its key.
        let mut claimed = request(&exporter, &stranger);
        claimed.consumer = me.to_base64();
        let claimed = check_fetch(&claimed, &w.receipt, &exporter, now());
        assert_eq!(claimed.unwrap_err().refusal, ReferenceRefusal::NoPermission);
        let late = check_fetch(
            &request(&exporter, &w.consumer),
            &w.receipt,
            &exporter,
            now() + Duration::from_secs(3600),
        );
        assert_eq!(
            late.unwrap_err().refusal,
            ReferenceRefusal::PermissionExpired
        );
    }

    #[test]
    fn the_record_links_to_the_source_receipt_digest() {
        let w = world();
        let r = reference(&w, &[w.consumer.node_id().clone()], 600);
        let record = r.record();
        assert_eq!(
            record.source_receipt_sha256,
            hex::encode(w.receipt.digest())
        );
        assert_eq!(record.job_id, w.receipt.job_id);
        assert_eq!(record.producer, w.receipt.node);
    }
}
