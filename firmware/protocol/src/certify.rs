//! Certification messages: a certifier asks a node to run the suite on its
//! own device, and installs a report on it (hwtests/,
//! docs/certification.md).
//!
//! Both are authorized requests. One certification session is one stream:
//!
//! 1. requester → node `CertifyHello`.
//! 2. node → requester [`CertifyChallenge`]: a fresh random nonce, kept
//!    only by this stream's task.
//! 3. requester → node [`CertifyRequest`] or [`InstallReport`], carrying an
//!    [`Authorization`]: a [`CertifyStatement`] (node id, the session's
//!    nonce, the action with its parameters; for an install the report's
//!    SHA-256) as canonical JSON, signed by an operator key or a trusted
//!    certifier key of the node.
//! 4. node → requester `CertifyReport` / `Installed`, or a typed
//!    `Rejected` (`Unauthorized` when the authorization fails).
//!
//! A recorded request replayed on another stream names a nonce that stream
//! never issued, and is refused; the connection is pinned to the node key,
//! so the nonce needs no signature of its own.

use lockstep_identity::{NodeId, Signature, SignatureError, SigningKey};
use lockstep_limits::{
    MAX_CERTIFICATION_VALIDITY_DAYS, MAX_CERTIFY_STATEMENT_BYTES, MAX_PUBLIC_KEY_TEXT_BYTES,
    MAX_REPORT_BYTES, MAX_SIGNATURE_FILE_BYTES, MAX_STABILITY_REPEATS,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// `format` of a [`CertifyStatement`].
pub const CERTIFY_REQUEST_FORMAT: &str = "lockstep-certify-request/1";

/// Node → requester: the nonce this session's request must be signed over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertifyChallenge {
    pub nonce: [u8; 32],
}

/// What a signed certification request asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum CertifyAction {
    /// Run the suite on the device; the report expires `valid_days` after
    /// the run. `device`: which of the node's devices (by index; absent:
    /// the first), so the statement a certifier signs names it.
    Run {
        repeats: u32,
        valid_days: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        device: Option<u32>,
    },
    /// Install the report whose bytes have this SHA-256 (hex).
    Install { report_sha256: String },
}

impl std::fmt::Display for CertifyAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CertifyAction::Run {
                repeats,
                valid_days,
                device,
            } => write!(
                f,
                "a suite run on device {} ({repeats} repeats, valid {valid_days} days)",
                device.unwrap_or(0)
            ),
            CertifyAction::Install { report_sha256 } => write!(
                f,
                "installing report {}",
                report_sha256.get(..16).unwrap_or(report_sha256)
            ),
        }
    }
}

/// The signed part of a certification request (canonical JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertifyStatement {
    pub format: String,
    /// The addressed node's id (minisign public key, base64).
    pub node: String,
    /// Hex of the nonce the node issued for this session.
    pub nonce: String,
    pub action: CertifyAction,
}

/// A statement, its signer's public key and the signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authorization {
    /// The signer's minisign public key (base64 or a `.pub` file's text).
    pub signer: String,
    /// Canonical JSON of a [`CertifyStatement`].
    pub statement: Vec<u8>,
    /// minisign signature file of `statement` by `signer`.
    pub signature: String,
}

/// The SHA-256 (hex) of report bytes, as an install statement names it.
pub fn report_sha256(report: &[u8]) -> String {
    hex::encode(Sha256::digest(report))
}

impl Authorization {
    /// Signs `action` for node `node` (base64 id) in the session that
    /// issued `nonce`.
    pub fn sign(
        key: &SigningKey,
        node: &str,
        nonce: &[u8; 32],
        action: CertifyAction,
    ) -> Authorization {
        let comment = format!("lockstep certification request: {action}");
        let statement = CertifyStatement {
            format: CERTIFY_REQUEST_FORMAT.into(),
            node: node.into(),
            nonce: hex::encode(nonce),
            action,
        };
        let statement = lockstep_canonical_json::to_vec(&statement)
            .expect("statements hold only strings and integers");
        let signature = key.sign_minisign(&statement, &comment).to_file();
        Authorization {
            signer: key.public().to_base64(),
            statement,
            signature,
        }
    }
}

