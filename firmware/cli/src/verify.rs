//! `lockstep verify`: full re-execution of a job against its receipt
//! (locally, or on another node), or a spot check of a sample of its ops
//! from the node's retained evidence.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

use lockstep_program::trace::Hash;
use lockstep_program::{execute, validate, ExecOptions, ValidateOptions, ValidatedProgram};
use lockstep_protocol::Receipt;
use lockstep_tensor::Tensor;
use lockstep_verify::{
    compare, escape_bound, escape_probability, sample, Bisection, Dataflow, Source, Step,
};
use rand_core::RngCore;

use crate::evidence::{job_id, parse_key, read_receipt, run_on, Remote, Side};
use crate::failure::Failure;
use crate::{BackendKind, Target};

#[derive(clap::Args)]
pub struct VerifyArgs {
    /// The node's signed receipt (RECEIPT.minisig beside it).
    #[arg(long, value_name = "R.json")]
    receipt: PathBuf,
    /// The node id that signed it.
    #[arg(long, value_name = "KEY")]
    node_key: String,
    /// The program the node ran.
    #[arg(long, value_name = "P.json")]
    program: PathBuf,
    /// The inputs it ran on (full re-execution).
    #[arg(long = "input", value_name = "NAME=FILE.npy")]
    inputs: Vec<String>,
    /// A directory holding NAME.npy for declared inputs not given with
    /// --input (the weights `lockstep import` writes).
    #[arg(long, value_name = "DIR")]
    inputs_dir: Option<PathBuf>,
    /// Where to recompute.
    #[arg(long, value_enum, default_value = "vulkan")]
    backend: BackendKind,
    #[arg(long)]
    device: Option<usize>,
    /// The node that ran the job: spot checks fetch its evidence, and a
    /// failed re-execution asks it for leaf hashes to find the first
    /// differing op.
    #[arg(long, value_name = "ADDR:PORT")]
    node: Option<SocketAddr>,
    /// Re-execute on this node instead of locally.
    #[arg(long, value_name = "ADDR:PORT", requires = "on_key")]
    on: Option<SocketAddr>,
    #[arg(long, value_name = "KEY", requires = "on")]
    on_key: Option<String>,
    /// Spot check this fraction of the ops instead of re-executing all.
    #[arg(long, value_name = "FRACTION", requires = "node")]
    sample: Option<f64>,
    /// The spot check's seed (printed; default: random).
    #[arg(long, requires = "sample")]
    seed: Option<u64>,
}

/// The receipt (with its bytes and signature, which evidence requests
/// carry) and the program it is for.
type Loaded = (Receipt, (Vec<u8>, String), ValidatedProgram);

fn load(args: &VerifyArgs) -> Result<Loaded, Failure> {
    let key = parse_key("--node-key", &args.node_key)?;
    let (receipt, bytes, signature) = read_receipt(&args.receipt, &key)?;
    let program = crate::exec::load_program(&args.program)?;
    let validated = validate(&program, &ValidateOptions::default())
        .map_err(|e| Failure::Input(format!("{}: {e}", args.program.display())))?;
    if hex::encode(validated.sha256()) != receipt.program_sha256 {
        return Err(Failure::Input(format!(
            "{} is not the program the receipt is for (its hash is {}; the receipt's {})",
            args.program.display(),
            hex::encode(validated.sha256()),
            receipt.program_sha256
        )));
    }
    Ok((receipt, (bytes, signature), validated))
}

fn target(args: &VerifyArgs) -> Target {
    Target {
        backend: args.backend,
        device: args.device,
        bundle: None,
        cross_implementation_test: false,
    }
}

pub fn verify(args: &VerifyArgs) -> Result<(), Failure> {
    match args.sample {
        Some(f) if !(f > 0.0 && f <= 1.0) => Err(Failure::Input(format!(
            "--sample {f}: give a fraction in (0, 1], e.g. 0.1"
        ))),
        Some(f) => spot_check(args, f),
        None => full(args),
    }
}

