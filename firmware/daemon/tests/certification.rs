//! Certified-only serving with a real `lockstepd` (CPU backend): refuses
//! jobs without a report, accepts them with a passing one for its device
//! and bundle signed by a trusted certifier, refuses reports for another
//! bundle or by an untrusted key, and `--uncertified` marks receipts false.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use lockstep_backend::{Backend, CpuBackend};
use lockstep_certify::{Golden, Report, SuiteOptions};
use lockstep_identity::SigningKey;
use lockstep_kernels::Bundle;

mod common;

fn lockstep_bin() -> PathBuf {
    let client = PathBuf::from(env!("CARGO_BIN_EXE_lockstepd")).with_file_name("lockstep");
    assert!(
        client.exists(),
        "{} is missing: run `cargo build -p lockstep-cli` (make test builds it)",
        client.display()
    );
    client
}

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

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A passing report of the CPU reference (the node's device here), run
/// once for all tests.
fn cpu_report() -> &'static Report {
    static REPORT: OnceLock<Report> = OnceLock::new();
    REPORT.get_or_init(|| {
        let options = SuiteOptions {
            bundle_id: Bundle::embedded().unwrap().id_hex(),
            repeats: 1,
            load: None,
            node: None,
            golden: Golden::committed().unwrap(),
        };
        let mut cpu = CpuBackend::new();
        let r = lockstep_certify::run_suite(&mut cpu, &options, &mut |_| {});
        assert!(r.passed, "{}", r.summary());
        assert_eq!(r.device.backend, cpu.fingerprint().backend);
        r
    })
}

fn install_files(state: &Path, report: &Report, by: &SigningKey) {
    let dir = state.join("certification");
    std::fs::create_dir_all(&dir).unwrap();
    let bytes = report.canonical_bytes();
    let sig = by.sign_minisign(&bytes, &report.trusted_comment("test certifier"));
    std::fs::write(dir.join("report.json"), &bytes).unwrap();
    std::fs::write(dir.join("report.json.minisig"), sig.to_file()).unwrap();
}

struct Certifier {
    key: SigningKey,
    public: PathBuf,
}

fn certifier(dir: &Path) -> Certifier {
    let key = SigningKey::generate();
    let public = dir.join("certifier.pub");
    std::fs::write(&public, key.public_key_file()).unwrap();
    Certifier { key, public }
}

fn status(node: &common::Node) -> Out {
    let o = lockstep(&["status", "--node", &node.addr, "--node-key", &node.key]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    o
}

/// Submits the attention example; returns the client's outcome and the
/// receipt path.
fn submit(node: &common::Node, dir: &Path, name: &str) -> (Out, PathBuf) {
    let program = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/attention.json");
    let receipt = dir.join(format!("{name}.json"));
    let o = lockstep(&[
        "submit",
        "--node",
        &node.addr,
        "--node-key",
        &node.key,
        "--receipt",
        s(&receipt),
        "exec",
        s(&program),
        "--out-dir",
        s(&dir.join(name)),
    ]);
    (o, receipt)
}

fn receipt_certified(path: &Path) -> bool {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    v["certified"].as_bool().unwrap()
}

#[test]
fn an_uncertified_node_refuses_jobs_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let c = certifier(dir.path());
    let state = dir.path().join("state");
    let node = common::start_certified(&state, "cpu", &["--trust-certifier", s(&c.public)]);
    let st = status(&node);
    assert!(st.stdout.contains("certified no"), "{}", st.stdout);
    assert!(
        st.stdout.contains("no certification report"),
        "{}",
        st.stdout
    );
    let (o, _) = submit(&node, dir.path(), "refused");
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("not certified"), "{}", o.stderr);
    assert_eq!(o.stderr.trim().lines().count(), 1, "{}", o.stderr);
    // The node serves on: status still answers.
    status(&node);
}

