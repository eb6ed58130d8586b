//! TPM attestation on a node's job endpoint: the node proves that its
//! device key lives on a genuine TPM's machine that booted an accepted
//! release (docs/identity.md, "Attestation").
//!
//! One attestation is one stream:
//!
//! 1. client → node `AttestHello`.
//! 2. node → client [`AttestIdentity`]: its EK public area and certificate
//!    and a fresh AK created under the EK, and how its device key is kept.
//!    A node whose key is a file key, or that has no TPM, refuses with
//!    `NotAttestable`; one already attesting answers `Busy`.
//! 3. client → node [`AttestChallenge`]: a random nonce and a credential
//!    (TPM2 MakeCredential against the EK, naming the AK) wrapping a
//!    random secret.
//! 4. node → client [`AttestEvidence`]: the secret recovered by
//!    ActivateCredential (proof that AK and EK are in one TPM), a quote
//!    by the AK over the PCRs in `lockstep_limits::ATTEST_PCRS` whose
//!    qualifying data is `SHA-256("lockstep-attest/1" ‖ nonce ‖ node key)`
//!    as `lockstep_attest::quote_qualifying_data` computes it (binding the
//!    quote to this session and this node's key), and those PCRs' values.

use lockstep_identity::KeyProtection;
use lockstep_limits::{
    MAX_ACTIVATED_SECRET_BYTES, MAX_CREDENTIAL_PART_BYTES, MAX_EK_CERTIFICATE_BYTES,
    MAX_QUOTED_PCRS, MAX_QUOTE_BYTES, MAX_TPM_PUBLIC_BYTES,
};
use serde::{Deserialize, Serialize};

/// A TPM's public parts, as tpm2-tools write them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestTpm {
    /// TPM2B_PUBLIC of the endorsement key.
    pub ek_public: Vec<u8>,
    /// The EK certificate (DER) from NV index 0x01c00002.
    pub ek_certificate: Vec<u8>,
    /// TPM2B_PUBLIC of the attestation key made for this session.
    pub ak_public: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestIdentity {
    pub tpm: AttestTpm,
    pub key_protection: KeyProtection,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestChallenge {
    pub nonce: [u8; 32],
    /// TPM2B_ID_OBJECT of the credential.
    pub id_object: Vec<u8>,
    /// TPM2B_ENCRYPTED_SECRET of the credential (the seed, under the EK).
    pub encrypted_secret: Vec<u8>,
}

/// One quoted PCR's SHA-256 value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotedPcr {
    pub index: u8,
    pub sha256: [u8; 32],
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestEvidence {
    /// TPMS_ATTEST as `tpm2_quote -m` writes it.
    pub quote: Vec<u8>,
    /// TPMT_SIGNATURE as `tpm2_quote -s` writes it.
    pub signature: Vec<u8>,
    /// The quoted PCRs, ascending.
    pub pcrs: Vec<QuotedPcr>,
    pub activated_secret: Vec<u8>,
}

fn bound(what: &str, len: usize, max: usize) -> Result<(), String> {
    if len > max {
        return Err(format!("{what} of {len} bytes; at most {max}"));
    }
    Ok(())
}

pub(crate) fn check_identity(m: &AttestIdentity) -> Result<(), String> {
    bound(
        "EK public area",
        m.tpm.ek_public.len(),
        MAX_TPM_PUBLIC_BYTES,
    )?;
    bound(
        "AK public area",
        m.tpm.ak_public.len(),
        MAX_TPM_PUBLIC_BYTES,
    )?;
    bound(
        "EK certificate",
        m.tpm.ek_certificate.len(),
        MAX_EK_CERTIFICATE_BYTES,
    )
}

pub(crate) fn check_challenge(m: &AttestChallenge) -> Result<(), String> {
    bound(
        "credential id object",
        m.id_object.len(),
        MAX_CREDENTIAL_PART_BYTES,
    )?;
    bound(
        "credential secret",
        m.encrypted_secret.len(),
        MAX_CREDENTIAL_PART_BYTES,
    )
}

pub(crate) fn check_evidence(m: &AttestEvidence) -> Result<(), String> {
    bound("quote", m.quote.len(), MAX_QUOTE_BYTES)?;
    bound("quote signature", m.signature.len(), MAX_QUOTE_BYTES)?;
    bound(
        "activated secret",
        m.activated_secret.len(),
        MAX_ACTIVATED_SECRET_BYTES,
    )?;
    if m.pcrs.len() > MAX_QUOTED_PCRS {
        return Err(format!(
            "{} PCR values; a quote covers at most {MAX_QUOTED_PCRS}",
            m.pcrs.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Frame;
    use crate::message::{Message, MessageError};

    fn decode(m: &Message) -> Result<Message, MessageError> {
        let Frame::Control(p) = m.to_frame() else {
            panic!("control frame expected")
        };
        Message::decode(&p)
    }

    #[test]
    fn attestation_messages_round_trip_and_are_bounded() {
        let id = Message::AttestIdentity(AttestIdentity {
            tpm: AttestTpm {
                ek_public: vec![1; 300],
                ek_certificate: vec![2; 1200],
                ak_public: vec![3; 90],
            },
            key_protection: KeyProtection::TpmSealed,
        });
        assert_eq!(decode(&id).unwrap(), id);
        let big = Message::AttestIdentity(AttestIdentity {
            tpm: AttestTpm {
                ek_public: vec![1; 300],
                ek_certificate: vec![2; MAX_EK_CERTIFICATE_BYTES + 1],
                ak_public: vec![3; 90],
            },
            key_protection: KeyProtection::File,
        });
        assert!(matches!(decode(&big), Err(MessageError::Bound(_))));
        let ev = AttestEvidence {
            quote: vec![0; 145],
            signature: vec![0; 72],
            pcrs: (0..25)
                .map(|i| QuotedPcr {
                    index: i,
                    sha256: [0; 32],
                })
                .collect(),
            activated_secret: vec![0; 32],
        };
        assert!(matches!(
            decode(&Message::AttestEvidence(ev.clone())),
            Err(MessageError::Bound(_))
        ));
        let ok = AttestEvidence {
            pcrs: ev.pcrs[..10].to_vec(),
            ..ev
        };
        let m = Message::AttestEvidence(ok);
        assert_eq!(decode(&m).unwrap(), m);
        let ch = Message::AttestChallenge(AttestChallenge {
            nonce: [9; 32],
            id_object: vec![0; MAX_CREDENTIAL_PART_BYTES + 1],
            encrypted_secret: vec![],
        });
        assert!(matches!(decode(&ch), Err(MessageError::Bound(_))));
        assert_eq!(decode(&Message::AttestHello).unwrap(), Message::AttestHello);
        assert_eq!(KeyProtection::TpmSealed.to_string(), "tpm-sealed");
    }
}
