//! The verifier's side of a node attestation, over the wire and offline:
//! the exchange with a node (lockstep_protocol::attest), the policy (EK
//! roots, accepted image releases), and the transcript that lets anyone
//! re-verify an attestation later (`lockstep attest --check-transcript`).
//! The cryptography is `lockstep-attest`'s; this module only carries bytes
//! and names the failure (docs/identity.md, "Attestation").

use std::path::{Path, PathBuf};

use lockstep_attest::{
    challenge, pem_certificates, verify, AcceptedRelease, AttestError, Attestation,
    CredentialChallenge, Evidence, NodeTpm, PcrValue, Policy,
};
use lockstep_identity::NodeId;
use lockstep_protocol::{
    AttestChallenge, AttestEvidence, ErrorKind, Frame, KeyProtection, Message,
};
use lockstep_transport::frames::{write_frame, FrameReader};
use rand_core::RngCore;
use serde::{Deserialize, Serialize};

/// `format` of a transcript.
pub const TRANSCRIPT_FORMAT: &str = "lockstep-attest-transcript/1";
/// The fleet's EK roots, in the fleet directory.
pub const EK_ROOTS_FILE: &str = "ek-roots.pem";
/// The fleet's accepted image manifests, in the fleet directory.
pub const ACCEPTED_IMAGES_DIR: &str = "accepted-images";
/// Largest PEM file of EK roots read.
pub const MAX_EK_ROOTS_PEM_BYTES: u64 = 1024 * 1024;
/// Largest image manifest read.
pub const MAX_MANIFEST_BYTES: u64 = 1024 * 1024;
/// Largest transcript read.
pub const MAX_TRANSCRIPT_BYTES: u64 = 64 * 1024;

/// Why an attestation did not succeed. Each is one line.
#[derive(Debug, thiserror::Error)]
pub enum AttestFailure {
    /// The node cannot attest: no TPM, or a file key.
    #[error("node refused to attest: {0}")]
    NotAttestable(String),
    /// The evidence does not verify: the attestation is refused.
    #[error("attestation refused: {0}")]
    Refused(String),
    /// Bad settings or files on this side.
    #[error("{0}")]
    Input(String),
    /// The node is attesting for someone else.
    #[error("node at {0} is busy with another attestation; retry in a moment")]
    Busy(String),
    /// Network or node trouble.
    #[error("{0}")]
    Machine(String),
}

impl AttestFailure {
    /// The refusal for a verifier error, named by what failed.
    pub fn refused(e: &AttestError) -> AttestFailure {
        let what = match e {
            AttestError::EkCertificateUntrusted { .. }
            | AttestError::EkCertificateNotValidNow { .. }
            | AttestError::EkCertificateKeyMismatch
            | AttestError::BadEkCertificate { .. } => "EK chain untrusted",
            AttestError::UnacceptedMeasurements { .. } | AttestError::RequiredPcrMissing { .. } => {
                "measurements are not those of an accepted release"
            }
            AttestError::BadQuoteSignature
            | AttestError::WrongSigner
            | AttestError::NotAQuote { .. }
            | AttestError::PcrDigestMismatch
            | AttestError::UnsupportedPcrBank { .. } => "quote does not verify",
            AttestError::WrongNonceOrKey => "quote is not for this challenge and node key",
            AttestError::CredentialNotActivated => "credential not activated by this TPM",
            _ => "the TPM's data is not acceptable",
        };
        AttestFailure::Refused(format!("{what}: {e}"))
    }
}

fn hex_bytes<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(b))
}

fn bytes_hex<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let s = String::deserialize(d)?;
    hex::decode(s).map_err(serde::de::Error::custom)
}

fn hex32<S: serde::Serializer>(b: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(b))
}

fn to32<'de, D: serde::Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
    let v = bytes_hex(d)?;
    v.try_into()
        .map_err(|_| serde::de::Error::custom("expected 32 bytes (64 hex digits)"))
}

