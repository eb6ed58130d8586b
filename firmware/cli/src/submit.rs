//! The client side of a node: `submit`, `status`, `verify-receipt`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use lockstep_identity::NodeId;
use lockstep_program::{
    validate, OpStep, Program, Step, TensorDecl, ValidateOptions, PROGRAM_VERSION,
};
use lockstep_protocol::{
    header, tensor_chunks, ErrorKind, Frame, JobRequest, Message, Receipt, TensorReceiver,
};
use lockstep_tensor::{npy, Tensor};
use lockstep_transport::frames::{write_frame, FrameReader};
use rand_core::RngCore;

use crate::failure::Failure;

/// Where a node is and who it must be.
#[derive(clap::Args)]
pub struct NodeArgs {
    /// The node's address (UDP).
    #[arg(long, value_name = "ADDR:PORT")]
    pub(crate) node: SocketAddr,
    /// The node id to pin (its minisign public key; `lockstep identity`).
    #[arg(long, value_name = "KEY")]
    node_key: String,
}

#[derive(clap::Subcommand)]
pub enum Job {
    /// Run one op on the node.
    Run {
        op: String,
        #[arg(value_name = "INPUT.npy")]
        inputs: Vec<PathBuf>,
        #[arg(long, value_name = "OUT.npy")]
        out: PathBuf,
        #[arg(long = "attr", value_name = "KEY=VALUE")]
        attrs: Vec<String>,
    },
    /// Run a program on the node.
    Exec {
        program: PathBuf,
        #[arg(long = "input", value_name = "NAME=FILE.npy")]
        inputs: Vec<String>,
        /// A directory holding NAME.npy for declared inputs not given with
        /// --input or --ref (the weights `lockstep import` writes).
        #[arg(long, value_name = "DIR")]
        inputs_dir: Option<PathBuf>,
        /// Input NAME is another job's output: the reference file
        /// `lockstep permit` wrote. The node fetches it from its producer.
        #[arg(long = "ref", value_name = "NAME=REF.json")]
        refs: Vec<String>,
        #[arg(long, value_name = "DIR")]
        out_dir: PathBuf,
    },
}

pub(crate) fn node_id(args: &NodeArgs) -> Result<NodeId, Failure> {
    NodeId::parse(&args.node_key).map_err(|e| Failure::Input(format!("--node-key: {e}")))
}

fn attrs_map(attrs: &[String]) -> Result<BTreeMap<String, String>, Failure> {
    attrs
        .iter()
        .map(|a| {
            a.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| Failure::Input(format!("--attr {a:?} is not KEY=VALUE")))
        })
        .collect()
}

/// A single op as a one-step program, so every job has a program hash.
pub(crate) fn one_op_program(
    op: &str,
    inputs: &[Tensor],
    attrs: BTreeMap<String, String>,
) -> Program {
    let names: Vec<String> = (0..inputs.len()).map(|i| format!("in{i}")).collect();
    Program {
        version: PROGRAM_VERSION,
        inputs: names
            .iter()
            .zip(inputs)
            .map(|(n, t)| TensorDecl {
                name: n.clone(),
                shape: t.shape().iter().map(|&d| d as u64).collect(),
            })
            .collect(),
        outputs: vec!["out".into()],
        body: vec![Step::Op(OpStep {
            op: op.to_string(),
            inputs: names,
            output: "out".into(),
            attrs,
        })],
    }
}

/// The `--ref NAME=REF.json` flags: each reference, checked locally as
/// the node `pinned` will check it (its receipt verifies under its
/// producer, the permission names this node and has not expired).
fn read_refs(
    flags: &[String],
    pinned: &NodeId,
) -> Result<BTreeMap<String, lockstep_protocol::TensorReference>, Failure> {
    let mut refs = BTreeMap::new();
    for flag in flags {
        let Some((name, file)) = flag.split_once('=') else {
            return Err(Failure::Input(format!(
                "--ref {flag:?} is not NAME=REF.json"
            )));
        };
        let r = crate::reference_file::read(Path::new(file), name)?;
        lockstep_protocol::check_reference(&r, pinned, std::time::SystemTime::now())
            .map_err(|e| Failure::Input(format!("--ref {name}={file}: {e}")))?;
        if refs.insert(name.to_string(), r).is_some() {
            return Err(Failure::Input(format!("--ref {name} is given twice")));
        }
    }
    Ok(refs)
}

