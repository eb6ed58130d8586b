//! The receipt: what a node states about a job, as canonical JSON (sorted
//! keys, no insignificant whitespace), signed by its device key in minisign
//! format so that `minisign -Vm receipt.json -P NODE_KEY` verifies it.
//!
//! From format 3 the receipt also names the node's chain address, and the
//! chain key signs the same bytes' SHA-256 ([`Receipt::digest`]) as an
//! EIP-712 `Receipt(bytes32 receiptDigest)`: one canonical digest, two
//! signatures ([`Receipt::sign_chain`], [`verify_chain_signature`]).

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use lockstep_chain::{eip712, Address, ChainKey};
use lockstep_identity::{DeviceKey, KeyProtection, NodeId, Signature, SignatureError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::chain::ChainFieldError;

/// Version of the receipt's own layout. Format 2 added `key_protection`,
/// format 3 `chain_address`, format 4 `references` (and the optional
/// `submitter`), format 5 the device's `uuid` and `index` (nodes with
/// several devices); receipts of formats 1 to 4 still verify.
pub const RECEIPT_FORMAT: u32 = 5;
/// The layout before the device's `uuid` and `index`.
pub const RECEIPT_FORMAT_V4: u32 = 4;
/// The layout before `references` and `submitter`.
pub const RECEIPT_FORMAT_V3: u32 = 3;
/// The layout before `chain_address`.
pub const RECEIPT_FORMAT_V2: u32 = 2;
/// The layout before `key_protection`.
pub const RECEIPT_FORMAT_V1: u32 = 1;

/// The device a job ran on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceRecord {
    /// "vulkan" or "cpu".
    pub backend: String,
    pub name: String,
    pub vendor_id: u32,
    pub device_id: u32,
    pub driver_id: u32,
    pub driver_version: u32,
    pub api_version: u32,
    /// `VkPhysicalDeviceIDProperties::deviceUUID`, 32 lower-case hex digits
    /// (all zeros for the CPU reference): which physical device ran the
    /// job. Format 5 on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// The device's index among the node's devices (`lockstep status`):
    /// tells apart devices that report the same UUID, as identical
    /// software devices do. Format 5 on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    pub format: u32,
    /// The node id (minisign public key, base64).
    pub node: String,
    /// Hex of the client's 16-byte job id.
    pub job_id: String,
    /// SHA-256 of the kernel bundle's canonical manifest.
    pub bundle_id: String,
    pub device: DeviceRecord,
    /// SHA-256 of the program's canonical postcard bytes.
    pub program_sha256: String,
    /// Input name → SHA-256 of its canonical `.npy` bytes.
    pub inputs: BTreeMap<String, String>,
    /// Output name → SHA-256 of its canonical `.npy` bytes.
    pub outputs: BTreeMap<String, String>,
    /// Root of the job's trace commitment (docs/protocol.md).
    pub trace_root: String,
    /// RFC 3339 UTC, second precision.
    pub started_at: String,
    pub finished_at: String,
    /// False when the node serves without a passing certification report.
    pub certified: bool,
    /// How the signing device key is protected ("tpm-sealed" or "file");
    /// present from format 2 on, absent in format 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_protection: Option<KeyProtection>,
    /// The node's chain key address (EIP-55), whose EIP-712 signature
    /// travels beside the receipt; present from format 3 on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_address: Option<String>,
    /// The submitter's minisign public key (base64), when the job was
    /// submitted with one: only that key may permit other nodes to fetch
    /// the job's outputs (docs/protocol.md, "References"). Format 4 on,
    /// optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitter: Option<String>,
    /// Input name → where it came from, for each input given as a reference
    /// to another node's output: with `inputs`' hash, the lineage a chain
    /// of receipts forms. Present (possibly empty) from format 4 on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub references: Option<BTreeMap<String, ReferenceRecord>>,
}