/// A TPM's public parts, hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TranscriptTpm {
    #[serde(serialize_with = "hex_bytes", deserialize_with = "bytes_hex")]
    pub ek_public: Vec<u8>,
    #[serde(serialize_with = "hex_bytes", deserialize_with = "bytes_hex")]
    pub ek_certificate: Vec<u8>,
    #[serde(serialize_with = "hex_bytes", deserialize_with = "bytes_hex")]
    pub ak_public: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TranscriptChallenge {
    #[serde(serialize_with = "hex_bytes", deserialize_with = "bytes_hex")]
    pub id_object: Vec<u8>,
    #[serde(serialize_with = "hex_bytes", deserialize_with = "bytes_hex")]
    pub encrypted_secret: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TranscriptPcr {
    pub index: u8,
    #[serde(serialize_with = "hex32", deserialize_with = "to32")]
    pub sha256: [u8; 32],
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TranscriptEvidence {
    #[serde(serialize_with = "hex_bytes", deserialize_with = "bytes_hex")]
    pub quote: Vec<u8>,
    #[serde(serialize_with = "hex_bytes", deserialize_with = "bytes_hex")]
    pub signature: Vec<u8>,
    pub pcrs: Vec<TranscriptPcr>,
    #[serde(serialize_with = "hex_bytes", deserialize_with = "bytes_hex")]
    pub activated_secret: Vec<u8>,
}

/// Everything an attestation exchanged, enough to verify it again offline:
/// the verifier's random values (nonce, secret, MakeCredential seed
/// entropy) make the same challenge again, and the evidence is checked
/// against it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transcript {
    pub format: String,
    /// The node id (minisign public key, base64).
    pub node_key: String,
    pub key_protection: KeyProtection,
    pub tpm: TranscriptTpm,
    #[serde(serialize_with = "hex32", deserialize_with = "to32")]
    pub nonce: [u8; 32],
    #[serde(serialize_with = "hex32", deserialize_with = "to32")]
    pub secret: [u8; 32],
    #[serde(serialize_with = "hex32", deserialize_with = "to32")]
    pub seed_entropy: [u8; 32],
    pub challenge: TranscriptChallenge,
    pub evidence: TranscriptEvidence,
}

impl Transcript {
    pub fn node_tpm(&self) -> NodeTpm {
        NodeTpm {
            ek_public: self.tpm.ek_public.clone(),
            ek_certificate: self.tpm.ek_certificate.clone(),
            ak_public: self.tpm.ak_public.clone(),
        }
    }

    pub fn evidence(&self) -> Evidence {
        Evidence {
            quote: self.evidence.quote.clone(),
            signature: self.evidence.signature.clone(),
            pcrs: self
                .evidence
                .pcrs
                .iter()
                .map(|p| PcrValue {
                    index: p.index,
                    sha256: p.sha256,
                })
                .collect(),
            activated_secret: self.evidence.activated_secret.clone(),
        }
    }

    /// Reads a transcript file (bounded).
    pub fn read(path: &Path) -> Result<Transcript, AttestFailure> {
        let bytes = read_bounded(path, MAX_TRANSCRIPT_BYTES)?;
        let t: Transcript = serde_json::from_slice(&bytes).map_err(|e| {
            AttestFailure::Input(format!(
                "{}: not an attestation transcript: {e}",
                path.display()
            ))
        })?;
        if t.format != TRANSCRIPT_FORMAT {
            return Err(AttestFailure::Input(format!(
                "{}: format {:?}, not {TRANSCRIPT_FORMAT}",
                path.display(),
                t.format
            )));
        }
        Ok(t)
    }

    /// Verifies the transcript against `policy`: the challenge is made
    /// again from its random values and must be the one sent, then the
    /// evidence is verified against it.
    pub fn verify(&self, policy: &Policy) -> Result<Attestation, AttestFailure> {
        let node = NodeId::parse(&self.node_key)
            .map_err(|e| AttestFailure::Input(format!("node_key: {e}")))?;
        if self.key_protection != KeyProtection::TpmSealed {
            return Err(AttestFailure::Refused(format!(
                "node key is a file key: the node says its key protection is {}",
                self.key_protection
            )));
        }
        let (pending, made) =
            challenge(&self.node_tpm(), self.nonce, self.secret, self.seed_entropy)
                .map_err(|e| AttestFailure::refused(&e))?;
        if made.id_object != self.challenge.id_object
            || made.encrypted_secret != self.challenge.encrypted_secret
        {
            return Err(AttestFailure::Refused(
                "the challenge is not the one this transcript's nonce, secret and seed make for this TPM".into(),
            ));
        }
        verify(&pending, &self.evidence(), &node.public_key_bytes(), policy)
            .map_err(|e| AttestFailure::refused(&e))
    }
}

fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, AttestFailure> {
    use std::io::Read;
    let file = std::fs::File::open(path)
        .map_err(|e| AttestFailure::Input(format!("{}: {e}", path.display())))?;
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| AttestFailure::Input(format!("{}: {e}", path.display())))?;
    if bytes.len() as u64 > max {
        return Err(AttestFailure::Input(format!(
            "{}: over {max} bytes",
            path.display()
        )));
    }
    Ok(bytes)
}

/// The DER certificates of a PEM file of EK roots (and intermediates).
pub fn read_ek_roots(path: &Path) -> Result<Vec<Vec<u8>>, AttestFailure> {
    let bytes = read_bounded(path, MAX_EK_ROOTS_PEM_BYTES)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| AttestFailure::Input(format!("{}: not a PEM file", path.display())))?;
    let certs = pem_certificates(&text)
        .map_err(|e| AttestFailure::Input(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(AttestFailure::Input(format!(
            "{}: holds no certificate",
            path.display()
        )));
    }
    Ok(certs)
}

