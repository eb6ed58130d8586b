//! `lockstep dispute`: settle a disagreement between two nodes on a job by
//! bisecting their traces to the first op whose outputs differ, re-running
//! just that op here, and writing a signed dispute record;
//! `lockstep verify-dispute`: check such a record.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Instant;

use lockstep_program::{validate, ValidateOptions};
use lockstep_protocol::Receipt;
use lockstep_tensor::Tensor;
use lockstep_verify::dispute::{disputed_op, path_hex};
use lockstep_verify::{
    Bisection, Dataflow, DisputeRecord, OpInput, PartyClaim, RefereeResult, Source, Step, Verdict,
    DISPUTE_FORMAT,
};

use crate::evidence::{job_id, parse_key, read_receipt, read_signing_key, run_on, Remote};
use crate::failure::Failure;
use crate::verify::hex32;
use crate::{BackendKind, Target};

#[derive(clap::Args)]
pub struct DisputeArgs {
    /// The program both nodes ran (or are to run).
    #[arg(long, value_name = "P.json")]
    program: PathBuf,
    /// Its inputs: submitted to both nodes when no receipts are given, and
    /// used for operands that are program inputs.
    #[arg(long = "input", value_name = "NAME=FILE.npy")]
    inputs: Vec<String>,
    /// A directory holding NAME.npy for declared inputs not given with
    /// --input (the weights `lockstep import` writes).
    #[arg(long, value_name = "DIR")]
    inputs_dir: Option<PathBuf>,
    #[arg(long, value_name = "ADDR:PORT")]
    a: SocketAddr,
    #[arg(long, value_name = "KEY")]
    a_key: String,
    #[arg(long, value_name = "ADDR:PORT")]
    b: SocketAddr,
    #[arg(long, value_name = "KEY")]
    b_key: String,
    /// A's receipt for the job (instead of submitting it).
    #[arg(long, value_name = "R.json", requires = "receipt_b")]
    receipt_a: Option<PathBuf>,
    #[arg(long, value_name = "R.json", requires = "receipt_a")]
    receipt_b: Option<PathBuf>,
    /// The referee's minisign secret key, which signs the record.
    #[arg(long, value_name = "REFEREE.key")]
    key: PathBuf,
    /// Where the record goes (and OUT.minisig beside it).
    #[arg(long, value_name = "DISPUTE.json")]
    out: PathBuf,
    /// Where the referee re-executes the disputed op.
    #[arg(long, value_enum, default_value = "vulkan")]
    backend: BackendKind,
    #[arg(long)]
    device: Option<usize>,
}

struct Party {
    remote: Remote,
    job: [u8; 16],
    receipt: Receipt,
    bytes: Vec<u8>,
    signature: String,
}