/// Why a certification request is not authorized. Messages say what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the request's authorization is not valid ({0}); sign it with lockstep-certify --key")]
    Malformed(String),
    #[error("key {signer} is neither an operator nor a trusted certifier of this node (it trusts {trusted}); sign with one of those keys")]
    Untrusted { signer: String, trusted: String },
    #[error("the request's signature does not verify ({0}); sign the request again")]
    BadSignature(String),
    #[error(
        "the request is addressed to node {named}, not to this node; connect to the node it names"
    )]
    OtherNode { named: String },
    #[error("the request's nonce is not the one this session issued: a replayed or stale request; start a new session")]
    StaleNonce,
    #[error(
        "the signature authorizes {signed}, but the request asks for {asked}; sign what you send"
    )]
    OtherAction { signed: String, asked: String },
}

/// Checks that `auth` is a statement signed by one of `trusted`, addressed
/// to `node` (base64 id), over `nonce`, authorizing exactly `action`;
/// returns the signer.
pub fn verify_authorization(
    auth: &Authorization,
    trusted: &[NodeId],
    node: &str,
    nonce: &[u8; 32],
    action: &CertifyAction,
) -> Result<NodeId, AuthError> {
    let signer = NodeId::parse(&auth.signer)
        .map_err(|e| AuthError::Malformed(format!("the signer is not a minisign key: {e}")))?;
    if !trusted.contains(&signer) {
        return Err(AuthError::Untrusted {
            signer: signer.key_id_hex(),
            trusted: if trusted.is_empty() {
                "no key".into()
            } else {
                trusted
                    .iter()
                    .map(|k| k.key_id_hex())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        });
    }
    Signature::parse(&auth.signature)
        .and_then(|s| s.verify(&signer, &auth.statement))
        .map_err(|e: SignatureError| AuthError::BadSignature(e.to_string()))?;
    let statement: CertifyStatement = serde_json::from_slice(&auth.statement)
        .map_err(|e| AuthError::Malformed(format!("the statement: {e}")))?;
    if statement.format != CERTIFY_REQUEST_FORMAT {
        return Err(AuthError::Malformed(format!(
            "statement format {:?}, this node speaks {CERTIFY_REQUEST_FORMAT:?}",
            statement.format
        )));
    }
    if statement.node != node {
        return Err(AuthError::OtherNode {
            named: statement.node,
        });
    }
    if statement.nonce != hex::encode(nonce) {
        return Err(AuthError::StaleNonce);
    }
    if statement.action != *action {
        return Err(AuthError::OtherAction {
            signed: statement.action.to_string(),
            asked: action.to_string(),
        });
    }
    Ok(signer)
}

/// Requester → node (after the challenge): run the certification suite on
/// your device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertifyRequest {
    /// Repetitions of the stability job (1 to `MAX_STABILITY_REPEATS`).
    pub repeats: u32,
    /// Days the report is valid after the run (1 to
    /// `MAX_CERTIFICATION_VALIDITY_DAYS`).
    pub valid_days: u32,
    /// Which device runs the suite (its index); `None`: the first. v7.
    pub device: Option<u32>,
    /// Signed [`CertifyAction::Run`] with these parameters.
    pub auth: Authorization,
}

impl CertifyRequest {
    /// The action the authorization must sign.
    pub fn action(&self) -> CertifyAction {
        CertifyAction::Run {
            repeats: self.repeats,
            valid_days: self.valid_days,
            device: self.device,
        }
    }
}

/// Node → certifier: the report (canonical JSON) and the node's signature
/// of it with its device key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertifyReply {
    pub report: Vec<u8>,
    pub signature: String,
}

/// Requester → node (after the challenge): install this report, signed by
/// a certifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallReport {
    pub report: Vec<u8>,
    pub signature: String,
    /// Signed [`CertifyAction::Install`] naming the report's SHA-256.
    pub auth: Authorization,
}

impl InstallReport {
    /// The action the authorization must sign.
    pub fn action(&self) -> CertifyAction {
        CertifyAction::Install {
            report_sha256: report_sha256(&self.report),
        }
    }
}

/// Node → certifier: the node's certification after the install.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installed {
    pub certified: bool,
    /// One line: who certified the node.
    pub message: String,
}

