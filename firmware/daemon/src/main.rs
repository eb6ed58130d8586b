//! `lockstepd`: the appliance daemon.
//!
//! Network tasks (smol + quinn) receive jobs, validate them and hand them
//! to the GPU worker thread through a bounded embassy-sync channel; a full
//! queue is answered "busy, retry after". The worker owns the backend,
//! runs each job with tracing on, and signs its receipt with the device
//! key. The key comes from exactly one source, chosen on the command line:
//! `--sealed-identity NAME` (the TPM-sealed systemd credential that
//! `lockstepd new-identity` made) or `--file-key` (`STATE/device.key`,
//! created on first start: nodes without a TPM, development).

#![forbid(unsafe_code)]

mod admin;
mod admission;
mod attest_stream;
mod bundle_store;
mod bundle_switch;
mod certification;
mod certify_stream;
mod chain_identity;
mod connection;
mod devices;
mod evidence;
mod image_update;
mod peer_fetch;
mod peer_serve;
mod retention;
mod self_test;
mod stream;
mod worker;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use lockstep_backend::{Backend, CpuBackend};
use lockstep_identity::{DeviceKey, KeyProtection, NodeId, SealedIdentity};
use lockstep_kernels::Bundle;
use lockstep_vulkan::VulkanBackend;
use serde::Deserialize;

use crate::stream::Shared;
use crate::worker::WorkerContext;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
enum BackendKind {
    Vulkan,
    Cpu,
}

#[derive(Parser)]
#[command(
    name = "lockstepd",
    version,
    about = "Lockstep appliance daemon: QUIC job endpoint with signed receipts"
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Take the device key and the first operator set from the systemd
    /// credential NAME ($CREDENTIALS_DIRECTORY/NAME, decrypted by systemd
    /// from a TPM-sealed credential made with `lockstepd new-identity`).
    #[arg(long, value_name = "NAME")]
    sealed_identity: Option<String>,
    /// Keep the device key in STATE/device.key (created on first start),
    /// unprotected on disk: for nodes without a TPM and development. A flag
    /// only, never a config key: whoever writes the ESP must not be able to
    /// switch a node to a file key.
    #[arg(long)]
    file_key: bool,
    /// Address to listen on (UDP), e.g. 0.0.0.0:4433; port 0 picks one.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// State directory: the device key lives here.
    #[arg(long)]
    state: Option<PathBuf>,
    /// Serve on this one Vulkan device only (its index in `lockstep
    /// devices`); see --devices.
    #[arg(long, conflicts_with = "devices")]
    device: Option<usize>,
    /// The Vulkan devices to serve on: `all` (every usable one, the
    /// default) or a comma-separated list of indices (`lockstep devices`)
    /// and device UUIDs. Each gets its own worker, queue and certification.
    #[arg(long, value_name = "all|N,UUID,...")]
    devices: Option<String>,
    /// Where jobs run; the CPU reference is for development.
    #[arg(long, value_enum)]
    backend: Option<BackendKind>,
    /// Seconds a job may run before the client is told it timed out.
    #[arg(long)]
    job_timeout_s: Option<u64>,
    /// TOML file with the same settings (flags win).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Provisioning file (TOML, same settings), read after --config when
    /// it exists; its settings win over the config file's. On the
    /// appliance it is on the ESP, written by the fleet before flashing.
    #[arg(long, value_name = "FILE")]
    provision: Option<PathBuf>,
    /// Seconds each job's evidence (every intermediate tensor, for spot
    /// checks and disputes) is kept.
    #[arg(long)]
    retention_window_s: Option<u64>,
    /// Disk budget for retained evidence, all jobs together; the oldest go
    /// first. 0 keeps none.
    #[arg(long)]
    retention_bytes: Option<u64>,
    /// Test builds only (this crate's `fault-injection` feature): flip a
    /// bit of op K's output, `op=K[,bit=B]` or `op=all[,bit=B]`.
    #[arg(long, hide = true, value_name = "op=K[,bit=B]")]
    inject_fault: Option<String>,
    /// Test builds only (this crate's `fault-injection` feature): the GPU
    /// worker panics on the first job.
    #[arg(long, hide = true)]
    inject_worker_panic: bool,
    /// Test builds only (this crate's `fault-injection` feature): the
    /// start-up self-test sees one wrong bit of a matmul.
    #[arg(long, hide = true)]
    inject_self_test_fault: bool,
    /// Test builds only (this crate's `fault-injection` feature): device
    /// INDEX is lost (`VK_ERROR_DEVICE_LOST`) under its first job.
    #[arg(long, hide = true, value_name = "INDEX")]
    inject_device_lost: Option<u32>,
    /// An unprovisioned node (no operator pinned, none configured) trusts
    /// the first operator that enrolls within N seconds of this start; without
    /// this flag it refuses every enrolment. A flag only, never a config
    /// key: whoever can write the ESP must not be able to open it.
    #[arg(long, value_name = "N")]
    enroll_window_s: Option<u64>,
    /// A certifier's minisign public key whose certification reports this
    /// node accepts (repeatable; added to the config's trusted_certifiers).
    #[arg(long, value_name = "KEY")]
    trust_certifier: Vec<String>,
    /// Development only: serve without a passing certification report;
    /// every receipt then says "certified": false.
    #[arg(long)]
    uncertified: bool,
    /// Host memory, in bytes, that strangers' frames and admitted jobs
    /// (program, inputs, outputs) may hold at once; what does not fit is
    /// answered busy. Size `MemoryMax=` from it (docs/protocol.md).
    #[arg(long)]
    memory_budget_bytes: Option<u64>,
    /// Connections held at once, from everyone together.
    #[arg(long)]
    max_connections: Option<usize>,
    /// Connections held at once from one address (IPv6: one /64).
    #[arg(long)]
    max_connections_per_source: Option<usize>,
    /// Free bytes that retained evidence never takes from its filesystem.
    #[arg(long)]
    state_free_floor_bytes: Option<u64>,
    /// Free bytes the state directory keeps after an image update's UKI is
    /// staged there.
    #[arg(long)]
    update_free_floor_bytes: Option<u64>,
    /// The TPM that attestations use, as a TSS2 TCTI (tpm2-tools'
    /// TPM2TOOLS_TCTI), e.g. swtpm:host=127.0.0.1,port=2321; default
    /// device:/dev/tpmrm0.
    #[arg(long, value_name = "TCTI")]
    tpm_tcti: Option<String>,
    /// A/B image: the directory of the slots' partitions by label
    /// (DIR/lockstep-root-a, lockstep-verity-a, lockstep-root-b,
    /// lockstep-verity-b; the image passes /dev/disk/by-partlabel). Image
    /// updates are written to the inactive slot's. A flag only, never a
    /// config key: whoever writes the ESP must not choose which devices
    /// lockstepd writes.
    #[arg(long, value_name = "DIR")]
    slots: Option<PathBuf>,
    /// A/B image: the JSON the image writes at boot (slot, variant,
    /// image_version, rolled_back_from, other_version). Image updates are
    /// enabled only with both --slots and a valid --boot-info; a bad file
    /// disables them (logged), it never stops the node.
    #[arg(long, value_name = "PATH")]
    boot_info: Option<PathBuf>,
    /// Written (atomically, one line) once lockstepd listens and its
    /// start-up self-test passed: the image's boot-health check waits for
    /// it before it blesses the boot.
    #[arg(long, value_name = "PATH")]
    ready_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Print a fresh sealed identity (a new device key and the operator set
    /// of `trusted_operators` in the config/provisioning file) as JSON on
    /// stdout, which must be a pipe, e.g. into
    /// `systemd-creds encrypt --with-key=tpm2 - OUT`; the node id goes to
    /// stderr.
    NewIdentity {
        /// TOML file (as for the daemon).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Provisioning file (as for the daemon), read after --config.
        #[arg(long, value_name = "FILE")]
        provision: Option<PathBuf>,
    },
}

