//! Fleet administration on a node's job endpoint (`lockstep-fleet`).
//!
//! One admin session is one stream:
//!
//! 1. fleet → node [`AdminHello`]: a random 32-byte challenge.
//! 2. node → fleet [`AdminChallenge`]: the node's [`NodeInfo`] and a fresh
//!    random nonce for this session, signed with the device key over
//!    [`challenge_statement`] (challenge, info, nonce): proof that the node
//!    holds the key behind its node id.
//! 3. fleet → node [`AdminCommand`]: an [`AdminStatement`] (node id, the
//!    session's nonce, the action) as canonical JSON, signed by an operator
//!    key; for a bundle push the files follow as data chunks.
//! 4. node → fleet [`AdminReply`].
//!
//! The nonce lives only in the node's stream task: a command replayed on
//! another stream names a nonce that stream never issued, and is refused.
//!
//! Bundles carry a release statement ([`ReleaseStatement`]) signed by the
//! operator: the bundle id and a version that only goes up, so a node can
//! refuse rollbacks.

use lockstep_identity::{NodeId, Signature};
use lockstep_limits::{
    MAX_BUNDLE_UPLOAD_BYTES, MAX_KERNELS, MAX_MANIFEST_BYTES, MAX_SPIRV_BYTES,
    MAX_UPDATE_METADATA_BYTES, MAX_UPDATE_SIGNATURE_BYTES,
};
use serde::{Deserialize, Serialize};

/// `format` of an [`AdminStatement`].
pub const ADMIN_FORMAT: &str = "lockstep-admin/1";
/// `format` of a [`ReleaseStatement`].
pub const RELEASE_FORMAT: &str = "lockstep-release/1";
/// Name of the release statement beside a bundle's `manifest.json`.
pub const RELEASE_FILE: &str = "release.json";
/// Name of its operator signature.
pub const RELEASE_SIGNATURE_FILE: &str = "release.json.minisig";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminHello {
    pub challenge: [u8; 32],
}

/// What a node says about itself when challenged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub node_id: String,
    /// SHA-256 (hex) of the canonical JSON of the device record.
    pub device_fingerprint: String,
    pub device: String,
    pub bundle_id: String,
    /// Version of the active bundle's release statement; 0 for the bundle
    /// built into the image.
    pub bundle_version: u64,
    pub image_version: String,
    pub certified: bool,
    /// SHA-256 (hex) of the certification report the node serves under, if
    /// certified.
    pub certification_report_sha256: Option<String>,
    /// The operator keys the node accepts admin commands from (its pinned
    /// set); empty means unprovisioned: only an enrolment inside the node's
    /// first-enrolment window is accepted.
    pub trusted_operators: Vec<String>,
    /// How the device key is protected (TPM-sealed or a file).
    pub key_protection: lockstep_identity::KeyProtection,
    /// The A/B slot this boot runs from and the update state; `None` on a
    /// node that is not an A/B appliance image (development, tests).
    pub slot: Option<SlotInfo>,
    /// The node's chain key address (EIP-55 `0x…`).
    pub chain_address: String,
}

/// Where an A/B appliance runs, and what its last update did
/// (docs/updates.md, "Slots").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotInfo {
    /// `a` or `b`: the slot whose root this boot runs from.
    pub slot: String,
    /// The image variant: the `target` an update must name.
    pub variant: String,
    /// The highest update version this node ever accepted (its floor):
    /// only a higher one is installed. 0: none yet.
    pub update_floor: u64,
    /// The image version of the last installed update, when that update
    /// did not come up healthy within its tries and the node returned to
    /// this slot; `None` otherwise.
    pub rolled_back_from: Option<String>,
    /// The image version staged or installed in the other slot, if any.
    pub other_version: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminChallenge {
    pub info: NodeInfo,
    pub nonce: [u8; 32],
    /// minisign signature file, by the device key, of
    /// [`challenge_statement`].
    pub signature: String,
}

/// The bytes the node signs to answer a challenge: a domain tag, the
/// challenge, the nonce, then the info's postcard bytes.
pub fn challenge_statement(challenge: &[u8; 32], info: &NodeInfo, nonce: &[u8; 32]) -> Vec<u8> {
    let mut bytes = b"lockstep-enroll/1\n".to_vec();
    bytes.extend_from_slice(challenge);
    bytes.extend_from_slice(nonce);
    bytes.extend_from_slice(&postcard::to_stdvec(info).expect("node info always serialises"));
    bytes
}

