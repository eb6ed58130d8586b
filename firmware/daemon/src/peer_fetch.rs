//! The consuming side of peer-to-peer tensor references: fetching a
//! referenced input from the node that produced it (docs/protocol.md,
//! "References").
//!
//! Every wait is bounded: a node-wide gate of `MAX_PEER_FETCHES_IN_FLIGHT`
//! fetches (waited at most `PEER_FETCH_QUEUE_WAIT_MS`), the handshake
//! (`PEER_CONNECT_TIMEOUT_MS`), every frame (`PEER_FETCH_STALL_TIMEOUT_MS`),
//! the whole transfer (at `PEER_RATE_MIN_BYTES_PER_S`), and all attempts by
//! the job's deadline. Only an unreachable or busy producer is tried again
//! (up to `PEER_FETCH_ATTEMPTS`, backing off); a refusal is final, and so
//! is a stall. The header is checked against the reference and the
//! program before any data is accepted, and the data against the hash as
//! it arrives. The fetched bytes are within the job's reservation: its
//! admission counted every declared input.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lockstep_identity::NodeId;
use lockstep_limits::{
    FRAME_READ_TIMEOUT_MS, MAX_PEER_FETCHES_IN_FLIGHT, PEER_CONNECT_TIMEOUT_MS,
    PEER_FETCH_ATTEMPTS, PEER_FETCH_QUEUE_WAIT_MS, PEER_FETCH_RETRY_BACKOFF_MS,
    PEER_FETCH_STALL_TIMEOUT_MS, PEER_RATE_MIN_BYTES_PER_S,
};
use lockstep_protocol::{
    proof_message, ErrorKind, Frame, JobError, Message, OutputRequest, ReferenceError,
    ReferenceRefusal, TensorHeader, TensorReceiver, TensorReference, TensorStreamError,
    FETCH_EXPORTER_LABEL,
};
use lockstep_tensor::Tensor;
use lockstep_transport::frames::FrameReader;
use lockstep_transport::TransportError;

use crate::stream::{within, write_frame, Shared};

/// The node's outgoing fetch turns.
static FETCH_TURNS: smol::lock::Semaphore = smol::lock::Semaphore::new(MAX_PEER_FETCHES_IN_FLIGHT);

/// How one attempt ended, short of a tensor.
enum Failed {
    /// Unreachable or busy: worth another attempt.
    Retry(ReferenceError),
    /// A refusal, a stall or bad data: returned at once.
    Final(ReferenceError),
}

/// Fetches `reference` (already checked by `check_reference`, which gave
/// `producer` and `address`) from its producer, as a tensor of `shape`.
pub async fn fetch(
    shared: &Shared,
    reference: &TensorReference,
    producer: NodeId,
    address: SocketAddr,
    shape: &[u64],
    deadline: Instant,
) -> Result<Tensor, ReferenceError> {
    let input = reference.input.as_str();
    let started = Instant::now();
    let job = hex::encode(reference.job_id);
    let result = fetch_attempts(shared, reference, &producer, address, shape, deadline).await;
    let ms = started.elapsed().as_millis() as u64;
    match &result {
        Ok(t) => tracing::info!(
            input,
            producer = %producer,
            %address,
            job = %job,
            output = %reference.output,
            bytes = t.len() as u64 * 4,
            ms,
            "referenced input fetched"
        ),
        Err(e) => tracing::info!(
            input,
            producer = %producer,
            %address,
            job = %job,
            output = %reference.output,
            refusal = ?e.refusal,
            message = %e.message,
            ms,
            "referenced input not fetched"
        ),
    }
    result
}