/// The release an image manifest describes: its `name` and the PCR 11
/// value (`tpm_pcr11_sha256`) a machine booted from it has.
pub fn read_manifest(path: &Path) -> Result<AcceptedRelease, AttestFailure> {
    let bytes = read_bounded(path, MAX_MANIFEST_BYTES)?;
    let bad = |why: &str| AttestFailure::Input(format!("{}: {why}", path.display()));
    let v: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| bad(&format!("not an image manifest: {e}")))?;
    let name = v["name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| bad("the manifest has no \"name\""))?;
    let pcr11 = v["tpm_pcr11_sha256"].as_str().ok_or_else(|| {
        bad("the manifest has no \"tpm_pcr11_sha256\" (built by an image build that predicts PCR 11)")
    })?;
    let pcr11: [u8; 32] = hex::decode(pcr11)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad("\"tpm_pcr11_sha256\" is not 64 hex digits"))?;
    Ok(AcceptedRelease {
        name: name.to_string(),
        pcr11,
    })
}

/// The policy for EK roots and accepted releases, now, quoting
/// `lockstep_limits::ATTEST_PCRS`.
pub fn policy(ek_roots: Vec<Vec<u8>>, accepted: Vec<AcceptedRelease>) -> Policy {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Policy {
        ek_roots,
        accepted,
        now_unix_s: now,
        required_pcrs: lockstep_limits::ATTEST_PCRS.to_vec(),
    }
}

/// The fleet's policy: `FLEET/ek-roots.pem` and every manifest in
/// `FLEET/accepted-images/`.
pub fn fleet_policy(dir: &Path) -> Result<Policy, AttestFailure> {
    let roots = dir.join(EK_ROOTS_FILE);
    if !roots.exists() {
        return Err(AttestFailure::Input(format!(
            "the fleet trusts no EK roots ({} is missing): run `lockstep-fleet trust-ek-roots PEMFILE`, or enroll a file-key node with --allow-file-key",
            roots.display()
        )));
    }
    let ek_roots = read_ek_roots(&roots)?;
    let accepted = accepted_manifests(dir)?
        .iter()
        .map(|p| read_manifest(p))
        .collect::<Result<Vec<_>, _>>()?;
    if accepted.is_empty() {
        return Err(AttestFailure::Input(
            "the fleet accepts no image release: run `lockstep-fleet accept-image MANIFEST.json`"
                .into(),
        ));
    }
    Ok(policy(ek_roots, accepted))
}

