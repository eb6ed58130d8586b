//! `lockstep lineage`: walks a receipt's referenced inputs back through
//! their source receipts, verifying every signature and hash on the way
//! (and, with `--reexecute`, re-running every step on the CPU reference).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use lockstep_identity::NodeId;
use lockstep_limits::{MAX_LINEAGE_STEPS, MAX_RECEIPT_BYTES};
use lockstep_program::{execute, validate, ExecOptions, Program, ValidateOptions};
use lockstep_protocol::Receipt;
use lockstep_tensor::{npy, Tensor};
use sha2::{Digest, Sha256};

use crate::evidence::{parse_key, Remote, Side};
use crate::failure::Failure;
use crate::permit::{fleet_address, read_named_receipt};
use crate::verify::hex32;

#[derive(clap::Args)]
pub struct LineageArgs {
    /// The receipt whose lineage to walk (R.json.minisig beside it).
    #[arg(value_name = "R.json")]
    receipt: PathBuf,
    /// The address of the node that signed it.
    #[arg(long, value_name = "ADDR:PORT")]
    node: Option<SocketAddr>,
    /// Also require the receipt to be signed by this node.
    #[arg(long, value_name = "KEY")]
    node_key: Option<String>,
    /// Directories of source receipts (*.json with .minisig beside), looked
    /// in before asking a node; repeatable.
    #[arg(long = "receipts", value_name = "DIR")]
    receipts: Vec<PathBuf>,
    /// Take nodes' addresses from this fleet's inventory.
    #[arg(long, value_name = "FLEET")]
    fleet: Option<PathBuf>,
    /// Re-execute every step on the CPU reference (fetching its program and
    /// inputs from its node).
    #[arg(long)]
    reexecute: bool,
    /// Write every step's receipt (and, with --reexecute, its program and
    /// inputs) here.
    #[arg(long, value_name = "DIR")]
    save: Option<PathBuf>,
    /// Print one JSON document.
    #[arg(long)]
    json: bool,
}

struct Edge {
    input: String,
    source: usize,
    output: String,
    sha256: String,
}

struct StepNode {
    receipt: Receipt,
    bytes: Vec<u8>,
    signature: String,
    node: NodeId,
    address: Option<SocketAddr>,
    edges: Vec<Edge>,
}

impl StepNode {
    fn name(&self) -> String {
        format!("step job {} on node {}", self.receipt.job_id, self.node)
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Every `*.json` with a `.minisig` beside it in `dirs`, by the SHA-256 of
/// its bytes.
fn index(dirs: &[PathBuf]) -> Result<HashMap<String, PathBuf>, Failure> {
    let mut found = HashMap::new();
    for dir in dirs {
        let entries = std::fs::read_dir(dir)
            .map_err(|e| Failure::Input(format!("--receipts {}: {e}", dir.display())))?;
        for entry in entries {
            let path = entry
                .map_err(|e| Failure::Input(format!("--receipts {}: {e}", dir.display())))?
                .path();
            if path.extension().and_then(|e| e.to_str()) != Some("json")
                || !crate::submit::sibling(&path, ".minisig").is_file()
            {
                continue;
            }
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if meta.len() > MAX_RECEIPT_BYTES as u64 {
                continue;
            }
            let bytes = std::fs::read(&path)
                .map_err(|e| Failure::Input(format!("{}: {e}", path.display())))?;
            found.entry(sha256_hex(&bytes)).or_insert(path);
        }
    }
    Ok(found)
}

fn parse_address(text: &str) -> Option<SocketAddr> {
    text.parse().ok()
}

struct Walk<'a> {
    args: &'a LineageArgs,
    local: HashMap<String, PathBuf>,
    steps: Vec<StepNode>,
    by_digest: HashMap<String, usize>,
}

impl Walk<'_> {
    fn address_of(&self, node: &NodeId) -> Result<Option<SocketAddr>, Failure> {
        match &self.args.fleet {
            Some(fleet) => Ok(fleet_address(fleet, &node.to_base64())?
                .as_deref()
                .and_then(parse_address)),
            None => Ok(None),
        }
    }

