//! The node's chain identity on the wire (protocol v5): the chain key's
//! signatures and the registration a node signs for an operator
//! (contracts/README.md, docs/identity.md "Chain key").
//!
//! The text forms: an address is `0x` and 40 hex digits (EIP-55 when the
//! node writes it); a 32-byte value is 64 lower-case hex digits; a chain
//! signature is `0x` and 130 hex digits (r ‖ s ‖ v); a device signature is
//! `0x` and 128 hex digits (Ed25519).

use lockstep_chain::eip712::{self, Registration};
use lockstep_chain::{recover, Address, Signature65};
use lockstep_identity::{verify_chain_binding, KeyProtection, NodeId};
use serde::{Deserialize, Serialize};

/// Length of a chain signature's text: `0x` and 130 hex digits.
pub const CHAIN_SIGNATURE_TEXT_LEN: usize = 2 + 130;
/// Length of a device signature's text: `0x` and 128 hex digits.
pub const DEVICE_SIGNATURE_TEXT_LEN: usize = 2 + 128;
/// Length of an address's text: `0x` and 40 hex digits.
pub const ADDRESS_TEXT_LEN: usize = 2 + 40;
/// Length of a 32-byte value's text: 64 hex digits.
pub const HASH_TEXT_LEN: usize = 64;

/// What a node answers to `SignRegistration`: everything an operator
/// passes to the registry's `register`, signed by the node. The node fills
/// `key_protection`, `certification_report_hash` and `bundle_id` from its
/// own state: the operator cannot choose them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationSignature {
    /// The chain key's address, EIP-55.
    pub node_address: String,
    pub key_protection: KeyProtection,
    /// 64 hex: the operator's attestation digest, echoed ("" → 64 zeros).
    pub attestation_digest: String,
    /// 64 hex: SHA-256 of the certification report the node serves under,
    /// or 64 zeros if uncertified.
    pub certification_report_hash: String,
    /// 64 hex: the active bundle id.
    pub bundle_id: String,
    /// `0x` + 130 hex: the EIP-712 `Registration` signed by the chain key
    /// (registry domain: the request's chain id and registry).
    pub node_signature: String,
    /// `0x` + 128 hex: the device key's binding of `node_address` to the
    /// node id ([`lockstep_identity::verify_chain_binding`]).
    pub device_signature: String,
}

/// Why a chain field, signature or registration is refused. Messages say
/// what to do next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainFieldError {
    #[error("{what}: {reason}")]
    Address {
        what: &'static str,
        reason: lockstep_chain::AddressError,
    },
    #[error("{what} is not 64 lower-case hex digits (32 bytes){}: write it as 64 hex digits", if *.empty_allowed { " or empty" } else { "" })]
    Hash {
        what: &'static str,
        empty_allowed: bool,
    },
    #[error("{what} is not 0x and {digits} hex digits: copy the whole signature")]
    SignatureText { what: &'static str, digits: usize },
    #[error("{what} is not a valid chain signature: {reason}")]
    ChainSignature {
        what: &'static str,
        reason: lockstep_chain::KeyError,
    },
    #[error("{what} was signed by {recovered}, not by {expected}: it is not this node's signature, or it was made over other data")]
    Signer {
        what: &'static str,
        recovered: String,
        expected: String,
    },
    #[error("the device signature does not bind {address} to node {node}: the registration was not made by this node's device key")]
    DeviceSignature { node: String, address: String },
}

/// The registry's `uint8 keyProtection` of a node's key protection:
/// file = 0, tpm-sealed = 1.
pub fn key_protection_code(protection: KeyProtection) -> eip712::KeyProtection {
    match protection {
        KeyProtection::File => eip712::KeyProtection::File,
        KeyProtection::TpmSealed => eip712::KeyProtection::TpmSealed,
    }
}

/// Parses an address in any case (mixed case must be the EIP-55 checksum).
pub fn parse_address(what: &'static str, text: &str) -> Result<Address, ChainFieldError> {
    Address::parse(text).map_err(|reason| ChainFieldError::Address { what, reason })
}

/// Parses 64 lower-case hex digits; with `empty_allowed`, "" is 32 zero
/// bytes.
pub fn parse_hash(
    what: &'static str,
    text: &str,
    empty_allowed: bool,
) -> Result<[u8; 32], ChainFieldError> {
    if text.is_empty() && empty_allowed {
        return Ok([0; 32]);
    }
    let error = ChainFieldError::Hash {
        what,
        empty_allowed,
    };
    if text.len() != HASH_TEXT_LEN
        || !text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(error);
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).map_err(|_| error)?;
    Ok(out)
}

