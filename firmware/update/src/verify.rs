//! What a node checks before it writes a single byte of an update.

use lockstep_identity::{NodeId, Signature, SignatureError};

use crate::{ArtifactCheck, Slot, UpdateError, UpdateMetadata};

/// The bounds a node holds an update to. [`Default`] is the constants of
/// `lockstep-limits`; a node with smaller slots passes smaller ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpdateLimits {
    pub max_uki_bytes: u64,
    pub max_root_bytes: u64,
    pub max_verity_bytes: u64,
    /// Longest `expires_at - now` accepted (the freeze defence).
    pub max_validity_s: u64,
}

impl Default for UpdateLimits {
    fn default() -> UpdateLimits {
        UpdateLimits {
            max_uki_bytes: lockstep_limits::MAX_UPDATE_UKI_BYTES,
            max_root_bytes: lockstep_limits::MAX_UPDATE_ROOT_BYTES,
            max_verity_bytes: lockstep_limits::MAX_UPDATE_VERITY_BYTES,
            max_validity_s: lockstep_limits::MAX_UPDATE_VALIDITY_S,
        }
    }
}

impl UpdateLimits {
    /// The largest artifact accepted for one slot part.
    pub fn max_bytes(&self, slot: Slot) -> u64 {
        match slot {
            Slot::Uki => self.max_uki_bytes,
            Slot::Root => self.max_root_bytes,
            Slot::Verity => self.max_verity_bytes,
        }
    }
}

/// Update metadata that passed every check of [`verify_update`]; only that
/// function makes one, so holding one means it was verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedUpdate {
    metadata: UpdateMetadata,
    signer: NodeId,
}

impl VerifiedUpdate {
    pub fn metadata(&self) -> &UpdateMetadata {
        &self.metadata
    }

    /// The trusted operator whose signature verified.
    pub fn signer(&self) -> &NodeId {
        &self.signer
    }

    /// The new floor once this update is installed.
    pub fn version(&self) -> u64 {
        self.metadata.version
    }

    /// A streaming check of one slot artifact against the signed metadata.
    pub fn artifact_check(&self, slot: Slot) -> ArtifactCheck {
        ArtifactCheck::for_slot(slot, self.metadata.artifact(slot))
    }

    pub fn into_metadata(self) -> UpdateMetadata {
        self.metadata
    }
}

/// [`verify_update_with_limits`] with the default [`UpdateLimits`].
pub fn verify_update(
    metadata_bytes: &[u8],
    signature: &str,
    trusted_operators: &[NodeId],
    floor_version: u64,
    now_unix_s: u64,
    target: &str,
) -> Result<VerifiedUpdate, UpdateError> {
    verify_update_with_limits(
        metadata_bytes,
        signature,
        trusted_operators,
        floor_version,
        now_unix_s,
        target,
        &UpdateLimits::default(),
    )
}

/// Verifies signed update metadata, in this order, each refusal its own
/// [`UpdateError`]:
///
/// 1. sizes: the metadata within `MAX_UPDATE_METADATA_BYTES`, the signature
///    within `MAX_UPDATE_SIGNATURE_BYTES`;
/// 2. the minisign (prehashed) signature by one of `trusted_operators`
///    over exactly `metadata_bytes`, before anything in them is parsed;
/// 3. the document: canonical JSON, format `lockstep-update/1`, every
///    field well formed;
/// 4. each announced artifact within `limits`;
/// 5. the target is this node's variant (no mix-and-match across
///    variants);
/// 6. the version is above `floor_version`, the highest this node ever
///    installed (no rollback, no replay of the installed update);
/// 7. not expired (`now_unix_s < expires_at`), and not valid for longer
///    than `limits.max_validity_s` from now (no freeze: see
///    docs/updates.md).
pub fn verify_update_with_limits(
    metadata_bytes: &[u8],
    signature: &str,
    trusted_operators: &[NodeId],
    floor_version: u64,
    now_unix_s: u64,
    target: &str,
    limits: &UpdateLimits,
) -> Result<VerifiedUpdate, UpdateError> {
    let max = lockstep_limits::MAX_UPDATE_METADATA_BYTES;
    if metadata_bytes.len() > max {
        return Err(UpdateError::MetadataTooLarge {
            bytes: metadata_bytes.len(),
            max,
        });
    }
    let max = lockstep_limits::MAX_UPDATE_SIGNATURE_BYTES;
    if signature.len() > max {
        return Err(UpdateError::SignatureTooLarge {
            bytes: signature.len(),
            max,
        });
    }
    if signature.trim().is_empty() {
        return Err(UpdateError::Unsigned);
    }
    let signer = verify_signature(metadata_bytes, signature, trusted_operators)?;
    let metadata = UpdateMetadata::parse(metadata_bytes)?;
    for slot in Slot::ALL {
        let (bytes, max) = (metadata.artifact(slot).bytes, limits.max_bytes(slot));
        if bytes > max {
            return Err(UpdateError::ArtifactTooLarge {
                slot: slot.name(),
                bytes,
                max,
            });
        }
    }
    if metadata.target != target {
        return Err(UpdateError::WrongTarget {
            signed: metadata.target,
            node: target.to_string(),
        });
    }
    if metadata.version <= floor_version {
        return Err(UpdateError::NotNewer {
            version: metadata.version,
            floor: floor_version,
        });
    }
    check_time(metadata.expires_at, now_unix_s, limits.max_validity_s)?;
    Ok(VerifiedUpdate { metadata, signer })
}

/// Not expired at `now`, and not valid for longer than `max_validity_s`
/// from `now` (the freeze defence).
pub(crate) fn check_time(
    expires_at: u64,
    now: u64,
    max_validity_s: u64,
) -> Result<(), UpdateError> {
    if now >= expires_at {
        return Err(UpdateError::Expired { expires_at, now });
    }
    if expires_at - now > max_validity_s {
        return Err(UpdateError::ValidityTooLong {
            expires_at,
            now,
            max_s: max_validity_s,
        });
    }
    Ok(())
}

/// The trusted key whose minisign signature over `bytes` verifies.
fn verify_signature(
    bytes: &[u8],
    signature: &str,
    trusted: &[NodeId],
) -> Result<NodeId, UpdateError> {
    let sig = Signature::parse(signature).map_err(|e| UpdateError::BadSignature {
        reason: e.to_string(),
    })?;
    let mut found = None;
    for key in trusted {
        match sig.verify(key, bytes) {
            Ok(()) => return Ok(key.clone()),
            Err(SignatureError::WrongKey { found: id, .. }) => found = Some(id),
            // The key id matched a trusted key, but the bytes (or the
            // trusted comment) are not what it signed.
            Err(e) => {
                return Err(UpdateError::BadSignature {
                    reason: e.to_string(),
                })
            }
        }
    }
    let trusted_list = if trusted.is_empty() {
        "none".to_string()
    } else {
        trusted
            .iter()
            .map(NodeId::key_id_hex)
            .collect::<Vec<_>>()
            .join(", ")
    };
    Err(UpdateError::Untrusted {
        found: found.unwrap_or_else(|| "a key".into()),
        trusted: trusted_list,
    })
}
