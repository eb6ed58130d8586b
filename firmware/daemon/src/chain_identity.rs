//! The node's chain key (docs/identity.md, "Chain key"): derived from the
//! device key at start-up, never stored or logged (only its address is), and
//! the `SignRegistration` admin action, which signs a registration for the
//! `NodeRegistry` with it.
//!
//! The handler gets only what it needs: the two keys ([`NodeChain`]) and
//! the facts it states about the node ([`NodeFacts`]), which the node reads
//! from its own state; the operator chooses only chain, registry, operator
//! and attestation digest.

use std::sync::Arc;

use lockstep_chain::{Address, ChainKey};
use lockstep_identity::{DeviceKey, KeyProtection};
use lockstep_protocol::chain::{
    hex_0x, key_protection_code, parse_address, parse_hash, RegistrationSignature,
};
use lockstep_protocol::Receipt;

/// How many HKDF counters are tried before giving up (each fails with odds
/// about 2^-128).
pub const MAX_CHAIN_KEY_TRIES: u16 = 256;

/// Why the chain key could not be derived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainKeyError {
    #[error("none of the {MAX_CHAIN_KEY_TRIES} chain key candidates derived from the device key is a secp256k1 secret (odds about 2^-128 each: this should never happen); report it, and give the node a new device key")]
    Exhausted,
}

/// The chain key derived from `device`: the first HKDF candidate (counter
/// 0, 1, …) that is a valid secp256k1 scalar.
pub fn derive_chain_key(device: &DeviceKey) -> Result<ChainKey, ChainKeyError> {
    (0..MAX_CHAIN_KEY_TRIES)
        .filter_map(|counter| u8::try_from(counter).ok())
        .find_map(|counter| ChainKey::from_bytes(&device.chain_key_material(counter)).ok())
        .ok_or(ChainKeyError::Exhausted)
}

/// The node's two keys, as the chain sees them. `Debug` shows only the
/// public halves.
#[derive(Debug)]
pub struct NodeChain {
    device: Arc<DeviceKey>,
    chain: ChainKey,
    address: Address,
}

impl NodeChain {
    pub fn new(device: Arc<DeviceKey>) -> Result<NodeChain, ChainKeyError> {
        let chain = derive_chain_key(&device)?;
        let address = chain.address();
        Ok(NodeChain {
            device,
            chain,
            address,
        })
    }

    /// The chain address, EIP-55.
    pub fn address(&self) -> String {
        self.address.to_checksum()
    }

    /// The chain key's signature of a receipt (`0x` + 130 hex).
    pub fn sign_receipt(&self, receipt: &Receipt) -> String {
        receipt.sign_chain(&self.chain)
    }
}

/// What the node states about itself in a registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFacts {
    pub key_protection: KeyProtection,
    /// SHA-256 (hex) of the certification report the node serves under;
    /// `None` when its receipts say uncertified.
    pub certification_report_sha256: Option<String>,
    /// The active bundle id (64 hex).
    pub bundle_id: String,
}