pub fn dispute(args: &DisputeArgs) -> Result<(), Failure> {
    let referee = read_signing_key(&args.key)?;
    let key_a = parse_key("--a-key", &args.a_key)?;
    let key_b = parse_key("--b-key", &args.b_key)?;
    let program = crate::exec::load_program(&args.program)?;
    let program = validate(&program, &ValidateOptions::default())
        .map_err(|e| Failure::Input(format!("{}: {e}", args.program.display())))?;
    let inputs: BTreeMap<String, Tensor> =
        if args.inputs.is_empty() && args.inputs_dir.is_none() && args.receipt_a.is_some() {
            BTreeMap::new()
        } else {
            let files = crate::exec::input_files(
                &args.program,
                &args.inputs,
                args.inputs_dir.as_deref(),
                &program,
            )?;
            crate::exec::read_inputs(&args.program, &program, &files)?
        };
    let start = Instant::now();
    let ((ra, ba, sa), (rb, bb, sb)) = match (&args.receipt_a, &args.receipt_b) {
        (Some(pa), Some(pb)) => (read_receipt(pa, &key_a)?, read_receipt(pb, &key_b)?),
        _ => (
            run_on(args.a, &key_a, &program, &inputs)?,
            run_on(args.b, &key_b, &program, &inputs)?,
        ),
    };
    let program_hash = hex::encode(program.sha256());
    for (name, r) in [("A", &ra), ("B", &rb)] {
        if r.program_sha256 != program_hash {
            return Err(Failure::Input(format!(
                "party {name}'s receipt is for program {}, not {}",
                r.program_sha256,
                args.program.display()
            )));
        }
    }
    if ra.inputs != rb.inputs {
        return Err(Failure::Input(
            "the two receipts name different inputs: they are not the same job".into(),
        ));
    }
    let root_a = hex32(&ra.trace_root)?;
    let root_b = hex32(&rb.trace_root)?;
    let n = program.op_count();
    let mut a = Party {
        remote: Remote::connect(args.a, &key_a, ba.clone(), sa.clone())?,
        job: job_id(&ra)?,
        receipt: ra,
        bytes: ba,
        signature: sa,
    };
    let mut b = Party {
        remote: Remote::connect(args.b, &key_b, bb.clone(), sb.clone())?,
        job: job_id(&rb)?,
        receipt: rb,
        bytes: bb,
        signature: sb,
    };

    let mut search =
        Bisection::new(n, root_a, root_b).map_err(|e| Failure::Input(e.to_string()))?;
    let (index, proof_a, proof_b) = loop {
        match search.next() {
            Step::Ask(k) => {
                let pa = a.remote.leaf(a.job, k, false)?.0;
                let pb = b.remote.leaf(b.job, k, false)?.0;
                search
                    .answer(pa, pb)
                    .map_err(|e| Failure::Runtime(e.to_string()))?;
            }
            Step::Found { index, a, b } => break (index, a, b),
        }
    };
    let flow = Dataflow::of(&program);
    let leaf = flow.get(index).expect("found within the trace");
    let vop = &program.ops()[leaf.op];

    // One more round: every operand, with proofs from both parties (they
    // agree, the op being the first that differs), data from whichever
    // gives it.
    let mut operands = Vec::new();
    let mut records = Vec::new();
    for source in &leaf.inputs {
        let (t, proof_a, proof_b) = match source {
            Source::Input(name) => {
                let t = match inputs.get(name) {
                    Some(t) => t.clone(),
                    None => a
                        .remote
                        .input(a.job, name)
                        .or_else(|_| b.remote.input(b.job, name))?,
                };
                if a.receipt.inputs.get(name) != Some(&t.sha256_hex()) {
                    return Err(Failure::Input(format!(
                        "input '{name}' is not the one the receipts name"
                    )));
                }
                (t, Vec::new(), Vec::new())
            }
            Source::Leaf(j) => {
                let (pa, ta) = a.remote.leaf(a.job, *j, true)?;
                pa.verify(&root_a, n, *j)
                    .map_err(|e| Failure::Runtime(format!("party A, leaf {j}: {e}")))?;
                let (pb, _) = b.remote.leaf(b.job, *j, false)?;
                pb.verify(&root_b, n, *j)
                    .map_err(|e| Failure::Runtime(format!("party B, leaf {j}: {e}")))?;
                (ta.expect("asked with data"), pa.path, pb.path)
            }
        };
        records.push(OpInput {
            source: source.label(),
            sha256: t.sha256_hex(),
            proof_a: path_hex(&proof_a),
            proof_b: path_hex(&proof_b),
            npy_base64: OpInput::encode(&t),
        });
        operands.push(t);
    }
    let rounds = search.rounds() + 1;

    let mut backend = crate::commands::open_backend(&Target {
        backend: args.backend,
        device: args.device,
        bundle: None,
        cross_implementation_test: false,
    })?;
    let refs: Vec<&Tensor> = operands.iter().collect();
    let mine = backend
        .run(&vop.op, &refs)
        .map_err(|e| Failure::Runtime(format!("re-executing op {index}: {e}")))?
        .sha256_hex();
    let leaf_a = hex::encode(proof_a.leaf);
    let leaf_b = hex::encode(proof_b.leaf);
    let verdict = Verdict::judge(&mine, &leaf_a, &leaf_b)
        .expect("the two leaves differ, so at least one differs from the referee's");
    let fp = backend.fingerprint();
    let record = DisputeRecord {
        format: DISPUTE_FORMAT,
        program_sha256: program_hash,
        trace_size: n,
        op_index: index,
        op: disputed_op(&program, leaf.op),
        a: claim(&a, leaf_a, &proof_a.path)?,
        b: claim(&b, leaf_b, &proof_b.path)?,
        inputs: records,
        referee: RefereeResult {
            key: referee.public().to_base64(),
            backend: fp.backend.to_string(),
            device: fp.name.clone(),
            output_sha256: mine,
        },
        verdict,
        rounds,
    };
    record
        .check()
        .map_err(|e| Failure::Runtime(format!("the record does not check out: {e}")))?;
    let bytes = record.canonical_bytes();
    let signature = referee.sign_minisign(&bytes, &record.signature_comment());
    write_atomic(&args.out, &bytes)?;
    write_atomic(&sig_path(&args.out), signature.to_file().as_bytes())?;
    let moved = a.remote.bytes + b.remote.bytes;
    a.remote.close();
    b.remote.close();
    println!(
        "first differing op: index {index} of {n} (op {} {})",
        vop.path,
        vop.op.name()
    );
    println!(
        "rounds {rounds} (bound ⌈log2 n⌉+2 = {}), {moved} bytes fetched, {:.2} s",
        Bisection::max_rounds(n) + 1,
        start.elapsed().as_secs_f64()
    );
    let who = |v: Verdict| match v {
        Verdict::AWrong => format!("A ({}) computed it wrongly", a.receipt.node),
        Verdict::BWrong => format!("B ({}) computed it wrongly", b.receipt.node),
        Verdict::BothWrong => "both A and B computed it wrongly".to_string(),
    };
    println!("verdict: {}", who(verdict));
    println!("record {} (signed by the referee)", args.out.display());
    Ok(())
}

