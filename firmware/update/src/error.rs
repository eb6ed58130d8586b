//! Every way an update is refused, each its own variant; the message says
//! what to do next.

/// Why an update (its metadata, signature or an artifact's bytes) is
/// refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UpdateError {
    #[error("the update metadata is {bytes} bytes, over the {max}-byte bound: it is not update metadata (or it was padded); sign it again with `lockstep-fleet`")]
    MetadataTooLarge { bytes: usize, max: usize },
    #[error("the update signature is {bytes} bytes, over the {max}-byte bound: it is not a minisign signature file; sign the update again")]
    SignatureTooLarge { bytes: usize, max: usize },
    #[error("the update is unsigned (no .minisig): sign it with a trusted operator key")]
    Unsigned,
    #[error("the update's signature does not verify: {reason}; the metadata was changed after signing (tampered, or re-encoded): use the signed file as it is, or sign it again")]
    BadSignature { reason: String },
    #[error("the update is not signed by a key this node trusts (signed by {found}; trusted: {trusted}); sign it with a trusted operator key")]
    Untrusted { found: String, trusted: String },
    #[error(
        "the update metadata is not valid: {reason}; sign a metadata file made by `lockstep-fleet`"
    )]
    Malformed { reason: String },
    #[error("the update metadata is not in canonical form (it was re-encoded after it was made: keys sorted, no whitespace, no trailing newline); sign the canonical bytes that `lockstep-fleet` writes")]
    NotCanonical,
    #[error("the update announces a {slot} of {bytes} bytes, over this node's {max}-byte bound; build a smaller image")]
    ArtifactTooLarge {
        slot: &'static str,
        bytes: u64,
        max: u64,
    },
    #[error("the update is for target {signed}, but this node runs {node}: updates never cross variants; push the {node} image")]
    WrongTarget { signed: String, node: String },
    #[error("rollback or replay refused: update version {version} is not newer than {floor}, the highest version this node has installed; sign the update with a version above {floor}")]
    NotNewer { version: u64, floor: u64 },
    #[error("the update expired at {expires_at} (unix seconds; now {now}): ask the operator to sign it again with a later expiry, or check this node's clock")]
    Expired { expires_at: u64, now: u64 },
    #[error("the update is valid until {expires_at} (unix seconds; now {now}), more than the {max_s} s a node accepts: sign it again with an expiry closer to now, or check this node's clock (it may be behind)")]
    ValidityTooLong {
        expires_at: u64,
        now: u64,
        max_s: u64,
    },
    #[error("the {what} is longer than the {announced} bytes the signed update announces (at least {received} received): it is not the signed artifact; push the image again")]
    ArtifactOverlong {
        what: &'static str,
        announced: u64,
        received: u64,
    },
    #[error("the {what} ended after {received} of the {announced} bytes the signed update announces: the transfer was cut short; push the image again")]
    ArtifactShort {
        what: &'static str,
        announced: u64,
        received: u64,
    },
    #[error("the {what}'s SHA-256 is {actual}, not the signed {expected}: it was changed or corrupted; push the image again")]
    ArtifactHash {
        what: &'static str,
        expected: String,
        actual: String,
    },
}