/// The configuration file: every field optional.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    state: Option<PathBuf>,
    device: Option<usize>,
    /// As `--devices`.
    devices: Option<String>,
    backend: Option<BackendKind>,
    job_timeout_s: Option<u64>,
    retention_window_s: Option<u64>,
    retention_bytes: Option<u64>,
    /// Operator public keys (minisign) allowed to administer this node,
    /// pinned in the state directory on first start; later a different set
    /// here is ignored (admin.rs).
    trusted_operators: Option<Vec<String>>,
    /// The appliance image's version, reported at enrollment.
    image_version: Option<String>,
    /// Certifier public keys (minisign) whose reports this node accepts.
    trusted_certifiers: Option<Vec<String>>,
    /// Development only: serve without certification (receipts say so).
    uncertified: Option<bool>,
    memory_budget_bytes: Option<u64>,
    max_connections: Option<usize>,
    max_connections_per_source: Option<usize>,
    state_free_floor_bytes: Option<u64>,
    /// The TPM's TCTI (see --tpm-tcti).
    tpm_tcti: Option<String>,
}

fn read_table(path: &Path) -> Result<toml::Table> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text)
        .with_context(|| format!("{} is not a valid lockstepd config", path.display()))
}

/// The config file, then the provisioning file (if present) over it, key
/// by key; unknown keys are refused after the merge.
fn load_config(config: Option<&Path>, provision: Option<&Path>) -> Result<FileConfig> {
    let mut merged = match config {
        Some(p) => read_table(p)?,
        None => toml::Table::new(),
    };
    if let Some(p) = provision.filter(|p| p.exists()) {
        merged.extend(read_table(p)?);
        tracing::info!(file = %p.display(), "provisioning file read");
    }
    let what = match (config, provision) {
        (Some(c), Some(p)) => format!("{} with {}", c.display(), p.display()),
        (Some(c), None) => c.display().to_string(),
        (None, Some(p)) => p.display().to_string(),
        (None, None) => "the configuration".to_string(),
    };
    FileConfig::deserialize(merged)
        .with_context(|| format!("{what} is not a valid lockstepd config"))
}

fn main() -> std::process::ExitCode {
    // Logs go to stderr (journald on the appliance); stdout carries only the
    // one "listening" line scripts read.
    tracing_subscriber::fmt()
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lockstepd: {e:#}");
            let code = if e.is::<WorkerPanicked>() || e.is::<SelfTestFailed>() {
                1
            } else {
                2
            };
            std::process::ExitCode::from(code)
        }
    }
}

