//! The `lockstep-certify` binary: a signed report that stock minisign
//! verifies, tampering detected, exit codes.

use std::path::Path;
use std::process::{Command, Output};

use lockstep_certify::Report;
use lockstep_identity::{KdfCost, NodeId, SigningKey};

fn certify(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lockstep-certify"))
        .args(args)
        .env_remove("LOCKSTEP_KEY_PASSWORD")
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A certifier key written by us; returns the public key.
fn certifier(dir: &Path) -> NodeId {
    let key = SigningKey::generate();
    key.write_file(&dir.join("c.key"), None).unwrap();
    std::fs::write(dir.join("c.pub"), key.public_key_file()).unwrap();
    key.public().clone()
}

fn minisign_verifies(file: &Path, public: &Path) -> bool {
    let o = Command::new("minisign")
        .arg("-Vm")
        .arg(file)
        .arg("-p")
        .arg(public)
        .output()
        .expect("stock minisign is installed (make test installs it)");
    o.status.success()
}

#[test]
fn cpu_report_is_signed_and_stock_minisign_verifies_it() {
    let dir = tempfile::tempdir().unwrap();
    let public = certifier(dir.path());
    let out = dir.path().join("REPORT.json");
    let o = certify(&[
        "--backend",
        "cpu",
        "--repeats",
        "1",
        "--key",
        dir.path().join("c.key").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("CERTIFIED"), "{stdout}");
    // Progress went to stderr, one line per step when not on a terminal.
    assert!(
        stderr(&o).contains("] conformance matmul/0"),
        "{}",
        stderr(&o)
    );
    assert!(minisign_verifies(&out, &dir.path().join("c.pub")));

    let bytes = std::fs::read(&out).unwrap();
    let sig = std::fs::read_to_string(dir.path().join("REPORT.json.minisig")).unwrap();
    let (report, by) = Report::verify(&bytes, &sig, std::slice::from_ref(&public)).unwrap();
    assert_eq!(by, public);
    assert!(report.passed);
    assert_eq!(report.device.backend, "cpu");

    // One changed byte: minisign and the report check both refuse it.
    let text = String::from_utf8(bytes.clone()).unwrap();
    let tampered = text.replacen("\"passed\":true", "\"passed\":false", 1);
    assert_ne!(tampered, text);
    std::fs::write(&out, &tampered).unwrap();
    assert!(!minisign_verifies(&out, &dir.path().join("c.pub")));
    assert!(Report::verify(tampered.as_bytes(), &sig, std::slice::from_ref(&public)).is_err());

    // Another key is not trusted.
    let other = SigningKey::generate();
    let err = Report::verify(&bytes, &sig, &[other.public().clone()]).unwrap_err();
    assert!(err.to_string().contains("not a trusted certifier"), "{err}");

    // `show` checks the signature and prints the summary.
    std::fs::write(&out, &bytes).unwrap();
    let o = certify(&[
        "show",
        out.to_str().unwrap(),
        "--certifier",
        dir.path().join("c.pub").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("PASS  probes"));
}

#[test]
fn encrypted_certifier_key_takes_its_password_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate();
    let path = dir.path().join("c.key");
    key.write_file_with_cost(&path, Some("pw"), KdfCost::insecure_for_tests())
        .unwrap();
    let out = dir.path().join("r.json");
    let args = [
        "--backend",
        "cpu",
        "--repeats",
        "1",
        "-q",
        "--key",
        path.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    let o = certify(&args);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("LOCKSTEP_KEY_PASSWORD"),
        "{}",
        stderr(&o)
    );
    assert_eq!(stderr(&o).lines().count(), 1);
    let o = Command::new(env!("CARGO_BIN_EXE_lockstep-certify"))
        .args(args)
        .env("LOCKSTEP_KEY_PASSWORD", "pw")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn bad_usage_exits_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    certifier(dir.path());
    let key = dir.path().join("c.key");
    for args in [
        vec!["--backend", "cpu", "--out", "/tmp/x.json"],
        vec!["--backend", "cpu", "--key", key.to_str().unwrap()],
        vec![
            "--backend",
            "cpu",
            "--key",
            "/nonexistent/c.key",
            "--out",
            "/tmp/x.json",
        ],
        vec![
            "--backend",
            "cpu",
            "--repeats",
            "100000",
            "--key",
            key.to_str().unwrap(),
            "--out",
            "/tmp/x.json",
        ],
    ] {
        let o = certify(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert_eq!(
            stderr(&o).trim().lines().count(),
            1,
            "{args:?}: {}",
            stderr(&o)
        );
    }
}

#[test]
fn golden_regeneration_reproduces_the_committed_file() {
    let o = certify(&["golden"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("match the CPU reference"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("golden.json");
    let o = certify(&["golden", "--write", "--file", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("golden.json");
    assert!(
        std::fs::read(&file).unwrap() == std::fs::read(committed).unwrap(),
        "`lockstep-certify golden --write` would change hwtests/golden.json"
    );
}
