//! The producing side of peer-to-peer tensor references: another node
//! fetching a retained job output (`FetchOutput`), and lineage asking where
//! a referenced input came from (`FetchSource`) or for a job's program
//! (`FetchProgram`) (docs/protocol.md, "References").
//!
//! Who may read what:
//! - an output: the consumer a permission of the job's submitter names,
//!   proving on this connection (its TLS exporter value) that it holds
//!   that node's key: `check_fetch` against this node's own retained
//!   receipt, before a byte of the output is read;
//! - a source or a program: whoever holds the job's receipt as this node
//!   signed it, as for evidence (evidence.rs `authorize`).
//!
//! What it may cost: each takes an evidence turn (the same per-source and
//! node-wide budgets as evidence), and data is streamed from disk one
//! chunk at a time within the write-stall and minimum-rate limits.

use std::time::SystemTime;

use lockstep_protocol::{
    check_fetch, ErrorKind, EvidenceAccess, JobError, Message, OutputRequest, ProgramRequest,
    Receipt, ReferenceError, ReferenceRefusal, SourceRequest, TensorHeader,
};

use crate::admission::Peer;
use crate::evidence::{authorize, refused, stream_data, take_turn};
use crate::retention::RetentionError;
use crate::stream::{wire, write_frame, Shared};

/// A retention failure while serving a fetch: a job not retained (never
/// run here, evicted, or past its retention window) is the reference
/// refusal `NotRetained`; damage is internal.
fn fetch_refused(output: &str, e: RetentionError) -> JobError {
    match e {
        RetentionError::NotRetained(_) => {
            ReferenceError::new(output, ReferenceRefusal::NotRetained, e.to_string()).to_job_error()
        }
        other => refused(other),
    }
}

/// Answers a [`OutputRequest`]: the output's header, then its data.
pub async fn output(
    send: &mut quinn::SendStream,
    shared: &Shared,
    peer: &Peer,
    request: OutputRequest,
) -> Result<(), JobError> {
    let _turn = take_turn(shared, peer).await?;
    let r = shared.retention.clone();
    let job_id = request.job_id;
    let (bytes, signature) = smol::unblock(move || {
        Ok::<_, RetentionError>((r.receipt_bytes(&job_id)?, r.receipt_signature(&job_id)?))
    })
    .await
    .map_err(|e| fetch_refused(&request.output, e))?;
    // The node's own file, but checked all the same: the permission is
    // judged against what this node signed, nothing else.
    let receipt =
        Receipt::verify(&bytes, &signature, shared.admin.key.node_id()).map_err(|e| JobError {
            kind: ErrorKind::Internal,
            message: format!(
                "the retained receipt of job {} does not verify: {e}",
                hex::encode(job_id)
            ),
        })?;
    let exporter = peer.exporter.ok_or_else(|| {
        ReferenceError::new(
            &request.output,
            ReferenceRefusal::NoPermission,
            "this connection has no TLS session binding, so no fetch proof can be checked on it; reconnect",
        )
        .to_job_error()
    })?;
    let sha256 = check_fetch(&request, &receipt, &exporter, SystemTime::now())
        .map_err(|e| e.to_job_error())?;
    let r = shared.retention.clone();
    let output = request.output.clone();
    let data = smol::unblock(move || r.output_data(&job_id, &sha256))
        .await
        .map_err(|e| fetch_refused(&output, e))?;
    let header = TensorHeader {
        name: request.output,
        shape: data.shape.clone(),
        sha256,
    };
    tracing::info!(
        job = %hex::encode(job_id),
        output = %header.name,
        bytes = data.len,
        source = %peer.source,
        "serving a retained output to a peer"
    );
    write_frame(send, &Message::Output(header).to_frame())
        .await
        .map_err(wire)?;
    stream_data(send, data, &shared.metrics).await
}

/// Answers a [`SourceRequest`]: where the job's referenced input came from.
pub async fn source(
    send: &mut quinn::SendStream,
    shared: &Shared,
    peer: &Peer,
    request: SourceRequest,
) -> Result<(), JobError> {
    authorize(shared, &request.job_id, &request.access)?;
    let _turn = take_turn(shared, peer).await?;
    let r = shared.retention.clone();
    let EvidenceAccess::Receipt { receipt, .. } = request.access;
    let (job_id, input) = (request.job_id, request.input);
    let evidence = smol::unblock(move || {
        if !r.receipt_is(&job_id, &receipt)? {
            return Err(RetentionError::NotRetained(hex::encode(job_id)));
        }
        r.source(&job_id, &input)
    })
    .await
    .map_err(refused)?;
    write_frame(send, &Message::Source(evidence).to_frame())
        .await
        .map_err(wire)
}

/// Answers a [`ProgramRequest`]: the job's program, canonical postcard.
pub async fn program(
    send: &mut quinn::SendStream,
    shared: &Shared,
    peer: &Peer,
    request: ProgramRequest,
) -> Result<(), JobError> {
    authorize(shared, &request.job_id, &request.access)?;
    let _turn = take_turn(shared, peer).await?;
    let r = shared.retention.clone();
    let EvidenceAccess::Receipt { receipt, .. } = request.access;
    let job_id = request.job_id;
    let program = smol::unblock(move || {
        if !r.receipt_is(&job_id, &receipt)? {
            return Err(RetentionError::NotRetained(hex::encode(job_id)));
        }
        r.program_bytes(&job_id)
    })
    .await
    .map_err(refused)?;
    write_frame(send, &Message::Program(program).to_frame())
        .await
        .map_err(wire)
}
