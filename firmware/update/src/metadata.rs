//! The update metadata document (`lockstep-update/1`) and its parser.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::UpdateError;

/// `format` of [`UpdateMetadata`].
pub const UPDATE_FORMAT: &str = "lockstep-update/1";
/// Name of the metadata file beside an image's slot artifacts.
pub const UPDATE_FILE: &str = "update.json";
/// Name of its operator signature (stock minisign, prehashed).
pub const UPDATE_SIGNATURE_FILE: &str = "update.json.minisig";
/// Longest name, image version or target (bytes, printable ASCII).
pub const MAX_UPDATE_TEXT_BYTES: usize = 128;

/// One slot artifact as the signed metadata names it: its SHA-256
/// (64 lower-case hex) and its exact length.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    pub sha256: String,
    pub bytes: u64,
}

impl Artifact {
    /// The artifact entry of `data` (for the fleet side and tests).
    pub fn of(data: &[u8]) -> Artifact {
        Artifact {
            sha256: hex::encode(Sha256::digest(data)),
            bytes: data.len() as u64,
        }
    }
}

/// Which part of a slot an artifact fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Slot {
    /// The unified kernel image (kernel, initramfs, command line with the
    /// root hash), booted by systemd-boot.
    Uki,
    /// The squashfs root file system.
    Root,
    /// The dm-verity hash tree over the root.
    Verity,
}

impl Slot {
    pub const ALL: [Slot; 3] = [Slot::Uki, Slot::Root, Slot::Verity];

    /// The field name in the metadata, and in messages.
    pub fn name(self) -> &'static str {
        match self {
            Slot::Uki => "uki",
            Slot::Root => "root",
            Slot::Verity => "verity",
        }
    }
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What one update installs, signed by an operator: canonical JSON, one
/// line, no trailing newline, exactly the bytes that `minisign -Vm` checks.
///
/// ```json
/// {"expires_at":1798000000,"format":"lockstep-update/1","image_version":"0.2.0-abc",
///  "name":"lockstep-0.2.0-abc","root":{"bytes":…,"sha256":"…"},"root_hash":"…",
///  "target":"lavapipe","tpm_pcr11_sha256":"…","uki":{…},"verity":{…},"version":7}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateMetadata {
    /// [`UPDATE_FORMAT`].
    pub format: String,
    /// The image's name (its manifest's `name`).
    pub name: String,
    /// The image's version string (its manifest's `version`), for people.
    pub image_version: String,
    /// The monotonic update version a node compares with its floor.
    pub version: u64,
    /// Unix seconds after which no node installs it.
    pub expires_at: u64,
    /// The image variant it is for (`lavapipe`, `nvidia`, …; the
    /// manifest's `variant`).
    pub target: String,
    pub uki: Artifact,
    pub root: Artifact,
    pub verity: Artifact,
    /// The dm-verity root hash of `root` under `verity` (64 hex), which the
    /// UKI's command line carries.
    pub root_hash: String,
    /// PCR 11 (SHA-256 bank, 64 hex) the new UKI will show, so the fleet
    /// can accept the release for attestation before nodes boot it.
    pub tpm_pcr11_sha256: String,
}

impl UpdateMetadata {
    /// The artifact of one slot part.
    pub fn artifact(&self, slot: Slot) -> &Artifact {
        match slot {
            Slot::Uki => &self.uki,
            Slot::Root => &self.root,
            Slot::Verity => &self.verity,
        }
    }

    /// The canonical bytes that are signed.
    pub fn to_canonical(&self) -> Vec<u8> {
        lockstep_canonical_json::to_vec(self).expect("update metadata has no floats")
    }

    /// Parses metadata bytes: bounded, exactly the canonical form (so one
    /// document has one byte string, and re-encoding is detected), the
    /// right format, and every field well formed (hex digests, printable
    /// short texts, non-empty artifacts). Signature, time, floor, target
    /// and size limits are [`crate::verify_update`]'s.
    pub fn parse(bytes: &[u8]) -> Result<UpdateMetadata, UpdateError> {
        let max = lockstep_limits::MAX_UPDATE_METADATA_BYTES;
        if bytes.len() > max {
            return Err(UpdateError::MetadataTooLarge {
                bytes: bytes.len(),
                max,
            });
        }
        let metadata: UpdateMetadata =
            serde_json::from_slice(bytes).map_err(|e| UpdateError::Malformed {
                reason: e.to_string(),
            })?;
        // Format first: a document of another format is "malformed", not
        // "re-encoded", whatever its bytes.
        if metadata.format != UPDATE_FORMAT {
            return Err(UpdateError::Malformed {
                reason: format!("format {:?}, expected {UPDATE_FORMAT:?}", metadata.format),
            });
        }
        if metadata.to_canonical() != bytes {
            return Err(UpdateError::NotCanonical);
        }
        metadata.check_fields()?;
        Ok(metadata)
    }

