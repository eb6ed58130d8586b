//! The network side of certification: a remote suite run queued for the
//! worker (bounded by the certify timeout), and report installation.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::stream::write_frame;
use embassy_sync::channel::TrySendError;
use lockstep_protocol::{CertifyRequest, ErrorKind, InstallReport, Installed, JobError, Message};

use crate::certification::{timeout, CertifyJob};
use crate::stream::Shared;
use crate::worker::Work;

fn err(kind: ErrorKind, message: impl Into<String>) -> JobError {
    JobError {
        kind,
        message: message.into(),
    }
}

fn wire(e: lockstep_transport::frames::WireError) -> JobError {
    err(ErrorKind::BadFrame, e.to_string())
}

/// Set while a suite run is queued or running: anyone may ask for one (the
/// report proves nothing until a trusted certifier signs it), so at most
/// one at a time may hold the device, and jobs keep the other queue slots.
static CERTIFYING: AtomicBool = AtomicBool::new(false);

/// Clears [`CERTIFYING`] however the request ends.
struct Turn;

impl Drop for Turn {
    fn drop(&mut self) {
        CERTIFYING.store(false, Ordering::SeqCst);
    }
}

/// Runs the suite on this node's device and answers with the report signed
/// by the device key.
pub async fn certify(
    send: &mut quinn::SendStream,
    shared: &Shared,
    request: CertifyRequest,
) -> Result<(), JobError> {
    if CERTIFYING.swap(true, Ordering::SeqCst) {
        let busy = Message::Busy {
            retry_after_ms: 10_000,
        };
        write_frame(send, &busy.to_frame()).await.map_err(wire)?;
        return Ok(());
    }
    let _turn = Turn;
    let (reply, outcome) = smol::channel::bounded(1);
    let job = CertifyJob {
        repeats: request.repeats,
        reply,
        deadline: Instant::now() + timeout(),
    };
    if let Err(TrySendError::Full(_)) = shared.queue.try_send(Work::Certify(job)) {
        let busy = Message::Busy {
            retry_after_ms: 1000,
        };
        write_frame(send, &busy.to_frame()).await.map_err(wire)?;
        return Ok(());
    }
    let expire = async {
        smol::Timer::after(timeout()).await;
        None
    };
    let result = smol::future::or(async { outcome.recv().await.ok() }, expire).await;
    let Some(result) = result else {
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
pub async fn install(
    send: &mut quinn::SendStream,
    shared: &Shared,
    request: InstallReport,
) -> Result<(), JobError> {
    let verdict = shared
        .certification
        .install(
            &request.report,
            &request.signature,
            &shared.current_bundle_id(),
        )
        .map_err(|m| err(ErrorKind::BadInput, m))?;
    let installed = Message::Installed(Installed {
        certified: verdict.certified,
        message: verdict.reason,
    });
    write_frame(send, &installed.to_frame()).await.map_err(wire)
}
