//! `lockstep-certify`: runs the certification suite on a local device (or
//! asks a node to run it on its own), writes the signed report, and
//! regenerates the golden hashes.
//!
//! Exit codes: 0 every check passed; 1 a check failed or the machine or
//! network failed; 2 bad usage or input.

#![forbid(unsafe_code)]

mod remote;

use std::io::{IsTerminal, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use lockstep_backend::{Backend, CpuBackend};
use lockstep_certify::{Golden, LoadFactory, Progress, Report, SuiteOptions, DEFAULT_REPEATS};
use lockstep_identity::{NodeId, SecretKeyError, SigningKey};
use lockstep_kernels::Bundle;
use lockstep_vulkan::VulkanBackend;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BackendKind {
    Vulkan,
    Cpu,
}

#[derive(Parser)]
#[command(
    name = "lockstep-certify",
    version,
    about = "Certify a GPU + driver for Lockstep: float-model probes, conformance, stability, limits, performance; a signed report",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args)]
struct RunArgs {
    /// Where the suite runs locally (ignored with --node).
    #[arg(long, value_enum, default_value = "vulkan")]
    backend: BackendKind,
    /// Vulkan device index (see `lockstep devices`); with --node, which of
    /// the node's devices (see `lockstep status`; default: its first).
    #[arg(long)]
    device: Option<usize>,
    /// Ask a running node to run the suite on its own device.
    #[arg(long, value_name = "ADDR:PORT", requires = "node_key")]
    node: Option<String>,
    /// The node's id (minisign public key, or a .pub file): pinned with
    /// --node; in the local form, the node the report is for. A report
    /// that names no node is installed by no node.
    #[arg(long, value_name = "KEY")]
    node_key: Option<String>,
    /// The certifier's minisign secret key file (password from
    /// LOCKSTEP_KEY_PASSWORD, or asked on a terminal); it signs the report
    /// and, with --node, the request to the node.
    #[arg(long, value_name = "CERTIFIER.key")]
    key: Option<PathBuf>,
    /// Days the report is valid (at most the bound in lockstep-limits).
    #[arg(long, default_value_t = lockstep_limits::DEFAULT_CERTIFICATION_VALIDITY_DAYS)]
    valid_days: u32,
    /// Where the report goes; REPORT.json.minisig is written beside it.
    #[arg(long, value_name = "REPORT.json")]
    out: Option<PathBuf>,
    /// Repetitions of the stability job, alone and under load.
    #[arg(long, default_value_t = DEFAULT_REPEATS)]
    repeats: u32,
    /// No progress display.
    #[arg(long, short)]
    quiet: bool,
    /// TEST ONLY: run the suite on a Vulkan device whose float controls are
    /// not advertised (e.g. SwiftShader), opened with the test-only
    /// portable bundle, to diagnose it. The report is NON-CONFORMING: it
    /// never passes, never certifies, and says so.
    #[arg(long, conflicts_with = "node")]
    cross_implementation_test: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Recompute the golden hashes with the CPU reference; compare with the
    /// committed ones, or write them with --write.
    Golden {
        /// Write hwtests/golden.json (or --file).
        #[arg(long)]
        write: bool,
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// Install a report on a node, which checks it is for itself, its
    /// device and bundle, unexpired, newer than the one it holds, and
    /// signed by a certifier it trusts. A newer failing report revokes.
    Install {
        #[arg(long, value_name = "ADDR:PORT")]
        node: String,
        #[arg(long, value_name = "KEY")]
        node_key: String,
        /// The certifier's (or the node operator's) minisign secret key:
        /// signs the install request.
        #[arg(long, value_name = "CERTIFIER.key")]
        key: PathBuf,
        /// The report; its certifier signature is REPORT.json.minisig.
        report: PathBuf,
    },
    /// Check a report's certifier signature (and node signature, if there
    /// is one beside it) and print its summary.
    Show {
        report: PathBuf,
        /// The certifier's public key (or .pub file).
        #[arg(long, value_name = "KEY")]
        certifier: String,
    },
}

/// Failures, by who must act: the caller (2) or the machine/network (1).
#[derive(Debug, thiserror::Error)]
pub(crate) enum Failure {
    #[error("{0}")]
    Usage(String),
    #[error("{0:#}")]
    Machine(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Machine(e)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Golden { write, file }) => golden(write, file),
        Some(Command::Install {
            node,
            node_key,
            key,
            report,
        }) => read_signing_key(&key).and_then(|k| remote::install(&node, &node_key, &k, &report)),
        Some(Command::Show { report, certifier }) => show(&report, &certifier),
        None => certify(&cli.run),
    };
    match result {
        Ok(code) => code,
        Err(Failure::Usage(m)) => {
            eprintln!("lockstep-certify: {m}");
            ExitCode::from(2)
        }
        Err(Failure::Machine(e)) => {
            eprintln!("lockstep-certify: {e:#}");
            ExitCode::from(1)
        }
    }
}

