//! Fleet administration on the node: who it trusts, and the admin session
//! (challenge, signed command, bundle push). The wire rules are in
//! `lockstep_protocol::admin`.
//!
//! Trust: the operator keys in the node's read-only config
//! (`trusted_operators`) if there are any; otherwise the first operator
//! that enrolls the node (trust on first use, logged and persisted in
//! `STATE/trusted_operator.pub`). Every command must be signed by a trusted
//! key over the nonce this session issued, so a recorded command cannot be
//! replayed.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::stream::write_frame;
use lockstep_identity::{DeviceKey, NodeId, Signature};
use lockstep_limits::MAX_TRUSTED_OPERATORS;
use lockstep_protocol::admin::{
    challenge_statement, AdminAction, AdminChallenge, AdminCommand, AdminHello, AdminReply,
    AdminStatement, NodeInfo, UploadReceiver, ADMIN_FORMAT,
};
use lockstep_protocol::{ErrorKind, Frame, JobError, Message};
use lockstep_transport::frames::FrameReader;
use rand_core::RngCore;

use crate::bundle_store::BundleStore;
use crate::bundle_switch::BundleSwitch;
use crate::stream::Shared;
use crate::worker::Work;

const TOFU_FILE: &str = "trusted_operator.pub";

/// The node's admin state, shared by all streams.
pub struct AdminState {
    pub key: Arc<DeviceKey>,
    pub state_dir: PathBuf,
    pub image_version: String,
    /// SHA-256 (hex) of the device record's canonical JSON.
    pub device_fingerprint: String,
    image_operators: Vec<NodeId>,
    tofu: Mutex<Option<NodeId>>,
    /// Version of the active bundle's release (0: the image's own bundle).
    pub bundle_version: AtomicU64,
    pub store: BundleStore,
    /// One admin command at a time: two pushes racing would both pass the
    /// version check.
    busy: smol::lock::Mutex<()>,
}

impl AdminState {
    /// `image_operators` come from the read-only config; the TOFU operator,
    /// if any, from the state directory.
    pub fn new(
        key: Arc<DeviceKey>,
        state_dir: PathBuf,
        image_version: String,
        device_fingerprint: String,
        image_operators: Vec<NodeId>,
        bundle_version: u64,
    ) -> anyhow::Result<AdminState> {
        if image_operators.len() > MAX_TRUSTED_OPERATORS {
            anyhow::bail!(
                "{} trusted operators configured; at most {MAX_TRUSTED_OPERATORS}",
                image_operators.len()
            );
        }
        let tofu = read_tofu(&state_dir)?;
        Ok(AdminState {
            key,
            store: BundleStore::new(&state_dir),
            state_dir,
            image_version,
            device_fingerprint,
            image_operators,
            tofu: Mutex::new(tofu),
            bundle_version: AtomicU64::new(bundle_version),
            busy: smol::lock::Mutex::new(()),
        })
    }

