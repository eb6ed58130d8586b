//! Certification messages: a certifier asks a node to run the suite on its
//! own device, and installs a passing report on it (hwtests/,
//! docs/certification.md).

use lockstep_limits::{MAX_REPORT_BYTES, MAX_SIGNATURE_FILE_BYTES, MAX_STABILITY_REPEATS};
use serde::{Deserialize, Serialize};

/// Certifier → node: run the certification suite on your device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertifyRequest {
    /// Repetitions of the stability job (1 to `MAX_STABILITY_REPEATS`).
    pub repeats: u32,
}

/// Node → certifier: the report (canonical JSON) and the node's signature
/// of it with its device key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertifyReply {
    pub report: Vec<u8>,
    pub signature: String,
}

/// Certifier → node: install this report, signed by the certifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallReport {
    pub report: Vec<u8>,
    pub signature: String,
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

pub(crate) fn check_request(r: &CertifyRequest) -> Result<(), String> {
    if r.repeats == 0 || r.repeats > MAX_STABILITY_REPEATS {
        return Err(format!(
            "{} stability repeats; ask for 1 to {MAX_STABILITY_REPEATS}",
            r.repeats
        ));
    }
    Ok(())
}

pub(crate) fn check_reply(r: &CertifyReply) -> Result<(), String> {
    check_report(&r.report, &r.signature)
}

pub(crate) fn check_install(r: &InstallReport) -> Result<(), String> {
    check_report(&r.report, &r.signature)
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

    #[test]
    fn certification_messages_round_trip() {
        let messages = [
            Message::CertifyRequest(CertifyRequest { repeats: 3 }),
            Message::CertifyReport(CertifyReply {
                report: b"{}".to_vec(),
                signature: "sig".into(),
            }),
            Message::InstallReport(InstallReport {
                report: b"{}".to_vec(),
                signature: "sig".into(),
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
    fn oversized_reports_and_repeats_are_refused_at_decode() {
        let big = Message::InstallReport(InstallReport {
            report: vec![b' '; MAX_REPORT_BYTES + 1],
            signature: String::new(),
        });
        assert!(matches!(decode(&big), Err(MessageError::Bound(_))));
        let sig = Message::CertifyReport(CertifyReply {
            report: Vec::new(),
            signature: "x".repeat(MAX_SIGNATURE_FILE_BYTES + 1),
        });
        assert!(matches!(decode(&sig), Err(MessageError::Bound(_))));
        for repeats in [0, MAX_STABILITY_REPEATS + 1] {
            let m = Message::CertifyRequest(CertifyRequest { repeats });
            assert!(matches!(decode(&m), Err(MessageError::Bound(_))));
        }
    }
}