pub fn submit(
    node: &NodeArgs,
    receipt_path: &Path,
    submitter_key: Option<&Path>,
    on_device: Option<&str>,
    job: &Job,
) -> Result<(), Failure> {
    let pinned = node_id(node)?;
    let device = on_device
        .map(lockstep_protocol::DeviceSelector::parse)
        .transpose()
        .map_err(Failure::Input)?;
    let submitter = submitter_key
        .map(|p| {
            crate::evidence::read_signing_key_flag(p, "--submitter-key")
                .map(|k| k.public().to_base64())
        })
        .transpose()?;
    let mut references = BTreeMap::new();
    let (program, inputs) = match job {
        Job::Run {
            op, inputs, attrs, ..
        } => {
            let tensors: Vec<Tensor> = inputs
                .iter()
                .map(|p| npy::read_file(p).map_err(|e| Failure::Input(e.to_string())))
                .collect::<Result<_, _>>()?;
            let program = one_op_program(op, &tensors, attrs_map(attrs)?);
            let named = tensors
                .into_iter()
                .enumerate()
                .map(|(i, t)| (format!("in{i}"), t))
                .collect();
            (program, named)
        }
        Job::Exec {
            program,
            inputs,
            inputs_dir,
            refs,
            ..
        } => {
            let p = crate::exec::load_program(program)?;
            let validated = validate(&p, &ValidateOptions::default())
                .map_err(|e| Failure::Input(format!("{}: {e}", program.display())))?;
            references = read_refs(refs, &pinned)?;
            let referenced = references.keys().cloned().collect();
            let files = crate::exec::input_files_except(
                program,
                inputs,
                inputs_dir.as_deref(),
                &validated,
                &referenced,
            )?;
            let tensors = crate::exec::read_inputs(program, &validated, &files)?;
            (p, tensors)
        }
    };
    let crate::api::Submitted {
        outputs,
        receipt_json,
        signature,
        chain_signature,
        receipt,
    } = submit_job(
        node.node,
        &pinned,
        &program,
        inputs,
        &references,
        submitter,
        device,
    )?;
    let chain_address = receipt
        .chain_address()
        .map_err(|e| Failure::Runtime(format!("the node's receipt: {e}")))?;
    match job {
        Job::Run { out, .. } => {
            let t = outputs
                .get("out")
                .ok_or_else(|| Failure::Runtime("the node returned no output".into()))?;
            npy::write_file(out, t).map_err(|e| Failure::Runtime(e.to_string()))?;
        }
        Job::Exec { out_dir, .. } => {
            std::fs::create_dir_all(out_dir)
                .map_err(|e| Failure::Runtime(format!("{}: {e}", out_dir.display())))?;
            for (name, t) in &outputs {
                npy::write_file(&out_dir.join(format!("{name}.npy")), t)
                    .map_err(|e| Failure::Runtime(e.to_string()))?;
            }
        }
    }
    let write = |path: PathBuf, bytes: &[u8]| {
        std::fs::write(&path, bytes)
            .map_err(|e| Failure::Runtime(format!("{}: {e}", path.display())))
    };
    write(receipt_path.to_path_buf(), &receipt_json)?;
    let mut sig_path = receipt_path.as_os_str().to_owned();
    sig_path.push(".minisig");
    write(PathBuf::from(sig_path), signature.as_bytes())?;
    write(
        sibling(receipt_path, EIP712_SUFFIX),
        format!("{}\n", chain_signature).as_bytes(),
    )?;
    println!("job     {}", receipt.job_id);
    println!("node    {}", receipt.node);
    match (&receipt.device.index, &receipt.device.uuid) {
        (Some(index), Some(uuid)) => println!(
            "device  {index}: {} ({}, uuid {uuid})",
            receipt.device.name, receipt.device.backend
        ),
        _ => println!(
            "device  {} ({})",
            receipt.device.name, receipt.device.backend
        ),
    }
    println!("trace   root {}", receipt.trace_root);
    println!("chain   {chain_address}");
    println!(
        "receipt {} (signature verified; chain signature in {})",
        receipt_path.display(),
        sibling(receipt_path, EIP712_SUFFIX).display()
    );
    Ok(())
}

