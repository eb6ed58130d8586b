//! Serving retained evidence: a trace leaf (hash, audit path, optionally
//! the tensor) or a job input. Peer fetches, a referenced input's source
//! and a job's program (peer_serve.rs) take the same turns.
//!
//! Who may read it: whoever holds the job's receipt as this node signed it
//! (the submitter, or a verifier or referee the submitter gave it to);
//! knowing a job id is not enough (docs/protocol.md, "Evidence").
//!
//! What it may cost: a requester takes one of `MAX_CONCURRENT_EVIDENCE`
//! node-wide turns (waiting at most `EVIDENCE_QUEUE_WAIT_MS`), and one
//! source never holds more than `MAX_CONCURRENT_EVIDENCE_PER_SOURCE` of
//! them. A tensor is streamed from disk one wire chunk at a time, never
//! read whole, and every write is bounded by `WRITE_STALL_TIMEOUT_MS`, so a
//! reader that stops reading frees its turn. Disk reads run on the blocking
//! pool so a large leaf never stalls the other streams.

use std::time::Duration;

use lockstep_program::trace;
use lockstep_protocol::{
    ErrorKind, EvidenceAccess, Frame, InputRequest, JobError, LeafEvidence, LeafRequest, Message,
    Receipt, TensorHeader,
};
use smol::io::AsyncReadExt;

use crate::admission::{Peer, Slot};
use crate::retention::{RetentionError, StoredData};
use crate::stream::{wire, within, write_frame, Shared};

/// Node-wide turns for evidence requests (see the limit's note).
static EVIDENCE_TURNS: smol::lock::Semaphore =
    smol::lock::Semaphore::new(lockstep_limits::MAX_CONCURRENT_EVIDENCE);

pub(crate) fn refused(e: RetentionError) -> JobError {
    let kind = match e {
        RetentionError::NotRetained(_) => ErrorKind::NotRetained,
        RetentionError::NoLeaf { .. }
        | RetentionError::NoInput { .. }
        | RetentionError::NoReference { .. } => ErrorKind::BadInput,
        RetentionError::Damaged { .. }
        | RetentionError::NoOutput { .. }
        | RetentionError::Io(_)
        | RetentionError::NoRoom { .. } => ErrorKind::Internal,
    };
    JobError {
        kind,
        message: e.to_string(),
    }
}

fn err(kind: ErrorKind, message: impl Into<String>) -> JobError {
    JobError {
        kind,
        message: message.into(),
    }
}

/// Checks that the requester may read job `job_id`'s evidence; returns the
/// receipt it proved that with.
pub(crate) fn authorize(
    shared: &Shared,
    job_id: &[u8; 16],
    access: &EvidenceAccess,
) -> Result<Receipt, JobError> {
    match access {
        EvidenceAccess::Receipt { receipt, signature } => {
            let node = shared.admin.key.node_id();
            let r = Receipt::verify(receipt, signature, node).map_err(|e| {
                err(
                    ErrorKind::Unauthorized,
                    format!("evidence is served to holders of the job's receipt from this node; the receipt given does not verify: {e}"),
                )
            })?;
            if r.job_id != hex::encode(job_id) {
                return Err(err(
                    ErrorKind::Unauthorized,
                    format!(
                        "the receipt given is for job {}, not job {}; send the receipt of the job you ask about",
                        r.job_id,
                        hex::encode(job_id)
                    ),
                ));
            }
            Ok(r)
        }
    }
}

/// An evidence turn: this source's slot, then a node-wide turn.
pub(crate) struct Turn {
    _slot: Slot,
    _turn: smol::lock::SemaphoreGuard<'static>,
}

pub(crate) async fn take_turn(shared: &Shared, peer: &Peer) -> Result<Turn, JobError> {
    let slot = shared
        .budgets
        .evidence
        .try_enter(peer.source)
        .map_err(|full| {
            err(
                ErrorKind::Busy,
                format!("evidence requests: {full}; retry when one finishes"),
            )
        })?;
    let wait = Duration::from_millis(lockstep_limits::EVIDENCE_QUEUE_WAIT_MS);
    let turn = within(wait, EVIDENCE_TURNS.acquire())
        .await
        .ok_or_else(|| {
            err(
                ErrorKind::Busy,
                "every evidence turn of this node is taken; retry later",
            )
        })?;
    Ok(Turn {
        _slot: slot,
        _turn: turn,
    })
}

/// Streams a stored tensor's data as wire chunks, one read and one bounded
/// write at a time, and the whole response within the write-stall limit
/// plus its size at `PEER_RATE_MIN_BYTES_PER_S`: a reader that takes a
/// little at a time cannot keep its turn for hours.
pub(crate) async fn stream_data(
    send: &mut quinn::SendStream,
    data: StoredData,
    metrics: &lockstep_metrics::NodeMetrics,
) -> Result<(), JobError> {
    let limit = Duration::from_millis(lockstep_limits::WRITE_STALL_TIMEOUT_MS)
        + Duration::from_secs(data.len / lockstep_limits::PEER_RATE_MIN_BYTES_PER_S);
    within(limit, stream_chunks(send, data, metrics))
        .await
        .unwrap_or_else(|| {
            Err(err(
                ErrorKind::Timeout,
                format!(
                    "the peer stalled: it read evidence slower than {} bytes/s",
                    lockstep_limits::PEER_RATE_MIN_BYTES_PER_S
                ),
            ))
        })
}