/// `trusted_operators` of the merged config, parsed.
fn configured_operators(file: &FileConfig) -> Result<Vec<NodeId>> {
    let mut keys = Vec::new();
    for k in file.trusted_operators.iter().flatten() {
        keys.push(NodeId::parse(k).with_context(|| {
            format!("trusted_operators entry {k:?} is not a minisign public key")
        })?);
    }
    Ok(keys)
}

/// `lockstepd new-identity`: the secret goes only into a pipe (or socket),
/// never onto a terminal or into a file.
fn new_identity(config: Option<&Path>, provision: Option<&Path>) -> Result<()> {
    use std::io::Write;
    let stdout = std::io::stdout();
    let kind = rustix::fs::fstat(&stdout)
        .map(|st| rustix::fs::FileType::from_raw_mode(st.st_mode))
        .context("cannot inspect stdout")?;
    match kind {
        rustix::fs::FileType::Fifo | rustix::fs::FileType::Socket => {}
        other => {
            let what = match other {
                rustix::fs::FileType::RegularFile => "a regular file",
                rustix::fs::FileType::CharacterDevice => "a terminal or other device",
                _ => "not a pipe",
            };
            bail!("refusing to write a secret device key: stdout is {what}; pipe it into the sealing tool, e.g. `lockstepd new-identity --provision FILE | systemd-creds encrypt --with-key=tpm2 --name=lockstep-identity - OUT`");
        }
    }
    let file = load_config(config, provision)?;
    let mut operators = Vec::new();
    for k in configured_operators(&file)? {
        if !operators.contains(&k) {
            operators.push(k);
        }
    }
    if operators.is_empty() {
        bail!("no trusted_operators in the config/provisioning file: a sealed identity pins its first operator set; provision the node's operators first");
    }
    let identity =
        SealedIdentity::generate(operators).context("the trusted_operators cannot be sealed")?;
    let json = identity.to_json();
    let mut out = stdout.lock();
    out.write_all(json.as_bytes())
        .and_then(|()| out.flush())
        .context("writing the sealed identity to stdout")?;
    eprintln!("lockstepd: new identity {}", identity.node_id());
    Ok(())
}

/// Where the device key came from.
enum KeySource {
    Sealed(String),
    File,
}

/// Reads `$CREDENTIALS_DIRECTORY/NAME`.
fn load_sealed(name: &str) -> Result<SealedIdentity> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        bail!("--sealed-identity {name:?}: give the credential's name (a file name in $CREDENTIALS_DIRECTORY), not a path");
    }
    let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") else {
        bail!("--sealed-identity {name}: CREDENTIALS_DIRECTORY is not set; run lockstepd from its systemd unit with LoadCredentialEncrypted={name}:…, or start it with --file-key");
    };
    let path = PathBuf::from(dir).join(name);
    let mut bytes = zeroize::Zeroizing::new(Vec::new());
    std::fs::File::open(&path)
        .and_then(|f| {
            use std::io::Read;
            f.take(lockstep_identity::MAX_SEALED_IDENTITY_BYTES as u64 + 1)
                .read_to_end(&mut bytes)
        })
        .with_context(|| format!("sealed identity {}: cannot read it", path.display()))?;
    SealedIdentity::parse(&bytes).with_context(|| {
        format!(
            "sealed identity {} is not usable; make it again with `lockstepd new-identity`",
            path.display()
        )
    })
}

