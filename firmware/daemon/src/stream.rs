//! One job stream: status requests answered at once, submissions received,
//! validated, queued for the worker (or refused as busy), and answered with
//! outputs and the signed receipt.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use embassy_sync::channel::TrySendError;
use lockstep_program::{validate, Program, ValidateOptions};
use lockstep_protocol::{
    check_reference, header, tensor_chunks, ErrorKind, Frame, JobError, JobRequest, JobResult,
    Message, NodeStatus, TensorReceiver,
};

use crate::admission::Peer;
use crate::worker::{Job, Work};
use lockstep_protocol::FrameError;
use lockstep_transport::frames::{write_frame_within, FrameReader, WireError};

/// Writes one frame to a stranger, giving up (and so freeing whatever the
/// stream holds) when the peer has not taken it within
/// `WRITE_STALL_TIMEOUT_MS`. Every reply a node sends goes through here.
pub async fn write_frame(
    send: &mut quinn::SendStream,
    frame: &lockstep_protocol::Frame,
) -> Result<(), WireError> {
    let limit = Duration::from_millis(lockstep_limits::WRITE_STALL_TIMEOUT_MS);
    write_frame_within(send, frame, limit).await
}

/// `fut`'s output, or `None` if it has not finished within `limit`: every
/// wait on a stranger (or on the worker for a stranger) is bounded.
pub async fn within<T>(limit: Duration, fut: impl std::future::Future<Output = T>) -> Option<T> {
    smol::future::or(async { Some(fut.await) }, async {
        smol::Timer::after(limit).await;
        None
    })
    .await
}

/// QUIC stream error code when the node resets a stream whose peer
/// stalled (stopped reading, or stopped sending mid-frame).
const RESET_STALLED: u32 = 2;

/// What every stream handler shares.
pub struct Shared {
    /// The node's devices: each with its queue, counters, certification
    /// and whether it serves (devices.rs).
    pub devices: Arc<crate::devices::Devices>,
    /// The node's metrics (lockstep-metrics), read by `AdminAction::Metrics`.
    pub metrics: Arc<lockstep_metrics::NodeMetrics>,
    pub node_id: String,
    /// The chain key and the device key, for receipts' second signature
    /// and `SignRegistration` (chain_identity.rs).
    pub chain: Arc<crate::chain_identity::NodeChain>,
    /// The active bundle (id, version, rollback floor); only the worker's
    /// bundle switch changes it (bundle_switch.rs).
    pub active: Arc<crate::bundle_store::ActiveBundle>,
    pub started: Instant,
    pub job_timeout: Duration,
    pub memory_limit: u64,
    /// Streams being served now (shutdown waits for them).
    pub in_flight: AtomicUsize,
    /// Set on SIGTERM: new jobs are refused, running ones finish.
    pub stopping: AtomicBool,
    /// Fleet trust, admin sessions and the bundle store.
    pub admin: Arc<crate::admin::AdminState>,
    /// Retained evidence of past jobs, served to spot checks and disputes.
    pub retention: Arc<crate::retention::Retention>,
    /// What strangers may make the node hold (admission.rs).
    pub budgets: Arc<crate::admission::NodeBudgets>,
    /// The TPM, the node key and its protection: all an attestation gets.
    pub attestor: Arc<crate::attest_stream::Attestor>,
}

impl Shared {
    pub fn current_bundle_id(&self) -> String {
        self.active.id()
    }

    /// Whether receipts (and status) say this node is certified: on one
    /// device at least.
    pub fn certified(&self) -> bool {
        self.devices.any_certified(&self.current_bundle_id())
    }
}

/// Counts a stream as in flight for as long as it lives.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn err(kind: ErrorKind, message: impl Into<String>) -> JobError {
    JobError {
        kind,
        message: message.into(),
    }
}

