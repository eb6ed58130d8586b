//! The fleet's side: update metadata from an image manifest and the slot
//! artifacts, checked as a node would check it, then signed.

use lockstep_identity::SigningKey;
use serde::Deserialize;

use crate::{Artifact, Slot, UpdateError, UpdateLimits, UpdateMetadata, UPDATE_FORMAT};

/// Largest image manifest read (it lists every package: about 16 KiB).
pub const MAX_IMAGE_MANIFEST_BYTES: usize = lockstep_limits::MAX_MANIFEST_BYTES;

/// The fields of an image manifest (`NAME.manifest.json`, written by
/// `image/build.sh`) that an update carries; the others are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ImageManifest {
    /// The manifest's own format number (1).
    pub format: u64,
    pub name: String,
    pub version: String,
    pub variant: String,
    pub root_hash: String,
    pub tpm_pcr11_sha256: String,
}

impl ImageManifest {
    /// Parses a manifest (bounded; format 1).
    pub fn parse(bytes: &[u8]) -> Result<ImageManifest, UpdateError> {
        let malformed = |reason: String| UpdateError::Malformed {
            reason: format!("image manifest: {reason}"),
        };
        if bytes.len() > MAX_IMAGE_MANIFEST_BYTES {
            return Err(malformed(format!(
                "{} bytes, over the {MAX_IMAGE_MANIFEST_BYTES}-byte bound",
                bytes.len()
            )));
        }
        let manifest: ImageManifest =
            serde_json::from_slice(bytes).map_err(|e| malformed(e.to_string()))?;
        if manifest.format != 1 {
            return Err(malformed(format!(
                "format {}, expected 1 (an image built by image/build.sh)",
                manifest.format
            )));
        }
        Ok(manifest)
    }
}

/// The three parts of a slot, as the fleet measured them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotArtifacts {
    pub uki: Artifact,
    pub root: Artifact,
    pub verity: Artifact,
}

/// Signed metadata, as written to `update.json` and `update.json.minisig`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedUpdate {
    pub metadata: UpdateMetadata,
    /// The canonical bytes (the file's whole contents, no newline).
    pub bytes: Vec<u8>,
    /// The minisign signature file.
    pub signature: String,
}

/// Makes and signs update metadata with an operator key.
pub struct UpdateSigner<'a> {
    key: &'a SigningKey,
    limits: UpdateLimits,
}

impl<'a> UpdateSigner<'a> {
    pub fn new(key: &'a SigningKey) -> UpdateSigner<'a> {
        UpdateSigner {
            key,
            limits: UpdateLimits::default(),
        }
    }

    /// Holds the metadata to other limits than the default (the nodes').
    pub fn with_limits(mut self, limits: UpdateLimits) -> UpdateSigner<'a> {
        self.limits = limits;
        self
    }

    /// The metadata for `manifest`'s image with these slot artifacts, at
    /// update `version`, valid until `expires_at` (unix seconds). Checked
    /// like a node checks it (fields and artifact limits; the time by
    /// [`sign_at`](Self::sign_at)).
    pub fn metadata(
        &self,
        manifest: &ImageManifest,
        artifacts: SlotArtifacts,
        version: u64,
        expires_at: u64,
    ) -> Result<UpdateMetadata, UpdateError> {
        let metadata = UpdateMetadata {
            format: UPDATE_FORMAT.to_string(),
            name: manifest.name.clone(),
            image_version: manifest.version.clone(),
            version,
            expires_at,
            target: manifest.variant.clone(),
            uki: artifacts.uki,
            root: artifacts.root,
            verity: artifacts.verity,
            root_hash: manifest.root_hash.clone(),
            tpm_pcr11_sha256: manifest.tpm_pcr11_sha256.clone(),
        };
        self.check(&metadata)?;
        Ok(metadata)
    }

    /// Signs the canonical bytes of `metadata` (minisign, prehashed: the
    /// stock `minisign -Vm update.json -P KEY` verifies them), after the
    /// checks a node makes that do not depend on the node.
    pub fn sign(&self, metadata: &UpdateMetadata) -> Result<SignedUpdate, UpdateError> {
        self.check(metadata)?;
        let bytes = metadata.to_canonical();
        if bytes.len() > lockstep_limits::MAX_UPDATE_METADATA_BYTES {
            return Err(UpdateError::MetadataTooLarge {
                bytes: bytes.len(),
                max: lockstep_limits::MAX_UPDATE_METADATA_BYTES,
            });
        }
        let signature = self
            .key
            .sign_minisign(
                &bytes,
                &format!(
                    "lockstep update {} of image {} for {}",
                    metadata.version, metadata.name, metadata.target
                ),
            )
            .to_file();
        Ok(SignedUpdate {
            metadata: metadata.clone(),
            bytes,
            signature,
        })
    }