fn parse_0x_hex<const N: usize>(
    what: &'static str,
    text: &str,
) -> Result<[u8; N], ChainFieldError> {
    let error = ChainFieldError::SignatureText {
        what,
        digits: 2 * N,
    };
    let digits = text.strip_prefix("0x").ok_or(error.clone())?;
    if digits.len() != 2 * N {
        return Err(error);
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(digits, &mut out).map_err(|_| error)?;
    Ok(out)
}

/// Parses a chain signature's text (`0x` + 130 hex).
pub fn parse_chain_signature(
    what: &'static str,
    text: &str,
) -> Result<Signature65, ChainFieldError> {
    parse_0x_hex::<65>(what, text).map(Signature65)
}

/// Parses a device signature's text (`0x` + 128 hex).
pub fn parse_device_signature(what: &'static str, text: &str) -> Result<[u8; 64], ChainFieldError> {
    parse_0x_hex::<64>(what, text)
}

/// `0x` and lower-case hex of `bytes`.
pub fn hex_0x(bytes: &[u8]) -> String {
    lockstep_chain::hex0x(bytes)
}

/// The address that made `signature` over `digest`; it must be `expected`.
pub fn check_chain_signature(
    what: &'static str,
    digest: &[u8; 32],
    signature: &str,
    expected: &Address,
) -> Result<Address, ChainFieldError> {
    let signature = parse_chain_signature(what, signature)?;
    let recovered = recover(digest, &signature)
        .map_err(|reason| ChainFieldError::ChainSignature { what, reason })?;
    if recovered != *expected {
        return Err(ChainFieldError::Signer {
            what,
            recovered: recovered.to_checksum(),
            expected: expected.to_checksum(),
        });
    }
    Ok(recovered)
}

impl RegistrationSignature {
    /// The typed `Registration` this reply states, for `operator` and the
    /// node `node` (the fields parsed; nothing verified).
    pub fn registration(
        &self,
        node: &NodeId,
        operator: Address,
    ) -> Result<Registration, ChainFieldError> {
        Ok(Registration {
            operator,
            node_id: node.public_key_bytes(),
            node_address: parse_address("node_address", &self.node_address)?,
            key_protection: key_protection_code(self.key_protection),
            attestation_digest: parse_hash("attestation_digest", &self.attestation_digest, false)?,
            certification_report_hash: parse_hash(
                "certification_report_hash",
                &self.certification_report_hash,
                false,
            )?,
            bundle_id: parse_hash("bundle_id", &self.bundle_id, false)?,
        })
    }

    /// Checks both signatures: `node_signature` is the chain key's
    /// `Registration` for `operator` on `chain_id` at `registry`, and
    /// `device_signature` is `node`'s binding of `node_address`. Returns the
    /// registration and the two signatures' bytes, ready for `register`.
    pub fn verify(
        &self,
        node: &NodeId,
        chain_id: u64,
        registry: Address,
        operator: Address,
    ) -> Result<(Registration, Signature65, [u8; 64]), ChainFieldError> {
        let registration = self.registration(node, operator)?;
        check_chain_signature(
            "node_signature",
            &registration.digest(chain_id, registry),
            &self.node_signature,
            &registration.node_address,
        )?;
        let node_signature = parse_chain_signature("node_signature", &self.node_signature)?;
        let device_signature = parse_device_signature("device_signature", &self.device_signature)?;
        verify_chain_binding(
            node,
            registration.node_address.as_bytes(),
            &device_signature,
        )
        .map_err(|_| ChainFieldError::DeviceSignature {
            node: node.to_base64(),
            address: registration.node_address.to_checksum(),
        })?;
        Ok((registration, node_signature, device_signature))
    }
}

/// Bounds a registration reply's strings (each has one fixed length).
pub fn check_registration(r: &RegistrationSignature) -> Result<(), String> {
    let fields = [
        ("node_address", r.node_address.len(), ADDRESS_TEXT_LEN),
        (
            "attestation_digest",
            r.attestation_digest.len(),
            HASH_TEXT_LEN,
        ),
        (
            "certification_report_hash",
            r.certification_report_hash.len(),
            HASH_TEXT_LEN,
        ),
        ("bundle_id", r.bundle_id.len(), HASH_TEXT_LEN),
        (
            "node_signature",
            r.node_signature.len(),
            CHAIN_SIGNATURE_TEXT_LEN,
        ),
        (
            "device_signature",
            r.device_signature.len(),
            DEVICE_SIGNATURE_TEXT_LEN,
        ),
    ];
    for (name, len, want) in fields {
        if len != want {
            return Err(format!(
                "registration {name} has {len} characters, not {want}"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_64_lower_case_hex() {
        assert_eq!(parse_hash("x", "", true).unwrap(), [0; 32]);
        assert!(parse_hash("x", "", false).is_err());
        assert_eq!(
            parse_hash("x", &"ab".repeat(32), false).unwrap(),
            [0xab; 32]
        );
        assert!(parse_hash("x", &"AB".repeat(32), false).is_err());
        assert!(parse_hash("x", &"ab".repeat(31), false).is_err());
        assert!(parse_hash("x", &"zz".repeat(32), false).is_err());
        let message = parse_hash("attestation_digest", "12", true)
            .unwrap_err()
            .to_string();
        assert!(message.contains("attestation_digest"), "{message}");
    }

    #[test]
    fn signatures_text_is_checked() {
        assert!(parse_chain_signature("s", &format!("0x{}", "00".repeat(65))).is_ok());
        assert!(parse_chain_signature("s", &"00".repeat(66)).is_err());
        assert!(parse_chain_signature("s", &format!("0x{}", "00".repeat(64))).is_err());
        assert!(parse_chain_signature("s", &format!("0x{}", "zz".repeat(65))).is_err());
        assert!(parse_device_signature("s", &format!("0x{}", "11".repeat(64))).is_ok());
        // Multi-byte characters never panic a length check.
        assert!(parse_device_signature("s", &format!("0x{}", "é".repeat(64))).is_err());
    }

    #[test]
    fn addresses_in_any_case() {
        let lower = "0x2c7536e3605d9c16a7a3d7b1898e529396a65c23";
        let a = parse_address("registry", lower).unwrap();
        assert_eq!(parse_address("registry", &a.to_checksum()).unwrap(), a);
        assert!(parse_address("registry", "0x2C7536e3605D9C16a7a3D7b1898e529396a65c23").is_err());
        assert!(parse_address("registry", "2c7536e3605d9c16a7a3d7b1898e529396a65c23").is_err());
    }
}