/// Runs `program` on the node at `addr`, which must be `pinned`, and
/// checks what comes back: the receipt verifies under the node's key and
/// its chain key, records each reference as given, and names the outputs
/// returned. `program` is validated locally first: a program the node
/// would refuse costs nothing.
pub(crate) fn submit_job(
    addr: SocketAddr,
    pinned: &NodeId,
    program: &Program,
    inputs: BTreeMap<String, Tensor>,
    references: &BTreeMap<String, lockstep_protocol::TensorReference>,
    submitter: Option<String>,
    device: Option<lockstep_protocol::DeviceSelector>,
) -> Result<crate::api::Submitted, Failure> {
    validate(program, &ValidateOptions::default()).map_err(|e| Failure::Input(e.to_string()))?;
    let mut job_id = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut job_id);
    let request = JobRequest {
        job_id,
        program: program.to_postcard(),
        inputs: inputs.iter().map(|(n, t)| header(n, t)).collect(),
        references: references.values().cloned().collect(),
        submitter,
        device,
    };
    let (done, outputs) = smol::block_on(exchange(addr, pinned, request, &inputs))?;
    let receipt = Receipt::verify(&done.receipt, &done.signature, pinned)
        .map_err(|e| Failure::Runtime(format!("the node's receipt does not verify: {e}")))?;
    // The node speaks protocol v5 on: its receipts are format 3 or later,
    // signed by its chain key too.
    let chain_address = receipt
        .chain_address()
        .map_err(|e| Failure::Runtime(format!("the node's receipt: {e}")))?;
    lockstep_protocol::verify_chain_signature(&done.receipt, &done.chain_signature, &chain_address)
        .map_err(|e| Failure::Runtime(format!("the node's receipt: {e}")))?;
    for (name, r) in references {
        let recorded = receipt.references.as_ref().and_then(|m| m.get(name));
        if recorded != Some(&r.record()) || receipt.inputs.get(name) != Some(&hex::encode(r.sha256))
        {
            return Err(Failure::Runtime(format!(
                "the node's receipt does not record input '{name}' as the reference given"
            )));
        }
    }
    for (name, t) in &outputs {
        if receipt.outputs.get(name) != Some(&t.sha256_hex()) {
            return Err(Failure::Runtime(format!(
                "output '{name}' does not match the receipt's hash; the node's reply is inconsistent"
            )));
        }
    }
    Ok(crate::api::Submitted {
        outputs,
        receipt_json: done.receipt,
        signature: done.signature,
        chain_signature: done.chain_signature,
        receipt,
    })
}

/// The suffix of the file beside a receipt that holds its chain key's
/// EIP-712 signature (`0x` + 130 hex, one line).
pub(crate) const EIP712_SUFFIX: &str = ".eip712";

/// `RECEIPT` + `suffix`.
pub(crate) fn sibling(receipt: &Path, suffix: &str) -> PathBuf {
    let mut path = receipt.as_os_str().to_owned();
    path.push(suffix);
    PathBuf::from(path)
}

pub(crate) struct Done {
    pub(crate) receipt: Vec<u8>,
    pub(crate) signature: String,
    pub(crate) chain_signature: String,
}

