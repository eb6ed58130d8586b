//! Certified-only serving with a real `lockstepd` (CPU backend): refuses
//! jobs without a report, accepts them with a passing one for itself, its
//! device and bundle signed by a trusted certifier, refuses reports for
//! another node or bundle, older ones, or by an untrusted key, and
//! `--uncertified` marks receipts false. Certification runs and installs
//! are served only for requests signed by an operator or trusted certifier
//! over the session's nonce.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use lockstep_backend::{Backend, CpuBackend};
use lockstep_certify::{format_rfc3339, parse_rfc3339, Golden, Report, SuiteOptions};
use lockstep_identity::{NodeId, SigningKey};
use lockstep_kernels::Bundle;
use lockstep_protocol::{
    report_sha256, Authorization, CertifyAction, CertifyRequest, ErrorKind, Frame, InstallReport,
    Message,
};
use lockstep_transport::frames::{write_frame, FrameReader};

mod common;

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

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A passing report of the CPU reference (the node's device here), run
/// once for all tests, naming no node yet (see [`report_for`]).
fn cpu_report() -> &'static Report {
    static REPORT: OnceLock<Report> = OnceLock::new();
    REPORT.get_or_init(|| {
        let options = SuiteOptions {
            bundle_id: Bundle::embedded().unwrap().id_hex(),
            repeats: 1,
            load: None,
            node: None,
            valid_days: 90,
            golden: Golden::committed().unwrap(),
        };
        let mut cpu = CpuBackend::new();
        let r = lockstep_certify::run_suite(&mut cpu, &options, &mut |_| {});
        assert!(r.passed, "{}", r.summary());
        assert_eq!(r.device.backend, cpu.fingerprint().backend);
        r
    })
}

/// The CPU report for node `node`, finishing `shift_s` seconds after the
/// run did (negative: before), its validity kept.
fn report_for(node: &str, shift_s: i64) -> Report {
    let mut r = cpu_report().clone();
    r.node = Some(node.to_string());
    let shift = |t: &str| format_rfc3339(parse_rfc3339(t).unwrap().saturating_add_signed(shift_s));
    r.started_at = shift(&r.started_at);
    r.finished_at = shift(&r.finished_at);
    r.expires_at = shift(&r.expires_at);
    r
}

/// Signs a report as a certifier would: (bytes, .minisig text).
fn sign_report(report: &Report, by: &SigningKey) -> (Vec<u8>, String) {
    let bytes = report.canonical_bytes();
    let sig = by.sign_minisign(&bytes, &report.trusted_comment("test certifier"));
    (bytes, sig.to_file())
}

/// Places a report in the node's state directory as an install does: one
/// file holding the report and its signature.
fn install_files(state: &Path, report: &Report, by: &SigningKey) {
    let dir = state.join("certification");
    std::fs::create_dir_all(&dir).unwrap();
    let (bytes, sig) = sign_report(report, by);
    let stored = serde_json::json!({
        "report": String::from_utf8(bytes).unwrap(),
        "signature": sig,
    });
    std::fs::write(
        dir.join("installed.json"),
        serde_json::to_vec(&stored).unwrap(),
    )
    .unwrap();
}

/// The node's id, as pinned.
fn node_id(node: &common::Node) -> NodeId {
    NodeId::parse(&node.key).unwrap()
}

/// Sends one message on a fresh stream and returns the node's answer.
fn ask(node: &common::Node, message: Message) -> Message {
    smol::block_on(async {
        let addr = node.addr.parse().unwrap();
        let connection = lockstep_transport::connect(addr, &node_id(node))
            .await
            .unwrap();
        let (mut send, recv) = connection.open_bi().await.unwrap();
        write_frame(&mut send, &message.to_frame()).await.unwrap();
        let _ = send.finish();
        let mut reader = FrameReader::new(recv);
        let Some(Frame::Control(payload)) = reader.next().await.unwrap() else {
            panic!("no answer")
        };
        let answer = Message::decode(&payload).unwrap();
        connection.close(0u32.into(), b"done");
        answer
    })
}

async fn next_message(reader: &mut FrameReader) -> Message {
    let Some(Frame::Control(payload)) = reader.next().await.unwrap() else {
        panic!("no answer")
    };
    Message::decode(&payload).unwrap()
}