pub(crate) fn usage(m: impl Into<String>) -> Failure {
    Failure::Usage(m.into())
}

/// A key given inline or as a `.pub` file.
pub(crate) fn parse_public_key(text: &str) -> Result<NodeId, Failure> {
    let inline = NodeId::parse(text);
    if let Ok(id) = inline {
        return Ok(id);
    }
    let file = std::fs::read_to_string(text).map_err(|_| {
        usage(format!(
            "{text:?} is neither a minisign public key nor a readable .pub file"
        ))
    })?;
    NodeId::parse(&file).map_err(|e| usage(format!("{text}: {e}")))
}

fn read_signing_key(path: &Path) -> Result<SigningKey, Failure> {
    let password = std::env::var("LOCKSTEP_KEY_PASSWORD").ok();
    match SigningKey::read_file(path, password.as_deref()) {
        Ok(k) => Ok(k),
        Err(SecretKeyError::PasswordNeeded { .. }) if std::io::stdin().is_terminal() => {
            eprint!("password for {}: ", path.display());
            let _ = std::io::stderr().flush();
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("reading the password")?;
            SigningKey::read_file(path, Some(line.trim_end_matches(['\n', '\r'])))
                .map_err(|e| usage(e.to_string()))
        }
        // A missing, unreadable or wrong key is the caller's to fix.
        Err(e) => Err(usage(e.to_string())),
    }
}

/// Writes `bytes` to `path` atomically (temp file + rename).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    tmp.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