pub(crate) async fn exchange(
    addr: SocketAddr,
    pinned: &NodeId,
    request: JobRequest,
    inputs: &BTreeMap<String, Tensor>,
) -> Result<(Done, BTreeMap<String, Tensor>), Failure> {
    let connection = lockstep_transport::connect(addr, pinned)
        .await
        .map_err(|e| Failure::Runtime(e.to_string()))?;
    let result = exchange_on(&connection, addr, request, inputs).await;
    connection.close(0u32.into(), b"done");
    result
}

/// One job on an open connection (one bidirectional stream).
/// What a busy node's refusal says (the load test retries on it).
pub(crate) const BUSY: &str = "is busy";

pub(crate) async fn exchange_on(
    connection: &quinn::Connection,
    addr: SocketAddr,
    request: JobRequest,
    inputs: &BTreeMap<String, Tensor>,
) -> Result<(Done, BTreeMap<String, Tensor>), Failure> {
    let net = |e: &dyn std::fmt::Display| Failure::Runtime(format!("node at {addr}: {e}"));
    let (mut send, recv) = connection.open_bi().await.map_err(|e| net(&e))?;
    let order: Vec<String> = request.inputs.iter().map(|h| h.name.clone()).collect();
    write_frame(&mut send, &Message::Submit(request).to_frame())
        .await
        .map_err(|e| net(&e))?;
    let total: usize = order.iter().map(|n| inputs[n].len() * 4).sum();
    let mut progress = Progress::new("upload", total);
    // A node that refuses the job (busy, over a bound) stops the upload at
    // once: its reply says why, so read it rather than report the write.
    let mut stopped = None;
    'upload: for name in &order {
        for chunk in tensor_chunks(&inputs[name]) {
            if let Err(e) = write_frame(&mut send, &chunk).await {
                stopped = Some(e);
                break 'upload;
            }
            if let Frame::Data(d) = &chunk {
                progress.advance(d.len());
            }
        }
    }
    progress.done();
    let _ = send.finish();
    let mut reader = FrameReader::new(recv);
    let first = match (first_reply(&mut reader, addr).await, stopped) {
        (Ok(m), _) => m,
        (Err(_), Some(e)) => return Err(net(&e)),
        (Err(e), None) => return Err(e),
    };
    let result = match first {
        Message::Done(r) => r,
        Message::Busy { retry_after_ms } => {
            return Err(Failure::Runtime(format!(
                "node at {addr} {BUSY} (its job slots or memory budget are full); retry after {retry_after_ms} ms"
            )))
        }
        Message::Rejected(e) => {
            if let ErrorKind::Reference(r) = e.kind {
                use lockstep_protocol::ReferenceRefusal as R;
                let msg = format!("node at {addr} refused a reference ({r:?}): {}", e.message);
                return Err(match r {
                    R::ForgedReceipt
                    | R::NotInReceipt
                    | R::NoPermission
                    | R::PermissionExpired
                    | R::Malformed
                    | R::DataMismatch => Failure::Input(msg),
                    _ => Failure::Runtime(msg),
                });
            }
            let msg = format!(
                "node at {addr} refused the job ({:?}): {}",
                e.kind, e.message
            );
            return Err(match e.kind {
                ErrorKind::InvalidProgram
                | ErrorKind::BadInput
                | ErrorKind::TooLarge
                | ErrorKind::NoSuchDevice => {
                    Failure::Input(msg)
                }
                _ => Failure::Runtime(msg),
            });
        }
        _ => return Err(net(&"unexpected reply")),
    };
    let total: u64 = result
        .outputs
        .iter()
        .map(|h| h.shape.iter().product::<u64>() * 4)
        .sum();
    let mut progress = Progress::new("download", total as usize);
    let mut receiver = TensorReceiver::new(result.outputs).map_err(|e| net(&e))?;
    let mut outputs: BTreeMap<String, Tensor> = receiver.take_ready().into_iter().collect();
    while !receiver.is_done() {
        match reader.next().await.map_err(|e| net(&e))? {
            Some(Frame::Data(chunk)) => {
                progress.advance(chunk.len());
                outputs.extend(receiver.push(&chunk).map_err(|e| net(&e))?)
            }
            _ => return Err(net(&"the reply ended before every output arrived")),
        }
    }
    progress.done();
    Ok((
        Done {
            receipt: result.receipt,
            signature: result.signature,
            chain_signature: result.chain_signature,
        },
        outputs,
    ))
}