async fn fetch_attempts(
    shared: &Shared,
    reference: &TensorReference,
    producer: &NodeId,
    address: SocketAddr,
    shape: &[u64],
    deadline: Instant,
) -> Result<Tensor, ReferenceError> {
    let input = reference.input.as_str();
    let wait = Duration::from_millis(PEER_FETCH_QUEUE_WAIT_MS)
        .min(deadline.saturating_duration_since(Instant::now()));
    let _turn = within(wait, FETCH_TURNS.acquire()).await.ok_or_else(|| {
        ReferenceError::new(
            input,
            ReferenceRefusal::Busy,
            format!(
                "all {MAX_PEER_FETCHES_IN_FLIGHT} of this node's peer fetches are in flight; retry the job later"
            ),
        )
    })?;
    let mut backoff = Duration::from_millis(PEER_FETCH_RETRY_BACKOFF_MS);
    let mut last = None;
    for attempt in 1..=PEER_FETCH_ATTEMPTS {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let outcome = within(left, attempt_once(shared, reference, producer, address, shape))
            .await
            .unwrap_or_else(|| {
                Err(Failed::Final(ReferenceError::new(
                    input,
                    ReferenceRefusal::Stalled,
                    "the job's time limit ran out during the fetch; retry when the producer is faster, or with a longer limit",
                )))
            });
        match outcome {
            Ok(t) => return Ok(t),
            Err(Failed::Final(e)) => return Err(e),
            Err(Failed::Retry(e)) => {
                tracing::debug!(input, attempt, refusal = ?e.refusal, message = %e.message, "peer fetch attempt failed; retrying");
                last = Some(e);
                if attempt < PEER_FETCH_ATTEMPTS {
                    let left = deadline.saturating_duration_since(Instant::now());
                    smol::Timer::after(backoff.min(left)).await;
                    backoff *= 2;
                }
            }
        }
    }
    Err(match last {
        Some(mut e) => {
            e.message = format!(
                "{} (after {PEER_FETCH_ATTEMPTS} attempts or the job's time limit)",
                e.message
            );
            e
        }
        None => ReferenceError::new(
            input,
            ReferenceRefusal::Stalled,
            "the job's time limit ran out before the fetch could start",
        ),
    })
}

/// One connection to the producer: connect (pinned), fetch, close.
async fn attempt_once(
    shared: &Shared,
    reference: &TensorReference,
    producer: &NodeId,
    address: SocketAddr,
    shape: &[u64],
) -> Result<Tensor, Failed> {
    let input = reference.input.as_str();
    let unreachable = |m: String| ReferenceError::new(input, ReferenceRefusal::Unreachable, m);
    let limit = Duration::from_millis(PEER_CONNECT_TIMEOUT_MS);
    let connection = match within(limit, lockstep_transport::connect(address, producer)).await {
        None => {
            return Err(Failed::Retry(unreachable(format!(
                "the producer at {address} did not complete a handshake within {PEER_CONNECT_TIMEOUT_MS} ms"
            ))))
        }
        // The node at the address is not the producer: trying again will
        // not change its key.
        Some(Err(e @ TransportError::Pin(_))) => {
            return Err(Failed::Final(unreachable(format!(
                "the node at {address} is not the producer: {e}"
            ))))
        }
        Some(Err(e)) => {
            return Err(Failed::Retry(unreachable(format!(
                "cannot reach the producer: {e}"
            ))))
        }
        Some(Ok(c)) => c,
    };
    let result = transfer(shared, &connection, reference, producer, shape).await;
    connection.close(0u32.into(), b"done");
    result
}

/// What the producer's refusal means for this fetch.
fn producer_refused(input: &str, e: JobError) -> Failed {
    let refusal = match e.kind {
        ErrorKind::Busy => {
            return Failed::Retry(ReferenceError::new(
                input,
                ReferenceRefusal::Busy,
                format!("the producer is busy: {}", e.message),
            ))
        }
        ErrorKind::Reference(r) => r,
        ErrorKind::NotRetained | ErrorKind::Internal => ReferenceRefusal::NotRetained,
        ErrorKind::Unauthorized => ReferenceRefusal::NoPermission,
        ErrorKind::Timeout => ReferenceRefusal::Stalled,
        _ => ReferenceRefusal::Malformed,
    };
    Failed::Final(ReferenceError::new(
        input,
        refusal,
        format!("the producer refused: {}", e.message),
    ))
}