fn full(args: &VerifyArgs) -> Result<(), Failure> {
    let (receipt, (receipt_bytes, receipt_sig), program) = load(args)?;
    let files = crate::exec::input_files(
        &args.program,
        &args.inputs,
        args.inputs_dir.as_deref(),
        &program,
    )?;
    let inputs = crate::exec::read_inputs(&args.program, &program, &files)?;
    let input_hashes: BTreeMap<String, String> = inputs
        .iter()
        .map(|(n, t)| (n.clone(), t.sha256_hex()))
        .collect();
    let start = Instant::now();
    let (outputs, root, mut mine, where_) = match (&args.on, &args.on_key) {
        (Some(addr), Some(key)) => {
            let key = parse_key("--on-key", key)?;
            let (r, bytes, sig) = run_on(*addr, &key, &program, &inputs)?;
            let root = hex32(&r.trace_root)?;
            let side = Side::Node {
                remote: Remote::connect(*addr, &key, bytes, sig)?,
                job_id: job_id(&r)?,
            };
            (r.outputs, root, side, format!("node at {addr}"))
        }
        _ => {
            let mut backend = crate::commands::open_backend(&target(args))?;
            let report = execute(&program, backend.as_mut(), inputs, ExecOptions::default())
                .map_err(|e| Failure::Runtime(e.to_string()))?;
            let trace = report.trace.expect("tracing is on by default");
            let outputs = report
                .outputs
                .iter()
                .map(|(n, t)| (n.clone(), t.sha256_hex()))
                .collect();
            let device = backend.fingerprint().name.clone();
            (
                outputs,
                trace.root,
                Side::Local {
                    leaves: trace.leaves(),
                },
                format!("{device} (local)"),
            )
        }
    };
    let elapsed = start.elapsed();
    let c = compare(&receipt, &program.sha256(), &input_hashes, &outputs, &root)
        .map_err(|e| Failure::Input(e.to_string()))?;
    println!(
        "re-executed {} ops on {where_} in {:.2} s",
        program.op_count(),
        elapsed.as_secs_f64()
    );
    if c.agrees() {
        println!(
            "agreement: all {} output(s) and the trace root {} match the receipt",
            c.outputs_checked, c.receipt_root
        );
        return Ok(());
    }
    for name in &c.differing_outputs {
        println!("output '{name}' differs from the receipt");
    }
    println!(
        "trace root: receipt {}, re-execution {}",
        c.receipt_root, c.local_root
    );
    let Some(addr) = args.node else {
        return Err(Failure::Runtime(
            "the re-execution disagrees with the receipt; give --node ADDR:PORT to find the first differing op".into(),
        ));
    };
    let key = parse_key("--node-key", &args.node_key)?;
    let mut theirs = Side::Node {
        remote: Remote::connect(addr, &key, receipt_bytes, receipt_sig)?,
        job_id: job_id(&receipt)?,
    };
    let d = locate(
        &program,
        hex32(&receipt.trace_root)?,
        root,
        &mut theirs,
        &mut mine,
    )?;
    let index = d.index;
    println!(
        "first differing op: index {index} (op {} {}), found in {} rounds, {} bytes fetched",
        d.path,
        d.op,
        d.rounds,
        theirs.bytes() + mine.bytes()
    );
    Err(Failure::Runtime(format!(
        "the re-execution disagrees with the receipt, first at op index {index}"
    )))
}

pub fn hex32(s: &str) -> Result<Hash, Failure> {
    hex::decode(s)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| Failure::Input(format!("{s:?} is not a 32-byte hex hash")))
}

/// The first op at which two runs of a program differ.
pub struct Difference {
    /// The op's leaf index in the trace.
    pub index: u64,
    /// Where the op sits in the program (its step path).
    pub path: String,
    /// The op's name.
    pub op: String,
    /// Bisection rounds it took.
    pub rounds: u32,
}

/// Finds the first op at which `theirs` (a node's trace, root
/// `their_root`) and `mine` (root `my_root`) of `program` differ.
pub fn locate(
    program: &ValidatedProgram,
    their_root: Hash,
    my_root: Hash,
    theirs: &mut Side,
    mine: &mut Side,
) -> Result<Difference, Failure> {
    let (index, rounds) = first_difference(program.op_count(), their_root, my_root, theirs, mine)?;
    let flow = Dataflow::of(program);
    let op = flow.op(program, index).expect("index within the trace");
    Ok(Difference {
        index,
        path: op.path.to_string(),
        op: op.op.name().to_string(),
        rounds,
    })
}

/// Bisects two traces to their first differing leaf: (index, rounds).
pub fn first_difference(
    size: u64,
    root_a: Hash,
    root_b: Hash,
    a: &mut Side,
    b: &mut Side,
) -> Result<(u64, u32), Failure> {
    let mut search =
        Bisection::new(size, root_a, root_b).map_err(|e| Failure::Runtime(e.to_string()))?;
    loop {
        match search.next() {
            Step::Ask(k) => {
                let (pa, pb) = (a.leaf(k)?, b.leaf(k)?);
                search
                    .answer(pa, pb)
                    .map_err(|e| Failure::Runtime(e.to_string()))?;
            }
            Step::Found { index, .. } => return Ok((index, search.rounds())),
        }
    }
}