fn run() -> Result<()> {
    let args = Args::parse();
    if let Some(Command::NewIdentity { config, provision }) = &args.command {
        return new_identity(config.as_deref(), provision.as_deref());
    }
    let key_source = match (&args.sealed_identity, args.file_key) {
        (Some(name), false) => KeySource::Sealed(name.clone()),
        (None, true) => KeySource::File,
        (Some(_), true) => bail!("--sealed-identity and --file-key both given: a node has one device key source; give one"),
        (None, false) => bail!("no device key source: give --sealed-identity NAME (the TPM-sealed systemd credential made by `lockstepd new-identity`, decrypted into $CREDENTIALS_DIRECTORY), or --file-key to keep the key in STATE/device.key unprotected (nodes without a TPM, development)"),
    };
    let file = load_config(args.config.as_deref(), args.provision.as_deref())?;
    let Some(listen) = args.listen.or(file.listen) else {
        bail!("no listen address: give --listen ADDR:PORT or `listen` in the config file");
    };
    let Some(state) = args.state.or(file.state.clone()) else {
        bail!("no state directory: give --state DIR or `state` in the config file");
    };
    let backend_kind = args.backend.or(file.backend).unwrap_or(BackendKind::Vulkan);
    let device_choice = DeviceChoice::from(
        args.device.or(file.device),
        args.devices.as_deref().or(file.devices.as_deref()),
    )?;
    let job_timeout = Duration::from_secs(
        args.job_timeout_s
            .or(file.job_timeout_s)
            .unwrap_or(lockstep_limits::DEFAULT_JOB_TIMEOUT_S),
    );

    let fault = match &args.inject_fault {
        None => None,
        // This crate's own feature, not lockstep-program's: feature
        // unification (a test build of another crate) can turn that one on
        // in a release binary, never this one.
        Some(_) if !cfg!(feature = "fault-injection") => bail!(
            "--inject-fault needs a test build (cargo feature lockstep-daemon/fault-injection); this lockstepd cannot corrupt results"
        ),
        Some(spec) => Some(lockstep_program::fault::Fault::parse(spec)?),
    };
    if args.inject_worker_panic && !cfg!(feature = "fault-injection") {
        bail!("--inject-worker-panic needs a test build (cargo feature lockstep-daemon/fault-injection)");
    }
    if args.inject_device_lost.is_some() && !cfg!(feature = "fault-injection") {
        bail!("--inject-device-lost needs a test build (cargo feature lockstep-daemon/fault-injection)");
    }
    if args.inject_self_test_fault && !cfg!(feature = "fault-injection") {
        bail!("--inject-self-test-fault needs a test build (cargo feature lockstep-daemon/fault-injection)");
    }
    let inject_self_test_fault = args.inject_self_test_fault;
    let enroll_window = match args.enroll_window_s {
        Some(0) => {
            bail!("--enroll-window-s 0 opens no window; leave the flag out, or give seconds")
        }
        Some(n) if n > lockstep_limits::MAX_ENROLL_WINDOW_S => bail!(
            "--enroll-window-s {n} is over {} s; open a shorter window",
            lockstep_limits::MAX_ENROLL_WINDOW_S
        ),
        n => n.map(Duration::from_secs),
    };
    let started = Instant::now();
    let state_free_floor = args
        .state_free_floor_bytes
        .or(file.state_free_floor_bytes)
        .unwrap_or(lockstep_limits::DEFAULT_STATE_FREE_FLOOR_BYTES);
    let retention = Arc::new(retention::Retention::open(
        &state,
        Duration::from_secs(
            args.retention_window_s
                .or(file.retention_window_s)
                .unwrap_or(lockstep_limits::DEFAULT_RETENTION_WINDOW_S),
        ),
        args.retention_bytes
            .or(file.retention_bytes)
            .unwrap_or(lockstep_limits::DEFAULT_RETENTION_BYTES),
        state_free_floor,
    )?);
    let updates = image_update::ImageUpdates::open(
        &state,
        args.slots.clone(),
        args.boot_info.as_deref(),
        args.update_free_floor_bytes
            .unwrap_or(lockstep_limits::DEFAULT_UPDATE_FREE_FLOOR_BYTES),
    );
    // The config's image_version wins; an A/B image states its own.
    let image_version = file
        .image_version
        .clone()
        .or_else(|| updates.boot().map(|b| b.image_version.clone()))
        .unwrap_or_else(|| format!("dev (lockstepd {})", env!("CARGO_PKG_VERSION")));
    let memory_budget = args
        .memory_budget_bytes
        .or(file.memory_budget_bytes)
        .unwrap_or(lockstep_limits::DEFAULT_NODE_MEMORY_BUDGET_BYTES);
    let max_connections = args
        .max_connections
        .or(file.max_connections)
        .unwrap_or(lockstep_limits::MAX_CONNECTIONS);
    let max_per_source = args
        .max_connections_per_source
        .or(file.max_connections_per_source)
        .unwrap_or(lockstep_limits::MAX_CONNECTIONS_PER_SOURCE);
    if max_connections == 0 || max_per_source == 0 {
        bail!("max_connections and max_connections_per_source must be at least 1");
    }

    let tpm_tcti = args
        .tpm_tcti
        .clone()
        .or(file.tpm_tcti.clone())
        .unwrap_or_else(|| lockstep_tpm::DEFAULT_TCTI.to_string());
    if tpm_tcti.trim().is_empty() {
        bail!(
            "--tpm-tcti is empty; give a TCTI such as {}",
            lockstep_tpm::DEFAULT_TCTI
        );
    }
    let image_operators = configured_operators(&file)?;
    let (key, key_protection, operators, chain) = match &key_source {
        KeySource::File => {
            let (key, created) = DeviceKey::load_or_create(&state)?;
            if created {
                tracing::info!(state = %state.display(), "generated a new device key");
            }
            tracing::warn!(state = %state.display(), "device key from a file (--file-key): anyone who can read the state partition can take this node's identity");
            let operators = admin::pin_operators(&state, &image_operators)?;
            (key, KeyProtection::File, operators, None)
        }
        KeySource::Sealed(name) => {
            let (key, sealed) = load_sealed(name)?.into_parts();
            let mut configured = image_operators.clone();
            configured.sort_by_key(|k| k.to_base64());
            configured.dedup();
            let mut pinned = sealed.clone();
            pinned.sort_by_key(|k| k.to_base64());
            if !configured.is_empty() && configured != pinned {
                tracing::warn!("IGNORING trusted_operators from the config/provisioning file: this node's first operator set is sealed with its identity; change operators with `lockstep-fleet operators set` (signed by a current operator)");
            }
            std::fs::create_dir_all(&state)
                .with_context(|| format!("creating {}", state.display()))?;
            let (operators, chain) = admin::replay_chain(&state, key.node_id(), &sealed);
            tracing::info!(credential = %name, "device key from the TPM-sealed identity");
            (key, KeyProtection::TpmSealed, operators, Some(chain))
        }
    };
    let key = Arc::new(key);
    let node_id = key.node_id().to_base64();
    // The chain key is derived from the device key, sealed or not: it is
    // never stored, and only its address is ever logged.
    let node_chain = Arc::new(chain_identity::NodeChain::new(key.clone())?);
    let enroll_until = match (operators.is_empty(), enroll_window) {
        (true, Some(w)) => {
            tracing::warn!(
                seconds = w.as_secs(),
                "unprovisioned: the first operator to enroll within the window will be trusted"
            );
            Some(started + w)
        }
        (true, None) => {
            tracing::warn!("unprovisioned: no operator is trusted and enrolment is refused; provision the node or start it with --enroll-window-s N");
            None
        }
        (false, w) => {
            if w.is_some() {
                tracing::info!("--enroll-window-s ignored: this node's operators are pinned");
            }
            None
        }
    };
    // A bundle the fleet pushed earlier, verified again (hashes, float
    // model, operator signature); else the image's own. The rollback floor
    // is kept either way.
    let boot = bundle_store::BundleStore::new(&state).boot(&operators);
    if let Some(e) = &boot.problem {
        tracing::error!(error = %e, floor = boot.floor, "the active pushed bundle does not load; serving the image's bundle: push a release newer than the floor");
    }
    let (bundle, bundle_version) = match boot.stored {
        Some(stored) => (stored.bundle, stored.release.version),
        None => (Bundle::embedded()?, 0),
    };
    let bundle_id = bundle.id_hex();
    let active = Arc::new(bundle_store::ActiveBundle::new(
        bundle_store::ActiveRecord {
            bundle_id: bundle_id.clone(),
            version: bundle_version,
            floor: boot.floor,
        },
    ));

    let trusted_certifiers = trusted_certifiers(
        &args.trust_certifier,
        file.trusted_certifiers.as_deref().unwrap_or_default(),
    )?;
    let uncertified = args.uncertified || file.uncertified.unwrap_or(false);

    // A worker panic ends the process (non-zero) after the failed jobs'
    // errors went out, so that systemd restarts the node.
    let (panic_tx, panic_rx) = smol::channel::bounded::<String>(1);
    // A ready file left by an earlier run must not vouch for this one.
    if let Some(path) = &args.ready_file {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                bail!("cannot remove the old ready file {}: {e}", path.display())
            }
            _ => {}
        }
    }
    // One worker thread per device owns it: each opens its device and
    // self-tests it there, reports back, and waits for its context.
    let opened = open_devices(
        &device_choice,
        backend_kind,
        &bundle,
        inject_self_test_fault,
    )?;
    let self_test_ops: usize = opened.iter().map(|d| d.self_test_ops).sum();
    let metrics = Arc::new(lockstep_metrics::NodeMetrics::new(env!(
        "CARGO_PKG_VERSION"
    )));
    let mut certifications: Vec<(String, Arc<certification::Certification>)> = Vec::new();
    let mut slots = Vec::new();
    for (index, d) in opened.iter().enumerate() {
        let uuid = hex::encode(d.fingerprint.device_uuid);
        // Devices with one UUID share a certification: a report binds a
        // UUID. The first device's lives where a one-device node's always
        // did; the others' under devices/UUID.
        let certification = match certifications.iter().find(|(u, _)| *u == uuid) {
            Some((_, c)) => c.clone(),
            None => {
                let dir = if index == 0 {
                    state.clone()
                } else {
                    state.join("devices").join(&uuid)
                };
                let load_device = d.vulkan_index;
                let load: certification::SharedLoad = Arc::new(move || match backend_kind {
                    BackendKind::Cpu => Ok(Box::new(CpuBackend::new()) as Box<dyn Backend>),
                    BackendKind::Vulkan => VulkanBackend::new(Bundle::embedded()?, load_device)
                        .map(|b| Box::new(b) as Box<dyn Backend>),
                });
                let c = Arc::new(certification::Certification::new(
                    &dir,
                    node_id.clone(),
                    trusted_certifiers.clone(),
                    uncertified,
                    Some(load),
                ));
                c.set_device(lockstep_certify::DeviceIdentity::of(&d.fingerprint));
                certifications.push((uuid.clone(), c.clone()));
                c
            }
        };
        let record = worker::device_record(&d.fingerprint, index as u32);
        // A device's metrics are labelled with its UUID, which names it
        // across reboots; a second device with the same UUID (identical
        // software devices) adds its index.
        let shared_uuid = opened[..index]
            .iter()
            .any(|o| o.fingerprint.device_uuid == d.fingerprint.device_uuid);
        let label = if shared_uuid {
            format!("{uuid}/{index}")
        } else {
            uuid.clone()
        };
        let device_metrics = metrics
            .device(&label)
            .map_err(|e| anyhow::anyhow!("device metrics: {e}"))?;
        slots.push(Arc::new(devices::DeviceSlot::new(
            index as u32,
            d.fingerprint.name.clone(),
            uuid,
            admin::device_fingerprint(&record),
            d.memory_bytes,
            certification,
            device_metrics,
        )));
    }
    let devices = Arc::new(devices::Devices::new(slots));
    for (d, slot) in opened.into_iter().zip(devices.all()) {
        let panic_tx = panic_tx.clone();
        let vulkan_index = d.vulkan_index;
        let ctx = WorkerContext {
            key: key.clone(),
            chain: node_chain.clone(),
            key_protection,
            bundle_id: bundle_id.clone(),
            slot: slot.clone(),
            reopen: Box::new(move |bundle| match backend_kind {
                BackendKind::Cpu => Ok(Box::new(CpuBackend::new()) as Box<dyn Backend>),
                BackendKind::Vulkan => VulkanBackend::new(bundle, vulkan_index)
                    .map(|b| Box::new(b) as Box<dyn Backend>)
                    .map_err(|e| e.to_string()),
            }),
            retention: retention.clone(),
            fault,
            store: bundle_store::BundleStore::new(&state),
            active: active.clone(),
            inject_panic: args.inject_worker_panic,
            inject_device_lost: args.inject_device_lost == Some(slot.index),
            on_panic: Some(Box::new(move |what| {
                let _ = panic_tx.try_send(what);
            })),
        };
        // The worker is waiting for this; it went only if it died.
        let _ = d.start.send(ctx);
    }
    // stdout carries only the "listening" line (scripts read one line and
    // may close the pipe); the console and the journal get this one.
    eprintln!(
        "lockstepd self-test passed ({self_test_ops} ops bit-exact against the CPU reference, on {} device{})",
        devices.all().len(),
        if devices.all().len() == 1 { "" } else { "s" }
    );

    if uncertified {
        tracing::warn!("serving UNCERTIFIED (--uncertified): every receipt says certified: false");
    }
    for slot in devices.all() {
        let verdict = slot.certification.verdict(&bundle_id);
        if verdict.certified {
            tracing::info!(device = slot.index, uuid = %slot.uuid, reason = %verdict.reason, "certified");
        } else if !uncertified {
            tracing::warn!(device = slot.index, uuid = %slot.uuid, reason = %verdict.reason, "not certified: this device refuses jobs until a passing report is installed");
        }
    }
    let budgets = Arc::new(admission::NodeBudgets::new(
        memory_budget,
        max_connections,
        max_per_source,
        devices.all().len(),
    ));
    let device_name = devices.names();
    let device_fingerprint = devices.all()[0].fingerprint.clone();

    let endpoint = lockstep_transport::server_endpoint(&key, listen)?;
    let local = endpoint.local_addr()?;
    tracing::info!(node = %node_id, device = %device_name, bundle = %bundle_id, "serving");
    eprintln!("lockstepd chain address {}", node_chain.address());
    // SIGTERM / SIGINT: stop accepting, let running jobs finish (bounded),
    // exit 0. The device key is never touched on the way out. Installed
    // before the "listening" line: a supervisor that stops the node right
    // after it says it listens gets a clean stop, not the default death.
    let (stop_tx, stop_rx) = smol::channel::bounded::<i32>(1);
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])?;
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            let _ = stop_tx.try_send(sig);
        }
    });

    // Tests and scripts read the bound address from this line.
    println!("lockstepd listening on {local} as {node_id}");
    if let Some(path) = &args.ready_file {
        image_update::write_atomic(
            path,
            format!("serving {image_version}; self-test passed\n").as_bytes(),
        )
        .with_context(|| {
            format!(
                "cannot write the ready file {}: the boot-health check would never see this node ready",
                path.display()
            )
        })?;
    }

    let shared = Arc::new(Shared {
        devices,
        metrics,
        node_id,
        chain: node_chain,
        active,
        started,
        job_timeout,
        memory_limit: lockstep_limits::DEFAULT_PROGRAM_MEMORY_BYTES,
        in_flight: AtomicUsize::new(0),
        stopping: AtomicBool::new(false),
        admin: Arc::new(admin::AdminState::new(
            key.clone(),
            key_protection,
            state.clone(),
            image_version.clone(),
            device_fingerprint,
            operators,
            chain,
            enroll_until,
            updates,
        )),
        retention,
        budgets: budgets.clone(),
        attestor: Arc::new(attest_stream::Attestor {
            tpm: lockstep_tpm::Tpm::new(tpm_tcti).with_work_dir(state.join("tpm")),
            node_key: key.node_id().public_key_bytes(),
            protection: key_protection,
        }),
    });
    tracing::info!(
        memory_budget_bytes = memory_budget,
        max_connections,
        max_per_source,
        "admission budgets"
    );

    smol::block_on(async move {
        let mut worker_panic = None;
        loop {
            let next = smol::future::or(async { Some(endpoint.accept().await) }, async {
                let _ = stop_rx.recv().await;
                None
            });
            let next = smol::future::or(next, async {
                match panic_rx.recv().await {
                    Ok(what) => worker_panic = Some(what),
                    // No worker to panic any more: nothing to wait for.
                    Err(_) => std::future::pending::<()>().await,
                }
                None
            })
            .await;
            let Some(Some(incoming)) = next else {
                break;
            };
            // A source address is counted only once a QUIC Retry proved it
            // (the peer echoed a token sent to that address): a spoofed
            // flood of first packets costs one stateless reply each.
            if !incoming.remote_address_validated() && incoming.may_retry() {
                let _ = incoming.retry();
                continue;
            }
            let source = admission::Source::of(incoming.remote_address());
            let slot = match budgets.connections.try_enter(source) {
                Ok(slot) => slot,
                Err(full) => {
                    tracing::debug!(%source, reason = %full, "connection refused");
                    incoming.refuse();
                    continue;
                }
            };
            smol::spawn(connection::serve(incoming, slot, source, shared.clone())).detach();
        }
        shared.stopping.store(true, Ordering::SeqCst);
        endpoint.set_server_config(None);
        let grace = Instant::now()
            + Duration::from_secs(match worker_panic {
                Some(_) => lockstep_limits::WORKER_PANIC_EXIT_GRACE_S,
                None => lockstep_limits::SHUTDOWN_GRACE_S,
            });
        let running = shared.in_flight.load(Ordering::SeqCst);
        tracing::info!(
            running,
            "stopping: no new connections; finishing running jobs"
        );
        while shared.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < grace {
            smol::Timer::after(Duration::from_millis(50)).await;
        }
        tracing::info!(
            memory_reserved_bytes_peak = shared.budgets.memory.peak(),
            memory_budget_bytes = shared.budgets.memory.limit(),
            frame_bytes_peak = shared.budgets.frames.peak(),
            "admission figures since start"
        );
        let left = shared.in_flight.load(Ordering::SeqCst);
        if left > 0 {
            tracing::warn!(left, "grace period over; exiting with jobs unfinished");
        }
        endpoint.close(0u32.into(), b"node shutting down");
        smol::future::or(endpoint.wait_idle(), async {
            smol::Timer::after(Duration::from_secs(2)).await;
        })
        .await;
        tracing::info!("stopped");
        match worker_panic {
            Some(what) => Err(WorkerPanicked(what).into()),
            None => Ok(()),
        }
    })
}