/// What an operator asks of one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum AdminAction {
    /// Be enrolled. A node that trusts no operator yet trusts this one only
    /// inside its first-enrolment window (`lockstepd --enroll-window-s`).
    Enroll,
    /// Switch to the bundle that follows (its id and release version).
    PushBundle { bundle_id: String, version: u64 },
    /// Replace the node's pinned operator set with `keys` (minisign public
    /// keys, 1 to `MAX_TRUSTED_OPERATORS`); signed by a current operator.
    SetOperators { keys: Vec<String> },
    /// Install the image update that follows ([`ImageUpload`]) into the
    /// inactive slot and boot it: `version` and `image_version` are the
    /// signed update metadata's, so the command and the update cannot be
    /// paired from two rollouts.
    PushImage { image_version: String, version: u64 },
    /// Sign a registration for the `NodeRegistry` at `registry` on
    /// `chain_id`, to be sent by `operator` (0x addresses, any case); the
    /// node answers [`AdminReply::registration`]. `attestation_digest` is
    /// 64 lower-case hex digits, or "" for none (zero bytes32). The node
    /// fills the other registration fields from its own state.
    SignRegistration {
        chain_id: u64,
        registry: String,
        operator: String,
        attestation_digest: String,
    },
    /// Read the node's metrics (version 7): the node answers
    /// [`AdminReply::metrics`], its Prometheus text exposition. Read-only,
    /// but the counters say how busy a node is and for whom it failed, so
    /// only an operator the node trusts may read them, like every action.
    Metrics,
}

/// The signed part of an admin command (canonical JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminStatement {
    pub format: String,
    pub node: String,
    /// Hex of the nonce the node issued for this session.
    pub nonce: String,
    pub action: AdminAction,
}

/// A bundle release: signed by the operator, kept beside the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseStatement {
    pub format: String,
    pub bundle_id: String,
    pub version: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadFile {
    pub name: String,
    pub len: u64,
}

/// A bundle on its way to a node: manifest, release statement and its
/// signature inline; the binaries' bytes follow as data chunks, in `files`
/// order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleUpload {
    pub manifest: Vec<u8>,
    pub release: Vec<u8>,
    pub release_signature: String,
    pub files: Vec<UploadFile>,
}

