//! `lockstep-fleet`: enroll nodes, keep the inventory (SQLite in the fleet
//! directory, or PostgreSQL with `--db`), sign and push kernel
//! bundles, export identity records, put nodes on an on-chain registry.
//! Errors are one line; exit 2 for bad input or usage (and for a request
//! the registry contract refuses), 1 for node, chain, network or database
//! problems (and for a push in which any node failed).

#![forbid(unsafe_code)]

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::OnceLock;

use clap::{Args, Parser, Subcommand, ValueEnum};
use lockstep_fleet::chain::{self, ChainError};
use lockstep_fleet::inventory::{
    Backend, ChainNode, ChainRegistry, Inventory, InventoryError, NodeRecord, Release,
};
use lockstep_fleet::push::{push_all, Outcome};
use lockstep_fleet::session::Session;
use lockstep_fleet::update::{self, NodeFailure, NodeOutcome};
use lockstep_fleet::{attest, now, operator, registry, release};
use lockstep_identity::{KeyProtection, NodeId};
use lockstep_protocol::admin::AdminAction;

#[derive(Parser)]
#[command(
    name = "lockstep-fleet",
    version,
    about = "Lockstep fleet manager: enrollment, inventory, signed bundle rollout"
)]
struct Cli {
    /// The fleet directory (operator key, and the inventory unless --db
    /// says otherwise).
    #[arg(long, global = true, default_value = ".")]
    dir: PathBuf,
    /// The inventory's database: postgres://USER@HOST:PORT/DBNAME (or
    /// postgresql://; loopback or a unix socket, no TLS yet). Default: the
    /// SQLite file in the fleet directory.
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "LOCKSTEP_FLEET_DB",
        hide_env_values = true
    )]
    db: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the operator key pair and the inventory.
    Init {
        /// Leave the secret key unencrypted (automation only).
        #[arg(long)]
        unencrypted: bool,
    },
    /// Enroll the node at ADDR:PORT: it must prove it holds its device key.
    Enroll {
        addr: String,
        /// Expect this node id (from the node's label or console): any
        /// other key at the address is refused.
        #[arg(long)]
        node_key: Option<String>,
        /// Enroll a node whose device key is a file key (not sealed by its
        /// TPM) without attestation; it is recorded as such.
        #[arg(long)]
        allow_file_key: bool,
    },
    /// Trust the TPM manufacturers' EK root (and intermediate)
    /// certificates in PEMFILE for attestation at enrolment (replaces the
    /// fleet's set: FLEET/ek-roots.pem).
    TrustEkRoots {
        #[arg(value_name = "PEMFILE")]
        pem: PathBuf,
    },
    /// Accept the image release an image manifest describes (its "name"
    /// and "tpm_pcr11_sha256"): enrolment attests that a node booted an
    /// accepted release (FLEET/accepted-images/NAME.json).
    AcceptImage {
        #[arg(value_name = "MANIFEST.json")]
        manifest: PathBuf,
    },
    /// List enrolled nodes.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one node (id, id prefix or address) as JSON.
    Show { node: String },
    /// Mark a node revoked: its later receipts are reported as such.
    Revoke { node: String },
    /// Serve the fleet's metrics for Prometheus at http://ADDR/metrics:
    /// each scrape reads every unrevoked node's metrics over the admin
    /// channel (signed by the operator key), labels them with the node's
    /// id and adds lockstep_fleet_node_up. Prints one line when listening.
    Metrics {
        /// Where to serve, e.g. 127.0.0.1:9464 (loopback only, unless
        /// --allow-remote).
        #[arg(long, value_name = "ADDR:PORT", required_unless_present = "once")]
        listen: Option<SocketAddr>,
        /// Serve on a non-loopback address: anyone who reaches it reads
        /// every node's metrics, without authentication.
        #[arg(long, requires = "listen")]
        allow_remote: bool,
        /// Scrape once, print the exposition to stdout and exit.
        #[arg(long, conflicts_with = "listen")]
        once: bool,
    },
    /// Kernel bundles.
    Bundle {
        #[command(subcommand)]
        command: BundleCommand,
    },
    /// In-place A/B image updates.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// The operator keys a node trusts (pinned in its state partition).
    Operators {
        #[command(subcommand)]
        command: OperatorsCommand,
    },
    /// Write the fleet's provisioning file (this operator's key, trusted
    /// certifiers, listen address) into an appliance image's ESP, before
    /// flashing it. Only the ESP changes; the verified root does not.
    ProvisionImage {
        #[arg(value_name = "IMAGE.raw")]
        image: PathBuf,
        /// A certifier key the nodes trust (repeatable).
        #[arg(long = "trust-certifier", value_name = "KEY")]
        trust_certifier: Vec<String>,
        /// The address lockstepd listens on (default: the image's).
        #[arg(long, value_name = "ADDR:PORT")]
        listen: Option<SocketAddr>,
    },
    /// One operator-signed identity record per node, for a registry.
    ExportRegistry {
        #[arg(long, value_enum, default_value = "json")]
        format: Format,
    },
    /// The on-chain node registry (contracts/README.md): deploy the
    /// pinned NodeRegistry, register, revoke and show nodes.
    Chain {
        #[command(subcommand)]
        command: ChainCommand,
    },
}

/// The operator's chain key: a V3 keystore or LOCKSTEP_CHAIN_KEY.
#[derive(Args)]
struct ChainKeyArgs {
    /// A V3 (Web3 Secret Storage) keystore holding the operator's chain
    /// key; its password in LOCKSTEP_KEYSTORE_PASSWORD. Without it, the key
    /// is LOCKSTEP_CHAIN_KEY (0x and 64 hex digits).
    #[arg(long, value_name = "FILE")]
    keystore: Option<PathBuf>,
}

/// Which registry: default the fleet's (`chain deploy`).
#[derive(Args)]
struct RegistryArgs {
    /// The chain's JSON-RPC URL (http://host:port); default: the fleet's.
    #[arg(long, value_name = "URL")]
    rpc: Option<String>,
    /// The registry's address; default: the fleet's.
    #[arg(long, value_name = "ADDR")]
    registry: Option<String>,
}

