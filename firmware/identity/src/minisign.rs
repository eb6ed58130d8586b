//! minisign signatures (prehashed "ED" form), as written and checked by the
//! stock `minisign` tool:
//!
//! ```text
//! untrusted comment: <free text>
//! base64("ED" || key_id[8] || Ed25519(BLAKE2b-512(message))[64])
//! trusted comment: <text covered by the global signature>
//! base64(Ed25519(signature[64] || trusted comment bytes)[64])
//! ```

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use blake2::{Blake2b512, Digest};
use ed25519_dalek::{Signer, Verifier};

use crate::{DeviceKey, NodeId};

const ALG_PREHASHED: [u8; 2] = *b"ED";

/// A parsed signature file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    key_id: [u8; 8],
    signature: [u8; 64],
    trusted_comment: String,
    global_signature: [u8; 64],
}

/// Why a signature does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("not a minisign signature file: {0}")]
    Malformed(&'static str),
    #[error("signed by key {found}, not by the given node key {expected}")]
    WrongKey { expected: String, found: String },
    #[error("the signature does not match the file: it was changed after signing, or signed by another key")]
    Invalid,
    #[error("the trusted comment was changed after signing")]
    Comment,
}

impl DeviceKey {
    /// Signs `message`; `trusted_comment` is covered by the signature (one
    /// line).
    pub fn sign_minisign(&self, message: &[u8], trusted_comment: &str) -> Signature {
        sign_prehashed(
            self.signing_key(),
            self.node_id().key_id,
            message,
            trusted_comment,
        )
    }
}

/// minisign's prehashed signature by any Ed25519 key: the device key and
/// operator/certifier keys sign the same way, so one verifier serves both.
pub(crate) fn sign_prehashed(
    key: &ed25519_dalek::SigningKey,
    key_id: [u8; 8],
    message: &[u8],
    trusted_comment: &str,
) -> Signature {
    let trusted_comment = trusted_comment.replace(['\n', '\r'], " ");
    let digest = Blake2b512::digest(message);
    let signature = key.sign(&digest).to_bytes();
    let mut global = signature.to_vec();
    global.extend_from_slice(trusted_comment.as_bytes());
    let global_signature = key.sign(&global).to_bytes();
    Signature {
        key_id,
        signature,
        trusted_comment,
        global_signature,
    }
}

impl Signature {
    /// The `.minisig` file contents.
    pub fn to_file(&self) -> String {
        let mut sig = Vec::with_capacity(74);
        sig.extend_from_slice(&ALG_PREHASHED);
        sig.extend_from_slice(&self.key_id);
        sig.extend_from_slice(&self.signature);
        format!(
            "untrusted comment: signature from lockstep key {:016X}\n{}\ntrusted comment: {}\n{}\n",
            u64::from_le_bytes(self.key_id),
            STANDARD.encode(sig),
            self.trusted_comment,
            STANDARD.encode(self.global_signature)
        )
    }

    pub fn trusted_comment(&self) -> &str {
        &self.trusted_comment
    }

    /// Parses a `.minisig` file (prehashed signatures only).
    pub fn parse(text: &str) -> Result<Signature, SignatureError> {
        let mut lines = text.lines();
        let mut next = |what| lines.next().ok_or(SignatureError::Malformed(what));
        let untrusted = next("missing untrusted comment line")?;
        if !untrusted.starts_with("untrusted comment:") {
            return Err(SignatureError::Malformed(
                "first line is not an untrusted comment",
            ));
        }
        let sig = STANDARD
            .decode(next("missing signature line")?.trim())
            .map_err(|_| SignatureError::Malformed("signature line is not base64"))?;
        if sig.len() != 74 || sig[..2] != ALG_PREHASHED {
            return Err(SignatureError::Malformed(
                "signature is not a 74-byte prehashed Ed25519 (ED) signature",
            ));
        }
        let trusted_comment = next("missing trusted comment line")?
            .strip_prefix("trusted comment: ")
            .ok_or(SignatureError::Malformed(
                "third line is not a trusted comment",
            ))?
            .to_string();
        let global = STANDARD
            .decode(next("missing global signature line")?.trim())
            .map_err(|_| SignatureError::Malformed("global signature is not base64"))?;
        let global_signature: [u8; 64] = global
            .as_slice()
            .try_into()
            .map_err(|_| SignatureError::Malformed("global signature is not 64 bytes"))?;
        let mut key_id = [0u8; 8];
        key_id.copy_from_slice(&sig[2..10]);
        let mut signature = [0u8; 64];
        signature.copy_from_slice(&sig[10..74]);
        Ok(Signature {
            key_id,
            signature,
            trusted_comment,
            global_signature,
        })
    }

    /// Checks that `node` signed exactly `message` and this trusted comment.
    pub fn verify(&self, node: &NodeId, message: &[u8]) -> Result<(), SignatureError> {
        if self.key_id != node.key_id {
            return Err(SignatureError::WrongKey {
                expected: node.key_id_hex(),
                found: format!("{:016X}", u64::from_le_bytes(self.key_id)),
            });
        }
        let digest = Blake2b512::digest(message);
        let sig = ed25519_dalek::Signature::from_bytes(&self.signature);
        node.key
            .verify(&digest, &sig)
            .map_err(|_| SignatureError::Invalid)?;
        let mut global = self.signature.to_vec();
        global.extend_from_slice(self.trusted_comment.as_bytes());
        let gsig = ed25519_dalek::Signature::from_bytes(&self.global_signature);
        node.key
            .verify(&global, &gsig)
            .map_err(|_| SignatureError::Comment)
    }
}