fn spot_check(args: &VerifyArgs, fraction: f64) -> Result<(), Failure> {
    let (receipt, (receipt_bytes, receipt_sig), program) = load(args)?;
    let root = hex32(&receipt.trace_root)?;
    let seed = args.seed.unwrap_or_else(|| rand_core::OsRng.next_u64());
    let flow = Dataflow::of(&program);
    let n = flow.len();
    let chosen = sample(n, fraction, seed);
    println!(
        "spot check: {} of {n} ops (fraction {fraction}), seed {seed} (repeat with --seed {seed})",
        chosen.len()
    );
    let key = parse_key("--node-key", &args.node_key)?;
    let addr = args.node.expect("clap requires --node with --sample");
    let job = job_id(&receipt)?;
    let mut remote = Remote::connect(addr, &key, receipt_bytes, receipt_sig)?;
    let mut backend = crate::commands::open_backend(&target(args))?;
    let start = Instant::now();
    let mut failures = Vec::new();
    for &i in &chosen {
        let leaf = flow.get(i).expect("sampled within the trace");
        let vop = &program.ops()[leaf.op];
        let fetched = (|| -> Result<Vec<Tensor>, Failure> {
            let mut operands = Vec::with_capacity(leaf.inputs.len());
            for source in &leaf.inputs {
                let t = match source {
                    Source::Input(name) => {
                        let t = remote.input(job, name)?;
                        if receipt.inputs.get(name) != Some(&t.sha256_hex()) {
                            return Err(Failure::Runtime(format!(
                                "input '{name}' from the node is not the one its receipt names"
                            )));
                        }
                        t
                    }
                    Source::Leaf(j) => {
                        let (proof, t) = remote.leaf(job, *j, true)?;
                        proof
                            .verify(&root, n, *j)
                            .map_err(|e| Failure::Runtime(format!("leaf {j}: {e}")))?;
                        t.expect("asked with data")
                    }
                };
                operands.push(t);
            }
            Ok(operands)
        })();
        let outcome = fetched.and_then(|operands| {
            let (proof, out) = remote.leaf(job, i, true)?;
            proof
                .verify(&root, n, i)
                .map_err(|e| Failure::Runtime(format!("leaf {i}: {e}")))?;
            let out = out.expect("asked with data");
            let refs: Vec<&Tensor> = operands.iter().collect();
            let mine = backend
                .run(&vop.op, &refs)
                .map_err(|e| Failure::Runtime(format!("op {i}: {e}")))?;
            Ok(mine.bit_eq(&out))
        });
        match outcome {
            Ok(true) => {}
            Ok(false) => failures.push(format!(
                "op index {i} (op {} {}): the node's output is not what its inputs give",
                vop.path,
                vop.op.name()
            )),
            Err(Failure::Input(m) | Failure::Runtime(m)) => {
                failures.push(format!("op index {i}: {m}"))
            }
        }
    }
    let elapsed = start.elapsed();
    println!(
        "fetched {} bytes of evidence in {} requests; fetched and recomputed in {:.2} s",
        remote.bytes,
        remote.requests,
        elapsed.as_secs_f64()
    );
    remote.close();
    escape_table(n, chosen.len() as u64);
    if failures.is_empty() {
        println!("every sampled op checks out");
        return Ok(());
    }
    for f in failures.iter().take(10) {
        println!("FAILED {f}");
    }
    Err(Failure::Runtime(format!(
        "spot check failed on {} of {} sampled ops; first: {}",
        failures.len(),
        chosen.len(),
        failures[0]
    )))
}

/// The probability that a node which computed a fraction f of the ops
/// wrongly passes a check of k distinct ops out of n.
fn escape_table(n: u64, k: u64) {
    println!("probability that a node cheating on a fraction f of the ops escapes this check:");
    let mut fs = vec![(1, "one op".to_string())];
    for f in [0.01, 0.05, 0.1, 0.5] {
        let bad = ((f * n as f64).ceil() as u64).max(1);
        if bad > 1 {
            fs.push((bad, format!("f = {f}")));
        }
    }
    for (bad, label) in fs {
        println!(
            "  {label:>10} ({bad} of {n} ops): {:.3e} exact (hypergeometric), bound (1-f)^k = {:.3e}",
            escape_probability(n, bad, k),
            escape_bound(bad as f64 / n as f64, k)
        );
    }
}
