//! The swarm example (`examples/swarm/run.sh`) against real nodes on
//! loopback: three nodes train on their own shards and average by
//! reference for two rounds on lavapipe; every step is bit-identical to
//! the same rounds run here on the CPU reference, and `lockstep lineage
//! --reexecute` walks the final receipt back through all nine steps and
//! re-executes each. With one node built to corrupt an op (the test-only
//! `fault-injection` feature), the lineage names that node and the op, and
//! a dispute between it and an honest node over the saved step settles it.
#![cfg(feature = "fault-injection")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use lockstep_backend::CpuBackend;
use lockstep_identity::{NodeId, SigningKey};
use lockstep_program::{execute, validate, ExecOptions, Program, ValidateOptions};
use lockstep_protocol::Receipt;
use lockstep_tensor::{npy, Tensor};

mod common;

/// The fault node C carries in the faulty run: a bit of op 40 (inside the
/// first training step) of every job it runs.
const FAULTY_OP: u64 = 40;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

use common::lockstep_bin;

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn swarm(out: &Path, backend: &str, rounds: u32, node_c: &str, lineage: &str) -> Out {
    let o = Command::new(repo().join("examples/swarm/run.sh"))
        .arg(out)
        .env("LOCKSTEP", lockstep_bin())
        .env("LOCKSTEPD", env!("CARGO_BIN_EXE_lockstepd"))
        .env("BACKEND", backend)
        .env("ROUNDS", rounds.to_string())
        .env("NODE_C_FLAGS", node_c)
        .env("LINEAGE_FLAGS", lineage)
        .output()
        .unwrap();
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn program(name: &str) -> Program {
    let path = repo().join("examples/swarm").join(name);
    Program::from_json(&std::fs::read(path).unwrap()).unwrap()
}

/// One step on the CPU reference: its outputs and trace root.
fn run_local(name: &str, inputs: BTreeMap<String, Tensor>) -> (BTreeMap<String, Tensor>, String) {
    let validated = validate(&program(name), &ValidateOptions::default()).unwrap();
    let report = execute(
        &validated,
        &mut CpuBackend::new(),
        inputs,
        ExecOptions::default(),
    )
    .unwrap();
    let root = hex::encode(report.trace.unwrap().root);
    (report.outputs, root)
}

const WEIGHTS: [&str; 4] = ["w1", "b1", "w2", "b2"];

fn renamed(prefix: &str, from: &BTreeMap<String, Tensor>) -> BTreeMap<String, Tensor> {
    WEIGHTS
        .iter()
        .map(|w| (format!("{prefix}{w}"), from[*w].clone()))
        .collect()
}

fn receipt(out: &Path, step: &str) -> Receipt {
    let bytes = std::fs::read(out.join(step).join("R.json")).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// Checks one step the nodes ran against the local run: trace root and
/// every output hash, and the outputs they wrote.
fn same(out: &Path, step: &str, local: &(BTreeMap<String, Tensor>, String)) {
    let r = receipt(out, step);
    assert_eq!(r.trace_root, local.1, "{step}: trace root");
    for (name, t) in &local.0 {
        assert_eq!(r.outputs[name], t.sha256_hex(), "{step}: output {name}");
        let written =
            npy::read_file(&out.join(step).join("out").join(format!("{name}.npy"))).unwrap();
        assert_eq!(written.sha256(), t.sha256(), "{step}: {name}.npy");
    }
}

/// The node id a node of the run printed (`nodes/NAME.log.out`).
fn node_key(out: &Path, name: &str) -> String {
    let line = std::fs::read_to_string(out.join(format!("nodes/{name}.log.out"))).unwrap();
    line.lines()
        .next()
        .unwrap()
        .rsplit(" as ")
        .next()
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn the_swarm_is_bit_identical_to_local_rounds_and_its_lineage_re_executes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("swarm");
    let rounds = 2;
    let o = swarm(&out, "vulkan", rounds, "", "--reexecute");
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);

    // The same rounds, here, on the CPU reference.
    let init = run_local("init.json", BTreeMap::new());
    same(&out, "r0/init", &init);
    let mut weights = init.0;
    for r in 1..=rounds {
        let mut average_inputs = BTreeMap::new();
        for (i, prefix) in ["a_", "b_", "c_"].iter().enumerate() {
            let local = run_local(&format!("train-{i}.json"), renamed("", &weights));
            same(&out, &format!("r{r}/train-{i}"), &local);
            average_inputs.extend(renamed(prefix, &local.0));
        }
        let average = run_local("average.json", average_inputs);
        same(&out, &format!("r{r}/average"), &average);
        weights = average.0;
    }

    // The lineage covers every step on every node, each re-executed.
    let steps = 1 + 4 * rounds as usize;
    assert!(
        o.stdout.contains(&format!(
            "lineage: {steps} steps on 3 nodes, every signature and hash verified"
        )),
        "{}",
        o.stdout
    );
    assert_eq!(
        o.stdout
            .matches("re-executed on cpu: bit-identical")
            .count(),
        steps,
        "{}",
        o.stdout
    );
    for node in ["A", "B", "C"] {
        let key_id = NodeId::parse(&node_key(&out, node)).unwrap().key_id_hex();
        assert!(
            o.stdout
                .to_uppercase()
                .contains(&format!("NODE {}", key_id.to_uppercase())),
            "node {node} is not in the lineage: {}",
            o.stdout
        );
    }
    // The consuming receipts link to their sources by digest.
    let last = receipt(&out, &format!("r{rounds}/average"));
    let source = receipt(&out, &format!("r{rounds}/train-1"));
    let record = &last.references.as_ref().unwrap()["b_w2"];
    assert_eq!(record.source_receipt_sha256, hex::encode(source.digest()));
    assert_eq!(record.producer, source.node);
    let figures = std::fs::read_to_string(out.join("figures.txt")).unwrap();
    assert_eq!(
        figures.matches("round ").count(),
        rounds as usize,
        "{figures}"
    );
    eprintln!("{figures}");
}

#[test]
fn a_faulty_node_in_the_swarm_is_named_with_its_op_and_a_dispute_settles_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("swarm");
    let saved = dir.path().join("saved");
    let fault = format!("--inject-fault op={FAULTY_OP}");
    let o = swarm(
        &out,
        "cpu",
        1,
        &fault,
        &format!("--reexecute --save {}", saved.display()),
    );
    // The nodes' own receipts all verify (node C signed what it computed),
    // but re-execution finds C's step wrong, at the op that was corrupted.
    assert_eq!(o.code, 1, "{}{}", o.stdout, o.stderr);
    let c = node_key(&out, "C");
    let a = node_key(&out, "A");
    let differs = format!("DIFFERS at op {FAULTY_OP} ");
    let line = o
        .stdout
        .lines()
        .find(|l| l.contains(&differs))
        .unwrap_or_else(|| panic!("no differing op in {}", o.stdout));
    assert!(line.contains(&c), "{line}");
    assert_eq!(o.stdout.matches("DIFFERS").count(), 1, "{}", o.stdout);
    assert_eq!(o.stderr.lines().count(), 1, "{}", o.stderr);

    // A dispute over C's step, between C and an honest node (A, restarted
    // from its state: same key), on the program and inputs the lineage
    // saved: the referee's record names C and the op.
    let job = receipt(&out, "r1/train-2").job_id;
    let step = saved.join(&job);
    let honest = common::start(&out.join("nodes/A"), "cpu", &[]);
    let faulty = common::start(
        &out.join("nodes/C"),
        "cpu",
        &["--inject-fault", &format!("op={FAULTY_OP}")],
    );
    assert_eq!(
        (honest.key.as_str(), faulty.key.as_str()),
        (a.as_str(), c.as_str())
    );
    let referee = SigningKey::generate();
    let referee_path = dir.path().join("referee.key");
    referee.write_file(&referee_path, None).unwrap();
    let record = dir.path().join("dispute.json");
    let mut args: Vec<String> = vec![
        "dispute".into(),
        "--program".into(),
        step.join("program.json").display().to_string(),
    ];
    for w in WEIGHTS {
        args.push("--input".into());
        args.push(format!(
            "{w}={}",
            step.join("inputs").join(format!("{w}.npy")).display()
        ));
    }
    for (flag, value) in [
        ("--a", honest.addr.clone()),
        ("--a-key", honest.key.clone()),
        ("--b", faulty.addr.clone()),
        ("--b-key", faulty.key.clone()),
        ("--key", referee_path.display().to_string()),
        ("--out", record.display().to_string()),
        ("--backend", "cpu".into()),
    ] {
        args.push(flag.into());
        args.push(value);
    }
    let d = Command::new(lockstep_bin()).args(&args).output().unwrap();
    let stdout = String::from_utf8_lossy(&d.stdout);
    assert!(
        d.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&d.stderr)
    );
    assert!(
        stdout.contains(&format!("first differing op: index {FAULTY_OP} of ")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("verdict: B ({c}) computed it wrongly")),
        "{stdout}"
    );
}