pub(crate) fn sig_path(report: &Path, suffix: &str) -> PathBuf {
    let mut s = report.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// The progress line on stderr: `[12/140] conformance matmul/3 ...`.
pub(crate) fn progress_printer(quiet: bool) -> impl FnMut(&Progress) {
    let tty = std::io::stderr().is_terminal();
    move |p: &Progress| {
        if quiet {
            return;
        }
        let line = format!("[{}/{}] {} {}", p.done, p.total, p.check, p.what);
        if tty {
            eprint!("\r\x1b[2K{line}");
            if p.done == p.total {
                eprintln!();
            }
        } else {
            eprintln!("{line}");
        }
    }
}

fn certify(args: &RunArgs) -> Result<ExitCode, Failure> {
    let key_path = args.key.as_ref().ok_or_else(|| {
        usage("--key CERTIFIER.key is required (a minisign secret key; `minisign -G` makes one)")
    })?;
    let out = args
        .out
        .as_ref()
        .ok_or_else(|| usage("--out REPORT.json is required"))?;
    if args.repeats == 0 || args.repeats > lockstep_limits::MAX_STABILITY_REPEATS {
        return Err(usage(format!(
            "--repeats must be 1 to {}",
            lockstep_limits::MAX_STABILITY_REPEATS
        )));
    }
    if args.valid_days == 0 || args.valid_days > lockstep_limits::MAX_CERTIFICATION_VALIDITY_DAYS {
        return Err(usage(format!(
            "--valid-days must be 1 to {}",
            lockstep_limits::MAX_CERTIFICATION_VALIDITY_DAYS
        )));
    }
    let node_key = args.node_key.as_deref().map(parse_public_key).transpose()?;
    let key = read_signing_key(key_path)?;
    let (report_bytes, node_signature) = if let Some(node) = &args.node {
        let node_key = node_key.expect("clap requires --node-key with --node");
        let (bytes, sig) = remote::run(
            node,
            &node_key,
            &key,
            args.device.map(|d| d as u32),
            args.repeats,
            args.valid_days,
            args.quiet,
        )?;
        (bytes, Some(sig))
    } else {
        if node_key.is_none() && !args.quiet {
            eprintln!("lockstep-certify: no --node-key: the report names no node, so no node will install it");
        }
        let report = run_local(args, node_key.map(|k| k.to_base64()))?;
        (report.canonical_bytes(), None)
    };
    let report = Report::parse(&report_bytes).map_err(|e| Failure::Machine(e.into()))?;
    let signature = key.sign_minisign(
        &report_bytes,
        &report.trusted_comment(&format!("certifier {}", key.public().key_id_hex())),
    );
    write_atomic(out, &report_bytes)?;
    write_atomic(&sig_path(out, ".minisig"), signature.to_file().as_bytes())?;
    if let Some(sig) = node_signature {
        write_atomic(&sig_path(out, ".node.minisig"), sig.as_bytes())?;
    }
    print!("{}", report.summary());
    println!(
        "report   {} (signed by certifier {}; verify: minisign -Vm {} -P {})",
        out.display(),
        key.public().key_id_hex(),
        out.display(),
        key.public().to_base64()
    );
    Ok(if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn run_local(args: &RunArgs, node: Option<String>) -> Result<Report, Failure> {
    let golden = Golden::committed().map_err(|e| Failure::Machine(e.into()))?;
    let bundle = Bundle::embedded().context("loading the built-in kernel bundle")?;
    let mut bundle_id = bundle.id_hex();
    let device = args.device;
    let machine_or_usage = |e: lockstep_backend::BackendError| {
        if e.is_input_error() {
            usage(e.to_string())
        } else {
            Failure::Machine(e.into())
        }
    };
    let (mut backend, load): (Box<dyn Backend>, LoadFactory) = match args.backend {
        BackendKind::Cpu if args.cross_implementation_test => {
            return Err(usage(
                "--cross-implementation-test opens a Vulkan device; drop --backend cpu",
            ))
        }
        BackendKind::Vulkan if args.cross_implementation_test => {
            let b =
                VulkanBackend::new_cross_implementation_test(device).map_err(machine_or_usage)?;
            bundle_id = b.bundle().id_hex();
            (
                Box::new(b),
                Box::new(move || {
                    VulkanBackend::new_cross_implementation_test(device)
                        .map(|b| Box::new(b) as Box<dyn Backend>)
                }),
            )
        }
        BackendKind::Cpu => (
            Box::new(CpuBackend::new()),
            Box::new(|| Ok(Box::new(CpuBackend::new()) as Box<dyn Backend>)),
        ),
        BackendKind::Vulkan => {
            let b = VulkanBackend::new(bundle.clone(), device).map_err(machine_or_usage)?;
            (
                Box::new(b),
                Box::new(move || {
                    VulkanBackend::new(bundle.clone(), device)
                        .map(|b| Box::new(b) as Box<dyn Backend>)
                }),
            )
        }
    };
    let options = SuiteOptions {
        bundle_id,
        repeats: args.repeats,
        load: Some(load),
        node,
        valid_days: args.valid_days,
        golden,
    };
    Ok(lockstep_certify::run_suite(
        backend.as_mut(),
        &options,
        &mut progress_printer(args.quiet),
    ))
}

fn golden(write: bool, file: Option<PathBuf>) -> Result<ExitCode, Failure> {
    let mut backend = CpuBackend::new();
    let mut n = 0;
    let total = lockstep_certify::conformance::progress_steps();
    let outcome = lockstep_certify::conformance::compute(&mut backend, &mut |w| {
        n += 1;
        eprintln!("[{n}/{total}] golden {w}");
    })
    .map_err(|e| Failure::Machine(e.into()))?;
    let path = file.unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("golden.json"));
    if write {
        write_atomic(&path, &outcome.hashes.to_file())?;
        println!(
            "wrote {} ({} cases, {} examples)",
            path.display(),
            outcome.hashes.cases.len(),
            outcome.hashes.examples.len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let check = lockstep_certify::conformance::compare(
        &outcome.hashes,
        &Golden::committed().map_err(|e| Failure::Machine(e.into()))?,
    );
    match check.first_mismatch {
        None => {
            println!(
                "golden hashes match the CPU reference ({} cases)",
                check.cases
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(m) => {
            println!(
                "golden hashes differ from the CPU reference in {} cases; first: {} {}: committed {} reference {}",
                check.failed, m.kernel, m.case, m.expected, m.got
            );
            Ok(ExitCode::from(1))
        }
    }
}

fn show(report: &Path, certifier: &str) -> Result<ExitCode, Failure> {
    let key = parse_public_key(certifier)?;
    let bytes = std::fs::read(report).map_err(|e| usage(format!("{}: {e}", report.display())))?;
    let sig_file = sig_path(report, ".minisig");
    let sig = std::fs::read_to_string(&sig_file)
        .map_err(|e| usage(format!("{}: {e}", sig_file.display())))?;
    let (r, by) = Report::verify(&bytes, &sig, &[key]).map_err(|e| usage(e.to_string()))?;
    print!("{}", r.summary());
    println!("signature good: certifier {}", by.key_id_hex());
    Ok(if r.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
