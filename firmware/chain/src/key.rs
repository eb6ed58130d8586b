//! The node's chain key: a secp256k1 secret that signs 32-byte digests
//! the way `ecrecover` checks them (r || s || v, low s, v = 27 or 28).

use std::fmt;

use k256::ecdsa::{RecoveryId, Signature, SigningKey, VerifyingKey};
use zeroize::Zeroizing;

use crate::address::Address;

/// Half the secp256k1 group order: an `s` above it is the malleable twin
/// of a valid signature, which the registry (like Ethereum) refuses.
const HALF_ORDER: [u8; 32] = [
    0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0x5d, 0x57, 0x6e, 0x73, 0x57, 0xa4, 0x50, 0x1d, 0xdf, 0xe9, 0x2f, 0x46, 0x68, 0x1b, 0x20, 0xa0,
];

/// Why a key or a signature is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("these 32 bytes are not a secp256k1 secret key (zero, or not below the group order): the key file is corrupted or is not a chain key; restore it from its sealed copy")]
    InvalidSecret,
    #[error("the entropy given is not a usable secp256k1 secret (zero, or not below the group order; odds about 2^-128): draw 32 fresh random bytes and generate again")]
    UnusableEntropy,
    #[error("a signature is 65 bytes (r || s || v), not {len}: pass the whole signature")]
    SignatureLength { len: usize },
    #[error("the signature's v is {v}, not 27 or 28: it is not an Ethereum-style signature; sign again with the chain key")]
    BadV { v: u8 },
    #[error("the signature's s is in the upper half of the group order (a malleable signature, refused like ecrecover's callers do): normalise it to low s, or sign again")]
    HighS,
    #[error("the signature is not valid (r or s zero or out of range, or no public key recovers from it): it was corrupted or not made over this digest")]
    InvalidSignature,
}

/// A 65-byte recoverable signature: r (32) || s (32) || v (27 or 28).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature65(pub [u8; 65]);

impl Signature65 {
    /// From 65 bytes; the content is checked by [`recover`].
    pub fn from_slice(bytes: &[u8]) -> Result<Signature65, KeyError> {
        let array: [u8; 65] = bytes
            .try_into()
            .map_err(|_| KeyError::SignatureLength { len: bytes.len() })?;
        Ok(Signature65(array))
    }

    /// The 65 bytes.
    pub fn as_bytes(&self) -> &[u8; 65] {
        &self.0
    }

    /// r, big-endian.
    pub fn r(&self) -> [u8; 32] {
        self.0[..32].try_into().expect("32 bytes")
    }

    /// s, big-endian.
    pub fn s(&self) -> [u8; 32] {
        self.0[32..64].try_into().expect("32 bytes")
    }

    /// v: 27 or 28 for signatures this crate makes.
    pub fn v(&self) -> u8 {
        self.0[64]
    }
}

impl fmt::Debug for Signature65 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature65(0x{})", hex::encode(self.0))
    }
}

/// A secp256k1 secret key. Its `Debug` shows only the address, and the
/// secret scalar is zeroized when it is dropped.
#[derive(Clone)]
pub struct ChainKey {
    secret: SigningKey,
}

impl ChainKey {
    /// From a 32-byte big-endian secret (e.g. unsealed from the TPM or
    /// decrypted from a keystore).
    pub fn from_bytes(secret: &[u8; 32]) -> Result<ChainKey, KeyError> {
        SigningKey::from_bytes(secret.into())
            .map(|secret| ChainKey { secret })
            .map_err(|_| KeyError::InvalidSecret)
    }

    /// A key from 32 bytes of caller-provided entropy (the caller reads
    /// the OS or TPM random source; this crate does no IO). Entropy that
    /// is not a valid scalar is refused rather than reduced.
    pub fn generate(entropy: [u8; 32]) -> Result<ChainKey, KeyError> {
        let entropy = Zeroizing::new(entropy);
        ChainKey::from_bytes(&entropy).map_err(|_| KeyError::UnusableEntropy)
    }

    /// The 32-byte secret, for sealing or a keystore; zeroized on drop.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.secret.to_bytes().into())
    }

    /// The account address of this key.
    pub fn address(&self) -> Address {
        address_of(self.secret.verifying_key())
    }

    /// Signs a 32-byte digest (already hashed: no prefix is added):
    /// deterministic (RFC 6979), low s, v = 27 or 28.
    pub fn sign_digest(&self, digest: &[u8; 32]) -> Signature65 {
        let (mut signature, mut recovery): (Signature, RecoveryId) = self
            .secret
            .sign_prehash_recoverable(digest)
            .expect("a 32-byte prehash always signs");
        if let Some(normalized) = signature.normalize_s() {
            signature = normalized;
            recovery = RecoveryId::new(!recovery.is_y_odd(), recovery.is_x_reduced());
        }
        let mut out = [0u8; 65];
        out[..64].copy_from_slice(&signature.to_bytes());
        out[64] = 27 + u8::from(recovery.is_y_odd());
        Signature65(out)
    }
}

