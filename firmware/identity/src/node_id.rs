//! The node id: an Ed25519 public key in minisign's public-key format.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha256};

/// minisign's signature-algorithm tag for Ed25519 keys.
pub(crate) const ALG_ED25519: [u8; 2] = *b"Ed";

/// A node's public identity.
#[derive(Clone, PartialEq, Eq)]
pub struct NodeId {
    pub(crate) key: VerifyingKey,
    /// minisign's 8-byte key id; derived from the key (SHA-256 prefix), so
    /// the same key always has the same id.
    pub(crate) key_id: [u8; 8],
}

/// Why a string is not a node id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeIdError {
    #[error("node key is not base64: expect the minisign public key line, e.g. RWQ...")]
    Base64,
    #[error("node key has {0} bytes, a minisign Ed25519 public key has 42")]
    Length(usize),
    #[error("node key is not an Ed25519 minisign key (algorithm tag {0:?})")]
    Algorithm([u8; 2]),
    #[error("node key is not a valid Ed25519 point")]
    Point,
}

impl NodeId {
    pub(crate) fn from_key(key: VerifyingKey) -> NodeId {
        let digest = Sha256::digest(key.as_bytes());
        let mut key_id = [0u8; 8];
        key_id.copy_from_slice(&digest[..8]);
        NodeId { key, key_id }
    }

    /// The base64 line of the minisign public key: what `minisign -P` and
    /// `--node-key` take, and what receipts name as the node.
    pub fn to_base64(&self) -> String {
        let mut bytes = Vec::with_capacity(42);
        bytes.extend_from_slice(&ALG_ED25519);
        bytes.extend_from_slice(&self.key_id);
        bytes.extend_from_slice(self.key.as_bytes());
        STANDARD.encode(bytes)
    }

    /// The key id as minisign prints it (upper-case hex of the little-endian
    /// number).
    pub fn key_id_hex(&self) -> String {
        format!("{:016X}", u64::from_le_bytes(self.key_id))
    }

    /// A complete minisign public key file.
    pub fn to_public_key_file(&self) -> String {
        format!(
            "untrusted comment: minisign public key {}\n{}\n",
            self.key_id_hex(),
            self.to_base64()
        )
    }

    /// Parses the base64 line, or a whole public key file (its last line).
    pub fn parse(text: &str) -> Result<NodeId, NodeIdError> {
        let line = text
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .unwrap_or("");
        let bytes = STANDARD.decode(line).map_err(|_| NodeIdError::Base64)?;
        if bytes.len() != 42 {
            return Err(NodeIdError::Length(bytes.len()));
        }
        let alg = [bytes[0], bytes[1]];
        if alg != ALG_ED25519 {
            return Err(NodeIdError::Algorithm(alg));
        }
        let mut key_id = [0u8; 8];
        key_id.copy_from_slice(&bytes[2..10]);
        let mut pk = [0u8; 32];
        pk.copy_from_slice(&bytes[10..42]);
        let key = VerifyingKey::from_bytes(&pk).map_err(|_| NodeIdError::Point)?;
        Ok(NodeId { key, key_id })
    }

    /// The raw Ed25519 public key.
    pub fn public_key_bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl std::fmt::Debug for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeId({})", self.to_base64())
    }
}
