//! The sans-IO core of signed image updates (docs/updates.md).
//!
//! An update is one signed document, [`UpdateMetadata`]
//! (`lockstep-update/1`, canonical JSON), that names everything a node
//! writes into its inactive slot by SHA-256 and exact length: the unified
//! kernel image, the squashfs root and its dm-verity hash tree, with the
//! root hash and the PCR 11 the new UKI will show. An operator signs it
//! with minisign (prehashed) exactly like a bundle release
//! (`update.json` + `update.json.minisig`; the stock `minisign -Vm`
//! verifies it).
//!
//! - [`verify_update`]: what a node checks before it writes a byte:
//!   bounds, operator signature, canonical form, artifact limits, target
//!   variant, version above the node's floor, expiry and a bounded
//!   validity window; each refusal its own [`UpdateError`].
//! - [`ArtifactCheck`]: the streaming check of each artifact against the
//!   signed length and hash, in constant memory.
//! - [`UpdateSigner`]: the fleet's side: metadata from an image manifest
//!   ([`ImageManifest`]) and the measured slot artifacts, signed with a
//!   [`lockstep_identity::SigningKey`].
//!
//! **Architecture Invariant:** this crate knows nothing of partitions,
//! boot loaders, QUIC or files: it is pure functions over bytes, with the
//! time passed in as an argument, so every verdict can be replayed.

#![forbid(unsafe_code)]

mod artifact;
mod error;
mod metadata;
mod signer;
mod verify;

pub use artifact::ArtifactCheck;
pub use error::UpdateError;
pub use metadata::{
    Artifact, Slot, UpdateMetadata, MAX_UPDATE_TEXT_BYTES, UPDATE_FILE, UPDATE_FORMAT,
    UPDATE_SIGNATURE_FILE,
};
pub use signer::{
    ImageManifest, SignedUpdate, SlotArtifacts, UpdateSigner, MAX_IMAGE_MANIFEST_BYTES,
};
pub use verify::{verify_update, verify_update_with_limits, UpdateLimits, VerifiedUpdate};

#[cfg(test)]
mod tests;