/// The GPU worker panicked: a machine problem (exit 1), and systemd's
/// Restart=on-failure brings the node back with a fresh device.
#[derive(Debug, thiserror::Error)]
#[error("the GPU worker panicked ({0}); exiting so that the node restarts")]
struct WorkerPanicked(String);

/// Why the worker could not start serving.
enum StartError {
    /// The backend did not open.
    Open(String),
    /// The backend opened but failed the start-up self-test.
    SelfTest(String),
}

/// The start-up self-test failed: a machine or image problem (exit 1); the
/// image's boot-health check sees the daemon failing and does not bless
/// the boot.
#[derive(Debug, thiserror::Error)]
#[error("the start-up self-test of the backend failed ({0}); this node's device or driver does not compute bit-exact results: not serving")]
struct SelfTestFailed(String);

/// Trusted certifier keys: config, then flags.
fn trusted_certifiers(flag_keys: &[String], config_keys: &[String]) -> Result<Vec<NodeId>> {
    let mut trusted = Vec::new();
    for k in config_keys.iter().chain(flag_keys) {
        let text = std::fs::read_to_string(k).unwrap_or_else(|_| k.clone());
        trusted.push(lockstep_identity::NodeId::parse(&text).with_context(|| {
            format!(
                "trusted certifier {k:?} is not a minisign public key (or a .pub file holding one)"
            )
        })?);
    }
    if trusted.len() > lockstep_limits::MAX_TRUSTED_CERTIFIERS {
        bail!(
            "{} trusted certifier keys; at most {}",
            trusted.len(),
            lockstep_limits::MAX_TRUSTED_CERTIFIERS
        );
    }
    Ok(trusted)
}