/// The typed refusal for a wire failure: a frame refused at admission is
/// `Busy` (retry later), a stalled peer a `Timeout`, anything else a
/// `BadFrame`.
pub fn wire(e: WireError) -> JobError {
    let kind = match &e {
        WireError::Frame(FrameError::Refused(_)) => ErrorKind::Busy,
        WireError::Stalled(_) => ErrorKind::Timeout,
        _ => ErrorKind::BadFrame,
    };
    err(kind, e.to_string())
}

/// Whether a refusal is the peer's stream failing under us (it reset or
/// stopped the stream, or stalled a read or write past its limit): then
/// nothing more can be said to it, and the stream is reset at once. The
/// test is on the wire error's own words, which `wire` passes through
/// unchanged (see `WireError`), so a refusal that merely mentions them
/// ("installed") is not mistaken for one.
fn peer_gone(e: &JobError) -> bool {
    const GONE: [&str; 3] = [
        "the peer stopped reading or reset the stream",
        "the peer stalled",
        "cannot send",
    ];
    matches!(e.kind, ErrorKind::BadFrame | ErrorKind::Timeout)
        && GONE.iter().any(|p| e.message.starts_with(p))
}

/// Serves one stream; any failure is answered with a typed `Rejected` (or
/// `Busy`), unless the peer is gone or stalled, when the stream is reset.
pub async fn handle(
    mut send: quinn::SendStream,
    recv: quinn::RecvStream,
    shared: Arc<Shared>,
    peer: Peer,
) {
    shared.in_flight.fetch_add(1, Ordering::SeqCst);
    let _in_flight = InFlight(&shared.in_flight);
    let mut reader = FrameReader::guarded(
        recv,
        peer.frame_admission(),
        Duration::from_millis(lockstep_limits::FRAME_READ_TIMEOUT_MS),
    );
    let answer = match serve(&mut send, &mut reader, &shared, &peer).await {
        Ok(()) => return finish(send).await,
        Err(e) => e,
    };
    tracing::info!(kind = ?answer.kind, message = %answer.message, source = %peer.source, "request refused");
    // Whatever the peer still sends on this stream is not wanted: stop it,
    // so a client still uploading learns at once and reads the refusal.
    reader.stop();
    if peer_gone(&answer) {
        let _ = send.reset(RESET_STALLED.into());
        return;
    }
    let reply = match answer.kind {
        ErrorKind::Busy => {
            shared.metrics.busy_refusal();
            Message::Busy {
                retry_after_ms: 1000,
            }
        }
        _ => Message::Rejected(answer),
    };
    if write_frame(&mut send, &reply.to_frame()).await.is_err() {
        let _ = send.reset(RESET_STALLED.into());
        return;
    }
    finish(send).await;
}

async fn finish(mut send: quinn::SendStream) {
    let _ = send.finish();
    // Wait until the peer has the data, so closing the connection does not
    // cut the reply; bounded, since a peer that never acknowledges would
    // otherwise hold the stream (keep-alives defeat the idle timeout).
    // Up to a full send window may still be unacknowledged: a slow but
    // honest peer gets that at the minimum rate.
    let limit = Duration::from_millis(lockstep_limits::WRITE_STALL_TIMEOUT_MS)
        + Duration::from_secs(
            lockstep_limits::CONNECTION_SEND_WINDOW_BYTES
                / lockstep_limits::PEER_RATE_MIN_BYTES_PER_S,
        );
    let acked = within(limit, send.stopped()).await;
    if !matches!(acked, Some(Ok(_))) {
        let _ = send.reset(RESET_STALLED.into());
    }
}

