//! The device key's tie to the node's chain key (docs/identity.md, "Chain
//! key").
//!
//! The secp256k1 chain key is not a second secret: it is derived from the
//! Ed25519 seed with HKDF-SHA256, so it lives exactly where the device key
//! lives (TPM-sealed on an appliance, the key file otherwise) and is never
//! stored by itself. The device key also signs a *binding* of the chain
//! address to the node id, which the registry publishes and anyone checks
//! off chain with [`verify_chain_binding`].

use ed25519_dalek::Signer;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::{DeviceKey, NodeId, SignatureError};

/// HKDF salt of the chain key's derivation, and the domain tag of the
/// binding message.
pub const CHAIN_KEY_DOMAIN: &str = "lockstep-chain-key/1";

type HmacSha256 = Hmac<Sha256>;

/// HKDF-SHA256 (RFC 5869) with a 32-byte output: `T(1)` of the expansion.
fn hkdf_sha256_32(salt: &[u8], ikm: &[u8], info: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut extract = HmacSha256::new_from_slice(salt).expect("HMAC takes any key length");
    extract.update(ikm);
    let prk = Zeroizing::new(<[u8; 32]>::from(extract.finalize().into_bytes()));
    let mut expand = HmacSha256::new_from_slice(prk.as_slice()).expect("HMAC takes any key length");
    expand.update(info);
    expand.update(&[1]);
    Zeroizing::new(expand.finalize().into_bytes().into())
}

/// The exact bytes the device key signs to bind `address` to `node`:
/// `"lockstep-chain-key/1\nnode: " + hex(node key) + "\naddress: 0x" +
/// hex(address) + "\n"`, all hex lower case.
pub fn chain_binding_message(node: &NodeId, address: &[u8; 20]) -> Vec<u8> {
    let mut text = String::with_capacity(160);
    text.push_str(CHAIN_KEY_DOMAIN);
    text.push_str("\nnode: ");
    for b in node.public_key_bytes() {
        text.push_str(&format!("{b:02x}"));
    }
    text.push_str("\naddress: 0x");
    for b in address {
        text.push_str(&format!("{b:02x}"));
    }
    text.push('\n');
    text.into_bytes()
}

impl DeviceKey {
    /// Candidate secret `counter` of the node's chain key:
    /// HKDF-SHA256(ikm = the Ed25519 seed, salt = `lockstep-chain-key/1`,
    /// info = `[counter]`), 32 bytes. The chain key is the first candidate
    /// (counter 0, 1, …) that is a valid secp256k1 scalar. Wiped on drop;
    /// never write it anywhere.
    pub fn chain_key_material(&self, counter: u8) -> Zeroizing<[u8; 32]> {
        let seed = Zeroizing::new(self.signing_key().to_bytes());
        hkdf_sha256_32(CHAIN_KEY_DOMAIN.as_bytes(), seed.as_slice(), &[counter])
    }

    /// The device key's pure Ed25519 signature (not minisign-prehashed)
    /// over [`chain_binding_message`]: this node's chain key is `address`.
    pub fn sign_chain_binding(&self, address: &[u8; 20]) -> [u8; 64] {
        self.signing_key()
            .sign(&chain_binding_message(self.node_id(), address))
            .to_bytes()
    }
}

/// Checks that `node`'s device key bound `address` as its chain key.
pub fn verify_chain_binding(
    node: &NodeId,
    address: &[u8; 20],
    signature: &[u8; 64],
) -> Result<(), SignatureError> {
    let signature = ed25519_dalek::Signature::from_bytes(signature);
    node.key
        .verify_strict(&chain_binding_message(node, address), &signature)
        .map_err(|_| SignatureError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lockstep_chain::ChainKey;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// RFC 5869, test case 1 (the first 32 bytes of its 42-byte OKM).
    #[test]
    fn hkdf_matches_rfc5869() {
        let ikm = [0x0b; 22];
        let salt: Vec<u8> = (0x00..=0x0c).collect();
        let info: Vec<u8> = (0xf0..=0xf9).collect();
        assert_eq!(
            hex(hkdf_sha256_32(&salt, &ikm, &info).as_slice()),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
        );
    }

    fn vector_key() -> DeviceKey {
        DeviceKey::from_seed(&[7; 32])
    }

    #[test]
    fn a_fixed_seed_gives_a_fixed_chain_address() {
        let key = vector_key();
        let material = key.chain_key_material(0);
        assert_eq!(
            hex(material.as_slice()),
            "ad9097df9ac278495a3e8a97c072667bdbdd94bd2c13c22f1108a69b814a5dc7"
        );
        assert_ne!(*material, *key.chain_key_material(1));
        let chain = ChainKey::from_bytes(&material).unwrap();
        assert_eq!(
            chain.address().to_string(),
            "0xE8dB863FB054cf350dF1c26D6C949590C61e73F9"
        );
    }

    #[test]
    fn the_binding_message_is_exact() {
        let key = vector_key();
        let message = chain_binding_message(key.node_id(), &[0xab; 20]);
        let expected = format!(
            "lockstep-chain-key/1\nnode: {}\naddress: 0x{}\n",
            hex(&key.node_id().public_key_bytes()),
            "ab".repeat(20)
        );
        assert_eq!(String::from_utf8(message).unwrap(), expected);
    }

    #[test]
    fn the_binding_verifies_and_a_flipped_byte_fails() {
        let key = vector_key();
        let address = [0x5a; 20];
        let signature = key.sign_chain_binding(&address);
        verify_chain_binding(key.node_id(), &address, &signature).unwrap();

        let mut other_address = address;
        other_address[19] ^= 1;
        assert_eq!(
            verify_chain_binding(key.node_id(), &other_address, &signature),
            Err(SignatureError::Invalid)
        );
        let mut bad = signature;
        bad[10] ^= 1;
        assert_eq!(
            verify_chain_binding(key.node_id(), &address, &bad),
            Err(SignatureError::Invalid)
        );
        let other = DeviceKey::from_seed(&[8; 32]);
        assert_eq!(
            verify_chain_binding(other.node_id(), &address, &signature),
            Err(SignatureError::Invalid)
        );
        // The signature is over the message alone (pure Ed25519, as any
        // Ed25519 library checks it).
        let message = chain_binding_message(key.node_id(), &address);
        let sig = ed25519_dalek::Signature::from_bytes(&signature);
        assert!(key.node_id().key.verify_strict(&message, &sig).is_ok());
    }
}