fn check_report(report: &[u8], signature: &str) -> Result<(), String> {
    if report.len() > MAX_REPORT_BYTES {
        return Err(format!(
            "a certification report of {} bytes; the bound is {MAX_REPORT_BYTES}",
            report.len()
        ));
    }
    if signature.len() > MAX_SIGNATURE_FILE_BYTES {
        return Err(format!(
            "a signature of {} bytes; the bound is {MAX_SIGNATURE_FILE_BYTES}",
            signature.len()
        ));
    }
    Ok(())
}

fn check_auth(a: &Authorization) -> Result<(), String> {
    if a.signer.len() > MAX_PUBLIC_KEY_TEXT_BYTES {
        return Err(format!(
            "a signer key of {} bytes; the bound is {MAX_PUBLIC_KEY_TEXT_BYTES}",
            a.signer.len()
        ));
    }
    if a.statement.len() > MAX_CERTIFY_STATEMENT_BYTES {
        return Err(format!(
            "a request statement of {} bytes; the bound is {MAX_CERTIFY_STATEMENT_BYTES}",
            a.statement.len()
        ));
    }
    if a.signature.len() > MAX_SIGNATURE_FILE_BYTES {
        return Err(format!(
            "a request signature of {} bytes; the bound is {MAX_SIGNATURE_FILE_BYTES}",
            a.signature.len()
        ));
    }
    Ok(())
}

pub(crate) fn check_request(r: &CertifyRequest) -> Result<(), String> {
    if r.repeats == 0 || r.repeats > MAX_STABILITY_REPEATS {
        return Err(format!(
            "{} stability repeats; ask for 1 to {MAX_STABILITY_REPEATS}",
            r.repeats
        ));
    }
    if r.valid_days == 0 || r.valid_days > MAX_CERTIFICATION_VALIDITY_DAYS {
        return Err(format!(
            "a validity of {} days; ask for 1 to {MAX_CERTIFICATION_VALIDITY_DAYS}",
            r.valid_days
        ));
    }
    check_auth(&r.auth)
}

pub(crate) fn check_reply(r: &CertifyReply) -> Result<(), String> {
    check_report(&r.report, &r.signature)
}