async fn transfer(
    shared: &Shared,
    connection: &quinn::Connection,
    reference: &TensorReference,
    producer: &NodeId,
    shape: &[u64],
) -> Result<Tensor, Failed> {
    let input = reference.input.as_str();
    let fail = |refusal, m: String| Failed::Final(ReferenceError::new(input, refusal, m));
    let stall = Duration::from_millis(PEER_FETCH_STALL_TIMEOUT_MS);
    let mut exporter = [0u8; 32];
    connection
        .export_keying_material(&mut exporter, FETCH_EXPORTER_LABEL, b"")
        .map_err(|_| {
            fail(
                ReferenceRefusal::Unreachable,
                "the connection to the producer gives no TLS session binding".into(),
            )
        })?;
    let message = proof_message(
        &exporter,
        &producer.to_base64(),
        &reference.job_id,
        &reference.output,
    );
    let proof = shared
        .admin
        .key
        .sign_minisign(&message, "lockstep peer fetch")
        .to_file();
    let request = Message::FetchOutput(OutputRequest {
        job_id: reference.job_id,
        output: reference.output.clone(),
        permission: reference.permission.clone(),
        consumer: shared.admin.key.node_id().to_base64(),
        proof,
    });
    let (mut send, recv) = match within(stall, connection.open_bi()).await {
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            return Err(Failed::Retry(ReferenceError::new(
                input,
                ReferenceRefusal::Unreachable,
                format!("the connection to the producer failed: {e}"),
            )))
        }
        None => {
            return Err(fail(
                ReferenceRefusal::Stalled,
                format!("the producer opened no stream within {PEER_FETCH_STALL_TIMEOUT_MS} ms"),
            ))
        }
    };
    write_frame(&mut send, &request.to_frame())
        .await
        .map_err(|e| fail(ReferenceRefusal::Stalled, format!("sending the fetch: {e}")))?;
    let _ = send.finish();
    let mut reader = FrameReader::new(recv);
    let expected: u64 = shape.iter().product::<u64>() * 4;
    let transfer_deadline = Instant::now()
        + Duration::from_millis(FRAME_READ_TIMEOUT_MS)
        + Duration::from_secs(expected / PEER_RATE_MIN_BYTES_PER_S);
    let mut received = 0u64;
    let header: TensorHeader =
        match next_frame(&mut reader, input, transfer_deadline, received, expected).await? {
            Some(Frame::Control(payload)) => match Message::decode(&payload) {
                Ok(Message::Output(h)) => h,
                Ok(Message::Busy { .. }) => {
                    return Err(Failed::Retry(ReferenceError::new(
                        input,
                        ReferenceRefusal::Busy,
                        "the producer is busy",
                    )))
                }
                Ok(Message::Rejected(e)) => return Err(producer_refused(input, e)),
                Ok(_) => {
                    return Err(fail(
                        ReferenceRefusal::Malformed,
                        "the producer answered the fetch with another message than Output".into(),
                    ))
                }
                Err(e) => {
                    return Err(fail(
                        ReferenceRefusal::Malformed,
                        format!("the producer's answer: {e}"),
                    ))
                }
            },
            Some(Frame::Data(_)) => {
                return Err(fail(
                    ReferenceRefusal::Malformed,
                    "the producer sent data before the output's header".into(),
                ))
            }
            None => {
                return Err(fail(
                    ReferenceRefusal::Stalled,
                    "the producer closed the stream without an answer".into(),
                ))
            }
        };
    // Before any data: the tensor the reference and the program promise.
    if header.shape != shape {
        return Err(fail(
            ReferenceRefusal::DataMismatch,
            format!(
                "the producer offers shape {:?}; the program declares {shape:?}",
                header.shape
            ),
        ));
    }
    if header.sha256 != reference.sha256 {
        return Err(fail(
            ReferenceRefusal::DataMismatch,
            format!(
                "the producer offers SHA-256 {}; the reference says {}",
                hex::encode(header.sha256),
                hex::encode(reference.sha256)
            ),
        ));
    }
    let name = header.name.clone();
    let mismatch = |e: TensorStreamError| fail(ReferenceRefusal::DataMismatch, e.to_string());
    let mut receiver = TensorReceiver::new(vec![header]).map_err(mismatch)?;
    let mut done = receiver.take_ready();
    while !receiver.is_done() {
        match next_frame(&mut reader, input, transfer_deadline, received, expected).await? {
            Some(Frame::Data(chunk)) => {
                let n = chunk.len() as u64;
                shared.metrics.received(n);
                done.extend(receiver.push(&chunk).map_err(mismatch)?);
                received += n;
            }
            Some(Frame::Control(_)) => {
                return Err(fail(
                    ReferenceRefusal::Malformed,
                    format!(
                        "the producer sent a control message after {received} of {expected} bytes"
                    ),
                ))
            }
            None => {
                return Err(fail(
                    ReferenceRefusal::Stalled,
                    format!("the producer ended the stream after {received} of {expected} bytes"),
                ))
            }
        }
    }
    done.into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| t)
        .ok_or_else(|| {
            fail(
                ReferenceRefusal::DataMismatch,
                "the producer's data completed no tensor".into(),
            )
        })
}

