//! The remote form end to end on a `--backend cpu` node: the node runs the
//! suite and signs the report with its device key, the certifier signs it
//! too (stock minisign verifies both), and installing it certifies the
//! node; reports it must not accept are refused.
//!
//! `lockstepd` is taken from the same target directory (`cargo test
//! --workspace` builds it).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use lockstep_identity::{NodeId, SigningKey};

struct Node {
    child: Child,
    addr: String,
    key: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lockstepd_bin() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_lockstep-certify")).with_file_name("lockstepd");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p lockstep-daemon` (make test builds it)",
        bin.display()
    );
    bin
}

fn start(state: &Path, trust: &Path) -> Node {
    let mut child = Command::new(lockstepd_bin())
        .args([
            "--file-key",
            "--listen",
            "127.0.0.1:0",
            "--backend",
            "cpu",
            "--state",
        ])
        .arg(state)
        .arg("--trust-certifier")
        .arg(trust)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let rest = line
        .strip_prefix("lockstepd listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    let (addr, key) = rest.trim().split_once(" as ").unwrap();
    Node {
        child,
        addr: addr.to_string(),
        key: key.to_string(),
    }
}

fn certify(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lockstep-certify"))
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn minisign_verifies(file: &Path, public: &Path, sig: &Path) -> bool {
    Command::new("minisign")
        .arg("-Vm")
        .arg(file)
        .arg("-p")
        .arg(public)
        .arg("-x")
        .arg(sig)
        .output()
        .expect("stock minisign is installed (make test installs it)")
        .status
        .success()
}

#[test]
fn a_node_runs_the_suite_and_a_signed_report_certifies_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let certifier = SigningKey::generate();
    certifier.write_file(&d.join("c.key"), None).unwrap();
    std::fs::write(d.join("c.pub"), certifier.public_key_file()).unwrap();
    let node = start(&d.join("state"), &d.join("c.pub"));
    let node_pub = d.join("node.pub");
    std::fs::write(
        &node_pub,
        NodeId::parse(&node.key).unwrap().to_public_key_file(),
    )
    .unwrap();

    let report = d.join("REPORT.json");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let o = certify(&[
        "--node",
        &node.addr,
        "--node-key",
        &node.key,
        "--key",
        &s(&d.join("c.key")),
        "--out",
        &s(&report),
        "--repeats",
        "1",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("CERTIFIED"), "{}", text(&o));
    // Both signatures, each verified by stock minisign.
    let cert_sig = d.join("REPORT.json.minisig");
    let node_sig = d.join("REPORT.json.node.minisig");
    assert!(minisign_verifies(&report, &d.join("c.pub"), &cert_sig));
    assert!(minisign_verifies(&report, &node_pub, &node_sig));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["node"].as_str(), Some(node.key.as_str()));
    assert_eq!(r["device"]["backend"].as_str(), Some("cpu"));

    // Before the install the node refuses jobs; after it, it is certified.
    let o = certify(&[
        "install",
        "--node",
        &node.addr,
        "--node-key",
        &node.key,
        "--key",
        &s(&d.join("c.key")),
        &s(&report),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("certified yes"), "{}", text(&o));

    // A report signed by a key the node does not trust is refused (exit 2)
    // and leaves the installed one in place.
    let stranger = SigningKey::generate();
    let bytes = std::fs::read(&report).unwrap();
    let other = d.join("OTHER.json");
    std::fs::write(&other, &bytes).unwrap();
    std::fs::write(
        d.join("OTHER.json.minisig"),
        stranger.sign_minisign(&bytes, "stranger").to_file(),
    )
    .unwrap();
    let o = certify(&[
        "install",
        "--node",
        &node.addr,
        "--node-key",
        &node.key,
        "--key",
        &s(&d.join("c.key")),
        &s(&other),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("not a trusted certifier"), "{}", text(&o));
    let installed: serde_json::Value = serde_json::from_slice(
        &std::fs::read(d.join("state/certification/installed.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(installed["report"].as_str().unwrap().as_bytes(), bytes);

    // An install request signed by a key the node does not trust is
    // refused as unauthorized (exit 2), before the report is looked at.
    stranger.write_file(&d.join("s.key"), None).unwrap();
    let o = certify(&[
        "install",
        "--node",
        &node.addr,
        "--node-key",
        &node.key,
        "--key",
        &s(&d.join("s.key")),
        &s(&report),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("neither an operator nor a trusted certifier"),
        "{}",
        text(&o)
    );
}