/// Signs a registration for `operator` and the registry at `registry` on
/// `chain_id`. `Err` is the one-line refusal (bad input; nothing signed).
pub fn sign_registration(
    keys: &NodeChain,
    facts: &NodeFacts,
    chain_id: u64,
    registry: &str,
    operator: &str,
    attestation_digest: &str,
) -> Result<RegistrationSignature, String> {
    let refuse = |e: lockstep_protocol::ChainFieldError| format!("SignRegistration refused: {e}");
    // Addresses are 42 characters: refuse a long text before echoing it.
    for (what, text) in [("registry", registry), ("operator", operator)] {
        if text.len() > 2 * lockstep_protocol::chain::ADDRESS_TEXT_LEN {
            return Err(format!(
                "SignRegistration refused: the {what} is {} bytes long, an address is 0x and 40 hex digits; give the address",
                text.len()
            ));
        }
    }
    let registry = parse_address("registry", registry).map_err(refuse)?;
    let operator = parse_address("operator", operator).map_err(refuse)?;
    let attestation = parse_hash("attestation_digest", attestation_digest, true).map_err(refuse)?;
    if registry == Address::ZERO {
        return Err("SignRegistration refused: the registry is the zero address; give the NodeRegistry's address".into());
    }
    if operator == Address::ZERO {
        return Err("SignRegistration refused: the operator is the zero address; give the account that will send register".into());
    }
    let report = match &facts.certification_report_sha256 {
        Some(hex) => parse_hash("certification report hash", hex, false).map_err(|e| {
            format!("this node's own certification report hash is not usable ({e}); reinstall its report")
        })?,
        None => [0; 32],
    };
    let bundle = parse_hash("bundle id", &facts.bundle_id, false).map_err(|e| {
        format!("this node's own bundle id is not usable ({e}); push a bundle again")
    })?;
    let registration = lockstep_chain::eip712::Registration {
        operator,
        node_id: keys.device.node_id().public_key_bytes(),
        node_address: keys.address,
        key_protection: key_protection_code(facts.key_protection),
        attestation_digest: attestation,
        certification_report_hash: report,
        bundle_id: bundle,
    };
    let node_signature = keys
        .chain
        .sign_digest(&registration.digest(chain_id, registry));
    let device_signature = keys.device.sign_chain_binding(keys.address.as_bytes());
    Ok(RegistrationSignature {
        node_address: keys.address(),
        key_protection: facts.key_protection,
        attestation_digest: hex::encode(attestation),
        certification_report_hash: hex::encode(report),
        bundle_id: hex::encode(bundle),
        node_signature: hex_0x(&node_signature.0),
        device_signature: hex_0x(&device_signature),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> (tempfile::TempDir, NodeChain) {
        let dir = tempfile::tempdir().unwrap();
        let (device, _) = DeviceKey::load_or_create(dir.path()).unwrap();
        (dir, NodeChain::new(Arc::new(device)).unwrap())
    }

    fn facts() -> NodeFacts {
        NodeFacts {
            key_protection: KeyProtection::TpmSealed,
            certification_report_sha256: None,
            bundle_id: "ab".repeat(32),
        }
    }

    const REGISTRY: &str = "0x2c7536e3605d9c16a7a3d7b1898e529396a65c23";
    const OPERATOR: &str = "0x00000000000000000000000000000000000000aa";

    #[test]
    fn the_chain_key_is_derived_the_same_way_every_time() {
        let dir = tempfile::tempdir().unwrap();
        let (a, _) = DeviceKey::load_or_create(dir.path()).unwrap();
        let b = DeviceKey::load(dir.path()).unwrap();
        assert_eq!(
            derive_chain_key(&a).unwrap().address(),
            derive_chain_key(&b).unwrap().address()
        );
        let chain = NodeChain::new(Arc::new(a)).unwrap();
        let text = format!("{chain:?}");
        assert!(text.contains("redacted"), "{text}");
        assert!(
            !text.contains(&hex::encode(*chain.chain.to_bytes())),
            "{text}"
        );
    }

    #[test]
    fn registrations_verify_with_both_keys() {
        let (_dir, keys) = keys();
        let r = sign_registration(&keys, &facts(), 1337, REGISTRY, OPERATOR, "").unwrap();
        assert_eq!(r.attestation_digest, "0".repeat(64));
        assert_eq!(r.certification_report_hash, "0".repeat(64));
        let registry = REGISTRY.parse().unwrap();
        let operator = OPERATOR.parse().unwrap();
        let (registration, _, _) = r
            .verify(keys.device.node_id(), 1337, registry, operator)
            .unwrap();
        assert_eq!(registration.node_address, keys.address);
        // Another chain, registry or operator: the node signature fails.
        assert!(r
            .verify(keys.device.node_id(), 1, registry, operator)
            .is_err());
        assert!(r
            .verify(keys.device.node_id(), 1337, operator, operator)
            .is_err());
    }

    #[test]
    fn bad_requests_are_refused_with_one_line() {
        let (_dir, keys) = keys();
        for (registry, operator, attestation) in [
            ("0x12", OPERATOR, ""),
            ("not an address", OPERATOR, ""),
            (REGISTRY, "0x2C7536e3605d9c16a7a3d7b1898e529396a65c23", ""),
            (REGISTRY, OPERATOR, "ABCD"),
            (REGISTRY, OPERATOR, &"AB".repeat(32)),
            (&"0x".repeat(10_000), OPERATOR, ""),
            (REGISTRY, "0x0000000000000000000000000000000000000000", ""),
            ("0x0000000000000000000000000000000000000000", OPERATOR, ""),
        ] {
            let e =
                sign_registration(&keys, &facts(), 1, registry, operator, attestation).unwrap_err();
            assert!(!e.contains('\n') && e.contains("refused"), "{e}");
        }
    }
}