/// The node's answer: the first frame of its side of the stream, which is
/// always a control message.
pub(crate) async fn first_reply(
    reader: &mut FrameReader,
    addr: SocketAddr,
) -> Result<Message, Failure> {
    let net = |e: &dyn std::fmt::Display| Failure::Runtime(format!("node at {addr}: {e}"));
    match reader.next().await.map_err(|e| net(&e))? {
        Some(Frame::Control(p)) => Message::decode(&p).map_err(|e| net(&e)),
        _ => Err(net(&"the node closed the stream without an answer")),
    }
}

pub fn status(node: &NodeArgs) -> Result<(), Failure> {
    let pinned = node_id(node)?;
    let status = smol::block_on(async {
        let connection = lockstep_transport::connect(node.node, &pinned)
            .await
            .map_err(|e| Failure::Runtime(e.to_string()))?;
        let net =
            |e: &dyn std::fmt::Display| Failure::Runtime(format!("node at {}: {e}", node.node));
        let (mut send, recv) = connection.open_bi().await.map_err(|e| net(&e))?;
        write_frame(&mut send, &Message::StatusRequest.to_frame())
            .await
            .map_err(|e| net(&e))?;
        let _ = send.finish();
        let reply = first_reply(&mut FrameReader::new(recv), node.node).await;
        connection.close(0u32.into(), b"done");
        let reply = reply?;
        match reply {
            Message::Status(s) => Ok(s),
            other => Err(net(&format!("unexpected reply {other:?}"))),
        }
    })?;
    println!("node     {}", status.node_id);
    println!("device   {}", status.device);
    println!("bundle   {}", status.bundle_id);
    println!(
        "certified {} ({})",
        if status.certified { "yes" } else { "no" },
        status.certification
    );
    println!("queue    {} of {}", status.queue_depth, status.queue_bound);
    println!(
        "jobs     {} done, {} failed",
        status.jobs_done, status.jobs_failed
    );
    println!("uptime   {} s", status.uptime_s);
    println!("key      {}", status.key_protection);
    println!("chain    {}", status.chain_address);
    for d in &status.devices {
        println!(
            "device {:<2} {} uuid {}: {}; certified {} ({}); queue {} of {}; jobs {} done, {} failed",
            d.index,
            d.name,
            d.uuid,
            match &d.problem {
                Some(p) => format!("OUT OF SERVICE ({p})"),
                None if d.serving => "serving".to_string(),
                None => "not serving".to_string(),
            },
            if d.certified { "yes" } else { "no" },
            d.certification,
            d.queue_depth,
            d.queue_bound,
            d.jobs_done,
            d.jobs_failed
        );
    }
    Ok(())
}

/// A receipt whose signatures verified.
pub(crate) struct Verified {
    pub(crate) receipt: Receipt,
    /// Format 3: the chain key's signature (from `RECEIPT.eip712`), checked
    /// to recover to the receipt's chain address.
    pub(crate) chain: Option<(lockstep_chain::Address, lockstep_chain::Signature65)>,
}

/// Reads `RECEIPT.eip712` (bounded: one short line).
fn read_chain_signature(receipt: &Path) -> Result<String, Failure> {
    use std::io::Read as _;
    let path = sibling(receipt, EIP712_SUFFIX);
    let file = std::fs::File::open(&path).map_err(|e| {
        Failure::Input(if e.kind() == std::io::ErrorKind::NotFound {
            format!(
                "{}: missing: a format 3 receipt's chain signature travels beside it ({} writes it); copy it with the receipt",
                path.display(),
                "lockstep submit"
            )
        } else {
            format!("{}: {e}", path.display())
        })
    })?;
    let mut text = String::new();
    file.take(1024)
        .read_to_string(&mut text)
        .map_err(|e| Failure::Input(format!("{}: not a chain signature: {e}", path.display())))?;
    Ok(text.trim().to_string())
}