/// One certification session: hello, the node's nonce, the request `make`
/// builds over it; returns the answer.
fn session(node: &common::Node, make: impl FnOnce(&[u8; 32]) -> Message) -> Message {
    smol::block_on(async {
        let addr = node.addr.parse().unwrap();
        let connection = lockstep_transport::connect(addr, &node_id(node))
            .await
            .unwrap();
        let (mut send, recv) = connection.open_bi().await.unwrap();
        let mut reader = FrameReader::new(recv);
        write_frame(&mut send, &Message::CertifyHello.to_frame())
            .await
            .unwrap();
        let Message::CertifyChallenge(challenge) = next_message(&mut reader).await else {
            panic!("no challenge")
        };
        write_frame(&mut send, &make(&challenge.nonce).to_frame())
            .await
            .unwrap();
        let _ = send.finish();
        let answer = next_message(&mut reader).await;
        connection.close(0u32.into(), b"done");
        answer
    })
}

/// An install request for `report`, signed by `by` over `nonce`.
fn install_request(
    node: &common::Node,
    nonce: &[u8; 32],
    (report, signature): &(Vec<u8>, String),
    by: &SigningKey,
) -> Message {
    let action = CertifyAction::Install {
        report_sha256: report_sha256(report),
    };
    Message::InstallReport(InstallReport {
        report: report.clone(),
        signature: signature.clone(),
        auth: Authorization::sign(by, &node.key, nonce, action),
    })
}

/// Installs through a session signed by `by`; the node's answer.
fn install(node: &common::Node, signed: &(Vec<u8>, String), by: &SigningKey) -> Message {
    session(node, |nonce| install_request(node, nonce, signed, by))
}

/// A suite-run request signed by `by` over `nonce`.
fn run_request(node: &common::Node, nonce: &[u8; 32], by: &SigningKey) -> Message {
    let action = CertifyAction::Run {
        repeats: 1,
        valid_days: 30,
        device: None,
    };
    Message::CertifyRequest(CertifyRequest {
        repeats: 1,
        valid_days: 30,
        device: None,
        auth: Authorization::sign(by, &node.key, nonce, action),
    })
}