/// One referenced input, as its consuming receipt records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceRecord {
    /// The producing node's id (minisign public key, base64).
    pub producer: String,
    /// Hex of the producing job's id.
    pub job_id: String,
    /// The output's name in the producing job.
    pub output: String,
    /// SHA-256 of the source receipt's canonical bytes
    /// ([`Receipt::digest`]): the link a lineage walk follows and checks.
    pub source_receipt_sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiptError {
    #[error("receipt signature: {0}")]
    Signature(#[from] SignatureError),
    #[error("receipt is not a Lockstep receipt: {0}")]
    Malformed(String),
    #[error("receipt is not in canonical form (it was re-encoded or edited after signing)")]
    NotCanonical,
    #[error("receipt names node {claimed}, but was verified against {given}")]
    OtherNode { claimed: String, given: String },
    #[error("receipt format {format} has no chain address (only receipts of format {RECEIPT_FORMAT_V3} on carry a chain signature): verify its minisign signature alone")]
    NoChainAddress { format: u32 },
    #[error("receipt chain signature: {0}")]
    ChainSignature(#[from] ChainFieldError),
}

impl Receipt {
    /// The exact bytes that are signed.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        lockstep_canonical_json::to_vec(self)
            .expect("receipts hold only strings, integers and booleans")
    }

    /// SHA-256 of the canonical bytes: the `receiptDigest` the chain key
    /// signs and the registry's `verifyReceipt` takes.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.canonical_bytes()).into()
    }

    /// The chain key's EIP-712 signature of this receipt: `0x` + 130 hex.
    pub fn sign_chain(&self, key: &ChainKey) -> String {
        let signature = key.sign_digest(&eip712::receipt_typed_digest(&self.digest()));
        lockstep_chain::hex0x(&signature.0)
    }

    /// Canonical bytes and their minisign signature by the device key.
    pub fn sign(&self, key: &DeviceKey) -> (Vec<u8>, Signature) {
        let bytes = self.canonical_bytes();
        let comment = format!(
            "lockstep receipt job {} node {}",
            self.job_id,
            key.node_id().key_id_hex()
        );
        let sig = key.sign_minisign(&bytes, &comment);
        (bytes, sig)
    }

    /// Checks that `node` signed exactly these bytes, that they are a
    /// canonical receipt, and that the receipt names `node`.
    pub fn verify(
        bytes: &[u8],
        signature_file: &str,
        node: &NodeId,
    ) -> Result<Receipt, ReceiptError> {
        Signature::parse(signature_file)?.verify(node, bytes)?;
        let receipt: Receipt =
            serde_json::from_slice(bytes).map_err(|e| ReceiptError::Malformed(e.to_string()))?;
        if receipt.canonical_bytes() != bytes {
            return Err(ReceiptError::NotCanonical);
        }
        receipt.check_format()?;
        if receipt.node != node.to_base64() {
            return Err(ReceiptError::OtherNode {
                claimed: receipt.node,
                given: node.to_base64(),
            });
        }
        Ok(receipt)
    }

    /// Checks that the fields present are those of the receipt's format.
    fn check_format(&self) -> Result<(), ReceiptError> {
        let malformed = |m: String| Err(ReceiptError::Malformed(m));
        if !(RECEIPT_FORMAT_V1..=RECEIPT_FORMAT).contains(&self.format) {
            return malformed(format!(
                "receipt format {}; this build verifies formats {RECEIPT_FORMAT_V1} to {RECEIPT_FORMAT}",
                self.format
            ));
        }
        // (field, present, the format that introduced it, required from then on)
        let fields = [
            (
                "key_protection",
                self.key_protection.is_some(),
                RECEIPT_FORMAT_V2,
                true,
            ),
            (
                "chain_address",
                self.chain_address.is_some(),
                RECEIPT_FORMAT_V3,
                true,
            ),
            (
                "references",
                self.references.is_some(),
                RECEIPT_FORMAT_V4,
                true,
            ),
            (
                "submitter",
                self.submitter.is_some(),
                RECEIPT_FORMAT_V4,
                false,
            ),
            (
                "device.uuid",
                self.device.uuid.is_some(),
                RECEIPT_FORMAT,
                true,
            ),
            (
                "device.index",
                self.device.index.is_some(),
                RECEIPT_FORMAT,
                true,
            ),
        ];
        for (name, present, since, required) in fields {
            if self.format >= since && required && !present {
                return malformed(format!("format {} receipt without {name}", self.format));
            }
            if self.format < since && present {
                return malformed(format!(
                    "format {} receipt with {name} (a format {since} field)",
                    self.format
                ));
            }
        }
        if let Some(text) = &self.chain_address {
            let address = crate::chain::parse_address("the receipt's chain_address", text)?;
            if address.to_checksum() != *text {
                return malformed(format!(
                    "chain_address {text:?} is not in its EIP-55 form {}",
                    address.to_checksum()
                ));
            }
        }
        if let Some(uuid) = &self.device.uuid {
            let hex_digits = uuid
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if uuid.len() != 32 || !hex_digits {
                return malformed(format!(
                    "device.uuid {uuid:?} is not 32 lower-case hex digits"
                ));
            }
        }
        if let Some(submitter) = &self.submitter {
            NodeId::parse(submitter)
                .map_err(|e| ReceiptError::Malformed(format!("submitter: {e}")))?;
        }
        for (input, r) in self.references.iter().flatten() {
            if !self.inputs.contains_key(input) {
                return malformed(format!(
                    "reference for '{input}', which is not one of the receipt's inputs"
                ));
            }
            let hex32 = |s: &str| s.len() == 64 && s.bytes().all(|c| c.is_ascii_hexdigit());
            if !hex32(&r.source_receipt_sha256) || r.job_id.len() != 32 {
                return malformed(format!(
                    "reference for '{input}' has a malformed job id or receipt digest"
                ));
            }
        }
        Ok(())
    }

    /// The receipt's chain address, parsed (format 3 on).
    pub fn chain_address(&self) -> Result<Address, ReceiptError> {
        let text = self
            .chain_address
            .as_deref()
            .ok_or(ReceiptError::NoChainAddress {
                format: self.format,
            })?;
        Ok(crate::chain::parse_address(
            "the receipt's chain_address",
            text,
        )?)
    }
}

