//! Fleet administration on the node: who it trusts, and the admin session
//! (challenge, signed command, bundle push). The wire rules are in
//! `lockstep_protocol::admin`.
//!
//! Trust is never granted to the network by default. The operator set is
//! pinned in the state partition (`STATE/operators`, written atomically and
//! synced): on first start from the config or provisioning file
//! (`trusted_operators`); after that a file naming another set is ignored
//! with a warning, because whoever can write the ESP must not be able to
//! replace the operators. The set changes only through `SetOperators`,
//! signed by a current operator. A node with no operators at all refuses
//! `Enroll`, unless it was started with `--enroll-window-s N`: then the
//! first enrolling operator within N seconds of start is pinned (trust on
//! first use, deliberately opened on the console, never by the image).
//! Every command must be signed by a trusted key over the nonce this
//! session issued, so a recorded command cannot be replayed.
//!
//! A node started with `--sealed-identity` takes its first operator set
//! from the TPM-sealed identity instead, and `STATE/operators` is not used:
//! lockstepd cannot seal a later change, so each `SetOperators` is kept as
//! its signed statement in `STATE/operators.chain` and replayed from the
//! sealed set at every start ([`replay_chain`]).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::stream::write_frame;
use lockstep_identity::{DeviceKey, KeyProtection, NodeId, Signature};
use lockstep_limits::{MAX_OPERATORS_FILE_BYTES, MAX_TRUSTED_OPERATORS};
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

/// The pinned operator set: one minisign public key per line.
pub const OPERATORS_FILE: &str = "operators";
/// Where nodes before pinning kept their TOFU operator; migrated.
const LEGACY_TOFU_FILE: &str = "trusted_operator.pub";
/// A sealed-identity node's operator changes: the signed `SetOperators`
/// statements since the sealed set, in order.
pub const CHAIN_FILE: &str = "operators.chain";
/// `format` of the chain file.
pub const CHAIN_FORMAT: &str = "lockstep-operators-chain/1";
/// Bounds of the chain file: a hostile state partition cannot make the
/// node read without end, and a full chain refuses further changes.
const MAX_CHAIN_BYTES: u64 = 4 << 20;
const MAX_CHAIN_ENTRIES: usize = 256;

/// One operator change as it was signed: the operator's key, the exact
/// canonical `AdminStatement` bytes (UTF-8 JSON) and the minisign
/// signature file over them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainEntry {
    pub operator: String,
    pub statement: String,
    pub signature: String,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ChainFile {
    format: String,
    entries: Vec<ChainEntry>,
}

/// The node's admin state, shared by all streams.
pub struct AdminState {
    pub key: Arc<DeviceKey>,
    pub state_dir: PathBuf,
    pub image_version: String,
    /// SHA-256 (hex) of the device record's canonical JSON.
    pub device_fingerprint: String,
    /// How the device key is protected (reported, never changed).
    pub key_protection: KeyProtection,
    /// The pinned operator set (empty: unprovisioned).
    operators: Mutex<Vec<NodeId>>,
    /// Sealed-identity nodes: the replayed chain behind `operators`;
    /// `None`: the set is pinned in `STATE/operators`.
    chain: Mutex<Option<Vec<ChainEntry>>>,
    /// Until when an unprovisioned node accepts its first enrolment
    /// (`--enroll-window-s`); `None`: never.
    enroll_until: Option<Instant>,
    pub store: BundleStore,
    /// One admin command at a time: two pushes racing would both pass the
    /// version check.
    busy: smol::lock::Mutex<()>,
    /// A/B image updates: boot info, floor, `PushImage` (image_update.rs).
    pub updates: crate::image_update::ImageUpdates,
}

