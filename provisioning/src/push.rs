//! Pushing a bundle to many nodes: at most `FLEET_PUSH_PARALLELISM` at
//! once, each outcome reported as it comes and returned, none hidden.

use std::net::SocketAddr;

use lockstep_identity::{NodeId, SigningKey};
use lockstep_protocol::admin::{AdminAction, AdminReply};

use crate::inventory::NodeRecord;
use crate::release::Upload;
use crate::session::{Session, SessionError};

/// One node's outcome.
pub struct Outcome {
    pub node: NodeRecord,
    pub result: Result<AdminReply, String>,
}

/// Pushes `upload` to every node in `nodes`; `progress` is called once per
/// node as it finishes (from worker threads, one at a time).
pub fn push_all(
    nodes: &[NodeRecord],
    upload: &Upload,
    key: &SigningKey,
    progress: &(dyn Fn(usize, usize, &Outcome) + Sync),
) -> Vec<Outcome> {
    crate::fanout::each(
        nodes,
        |node| Outcome {
            node: node.clone(),
            result: push_one(node, upload, key).map_err(|e| e.to_string()),
        },
        |count, outcome| progress(count, nodes.len(), outcome),
    )
}

/// Pushes to one node: a pinned connection (the inventory knows its id),
/// then the signed command with the files.
pub fn push_one(
    node: &NodeRecord,
    upload: &Upload,
    key: &SigningKey,
) -> Result<AdminReply, SessionError> {
    let addr: SocketAddr = node.address.parse().map_err(|_| SessionError::Wire {
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        reason: format!("inventory address {:?} is not ADDR:PORT", node.address),
    })?;
    let id = NodeId::parse(&node.node_id).map_err(|e| SessionError::Wire {
        addr,
        reason: format!("inventory node id is not a key: {e}"),
    })?;
    smol::block_on(async {
        let session = Session::open(addr, Some(&id)).await?;
        let command = session.sign(
            key,
            AdminAction::PushBundle {
                bundle_id: upload.bundle_id.clone(),
                version: upload.version,
            },
            Some(upload.upload.clone()),
        );
        session.send(command, &upload.files).await
    })
}