impl fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainKey")
            .field("address", &self.address())
            .field("secret", &"<redacted>")
            .finish()
    }
}

fn address_of(key: &VerifyingKey) -> Address {
    let point = key.to_encoded_point(false);
    let xy: &[u8; 64] = point.as_bytes()[1..]
        .try_into()
        .expect("uncompressed point");
    Address::from_public_key(xy)
}

/// The address that signed `digest`, as `ecrecover` computes it, with
/// the checks it leaves to callers: v must be 27 or 28 and s low.
pub fn recover(digest: &[u8; 32], signature: &Signature65) -> Result<Address, KeyError> {
    let v = signature.v();
    if v != 27 && v != 28 {
        return Err(KeyError::BadV { v });
    }
    if signature.s() > HALF_ORDER {
        return Err(KeyError::HighS);
    }
    let parsed =
        Signature::from_slice(&signature.0[..64]).map_err(|_| KeyError::InvalidSignature)?;
    let recovery = RecoveryId::new(v == 28, false);
    let key = VerifyingKey::recover_from_prehash(digest, &parsed, recovery)
        .map_err(|_| KeyError::InvalidSignature)?;
    Ok(address_of(&key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::keccak256;
    use k256::elliptic_curve::ff::PrimeField;
    use proptest::prelude::*;

    fn vector_key() -> ChainKey {
        let secret: [u8; 32] =
            hex::decode("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
                .unwrap()
                .try_into()
                .unwrap();
        ChainKey::from_bytes(&secret).unwrap()
    }

    #[test]
    fn known_secret_has_known_address() {
        assert_eq!(
            vector_key().address().to_string(),
            "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23"
        );
    }

    #[test]
    fn debug_redacts_the_secret() {
        let key = vector_key();
        let text = format!("{key:?}");
        assert!(text.contains("<redacted>"), "{text}");
        assert!(!text.contains("4c0883a6"), "{text}");
        assert_eq!(
            hex::encode(*key.to_bytes()),
            "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
        );
    }

    #[test]
    fn invalid_scalars_are_refused() {
        assert_eq!(
            ChainKey::generate([0; 32]).unwrap_err(),
            KeyError::UnusableEntropy
        );
        assert_eq!(
            ChainKey::from_bytes(&[0xff; 32]).unwrap_err(),
            KeyError::InvalidSecret
        );
        assert!(ChainKey::generate([7; 32]).is_ok());
    }

    #[test]
    fn recover_refuses_bad_v_and_high_s() {
        let key = vector_key();
        let digest = keccak256(b"lockstep");
        let signature = key.sign_digest(&digest);
        assert_eq!(recover(&digest, &signature).unwrap(), key.address());

        let mut bad_v = signature;
        bad_v.0[64] = 1;
        assert_eq!(
            recover(&digest, &bad_v).unwrap_err(),
            KeyError::BadV { v: 1 }
        );

        // The malleable twin: s' = n - s, v flipped.
        let n = k256::Scalar::from_repr(signature.s().into()).unwrap();
        let high: [u8; 32] = (-n).to_repr().into();
        let mut twin = signature;
        twin.0[32..64].copy_from_slice(&high);
        twin.0[64] = if signature.v() == 27 { 28 } else { 27 };
        assert_eq!(recover(&digest, &twin).unwrap_err(), KeyError::HighS);

        let zero = Signature65([0; 65]);
        assert_eq!(
            recover(&digest, &zero).unwrap_err(),
            KeyError::BadV { v: 0 }
        );
        let mut zero_rs = [0u8; 65];
        zero_rs[64] = 27;
        assert_eq!(
            recover(&digest, &Signature65(zero_rs)).unwrap_err(),
            KeyError::InvalidSignature
        );
        assert_eq!(
            Signature65::from_slice(&[0; 64]).unwrap_err(),
            KeyError::SignatureLength { len: 64 }
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn sign_then_recover(entropy in any::<[u8; 32]>(), digest in any::<[u8; 32]>()) {
            if let Ok(key) = ChainKey::generate(entropy) {
                let signature = key.sign_digest(&digest);
                prop_assert!(signature.s() <= HALF_ORDER);
                prop_assert_eq!(recover(&digest, &signature).unwrap(), key.address());
            }
        }
    }
}