    /// The field rules [`parse`](Self::parse) enforces, for documents built
    /// in memory (the signer checks before it signs).
    pub fn check_fields(&self) -> Result<(), UpdateError> {
        if self.format != UPDATE_FORMAT {
            return Err(malformed(format!(
                "format {:?}, expected {UPDATE_FORMAT:?}",
                self.format
            )));
        }
        check_text("name", &self.name)?;
        check_text("image_version", &self.image_version)?;
        check_text("target", &self.target)?;
        check_hex("root_hash", &self.root_hash)?;
        check_hex("tpm_pcr11_sha256", &self.tpm_pcr11_sha256)?;
        for slot in Slot::ALL {
            let artifact = self.artifact(slot);
            check_hex(slot.name(), &artifact.sha256)?;
            if artifact.bytes == 0 {
                return Err(malformed(format!("the {slot} is announced as empty")));
            }
        }
        Ok(())
    }
}

fn malformed(reason: String) -> UpdateError {
    UpdateError::Malformed { reason }
}

fn check_text(field: &str, value: &str) -> Result<(), UpdateError> {
    if value.is_empty() || value.len() > MAX_UPDATE_TEXT_BYTES {
        return Err(malformed(format!(
            "{field} must be 1 to {MAX_UPDATE_TEXT_BYTES} bytes, not {}",
            value.len()
        )));
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(malformed(format!(
            "{field} must be printable ASCII without spaces"
        )));
    }
    Ok(())
}

fn check_hex(field: &str, value: &str) -> Result<(), UpdateError> {
    if value.len() != 64
        || !value
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(malformed(format!(
            "{field} must be a SHA-256 in 64 lower-case hex digits"
        )));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> UpdateMetadata {
        UpdateMetadata {
            format: UPDATE_FORMAT.into(),
            name: "lockstep-0.2.0-abc".into(),
            image_version: "0.2.0-abc".into(),
            version: 7,
            expires_at: 1_000_000 + 86_400,
            target: "lavapipe".into(),
            uki: Artifact::of(b"uki bytes"),
            root: Artifact::of(b"root bytes"),
            verity: Artifact::of(b"verity bytes"),
            root_hash: "a".repeat(64),
            tpm_pcr11_sha256: "b".repeat(64),
        }
    }

    #[test]
    fn canonical_bytes_parse_back() {
        let m = sample();
        let bytes = m.to_canonical();
        assert!(bytes.starts_with(b"{\"expires_at\":"));
        assert!(!bytes.ends_with(b"\n"));
        assert_eq!(UpdateMetadata::parse(&bytes).unwrap(), m);
    }

    #[test]
    fn re_encoded_json_is_not_canonical() {
        let bytes = sample().to_canonical();
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let pretty = serde_json::to_vec_pretty(&value).unwrap();
        assert_eq!(
            UpdateMetadata::parse(&pretty),
            Err(UpdateError::NotCanonical)
        );
        let mut newline = bytes.clone();
        newline.push(b'\n');
        assert_eq!(
            UpdateMetadata::parse(&newline),
            Err(UpdateError::NotCanonical)
        );
        // Same keys, another order.
        let text = String::from_utf8(bytes).unwrap();
        let reordered = format!(
            "{{\"version\":7,{}}}",
            &text[1..text.len() - 1].replace(",\"version\":7", "")
        );
        assert_eq!(reordered.len(), text.len());
        assert_eq!(
            UpdateMetadata::parse(reordered.as_bytes()),
            Err(UpdateError::NotCanonical)
        );
        // An unknown key.
        let extra = text.replacen("{\"expires_at\"", "{\"zz\":0,\"expires_at\"", 1);
        assert!(matches!(
            UpdateMetadata::parse(extra.as_bytes()),
            Err(UpdateError::Malformed { .. })
        ));
    }

    #[test]
    fn ill_formed_fields_are_refused() {
        let cases: Vec<fn(&mut UpdateMetadata)> = vec![
            |m| m.format = "lockstep-update/2".into(),
            |m| m.name = String::new(),
            |m| m.name = "x".repeat(MAX_UPDATE_TEXT_BYTES + 1),
            |m| m.target = "lava pipe".into(),
            |m| m.image_version = "v\u{e9}".into(),
            |m| m.root_hash = "A".repeat(64),
            |m| m.tpm_pcr11_sha256 = "b".repeat(63),
            |m| m.uki.sha256 = "g".repeat(64),
            |m| m.verity.bytes = 0,
        ];
        for (i, edit) in cases.into_iter().enumerate() {
            let mut m = sample();
            edit(&mut m);
            assert!(
                matches!(
                    UpdateMetadata::parse(&m.to_canonical()),
                    Err(UpdateError::Malformed { .. })
                ),
                "case {i}"
            );
        }
    }

    #[test]
    fn oversize_metadata_is_refused_before_parsing() {
        let bytes = vec![b' '; lockstep_limits::MAX_UPDATE_METADATA_BYTES + 1];
        assert!(matches!(
            UpdateMetadata::parse(&bytes),
            Err(UpdateError::MetadataTooLarge { .. })
        ));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = sample().to_canonical();
        for len in 0..bytes.len() {
            assert!(
                UpdateMetadata::parse(&bytes[..len]).is_err(),
                "length {len}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..2048)) {
            let _ = UpdateMetadata::parse(&bytes);
        }

        #[test]
        fn edited_canonical_bytes_never_panic(pos in 0usize..4096, byte in proptest::num::u8::ANY) {
            let mut bytes = sample().to_canonical();
            let at = pos % bytes.len();
            bytes[at] = byte;
            let _ = UpdateMetadata::parse(&bytes);
        }
    }
}
