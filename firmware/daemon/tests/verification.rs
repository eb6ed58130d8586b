//! Verification against real nodes on loopback: full re-execution, spot
//! checks and disputes, with a node built with the test-only
//! `fault-injection` feature that flips a bit of chosen op outputs. Compiled
//! only with this crate's feature (`make test` passes
//! `--features lockstep-daemon/fault-injection`); without it lockstepd
//! refuses the flag (tests/node.rs checks that).
//!
//! The `lockstep` client is taken from the same target directory
//! (`cargo test --workspace` builds both).
#![cfg(feature = "fault-injection")]

use std::path::{Path, PathBuf};
use std::process::Command;

use lockstep_identity::SigningKey;

mod common;
use common::Node;

use common::lockstep_bin;

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn lockstep(args: &[&str]) -> Out {
    let o = Command::new(lockstep_bin()).args(args).output().unwrap();
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn mlp() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/mlp-train.json")
        .to_str()
        .unwrap()
        .to_string()
}

/// The MLP example's op executions: every one is a trace leaf.
const MLP_OPS: u64 = 2136;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn node(dir: &Path, name: &str, extra: &[&str]) -> Node {
    common::start(&dir.join(name), "cpu", extra)
}

/// Submits the MLP to `n`; the receipt path.
fn submit(dir: &Path, n: &Node, name: &str) -> PathBuf {
    let receipt = dir.join(format!("{name}.json"));
    let out = dir.join(format!("{name}-out"));
    let o = lockstep(&[
        "submit",
        "--node",
        &n.addr,
        "--node-key",
        &n.key,
        "--receipt",
        s(&receipt),
        "exec",
        &mlp(),
        "--out-dir",
        s(&out),
    ]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    receipt
}

fn referee_key(dir: &Path) -> (PathBuf, SigningKey) {
    let key = SigningKey::generate();
    let path = dir.join("referee.key");
    key.write_file(&path, None).unwrap();
    (path, key)
}

fn ceil_log2(n: u64) -> u64 {
    n.next_power_of_two().trailing_zeros() as u64
}

fn rounds_in(stdout: &str) -> u64 {
    let at = stdout.find("rounds ").expect("a rounds line") + "rounds ".len();
    stdout[at..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn a_dispute_names_the_faulty_node_and_op_and_its_record_checks_out() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let honest = node(d, "honest", &[]);
    let faulty = node(d, "faulty", &["--inject-fault", "op=1000,bit=37"]);
    let (key_path, key) = referee_key(d);
    let record = d.join("dispute.json");
    let o = lockstep(&[
        "dispute",
        "--program",
        &mlp(),
        "--a",
        &honest.addr,
        "--a-key",
        &honest.key,
        "--b",
        &faulty.addr,
        "--b-key",
        &faulty.key,
        "--key",
        s(&key_path),
        "--out",
        s(&record),
        "--backend",
        "cpu",
    ]);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert!(
        o.stdout.contains("first differing op: index 1000 of 2136"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout
            .contains(&format!("verdict: B ({}) computed it wrongly", faulty.key)),
        "{}",
        o.stdout
    );
    let rounds = rounds_in(&o.stdout);
    assert!(rounds <= ceil_log2(MLP_OPS) + 2, "{rounds} rounds");

    // The record: the stock tool checks the referee's signature, and
    // verify-dispute re-checks everything, the op re-executed included.
    let public = d.join("referee.pub");
    std::fs::write(&public, key.public_key_file()).unwrap();
    let m = Command::new("minisign")
        .args(["-Vm", s(&record), "-p", s(&public)])
        .output()
        .unwrap();
    assert!(m.status.success(), "{}", String::from_utf8_lossy(&m.stderr));
    let referee = key.public().to_base64();
    let o = lockstep(&[
        "verify-dispute",
        s(&record),
        "--referee-key",
        &referee,
        "--program",
        &mlp(),
        "--reexecute",
        "cpu",
    ]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stdout.contains("party B computed it wrongly"),
        "{}",
        o.stdout
    );

    // A tampered audit path is refused even when the record is re-signed
    // (a referee cannot make up proofs), and so is an edited record whose
    // signature no longer matches.
    let text = std::fs::read_to_string(&record).unwrap();
    let mut doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let first = doc["a"]["proof"][0].as_str().unwrap().to_string();
    let flipped = format!(
        "{}{}",
        if first.starts_with('0') { "1" } else { "0" },
        &first[1..]
    );
    doc["a"]["proof"][0] = serde_json::Value::String(flipped);
    let tampered = d.join("tampered.json");
    let bytes = lockstep_canonical_json_bytes(&doc);
    std::fs::write(&tampered, &bytes).unwrap();
    std::fs::write(
        d.join("tampered.json.minisig"),
        key.sign_minisign(&bytes, "tampered").to_file(),
    )
    .unwrap();
    let o = lockstep(&["verify-dispute", s(&tampered), "--referee-key", &referee]);
    assert_eq!(o.code, 2, "{}", o.stdout);
    assert!(o.stderr.contains("audit path"), "{}", o.stderr);
    std::fs::copy(&record, &tampered).unwrap();
    std::fs::write(&tampered, text.replace("\"b_wrong\"", "\"a_wrong\"")).unwrap();
    let o = lockstep(&["verify-dispute", s(&tampered), "--referee-key", &referee]);
    assert_eq!(o.code, 2);
    assert!(o.stderr.contains("signature"), "{}", o.stderr);
}

/// serde_json's own output with sorted keys is the canonical form here
/// (strings and integers only).
fn lockstep_canonical_json_bytes(v: &serde_json::Value) -> Vec<u8> {
    fn sort(v: &serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(m) => {
                let mut keys: Vec<_> = m.keys().collect();
                keys.sort();
                let mut out = serde_json::Map::new();
                for k in keys {
                    out.insert(k.clone(), sort(&m[k]));
                }
                serde_json::Value::Object(out)
            }
            serde_json::Value::Array(a) => serde_json::Value::Array(a.iter().map(sort).collect()),
            other => other.clone(),
        }
    }
    serde_json::to_vec(&sort(v)).unwrap()
}

#[test]
fn a_ten_percent_spot_check_catches_a_node_faulty_on_every_op() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let faulty = node(d, "faulty", &["--inject-fault", "op=all"]);
    let receipt = submit(d, &faulty, "faulty");
    let o = lockstep(&[
        "verify",
        "--sample",
        "0.1",
        "--seed",
        "7",
        "--node",
        &faulty.addr,
        "--receipt",
        s(&receipt),
        "--node-key",
        &faulty.key,
        "--program",
        &mlp(),
        "--backend",
        "cpu",
    ]);
    assert_eq!(o.code, 1, "{}{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("seed 7"), "{}", o.stdout);
    assert!(o.stdout.contains("214 of 2136 ops"), "{}", o.stdout);
    assert!(o.stdout.contains("FAILED op index"), "{}", o.stdout);
    assert!(
        o.stderr.contains("spot check failed on 214 of 214"),
        "{}",
        o.stderr
    );

    // An honest node passes the same check, and the seed reproduces it.
    let honest = node(d, "honest", &[]);
    let receipt = submit(d, &honest, "honest");
    let check = || {
        lockstep(&[
            "verify",
            "--sample",
            "0.1",
            "--seed",
            "7",
            "--node",
            &honest.addr,
            "--receipt",
            s(&receipt),
            "--node-key",
            &honest.key,
            "--program",
            &mlp(),
            "--backend",
            "cpu",
        ])
    };
    let o = check();
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert!(
        o.stdout.contains("every sampled op checks out"),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("exact (hypergeometric)"), "{}", o.stdout);
    let again = check();
    let ops = |s: &str| s.lines().next().unwrap().to_string();
    assert_eq!(ops(&o.stdout), ops(&again.stdout));
}

#[test]
fn full_re_execution_agrees_with_an_honest_node_and_finds_a_faulty_nodes_op() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let honest = node(d, "honest", &[]);
    let receipt = submit(d, &honest, "honest");
    let o = lockstep(&[
        "verify",
        "--receipt",
        s(&receipt),
        "--node-key",
        &honest.key,
        "--program",
        &mlp(),
        "--backend",
        "cpu",
    ]);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("agreement"), "{}", o.stdout);

    let faulty = node(d, "faulty", &["--inject-fault", "op=77"]);
    let receipt = submit(d, &faulty, "faulty");
    // Re-executed on the honest node instead of locally.
    let o = lockstep(&[
        "verify",
        "--receipt",
        s(&receipt),
        "--node-key",
        &faulty.key,
        "--program",
        &mlp(),
        "--on",
        &honest.addr,
        "--on-key",
        &honest.key,
        "--node",
        &faulty.addr,
    ]);
    assert_eq!(o.code, 1, "{}{}", o.stdout, o.stderr);
    assert!(
        o.stdout.contains("first differing op: index 77 "),
        "{}",
        o.stdout
    );
    assert!(o.stderr.contains("first at op index 77"), "{}", o.stderr);
}

#[test]
fn evidence_past_its_window_is_refused_clearly_and_the_node_serves_on() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let n = node(d, "node", &["--retention-window-s", "1"]);
    let receipt = submit(d, &n, "r");
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let o = lockstep(&[
        "verify",
        "--sample",
        "0.01",
        "--seed",
        "1",
        "--node",
        &n.addr,
        "--receipt",
        s(&receipt),
        "--node-key",
        &n.key,
        "--program",
        &mlp(),
        "--backend",
        "cpu",
    ]);
    assert_eq!(o.code, 1, "{}", o.stdout);
    assert!(
        o.stdout.contains("no longer holds the evidence"),
        "{}",
        o.stdout
    );
    // The node serves on.
    submit(d, &n, "again");
}

#[test]
fn a_bad_fault_spec_is_a_one_line_usage_error() {
    // This lockstepd has the feature (this file is compiled only then); a
    // build without it refuses the flag outright (docs/verification.md).
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_lockstepd"))
        .args([
            "--file-key",
            "--listen",
            "127.0.0.1:0",
            "--backend",
            "cpu",
            "--state",
        ])
        .arg(dir.path().join("s"))
        .args(["--inject-fault", "op=banana"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("op=K[,bit=B]"));
}