async fn serve(
    send: &mut quinn::SendStream,
    reader: &mut FrameReader,
    shared: &Shared,
    peer: &Peer,
) -> Result<(), JobError> {
    let Some(Frame::Control(payload)) = reader.next().await.map_err(wire)? else {
        return Err(err(
            ErrorKind::BadFrame,
            "a stream must start with a control message",
        ));
    };
    let message = Message::decode(&payload).map_err(|e| err(e.error_kind(), e.to_string()))?;
    match message {
        Message::StatusRequest => {
            let bundle_id = shared.current_bundle_id();
            let devices: Vec<_> = shared
                .devices
                .all()
                .iter()
                .map(|d| d.status(&bundle_id))
                .collect();
            let status = Message::Status(NodeStatus {
                node_id: shared.node_id.clone(),
                device: shared.devices.names(),
                certified: shared.certified(),
                // The first device's line: the whole story on a node with
                // one device, and `devices` has every device's.
                certification: devices[0].certification.clone(),
                queue_depth: shared.devices.queue_depth() as u32,
                queue_bound: (lockstep_limits::JOB_QUEUE_BOUND * devices.len()) as u32,
                jobs_done: shared.devices.jobs_done(),
                jobs_failed: shared.devices.jobs_failed(),
                bundle_id,
                uptime_s: shared.started.elapsed().as_secs(),
                key_protection: shared.admin.key_protection,
                chain_address: shared.chain.address(),
                devices,
            });
            write_frame(send, &status.to_frame()).await.map_err(wire)?;
            Ok(())
        }
        Message::Submit(_) if shared.stopping.load(Ordering::SeqCst) => {
            shared.metrics.job_refused(lockstep_metrics::Refusal::Other);
            Err(err(
                ErrorKind::Internal,
                "the node is shutting down; retry after it restarts, or on another node",
            ))
        }
        Message::Submit(request) => {
            let mut queued = false;
            let result = submit(send, reader, shared, peer, request, &mut queued).await;
            // A job's failure after it was queued is the worker's to count
            // (by outcome and device); before that it is a refusal.
            if let (Err(e), false) = (&result, queued) {
                shared.metrics.job_refused(refusal(e.kind));
            }
            result
        }
        Message::CertifyHello => crate::certify_stream::session(send, reader, shared).await,
        Message::CertifyRequest(_) | Message::InstallReport(_) => {
            Err(crate::certify_stream::unsessioned())
        }
        Message::AdminHello(hello) => crate::admin::serve(send, reader, shared, hello).await,
        Message::FetchLeaf(request) => crate::evidence::leaf(send, shared, peer, request).await,
        Message::FetchInput(request) => crate::evidence::input(send, shared, peer, request).await,
        Message::FetchOutput(request) => {
            crate::peer_serve::output(send, shared, peer, request).await
        }
        Message::FetchSource(request) => {
            crate::peer_serve::source(send, shared, peer, request).await
        }
        Message::FetchProgram(request) => {
            crate::peer_serve::program(send, shared, peer, request).await
        }
        Message::AttestHello => {
            crate::attest_stream::session(
                send,
                reader,
                &shared.attestor,
                &shared.budgets.attestations,
            )
            .await
        }
        Message::AttestChallenge(_) => Err(err(
            ErrorKind::BadFrame,
            "an attestation starts with AttestHello; the challenge follows the node's AttestIdentity on the same stream",
        )),
        _ => Err(err(
            ErrorKind::BadFrame,
            "clients send StatusRequest or Submit",
        )),
    }
}

/// The metrics' reason for a job refused with `kind`.
fn refusal(kind: ErrorKind) -> lockstep_metrics::Refusal {
    use lockstep_metrics::Refusal;
    match kind {
        ErrorKind::InvalidProgram => Refusal::InvalidProgram,
        ErrorKind::BadInput => Refusal::BadInput,
        ErrorKind::TooLarge => Refusal::TooLarge,
        ErrorKind::Busy => Refusal::Busy,
        ErrorKind::Uncertified => Refusal::Uncertified,
        ErrorKind::Reference(_) => Refusal::Reference,
        ErrorKind::Timeout => Refusal::Timeout,
        _ => Refusal::Other,
    }
}