    /// [`sign`](Self::sign), after also refusing what a node would refuse
    /// at `now_unix_s`: an expired update, or one valid for longer than the
    /// limits' window.
    pub fn sign_at(
        &self,
        metadata: &UpdateMetadata,
        now_unix_s: u64,
    ) -> Result<SignedUpdate, UpdateError> {
        crate::verify::check_time(metadata.expires_at, now_unix_s, self.limits.max_validity_s)?;
        self.sign(metadata)
    }

    fn check(&self, metadata: &UpdateMetadata) -> Result<(), UpdateError> {
        metadata.check_fields()?;
        for slot in Slot::ALL {
            let (bytes, max) = (metadata.artifact(slot).bytes, self.limits.max_bytes(slot));
            if bytes > max {
                return Err(UpdateError::ArtifactTooLarge {
                    slot: slot.name(),
                    bytes,
                    max,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const MANIFEST: &str = r#"{
  "debug": false,
  "format": 1,
  "image": "lockstep-0.1.0-25b0e9a14542.raw",
  "image_bytes": 555745280,
  "image_sha256": "145073fda55f66980ac6d78816415e641f41b5bc31b98fd9ae2501ae29b138da",
  "kernel": "6.1.0-50-amd64",
  "name": "lockstep-0.1.0-25b0e9a14542",
  "packages": [{"name": "adduser", "version": "3.134"}],
  "root_hash": "645c96d49ab0306766aa1c3e95b6a731711d2899a83fefc1172d9c54e5b4eb57",
  "source_commit": "25b0e9a14542",
  "tpm_pcr11_sha256": "f746fcb9267dc7988005856c4138061ce4db5b92222577df04d185187ad4757e",
  "variant": "lavapipe",
  "version": "0.1.0-25b0e9a14542"
}"#;

    fn artifacts() -> SlotArtifacts {
        SlotArtifacts {
            uki: Artifact::of(b"uki"),
            root: Artifact::of(b"root"),
            verity: Artifact::of(b"verity"),
        }
    }

    #[test]
    fn metadata_takes_the_manifest_fields() {
        let manifest = ImageManifest::parse(MANIFEST.as_bytes()).unwrap();
        let key = SigningKey::generate();
        let m = UpdateSigner::new(&key)
            .metadata(&manifest, artifacts(), 3, 2_000_000_000)
            .unwrap();
        assert_eq!(m.name, "lockstep-0.1.0-25b0e9a14542");
        assert_eq!(m.image_version, "0.1.0-25b0e9a14542");
        assert_eq!(m.target, "lavapipe");
        assert_eq!(m.root_hash, manifest.root_hash);
        assert_eq!(m.tpm_pcr11_sha256, manifest.tpm_pcr11_sha256);
        assert_eq!(m.uki, Artifact::of(b"uki"));
        assert_eq!((m.version, m.expires_at), (3, 2_000_000_000));
    }

    #[test]
    fn a_bad_manifest_is_refused() {
        for bad in [
            "",
            "{}",
            &MANIFEST.replace("\"format\": 1", "\"format\": 2"),
            &MANIFEST.replace("\"variant\": \"lavapipe\",", ""),
        ] {
            assert!(
                matches!(
                    ImageManifest::parse(bad.as_bytes()),
                    Err(UpdateError::Malformed { .. })
                ),
                "{bad}"
            );
        }
        // A manifest whose root hash is not hex makes no metadata.
        let mut manifest = ImageManifest::parse(MANIFEST.as_bytes()).unwrap();
        manifest.root_hash = "not hex".into();
        let key = SigningKey::generate();
        assert!(matches!(
            UpdateSigner::new(&key).metadata(&manifest, artifacts(), 3, 2_000_000_000),
            Err(UpdateError::Malformed { .. })
        ));
    }

    #[test]
    fn the_signer_refuses_what_nodes_would_refuse() {
        let manifest = ImageManifest::parse(MANIFEST.as_bytes()).unwrap();
        let key = SigningKey::generate();
        let small = UpdateLimits {
            max_root_bytes: 3,
            ..UpdateLimits::default()
        };
        assert_eq!(
            UpdateSigner::new(&key).with_limits(small).metadata(
                &manifest,
                artifacts(),
                3,
                2_000_000_000
            ),
            Err(UpdateError::ArtifactTooLarge {
                slot: "root",
                bytes: 4,
                max: 3
            })
        );
        let mut m = UpdateSigner::new(&key)
            .metadata(&manifest, artifacts(), 3, 2_000_000_000)
            .unwrap();
        let now = 2_000_000_000 - 10 * 86_400;
        let signed = UpdateSigner::new(&key).sign_at(&m, now).unwrap();
        assert_eq!(signed.metadata, m);
        assert!(matches!(
            UpdateSigner::new(&key).sign_at(&m, 2_000_000_000),
            Err(UpdateError::Expired { .. })
        ));
        assert!(matches!(
            UpdateSigner::new(&key).sign_at(&m, 2_000_000_000 - 31 * 86_400),
            Err(UpdateError::ValidityTooLong { .. })
        ));
        m.uki.bytes = 0;
        assert!(UpdateSigner::new(&key).sign(&m).is_err());
    }
}