fn rejected(m: &Message, kind: ErrorKind, says: &str) {
    match m {
        Message::Rejected(e) => {
            assert_eq!(e.kind, kind, "{}", e.message);
            assert!(e.message.contains(says), "{}", e.message);
            assert_eq!(e.message.lines().count(), 1, "{}", e.message);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn installed(m: &Message) -> bool {
    match m {
        Message::Installed(i) => i.certified,
        other => panic!("expected Installed, got {other:?}"),
    }
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
    let key = common::start_certified(&state, "cpu", &["--trust-certifier", s(&c.public)])
        .key
        .clone();
    install_files(&state, &report_for(&key, 0), &c.key);
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
    let key = common::start_certified(&state, "cpu", &trust).key.clone();

    let mut other_bundle = report_for(&key, 0);
    other_bundle.bundle_id = "ab".repeat(32);
    install_files(&state, &other_bundle, &c.key);
    let node = common::start_certified(&state, "cpu", &trust);
    let st = status(&node);
    assert!(st.stdout.contains("certified no"), "{}", st.stdout);
    assert!(st.stdout.contains("for bundle abababab"), "{}", st.stdout);
    assert_ne!(submit(&node, dir.path(), "b").0.code, 0);
    drop(node);

    let stranger = SigningKey::generate();
    install_files(&state, &report_for(&key, 0), &stranger);
    let node = common::start_certified(&state, "cpu", &trust);
    let st = status(&node);
    assert!(
        st.stdout.contains("not a trusted certifier"),
        "{}",
        st.stdout
    );
    assert_ne!(submit(&node, dir.path(), "u").0.code, 0);
    drop(node);

    let mut failing = report_for(&key, 0);
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
    install_files(&state, &report_for(&key, 0), &c.key);
    let path = state.join("certification/installed.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let version = lockstep_certify::SUITE_VERSION;
    let edited = text.replacen(
        &format!("\\\"suite_version\\\":\\\"{version}\\\""),
        &format!("\\\"suite_version\\\":\\\"{version}0\\\""),
        1,
    );
    assert_ne!(edited, text);
    std::fs::write(&path, edited).unwrap();
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
    let key = common::start_certified(&state, "cpu", &["--trust-certifier", s(&c.public)])
        .key
        .clone();
    // Even with a valid report installed, the override says false.
    install_files(&state, &report_for(&key, 0), &c.key);
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
        .args([
            "--file-key",
            "--listen",
            "127.0.0.1:0",
            "--backend",
            "cpu",
            "--state",
        ])
        .arg(dir.path().join("state"))
        .args(["--trust-certifier", "not-a-key"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("not a minisign public key"), "{err}");
}

#[test]
fn node_a_report_installed_on_node_b_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let c = certifier(dir.path());
    let trust = ["--trust-certifier", s(&c.public)];
    let a = common::start_certified(&dir.path().join("a"), "cpu", &trust);
    let b = common::start_certified(&dir.path().join("b"), "cpu", &trust);
    // Same model, driver and bundle (both the CPU reference): only the
    // node id tells them apart.
    let for_a = sign_report(&report_for(&a.key, 0), &c.key);
    rejected(
        &install(&b, &for_a, &c.key),
        ErrorKind::BadInput,
        "for node",
    );
    assert!(status(&b).stdout.contains("certified no"));
    assert!(installed(&install(&a, &for_a, &c.key)));
    assert!(status(&a).stdout.contains("certified yes"));
    // A report that names no node is installed nowhere.
    let nodeless = sign_report(cpu_report(), &c.key);
    rejected(
        &install(&b, &nodeless, &c.key),
        ErrorKind::BadInput,
        "names no node",
    );
}

#[test]
fn an_older_report_after_a_newer_one_is_refused_and_a_newer_failing_one_revokes() {
    let dir = tempfile::tempdir().unwrap();
    let c = certifier(dir.path());
    let node = common::start_certified(
        &dir.path().join("state"),
        "cpu",
        &["--trust-certifier", s(&c.public)],
    );
    let older = sign_report(&report_for(&node.key, -100), &c.key);
    let newer = sign_report(&report_for(&node.key, -50), &c.key);
    assert!(installed(&install(&node, &newer, &c.key)));
    rejected(
        &install(&node, &older, &c.key),
        ErrorKind::BadInput,
        "not after the installed one",
    );
    rejected(
        &install(&node, &newer, &c.key),
        ErrorKind::BadInput,
        "install only a newer report",
    );
    assert!(status(&node).stdout.contains("certified yes"));
    // A newer failing report is stored and revokes the certification.
    let mut failing = report_for(&node.key, -10);
    failing.passed = false;
    failing.checks[0].passed = false;
    failing.checks[0].failed = 1;
    assert!(!installed(&install(
        &node,
        &sign_report(&failing, &c.key),
        &c.key
    )));
    let st = status(&node);
    assert!(st.stdout.contains("certified no"), "{}", st.stdout);
    assert!(st.stdout.contains("failing one"), "{}", st.stdout);
    // The older passing report cannot come back.
    rejected(
        &install(&node, &newer, &c.key),
        ErrorKind::BadInput,
        "newer report",
    );
    let (o, _) = submit(&node, dir.path(), "revoked");
    assert_ne!(o.code, 0);
}

#[test]
fn unsigned_untrusted_or_replayed_requests_are_refused_and_honest_ones_served() {
    let dir = tempfile::tempdir().unwrap();
    let c = certifier(dir.path());
    let operator = SigningKey::generate();
    let config = dir.path().join("lockstepd.toml");
    std::fs::write(
        &config,
        format!(
            "trusted_operators = [\"{}\"]\n",
            operator.public().to_base64()
        ),
    )
    .unwrap();
    let node = common::start_certified(
        &dir.path().join("state"),
        "cpu",
        &["--trust-certifier", s(&c.public), "--config", s(&config)],
    );
    let stranger = SigningKey::generate();
    let report = sign_report(&report_for(&node.key, -100), &c.key);

    // Without a session (no nonce to sign over), with the old layout.
    let bare = Message::InstallReport(InstallReport {
        report: report.0.clone(),
        signature: report.1.clone(),
        auth: Authorization {
            signer: String::new(),
            statement: Vec::new(),
            signature: String::new(),
        },
    });
    rejected(
        &ask(&node, bare.clone()),
        ErrorKind::Unauthorized,
        "CertifyHello",
    );
    // In a session but unsigned.
    rejected(
        &session(&node, |_| bare.clone()),
        ErrorKind::Unauthorized,
        "authorization",
    );
    // Signed by a stranger: install and run.
    rejected(
        &install(&node, &report, &stranger),
        ErrorKind::Unauthorized,
        "neither an operator nor a trusted certifier",
    );
    rejected(
        &session(&node, |nonce| run_request(&node, nonce, &stranger)),
        ErrorKind::Unauthorized,
        "neither an operator nor a trusted certifier",
    );
    // A trusted signature over another session's nonce (a replay).
    rejected(
        &session(&node, |_| install_request(&node, &[0; 32], &report, &c.key)),
        ErrorKind::Unauthorized,
        "replayed or stale",
    );
    assert!(status(&node).stdout.contains("certified no"));

    // The next honest requests are served: the operator installs, the
    // certifier runs the suite.
    assert!(installed(&install(&node, &report, &operator)));
    assert!(status(&node).stdout.contains("certified yes"));
    let answer = session(&node, |nonce| run_request(&node, nonce, &c.key));
    let Message::CertifyReport(reply) = answer else {
        panic!("expected a report, got {answer:?}")
    };
    let r = Report::parse(&reply.report).unwrap();
    assert_eq!(r.node.as_deref(), Some(node.key.as_str()));
    assert!(r.passed, "{}", r.summary());
    let days = parse_rfc3339(&r.expires_at).unwrap() - parse_rfc3339(&r.finished_at).unwrap();
    assert_eq!(days, 30 * 86_400);
    // The run's report, signed by the certifier, installs (it is newer).
    assert!(installed(&install(&node, &sign_report(&r, &c.key), &c.key)));
}

/// What `make demo` does, with the debug binaries: `lockstep-certify --node
/// --node-key --key` runs the suite through the node, `lockstep-certify
/// install --node --node-key --key` installs it, and the node serves.
#[test]
fn the_demo_flow_certifies_a_node() {
    let certify = PathBuf::from(env!("CARGO_BIN_EXE_lockstepd")).with_file_name("lockstep-certify");
    assert!(
        certify.exists(),
        "{} is missing: run `cargo build -p lockstep-certify` (make test builds it)",
        certify.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = SigningKey::generate();
    key.write_file(&d.join("certifier.key"), None).unwrap();
    std::fs::write(d.join("certifier.pub"), key.public_key_file()).unwrap();
    let node = common::start_certified(
        &d.join("state"),
        "cpu",
        &["--trust-certifier", s(&d.join("certifier.pub"))],
    );
    let report = d.join("certification.json");
    let run = |args: &[&str]| {
        let o = Command::new(&certify).args(args).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        (o.status.code(), text)
    };
    let (code, text) = run(&[
        "--node",
        &node.addr,
        "--node-key",
        &node.key,
        "--key",
        s(&d.join("certifier.key")),
        "--out",
        s(&report),
        "--repeats",
        "1",
        "-q",
    ]);
    assert_eq!(code, Some(0), "{text}");
    let (code, text) = run(&[
        "install",
        "--node",
        &node.addr,
        "--node-key",
        &node.key,
        "--key",
        s(&d.join("certifier.key")),
        s(&report),
    ]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("certified yes"), "{text}");
    let (o, receipt) = submit(&node, d, "demo");
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(receipt_certified(&receipt));
    // The same install again is not newer: refused, exit 2, one line.
    let (code, text) = run(&[
        "install",
        "--node",
        &node.addr,
        "--node-key",
        &node.key,
        "--key",
        s(&d.join("certifier.key")),
        s(&report),
    ]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("newer report"), "{text}");
}

/// The one-run-at-a-time turn is held by the run, not by its requester: a
/// requester that goes away does not free it early, and the run's end does.
#[test]
fn a_run_holds_the_device_until_it_ends_even_when_its_requester_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let c = certifier(dir.path());
    let node = common::start_certified(
        &dir.path().join("state"),
        "cpu",
        &["--trust-certifier", s(&c.public)],
    );
    // Ask for a run, then hang up without waiting for it.
    smol::block_on(async {
        let addr = node.addr.parse().unwrap();
        let connection = lockstep_transport::connect(addr, &node_id(&node))
            .await
            .unwrap();
        let (mut send, recv) = connection.open_bi().await.unwrap();
        let mut reader = FrameReader::new(recv);
        write_frame(&mut send, &Message::CertifyHello.to_frame())
            .await
            .unwrap();
        let Message::CertifyChallenge(challenge) = next_message(&mut reader).await else {
            panic!("no challenge")
        };
        let request = run_request(&node, &challenge.nonce, &c.key);
        write_frame(&mut send, &request.to_frame()).await.unwrap();
        let _ = send.finish();
        // Long enough for the request to reach the node before the close.
        smol::Timer::after(std::time::Duration::from_millis(300)).await;
        connection.close(0u32.into(), b"gone");
    });
    // The run is still going: another one is told to retry.
    let answer = session(&node, |nonce| run_request(&node, nonce, &c.key));
    assert!(
        matches!(answer, Message::Busy { .. }),
        "expected Busy, got {answer:?}"
    );
    // Once it has ended, the next run is served.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    loop {
        match session(&node, |nonce| run_request(&node, nonce, &c.key)) {
            Message::CertifyReport(_) => break,
            Message::Busy { .. } if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(500))
            }
            other => panic!("expected a report, got {other:?}"),
        }
    }
}
