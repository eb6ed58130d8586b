//! Attestation: the node proves that its device key is kept by this
//! machine's TPM and that the machine booted an accepted release
//! (lockstep_protocol::attest; docs/identity.md, "Attestation").
//!
//! The handler gets only what it needs: the [`Attestor`] (the TPM, the
//! node's public key, how the key is kept) and the node-wide attestation
//! gate. One attestation runs at a time (`MAX_ATTESTATIONS_IN_FLIGHT`;
//! another is answered `Busy`), the whole exchange within
//! `ATTEST_TIMEOUT_S`, and the TPM work (tpm2-tools, each command bounded
//! by `TPM_COMMAND_TIMEOUT_S`) on the blocking pool. The gate is held until
//! the TPM work has ended, even if the exchange was abandoned first.

use std::sync::Arc;
use std::time::Duration;

use lockstep_attest::{credential_file, quote_qualifying_data, CredentialChallenge};
use lockstep_protocol::{
    AttestEvidence, AttestIdentity, AttestTpm, ErrorKind, Frame, JobError, KeyProtection, Message,
    QuotedPcr,
};
use lockstep_tpm::{Tpm, TpmError};
use lockstep_transport::frames::FrameReader;

use crate::admission::{Budget, Reservation};
use crate::stream::{within, write_frame};

/// What an attestation may use.
pub struct Attestor {
    pub tpm: Tpm,
    /// The node's raw Ed25519 public key, bound into every quote.
    pub node_key: [u8; 32],
    pub protection: KeyProtection,
}

fn err(kind: ErrorKind, message: impl Into<String>) -> JobError {
    JobError {
        kind,
        message: message.into(),
    }
}

fn wire(e: impl std::fmt::Display) -> JobError {
    err(ErrorKind::BadFrame, e.to_string())
}

/// The refusal for a TPM failure; `answering` is whether the TPM was
/// working on the client's challenge (then a failure is the challenge's).
fn tpm_refusal(e: TpmError, answering: bool) -> JobError {
    let kind = match &e {
        TpmError::Absent { .. } => ErrorKind::NotAttestable,
        TpmError::Request(_) => ErrorKind::BadInput,
        TpmError::Failed { .. } if answering => ErrorKind::BadInput,
        _ => ErrorKind::Internal,
    };
    let message = match kind {
        ErrorKind::NotAttestable => format!("this node cannot attest: {e}"),
        ErrorKind::BadInput => format!("the TPM refused the challenge: {e}"),
        _ => format!("the node's TPM failed: {e}"),
    };
    err(kind, message)
}

/// Serves one attestation (the stream began with `AttestHello`).
pub async fn session(
    send: &mut quinn::SendStream,
    reader: &mut FrameReader,
    attestor: &Attestor,
    gate: &Arc<Budget>,
) -> Result<(), JobError> {
    if attestor.protection == KeyProtection::File {
        return Err(err(
            ErrorKind::NotAttestable,
            "this node's key is a file key: nothing to attest (start lockstepd with --sealed-identity to keep the key in the TPM)",
        ));
    }
    let held = gate.try_reserve(1).ok_or_else(|| {
        err(
            ErrorKind::Busy,
            "another attestation is in progress on this node; retry when it ends",
        )
    })?;
    let held = Arc::new(held);
    let limit = Duration::from_secs(lockstep_limits::ATTEST_TIMEOUT_S);
    within(limit, exchange(send, reader, attestor, held))
        .await
        .unwrap_or_else(|| {
            Err(err(
                ErrorKind::Timeout,
                format!(
                    "the attestation did not finish within {} s",
                    lockstep_limits::ATTEST_TIMEOUT_S
                ),
            ))
        })
}

async fn exchange(
    send: &mut quinn::SendStream,
    reader: &mut FrameReader,
    attestor: &Attestor,
    held: Arc<Reservation>,
) -> Result<(), JobError> {
    let tpm = attestor.tpm.clone();
    let gate = held.clone();
    let (session, identity) = smol::unblock(move || {
        let _gate = gate;
        tpm.begin()
    })
    .await
    .map_err(|e| tpm_refusal(e, false))?;
    let reply = Message::AttestIdentity(AttestIdentity {
        tpm: AttestTpm {
            ek_public: identity.ek_public,
            ek_certificate: identity.ek_certificate,
            ak_public: identity.ak_public,
        },
        key_protection: attestor.protection,
    });
    write_frame(send, &reply.to_frame()).await.map_err(wire)?;
    let challenge = match reader.next().await.map_err(wire)? {
        Some(Frame::Control(payload)) => {
            Message::decode(&payload).map_err(|e| err(e.error_kind(), e.to_string()))?
        }
        // The client went away: the session's directory goes with it.
        None => return Ok(()),
        Some(Frame::Data(_)) => return Err(wire("data where AttestChallenge was expected")),
    };
    let Message::AttestChallenge(challenge) = challenge else {
        return Err(wire(
            "after AttestIdentity the client sends AttestChallenge",
        ));
    };
    let credential = credential_file(&CredentialChallenge {
        id_object: challenge.id_object,
        encrypted_secret: challenge.encrypted_secret,
    });
    let qualifying = quote_qualifying_data(&challenge.nonce, &attestor.node_key);
    let evidence = smol::unblock(move || {
        let _gate = held;
        session.respond(&credential, qualifying, lockstep_limits::ATTEST_PCRS)
    })
    .await
    .map_err(|e| tpm_refusal(e, true))?;
    let reply = Message::AttestEvidence(AttestEvidence {
        quote: evidence.quote,
        signature: evidence.signature,
        pcrs: evidence
            .pcrs
            .iter()
            .map(|p| QuotedPcr {
                index: p.index,
                sha256: p.sha256,
            })
            .collect(),
        activated_secret: evidence.activated_secret,
    });
    write_frame(send, &reply.to_frame()).await.map_err(wire)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tpm_failures_are_typed_for_the_client() {
        let absent = tpm_refusal(
            TpmError::Absent {
                tcti: "device:/dev/tpmrm0".into(),
                reason: "gone".into(),
            },
            false,
        );
        assert_eq!(absent.kind, ErrorKind::NotAttestable);
        assert!(absent.message.contains("cannot attest"));
        let refused = TpmError::Failed {
            tool: "tpm2_activatecredential".into(),
            line: "ERROR: integrity check failed".into(),
        };
        assert_eq!(tpm_refusal(refused.clone(), true).kind, ErrorKind::BadInput);
        assert_eq!(tpm_refusal(refused, false).kind, ErrorKind::Internal);
        let missing = tpm_refusal(
            TpmError::ToolMissing {
                tool: "tpm2_createek".into(),
            },
            false,
        );
        assert_eq!(missing.kind, ErrorKind::Internal);
        assert!(missing.message.contains("tpm2-tools"));
    }

    #[test]
    fn the_gate_admits_one_attestation_at_a_time() {
        let gate = Budget::new(
            "attestation",
            lockstep_limits::MAX_ATTESTATIONS_IN_FLIGHT as u64,
        );
        let held = Arc::new(gate.try_reserve(1).unwrap());
        assert!(gate.try_reserve(1).is_none());
        // Held by the TPM work as well as the exchange: free only when
        // both are done.
        let work = held.clone();
        drop(held);
        assert!(gate.try_reserve(1).is_none());
        drop(work);
        assert_eq!(gate.used(), 0);
    }
}