impl AdminState {
    /// `operators` is the pinned set (`pin_operators`), or for a sealed
    /// identity the set after replaying `chain` (`replay_chain`).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        key: Arc<DeviceKey>,
        key_protection: KeyProtection,
        state_dir: PathBuf,
        image_version: String,
        device_fingerprint: String,
        operators: Vec<NodeId>,
        chain: Option<Vec<ChainEntry>>,
        enroll_until: Option<Instant>,
        updates: crate::image_update::ImageUpdates,
    ) -> AdminState {
        AdminState {
            key,
            key_protection,
            chain: Mutex::new(chain),
            store: BundleStore::new(&state_dir),
            state_dir,
            image_version,
            device_fingerprint,
            operators: Mutex::new(operators),
            enroll_until,
            busy: smol::lock::Mutex::new(()),
            updates,
        }
    }

    /// The keys admin commands and bundle releases must be signed by.
    pub fn trusted(&self) -> Vec<NodeId> {
        self.operators
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Sorted and deduplicated, so sets compare equal whatever their order.
fn normalise(keys: &[NodeId]) -> Vec<NodeId> {
    let mut v: Vec<NodeId> = keys.to_vec();
    v.sort_by_key(|k| k.to_base64());
    v.dedup();
    v
}

fn key_ids(keys: &[NodeId]) -> String {
    keys.iter()
        .map(|k| k.key_id_hex())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The operator set this node trusts, decided once at start:
///
/// - `STATE/operators` if it exists: it wins; a config or provisioning
///   file naming another set is ignored with a warning;
/// - else the configured set (image config, provisioning file), pinned now;
/// - else a legacy TOFU key (`trusted_operator.pub`), pinned now;
/// - else none: the node is unprovisioned.
pub fn pin_operators(state_dir: &Path, configured: &[NodeId]) -> anyhow::Result<Vec<NodeId>> {
    if configured.len() > MAX_TRUSTED_OPERATORS {
        anyhow::bail!(
            "{} trusted operators configured; at most {MAX_TRUSTED_OPERATORS}: shorten trusted_operators",
            configured.len()
        );
    }
    let configured = normalise(configured);
    if let Some(pinned) = read_operators(state_dir)? {
        if !configured.is_empty() && configured != pinned {
            tracing::warn!(
                pinned = %key_ids(&pinned),
                configured = %key_ids(&configured),
                "IGNORING trusted_operators from the config/provisioning file: this node's operators are pinned in {}; change them with `lockstep-fleet operators set` (signed by a current operator)",
                state_dir.join(OPERATORS_FILE).display()
            );
        }
        return Ok(pinned);
    }
    let chosen = if !configured.is_empty() {
        configured
    } else {
        match read_legacy_tofu(state_dir)? {
            Some(k) => vec![k],
            None => return Ok(Vec::new()),
        }
    };
    write_operators(state_dir, &chosen).map_err(|e| {
        anyhow::anyhow!(
            "cannot pin the operator set in {}: {e}",
            state_dir.display()
        )
    })?;
    tracing::info!(operators = %key_ids(&chosen), "operator set pinned in the state directory");
    Ok(chosen)
}

fn read_operators(state_dir: &Path) -> anyhow::Result<Option<Vec<NodeId>>> {
    let path = state_dir.join(OPERATORS_FILE);
    let mut text = String::new();
    match std::fs::File::open(&path) {
        Ok(f) => f
            .take(MAX_OPERATORS_FILE_BYTES as u64 + 1)
            .read_to_string(&mut text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => anyhow::bail!("{}: {e}", path.display()),
    };
    let fix = "restore it from a backup of the state partition, or reflash the node";
    if text.len() > MAX_OPERATORS_FILE_BYTES {
        anyhow::bail!(
            "{} is over {MAX_OPERATORS_FILE_BYTES} bytes; {fix}",
            path.display()
        );
    }
    let mut keys = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        keys.push(NodeId::parse(line).map_err(|e| {
            anyhow::anyhow!(
                "{}: {line:?} is not a minisign public key ({e}); {fix}",
                path.display()
            )
        })?);
    }
    if keys.is_empty() || keys.len() > MAX_TRUSTED_OPERATORS {
        anyhow::bail!(
            "{} holds {} operator keys, not 1 to {MAX_TRUSTED_OPERATORS}; {fix}",
            path.display(),
            keys.len()
        );
    }
    Ok(Some(normalise(&keys)))
}

fn read_legacy_tofu(state_dir: &Path) -> anyhow::Result<Option<NodeId>> {
    let path = state_dir.join(LEGACY_TOFU_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => NodeId::parse(&text)
            .map(Some)
            .map_err(|e| anyhow::anyhow!("{}: {e}; restore or delete it", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::anyhow!("{}: {e}", path.display())),
    }
}

/// Replaces `STATE/operators` atomically and durably: a crash leaves the
/// old set or the new one.
fn write_operators(state_dir: &Path, keys: &[NodeId]) -> std::io::Result<()> {
    use std::io::Write;
    let path = state_dir.join(OPERATORS_FILE);
    let tmp = state_dir.join(format!(".{OPERATORS_FILE}.tmp-{}", std::process::id()));
    let mut text = String::from(
        "# lockstepd's pinned operator keys (minisign); change them with `lockstep-fleet operators set`\n",
    );
    for k in keys {
        text.push_str(&k.to_base64());
        text.push('\n');
    }
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(state_dir)?.sync_all()?;
    // The legacy file is superseded; left behind it would only confuse.
    let _ = std::fs::remove_file(state_dir.join(LEGACY_TOFU_FILE));
    Ok(())
}

/// The operator set of a sealed-identity node: the sealed set, then every
/// `SetOperators` in `STATE/operators.chain` that names this node and is
/// signed by a key of the set current at that point. The first entry that
/// fails stops the replay with a loud error: the node serves with the last
/// good set, and its next change rewrites the chain from there. Returns the
/// set and the good entries.
pub fn replay_chain(
    state_dir: &Path,
    node: &NodeId,
    sealed: &[NodeId],
) -> (Vec<NodeId>, Vec<ChainEntry>) {
    let path = state_dir.join(CHAIN_FILE);
    let mut current = normalise(sealed);
    let file = match read_chain(&path) {
        Ok(None) => return (current, Vec::new()),
        Ok(Some(f)) => f,
        Err(e) => {
            tracing::error!(error = %e, operators = %key_ids(&current), "OPERATOR CHAIN UNREADABLE: serving with the sealed operator set; someone may have tampered with the state partition");
            return (current, Vec::new());
        }
    };
    let mut good = Vec::new();
    for (i, entry) in file.entries.into_iter().enumerate() {
        if i == MAX_CHAIN_ENTRIES {
            tracing::error!("OPERATOR CHAIN REFUSED after {MAX_CHAIN_ENTRIES} entries, its limit: serving with the last good operator set");
            break;
        }
        match verify_entry(&entry, node, &current) {
            Ok(next) => {
                current = next;
                good.push(entry);
            }
            Err(e) => {
                tracing::error!(
                    entry = i,
                    error = %e,
                    operators = %key_ids(&current),
                    "OPERATOR CHAIN REFUSED at entry {i} of {}: replay stopped there, serving with the last good operator set; someone may have tampered with the state partition",
                    path.display()
                );
                break;
            }
        }
    }
    if !good.is_empty() {
        tracing::info!(changes = good.len(), operators = %key_ids(&current), "operator set replayed from the sealed set and the signed chain");
    }
    (current, good)
}

fn read_chain(path: &Path) -> anyhow::Result<Option<ChainFile>> {
    let mut bytes = Vec::new();
    match std::fs::File::open(path) {
        Ok(f) => f
            .take(MAX_CHAIN_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => anyhow::bail!("{}: {e}", path.display()),
    };
    if bytes.len() as u64 > MAX_CHAIN_BYTES {
        anyhow::bail!("{} is over {MAX_CHAIN_BYTES} bytes", path.display());
    }
    let file: ChainFile = serde_json::from_slice(&bytes)
        .map_err(|e| anyhow::anyhow!("{} is not an operator chain: {e}", path.display()))?;
    if file.format != CHAIN_FORMAT {
        anyhow::bail!(
            "{} has format {:?}, not {CHAIN_FORMAT:?}",
            path.display(),
            file.format
        );
    }
    Ok(Some(file))
}

/// Checks one chain entry against the set current before it; returns the
/// set after it.
fn verify_entry(
    entry: &ChainEntry,
    node: &NodeId,
    current: &[NodeId],
) -> Result<Vec<NodeId>, String> {
    let operator = NodeId::parse(&entry.operator)
        .map_err(|e| format!("its operator key is not a minisign key: {e}"))?;
    if !current.contains(&operator) {
        return Err(format!(
            "signed by operator {}, not in the set current at that point ({})",
            operator.key_id_hex(),
            key_ids(current)
        ));
    }
    Signature::parse(&entry.signature)
        .and_then(|s| s.verify(&operator, entry.statement.as_bytes()))
        .map_err(|e| format!("its signature does not verify: {e}"))?;
    let statement: AdminStatement = serde_json::from_str(&entry.statement)
        .map_err(|e| format!("its statement is not an admin statement: {e}"))?;
    if statement.format != ADMIN_FORMAT {
        return Err(format!("statement format {:?}", statement.format));
    }
    if statement.node != node.to_base64() {
        return Err("the statement names another node".into());
    }
    match statement.action {
        AdminAction::SetOperators { keys } => parse_set(&keys),
        _ => Err("the statement is not a SetOperators".into()),
    }
}

/// Replaces `STATE/operators.chain` atomically and durably.
fn write_chain(state_dir: &Path, entries: &[ChainEntry]) -> std::io::Result<()> {
    use std::io::Write;
    let file = ChainFile {
        format: CHAIN_FORMAT.to_string(),
        entries: entries.to_vec(),
    };
    let bytes = serde_json::to_vec_pretty(&file).map_err(std::io::Error::other)?;
    let path = state_dir.join(CHAIN_FILE);
    let tmp = state_dir.join(format!(".{CHAIN_FILE}.tmp-{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(state_dir)?.sync_all()
}

/// A new operator set from `SetOperators` keys: 1 to
/// `MAX_TRUSTED_OPERATORS` minisign keys, normalised.
fn parse_set(keys: &[String]) -> Result<Vec<NodeId>, String> {
    let mut parsed = Vec::with_capacity(keys.len().min(MAX_TRUSTED_OPERATORS + 1));
    for k in keys.iter().take(MAX_TRUSTED_OPERATORS + 1) {
        parsed.push(
            NodeId::parse(k)
                .map_err(|e| format!("operator key {k:?} is not a minisign public key: {e}"))?,
        );
    }
    let new = normalise(&parsed);
    if new.is_empty() || keys.len() > MAX_TRUSTED_OPERATORS {
        return Err(format!(
            "an operator set has 1 to {MAX_TRUSTED_OPERATORS} keys, not {}",
            keys.len()
        ));
    }
    Ok(new)
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
    // Commands that change the node run one at a time; reading metrics
    // changes nothing, so a scrape never waits behind a long image push.
    // The action is only a hint here: `execute` checks the same statement
    // bytes (signature, node, nonce, trust) before it acts on them.
    let read_only = serde_json::from_slice::<AdminStatement>(&command.statement)
        .is_ok_and(|s| s.action == AdminAction::Metrics);
    let _one_at_a_time = if read_only {
        None
    } else {
        Some(admin.busy.lock().await)
    };
    let outcome = execute(reader, shared, &nonce, command).await;
    let (ok, message, registration, metrics) = match outcome {
        Ok(Done {
            message,
            registration,
            metrics,
        }) => (true, message, registration, metrics),
        Err(m) => {
            tracing::warn!(reason = %m, "admin command refused");
            (false, m, None, None)
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
        registration,
        metrics,
    });
    write_frame(send, &reply.to_frame()).await.map_err(wire)
}

/// A command that succeeded: its one-line message and, for
/// `SignRegistration`, the signed registration, for `Metrics`, the
/// exposition.
struct Done {
    message: String,
    registration: Option<lockstep_protocol::RegistrationSignature>,
    metrics: Option<String>,
}

impl From<String> for Done {
    fn from(message: String) -> Done {
        Done {
            message,
            registration: None,
            metrics: None,
        }
    }
}

/// The node's metrics exposition, with the gauges that describe state held
/// elsewhere set from it now, so each scrape is exact: the queue's depth,
/// the evidence retained, whether the device is certified for the active
/// bundle, each device from its own queue and certification.
fn metrics(shared: &Shared) -> Result<String, String> {
    let bundle_id = shared.current_bundle_id();
    for device in shared.devices.all() {
        device.metrics.set_queue_depth(device.queue.len() as u64);
        device
            .metrics
            .set_certified(device.certification.verdict(&bundle_id).certified);
        device
            .metrics
            .set_serving(device.refusal(&bundle_id).is_none());
    }
    let (jobs, bytes) = shared.retention.usage();
    shared.metrics.set_evidence_retained(jobs, bytes);
    let text = shared.metrics.exposition(&bundle_id);
    if text.len() > lockstep_limits::MAX_METRICS_BYTES {
        // Cannot happen with the registry's fixed families and bounded
        // devices; refused rather than sent, which the fleet would refuse.
        return Err(format!(
            "the metrics are {} bytes, over the {}-byte bound",
            text.len(),
            lockstep_limits::MAX_METRICS_BYTES
        ));
    }
    Ok(text)
}

/// The facts a registration states, read from the node's own state: the
/// key protection, the report its receipts are certified under (none when
/// they say uncertified) and the active bundle.
fn node_facts(shared: &Shared) -> crate::chain_identity::NodeFacts {
    let bundle_id = shared.current_bundle_id();
    // The first device's certification (a registration names one report).
    let certification = &shared.devices.all()[0].certification;
    let certification_report_sha256 = if certification.receipts_certified(&bundle_id) {
        certification.verdict(&bundle_id).report_sha256
    } else {
        None
    };
    crate::chain_identity::NodeFacts {
        key_protection: shared.admin.key_protection,
        certification_report_sha256,
        bundle_id,
    }
}

fn node_info(shared: &Shared) -> NodeInfo {
    let admin = &shared.admin;
    let active = shared.active.get();
    NodeInfo {
        node_id: shared.node_id.clone(),
        device_fingerprint: admin.device_fingerprint.clone(),
        device: shared.devices.names(),
        bundle_version: active.version,
        image_version: admin.image_version.clone(),
        certified: shared.devices.any_certified(&active.bundle_id),
        certification_report_sha256: shared.devices.all()[0]
            .certification
            .verdict(&active.bundle_id)
            .report_sha256,
        bundle_id: active.bundle_id,
        trusted_operators: admin.trusted().iter().map(|k| k.to_base64()).collect(),
        key_protection: admin.key_protection,
        slot: admin.updates.slot_info(),
        chain_address: shared.chain.address(),
    }
}

/// Checks and runs one command; `Err` is the one-line refusal.
async fn execute(
    reader: &mut FrameReader,
    shared: &Shared,
    nonce: &[u8; 32],
    command: AdminCommand,
) -> Result<Done, String> {
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
    let message = match statement.action {
        AdminAction::Enroll => {
            if is_trusted {
                return Ok(
                    format!("enrolled; operator {} is trusted", operator.key_id_hex()).into(),
                );
            }
            if !trusted.is_empty() {
                return Err(untrusted(&operator, &trusted));
            }
            enroll_first(admin, &operator)
        }
        AdminAction::SignRegistration {
            chain_id,
            registry,
            operator: account,
            attestation_digest,
        } => {
            if !is_trusted {
                return Err(untrusted(&operator, &trusted));
            }
            if command.bundle.is_some() || command.image.is_some() {
                return Err("SignRegistration refused: it carries no bundle or image; send the command alone".into());
            }
            let registration = crate::chain_identity::sign_registration(
                &shared.chain,
                &node_facts(shared),
                chain_id,
                &registry,
                &account,
                &attestation_digest,
            )?;
            tracing::info!(
                operator = %operator.key_id_hex(),
                chain_id,
                registry = %registry,
                "signed a registration"
            );
            return Ok(Done {
                message: format!(
                    "registration signed for chain {chain_id}, registry {registry}, operator account {account}: node address {}",
                    registration.node_address
                ),
                registration: Some(registration),
                metrics: None,
            });
        }
        AdminAction::Metrics => {
            if !is_trusted {
                return Err(untrusted(&operator, &trusted));
            }
            if command.bundle.is_some() || command.image.is_some() {
                return Err(
                    "Metrics refused: it carries no bundle or image; send the command alone".into(),
                );
            }
            return Ok(Done {
                message: "metrics".into(),
                registration: None,
                metrics: Some(metrics(shared)?),
            });
        }
        AdminAction::SetOperators { keys } => {
            if !is_trusted {
                return Err(untrusted(&operator, &trusted));
            }
            set_operators(shared, &operator, &keys, &command)
        }
        AdminAction::PushBundle { bundle_id, version } => {
            if !is_trusted {
                return Err(untrusted(&operator, &trusted));
            }
            push(
                reader,
                shared,
                &operator,
                &trusted,
                command.bundle,
                bundle_id,
                version,
            )
            .await
        }
        AdminAction::PushImage {
            image_version,
            version,
        } => {
            if !is_trusted {
                return Err(untrusted(&operator, &trusted));
            }
            let outcome = crate::image_update::push(
                reader,
                &admin.updates,
                &trusted,
                command.image,
                &image_version,
                version,
            )
            .await;
            if outcome.is_err() {
                // The rest of a refused image is not wanted: stop it, so
                // the fleet stops sending and reads the refusal.
                reader.stop();
            }
            outcome
        }
    };
    message.map(Done::from)
}

/// The first enrolment of a node that trusts no operator: only inside the
/// window `--enroll-window-s` opened at start.
fn enroll_first(admin: &AdminState, operator: &NodeId) -> Result<String, String> {
    match admin.enroll_until {
        None => {
            return Err("this node is unprovisioned (it trusts no operator) and has no enrolment window open, so it refuses to trust whoever asks first: provision it (`lockstep-fleet provision-image` writes trusted_operators into the ESP), or restart lockstepd with --enroll-window-s N to accept the first enrolment within N seconds".into())
        }
        Some(until) if Instant::now() > until => {
            return Err("this node's first-enrolment window (--enroll-window-s) has closed, so it refuses to trust whoever asks first: restart lockstepd with --enroll-window-s N and enroll within N seconds, or provision it".into())
        }
        Some(_) => {}
    }
    let mut operators = admin.operators.lock().unwrap_or_else(|e| e.into_inner());
    if !operators.is_empty() {
        return Err("another operator enrolled this node at the same moment; retry".into());
    }
    let pinned = vec![operator.clone()];
    write_operators(&admin.state_dir, &pinned)
        .map_err(|e| format!("cannot pin the operator key: {e}; nothing changed"))?;
    *operators = pinned;
    tracing::warn!(
        operator = %operator,
        "first-enrolment window: trusting and pinning the first enrolling operator (TOFU)"
    );
    Ok(format!(
        "enrolled; operator {} is now this node's pinned operator (first enrolment)",
        operator.key_id_hex()
    ))
}

/// Replaces the pinned operator set (the sender is already trusted).
/// A sealed-identity node appends the signed command to its chain instead
/// of rewriting `STATE/operators`.
fn set_operators(
    shared: &Shared,
    operator: &NodeId,
    keys: &[String],
    command: &AdminCommand,
) -> Result<String, String> {
    let admin = &shared.admin;
    let new = parse_set(keys).map_err(|e| format!("{e}; nothing changed"))?;
    // The active bundle is re-verified against the operators at every
    // start: a set that cannot verify its release would orphan it.
    let active = shared.active.get();
    if active.version > 0 {
        admin.store.release_signed_by(&active, &new).map_err(|e| {
            format!(
                "the new set cannot verify the active bundle's release ({e}); include the key that signed release {}, or push a release signed by the new set first; nothing changed",
                active.version
            )
        })?;
    }
    let mut operators = admin.operators.lock().unwrap_or_else(|e| e.into_inner());
    let mut chain = admin.chain.lock().unwrap_or_else(|e| e.into_inner());
    match chain.as_mut() {
        None => write_operators(&admin.state_dir, &new)
            .map_err(|e| format!("cannot pin the new operator set: {e}; nothing changed"))?,
        Some(entries) => {
            if entries.len() >= MAX_CHAIN_ENTRIES {
                return Err(format!(
                    "this node's operator chain holds {MAX_CHAIN_ENTRIES} changes, its limit; give the node a new sealed identity (reprovision it); nothing changed"
                ));
            }
            let statement = String::from_utf8(command.statement.clone())
                .map_err(|_| "the admin statement is not UTF-8; nothing changed".to_string())?;
            let mut next = entries.clone();
            next.push(ChainEntry {
                operator: operator.to_base64(),
                statement,
                signature: command.signature.clone(),
            });
            write_chain(&admin.state_dir, &next).map_err(|e| {
                format!("cannot record the new operator set in the chain: {e}; nothing changed")
            })?;
            *entries = next;
        }
    }
    *operators = new.clone();
    tracing::warn!(
        by = %operator.key_id_hex(),
        operators = %key_ids(&new),
        "operator set replaced by a signed SetOperators"
    );
    Ok(format!(
        "operator set replaced: {} key(s): {}",
        new.len(),
        key_ids(&new)
    ))
}

/// A bundle push: receive, verify, stage, then the worker switches and
/// records it (bundle_switch.rs).
async fn push(
    reader: &mut FrameReader,
    shared: &Shared,
    operator: &NodeId,
    trusted: &[NodeId],
    upload: Option<lockstep_protocol::admin::BundleUpload>,
    bundle_id: String,
    version: u64,
) -> Result<String, String> {
    let admin = &shared.admin;
    let upload = upload.ok_or("a bundle push without a bundle; nothing changed")?;
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
    let current = shared.active.get();
    // Re-running a rollout reaches nodes that already switched: the same
    // release again is a success that changes nothing, not a rollback.
    if version == current.version && bundle_id == current.bundle_id {
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
        .stage(&upload, trusted, (&bundle_id, version), current.floor)
        .map_err(|e| {
            format!(
                "bundle refused: {e}; still serving bundle {}",
                current.bundle_id
            )
        })?;
    let new_id = stored.bundle.id_hex();
    let new_version = stored.release.version;
    // The first serving device proves the bundle and records the switch;
    // then every other device follows, each with its own self-test.
    let devices = shared.devices.all();
    let Some(first) = devices.iter().find(|d| d.problem().is_none()) else {
        admin.store.discard(&new_id, new_version);
        return Err("every device of this node is out of service; see `lockstep status`".into());
    };
    let (reply, outcome) = smol::channel::bounded(1);
    let switch = Work::SwitchBundle(BundleSwitch {
        bundle: stored.bundle.clone(),
        version: new_version,
        record: true,
        reply,
    });
    if first.queue.try_send(switch).is_err() {
        admin.store.discard(&new_id, new_version);
        return Err("the node is busy with jobs; retry the push later".into());
    }
    let switched = outcome
        .recv()
        .await
        .map_err(|_| "the worker stopped during the switch".to_string())?;
    let record = switched.map_err(|e| {
        admin.store.discard(&new_id, new_version);
        format!("{e}; still serving bundle {}", current.bundle_id)
    })?;
    for device in devices
        .iter()
        .filter(|d| d.index != first.index && d.problem().is_none())
    {
        // The switch is recorded: a device that cannot follow it would
        // serve another bundle than the node names, so it stops serving
        // (a restart opens every device with the recorded bundle).
        // It waits for room behind the jobs already queued there, within
        // what those jobs may take.
        let (reply, outcome) = smol::channel::bounded(1);
        let switch = Work::SwitchBundle(BundleSwitch {
            bundle: stored.bundle.clone(),
            version: new_version,
            record: false,
            reply,
        });
        let wait = shared.job_timeout * (lockstep_limits::JOB_QUEUE_BOUND as u32 + 2);
        let followed = crate::stream::within(wait, async {
            device.queue.send(switch).await;
            outcome
                .recv()
                .await
                .unwrap_or_else(|_| Err("its worker stopped during the switch".into()))
        })
        .await
        .unwrap_or_else(|| Err(format!("it did not finish within {} s", wait.as_secs())));
        if let Err(e) = followed {
            device.take_out_of_service(format!(
                "it did not switch to bundle {} ({e}); restart the node",
                record.bundle_id
            ));
        }
    }
    tracing::info!(bundle = %record.bundle_id, version = record.version, "bundle switched by operator {}", operator.key_id_hex());
    // A certification report names the bundle it certifies: the verdict
    // for the new bundle is evaluated afresh.
    let verdict = first.certification.verdict(&record.bundle_id);
    tracing::info!(certified = verdict.certified, reason = %verdict.reason, "certification re-evaluated for the new bundle");
    Ok(format!(
        "switched to bundle {} (release {}); certified: {}",
        record.bundle_id,
        record.version,
        if verdict.certified { "yes" } else { "no" }
    ))
}

fn untrusted(operator: &NodeId, trusted: &[NodeId]) -> String {
    if trusted.is_empty() {
        return format!(
            "this node trusts no operator yet, so operator {} may not administer it: provision it, or enroll it inside its first-enrolment window",
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

#[cfg(test)]
mod tests {
    use super::*;
    use lockstep_identity::SigningKey;

    fn key() -> NodeId {
        SigningKey::generate().public().clone()
    }

    #[test]
    fn the_first_configured_set_is_pinned_and_wins_afterwards() {
        let state = tempfile::tempdir().unwrap();
        let (a, b) = (key(), key());
        // Unprovisioned: nothing pinned, nothing written.
        assert!(pin_operators(state.path(), &[]).unwrap().is_empty());
        assert!(!state.path().join(OPERATORS_FILE).exists());
        // First start with a set: pinned.
        let pinned = pin_operators(state.path(), &[a.clone(), a.clone()]).unwrap();
        assert_eq!(pinned, vec![a.clone()]);
        // Another set in the config (a rewritten ESP): ignored.
        assert_eq!(
            pin_operators(state.path(), std::slice::from_ref(&b)).unwrap(),
            vec![a.clone()]
        );
        // No set in the config (the ESP did not mount): still pinned.
        assert_eq!(pin_operators(state.path(), &[]).unwrap(), vec![a.clone()]);
        // The order of a set does not matter.
        write_operators(state.path(), &normalise(&[a.clone(), b.clone()])).unwrap();
        assert_eq!(
            pin_operators(state.path(), &[b.clone(), a.clone()]).unwrap(),
            normalise(&[a, b])
        );
    }

    #[test]
    fn a_legacy_tofu_key_is_migrated_and_a_damaged_pin_is_an_error() {
        let state = tempfile::tempdir().unwrap();
        let a = key();
        std::fs::write(state.path().join(LEGACY_TOFU_FILE), a.to_public_key_file()).unwrap();
        assert_eq!(pin_operators(state.path(), &[]).unwrap(), vec![a.clone()]);
        assert!(!state.path().join(LEGACY_TOFU_FILE).exists());
        assert_eq!(read_operators(state.path()).unwrap(), Some(vec![a]));
        std::fs::write(state.path().join(OPERATORS_FILE), "not a key\n").unwrap();
        let err = pin_operators(state.path(), &[key()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a minisign public key"), "{err}");
        std::fs::write(state.path().join(OPERATORS_FILE), "# empty\n").unwrap();
        let err = pin_operators(state.path(), &[]).unwrap_err().to_string();
        assert!(err.contains("0 operator keys"), "{err}");
    }
}
