//! `export-registry`: one signed record per node, for registering its
//! identity on chain (docs/identity.md says how a contract checks it).

use lockstep_identity::SigningKey;
use serde::Serialize;

use crate::inventory::NodeRecord;

/// `format` of a registry record.
pub const REGISTRY_FORMAT: &str = "lockstep-registry/1";

/// What the operator vouches for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegistryRecord {
    pub format: &'static str,
    /// minisign public key (base64) of the node's device key.
    pub node: String,
    /// minisign public key (base64) of the operator.
    pub operator: String,
    pub device_fingerprint: String,
    /// SHA-256 (hex) of the node's certification report; null if the node
    /// is not certified.
    pub certification_report_sha256: Option<String>,
    /// SHA-256 (hex) of the node's verified TPM attestation at enrolment
    /// (docs/identity.md, "Attestation"); null for a file-key node
    /// enrolled with --allow-file-key.
    pub attestation_sha256: Option<String>,
    /// How the node's device key is protected: "tpm-sealed" or "file".
    pub key_protection: lockstep_identity::KeyProtection,
}

/// A record and the operator's minisign signature over its canonical JSON.
#[derive(Debug, Clone, Serialize)]
pub struct SignedRecord {
    pub record: RegistryRecord,
    /// The canonical JSON bytes that were signed, as a string.
    pub canonical: String,
    /// minisign signature file of `canonical`.
    pub signature: String,
}

/// Records for every node not revoked.
pub fn export(nodes: &[NodeRecord], key: &SigningKey) -> Vec<SignedRecord> {
    nodes
        .iter()
        .filter(|n| n.revoked_at.is_none())
        .map(|n| {
            let record = RegistryRecord {
                format: REGISTRY_FORMAT,
                node: n.node_id.clone(),
                operator: key.public().to_base64(),
                device_fingerprint: n.device_fingerprint.clone(),
                certification_report_sha256: n
                    .certification_report_sha256
                    .clone()
                    .filter(|_| n.certified),
                attestation_sha256: n.attestation_sha256.clone(),
                key_protection: n.key_protection,
            };
            let bytes = lockstep_canonical_json::to_vec(&record).expect("records serialise");
            let signature = key
                .sign_minisign(&bytes, "lockstep registry record")
                .to_file();
            SignedRecord {
                record,
                canonical: String::from_utf8(bytes).expect("canonical JSON is UTF-8"),
                signature,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use lockstep_identity::Signature;

    #[test]
    fn records_verify_and_revoked_nodes_are_left_out() {
        let key = SigningKey::generate();
        let node = |id: &str, revoked: bool| NodeRecord {
            node_id: id.into(),
            address: "a".into(),
            device_fingerprint: "ff".into(),
            device: "cpu".into(),
            bundle_id: "b".into(),
            bundle_version: 0,
            image_version: "dev".into(),
            certified: false,
            certification_report_sha256: Some("ab".into()),
            key_protection: lockstep_identity::KeyProtection::File,
            enrolled_at: "t".into(),
            revoked_at: revoked.then(|| "t".into()),
            attestation_sha256: Some("cd".into()),
            attested_release: Some("r".into()),
            slot: None,
            image_variant: None,
            update_floor: None,
            rolled_back_from: None,
            last_update: None,
            last_update_version: None,
            last_update_at: None,
        };
        let out = export(&[node("n1", false), node("n2", true)], &key);
        assert_eq!(out.len(), 1);
        // Not certified: no report hash, whatever the inventory holds.
        assert_eq!(out[0].record.certification_report_sha256, None);
        assert_eq!(out[0].record.attestation_sha256.as_deref(), Some("cd"));
        assert!(out[0].canonical.contains("\"key_protection\":\"file\""));
        let sig = Signature::parse(&out[0].signature).unwrap();
        sig.verify(key.public(), out[0].canonical.as_bytes())
            .unwrap();
        assert!(sig.verify(key.public(), b"{}").is_err());
    }
}