    /// Finds, checks and adds the source of step `i`'s input `input`;
    /// returns its step index.
    fn source(
        &mut self,
        i: usize,
        input: &str,
        record: &lockstep_protocol::ReferenceRecord,
    ) -> Result<usize, Failure> {
        let fail = |what: String| {
            Failure::Runtime(format!(
                "lineage {}: input '{input}': {what}",
                self.steps[i].name()
            ))
        };
        let digest = record.source_receipt_sha256.to_ascii_lowercase();
        let known = self.by_digest.get(&digest).copied();
        let (bytes, signature, from_node) = match known {
            Some(j) => (
                self.steps[j].bytes.clone(),
                self.steps[j].signature.clone(),
                None,
            ),
            None => match self.local.get(&digest) {
                Some(path) => {
                    let bytes = std::fs::read(path)
                        .map_err(|e| Failure::Input(format!("{}: {e}", path.display())))?;
                    let sig_path = crate::submit::sibling(path, ".minisig");
                    let sig = std::fs::read_to_string(&sig_path)
                        .map_err(|e| Failure::Input(format!("{}: {e}", sig_path.display())))?;
                    (bytes, sig, None)
                }
                None => {
                    let step = &self.steps[i];
                    let Some(addr) = step.address else {
                        return Err(fail(format!(
                            "source receipt {digest} is in no --receipts directory, and the step's node address is unknown (give --node or --fleet)"
                        )));
                    };
                    let job = crate::evidence::job_id(&step.receipt)?;
                    let mut remote = Remote::connect(
                        addr,
                        &step.node,
                        step.bytes.clone(),
                        step.signature.clone(),
                    )
                    .map_err(|f| match f {
                        Failure::Input(m) | Failure::Runtime(m) => fail(m),
                    })?;
                    let e = remote.source(job, input).map_err(|f| match f {
                        Failure::Input(m) | Failure::Runtime(m) => fail(m),
                    })?;
                    remote.close();
                    (e.receipt, e.signature, Some(e.address))
                }
            },
        };
        if sha256_hex(&bytes) != digest {
            return Err(fail(format!(
                "the source receipt's SHA-256 is {}, not the recorded {digest}",
                sha256_hex(&bytes)
            )));
        }
        let producer = NodeId::parse(&record.producer)
            .map_err(|e| fail(format!("the recorded producer's node id: {e}")))?;
        let source = Receipt::verify(&bytes, &signature, &producer).map_err(|e| {
            fail(format!(
                "the source receipt does not verify under producer {producer}: {e}"
            ))
        })?;
        if source.job_id != record.job_id {
            return Err(fail(format!(
                "the source receipt is for job {}, not the recorded job {}",
                source.job_id, record.job_id
            )));
        }
        let theirs = source.outputs.get(&record.output);
        let mine = self.steps[i].receipt.inputs.get(input);
        if theirs.is_none() || theirs != mine {
            return Err(fail(format!(
                "the source's output '{}' ({}) is not this step's input ({})",
                record.output,
                theirs.map_or("absent", |s| s.as_str()),
                mine.map_or("absent", |s| s.as_str())
            )));
        }
        if let Some(j) = known {
            return Ok(j);
        }
        if self.steps.len() >= MAX_LINEAGE_STEPS {
            return Err(fail(format!(
                "the lineage has more than {MAX_LINEAGE_STEPS} steps; not followed further"
            )));
        }
        let address = match from_node.as_deref().and_then(parse_address) {
            Some(a) => Some(a),
            None => self.address_of(&producer)?,
        };
        self.steps.push(StepNode {
            receipt: source,
            bytes,
            signature,
            node: producer,
            address,
            edges: Vec::new(),
        });
        self.by_digest.insert(digest, self.steps.len() - 1);
        Ok(self.steps.len() - 1)
    }
}

/// The steps in topological order, sources first.
fn topological(steps: &[StepNode]) -> Vec<usize> {
    let mut order = Vec::with_capacity(steps.len());
    let mut done = BTreeSet::new();
    // Iterative post-order from the root (step 0).
    let mut stack = vec![(0usize, 0usize)];
    let mut on_path = BTreeSet::from([0usize]);
    while let Some((i, e)) = stack.pop() {
        if e < steps[i].edges.len() {
            stack.push((i, e + 1));
            let s = steps[i].edges[e].source;
            if !done.contains(&s) && on_path.insert(s) {
                stack.push((s, 0));
            }
        } else {
            on_path.remove(&i);
            if done.insert(i) {
                order.push(i);
            }
        }
    }
    order
}

