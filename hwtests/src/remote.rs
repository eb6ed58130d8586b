//! The remote form: ask a running node to run the suite on its own device
//! (the report comes back signed by its device key), and install a
//! certifier-signed report on a node.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use lockstep_certify::Report;
use lockstep_identity::{NodeId, Signature};
use lockstep_protocol::{CertifyRequest, Frame, InstallReport, Message};
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

/// Sends one message on a fresh stream and returns the node's answer.
async fn ask(addr: SocketAddr, pinned: &NodeId, message: Message) -> Result<Message, Failure> {
    let connection = lockstep_transport::connect(addr, pinned)
        .await
        .map_err(|e| net(&format!("connecting to {addr}"), e))?;
    let answer = async {
        let (mut send, recv) = connection
            .open_bi()
            .await
            .map_err(|e| net("opening a stream", e))?;
        write_frame(&mut send, &message.to_frame())
            .await
            .map_err(|e| net("sending the request", e))?;
        let _ = send.finish();
        let mut reader = FrameReader::new(recv);
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
    .await;
    connection.close(0u32.into(), b"done");
    answer
}

/// Runs the suite on the node; returns the report bytes and the node's
/// signature file (checked against the pinned node key).
pub(crate) fn run(
    node: &str,
    node_key: &NodeId,
    repeats: u32,
    quiet: bool,
) -> Result<(Vec<u8>, String), Failure> {
    let addr = addr(node)?;
    if !quiet {
        eprintln!(
            "asking node {addr} to run the suite on its device (this holds its worker for a while)"
        );
    }
    let reply = smol::block_on(ask(
        addr,
        node_key,
        Message::CertifyRequest(CertifyRequest { repeats }),
    ))?;
    let reply = match reply {
        Message::CertifyReport(r) => r,
        Message::Busy { retry_after_ms } => {
            return Err(net(
                "the node",
                format!("is busy; retry in {retry_after_ms} ms"),
            ))
        }
        Message::Rejected(e) => return Err(net("the node refused", e.message)),
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
    Ok((reply.report, reply.signature))
}

/// Sends a report and its certifier signature (REPORT.json.minisig) to a
/// node, which checks and stores it.
pub(crate) fn install(node: &str, node_key: &str, report: &Path) -> Result<ExitCode, Failure> {
    let addr = addr(node)?;
    let pinned = parse_public_key(node_key)?;
    let bytes = std::fs::read(report).map_err(|e| usage(format!("{}: {e}", report.display())))?;
    let sig_file = sig_path(report, ".minisig");
    let signature = std::fs::read_to_string(&sig_file)
        .map_err(|e| usage(format!("{}: {e}", sig_file.display())))?;
    Report::parse(&bytes).map_err(|e| usage(format!("{}: {e}", report.display())))?;
    let reply = smol::block_on(ask(
        addr,
        &pinned,
        Message::InstallReport(InstallReport {
            report: bytes,
            signature,
        }),
    ))?;
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
        Message::Rejected(e) => Err(usage(format!("the node refused the report: {}", e.message))),
        other => Err(net("the node", format!("answered {other:?}"))),
    }
}
