//! The network side of certification: one certification session per
//! stream (`CertifyHello`, the node's nonce, then one request signed over
//! it by an operator or a trusted certifier; lockstep_protocol::certify),
//! a remote suite run queued for the worker (bounded by the certify
//! timeout), and report installation.

use std::time::Instant;

use crate::stream::write_frame;
use embassy_sync::channel::TrySendError;
use lockstep_identity::NodeId;
use lockstep_protocol::{
    verify_authorization, Authorization, CertifyAction, CertifyChallenge, CertifyRequest,
    ErrorKind, Frame, InstallReport, Installed, JobError, Message,
};
use lockstep_transport::frames::FrameReader;
use rand_core::RngCore;

use crate::certification::{now_unix, timeout, CertifyJob};
use crate::stream::Shared;
use crate::worker::Work;

fn err(kind: ErrorKind, message: impl Into<String>) -> JobError {
    JobError {
        kind,
        message: message.into(),
    }
}

fn wire(e: impl std::fmt::Display) -> JobError {
    err(ErrorKind::BadFrame, e.to_string())
}

/// Serves one certification session: issues a nonce, then runs or
/// installs only for a request signed over it by a key this node trusts
/// for certification (an operator key, or a trusted certifier key).
pub async fn session(
    send: &mut quinn::SendStream,
    reader: &mut FrameReader,
    shared: &Shared,
) -> Result<(), JobError> {
    // The nonce lives only in this task: a request recorded on another
    // stream names a nonce this session never issued.
    let mut nonce = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut nonce);
    let challenge = Message::CertifyChallenge(CertifyChallenge { nonce });
    write_frame(send, &challenge.to_frame())
        .await
        .map_err(wire)?;
    let request = match reader.next().await.map_err(wire)? {
        Some(Frame::Control(payload)) => {
            Message::decode(&payload).map_err(|e| err(e.error_kind(), e.to_string()))?
        }
        // The requester went away without asking: nothing to do.
        None => return Ok(()),
        Some(Frame::Data(_)) => return Err(wire("data before the certification request")),
    };
    match request {
        Message::CertifyRequest(r) => {
            let by = authorize(shared, &nonce, &r.auth, &r.action())?;
            tracing::info!(by = %by.key_id_hex(), repeats = r.repeats, valid_days = r.valid_days, "certification run authorized");
            certify(send, shared, r).await
        }
        Message::InstallReport(r) => {
            let by = authorize(shared, &nonce, &r.auth, &r.action())?;
            tracing::info!(by = %by.key_id_hex(), "report install authorized");
            install(send, shared, r).await
        }
        _ => Err(wire(
            "after CertifyChallenge the requester sends CertifyRequest or InstallReport",
        )),
    }
}

/// The refusal for a certification request sent without a session: it
/// cannot name a nonce this node issued.
pub fn unsessioned() -> JobError {
    err(
        ErrorKind::Unauthorized,
        "a certification request must be signed over a nonce this node issued: send CertifyHello first, then the signed request (lockstep-certify --key does)",
    )
}

/// Who may certify: this node's operators and its trusted certifiers.
fn authorize(
    shared: &Shared,
    nonce: &[u8; 32],
    auth: &Authorization,
    action: &CertifyAction,
) -> Result<NodeId, JobError> {
    let mut trusted = shared.admin.trusted();
    // Every device's certification trusts the same certifier keys.
    trusted.extend(
        shared.devices.all()[0]
            .certification
            .trusted()
            .iter()
            .cloned(),
    );
    verify_authorization(auth, &trusted, &shared.node_id, nonce, action)
        .map_err(|e| err(ErrorKind::Unauthorized, e.to_string()))
}

/// Runs the suite on this node's device and answers with the report signed
/// by the device key.
async fn certify(
    send: &mut quinn::SendStream,
    shared: &Shared,
    request: CertifyRequest,
) -> Result<(), JobError> {
    let index = request.device.unwrap_or(0);
    let Some(device) = shared.devices.all().get(index as usize) else {
        return Err(err(
            ErrorKind::NoSuchDevice,
            format!(
                "this node has no device {index}; it has {} (see `lockstep status`)",
                shared.devices.all().len()
            ),
        ));
    };
    if let Some(problem) = device.problem() {
        return Err(err(
            ErrorKind::NoSuchDevice,
            format!("device {index} is out of service: {problem}"),
        ));
    }
    // One run at a time per device UUID holds a device; jobs keep the
    // other queue slots. The turn travels with the job and is freed when
    // the run ends.
    let Some(turn) = device.certification.try_turn() else {
        let busy = Message::Busy {
            retry_after_ms: 10_000,
        };
        write_frame(send, &busy.to_frame()).await.map_err(wire)?;
        return Ok(());
    };
    let (reply, outcome) = smol::channel::bounded(1);
    let job = CertifyJob {
        repeats: request.repeats,
        valid_days: request.valid_days,
        reply,
        deadline: Instant::now() + timeout(),
        turn,
    };
    // A full queue hands the job back and drops it here, turn and all.
    if let Err(TrySendError::Full(_)) = device.queue.try_send(Work::Certify(job)) {
        let busy = Message::Busy {
            retry_after_ms: 1000,
        };
        write_frame(send, &busy.to_frame()).await.map_err(wire)?;
        return Ok(());
    }
    let result = crate::stream::within(timeout(), outcome.recv()).await;
    let Some(Ok(result)) = result else {
        return Err(err(
            ErrorKind::Timeout,
            format!(
                "the certification suite ran past {} s on this node; check the device (a hung driver?)",
                timeout().as_secs()
            ),
        ));
    };
    let reply = result?;
    write_frame(send, &Message::CertifyReport(reply).to_frame())
        .await
        .map_err(wire)
}

/// Checks and stores a certifier-signed report.
async fn install(
    send: &mut quinn::SendStream,
    shared: &Shared,
    request: InstallReport,
) -> Result<(), JobError> {
    // A report binds one device UUID: it goes to the devices with that
    // UUID (one certification), and is refused if it binds none.
    let bundle_id = shared.current_bundle_id();
    let now = now_unix();
    let mut first_refusal = None;
    let mut installed = None;
    for certification in shared.devices.certifications() {
        match certification.install(&request.report, &request.signature, &bundle_id, now) {
            Ok(v) => {
                installed = Some(v);
                break;
            }
            Err(m) => {
                first_refusal.get_or_insert(m);
            }
        }
    }
    let verdict = installed.ok_or_else(|| {
        err(
            ErrorKind::BadInput,
            first_refusal.unwrap_or_else(|| "no device to install the report for".into()),
        )
    })?;
    let installed = Message::Installed(Installed {
        certified: verdict.certified,
        message: verdict.reason,
    });
    write_frame(send, &installed.to_frame()).await.map_err(wire)
}