/// Which devices the node serves on (`--device`, `--devices`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum DeviceChoice {
    /// Every usable device: one that does not open (no RTE, too old, ...)
    /// is skipped with a warning.
    All,
    /// Exactly these, each of which must open.
    Listed(Vec<lockstep_protocol::DeviceSelector>),
}

impl DeviceChoice {
    fn from(device: Option<usize>, devices: Option<&str>) -> Result<DeviceChoice> {
        use lockstep_protocol::DeviceSelector;
        if let Some(i) = device {
            if devices.is_some() {
                bail!("both device and devices are set; give one");
            }
            return Ok(DeviceChoice::Listed(vec![DeviceSelector::Index(i as u32)]));
        }
        let Some(text) = devices.map(str::trim) else {
            return Ok(DeviceChoice::All);
        };
        if text == "all" {
            return Ok(DeviceChoice::All);
        }
        let mut listed = Vec::new();
        for part in text.split(',') {
            let selector =
                DeviceSelector::parse(part).map_err(|e| anyhow::anyhow!("--devices: {e}"))?;
            if listed.contains(&selector) {
                bail!("--devices names {selector} twice");
            }
            listed.push(selector);
        }
        if listed.len() > lockstep_limits::MAX_NODE_DEVICES {
            bail!(
                "--devices names {} devices; a node serves at most {}",
                listed.len(),
                lockstep_limits::MAX_NODE_DEVICES
            );
        }
        Ok(DeviceChoice::Listed(listed))
    }
}