    /// The keys admin commands and bundle releases must be signed by.
    pub fn trusted(&self) -> Vec<NodeId> {
        if !self.image_operators.is_empty() {
            return self.image_operators.clone();
        }
        self.tofu
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

/// Trusted operator keys as the daemon starts: the config's, else the
/// persisted TOFU one.
pub fn trusted_at_start(state_dir: &std::path::Path, image: &[NodeId]) -> Vec<NodeId> {
    if !image.is_empty() {
        return image.to_vec();
    }
    read_tofu(state_dir).ok().flatten().into_iter().collect()
}

fn read_tofu(state_dir: &std::path::Path) -> anyhow::Result<Option<NodeId>> {
    let path = state_dir.join(TOFU_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => NodeId::parse(&text)
            .map(Some)
            .map_err(|e| anyhow::anyhow!("{}: {e}; restore or delete it", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::anyhow!("{}: {e}", path.display())),
    }
}

fn persist_tofu(state_dir: &std::path::Path, key: &NodeId) -> std::io::Result<()> {
    let path = state_dir.join(TOFU_FILE);
    let tmp = state_dir.join(format!(".{TOFU_FILE}.tmp-{}", std::process::id()));
    std::fs::write(&tmp, key.to_public_key_file())?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(state_dir)?.sync_all()
}

/// The device fingerprint fleets record: SHA-256 (hex) of the canonical
/// JSON of the device record receipts carry.
pub fn device_fingerprint(record: &lockstep_protocol::DeviceRecord) -> String {
    use sha2::Digest;
    let bytes = lockstep_canonical_json::to_vec(record).expect("device records serialise");
    hex::encode(sha2::Sha256::digest(bytes))
}

fn wire(e: impl std::fmt::Display) -> JobError {
    JobError {
        kind: ErrorKind::BadFrame,
        message: e.to_string(),
    }
}

/// Serves one admin session (see the module docs).
pub async fn serve(
    send: &mut quinn::SendStream,
    reader: &mut FrameReader,
    shared: &Shared,
    hello: AdminHello,
) -> Result<(), JobError> {
    let admin = &shared.admin;
    let mut nonce = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut nonce);
    let info = node_info(shared);
    let signature = admin
        .key
        .sign_minisign(
            &challenge_statement(&hello.challenge, &info, &nonce),
            "lockstep enrollment challenge",
        )
        .to_file();
    let challenge = Message::AdminChallenge(AdminChallenge {
        info,
        nonce,
        signature,
    });
    write_frame(send, &challenge.to_frame())
        .await
        .map_err(wire)?;
    let command = match reader.next().await.map_err(wire)? {
        Some(Frame::Control(payload)) => match Message::decode(&payload).map_err(wire)? {
            Message::AdminCommand(c) => c,
            _ => return Err(wire("after the challenge the fleet sends AdminCommand")),
        },
        // The fleet only wanted the signed info (no command): fine.
        None => return Ok(()),
        Some(Frame::Data(_)) => return Err(wire("data before the admin command")),
    };
    let _one_at_a_time = admin.busy.lock().await;
    let outcome = execute(reader, shared, &nonce, command).await;
    let (ok, message) = match outcome {
        Ok(m) => (true, m),
        Err(m) => {
            tracing::warn!(reason = %m, "admin command refused");
            (false, m)
        }
    };
    let info = node_info(shared);
    let reply = Message::AdminReply(AdminReply {
        ok,
        message,
        bundle_id: info.bundle_id,
        bundle_version: info.bundle_version,
        certified: info.certified,
        certification_report_sha256: info.certification_report_sha256,
    });
    write_frame(send, &reply.to_frame()).await.map_err(wire)
}

fn current_bundle(shared: &Shared) -> String {
    shared
        .bundle_id
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

fn node_info(shared: &Shared) -> NodeInfo {
    let admin = &shared.admin;
    NodeInfo {
        node_id: shared.node_id.clone(),
        device_fingerprint: admin.device_fingerprint.clone(),
        device: shared.device.clone(),
        bundle_id: current_bundle(shared),
        bundle_version: admin.bundle_version.load(Ordering::SeqCst),
        image_version: admin.image_version.clone(),
        certified: shared.certified(),
        certification_report_sha256: shared
            .certification
            .verdict(&current_bundle(shared))
            .report_sha256,
        trusted_operators: admin.trusted().iter().map(|k| k.to_base64()).collect(),
    }
}

/// Checks and runs one command; `Err` is the one-line refusal.
async fn execute(
    reader: &mut FrameReader,
    shared: &Shared,
    nonce: &[u8; 32],
    command: AdminCommand,
) -> Result<String, String> {
    let admin = &shared.admin;
    let operator = NodeId::parse(&command.operator)
        .map_err(|e| format!("the command's operator key is not a minisign key: {e}"))?;
    Signature::parse(&command.signature)
        .and_then(|s| s.verify(&operator, &command.statement))
        .map_err(|e| format!("the admin command's signature does not verify: {e}"))?;
    let statement: AdminStatement = serde_json::from_slice(&command.statement)
        .map_err(|e| format!("the admin statement is not valid: {e}"))?;
    if statement.format != ADMIN_FORMAT {
        return Err(format!(
            "admin statement format {:?}; this node speaks {ADMIN_FORMAT:?}",
            statement.format
        ));
    }
    if statement.node != shared.node_id {
        return Err("the command is addressed to another node; refusing it".into());
    }
    if statement.nonce != hex::encode(nonce) {
        return Err(
            "the command's nonce is not the one this session issued: a replayed or stale command; refusing it (start a new session)"
                .into(),
        );
    }
    let trusted = admin.trusted();
    let is_trusted = trusted.contains(&operator);
    match statement.action {
        AdminAction::Enroll => {
            if is_trusted {
                return Ok(format!(
                    "enrolled; operator {} is trusted",
                    operator.key_id_hex()
                ));
            }
            if !trusted.is_empty() {
                return Err(untrusted(&operator, &trusted));
            }
            // Trust on first use: this node has no operator in its image
            // and none enrolled it before.
            let mut tofu = admin.tofu.lock().unwrap_or_else(|e| e.into_inner());
            if tofu.is_some() {
                return Err("another operator enrolled this node at the same moment; retry".into());
            }
            persist_tofu(&admin.state_dir, &operator)
                .map_err(|e| format!("cannot persist the trusted operator key: {e}"))?;
            *tofu = Some(operator.clone());
            tracing::warn!(
                operator = %operator,
                "no trusted operator configured: trusting the first enrolling operator (TOFU)"
            );
            Ok(format!(
                "enrolled; operator {} is now trusted on first use",
                operator.key_id_hex()
            ))
        }
        AdminAction::PushBundle { bundle_id, version } => {
            if !is_trusted {
                return Err(untrusted(&operator, &trusted));
            }
            let upload = command
                .bundle
                .ok_or("a bundle push without a bundle; nothing changed")?;
            let mut receiver = UploadReceiver::new(upload.files.clone());
            while !receiver.is_done() {
                match reader.next().await.map_err(|e| e.to_string())? {
                    Some(Frame::Data(chunk)) => receiver.push(&chunk)?,
                    Some(Frame::Control(_)) => {
                        return Err("a control message arrived inside bundle data".into())
                    }
                    None => return Err("the stream ended before the bundle's files".into()),
                }
            }
            let current = admin.bundle_version.load(Ordering::SeqCst);
            // Re-running a rollout reaches nodes that already switched: the
            // same release again is a success that changes nothing, not a
            // rollback.
            if version == current && bundle_id == current_bundle(shared) {
                return Ok(format!(
                    "already running bundle {bundle_id} (release {version}); nothing changed"
                ));
            }
            let files = receiver.into_files();
            let upload = crate::bundle_store::Upload {
                manifest: &upload.manifest,
                release: &upload.release,
                release_signature: &upload.release_signature,
                files: &files,
            };
            let stored = admin
                .store
                .stage(&upload, &trusted, (&bundle_id, version), current)
                .map_err(|e| {
                    format!(
                        "bundle refused: {e}; still serving bundle {}",
                        current_bundle(shared)
                    )
                })?;
            let new_id = stored.bundle.id_hex();
            let previous = current_bundle(shared);
            let (reply, outcome) = smol::channel::bounded(1);
            let switch = Work::SwitchBundle(BundleSwitch {
                bundle: stored.bundle,
                reply,
            });
            if shared.queue.try_send(switch).is_err() {
                if new_id != previous {
                    admin.store.discard(&new_id);
                }
                return Err("the node is busy with jobs; retry the push later".into());
            }
            let switched = outcome
                .recv()
                .await
                .map_err(|_| "the worker stopped during the switch".to_string())?;
            if let Err(e) = switched {
                if new_id != previous {
                    admin.store.discard(&new_id);
                }
                return Err(format!(
                    "the new bundle failed its self-test: {e}; still serving bundle {previous}"
                ));
            }
            admin
                .store
                .activate(&new_id, Some(&previous))
                .map_err(|e| format!("switched, but could not record it: {e}"))?;
            admin
                .bundle_version
                .store(stored.release.version, Ordering::SeqCst);
            *shared.bundle_id.write().unwrap_or_else(|e| e.into_inner()) = new_id.clone();
            tracing::info!(bundle = %new_id, version = stored.release.version, "bundle switched by operator {}", operator.key_id_hex());
            // A certification report names the bundle it certifies: the
            // verdict for the new bundle is evaluated afresh.
            let verdict = shared.certification.verdict(&new_id);
            tracing::info!(certified = verdict.certified, reason = %verdict.reason, "certification re-evaluated for the new bundle");
            Ok(format!(
                "switched to bundle {new_id} (release {}); certified: {}",
                stored.release.version,
                if verdict.certified { "yes" } else { "no" }
            ))
        }
    }
}

fn untrusted(operator: &NodeId, trusted: &[NodeId]) -> String {
    if trusted.is_empty() {
        return format!(
            "this node trusts no operator yet, so operator {} may not administer it: enroll it first",
            operator.key_id_hex()
        );
    }
    format!(
        "operator {} is not trusted by this node (it trusts {}); use a trusted operator key",
        operator.key_id_hex(),
        trusted
            .iter()
            .map(|k| k.key_id_hex())
            .collect::<Vec<_>>()
            .join(", ")
    )
}