/// Verifies receipt `bytes` and its minisign `signature` under `pinned`
/// and, when the receipt names a chain address, the chain signature that
/// `chain_signature` gives; `shown` names the receipt in errors.
pub(crate) fn verify_receipt_bytes(
    bytes: &[u8],
    signature: &str,
    chain_signature: impl FnOnce() -> Result<String, Failure>,
    pinned: &NodeId,
    shown: &str,
) -> Result<Verified, Failure> {
    let r = Receipt::verify(bytes, signature, pinned)
        .map_err(|e| Failure::Input(format!("{shown}: {e}")))?;
    let chain = match r.chain_address {
        None => None,
        Some(_) => {
            let address = r
                .chain_address()
                .map_err(|e| Failure::Input(format!("{shown}: {e}")))?;
            let text = chain_signature()?;
            let eip712 = format!("{shown}{EIP712_SUFFIX}");
            lockstep_protocol::verify_chain_signature(bytes, &text, &address)
                .map_err(|e| Failure::Input(format!("{eip712}: {e}")))?;
            let signature =
                lockstep_protocol::chain::parse_chain_signature("chain signature", &text)
                    .map_err(|e| Failure::Input(format!("{eip712}: {e}")))?;
            Some((address, signature))
        }
    };
    Ok(Verified { receipt: r, chain })
}

/// Verifies `RECEIPT` with `RECEIPT.minisig` (and, format 3, `RECEIPT.eip712`)
/// against `node_key`, and any output files against its hashes.
pub(crate) fn verify_receipt_files(
    receipt: &Path,
    node_key: &str,
    outputs: &[PathBuf],
) -> Result<Verified, Failure> {
    let pinned = NodeId::parse(node_key).map_err(|e| Failure::Input(format!("--node-key: {e}")))?;
    let bytes = std::fs::read(receipt)
        .map_err(|e| Failure::Input(format!("{}: {e}", receipt.display())))?;
    let mut sig_path = receipt.as_os_str().to_owned();
    sig_path.push(".minisig");
    let sig_path = PathBuf::from(sig_path);
    let sig = std::fs::read_to_string(&sig_path)
        .map_err(|e| Failure::Input(format!("{}: {e}", sig_path.display())))?;
    let verified = verify_receipt_bytes(
        &bytes,
        &sig,
        || read_chain_signature(receipt),
        &pinned,
        &receipt.display().to_string(),
    )?;
    let Verified { receipt: r, chain } = verified;
    for file in outputs {
        let t = npy::read_file(file).map_err(|e| Failure::Input(e.to_string()))?;
        let hash = t.sha256_hex();
        let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        let matches = match r.outputs.get(stem) {
            Some(h) => *h == hash,
            None => r.outputs.values().any(|h| *h == hash),
        };
        if !matches {
            return Err(Failure::Input(format!(
                "{}: its SHA-256 {hash} is not the receipt's output hash",
                file.display()
            )));
        }
    }
    println!(
        "receipt {} verified: job {}, node {}, trace root {}, {} output(s) checked",
        receipt.display(),
        r.job_id,
        r.node,
        r.trace_root,
        outputs.len()
    );
    // Format 1 receipts predate the field: their keys were all files.
    println!(
        "key protection: {}",
        r.key_protection
            .map_or("not stated (receipt format 1: a file key)", |p| p.as_str())
    );
    match &chain {
        Some((address, _)) => println!("chain address: {address} (EIP-712 signature verified)"),
        None => println!(
            "chain address: none (receipt format {}: signed by the device key only)",
            r.format
        ),
    }
    Ok(Verified { receipt: r, chain })
}