enum Rerun {
    Same,
    Differs(crate::verify::Difference),
}

/// Re-executes step `s` on the CPU reference against its node's program
/// and inputs.
fn reexecute(s: &StepNode, save: Option<&Path>) -> Result<Rerun, Failure> {
    let fail = |m: String| Failure::Runtime(format!("lineage {}: {m}", s.name()));
    let Some(addr) = s.address else {
        return Err(fail(
            "cannot re-execute: the node's address is unknown (give --node or --fleet)".into(),
        ));
    };
    let job = crate::evidence::job_id(&s.receipt)?;
    let on = |f: Failure| match f {
        Failure::Input(m) | Failure::Runtime(m) => fail(m),
    };
    let mut remote =
        Remote::connect(addr, &s.node, s.bytes.clone(), s.signature.clone()).map_err(on)?;
    let bytes = remote.program(job).map_err(on)?;
    if sha256_hex(&bytes) != s.receipt.program_sha256 {
        return Err(fail(format!(
            "the node's program hashes to {}, not the receipt's {}",
            sha256_hex(&bytes),
            s.receipt.program_sha256
        )));
    }
    let program = Program::from_postcard(&bytes).map_err(|e| fail(format!("its program: {e}")))?;
    let validated = validate(&program, &ValidateOptions::default())
        .map_err(|e| fail(format!("its program: {e}")))?;
    let mut inputs: BTreeMap<String, Tensor> = BTreeMap::new();
    for decl in validated.inputs() {
        let t = remote.input(job, &decl.name).map_err(on)?;
        if s.receipt.inputs.get(&decl.name) != Some(&t.sha256_hex()) {
            return Err(fail(format!(
                "input '{}' from the node is not the one its receipt names",
                decl.name
            )));
        }
        inputs.insert(decl.name.clone(), t);
    }
    if let Some(dir) = save {
        let d = dir.join(&s.receipt.job_id);
        std::fs::create_dir_all(d.join("inputs"))
            .map_err(|e| Failure::Runtime(format!("{}: {e}", d.display())))?;
        std::fs::write(d.join("program.json"), program.to_json_pretty())
            .map_err(|e| Failure::Runtime(format!("{}: {e}", d.display())))?;
        for (name, t) in &inputs {
            npy::write_file(&d.join("inputs").join(format!("{name}.npy")), t)
                .map_err(|e| Failure::Runtime(e.to_string()))?;
        }
    }
    let input_hashes: BTreeMap<String, String> = inputs
        .iter()
        .map(|(n, t)| (n.clone(), t.sha256_hex()))
        .collect();
    let mut backend = crate::commands::open_backend(&crate::Target {
        backend: crate::BackendKind::Cpu,
        device: None,
        bundle: None,
        cross_implementation_test: false,
    })?;
    let report = execute(&validated, backend.as_mut(), inputs, ExecOptions::default())
        .map_err(|e| fail(e.to_string()))?;
    let trace = report.trace.expect("tracing is on by default");
    let outputs: BTreeMap<String, String> = report
        .outputs
        .iter()
        .map(|(n, t)| (n.clone(), t.sha256_hex()))
        .collect();
    let c = lockstep_verify::compare(
        &s.receipt,
        &validated.sha256(),
        &input_hashes,
        &outputs,
        &trace.root,
    )
    .map_err(|e| fail(e.to_string()))?;
    if c.agrees() {
        remote.close();
        return Ok(Rerun::Same);
    }
    let mut theirs = Side::Node {
        remote,
        job_id: job,
    };
    let mut mine = Side::Local {
        leaves: trace.leaves(),
    };
    let d = crate::verify::locate(
        &validated,
        hex32(&s.receipt.trace_root)?,
        trace.root,
        &mut theirs,
        &mut mine,
    )
    .map_err(on)?;
    if let Side::Node { remote, .. } = theirs {
        remote.close();
    }
    Ok(Rerun::Differs(d))
}