/// Receives, admits and queues one job, then sends its outcome; `queued`
/// is set once a device's worker has it.
async fn submit(
    send: &mut quinn::SendStream,
    reader: &mut FrameReader,
    shared: &Shared,
    peer: &Peer,
    request: JobRequest,
    queued: &mut bool,
) -> Result<(), JobError> {
    // Refused before anything is admitted when no device (or not the one
    // named) may take it; picked again once the inputs are in, for the
    // least loaded device then.
    shared
        .devices
        .pick(request.device, &shared.current_bundle_id(), 0)?;
    if shared.retention.holds(&request.job_id) {
        return Err(err(
            ErrorKind::BadInput,
            format!(
                "job id {} is already used on this node; give every job a fresh random id",
                hex::encode(request.job_id)
            ),
        ));
    }
    let program = Program::from_postcard(&request.program)
        .map_err(|e| err(ErrorKind::InvalidProgram, e.to_string()))?;
    let validated = validate(
        &program,
        &ValidateOptions {
            // Live tensors are host memory between ops: a program whose
            // peak could never fit this source's share of the job budget
            // is refused here, by the validator, naming the op.
            memory_limit: shared
                .memory_limit
                .min(shared.budgets.memory_per_source.limit()),
        },
    )
    .map_err(|e| err(ErrorKind::InvalidProgram, e.to_string()))?;
    // The announced inputs must be exactly the declared ones, shapes
    // included, before any tensor data is accepted.
    let declared: BTreeMap<&str, Vec<u64>> = validated
        .inputs()
        .iter()
        .map(|d| (d.name.as_str(), d.shape.iter().map(|&x| x as u64).collect()))
        .collect();
    // Each declared input is given exactly once: as data (`inputs`, with
    // its shape) or as a reference (fetched from its producer).
    let mut given: BTreeMap<&str, Option<&Vec<u64>>> = BTreeMap::new();
    for h in &request.inputs {
        if given.insert(h.name.as_str(), Some(&h.shape)).is_some() {
            return Err(err(
                ErrorKind::BadInput,
                format!("input '{}' is announced twice", h.name),
            ));
        }
    }
    for r in &request.references {
        if given.insert(r.input.as_str(), None).is_some() {
            return Err(err(
                ErrorKind::BadInput,
                format!(
                    "input '{}' is given twice (as data and as a reference, or by two references); give each input once",
                    r.input
                ),
            ));
        }
    }
    for (name, shape) in &declared {
        match given.get(name) {
            None => {
                return Err(err(
                    ErrorKind::BadInput,
                    format!("input '{name}' is missing"),
                ))
            }
            Some(Some(s)) if *s != shape => {
                return Err(err(
                    ErrorKind::BadInput,
                    format!("input '{name}' has shape {s:?}; the program declares {shape:?}"),
                ))
            }
            _ => {}
        }
    }
    if let Some(extra) = given.keys().find(|n| !declared.contains_key(*n)) {
        return Err(err(
            ErrorKind::BadInput,
            format!("input '{extra}' is not declared by the program"),
        ));
    }
    if let Some(submitter) = &request.submitter {
        lockstep_identity::NodeId::parse(submitter).map_err(|e| {
            err(
                ErrorKind::BadInput,
                format!("the submitter key is not a public key: {e}"),
            )
        })?;
    }
    // Every reference is checked before anything is held: the source
    // receipt under its producer's key, and a permission for this node.
    let me = shared.admin.key.node_id();
    let mut sources = Vec::with_capacity(request.references.len());
    for r in &request.references {
        let (producer, address, _) =
            check_reference(r, me, SystemTime::now()).map_err(|e| e.to_job_error())?;
        sources.push((producer, address));
    }
    // Admission, before any input byte is accepted: a job slot, and the
    // host memory the job will hold (its program, inputs and outputs) from
    // the node-wide budget. The reservations travel with the job and are
    // released when its outputs have been sent (or it fails).
    // The job's host memory: its program, and at every moment its live
    // tensors (inputs included, outputs at the end: the validator's peak),
    // or the inputs being received and outputs being sent, whichever is
    // more. Retention streams tensors to disk without a copy.
    let tensor_bytes = |shape: &[usize]| shape.iter().product::<usize>() as u64 * 4;
    let input_bytes = validated
        .inputs()
        .iter()
        .map(|d| tensor_bytes(&d.shape))
        .sum::<u64>();
    let output_bytes = validated
        .outputs()
        .iter()
        .map(|d| tensor_bytes(&d.shape))
        .sum::<u64>();
    let job_bytes =
        request.program.len() as u64 + validated.peak_bytes().max(input_bytes + output_bytes);
    // A program no serving device could hold is refused before its inputs.
    shared.devices.pick(
        request.device,
        &shared.current_bundle_id(),
        validated.peak_bytes(),
    )?;
    let memory = &shared.budgets.memory;
    let share = &shared.budgets.memory_per_source;
    if job_bytes > share.limit() {
        return Err(err(
            ErrorKind::TooLarge,
            format!(
                "the job holds {job_bytes} bytes of host memory (program, live tensors, outputs); this node admits at most {} for one source",
                share.limit()
            ),
        ));
    }
    // One source's jobs fetch at most `MAX_PEER_FETCHES_PER_SOURCE` at a
    // time, so a submitter pointing its jobs at stalling producers cannot
    // hold every fetch turn of the node; taken before anything else is
    // held for the job.
    let _fetching = match request.references.first() {
        None => None,
        Some(first) => Some(
            shared
                .budgets
                .fetches
                .try_enter(peer.source)
                .map_err(|full| {
                    let why = format!(
                        "peer fetches: {full}; retry when your other jobs' fetches are done"
                    );
                    lockstep_protocol::ReferenceError::new(
                        &first.input,
                        lockstep_protocol::ReferenceRefusal::Busy,
                        why,
                    )
                    .to_job_error()
                })?,
        ),
    };
    let slot = shared.budgets.jobs.try_enter(peer.source).map_err(|full| {
        err(
            ErrorKind::Busy,
            format!("job slots: {full}; retry when a job finishes"),
        )
    })?;
    let source_share = share
        .try_reserve(peer.source, job_bytes)
        .map_err(|why| err(ErrorKind::Busy, why))?;
    let reserved = memory
        .try_reserve(job_bytes)
        .ok_or_else(|| err(ErrorKind::Busy, memory.refusal(job_bytes)))?;
    let admitted = crate::worker::Admitted {
        _slot: slot,
        _share: source_share,
        _memory: reserved,
    };
    // The whole upload has a deadline, not only each frame: a peer that
    // trickles (or sends empty chunks) cannot hold its reservation for
    // ever.
    let upload_deadline = Instant::now()
        + Duration::from_millis(lockstep_limits::FRAME_READ_TIMEOUT_MS)
        + Duration::from_secs(input_bytes / lockstep_limits::PEER_RATE_MIN_BYTES_PER_S);
    tracing::debug!(source = %peer.source, job_bytes, "job admitted");
    let mut receiver =
        TensorReceiver::new(request.inputs).map_err(|e| err(ErrorKind::TooLarge, e.to_string()))?;
    let mut inputs: BTreeMap<String, _> = receiver.take_ready().into_iter().collect();
    while !receiver.is_done() {
        let left = upload_deadline.saturating_duration_since(Instant::now());
        let next = within(left, reader.next()).await.ok_or_else(|| {
            err(
                ErrorKind::Timeout,
                format!(
                    "the peer stalled: the inputs did not arrive at {} bytes/s or faster",
                    lockstep_limits::PEER_RATE_MIN_BYTES_PER_S
                ),
            )
        })?;
        match next.map_err(wire)? {
            Some(Frame::Data(chunk)) => {
                shared.metrics.received(chunk.len() as u64);
                inputs.extend(
                    receiver
                        .push(&chunk)
                        .map_err(|e| err(ErrorKind::BadInput, e.to_string()))?,
                )
            }
            Some(Frame::Control(_)) => {
                return Err(err(
                    ErrorKind::BadFrame,
                    "a control message arrived inside tensor data",
                ))
            }
            None => {
                return Err(err(
                    ErrorKind::BadInput,
                    "the stream ended before every input arrived",
                ))
            }
        }
    }
    // The referenced inputs, fetched from their producers: within the
    // job's reservation (admission counted every declared input).
    let fetch_deadline = Instant::now() + shared.job_timeout;
    for (r, (producer, address)) in request.references.iter().zip(sources) {
        // Every reference names a declared input (checked above).
        let shape = declared.get(r.input.as_str()).ok_or_else(|| {
            err(
                ErrorKind::BadInput,
                format!("input '{}' is not declared by the program", r.input),
            )
        })?;
        let t = crate::peer_fetch::fetch(shared, r, producer, address, shape, fetch_deadline)
            .await
            .map_err(|e| e.to_job_error())?;
        inputs.insert(r.input.clone(), t);
    }
    let device = shared.devices.pick(
        request.device,
        &shared.current_bundle_id(),
        validated.peak_bytes(),
    )?;
    let (reply, outcome) = smol::channel::bounded(1);
    let job = Job {
        job_id: request.job_id,
        program: validated,
        inputs,
        reply,
        deadline: Instant::now() + shared.job_timeout,
        admitted,
        source: peer.source,
        submitter: request.submitter,
        references: request.references,
        _on_device: device.take_job(),
    };
    if let Err(TrySendError::Full(_)) = device.queue.try_send(Work::Run(job)) {
        shared.metrics.busy_refusal();
        shared.metrics.job_refused(lockstep_metrics::Refusal::Busy);
        let busy = Message::Busy {
            retry_after_ms: 1000,
        };
        write_frame(send, &busy.to_frame()).await.map_err(wire)?;
        return Ok(());
    }
    *queued = true;
    let result = within(shared.job_timeout, outcome.recv()).await;
    let finished = match result.and_then(Result::ok) {
        None => {
            return Err(err(
                ErrorKind::Timeout,
                format!(
                    "the job ran past this node's limit of {} s",
                    shared.job_timeout.as_secs()
                ),
            ))
        }
        Some(r) => r?,
    };
    let outputs: Vec<_> = finished.outputs.iter().map(|(n, t)| header(n, t)).collect();
    let done = Message::Done(JobResult {
        outputs,
        receipt: finished.receipt,
        signature: finished.signature,
        chain_signature: finished.chain_signature,
    });
    write_frame(send, &done.to_frame()).await.map_err(wire)?;
    for t in finished.outputs.values() {
        for chunk in tensor_chunks(t) {
            write_frame(send, &chunk).await.map_err(wire)?;
            if let Frame::Data(data) = &chunk {
                shared.metrics.sent(data.len() as u64);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_failing_stream_counts_as_the_peer_gone() {
        assert!(peer_gone(&wire(WireError::Stalled(10_000))));
        assert!(peer_gone(&wire(WireError::Read(quinn::ReadError::Reset(
            0u32.into()
        )))));
        // Refusals that merely use the words are answered, not cut off.
        for message in [
            "report refused: not after the installed one",
            "the stream was reset by the fleet; start again",
        ] {
            assert!(!peer_gone(&err(ErrorKind::BadInput, message)));
            assert!(!peer_gone(&err(ErrorKind::BadFrame, message)));
        }
        let busy = wire(WireError::Frame(FrameError::Refused("full".into())));
        assert_eq!(busy.kind, ErrorKind::Busy);
        assert!(!peer_gone(&busy));
    }
}