fn claim(
    p: &Party,
    leaf: String,
    path: &[lockstep_program::trace::Hash],
) -> Result<PartyClaim, Failure> {
    Ok(PartyClaim {
        node: p.receipt.node.clone(),
        receipt: String::from_utf8(p.bytes.clone())
            .map_err(|_| Failure::Runtime("a receipt is not UTF-8".into()))?,
        receipt_signature: p.signature.clone(),
        trace_root: p.receipt.trace_root.clone(),
        leaf_sha256: leaf,
        proof: path_hex(path),
    })
}

fn sig_path(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".minisig");
    PathBuf::from(s)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    let fail = |e: std::io::Error| Failure::Runtime(format!("{}: {e}", path.display()));
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)
}

#[derive(clap::Args)]
pub struct VerifyDisputeArgs {
    #[arg(value_name = "DISPUTE.json")]
    record: PathBuf,
    /// The referee's public key (minisign, base64).
    #[arg(long, value_name = "KEY")]
    referee_key: String,
    /// Also check that the op and its operands are what this program runs.
    #[arg(long, value_name = "P.json")]
    program: Option<PathBuf>,
    /// Also re-execute the op from the record's operands on this backend.
    #[arg(long, value_enum)]
    reexecute: Option<BackendKind>,
}

pub fn verify_dispute(args: &VerifyDisputeArgs) -> Result<(), Failure> {
    let referee = parse_key("--referee-key", &args.referee_key)?;
    let bytes = std::fs::read(&args.record)
        .map_err(|e| Failure::Input(format!("{}: {e}", args.record.display())))?;
    if bytes.len() > lockstep_limits::MAX_DISPUTE_RECORD_BYTES {
        return Err(Failure::Input(format!(
            "{} is over {} bytes; not a dispute record",
            args.record.display(),
            lockstep_limits::MAX_DISPUTE_RECORD_BYTES
        )));
    }
    let sig_file = sig_path(&args.record);
    let sig = std::fs::read_to_string(&sig_file)
        .map_err(|e| Failure::Input(format!("{}: {e}", sig_file.display())))?;
    let record = DisputeRecord::verify(&bytes, &sig, &referee)
        .map_err(|e| Failure::Input(format!("{}: {e}", args.record.display())))?;
    if let Some(p) = &args.program {
        let program = crate::exec::load_program(p)?;
        let program = validate(&program, &ValidateOptions::default())
            .map_err(|e| Failure::Input(format!("{}: {e}", p.display())))?;
        record
            .check_program(&program)
            .map_err(|e| Failure::Input(format!("{}: {e}", args.record.display())))?;
    }
    if let Some(kind) = args.reexecute {
        let mut backend = crate::commands::open_backend(&Target {
            backend: kind,
            device: None,
            bundle: None,
            cross_implementation_test: false,
        })?;
        let mine = record
            .reexecute(backend.as_mut())
            .map_err(|e| Failure::Input(e.to_string()))?;
        if mine != record.referee.output_sha256 {
            return Err(Failure::Input(format!(
                "re-executing op {} here gives {mine}, not the referee's {}",
                record.op_index, record.referee.output_sha256
            )));
        }
        println!(
            "re-executed op {} here: same output as the referee",
            record.op_index
        );
    }
    println!(
        "dispute record {} verified: op index {} ({} {}), {}; signatures, receipts and proofs check out",
        args.record.display(),
        record.op_index,
        record.op.path,
        record.op.name,
        record.verdict.describe()
    );
    Ok(())
}