/// The producer's next frame, within the stall limit and by the
/// transfer's deadline.
async fn next_frame(
    reader: &mut FrameReader,
    input: &str,
    deadline: Instant,
    received: u64,
    expected: u64,
) -> Result<Option<Frame>, Failed> {
    let limit = Duration::from_millis(PEER_FETCH_STALL_TIMEOUT_MS)
        .min(deadline.saturating_duration_since(Instant::now()));
    let stalled =
        |m: String| Failed::Final(ReferenceError::new(input, ReferenceRefusal::Stalled, m));
    match within(limit, reader.next()).await {
        Some(Ok(f)) => Ok(f),
        Some(Err(e)) => Err(stalled(format!(
            "the producer's stream failed after {received} of {expected} bytes: {e}"
        ))),
        None => Err(stalled(format!(
            "the producer stopped sending after {received} of {expected} bytes (nothing for {} ms, or slower than {PEER_RATE_MIN_BYTES_PER_S} bytes/s)",
            limit.as_millis()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(kind: ErrorKind) -> (bool, ReferenceRefusal, String) {
        let e = JobError {
            kind,
            message: "why".into(),
        };
        match producer_refused("x", e) {
            Failed::Retry(e) => (true, e.refusal, e.message),
            Failed::Final(e) => (false, e.refusal, e.message),
        }
    }

    #[test]
    fn only_a_busy_producer_is_retried_and_refusals_keep_their_kind() {
        assert!(refusal(ErrorKind::Busy).0);
        assert_eq!(refusal(ErrorKind::Busy).1, ReferenceRefusal::Busy);
        for r in [
            ReferenceRefusal::NoPermission,
            ReferenceRefusal::PermissionExpired,
            ReferenceRefusal::NotRetained,
            ReferenceRefusal::NotInReceipt,
        ] {
            let (retry, got, message) = refusal(ErrorKind::Reference(r));
            assert!(!retry);
            assert_eq!(got, r);
            assert_eq!(message, "the producer refused: why");
        }
        assert_eq!(
            refusal(ErrorKind::NotRetained),
            (
                false,
                ReferenceRefusal::NotRetained,
                "the producer refused: why".into()
            )
        );
        assert_eq!(
            refusal(ErrorKind::Unauthorized).1,
            ReferenceRefusal::NoPermission
        );
        assert!(!refusal(ErrorKind::BadFrame).0);
    }
}