#[derive(Subcommand)]
enum ChainCommand {
    /// Write a new V3 keystore FILE with a fresh operator chain key,
    /// encrypted with LOCKSTEP_KEYSTORE_PASSWORD; prints its address.
    NewKeystore {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Deploy the pinned NodeRegistry (the committed build) with the
    /// operator chain key, and record it as the fleet's registry.
    Deploy {
        /// The chain's JSON-RPC URL (http://host:port).
        #[arg(long, value_name = "URL")]
        rpc: String,
        /// A referee the registry trusts to record dispute outcomes
        /// (repeatable).
        #[arg(long = "referee", value_name = "ADDR")]
        referees: Vec<String>,
        #[command(flatten)]
        key: ChainKeyArgs,
    },
    /// Register a node (id, id prefix or address) on the registry: the
    /// node signs its registration, the fleet checks it, then sends it.
    Register {
        node: String,
        #[command(flatten)]
        registry: RegistryArgs,
        #[command(flatten)]
        key: ChainKeyArgs,
    },
    /// Revoke a node on the registry (only the operator that registered
    /// it can).
    Revoke {
        node: String,
        #[command(flatten)]
        registry: RegistryArgs,
        #[command(flatten)]
        key: ChainKeyArgs,
    },
    /// Show a node's on-chain record and dispute counts.
    Show {
        node: String,
        #[command(flatten)]
        registry: RegistryArgs,
    },
}

#[derive(Subcommand)]
enum BundleCommand {
    /// Sign the bundle in DIR: a release statement {bundle id, version}.
    Sign {
        #[arg(value_name = "DIR")]
        bundle_dir: PathBuf,
        /// Release version; default: one above every version signed so far.
        #[arg(long)]
        version: Option<u64>,
    },
    /// Push a signed bundle (default: the latest signed) to a node or all.
    Push {
        /// Node id, id prefix or address.
        node: Option<String>,
        #[arg(long, conflicts_with = "node")]
        all: bool,
        /// The bundle directory (default: the latest `bundle sign`).
        #[arg(long)]
        bundle: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Sign an update for the image IMAGE (NAME.raw, with
    /// NAME.manifest.json and its UKI beside it) and roll it out: a canary
    /// node, then waves doubling in size. Each node installs it into its
    /// inactive slot and reboots; the rollout waits until it is back
    /// healthy and stops at the first refusal, rollback or timeout.
    Push {
        #[arg(value_name = "IMAGE.raw")]
        image: PathBuf,
        /// Node ids, id prefixes or addresses.
        #[arg(value_name = "NODE")]
        nodes: Vec<String>,
        /// Every unrevoked node in the inventory.
        #[arg(long, conflicts_with = "nodes")]
        all: bool,
        /// Update version; default: one above the fleet's last update and
        /// every target node's floor.
        #[arg(long)]
        version: Option<u64>,
        /// Days the signed update stays valid (1 to 30).
        #[arg(long, default_value_t = update::DEFAULT_EXPIRES_IN_DAYS)]
        expires_in_days: u64,
        /// Nodes per wave (default: a canary of 1, then 2, 4, …).
        #[arg(long)]
        wave_size: Option<usize>,
        /// How long to wait for a node to come back healthy.
        #[arg(long, default_value_t = update::DEFAULT_BOOT_TIMEOUT_S)]
        boot_timeout_s: u64,
        /// Verify the image manifest's minisign signature
        /// (NAME.manifest.json.minisig) with this public key (or .pub file).
        #[arg(long, value_name = "PUB")]
        image_key: Option<String>,
        /// Seconds between polls of a rebooting node (tests).
        #[arg(long, default_value_t = update::DEFAULT_POLL_S, hide = true)]
        poll_interval_s: u64,
    },
}

#[derive(Subcommand)]
enum OperatorsCommand {
    /// Replace a node's operator set with KEY... (minisign public keys or
    /// .pub files), signed by this fleet's operator key, which the node
    /// must trust now. Leave this fleet's key out to hand the node over.
    Set {
        /// Node id, id prefix or address.
        node: String,
        #[arg(value_name = "KEY", required = true)]
        keys: Vec<String>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Json,
}

/// A failure: its one line and exit code.
struct Failure {
    code: u8,
    message: String,
}

fn usage(m: impl std::fmt::Display) -> Failure {
    Failure {
        code: 2,
        message: m.to_string(),
    }
}

fn machine(m: impl std::fmt::Display) -> Failure {
    Failure {
        code: 1,
        message: m.to_string(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("lockstep-fleet: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

/// Where the inventory is (--db), for every command of this invocation:
/// set once in `run`, like --dir it applies throughout.
static BACKEND: OnceLock<Backend> = OnceLock::new();

fn backend() -> &'static Backend {
    BACKEND.get_or_init(|| Backend::Sqlite)
}

fn inventory_failure(e: InventoryError) -> Failure {
    if e.is_usage() {
        usage(e)
    } else {
        machine(e)
    }
}

/// Opens the fleet's inventory (migrating it if it is older).
fn open_inventory(dir: &Path) -> Result<Inventory, Failure> {
    Inventory::open_in(dir, backend()).map_err(inventory_failure)
}

fn run(cli: Cli) -> Result<(), Failure> {
    let dir = cli.dir.as_path();
    let chosen = Backend::parse(cli.db.as_deref()).map_err(inventory_failure)?;
    BACKEND
        .set(chosen)
        .unwrap_or_else(|_| unreachable!("run is called once"));
    match cli.command {
        Command::Init { unencrypted } => init(dir, unencrypted),
        Command::Enroll {
            addr,
            node_key,
            allow_file_key,
        } => enroll(dir, &addr, node_key.as_deref(), allow_file_key),
        Command::TrustEkRoots { pem } => trust_ek_roots(dir, &pem),
        Command::AcceptImage { manifest } => accept_image(dir, &manifest),
        Command::List { json } => list(dir, json),
        Command::Show { node } => {
            let inv = open_inventory(dir)?;
            let n = inv.find(&node).map_err(usage)?;
            let fleet_registry = inv.chain_registry().map_err(machine)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&with_chain(&inv, &n, fleet_registry.as_ref())?)
                    .expect("records serialise")
            );
            Ok(())
        }
        Command::Revoke { node } => {
            let mut inv = open_inventory(dir)?;
            let n = inv.find(&node).map_err(usage)?;
            inv.revoke(&n.node_id, &now()).map_err(machine)?;
            eprintln!("revoked {}", n.node_id);
            Ok(())
        }
        Command::Metrics {
            listen,
            allow_remote,
            once: _,
        } => metrics(dir, listen, allow_remote),
        Command::Bundle {
            command:
                BundleCommand::Sign {
                    bundle_dir,
                    version,
                },
        } => sign(dir, &bundle_dir, version),
        Command::Bundle {
            command: BundleCommand::Push { node, all, bundle },
        } => push(dir, node.as_deref(), all, bundle.as_deref()),
        Command::Image {
            command:
                ImageCommand::Push {
                    image,
                    nodes,
                    all,
                    version,
                    expires_in_days,
                    wave_size,
                    boot_timeout_s,
                    image_key,
                    poll_interval_s,
                },
        } => image_push(
            dir,
            &image,
            &nodes,
            all,
            &PushOptions {
                version,
                expires_in_days,
                wave_size,
                boot_timeout_s,
                image_key,
                poll_interval_s,
            },
        ),
        Command::Operators {
            command: OperatorsCommand::Set { node, keys },
        } => set_operators(dir, &node, &keys),
        Command::ProvisionImage {
            image,
            trust_certifier,
            listen,
        } => provision_image(dir, &image, &trust_certifier, listen),
        Command::ExportRegistry {
            format: Format::Json,
        } => {
            let inv = open_inventory(dir)?;
            let key = operator::load(dir).map_err(usage)?;
            let records = registry::export(&inv.nodes().map_err(machine)?, &key);
            println!(
                "{}",
                serde_json::to_string_pretty(&records).expect("records serialise")
            );
            Ok(())
        }
        Command::Chain { command } => match command {
            ChainCommand::NewKeystore { file } => chain_new_keystore(&file),
            ChainCommand::Deploy { rpc, referees, key } => {
                chain_deploy(dir, &rpc, &referees, key.keystore.as_deref())
            }
            ChainCommand::Register {
                node,
                registry,
                key,
            } => chain_register(dir, &node, &registry, key.keystore.as_deref()),
            ChainCommand::Revoke {
                node,
                registry,
                key,
            } => chain_revoke(dir, &node, &registry, key.keystore.as_deref()),
            ChainCommand::Show { node, registry } => chain_show(dir, &node, &registry),
        },
    }
}

/// `lockstep-fleet metrics`: one scrape to stdout, or serve scrapes on
/// `listen` until killed.
fn metrics(dir: &Path, listen: Option<SocketAddr>, allow_remote: bool) -> Result<(), Failure> {
    use lockstep_fleet::metrics;
    // Once, before serving: an encrypted key's password is asked for now.
    let key = operator::load(dir).map_err(usage)?;
    Inventory::open(dir).map_err(usage)?;
    // The inventory is read at every scrape: nodes enrolled or revoked
    // since the start count from the next one.
    let scrape = || -> Result<metrics::Scrape, String> {
        let nodes: Vec<NodeRecord> = Inventory::open(dir)
            .and_then(|inv| inv.nodes())
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|n| n.revoked_at.is_none())
            .collect();
        Ok(metrics::scrape(&nodes, &key, metrics::node_timeout()))
    };
    let Some(listen) = listen else {
        let s = scrape().map_err(machine)?;
        for (node, why) in &s.down {
            eprintln!("lockstep-fleet: node {node} is down: {why}");
        }
        print!("{}", s.text);
        return Ok(());
    };
    if !listen.ip().is_loopback() && !allow_remote {
        return Err(usage(format!(
            "{listen} is not a loopback address: the metrics port has no authentication; serve on 127.0.0.1 (and let Prometheus or a proxy reach it there), or pass --allow-remote"
        )));
    }
    let listener = std::net::TcpListener::bind(listen)
        .map_err(|e| machine(format!("cannot listen on {listen}: {e}")))?;
    let local = listener.local_addr().map_err(machine)?;
    // Tests and scripts wait for this one line.
    println!("lockstep-fleet metrics listening on http://{local}/metrics");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    metrics::serve(&listener, &|| match scrape() {
        Ok(s) => {
            for (node, why) in &s.down {
                eprintln!("lockstep-fleet metrics: node {node} is down: {why}");
            }
            Ok(s.text)
        }
        Err(e) => {
            eprintln!("lockstep-fleet metrics: inventory: {e}");
            Err(format!("inventory: {e}"))
        }
    })
}

fn chain_failure(e: ChainError) -> Failure {
    Failure {
        code: e.exit_code(),
        message: e.to_string(),
    }
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// A node record with its registration on the fleet's registry
/// (`"chain": null` when it has none).
fn with_chain(
    inv: &Inventory,
    n: &NodeRecord,
    fleet_registry: Option<&ChainRegistry>,
) -> Result<serde_json::Value, Failure> {
    let mut value = serde_json::to_value(n).expect("records serialise");
    let chain = match fleet_registry {
        Some(r) => inv.chain_node(&n.node_id, &r.address).map_err(machine)?,
        None => None,
    };
    value["chain"] = serde_json::to_value(chain).expect("records serialise");
    Ok(value)
}

/// `registered`, `revoked` or `—` on the fleet's registry.
fn chain_state(
    inv: &Inventory,
    n: &NodeRecord,
    fleet_registry: Option<&ChainRegistry>,
) -> Result<&'static str, Failure> {
    let Some(r) = fleet_registry else {
        return Ok("—");
    };
    Ok(
        match inv.chain_node(&n.node_id, &r.address).map_err(machine)? {
            Some(c) if c.revoked_at.is_some() => "revoked",
            Some(_) => "registered",
            None => "—",
        },
    )
}

fn chain_new_keystore(file: &Path) -> Result<(), Failure> {
    use rand_core::RngCore;
    // Randomness at the edge: the OS RNG.
    let mut entropy = chain::KeystoreEntropy {
        key: [0; 32],
        salt: [0; 32],
        iv: [0; 16],
        id: [0; 16],
    };
    let mut rng = rand_core::OsRng;
    rng.fill_bytes(&mut entropy.key);
    rng.fill_bytes(&mut entropy.salt);
    rng.fill_bytes(&mut entropy.iv);
    rng.fill_bytes(&mut entropy.id);
    let address = chain::new_keystore(file, &env_var, entropy).map_err(chain_failure)?;
    eprintln!(
        "wrote a new V3 keystore {} (keep it and its password safe; it is the operator's chain account)",
        file.display()
    );
    println!("{address}");
    Ok(())
}

/// The RPC URL and registry address: the flags, else the fleet's.
fn registry_target(
    inv: &Inventory,
    args: &RegistryArgs,
) -> Result<(String, lockstep_chain::Address), Failure> {
    let fleet = inv.chain_registry().map_err(machine)?;
    let url = match (&args.rpc, &fleet) {
        (Some(url), _) => url.clone(),
        (None, Some(r)) => r.rpc_url.clone(),
        (None, None) => return Err(chain_failure(ChainError::NoRegistry)),
    };
    let address = match (&args.registry, &fleet) {
        (Some(a), _) => chain::parse_address("--registry", a).map_err(chain_failure)?,
        (None, Some(r)) => chain::parse_address("the inventory's registry", &r.address)
            .map_err(|e| machine(format!("{e}; the inventory is damaged")))?,
        (None, None) => return Err(chain_failure(ChainError::NoRegistry)),
    };
    Ok((url, address))
}

fn chain_deploy(
    dir: &Path,
    rpc: &str,
    referees: &[String],
    keystore: Option<&Path>,
) -> Result<(), Failure> {
    // Bad input first: the referees, the inventory, the key.
    let referees = referees
        .iter()
        .map(|r| chain::parse_address("--referee", r))
        .collect::<Result<Vec<_>, _>>()
        .map_err(chain_failure)?;
    let mut inv = open_inventory(dir)?;
    let key = chain::operator_key(keystore, &env_var).map_err(chain_failure)?;
    let (registry, receipt) = chain::deploy(rpc, &key, &referees).map_err(chain_failure)?;
    let tx = lockstep_chain::hex0x(&receipt.hash);
    inv.add_chain_registry(&ChainRegistry {
        rpc_url: rpc.to_string(),
        chain_id: registry.chain_id(),
        address: registry.address().to_string(),
        deploy_tx: tx.clone(),
        deployed_at: now(),
    })
    .map_err(machine)?;
    eprintln!(
        "deployed the pinned NodeRegistry at {} on chain {} (owner {}, {} referee(s)): tx {tx}, gas used {}; recorded as the fleet's registry",
        registry.address(),
        registry.chain_id(),
        key.address(),
        referees.len(),
        receipt.gas_used
    );
    println!("registry {}", registry.address());
    println!("chain id {}", registry.chain_id());
    println!("tx {tx}");
    println!("gas used {}", receipt.gas_used);
    Ok(())
}

/// The inventory node named `which`, for the chain commands.
fn chain_node(inv: &Inventory, which: &str) -> Result<(NodeRecord, NodeId), Failure> {
    let n = inv.find(which).map_err(usage)?;
    let id = NodeId::parse(&n.node_id)
        .map_err(|e| machine(format!("inventory node id {}: {e}", n.node_id)))?;
    Ok((n, id))
}

fn chain_register(
    dir: &Path,
    which: &str,
    args: &RegistryArgs,
    keystore: Option<&Path>,
) -> Result<(), Failure> {
    let inv = open_inventory(dir)?;
    let (n, id) = chain_node(&inv, which)?;
    if n.revoked_at.is_some() {
        return Err(usage(format!(
            "{} is revoked in this fleet; not registering it",
            n.node_id
        )));
    }
    let (url, address) = registry_target(&inv, args)?;
    let attestation_digest = match &n.attestation_sha256 {
        Some(text) => {
            let mut digest = [0u8; 32];
            hex::decode_to_slice(text, &mut digest).map_err(|_| {
                machine(format!(
                    "the inventory's attestation digest of {} is not 64 hex digits; the inventory is damaged",
                    n.node_id
                ))
            })?;
            Some(digest)
        }
        None => None,
    };
    let fleet_key = operator::load(dir).map_err(usage)?;
    let key = chain::operator_key(keystore, &env_var).map_err(chain_failure)?;
    drop(inv);
    let registry = chain::open_registry(&url, address).map_err(chain_failure)?;
    let sock = resolve(&n.address)?;
    let action = AdminAction::SignRegistration {
        chain_id: registry.chain_id(),
        registry: address.to_string(),
        operator: key.address().to_string(),
        attestation_digest: n.attestation_sha256.clone().unwrap_or_default(),
    };
    let (info, reply) = smol::block_on(async {
        let session = Session::open(sock, Some(&id)).await?;
        let info = session.info.clone();
        let command = session.sign(&fleet_key, action, None);
        let reply = session.send(command, &[]).await?;
        Ok::<_, lockstep_fleet::session::SessionError>((info, reply))
    })
    .map_err(|e| machine(format!("{e}; nothing was sent to the chain")))?;
    let signed = reply.registration.ok_or_else(|| {
        machine(format!(
            "node {} answered without a signed registration (an older lockstepd?); nothing was sent to the chain",
            n.node_id
        ))
    })?;
    let checked = chain::check_registration(
        &signed,
        &chain::Expected {
            node: &id,
            chain_address: &info.chain_address,
            key_protection: n.key_protection,
            attestation_digest,
            operator: key.address(),
            chain_id: registry.chain_id(),
            registry: address,
        },
    )
    .map_err(chain_failure)?;
    let receipt = registry
        .register(
            &key,
            &checked.registration,
            &checked.node_signature,
            &checked.device_signature,
        )
        .map_err(|e| chain_failure(e.into()))?;
    let tx = lockstep_chain::hex0x(&receipt.hash);
    let node_id = chain::node_id_bytes(&id);
    let record = registry
        .get_node(&node_id)
        .map_err(|e| chain_failure(e.into()))?;
    let mut inv = open_inventory(dir)?;
    inv.set_chain_registered(
        &ChainNode {
            node_id: n.node_id.clone(),
            registry: address.to_string(),
            chain_address: checked.registration.node_address.to_string(),
            registered_tx: tx.clone(),
            registered_at: record.registered_at,
            revoked_tx: None,
            revoked_at: None,
        },
        &now(),
    )
    .map_err(machine)?;
    eprintln!(
        "registered {} on {} as {}: tx {tx}, gas used {}",
        n.node_id, address, checked.registration.node_address, receipt.gas_used
    );
    print!("{}", chain::describe(&n.node_id, &record, 0, 0, &address));
    Ok(())
}

fn chain_revoke(
    dir: &Path,
    which: &str,
    args: &RegistryArgs,
    keystore: Option<&Path>,
) -> Result<(), Failure> {
    let inv = open_inventory(dir)?;
    let (n, id) = chain_node(&inv, which)?;
    let (url, address) = registry_target(&inv, args)?;
    let key = chain::operator_key(keystore, &env_var).map_err(chain_failure)?;
    drop(inv);
    let registry = chain::open_registry(&url, address).map_err(chain_failure)?;
    let node_id = chain::node_id_bytes(&id);
    let receipt = registry
        .revoke(&key, &node_id)
        .map_err(|e| chain_failure(e.into()))?;
    let tx = lockstep_chain::hex0x(&receipt.hash);
    let record = registry
        .get_node(&node_id)
        .map_err(|e| chain_failure(e.into()))?;
    let mut inv = open_inventory(dir)?;
    if inv
        .chain_node(&n.node_id, &address.to_string())
        .map_err(machine)?
        .is_none()
    {
        // Registered by this operator, but not through this inventory.
        inv.set_chain_registered(
            &ChainNode {
                node_id: n.node_id.clone(),
                registry: address.to_string(),
                chain_address: record.node_address.to_string(),
                registered_tx: String::new(),
                registered_at: record.registered_at,
                revoked_tx: None,
                revoked_at: None,
            },
            &now(),
        )
        .map_err(machine)?;
    }
    inv.set_chain_revoked(
        &n.node_id,
        &address.to_string(),
        &tx,
        record.revoked_at,
        &now(),
    )
    .map_err(machine)?;
    eprintln!(
        "revoked {} on {} at {}: tx {tx}, gas used {}",
        n.node_id,
        address,
        chain::chain_time(record.revoked_at),
        receipt.gas_used
    );
    println!("tx {tx}");
    println!("gas used {}", receipt.gas_used);
    Ok(())
}

fn chain_show(dir: &Path, which: &str, args: &RegistryArgs) -> Result<(), Failure> {
    let inv = open_inventory(dir)?;
    let (n, id) = chain_node(&inv, which)?;
    let (url, address) = registry_target(&inv, args)?;
    drop(inv);
    let registry = chain::open_registry(&url, address).map_err(chain_failure)?;
    let node_id = chain::node_id_bytes(&id);
    let record = registry
        .get_node(&node_id)
        .map_err(|e| chain_failure(e.into()))?;
    if !record.exists() {
        return Err(chain_failure(ChainError::NotRegistered {
            node: n.node_id,
            registry: address,
        }));
    }
    let faults = registry
        .fault_count(&node_id)
        .map_err(|e| chain_failure(e.into()))?;
    let cleared = registry
        .cleared_count(&node_id)
        .map_err(|e| chain_failure(e.into()))?;
    print!(
        "{}",
        chain::describe(&n.node_id, &record, faults, cleared, &address)
    );
    Ok(())
}

fn provision_image(
    dir: &Path,
    image: &Path,
    certifiers: &[String],
    listen: Option<SocketAddr>,
) -> Result<(), Failure> {
    let pub_path = dir.join(operator::PUBLIC_FILE);
    let text = std::fs::read_to_string(&pub_path).map_err(|e| {
        usage(format!(
            "{}: {e} (run `lockstep-fleet init` first)",
            pub_path.display()
        ))
    })?;
    let op = NodeId::parse(&text).map_err(|e| usage(format!("{}: {e}", pub_path.display())))?;
    let trusted_certifiers = certifiers
        .iter()
        .map(|k| NodeId::parse(k).map_err(|e| usage(format!("--trust-certifier {k}: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let provision = lockstep_fleet::image::Provision {
        trusted_operators: vec![op],
        trusted_certifiers,
        listen,
    };
    lockstep_fleet::image::write_provision(image, &provision).map_err(usage)?;
    eprintln!(
        "wrote {}/{} into the ESP of {}:",
        lockstep_fleet::image::PROVISION_DIR,
        lockstep_fleet::image::PROVISION_FILE,
        image.display()
    );
    print!("{}", provision.to_toml());
    Ok(())
}

fn init(dir: &Path, unencrypted: bool) -> Result<(), Failure> {
    std::fs::create_dir_all(dir).map_err(|e| usage(format!("{}: {e}", dir.display())))?;
    // A PostgreSQL inventory first: a wrong --db must not leave an
    // operator key behind that makes the next `init` refuse. The SQLite
    // file is made after the key, as ever: no inventory without a key.
    let postgres = matches!(backend(), Backend::Postgres(_));
    if postgres {
        Inventory::create_in(dir, backend()).map_err(inventory_failure)?;
    }
    let key = operator::create(dir, !unencrypted).map_err(usage)?;
    if !postgres {
        Inventory::create_in(dir, backend()).map_err(inventory_failure)?;
    }
    eprintln!(
        "fleet initialised in {}; operator key {} ({})",
        dir.display(),
        key.public().key_id_hex(),
        if unencrypted {
            "unencrypted"
        } else {
            "encrypted"
        }
    );
    println!("{}", key.public());
    Ok(())
}

fn resolve(addr: &str) -> Result<SocketAddr, Failure> {
    addr.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| {
            usage(format!(
                "{addr:?} is not an ADDR:PORT this machine can resolve"
            ))
        })
}

fn attest_failure(e: attest::AttestFailure) -> Failure {
    match e {
        attest::AttestFailure::Input(_) => usage(e),
        _ => machine(e),
    }
}

/// Copies a file into the fleet directory atomically.
fn install_file(dest: &Path, bytes: &[u8]) -> Result<(), Failure> {
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| machine(format!("{}: {e}", parent.display())))?;
    }
    let tmp = dest.with_extension("tmp");
    std::fs::write(&tmp, bytes)
        .and_then(|_| std::fs::rename(&tmp, dest))
        .map_err(|e| machine(format!("{}: {e}", dest.display())))
}

fn trust_ek_roots(dir: &Path, pem: &Path) -> Result<(), Failure> {
    open_inventory(dir)?;
    let certs = attest::read_ek_roots(pem).map_err(attest_failure)?;
    let bytes = std::fs::read(pem).map_err(|e| usage(format!("{}: {e}", pem.display())))?;
    install_file(&dir.join(attest::EK_ROOTS_FILE), &bytes)?;
    eprintln!(
        "the fleet trusts {} EK root and intermediate certificate(s) from {}",
        certs.len(),
        pem.display()
    );
    Ok(())
}

fn accept_image(dir: &Path, manifest: &Path) -> Result<(), Failure> {
    open_inventory(dir)?;
    let release = attest::read_manifest(manifest).map_err(attest_failure)?;
    if release.name.contains(['/', '\\']) || release.name.starts_with('.') {
        return Err(usage(format!(
            "{}: release name {:?} is not a plain name",
            manifest.display(),
            release.name
        )));
    }
    let bytes =
        std::fs::read(manifest).map_err(|e| usage(format!("{}: {e}", manifest.display())))?;
    let dest = dir
        .join(attest::ACCEPTED_IMAGES_DIR)
        .join(format!("{}.json", release.name));
    install_file(&dest, &bytes)?;
    eprintln!(
        "accepted image release {} (PCR 11 {})",
        release.name,
        hex::encode(release.pcr11)
    );
    Ok(())
}

fn enroll(
    dir: &Path,
    addr: &str,
    node_key: Option<&str>,
    allow_file_key: bool,
) -> Result<(), Failure> {
    let sock = resolve(addr)?;
    let expected = node_key
        .map(NodeId::parse)
        .transpose()
        .map_err(|e| usage(format!("--node-key: {e}")))?;
    // Open the inventory and key first: a typo in --dir fails before the
    // node is touched.
    let mut inv = open_inventory(dir)?;
    let key = operator::load(dir).map_err(usage)?;
    // The attestation policy too, unless only file-key nodes are allowed
    // through without it.
    let policy = match attest::fleet_policy(dir) {
        Ok(p) => Some(p),
        Err(_) if allow_file_key => None,
        Err(e) => return Err(attest_failure(e)),
    };
    let (info, attestation) = smol::block_on(async {
        let session = Session::open(sock, expected.as_ref())
            .await
            .map_err(machine)?;
        let info = session.info.clone();
        let node = NodeId::parse(&info.node_id).map_err(machine)?;
        // After the signed challenge, before the command: a node that does
        // not attest is never told to enroll.
        let attestation = if info.key_protection == KeyProtection::File {
            if !allow_file_key {
                return Err(machine(format!(
                    "node at {sock}: node key is a file key (not sealed by a TPM), so there is nothing to attest; nothing was recorded: enroll it with --allow-file-key to accept it without attestation"
                )));
            }
            None
        } else {
            let Some(policy) = &policy else {
                return Err(attest_failure(attest::fleet_policy(dir).unwrap_err()));
            };
            let transcript = attest::exchange(session.connection(), &node)
                .await
                .map_err(|e| machine(format!("node at {sock}: {e}; nothing was recorded")))?;
            let a = transcript
                .verify(policy)
                .map_err(|e| machine(format!("node at {sock}: {e}; nothing was recorded")))?;
            Some(a)
        };
        // The attestation may have taken longer than the node waits on the
        // admin stream: the command goes on a fresh session.
        let session = match attestation {
            Some(_) => session.renew().await.map_err(machine)?,
            None => session,
        };
        if session.info.node_id != info.node_id {
            return Err(machine(format!(
                "node at {sock} changed its node id during enrolment; nothing was recorded"
            )));
        }
        let command = session.sign(&key, AdminAction::Enroll, None);
        session.send(command, &[]).await.map_err(machine)?;
        Ok::<_, Failure>((info, attestation))
    })?;
    let mut record = NodeRecord {
        node_id: info.node_id.clone(),
        address: sock.to_string(),
        device_fingerprint: info.device_fingerprint,
        device: info.device,
        bundle_id: info.bundle_id,
        bundle_version: info.bundle_version,
        image_version: info.image_version,
        certified: info.certified,
        certification_report_sha256: info.certification_report_sha256,
        key_protection: info.key_protection,
        enrolled_at: now(),
        revoked_at: None,
        attestation_sha256: attestation.as_ref().map(|a| hex::encode(a.digest)),
        attested_release: attestation.as_ref().map(|a| a.release.clone()),
        slot: None,
        image_variant: None,
        update_floor: None,
        rolled_back_from: None,
        last_update: None,
        last_update_version: None,
        last_update_at: None,
    };
    record.set_slot(info.slot.as_ref());
    inv.upsert_node(&record).map_err(machine)?;
    match &attestation {
        Some(a) => eprintln!(
            "enrolled {} at {}: attested, release {}, attestation {}",
            record.node_id,
            record.address,
            a.release,
            hex::encode(a.digest)
        ),
        None => eprintln!(
            "enrolled {} at {}: FILE KEY, not attested (--allow-file-key)",
            record.node_id, record.address
        ),
    }
    println!("{}", record.node_id);
    Ok(())
}

fn set_operators(dir: &Path, node: &str, keys: &[String]) -> Result<(), Failure> {
    if keys.len() > lockstep_limits::MAX_TRUSTED_OPERATORS {
        return Err(usage(format!(
            "{} keys; a node trusts at most {}",
            keys.len(),
            lockstep_limits::MAX_TRUSTED_OPERATORS
        )));
    }
    // Each key as text or from a .pub file, checked here so a typo fails
    // before the node is touched.
    let keys = keys
        .iter()
        .map(|k| {
            let text = std::fs::read_to_string(k).unwrap_or_else(|_| k.clone());
            NodeId::parse(&text).map(|id| id.to_base64()).map_err(|e| {
                usage(format!(
                    "{k:?} is not a minisign public key (or a .pub file holding one): {e}"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let inv = open_inventory(dir)?;
    let n = inv.find(node).map_err(usage)?;
    if n.revoked_at.is_some() {
        return Err(usage(format!("{} is revoked; not changing it", n.node_id)));
    }
    let key = operator::load(dir).map_err(usage)?;
    drop(inv);
    let id = NodeId::parse(&n.node_id).map_err(|e| machine(format!("inventory node id: {e}")))?;
    let addr = resolve(&n.address)?;
    let reply = smol::block_on(async {
        let session = Session::open(addr, Some(&id)).await?;
        let command = session.sign(&key, AdminAction::SetOperators { keys }, None);
        session.send(command, &[]).await
    })
    .map_err(machine)?;
    eprintln!("{}: {}", n.node_id, reply.message);
    Ok(())
}

fn list(dir: &Path, json: bool) -> Result<(), Failure> {
    let inv = open_inventory(dir)?;
    let nodes = inv.nodes().map_err(machine)?;
    let fleet_registry = inv.chain_registry().map_err(machine)?;
    if json {
        let nodes = nodes
            .iter()
            .map(|n| with_chain(&inv, n, fleet_registry.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        println!(
            "{}",
            serde_json::to_string_pretty(&nodes).expect("records serialise")
        );
        return Ok(());
    }
    for n in &nodes {
        println!(
            "{}  {}  bundle {} (release {})  {}  key {}  image {}{}  chain {}{}",
            n.node_id,
            n.address,
            // The node reported this string: cut by characters, never
            // inside one.
            n.bundle_id.chars().take(12).collect::<String>(),
            n.bundle_version,
            if n.certified {
                "certified"
            } else {
                "uncertified"
            },
            n.key_protection,
            n.image_version,
            slot_summary(n),
            chain_state(&inv, n, fleet_registry.as_ref())?,
            if n.revoked_at.is_some() {
                "  REVOKED"
            } else {
                ""
            }
        );
    }
    Ok(())
}

/// ` slot b floor 7 last update 7 healthy`, or ` (no A/B slot)`.
fn slot_summary(n: &NodeRecord) -> String {
    let mut s = match &n.slot {
        Some(slot) => format!(" slot {slot} floor {}", n.update_floor.unwrap_or(0)),
        None => " (no A/B slot)".to_string(),
    };
    if let Some(from) = &n.rolled_back_from {
        s.push_str(&format!(
            " ROLLED BACK from {}",
            from.chars().take(40).collect::<String>()
        ));
    }
    if let (Some(outcome), Some(v)) = (&n.last_update, n.last_update_version) {
        s.push_str(&format!(" last update {v} {outcome}"));
    }
    s
}

fn sign(dir: &Path, bundle: &Path, version: Option<u64>) -> Result<(), Failure> {
    let mut inv = open_inventory(dir)?;
    let key = operator::load(dir).map_err(usage)?;
    let version = match version {
        Some(v) => v,
        None => inv.next_release_version().map_err(machine)?,
    };
    if version == 0 {
        return Err(usage(
            "release version 0 is the image's own bundle; use 1 or more",
        ));
    }
    let statement = release::sign(bundle, &key, version).map_err(usage)?;
    let abs = std::fs::canonicalize(bundle).unwrap_or_else(|_| bundle.to_path_buf());
    inv.add_release(&Release {
        version,
        bundle_id: statement.bundle_id.clone(),
        dir: abs.display().to_string(),
        signed_at: now(),
    })
    .map_err(machine)?;
    eprintln!("signed bundle {} as release {version}", statement.bundle_id);
    Ok(())
}

fn push(dir: &Path, node: Option<&str>, all: bool, bundle: Option<&Path>) -> Result<(), Failure> {
    let inv = open_inventory(dir)?;
    let bundle_dir = match bundle {
        Some(b) => b.to_path_buf(),
        None => PathBuf::from(
            inv.latest_release()
                .map_err(machine)?
                .ok_or_else(|| usage("no signed bundle yet: run `lockstep-fleet bundle sign DIR`, or pass --bundle DIR"))?
                .dir,
        ),
    };
    let names: Vec<String> = node.map(str::to_string).into_iter().collect();
    let targets = targets(&inv, &names, all)?;
    let upload = release::read_upload(&bundle_dir).map_err(usage)?;
    let key = operator::load(dir).map_err(usage)?;
    drop(inv);
    eprintln!(
        "pushing bundle {} (release {}) to {} node(s)",
        if upload.bundle_id.is_empty() {
            "(unsigned)"
        } else {
            &upload.bundle_id
        },
        upload.version,
        targets.len()
    );
    let progress = |i: usize, n: usize, o: &Outcome| match &o.result {
        Ok(r) => eprintln!("[{i}/{n}] {} ok: {}", o.node.node_id, r.message),
        Err(e) => eprintln!("[{i}/{n}] {} FAILED: {e}", o.node.node_id),
    };
    let outcomes = push_all(&targets, &upload, &key, &progress);
    let mut inv = open_inventory(dir)?;
    let mut failed = Vec::new();
    for o in &outcomes {
        match &o.result {
            Ok(r) => inv
                .set_bundle(&o.node.node_id, r, &now())
                .map_err(machine)?,
            Err(e) => failed.push(format!("{}: {e}", o.node.node_id)),
        }
    }
    eprintln!(
        "{} of {} node(s) switched",
        outcomes.len() - failed.len(),
        outcomes.len()
    );
    if failed.is_empty() {
        return Ok(());
    }
    for f in &failed {
        eprintln!("failed: {f}");
    }
    Err(machine(format!(
        "{} of {} node(s) failed the push (listed above)",
        failed.len(),
        outcomes.len()
    )))
}

struct PushOptions {
    version: Option<u64>,
    expires_in_days: u64,
    wave_size: Option<usize>,
    boot_timeout_s: u64,
    image_key: Option<String>,
    poll_interval_s: u64,
}

/// The push targets of `bundle push` and `image push`: the named nodes
/// (id, id prefix or inventory address), in the order given, or every
/// unrevoked node; each reached at its inventory address.
fn targets(inv: &Inventory, nodes: &[String], all: bool) -> Result<Vec<NodeRecord>, Failure> {
    match (nodes.is_empty(), all) {
        (false, false) => {
            let mut out: Vec<NodeRecord> = Vec::new();
            for which in nodes {
                let n = inv.find(which).map_err(usage)?;
                if n.revoked_at.is_some() {
                    return Err(usage(format!(
                        "{} is revoked; not pushing to it",
                        n.node_id
                    )));
                }
                if !out.iter().any(|o| o.node_id == n.node_id) {
                    out.push(n);
                }
            }
            Ok(out)
        }
        (true, true) => {
            let out: Vec<NodeRecord> = inv
                .nodes()
                .map_err(machine)?
                .into_iter()
                .filter(|n| n.revoked_at.is_none())
                .collect();
            if out.is_empty() {
                return Err(usage("no (unrevoked) nodes in the inventory"));
            }
            Ok(out)
        }
        _ => Err(usage("name one or more NODEs or give --all")),
    }
}

fn image_push(
    dir: &Path,
    image: &Path,
    nodes: &[String],
    all: bool,
    o: &PushOptions,
) -> Result<(), Failure> {
    use lockstep_update::UpdateSigner;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};
    // Bad input first, before any node is touched.
    let now_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| machine(format!("the clock is before 1970: {e}")))?
        .as_secs();
    let expires_at = update::expires_at(now_s, o.expires_in_days).map_err(usage)?;
    if o.version == Some(0) {
        return Err(usage("update version 0 means no update; use 1 or more"));
    }
    if o.boot_timeout_s == 0 {
        return Err(usage("--boot-timeout-s must be at least 1"));
    }
    let image_key = o
        .image_key
        .as_deref()
        .map(|k| {
            let text = std::fs::read_to_string(k).unwrap_or_else(|_| k.to_string());
            NodeId::parse(&text).map_err(|e| {
                usage(format!(
                    "--image-key {k:?} is not a minisign public key (or a .pub file holding one): {e}"
                ))
            })
        })
        .transpose()?;
    let inv = open_inventory(dir)?;
    let targets = targets(&inv, nodes, all)?;
    let key = operator::load(dir).map_err(usage)?;
    let fleet_last = inv.last_update_version().map_err(machine)?;
    drop(inv);
    eprintln!("reading {} ...", image.display());
    let source = update::read_image(image, image_key.as_ref()).map_err(usage)?;
    let manifest = &source.manifest;
    // The version: explicit, or above every target's floor (ask them).
    let version = match o.version {
        Some(v) => {
            if let Some(last) = fleet_last.filter(|&last| v <= last) {
                eprintln!(
                    "warning: update version {v} is not above this fleet's last ({last}); nodes whose floor is {v} or more will refuse it"
                );
            }
            v
        }
        None => {
            let mut floors = Vec::new();
            let mut current = 0usize;
            for n in &targets {
                let (addr, id) = update::node_target(n).map_err(usage)?;
                let info = update::node_info(addr, &id)
                    .map_err(|e| machine(format!("node {}: {e}; nothing was sent", n.node_id)))?;
                if let Some(reason) = update::refuse_reason(&info, &manifest.variant) {
                    return Err(machine(format!("{reason}; nothing was sent")));
                }
                floors.push(info.slot.map_or(0, |s| s.update_floor));
                if info.image_version == manifest.version {
                    current += 1;
                }
            }
            if current == targets.len() {
                eprintln!(
                    "all {current} node(s) already run image {}; nothing signed, nothing sent",
                    manifest.version
                );
                return Ok(());
            }
            update::choose_version(None, fleet_last, floors)
        }
    };
    let signer = UpdateSigner::new(&key);
    let metadata = signer
        .metadata(manifest, source.artifacts.clone(), version, expires_at)
        .map_err(|e| usage(format!("{}: {e}", source.manifest_path.display())))?;
    let signed = signer.sign_at(&metadata, now_s).map_err(usage)?;
    let update_dir = dir.join(update::UPDATES_DIR).join(version.to_string());
    update::save_update(&update_dir, &signed).map_err(usage)?;
    let abs = std::fs::canonicalize(&update_dir).unwrap_or(update_dir.clone());
    let mut inv = open_inventory(dir)?;
    inv.add_image_update(&lockstep_fleet::inventory::ImageUpdate {
        version,
        name: manifest.name.clone(),
        image_version: manifest.version.clone(),
        target: manifest.variant.clone(),
        dir: abs.display().to_string(),
        signed_at: now(),
    })
    .map_err(machine)?;
    drop(inv);
    eprintln!(
        "signed update {version}: image {} ({}) for {}, expires in {} day(s)",
        manifest.version, manifest.name, manifest.variant, o.expires_in_days
    );
    println!("{}", abs.join(lockstep_update::UPDATE_FILE).display());
    println!(
        "{}",
        abs.join(lockstep_update::UPDATE_SIGNATURE_FILE).display()
    );
    let waves = update::wave_sizes(targets.len(), o.wave_size);
    let job = update::NodeUpdate {
        key: &key,
        signed: &signed,
        image: &source,
        boot_timeout: Duration::from_secs(o.boot_timeout_s),
        poll: Duration::from_secs(o.poll_interval_s.max(1)),
    };
    let log = |line: String| eprintln!("{line}");
    let mut summary: Vec<String> = Vec::new();
    let mut updated = 0usize;
    let mut rest = targets.as_slice();
    for (w, size) in waves.iter().enumerate() {
        let (wave, later) = rest.split_at(*size);
        rest = later;
        eprintln!(
            "wave {}/{}: {} node(s){}",
            w + 1,
            waves.len(),
            wave.len(),
            if w == 0 && o.wave_size.is_none() {
                " (canary)"
            } else {
                ""
            }
        );
        for n in wave {
            let result = update::update_node(n, &job, &log);
            let mut inv = open_inventory(dir)?;
            let at = now();
            let record =
                |inv: &mut Inventory, state: &lockstep_fleet::inventory::ImageState<'_>| {
                    inv.set_image(&n.node_id, state, &at).map_err(machine)
                };
            match result {
                Ok(NodeOutcome::Healthy {
                    info,
                    total,
                    downtime,
                }) => {
                    let slot = info.slot.as_ref().map_or("?", |s| s.slot.as_str());
                    eprintln!(
                        "node {}: healthy on {} in slot {slot} after {} s",
                        n.node_id,
                        info.image_version,
                        downtime.as_secs()
                    );
                    record(
                        &mut inv,
                        &lockstep_fleet::inventory::ImageState {
                            image_version: Some(&info.image_version),
                            slot: info.slot.as_ref(),
                            outcome: "healthy",
                            version,
                        },
                    )?;
                    updated += 1;
                    summary.push(format!(
                        "{}  updated  slot {slot}  update {} s  downtime {} s",
                        n.node_id,
                        total.as_secs(),
                        downtime.as_secs()
                    ));
                }
                Ok(NodeOutcome::Skipped { info }) => {
                    let slot = info.slot.as_ref().map_or("?", |s| s.slot.as_str());
                    eprintln!(
                        "node {}: already on {} (slot {slot}); skipped",
                        n.node_id, info.image_version
                    );
                    summary.push(format!(
                        "{}  already on {}  slot {slot}",
                        n.node_id, info.image_version
                    ));
                }
                Err(failure) => {
                    let code = match &failure {
                        NodeFailure::RolledBack { info, .. } => {
                            record(
                                &mut inv,
                                &lockstep_fleet::inventory::ImageState {
                                    image_version: Some(&info.image_version),
                                    slot: info.slot.as_ref(),
                                    outcome: "rolled-back",
                                    version,
                                },
                            )?;
                            1
                        }
                        NodeFailure::TimedOut(_) => {
                            record(
                                &mut inv,
                                &lockstep_fleet::inventory::ImageState {
                                    image_version: None,
                                    slot: None,
                                    outcome: "timed-out",
                                    version,
                                },
                            )?;
                            1
                        }
                        NodeFailure::Source(_) => 2,
                        NodeFailure::Before(_) => 1,
                    };
                    eprintln!("{failure}");
                    print_summary(&summary, updated, targets.len());
                    return Err(Failure {
                        code,
                        message: format!(
                            "rollout of update {version} stopped at node {} ({updated} of {} node(s) updated); the remaining nodes were not updated",
                            n.node_id,
                            targets.len()
                        ),
                    });
                }
            }
        }
    }
    print_summary(&summary, updated, targets.len());
    Ok(())
}

fn print_summary(lines: &[String], updated: usize, total: usize) {
    eprintln!("summary: {updated} of {total} node(s) updated");
    for l in lines {
        eprintln!("  {l}");
    }
}