pub(crate) fn check_install(r: &InstallReport) -> Result<(), String> {
    check_report(&r.report, &r.signature)?;
    check_auth(&r.auth)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Frame, Message, MessageError};

    fn decode(m: &Message) -> Result<Message, MessageError> {
        let Frame::Control(payload) = m.to_frame() else {
            panic!("control frame expected")
        };
        Message::decode(&payload)
    }

    fn auth() -> Authorization {
        Authorization {
            signer: "key".into(),
            statement: b"{}".to_vec(),
            signature: "sig".into(),
        }
    }

    #[test]
    fn certification_messages_round_trip() {
        let messages = [
            Message::CertifyHello,
            Message::CertifyChallenge(CertifyChallenge { nonce: [7; 32] }),
            Message::CertifyRequest(CertifyRequest {
                repeats: 3,
                valid_days: 90,
                device: None,
                auth: auth(),
            }),
            Message::CertifyReport(CertifyReply {
                report: b"{}".to_vec(),
                signature: "sig".into(),
            }),
            Message::InstallReport(InstallReport {
                report: b"{}".to_vec(),
                signature: "sig".into(),
                auth: auth(),
            }),
            Message::Installed(Installed {
                certified: true,
                message: "certified by X".into(),
            }),
        ];
        for m in messages {
            assert_eq!(decode(&m).unwrap(), m);
        }
    }

    #[test]
    fn oversized_reports_repeats_validity_and_authorizations_are_refused_at_decode() {
        let big = Message::InstallReport(InstallReport {
            report: vec![b' '; MAX_REPORT_BYTES + 1],
            signature: String::new(),
            auth: auth(),
        });
        assert!(matches!(decode(&big), Err(MessageError::Bound(_))));
        let sig = Message::CertifyReport(CertifyReply {
            report: Vec::new(),
            signature: "x".repeat(MAX_SIGNATURE_FILE_BYTES + 1),
        });
        assert!(matches!(decode(&sig), Err(MessageError::Bound(_))));
        for (repeats, valid_days) in [
            (0, 1),
            (MAX_STABILITY_REPEATS + 1, 1),
            (1, 0),
            (1, MAX_CERTIFICATION_VALIDITY_DAYS + 1),
        ] {
            let m = Message::CertifyRequest(CertifyRequest {
                repeats,
                valid_days,
                device: None,
                auth: auth(),
            });
            assert!(matches!(decode(&m), Err(MessageError::Bound(_))));
        }
        let mut long = auth();
        long.statement = vec![b' '; MAX_CERTIFY_STATEMENT_BYTES + 1];
        let m = Message::InstallReport(InstallReport {
            report: Vec::new(),
            signature: String::new(),
            auth: long,
        });
        assert!(matches!(decode(&m), Err(MessageError::Bound(_))));
        let mut long = auth();
        long.signer = "k".repeat(MAX_PUBLIC_KEY_TEXT_BYTES + 1);
        let m = Message::CertifyRequest(CertifyRequest {
            repeats: 1,
            valid_days: 1,
            device: None,
            auth: long,
        });
        assert!(matches!(decode(&m), Err(MessageError::Bound(_))));
    }

    const NODE: &str = "RWQnode";

    fn run() -> CertifyAction {
        CertifyAction::Run {
            repeats: 2,
            valid_days: 30,
            device: None,
        }
    }

    #[test]
    fn a_signed_request_verifies_only_for_its_node_nonce_action_and_trusted_signer() {
        let certifier = SigningKey::generate();
        let trusted = [certifier.public().clone()];
        let nonce = [5; 32];
        let a = Authorization::sign(&certifier, NODE, &nonce, run());
        assert_eq!(
            verify_authorization(&a, &trusted, NODE, &nonce, &run()).unwrap(),
            *certifier.public()
        );
        // Replayed in another session: that session issued another nonce.
        assert_eq!(
            verify_authorization(&a, &trusted, NODE, &[6; 32], &run()),
            Err(AuthError::StaleNonce)
        );
        // Sent to another node.
        assert!(matches!(
            verify_authorization(&a, &trusted, "RWQother", &nonce, &run()),
            Err(AuthError::OtherNode { .. })
        ));
        // Used for another action (more repeats than signed for).
        let more = CertifyAction::Run {
            repeats: 64,
            valid_days: 30,
            device: None,
        };
        assert!(matches!(
            verify_authorization(&a, &trusted, NODE, &nonce, &more),
            Err(AuthError::OtherAction { .. })
        ));
        // A stranger's key, however well it signs.
        let stranger = SigningKey::generate();
        let s = Authorization::sign(&stranger, NODE, &nonce, run());
        assert!(matches!(
            verify_authorization(&s, &trusted, NODE, &nonce, &run()),
            Err(AuthError::Untrusted { .. })
        ));
        // A trusted signer named over a stranger's signature.
        let forged = Authorization {
            signer: certifier.public().to_base64(),
            ..s.clone()
        };
        assert!(matches!(
            verify_authorization(&forged, &trusted, NODE, &nonce, &run()),
            Err(AuthError::BadSignature(_))
        ));
        // Unsigned.
        let unsigned = Authorization {
            signature: String::new(),
            ..a.clone()
        };
        assert!(matches!(
            verify_authorization(&unsigned, &trusted, NODE, &nonce, &run()),
            Err(AuthError::BadSignature(_))
        ));
        assert!(matches!(
            verify_authorization(&a, &[], NODE, &nonce, &run()),
            Err(AuthError::Untrusted { .. })
        ));
    }

    #[test]
    fn an_install_authorization_binds_the_report_bytes() {
        let operator = SigningKey::generate();
        let trusted = [operator.public().clone()];
        let nonce = [1; 32];
        let request = InstallReport {
            report: b"{\"a\":1}".to_vec(),
            signature: String::new(),
            auth: Authorization::sign(
                &operator,
                NODE,
                &nonce,
                CertifyAction::Install {
                    report_sha256: report_sha256(b"{\"a\":1}"),
                },
            ),
        };
        verify_authorization(&request.auth, &trusted, NODE, &nonce, &request.action()).unwrap();
        let swapped = InstallReport {
            report: b"{\"a\":2}".to_vec(),
            ..request
        };
        assert!(matches!(
            verify_authorization(&swapped.auth, &trusted, NODE, &nonce, &swapped.action()),
            Err(AuthError::OtherAction { .. })
        ));
    }
}