pub fn lineage(args: &LineageArgs) -> Result<(), Failure> {
    if let Some(k) = &args.node_key {
        parse_key("--node-key", k)?;
    }
    let local = index(&args.receipts)?;
    let (receipt, bytes, signature, node) =
        read_named_receipt(&args.receipt, args.node_key.as_deref())?;
    let mut walk = Walk {
        args,
        local,
        steps: Vec::new(),
        by_digest: HashMap::new(),
    };
    let address = match args.node {
        Some(a) => Some(a),
        None => walk.address_of(&node)?,
    };
    walk.by_digest.insert(sha256_hex(&bytes), 0);
    walk.steps.push(StepNode {
        receipt,
        bytes,
        signature,
        node,
        address,
        edges: Vec::new(),
    });
    let mut next = 0;
    while next < walk.steps.len() {
        let records: Vec<(String, lockstep_protocol::ReferenceRecord)> = walk.steps[next]
            .receipt
            .references
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (input, record) in records {
            let source = walk.source(next, &input, &record)?;
            let sha256 = walk.steps[next].receipt.inputs[&input].clone();
            walk.steps[next].edges.push(Edge {
                input,
                source,
                output: record.output,
                sha256,
            });
        }
        next += 1;
    }
    let steps = walk.steps;
    let order = topological(&steps);
    let number: HashMap<usize, usize> =
        order.iter().enumerate().map(|(n, &i)| (i, n + 1)).collect();
    if let Some(dir) = &args.save {
        std::fs::create_dir_all(dir)
            .map_err(|e| Failure::Runtime(format!("{}: {e}", dir.display())))?;
        for s in &steps {
            let path = dir.join(format!("{}.json", s.receipt.job_id));
            std::fs::write(&path, &s.bytes)
                .and_then(|()| {
                    std::fs::write(crate::submit::sibling(&path, ".minisig"), &s.signature)
                })
                .map_err(|e| Failure::Runtime(format!("{}: {e}", path.display())))?;
        }
    }
    let nodes: BTreeSet<String> = steps.iter().map(|s| s.node.to_base64()).collect();
    let mut json_steps = Vec::new();
    let mut first_difference: Option<String> = None;
    for &i in &order {
        let s = &steps[i];
        let n = number[&i];
        let r = &s.receipt;
        if !args.json {
            println!(
                "step {n}  job {}  node {}  device {} ({})  {}  program {}",
                r.job_id,
                s.node.key_id_hex(),
                r.device.name,
                r.device.backend,
                if r.certified {
                    "certified"
                } else {
                    "uncertified"
                },
                &r.program_sha256[..r.program_sha256.len().min(16)]
            );
            for e in &s.edges {
                println!(
                    "  input {} <- step {} output {} ({})",
                    e.input,
                    number[&e.source],
                    e.output,
                    &e.sha256[..e.sha256.len().min(16)]
                );
            }
        }
        let rerun = if args.reexecute {
            let outcome = reexecute(s, args.save.as_deref())?;
            let line = match &outcome {
                Rerun::Same => "bit-identical".to_string(),
                Rerun::Differs(d) => {
                    let line = format!(
                        "DIFFERS at op {} ({} {}) on node {}",
                        d.index, d.path, d.op, s.node
                    );
                    first_difference.get_or_insert_with(|| {
                        format!(
                            "lineage step {n} (job {}) differs from its receipt at op {} ({} {}) on node {}",
                            r.job_id, d.index, d.path, d.op, s.node
                        )
                    });
                    line
                }
            };
            if !args.json {
                println!("  re-executed on cpu: {line}");
            }
            Some(line)
        } else {
            None
        };
        json_steps.push(serde_json::json!({
            "step": n,
            "job_id": r.job_id,
            "node": s.node.to_base64(),
            "node_key_id": s.node.key_id_hex(),
            "address": s.address.map(|a| a.to_string()),
            "device": {"name": r.device.name, "backend": r.device.backend},
            "certified": r.certified,
            "program_sha256": r.program_sha256,
            "receipt_sha256": sha256_hex(&s.bytes),
            "inputs": s.edges.iter().map(|e| serde_json::json!({
                "input": e.input,
                "source_step": number[&e.source],
                "output": e.output,
                "sha256": e.sha256,
            })).collect::<Vec<_>>(),
            "reexecuted": rerun,
        }));
    }
    if args.json {
        let doc = serde_json::json!({
            "steps": json_steps,
            "nodes": nodes.len(),
            "verified": true,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).expect("JSON values serialize")
        );
    } else {
        println!(
            "lineage: {} steps on {} nodes, every signature and hash verified",
            steps.len(),
            nodes.len()
        );
    }
    match first_difference {
        Some(line) => Err(Failure::Runtime(line)),
        None => Ok(()),
    }
}
