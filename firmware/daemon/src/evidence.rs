//! Serving retained evidence: a trace leaf (hash, audit path, optionally
//! the tensor) or a job input. Disk reads run on smol's blocking pool so a
//! large leaf never stalls the other streams.

use std::sync::Arc;

use lockstep_program::trace;
use lockstep_protocol::{
    header, tensor_chunks, ErrorKind, InputRequest, JobError, LeafEvidence, LeafRequest, Message,
};
use lockstep_transport::frames::write_frame;

use crate::retention::{Retention, RetentionError};

/// Node-wide turns for evidence requests (see the limit's note).
static EVIDENCE_TURNS: smol::lock::Semaphore =
    smol::lock::Semaphore::new(lockstep_limits::MAX_CONCURRENT_EVIDENCE);

fn refused(e: RetentionError) -> JobError {
    let kind = match e {
        RetentionError::NotRetained(_) => ErrorKind::NotRetained,
        RetentionError::NoLeaf { .. } | RetentionError::NoInput { .. } => ErrorKind::BadInput,
        RetentionError::Damaged { .. } | RetentionError::Io(_) => ErrorKind::Internal,
    };
    JobError {
        kind,
        message: e.to_string(),
    }
}

fn wire(e: lockstep_transport::frames::WireError) -> JobError {
    JobError {
        kind: ErrorKind::BadFrame,
        message: e.to_string(),
    }
}

/// Answers a [`LeafRequest`].
pub async fn leaf(
    send: &mut quinn::SendStream,
    retention: &Arc<Retention>,
    request: LeafRequest,
) -> Result<(), JobError> {
    let _turn = EVIDENCE_TURNS.acquire().await;
    let r = retention.clone();
    let (evidence, tensor) = smol::unblock(move || {
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
        let tensor = if request.with_data {
            Some(r.leaf_tensor(&request.job_id, request.index)?)
        } else {
            None
        };
        let evidence = LeafEvidence {
            index: request.index,
            size,
            leaf: leaves[request.index as usize],
            path,
            tensor: tensor.as_ref().map(|t| header("leaf", t)),
        };
        Ok::<_, RetentionError>((evidence, tensor))
    })
    .await
    .map_err(refused)?;
    write_frame(send, &Message::Leaf(evidence).to_frame())
        .await
        .map_err(wire)?;
    if let Some(t) = &tensor {
        for chunk in tensor_chunks(t) {
            write_frame(send, &chunk).await.map_err(wire)?;
        }
    }
    Ok(())
}

/// Answers an [`InputRequest`].
pub async fn input(
    send: &mut quinn::SendStream,
    retention: &Arc<Retention>,
    request: InputRequest,
) -> Result<(), JobError> {
    let _turn = EVIDENCE_TURNS.acquire().await;
    let r = retention.clone();
    let name = request.name.clone();
    let t = smol::unblock(move || r.input(&request.job_id, &request.name))
        .await
        .map_err(refused)?;
    write_frame(send, &Message::Input(header(&name, &t)).to_frame())
        .await
        .map_err(wire)?;
    for chunk in tensor_chunks(&t) {
        write_frame(send, &chunk).await.map_err(wire)?;
    }
    Ok(())
}