/// Checks a receipt's chain signature: `signature_hex` (`0x` + 130 hex)
/// must be the EIP-712 `Receipt(bytes32 receiptDigest)` signature, with
/// `receiptDigest` = SHA-256 of `receipt_bytes`, by `expected_address` (the
/// receipt's `chain_address`). Returns the signer. The bytes are taken as
/// they are: check them with [`Receipt::verify`] first.
pub fn verify_chain_signature(
    receipt_bytes: &[u8],
    signature_hex: &str,
    expected_address: &Address,
) -> Result<Address, ReceiptError> {
    let digest: [u8; 32] = Sha256::digest(receipt_bytes).into();
    Ok(crate::chain::check_chain_signature(
        "the receipt's chain signature",
        &eip712::receipt_typed_digest(&digest),
        signature_hex.trim_end(),
        expected_address,
    )?)
}

/// RFC 3339 UTC time, second precision (`2026-11-24T07:49:03Z`).
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Seconds since the Unix epoch of an RFC 3339 UTC time of the form receipts
/// and certification reports use (`YYYY-MM-DDTHH:MM:SSZ`); `None` for anything else.
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'Z'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if !t.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        t.parse().ok()
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if y < 1970 || !(1..=12).contains(&m) || d < 1 || d > month_days[(m - 1) as usize] {
        return None;
    }
    if hh > 23 || mm > 59 || ss > 59 {
        return None;
    }
    // Days since 1970-01-01 from the civil date (H. Hinnant's algorithm,
    // the inverse of lockstep_protocol::rfc3339).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_matches_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_795_506_543)),
            "2026-11-24T07:49:03Z"
        );
    }

    #[test]
    fn parse_rfc3339_inverts_rfc3339() {
        for secs in [0u64, 951_782_400, 1_795_506_543, 4_102_444_799] {
            let text = rfc3339(UNIX_EPOCH + Duration::from_secs(secs));
            assert_eq!(parse_rfc3339(&text), Some(secs), "{text}");
        }
        for bad in [
            "",
            "2026-11-24 07:49:03Z",
            "2026-13-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "+026-11-24T07:49:03Z",
            "2026-11-24T07:49:0éZ",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