/// An image update on its way to a node (docs/updates.md): the
/// operator-signed update metadata (`update.json`, canonical JSON) and its
/// minisign signature inline; the slot parts follow as data chunks, in
/// this order: the UKI, the root, the verity hash tree, each exactly as
/// long as the metadata says.
///
/// Chunk rule: a data chunk never spans two artifacts (each artifact's
/// last chunk ends exactly at its announced length; the next artifact
/// starts in a new chunk), and no chunk is empty. A node refuses a chunk
/// that crosses an artifact's end (`ArtifactOverlong`) or is empty. The
/// fleet sends each artifact cut into `WIRE_CHUNK_BYTES` chunks, one
/// artifact after the other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageUpload {
    pub metadata: Vec<u8>,
    pub signature: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminCommand {
    /// The operator's minisign public key.
    pub operator: String,
    /// Canonical JSON of an [`AdminStatement`].
    pub statement: Vec<u8>,
    /// minisign signature file of `statement` by `operator`.
    pub signature: String,
    pub bundle: Option<BundleUpload>,
    pub image: Option<ImageUpload>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminReply {
    pub ok: bool,
    /// One line: what happened, or why not and what to do.
    pub message: String,
    /// The node's state after the command.
    pub bundle_id: String,
    pub bundle_version: u64,
    /// Whether the node is certified for that bundle (a new bundle needs a
    /// new report), and the SHA-256 of the report it serves under.
    pub certified: bool,
    pub certification_report_sha256: Option<String>,
    /// The signed registration, in answer to
    /// [`AdminAction::SignRegistration`]; `None` otherwise.
    pub registration: Option<crate::chain::RegistrationSignature>,
    /// The node's metrics, Prometheus text exposition format 0.0.4 (at
    /// most `MAX_METRICS_BYTES`, checked at decode time), in answer to
    /// [`AdminAction::Metrics`]; `None` otherwise (version 7).
    pub metrics: Option<String>,
}

/// Bounds an admin reply: its registration's fields and its metrics text.
pub fn check_reply(r: &AdminReply) -> Result<(), String> {
    if let Some(m) = &r.metrics {
        if m.len() > lockstep_limits::MAX_METRICS_BYTES {
            return Err(format!(
                "metrics of {} bytes; at most {}",
                m.len(),
                lockstep_limits::MAX_METRICS_BYTES
            ));
        }
    }
    match &r.registration {
        Some(registration) => crate::chain::check_registration(registration),
        None => Ok(()),
    }
}

/// Why a release statement or admin statement is not accepted. Messages
/// say what to do next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    #[error("the bundle is unsigned (no {RELEASE_SIGNATURE_FILE}): sign it with `lockstep-fleet bundle sign DIR` first")]
    Unsigned,
    #[error("{what} is not valid: {reason}")]
    Malformed { what: &'static str, reason: String },
    #[error("{what} is not signed by a key this node trusts (signed by {found}; trusted: {trusted}); sign with a trusted operator key, or have the node's image trust this one")]
    Untrusted {
        what: &'static str,
        found: String,
        trusted: String,
    },
    #[error("{what}'s signature does not verify: {reason}; re-sign it with `lockstep-fleet bundle sign`")]
    BadSignature { what: &'static str, reason: String },
    #[error("the release statement names bundle {signed}, but the manifest is bundle {actual}: the bundle was changed after signing; re-sign it or restore it")]
    WrongBundle { signed: String, actual: String },
}

/// Checks a release statement: signed (minisign, prehashed) by one of
/// `trusted`, well formed, and naming `bundle_id`.
pub fn verify_release(
    release: &[u8],
    signature: &str,
    trusted: &[NodeId],
    bundle_id: &str,
) -> Result<ReleaseStatement, AdminError> {
    if signature.trim().is_empty() {
        return Err(AdminError::Unsigned);
    }
    verify_signed("the release statement", release, signature, trusted)?;
    let statement: ReleaseStatement =
        serde_json::from_slice(release).map_err(|e| AdminError::Malformed {
            what: "the release statement",
            reason: e.to_string(),
        })?;
    if statement.format != RELEASE_FORMAT {
        return Err(AdminError::Malformed {
            what: "the release statement",
            reason: format!("format {:?}, expected {RELEASE_FORMAT:?}", statement.format),
        });
    }
    if statement.bundle_id != bundle_id {
        return Err(AdminError::WrongBundle {
            signed: statement.bundle_id,
            actual: bundle_id.to_string(),
        });
    }
    Ok(statement)
}

/// Checks that `signature` is one of `trusted`'s minisign signature of
/// `bytes`; returns the signer.
pub fn verify_signed(
    what: &'static str,
    bytes: &[u8],
    signature: &str,
    trusted: &[NodeId],
) -> Result<NodeId, AdminError> {
    let sig = Signature::parse(signature).map_err(|e| AdminError::BadSignature {
        what,
        reason: e.to_string(),
    })?;
    let mut last = None;
    for key in trusted {
        match sig.verify(key, bytes) {
            Ok(()) => return Ok(key.clone()),
            Err(lockstep_identity::SignatureError::WrongKey { found, .. }) => {
                last.get_or_insert(AdminError::Untrusted {
                    what,
                    found,
                    trusted: String::new(),
                });
            }
            Err(e) => {
                last = Some(AdminError::BadSignature {
                    what,
                    reason: e.to_string(),
                })
            }
        }
    }
    let trusted_list = trusted
        .iter()
        .map(|k| k.key_id_hex())
        .collect::<Vec<_>>()
        .join(", ");
    Err(match last {
        Some(AdminError::Untrusted { what, found, .. }) => AdminError::Untrusted {
            what,
            found,
            trusted: trusted_list,
        },
        Some(e) => e,
        None => AdminError::Untrusted {
            what,
            found: "a key".into(),
            trusted: "none".into(),
        },
    })
}

/// Bounds an admin command: file count, name lengths, sizes.
pub fn check_command(c: &AdminCommand) -> Result<(), String> {
    if c.statement.len() > 64 * 1024 {
        return Err("admin statement over 64 KiB".into());
    }
    if let Some(i) = &c.image {
        if c.bundle.is_some() {
            return Err("one command carries a bundle or an image update, not both".into());
        }
        if i.metadata.len() > MAX_UPDATE_METADATA_BYTES {
            return Err(format!(
                "update metadata over {MAX_UPDATE_METADATA_BYTES} bytes"
            ));
        }
        if i.signature.len() > MAX_UPDATE_SIGNATURE_BYTES {
            return Err(format!(
                "update signature over {MAX_UPDATE_SIGNATURE_BYTES} bytes"
            ));
        }
    }
    let Some(b) = &c.bundle else { return Ok(()) };
    if b.manifest.len() > MAX_MANIFEST_BYTES {
        return Err(format!("manifest over {MAX_MANIFEST_BYTES} bytes"));
    }
    if b.release.len() > 64 * 1024 {
        return Err("release statement over 64 KiB".into());
    }
    // Two variants per kernel.
    if b.files.len() > 2 * MAX_KERNELS {
        return Err(format!(
            "{} files; a bundle has at most {}",
            b.files.len(),
            2 * MAX_KERNELS
        ));
    }
    let mut total = 0u64;
    for f in &b.files {
        if f.len > MAX_SPIRV_BYTES as u64 {
            return Err(format!("file '{}' over {MAX_SPIRV_BYTES} bytes", f.name));
        }
        if f.name.is_empty()
            || f.name.len() > 128
            || f.name.starts_with('.')
            || f.name.contains(['/', '\\', '\0'])
        {
            return Err(format!("file name {:?} is not a plain file name", f.name));
        }
        total += f.len;
    }
    if total > MAX_BUNDLE_UPLOAD_BYTES {
        return Err(format!(
            "bundle of {total} bytes over the {MAX_BUNDLE_UPLOAD_BYTES}-byte bound"
        ));
    }
    Ok(())
}

/// Reassembles an upload's files from data chunks of any size, never
/// holding more than the announced (bounded) total.
#[derive(Debug)]
pub struct UploadReceiver {
    files: Vec<UploadFile>,
    done: Vec<(String, Vec<u8>)>,
    current: Vec<u8>,
}

impl UploadReceiver {
    /// `files` must have passed [`check_command`].
    pub fn new(files: Vec<UploadFile>) -> UploadReceiver {
        let mut r = UploadReceiver {
            files,
            done: Vec::new(),
            current: Vec::new(),
        };
        r.settle();
        r
    }

    fn settle(&mut self) {
        while let Some(f) = self.files.get(self.done.len()) {
            if self.current.len() as u64 == f.len {
                let name = f.name.clone();
                self.done.push((name, std::mem::take(&mut self.current)));
            } else {
                break;
            }
        }
    }

    pub fn is_done(&self) -> bool {
        self.done.len() == self.files.len()
    }

    /// Adds a chunk; more bytes than announced is an error.
    pub fn push(&mut self, mut chunk: &[u8]) -> Result<(), String> {
        while !chunk.is_empty() {
            let Some(f) = self.files.get(self.done.len()) else {
                return Err("more data than the announced files".into());
            };
            let want = (f.len - self.current.len() as u64) as usize;
            let take = want.min(chunk.len());
            self.current.extend_from_slice(&chunk[..take]);
            chunk = &chunk[take..];
            self.settle();
        }
        Ok(())
    }

    /// The files, once all arrived.
    pub fn into_files(self) -> Vec<(String, Vec<u8>)> {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(lens: &[u64]) -> Vec<UploadFile> {
        lens.iter()
            .enumerate()
            .map(|(i, &len)| UploadFile {
                name: format!("f{i}.spv"),
                len,
            })
            .collect()
    }

    #[test]
    fn upload_reassembles_across_chunk_boundaries() {
        let mut r = UploadReceiver::new(files(&[3, 0, 5]));
        assert!(!r.is_done());
        r.push(&[1, 2]).unwrap();
        r.push(&[3, 4, 5, 6]).unwrap();
        r.push(&[7, 8]).unwrap();
        assert!(r.is_done());
        let got = r.into_files();
        assert_eq!(got[0].1, vec![1, 2, 3]);
        assert!(got[1].1.is_empty());
        assert_eq!(got[2].1, vec![4, 5, 6, 7, 8]);
    }

    fn release(bundle_id: &str, version: u64) -> Vec<u8> {
        lockstep_canonical_json::to_vec(&ReleaseStatement {
            format: RELEASE_FORMAT.into(),
            bundle_id: bundle_id.into(),
            version,
        })
        .unwrap()
    }

    #[test]
    fn releases_must_be_signed_by_a_trusted_key_and_name_the_bundle() {
        let op = lockstep_identity::SigningKey::generate();
        let other = lockstep_identity::SigningKey::generate();
        let trusted = [op.public().clone()];
        let bytes = release("abc", 3);
        let sig = op.sign_minisign(&bytes, "r").to_file();
        let ok = verify_release(&bytes, &sig, &trusted, "abc").unwrap();
        assert_eq!(ok.version, 3);
        assert_eq!(
            verify_release(&bytes, "", &trusted, "abc"),
            Err(AdminError::Unsigned)
        );
        assert!(matches!(
            verify_release(&bytes, &sig, &trusted, "abd"),
            Err(AdminError::WrongBundle { .. })
        ));
        let foreign = other.sign_minisign(&bytes, "r").to_file();
        assert!(matches!(
            verify_release(&bytes, &foreign, &trusted, "abc"),
            Err(AdminError::Untrusted { .. })
        ));
        // Changed after signing (a higher version): the signature fails.
        assert!(matches!(
            verify_release(&release("abc", 4), &sig, &trusted, "abc"),
            Err(AdminError::BadSignature { .. })
        ));
        assert!(verify_release(&bytes, &sig, &[], "abc").is_err());
    }

    #[test]
    fn challenge_statements_bind_challenge_nonce_and_info() {
        let info = NodeInfo {
            node_id: "n".into(),
            device_fingerprint: "f".into(),
            device: "d".into(),
            bundle_id: "b".into(),
            bundle_version: 0,
            image_version: "i".into(),
            certified: false,
            certification_report_sha256: None,
            trusted_operators: vec![],
            key_protection: lockstep_identity::KeyProtection::File,
            slot: None,
            chain_address: String::new(),
        };
        let base = challenge_statement(&[1; 32], &info, &[2; 32]);
        assert_ne!(base, challenge_statement(&[9; 32], &info, &[2; 32]));
        assert_ne!(base, challenge_statement(&[1; 32], &info, &[9; 32]));
        let mut other = info.clone();
        other.certified = true;
        assert_ne!(base, challenge_statement(&[1; 32], &other, &[2; 32]));
    }

    #[test]
    fn the_metrics_action_is_signed_like_every_other() {
        let statement = AdminStatement {
            format: ADMIN_FORMAT.into(),
            node: "n".into(),
            nonce: "00".into(),
            action: AdminAction::Metrics,
        };
        let bytes = lockstep_canonical_json::to_vec(&statement).unwrap();
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            r#"{"action":{"kind":"metrics"},"format":"lockstep-admin/1","node":"n","nonce":"00"}"#
        );
        let back: AdminStatement = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, statement);
    }

    #[test]
    fn upload_refuses_extra_bytes() {
        let mut r = UploadReceiver::new(files(&[1]));
        assert!(r.push(&[1, 2]).is_err());
    }

    #[test]
    fn bad_names_and_sizes_are_refused() {
        let cmd = |files| AdminCommand {
            operator: String::new(),
            statement: vec![],
            signature: String::new(),
            bundle: Some(BundleUpload {
                manifest: vec![],
                release: vec![],
                release_signature: String::new(),
                files,
            }),
            image: None,
        };
        for name in ["../x", "a/b", ".hidden", ""] {
            let f = vec![UploadFile {
                name: name.into(),
                len: 1,
            }];
            assert!(check_command(&cmd(f)).is_err(), "{name}");
        }
        let big = vec![UploadFile {
            name: "x.spv".into(),
            len: MAX_SPIRV_BYTES as u64 + 1,
        }];
        assert!(check_command(&cmd(big)).is_err());
        assert!(check_command(&cmd(files(&[10, 20]))).is_ok());
    }
}