/// A device whose worker opened and self-tested it, waiting to start.
struct Opened {
    /// The loader's index (`None`: the CPU reference).
    vulkan_index: Option<usize>,
    fingerprint: lockstep_backend::DeviceFingerprint,
    /// Device-local memory, if the device has its own.
    memory_bytes: Option<u64>,
    self_test_ops: usize,
    /// The worker's context goes here; then it serves.
    start: std::sync::mpsc::Sender<WorkerContext>,
}

/// Opens the chosen devices, each on its own worker thread (the thread
/// that will own it), and self-tests each: any device that computes other
/// bits stops the start.
fn open_devices(
    choice: &DeviceChoice,
    backend_kind: BackendKind,
    bundle: &Bundle,
    inject_self_test_fault: bool,
) -> Result<Vec<Opened>> {
    // (loader index, whether the operator named it: then it must open)
    let candidates: Vec<(Option<usize>, bool)> = match (backend_kind, choice) {
        (BackendKind::Cpu, _) => vec![(None, true)],
        (BackendKind::Vulkan, DeviceChoice::All) => {
            let listed = lockstep_vulkan::Instance::new()?.devices()?;
            if listed.len() > lockstep_limits::MAX_NODE_DEVICES {
                tracing::warn!(
                    found = listed.len(),
                    serving = lockstep_limits::MAX_NODE_DEVICES,
                    "more devices than a node serves; name them with --devices"
                );
            }
            listed
                .iter()
                .take(lockstep_limits::MAX_NODE_DEVICES)
                .map(|d| (Some(d.index), false))
                .collect()
        }
        (BackendKind::Vulkan, DeviceChoice::Listed(selectors)) => {
            let listed = lockstep_vulkan::Instance::new()?.devices()?;
            let mut out = Vec::new();
            for selector in selectors {
                let found = listed.iter().find(|d| match selector {
                    lockstep_protocol::DeviceSelector::Index(i) => d.index == *i as usize,
                    lockstep_protocol::DeviceSelector::Uuid(u) => {
                        d.device_uuid == *u && !out.contains(&(Some(d.index), true))
                    }
                });
                let Some(d) = found else {
                    bail!(
                        "no Vulkan {selector} on this machine ({} listed; see `lockstep devices`)",
                        listed.len()
                    );
                };
                if out.contains(&(Some(d.index), true)) {
                    bail!("--devices names device {} twice", d.index);
                }
                out.push((Some(d.index), true));
            }
            out
        }
    };
    let mut waiting = Vec::new();
    for (position, &(vulkan_index, named)) in candidates.iter().enumerate() {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (start_tx, start_rx) = std::sync::mpsc::channel::<WorkerContext>();
        let bundle = bundle.clone();
        std::thread::Builder::new()
            .name(format!("gpu-worker-{position}"))
            .spawn(move || {
                let backend: Result<Box<dyn Backend>, String> = match backend_kind {
                    BackendKind::Cpu => Ok(Box::new(CpuBackend::new())),
                    BackendKind::Vulkan => VulkanBackend::new(bundle, vulkan_index)
                        .map(|b| Box::new(b) as Box<dyn Backend>)
                        .map_err(|e| e.to_string()),
                };
                let mut b = match backend {
                    Ok(b) => b,
                    Err(e) => {
                        let _ = ready_tx.send(Err(StartError::Open(e)));
                        return;
                    }
                };
                // The backend jobs will run on proves itself bit-exact
                // before the node listens: an image whose driver computes
                // something else never gets its boot blessed.
                let tested = if inject_self_test_fault {
                    self_test::run(&mut self_test::OneBitOff(b.as_mut()))
                } else {
                    self_test::run(b.as_mut())
                };
                match tested {
                    Ok(ops) => {
                        let memory = b.device_memory_bytes();
                        let _ = ready_tx.send(Ok((b.fingerprint().clone(), memory, ops)));
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(StartError::SelfTest(e)));
                        return;
                    }
                }
                // The node may still stop (another device failed): then
                // the sender is dropped and this thread ends.
                if let Ok(ctx) = start_rx.recv() {
                    worker::run(b, ctx);
                }
            })?;
        waiting.push((vulkan_index, named, ready_rx, start_tx));
    }
    let mut opened = Vec::new();
    let mut skipped = Vec::new();
    for (vulkan_index, named, ready_rx, start) in waiting {
        let which = vulkan_index.map_or("the CPU reference".to_string(), |i| {
            format!("Vulkan device {i}")
        });
        match ready_rx
            .recv()
            .with_context(|| format!("the worker of {which} stopped while opening it"))?
        {
            Ok((fingerprint, memory_bytes, self_test_ops)) => opened.push(Opened {
                vulkan_index,
                fingerprint,
                memory_bytes,
                self_test_ops,
                start,
            }),
            Err(StartError::Open(e)) if !named => {
                tracing::warn!(device = %which, error = %e, "not serving on this device");
                skipped.push(format!("{which}: {e}"));
            }
            Err(StartError::Open(e)) => bail!(e),
            Err(StartError::SelfTest(e)) => {
                return Err(SelfTestFailed(format!("{which}: {e}")).into())
            }
        }
    }
    if opened.is_empty() {
        bail!(
            "no usable device: {}",
            if skipped.is_empty() {
                "the Vulkan loader lists none (is a driver installed? see `lockstep devices`)"
                    .to_string()
            } else {
                skipped.join("; ")
            }
        );
    }
    Ok(opened)
}