#[test]
fn a_passing_trusted_report_for_this_device_and_bundle_certifies_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let c = certifier(dir.path());
    let state = dir.path().join("state");
    // The state dir (device key) exists before the report is copied in.
    drop(common::start_certified(
        &state,
        "cpu",
        &["--trust-certifier", s(&c.public)],
    ));
    install_files(&state, cpu_report(), &c.key);
    let node = common::start_certified(&state, "cpu", &["--trust-certifier", s(&c.public)]);
    let st = status(&node);
    assert!(st.stdout.contains("certified yes"), "{}", st.stdout);
    assert!(
        st.stdout.contains(&c.key.public().key_id_hex()),
        "{}",
        st.stdout
    );
    let (o, receipt) = submit(&node, dir.path(), "ok");
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(receipt_certified(&receipt));
}

#[test]
fn reports_for_another_bundle_or_by_an_untrusted_key_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let c = certifier(dir.path());
    let state = dir.path().join("state");
    let trust = ["--trust-certifier", s(&c.public)];
    drop(common::start_certified(&state, "cpu", &trust));

    let mut other_bundle = cpu_report().clone();
    other_bundle.bundle_id = "ab".repeat(32);
    install_files(&state, &other_bundle, &c.key);
    let node = common::start_certified(&state, "cpu", &trust);
    let st = status(&node);
    assert!(st.stdout.contains("certified no"), "{}", st.stdout);
    assert!(st.stdout.contains("for bundle abababab"), "{}", st.stdout);
    assert_ne!(submit(&node, dir.path(), "b").0.code, 0);
    drop(node);

    let stranger = SigningKey::generate();
    install_files(&state, cpu_report(), &stranger);
    let node = common::start_certified(&state, "cpu", &trust);
    let st = status(&node);
    assert!(
        st.stdout.contains("not a trusted certifier"),
        "{}",
        st.stdout
    );
    assert_ne!(submit(&node, dir.path(), "u").0.code, 0);
    drop(node);

    let mut failing = cpu_report().clone();
    failing.passed = false;
    failing.checks[0].passed = false;
    failing.checks[0].failed = 1;
    install_files(&state, &failing, &c.key);
    let node = common::start_certified(&state, "cpu", &trust);
    let st = status(&node);
    assert!(
        st.stdout.contains("failing one (failed: probes)"),
        "{}",
        st.stdout
    );
    drop(node);

    // The file edited after signing.
    install_files(&state, cpu_report(), &c.key);
    let path = state.join("certification/report.json");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replacen("\"suite_version\":\"1\"", "\"suite_version\":\"2\"", 1),
    )
    .unwrap();
    let node = common::start_certified(&state, "cpu", &trust);
    let st = status(&node);
    assert!(st.stdout.contains("certified no"), "{}", st.stdout);
    assert!(st.stdout.contains("refused"), "{}", st.stdout);
}

#[test]
fn uncertified_override_serves_and_marks_receipts_false() {
    let dir = tempfile::tempdir().unwrap();
    let c = certifier(dir.path());
    let state = dir.path().join("state");
    drop(common::start_certified(
        &state,
        "cpu",
        &["--trust-certifier", s(&c.public)],
    ));
    // Even with a valid report installed, the override says false.
    install_files(&state, cpu_report(), &c.key);
    let node = common::start(&state, "cpu", &["--trust-certifier", s(&c.public)]);
    let st = status(&node);
    assert!(st.stdout.contains("certified no"), "{}", st.stdout);
    assert!(st.stdout.contains("--uncertified"), "{}", st.stdout);
    let (o, receipt) = submit(&node, dir.path(), "dev");
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(!receipt_certified(&receipt));
}

#[test]
fn a_bad_trusted_certifier_key_is_a_one_line_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_lockstepd"))
        .args(["--listen", "127.0.0.1:0", "--backend", "cpu", "--state"])
        .arg(dir.path().join("state"))
        .args(["--trust-certifier", "not-a-key"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("not a minisign public key"), "{err}");
}
