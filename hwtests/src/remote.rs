//! The remote form: ask a running node to run the suite on its own device
//! (the report comes back signed by its device key), and install a
//! certifier-signed report on a node.
//!
//! Both go through a certification session (lockstep_protocol::certify):
//! `CertifyHello`, the node's nonce, then the request with a statement
//! signed by the certifier key (`--key`) over the node id, that nonce and
//! exactly what is asked.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use lockstep_certify::Report;
use lockstep_identity::{NodeId, Signature, SigningKey};
use lockstep_protocol::{
    report_sha256, Authorization, CertifyAction, CertifyRequest, ErrorKind, Frame, InstallReport,
    JobError, Message,
};
use lockstep_transport::frames::{write_frame, FrameReader};

use crate::{parse_public_key, sig_path, usage, Failure};

fn addr(node: &str) -> Result<SocketAddr, Failure> {
    node.parse().map_err(|_| {
        usage(format!(
            "--node {node:?} is not ADDR:PORT (e.g. 192.0.2.7:4433)"
        ))
    })
}

fn net(what: &str, e: impl std::fmt::Display) -> Failure {
    Failure::Machine(anyhow::anyhow!("{what}: {e}"))
}

async fn next_message(reader: &mut FrameReader) -> Result<Message, Failure> {
    match reader
        .next()
        .await
        .map_err(|e| net("reading the reply", e))?
    {
        Some(Frame::Control(payload)) => {
            Message::decode(&payload).map_err(|e| net("the node's reply", e))
        }
        _ => Err(net("the node's reply", "no control message")),
    }
}

/// Runs one certification session on a fresh stream: asks for the node's
/// nonce, sends the request `make` builds over it, and returns the node's
/// answer.
async fn session(
    addr: SocketAddr,
    pinned: &NodeId,
    make: impl FnOnce(&[u8; 32]) -> Message,
) -> Result<Message, Failure> {
    let connection = lockstep_transport::connect(addr, pinned)
        .await
        .map_err(|e| net(&format!("connecting to {addr}"), e))?;
    let answer = async {
        let (mut send, recv) = connection
            .open_bi()
            .await
            .map_err(|e| net("opening a stream", e))?;
        let mut reader = FrameReader::new(recv);
        write_frame(&mut send, &Message::CertifyHello.to_frame())
            .await
            .map_err(|e| net("sending the request", e))?;
        let nonce = match next_message(&mut reader).await? {
            Message::CertifyChallenge(c) => c.nonce,
            Message::Rejected(e) => return Ok(Message::Rejected(e)),
            other => return Err(net("the node", format!("answered {other:?}"))),
        };
        write_frame(&mut send, &make(&nonce).to_frame())
            .await
            .map_err(|e| net("sending the request", e))?;
        let _ = send.finish();
        next_message(&mut reader).await
    }
    .await;
    connection.close(0u32.into(), b"done");
    answer
}

/// A refusal: the caller's to fix (exit 2) when it is about the request or
/// its authorization, else the machine's.
fn refused(what: &str, e: JobError) -> Failure {
    match e.kind {
        ErrorKind::Unauthorized | ErrorKind::BadInput => {
            usage(format!("the node refused {what}: {}", e.message))
        }
        _ => net(&format!("the node refused {what}"), e.message),
    }
}

/// Runs the suite on the node; returns the report bytes and the node's
/// signature file (checked against the pinned node key).
pub(crate) fn run(
    node: &str,
    node_key: &NodeId,
    key: &SigningKey,
    device: Option<u32>,
    repeats: u32,
    valid_days: u32,
    quiet: bool,
) -> Result<(Vec<u8>, String), Failure> {
    let addr = addr(node)?;
    if !quiet {
        eprintln!(
            "asking node {addr} to run the suite on its device {} (this holds that device's worker for a while)",
            device.unwrap_or(0)
        );
    }
    let node_id = node_key.to_base64();
    let reply = smol::block_on(session(addr, node_key, |nonce| {
        let action = CertifyAction::Run {
            repeats,
            valid_days,
            device,
        };
        Message::CertifyRequest(CertifyRequest {
            repeats,
            valid_days,
            device,
            auth: Authorization::sign(key, &node_id, nonce, action),
        })
    }))?;
    let reply = match reply {
        Message::CertifyReport(r) => r,
        Message::Busy { retry_after_ms } => {
            return Err(net(
                "the node",
                format!("is busy; retry in {retry_after_ms} ms"),
            ))
        }
        Message::Rejected(e) => return Err(refused("the suite run", e)),
        other => return Err(net("the node", format!("answered {other:?}"))),
    };
    let sig =
        Signature::parse(&reply.signature).map_err(|e| net("the node's report signature", e))?;
    sig.verify(node_key, &reply.report)
        .map_err(|e| net("the node's report signature", e))?;
    let report = Report::parse(&reply.report).map_err(|e| net("the node's report", e))?;
    if report.node.as_deref() != Some(node_key.to_base64().as_str()) {
        return Err(net(
            "the node's report",
            "names another node than the one pinned",
        ));
    }
    // The certifier signs what the node wrote: the validity must be the
    // one asked for, not one the node chose.
    let validity = report
        .expires_unix()
        .and_then(|e| report.finished_unix().map(|f| e.saturating_sub(f)));
    if validity != Ok(u64::from(valid_days) * 86_400) {
        return Err(net(
            "the node's report",
            format!(
                "is valid from {} to {}, not the {valid_days} days asked for",
                report.finished_at, report.expires_at
            ),
        ));
    }
    Ok((reply.report, reply.signature))
}

/// Sends a report and its certifier signature (REPORT.json.minisig) to a
/// node, which checks and stores it; the request is signed by `key`.
pub(crate) fn install(
    node: &str,
    node_key: &str,
    key: &SigningKey,
    report: &Path,
) -> Result<ExitCode, Failure> {
    let addr = addr(node)?;
    let pinned = parse_public_key(node_key)?;
    let bytes = std::fs::read(report).map_err(|e| usage(format!("{}: {e}", report.display())))?;
    let sig_file = sig_path(report, ".minisig");
    let signature = std::fs::read_to_string(&sig_file)
        .map_err(|e| usage(format!("{}: {e}", sig_file.display())))?;
    Report::parse(&bytes).map_err(|e| usage(format!("{}: {e}", report.display())))?;
    let node_id = pinned.to_base64();
    let reply = smol::block_on(session(addr, &pinned, |nonce| {
        let action = CertifyAction::Install {
            report_sha256: report_sha256(&bytes),
        };
        Message::InstallReport(InstallReport {
            auth: Authorization::sign(key, &node_id, nonce, action),
            report: bytes,
            signature,
        })
    }))?;
    match reply {
        Message::Installed(i) => {
            println!(
                "installed on {addr}: certified {} ({})",
                if i.certified { "yes" } else { "no" },
                i.message
            );
            Ok(if i.certified {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Message::Rejected(e) => Err(refused("the report", e)),
        other => Err(net("the node", format!("answered {other:?}"))),
    }
}
