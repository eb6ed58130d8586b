//! `lockstep`: the command-line face of the execution core.
//!
//! Exit codes: 0 success; 2 bad input (unreadable or malformed tensor,
//! shapes that do not fit, unknown op, bad flag); 1 anything else (no
//! Vulkan, device lost, ...). Every error is one line on stderr.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use lockstep_cli::failure::Failure;
use lockstep_cli::{
    attest, bench, chain_check, commands, dispute, exec, failure, fleet_check, import, lineage,
    load, permit, submit, verify, BackendKind, Target,
};

#[derive(Parser)]
#[command(
    name = "lockstep",
    version,
    about = "Bit-reproducible GPU compute: run pinned kernels on Vulkan or the CPU reference"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one op on .npy inputs and write the result as .npy.
    Run {
        /// The op, e.g. matmul, add, gelu, softmax_rows, cross_entropy, adam_update, rand_normal
        /// (every op and its attributes: docs/float-model.md).
        op: String,
        /// Input tensors: float32, little-endian, C order.
        #[arg(value_name = "INPUT.npy")]
        inputs: Vec<PathBuf>,
        #[arg(long, value_name = "OUT.npy")]
        out: PathBuf,
        /// Op attribute, e.g. --attr alpha=0.5 for scale.
        #[arg(long = "attr", value_name = "KEY=VALUE")]
        attrs: Vec<String>,
        #[command(flatten)]
        target: Target,
        /// Print nothing on success.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Run a program (ops and repeat blocks, docs/protocol.md) and write
    /// its outputs and its trace.
    Exec(exec::ExecArgs),
    /// Turn an ONNX model into a program and its weights (docs/onnx.md).
    Import(import::ImportArgs),
    /// List Vulkan devices with their ids, driver and float controls.
    Devices {
        #[arg(long)]
        json: bool,
    },
    /// Show the kernel bundle: its id and each kernel's binary hashes.
    Kernels {
        #[arg(long, value_name = "DIR")]
        bundle: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Measure matmul GFLOP/s on each backend (and NumPy's sgemm, if present).
    Bench {
        /// Square sizes to measure.
        #[arg(long, value_delimiter = ',', default_value = "256,1024,2048")]
        sizes: Vec<usize>,
        /// Timed repetitions per size (the median is reported).
        #[arg(long, default_value_t = 5)]
        repeats: usize,
        /// Backends to measure.
        #[arg(long, value_enum, value_delimiter = ',', default_value = "vulkan,cpu")]
        backends: Vec<BackendKind>,
        #[arg(long)]
        device: Option<usize>,
        /// Python interpreter used for the NumPy comparison ("none" to skip).
        #[arg(long, default_value = "python3")]
        python: String,
    },
    /// Print the node id (the device key's public half, minisign format).
    Identity {
        /// The node's state directory (where lockstepd keeps device.key).
        #[arg(long, value_name = "DIR")]
        state: PathBuf,
    },
    /// Send a job to a node; writes the outputs, the receipt and its signature.
    Submit {
        #[command(flatten)]
        node: submit::NodeArgs,
        /// Where the signed receipt goes (and RECEIPT.minisig beside it).
        #[arg(long, value_name = "R.json")]
        receipt: PathBuf,
        /// The submitter's secret key (`lockstep keygen`): the receipt
        /// records its public key, and only it can permit other nodes to
        /// fetch the job's outputs (`lockstep permit`).
        #[arg(long, value_name = "KEY")]
        submitter_key: Option<PathBuf>,
        /// Run on this device of the node: its index or UUID, as `lockstep
        /// status` lists them; default: the node picks the serving device
        /// with the shortest queue.
        #[arg(long, value_name = "N|UUID")]
        on_device: Option<String>,
        #[command(subcommand)]
        job: submit::Job,
    },
    /// Write a new submitter key (unencrypted minisign secret key) and
    /// KEY.pub; print the public key.
    Keygen {
        #[arg(long, value_name = "KEY")]
        out: PathBuf,
    },
    /// Permit nodes to fetch a job's outputs: writes one reference file
    /// (NAME.ref.json) per output, for `submit exec --ref`.
    Permit(permit::PermitArgs),
    /// Walk a receipt's inputs back through their source receipts,
    /// verifying every signature and hash; optionally re-execute each step.
    Lineage(lineage::LineageArgs),
    /// Measure a node: tiny-job latency and large-tensor throughput.
    BenchNode {
        #[command(flatten)]
        node: submit::NodeArgs,
        #[arg(long, default_value_t = 200)]
        jobs: usize,
        /// Size of the tensor sent (and returned) for the throughput figure; 0 skips it.
        #[arg(long, default_value_t = 256)]
        upload_mib: usize,
        /// The load test instead: N clients, each on its own connection,
        /// send --jobs jobs each (softmax_rows on --shape), retrying when
        /// busy; prints jobs/s and the jobs each device ran.
        #[arg(long, value_name = "N")]
        clients: Option<usize>,
        /// The load test's input shape, ROWS,COLS.
        #[arg(long, value_name = "ROWS,COLS", default_value = "256,1024")]
        shape: String,
        /// The load test's device on the node (index or UUID); default:
        /// the node picks.
        #[arg(long, value_name = "N|UUID")]
        on_device: Option<String>,
    },
    /// A node's id, device, bundle, queue and counters.
    Status {
        #[command(flatten)]
        node: submit::NodeArgs,
    },
    /// Check a receipt's signature (R.json.minisig) and, optionally, that
    /// output files hash to what it says.
    VerifyReceipt {
        #[arg(value_name = "R.json")]
        receipt: PathBuf,
        #[arg(long, value_name = "KEY")]
        node_key: Option<String>,
        /// Also check the node against this fleet's inventory (lockstep-fleet):
        /// unknown and revoked nodes are reported.
        #[arg(long, value_name = "FLEET")]
        fleet: Option<PathBuf>,
        #[arg(long, value_name = "FILE.npy", num_args = 1..)]
        outputs: Vec<PathBuf>,
        /// Also ask the NodeRegistry on this chain (an http:// JSON-RPC
        /// URL) whether the receipt's chain signer is a registered node
        /// that was not revoked when the receipt was made (needs
        /// --registry).
        #[arg(long, value_name = "RPC_URL")]
        chain: Option<String>,
        /// The NodeRegistry's address (with --chain).
        #[arg(long, value_name = "ADDR")]
        registry: Option<String>,
    },
    /// Check that a node's key is kept by a genuine TPM on a machine that
    /// booted an accepted image release (or re-check a saved transcript).
    /// Exit 2 if the attestation is refused or the node cannot attest.
    Attest(attest::AttestArgs),
    /// Print a .npy tensor: shape, SHA-256 and values.
    Show {
        #[arg(value_name = "FILE.npy")]
        file: PathBuf,
        /// Values to print (the rest are elided).
        #[arg(long, default_value_t = 64)]
        limit: usize,
    },
    /// Check a node's job: re-execute it in full (locally or on another
    /// node), or spot-check a sample of its ops (--sample) from the node's
    /// retained evidence.
    Verify(verify::VerifyArgs),
    /// Settle a disagreement between two nodes: bisect their traces to the
    /// first differing op, re-run it here, write a signed dispute record.
    Dispute(dispute::DisputeArgs),
    /// Check a dispute record: the referee's signature, both receipts, every
    /// proof, and optionally the op itself.
    VerifyDispute(dispute::VerifyDisputeArgs),
    /// Write a deterministic tensor (for demos and test inputs).
    Random {
        /// Shape, e.g. 1024,1024.
        #[arg(long, value_delimiter = ',', required = true)]
        shape: Vec<usize>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// uniform: [-1, 1); edgy: wide exponents plus ±0, subnormals, ±inf, NaN.
        #[arg(long, default_value = "uniform")]
        fill: String,
        #[arg(long, value_name = "OUT.npy")]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    failure::end_quietly_when_stdout_closes();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run {
            op,
            inputs,
            out,
            attrs,
            target,
            quiet,
        } => commands::run(&op, &inputs, &out, &attrs, &target, quiet),
        Command::Exec(args) => exec::exec(&args),
        Command::Import(args) => import::import(&args),
        Command::Devices { json } => commands::devices(json),
        Command::Kernels { bundle, json } => commands::kernels(bundle.as_deref(), json),
        Command::Bench {
            sizes,
            repeats,
            backends,
            device,
            python,
        } => bench::bench(&sizes, repeats, &backends, device, &python),
        Command::Show { file, limit } => commands::show(&file, limit),
        Command::Identity { state } => commands::identity(&state),
        Command::Submit {
            node,
            receipt,
            submitter_key,
            on_device,
            job,
        } => submit::submit(
            &node,
            &receipt,
            submitter_key.as_deref(),
            on_device.as_deref(),
            &job,
        ),
        Command::Keygen { out } => permit::keygen(&out),
        Command::Permit(args) => permit::permit(&args),
        Command::Lineage(args) => lineage::lineage(&args),
        Command::Status { node } => submit::status(&node),
        Command::BenchNode {
            node,
            jobs,
            upload_mib,
            clients: None,
            ..
        } => submit::bench_node(&node, jobs, upload_mib),
        Command::BenchNode {
            node,
            jobs,
            clients: Some(clients),
            shape,
            on_device,
            ..
        } => load::LoadArgs::parse(clients, jobs, &shape, on_device.as_deref())
            .and_then(|args| load::load(&node, &args)),
        Command::VerifyReceipt {
            receipt,
            node_key,
            fleet,
            outputs,
            chain,
            registry,
        } => chain_check::ChainOptions::parse(chain.as_deref(), registry.as_deref()).and_then(
            |chain| {
                fleet_check::verify_receipt(
                    &receipt,
                    node_key.as_deref(),
                    fleet.as_deref(),
                    &outputs,
                    chain.as_ref(),
                )
            },
        ),
        Command::Attest(args) => attest::attest(&args),
        Command::Verify(args) => verify::verify(&args),
        Command::Dispute(args) => dispute::dispute(&args),
        Command::VerifyDispute(args) => dispute::verify_dispute(&args),
        Command::Random {
            shape,
            seed,
            fill,
            out,
        } => commands::random(shape, seed, &fill, &out),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            let (code, msg) = match &f {
                Failure::Input(m) => (2, m),
                Failure::Runtime(m) => (1, m),
            };
            // One line, whatever the cause's own formatting.
            eprintln!("lockstep: {}", msg.replace('\n', " "));
            ExitCode::from(code)
        }
    }
}