async fn stream_chunks(
    send: &mut quinn::SendStream,
    data: StoredData,
    metrics: &lockstep_metrics::NodeMetrics,
) -> Result<(), JobError> {
    let chunk = lockstep_limits::WIRE_CHUNK_BYTES as u64;
    let mut left = data.len;
    let mut file = smol::Unblock::with_capacity(chunk as usize, data.file);
    while left > 0 {
        let n = left.min(chunk) as usize;
        let mut buf = vec![0u8; n];
        file.read_exact(&mut buf).await.map_err(|e| {
            err(
                ErrorKind::Internal,
                format!("reading retained evidence: {e}"),
            )
        })?;
        write_frame(send, &Frame::Data(buf)).await.map_err(wire)?;
        metrics.sent(n as u64);
        left -= n as u64;
    }
    Ok(())
}

/// Answers a [`LeafRequest`].
pub async fn leaf(
    send: &mut quinn::SendStream,
    shared: &Shared,
    peer: &Peer,
    request: LeafRequest,
) -> Result<(), JobError> {
    authorize(shared, &request.job_id, &request.access)?;
    let _turn = take_turn(shared, peer).await?;
    let r = shared.retention.clone();
    let job_id = request.job_id;
    let index_bytes = smol::unblock(move || r.index_bytes(&job_id))
        .await
        .map_err(refused)?;
    // The audit path reads every leaf hash: reserve that memory first
    // (the raw index, and the hashes taken from it).
    let need = index_bytes + index_bytes / 48 * 32;
    let memory = &shared.budgets.memory;
    let _index = memory
        .try_reserve(need)
        .ok_or_else(|| err(ErrorKind::Busy, memory.refusal(need)))?;
    let r = shared.retention.clone();
    let EvidenceAccess::Receipt { receipt, .. } = request.access.clone();
    let (evidence, data) = smol::unblock(move || {
        if !r.receipt_is(&request.job_id, &receipt)? {
            return Err(RetentionError::NotRetained(hex::encode(request.job_id)));
        }
        let leaves = r.leaves(&request.job_id)?;
        let size = leaves.len() as u64;
        let path = usize::try_from(request.index)
            .ok()
            .and_then(|i| trace::prove(&leaves, i))
            .ok_or_else(|| RetentionError::NoLeaf {
                job: hex::encode(request.job_id),
                index: request.index,
                size,
            })?;
        let data = if request.with_data {
            Some(r.leaf_data(&request.job_id, request.index)?.1)
        } else {
            None
        };
        let leaf = leaves[request.index as usize];
        let evidence = LeafEvidence {
            index: request.index,
            size,
            leaf,
            path,
            // The hash is the index's: the client checks the data it
            // receives against it (and the leaf against the signed root).
            tensor: data.as_ref().map(|d| TensorHeader {
                name: "leaf".into(),
                shape: d.shape.clone(),
                sha256: leaf,
            }),
        };
        Ok::<_, RetentionError>((evidence, data))
    })
    .await
    .map_err(refused)?;
    write_frame(send, &Message::Leaf(evidence).to_frame())
        .await
        .map_err(wire)?;
    if let Some(d) = data {
        stream_data(send, d, &shared.metrics).await?;
    }
    Ok(())
}

/// Answers an [`InputRequest`].
pub async fn input(
    send: &mut quinn::SendStream,
    shared: &Shared,
    peer: &Peer,
    request: InputRequest,
) -> Result<(), JobError> {
    let receipt = authorize(shared, &request.job_id, &request.access)?;
    // The input's hash is the one the node signed in the receipt.
    let sha256 = receipt
        .inputs
        .get(&request.name)
        .and_then(|h| hex::decode(h).ok())
        .and_then(|h| <[u8; 32]>::try_from(h).ok())
        .ok_or_else(|| {
            err(
                ErrorKind::BadInput,
                format!(
                    "job {} has no input named '{}'",
                    receipt.job_id, request.name
                ),
            )
        })?;
    let _turn = take_turn(shared, peer).await?;
    let r = shared.retention.clone();
    let name = request.name.clone();
    let EvidenceAccess::Receipt { receipt, .. } = request.access.clone();
    let data = smol::unblock(move || {
        if !r.receipt_is(&request.job_id, &receipt)? {
            return Err(RetentionError::NotRetained(hex::encode(request.job_id)));
        }
        r.input_data(&request.job_id, &request.name)
    })
    .await
    .map_err(refused)?;
    let header = TensorHeader {
        name,
        shape: data.shape.clone(),
        sha256,
    };
    write_frame(send, &Message::Input(header).to_frame())
        .await
        .map_err(wire)?;
    stream_data(send, data, &shared.metrics).await
}