/// `lockstep bench-node`: round-trip latency of a tiny job on one
/// connection, and upload throughput of one large tensor.
pub fn bench_node(node: &NodeArgs, jobs: usize, upload_mib: usize) -> Result<(), Failure> {
    let pinned = node_id(node)?;
    let tiny = Tensor::filled(vec![4], 1, lockstep_tensor::Fill::Uniform)
        .map_err(|e| Failure::Input(e.to_string()))?;
    let request_for = |t: &Tensor, op: &str| {
        let mut job_id = [0u8; 16];
        rand_core::OsRng.fill_bytes(&mut job_id);
        let program = one_op_program(op, std::slice::from_ref(t), BTreeMap::new());
        JobRequest {
            job_id,
            program: program.to_postcard(),
            inputs: vec![header("in0", t)],
            references: vec![],
            submitter: None,
            device: None,
        }
    };
    smol::block_on(async {
        let connection = lockstep_transport::connect(node.node, &pinned)
            .await
            .map_err(|e| Failure::Runtime(e.to_string()))?;
        let inputs = BTreeMap::from([("in0".to_string(), tiny.clone())]);
        let mut times = Vec::with_capacity(jobs);
        let start = std::time::Instant::now();
        for _ in 0..jobs.max(1) {
            let t0 = std::time::Instant::now();
            exchange_on(&connection, node.node, request_for(&tiny, "relu"), &inputs).await?;
            times.push(t0.elapsed());
        }
        let wall = start.elapsed();
        times.sort();
        let pct = |p: f64| times[((times.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e3;
        println!(
            "tiny job (relu on 4 floats, signed receipt), {} jobs on one connection: {:.0} jobs/s, p50 {:.2} ms, p99 {:.2} ms",
            times.len(),
            times.len() as f64 / wall.as_secs_f64(),
            pct(0.5),
            pct(0.99)
        );
        if upload_mib > 0 {
            let big = Tensor::filled(
                vec![upload_mib * 1024 * 256],
                2,
                lockstep_tensor::Fill::Uniform,
            )
            .map_err(|e| Failure::Input(e.to_string()))?;
            let inputs = BTreeMap::from([("in0".to_string(), big.clone())]);
            let t0 = std::time::Instant::now();
            exchange_on(&connection, node.node, request_for(&big, "relu"), &inputs).await?;
            let secs = t0.elapsed().as_secs_f64();
            let mb = (upload_mib * 1024 * 1024) as f64 / 1e6;
            println!(
                "{upload_mib} MiB tensor through relu: {secs:.2} s round trip, {:.0} MB/s each way counting upload and download",
                2.0 * mb / secs
            );
        }
        connection.close(0u32.into(), b"done");
        Ok(())
    })
}

/// A one-line transfer progress display on stderr: only for transfers of
/// more than a few MiB, and only when stderr is a terminal.
struct Progress {
    what: &'static str,
    total: usize,
    done: usize,
    shown_percent: Option<usize>,
    enabled: bool,
}

impl Progress {
    const MIN_BYTES: usize = 4 << 20;

    fn new(what: &'static str, total: usize) -> Progress {
        use std::io::IsTerminal;
        Progress {
            what,
            total,
            done: 0,
            shown_percent: None,
            enabled: total >= Self::MIN_BYTES && std::io::stderr().is_terminal(),
        }
    }

    fn advance(&mut self, bytes: usize) {
        self.done += bytes;
        if !self.enabled {
            return;
        }
        let percent = self.done * 100 / self.total.max(1);
        if self.shown_percent != Some(percent) {
            self.shown_percent = Some(percent);
            eprint!(
                "\r{} {percent:>3}% ({} of {} MiB)",
                self.what,
                self.done >> 20,
                self.total >> 20
            );
        }
    }

    fn done(&self) {
        if self.enabled {
            eprintln!();
        }
    }
}