/// The manifests in `FLEET/accepted-images/`, sorted.
pub fn accepted_manifests(dir: &Path) -> Result<Vec<PathBuf>, AttestFailure> {
    let d = dir.join(ACCEPTED_IMAGES_DIR);
    if !d.exists() {
        return Ok(Vec::new());
    }
    let mut out: Vec<PathBuf> = std::fs::read_dir(&d)
        .map_err(|e| AttestFailure::Input(format!("{}: {e}", d.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    out.sort();
    Ok(out)
}

async fn next_message(reader: &mut FrameReader) -> Result<Message, String> {
    match reader.next().await.map_err(|e| e.to_string())? {
        Some(Frame::Control(payload)) => Message::decode(&payload).map_err(|e| e.to_string()),
        Some(Frame::Data(_)) => Err("data where a control message was expected".into()),
        None => Err("the node closed the stream without answering".into()),
    }
}

/// Runs an attestation with the node on `connection` (whose TLS handshake
/// proved `node`'s key): nonce, secret and seed from the OS. Returns the
/// transcript; verify it with [`Transcript::verify`].
pub async fn exchange(
    connection: &quinn::Connection,
    node: &NodeId,
) -> Result<Transcript, AttestFailure> {
    let addr = connection.remote_address();
    let machine =
        |e: &dyn std::fmt::Display| AttestFailure::Machine(format!("node at {addr}: {e}"));
    let (mut send, recv) = connection.open_bi().await.map_err(|e| machine(&e))?;
    let mut reader = FrameReader::new(recv);
    write_frame(&mut send, &Message::AttestHello.to_frame())
        .await
        .map_err(|e| machine(&e))?;
    let identity = match next_message(&mut reader).await.map_err(|e| machine(&e))? {
        Message::AttestIdentity(i) => i,
        Message::Busy { .. } => return Err(AttestFailure::Busy(addr.to_string())),
        Message::Rejected(e) if e.kind == ErrorKind::NotAttestable => {
            return Err(AttestFailure::NotAttestable(e.message))
        }
        Message::Rejected(e) => return Err(machine(&format!("refused: {}", e.message))),
        other => return Err(machine(&format!("unexpected reply {other:?}"))),
    };
    let mut random = [[0u8; 32]; 3];
    for r in &mut random {
        rand_core::OsRng.fill_bytes(r);
    }
    let [nonce, secret, seed_entropy] = random;
    let tpm = NodeTpm {
        ek_public: identity.tpm.ek_public.clone(),
        ek_certificate: identity.tpm.ek_certificate.clone(),
        ak_public: identity.tpm.ak_public.clone(),
    };
    if identity.key_protection != KeyProtection::TpmSealed {
        return Err(AttestFailure::NotAttestable(format!(
            "node key is a file key (key protection {})",
            identity.key_protection
        )));
    }
    let (_, made): (_, CredentialChallenge) =
        challenge(&tpm, nonce, secret, seed_entropy).map_err(|e| AttestFailure::refused(&e))?;
    let sent = AttestChallenge {
        nonce,
        id_object: made.id_object.clone(),
        encrypted_secret: made.encrypted_secret.clone(),
    };
    write_frame(&mut send, &Message::AttestChallenge(sent).to_frame())
        .await
        .map_err(|e| machine(&e))?;
    let _ = send.finish();
    let evidence: AttestEvidence = match next_message(&mut reader).await.map_err(|e| machine(&e))? {
        Message::AttestEvidence(e) => e,
        Message::Rejected(e) => return Err(machine(&format!("refused: {}", e.message))),
        other => return Err(machine(&format!("unexpected reply {other:?}"))),
    };
    Ok(Transcript {
        format: TRANSCRIPT_FORMAT.to_string(),
        node_key: node.to_base64(),
        key_protection: identity.key_protection,
        tpm: TranscriptTpm {
            ek_public: identity.tpm.ek_public,
            ek_certificate: identity.tpm.ek_certificate,
            ak_public: identity.tpm.ak_public,
        },
        nonce,
        secret,
        seed_entropy,
        challenge: TranscriptChallenge {
            id_object: made.id_object,
            encrypted_secret: made.encrypted_secret,
        },
        evidence: TranscriptEvidence {
            quote: evidence.quote,
            signature: evidence.signature,
            pcrs: evidence
                .pcrs
                .iter()
                .map(|p| TranscriptPcr {
                    index: p.index,
                    sha256: p.sha256,
                })
                .collect(),
            activated_secret: evidence.activated_secret,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_name_a_release_and_its_pcr11() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.json");
        std::fs::write(
            &p,
            format!(
                r#"{{"name":"lockstep-1","tpm_pcr11_sha256":"{}"}}"#,
                "ab".repeat(32)
            ),
        )
        .unwrap();
        let r = read_manifest(&p).unwrap();
        assert_eq!((r.name.as_str(), r.pcr11), ("lockstep-1", [0xab; 32]));
        std::fs::write(&p, r#"{"name":"lockstep-1"}"#).unwrap();
        let e = read_manifest(&p).unwrap_err().to_string();
        assert!(e.contains("tpm_pcr11_sha256"), "{e}");
        std::fs::write(&p, r#"{"name":"x","tpm_pcr11_sha256":"abcd"}"#).unwrap();
        let e = read_manifest(&p).unwrap_err().to_string();
        assert!(e.contains("64 hex"), "{e}");
    }

    #[test]
    fn transcripts_round_trip_and_name_their_format() {
        let t = Transcript {
            format: TRANSCRIPT_FORMAT.into(),
            node_key: "RWQ".into(),
            key_protection: KeyProtection::TpmSealed,
            tpm: TranscriptTpm {
                ek_public: vec![1, 2],
                ek_certificate: vec![3],
                ak_public: vec![4],
            },
            nonce: [5; 32],
            secret: [6; 32],
            seed_entropy: [7; 32],
            challenge: TranscriptChallenge {
                id_object: vec![8],
                encrypted_secret: vec![9],
            },
            evidence: TranscriptEvidence {
                quote: vec![10],
                signature: vec![11],
                pcrs: vec![TranscriptPcr {
                    index: 11,
                    sha256: [12; 32],
                }],
                activated_secret: vec![13],
            },
        };
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.json");
        let json = serde_json::to_string(&t).unwrap();
        assert!(json.contains(r#""key_protection":"tpm-sealed""#), "{json}");
        assert!(json.contains(r#""ek_public":"0102""#), "{json}");
        std::fs::write(&p, &json).unwrap();
        assert_eq!(Transcript::read(&p).unwrap(), t);
        std::fs::write(&p, json.replace(TRANSCRIPT_FORMAT, "other/1")).unwrap();
        assert!(matches!(Transcript::read(&p), Err(AttestFailure::Input(_))));
        // A file key is refused before any cryptography.
        let file = Transcript {
            key_protection: KeyProtection::File,
            node_key: lockstep_identity::SigningKey::generate()
                .public()
                .to_base64(),
            ..t
        };
        let e = file
            .verify(&policy(vec![], vec![]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("file key"), "{e}");
    }
}
