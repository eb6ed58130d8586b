//! Operator/certifier keys in stock minisign secret key files, checked both
//! ways against the stock `minisign` tool.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use lockstep_identity::{KdfCost, NodeId, SecretKeyError, Signature, SigningKey};

fn require_minisign() {
    if Command::new("minisign").arg("-v").output().is_err() {
        panic!(
            "the minisign tool is not installed (Debian package minisign; make test installs it)"
        );
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Stock minisign signs `message` with the key file (password on stdin when
/// given) and the result verifies as `public`'s signature in our verifier.
fn stock_signs_and_we_verify(key_file: &Path, password: Option<&str>, public: &NodeId) {
    let dir = key_file.parent().unwrap();
    let msg = dir.join("msg.txt");
    std::fs::write(&msg, b"release 7").unwrap();
    let mut child = Command::new("minisign")
        .arg("-S")
        .arg("-s")
        .arg(key_file)
        .arg("-m")
        .arg(&msg)
        .args(["-t", "stock signed"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(pw) = password {
        writeln!(child.stdin.as_mut().unwrap(), "{pw}").unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "stock minisign could not sign with our key file: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sig = std::fs::read_to_string(dir.join("msg.txt.minisig")).unwrap();
    let sig = Signature::parse(&sig).unwrap();
    sig.verify(public, b"release 7").unwrap();
    assert_eq!(sig.trusted_comment(), "stock signed");
}

/// Our signature verifies with stock `minisign -Vm -p PUBFILE`.
fn we_sign_and_stock_verifies(key: &SigningKey, dir: &Path) {
    let file = dir.join("statement.json");
    std::fs::write(&file, br#"{"bundle":"x","version":3}"#).unwrap();
    let sig = key.sign_minisign(br#"{"bundle":"x","version":3}"#, "lockstep operator");
    std::fs::write(dir.join("statement.json.minisig"), sig.to_file()).unwrap();
    let pubfile = dir.join("op.pub");
    std::fs::write(&pubfile, key.public_key_file()).unwrap();
    let out = Command::new("minisign")
        .arg("-Vm")
        .arg(&file)
        .arg("-p")
        .arg(&pubfile)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("lockstep operator"));
    // A changed file fails the stock tool too.
    std::fs::write(&file, br#"{"bundle":"x","version":4}"#).unwrap();
    let out = Command::new("minisign")
        .arg("-Vm")
        .arg(&file)
        .arg("-p")
        .arg(&pubfile)
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn our_unencrypted_key_file_works_with_stock_minisign() {
    require_minisign();
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate();
    let path = dir.path().join("op.key");
    key.write_file(&path, None).unwrap();
    assert_eq!(mode(&path), 0o600);
    we_sign_and_stock_verifies(&key, dir.path());
    stock_signs_and_we_verify(&path, None, key.public());
    let back = SigningKey::read_file(&path, None).unwrap();
    assert_eq!(back.public(), key.public());
}

#[test]
fn our_encrypted_key_file_works_with_stock_minisign() {
    require_minisign();
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate();
    let path = dir.path().join("op.key");
    key.write_file_with_cost(&path, Some("correct horse"), KdfCost::insecure_for_tests())
        .unwrap();
    assert_eq!(mode(&path), 0o600);
    stock_signs_and_we_verify(&path, Some("correct horse"), key.public());
    let back = SigningKey::read_file(&path, Some("correct horse")).unwrap();
    assert_eq!(back.public(), key.public());
    let err = SigningKey::read_file(&path, Some("wrong")).unwrap_err();
    assert!(matches!(err, SecretKeyError::WrongPassword { .. }), "{err}");
    let err = SigningKey::read_file(&path, None).unwrap_err();
    assert!(err.to_string().contains("LOCKSTEP_KEY_PASSWORD"), "{err}");
}

#[test]
fn stock_unencrypted_key_is_read_and_signs_for_its_public_key() {
    require_minisign();
    let dir = tempfile::tempdir().unwrap();
    let (pk, sk) = (dir.path().join("s.pub"), dir.path().join("s.key"));
    let out = Command::new("minisign")
        .args(["-G", "-W", "-p"])
        .arg(&pk)
        .arg("-s")
        .arg(&sk)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = SigningKey::read_file(&sk, None).unwrap();
    let public = NodeId::parse(&std::fs::read_to_string(&pk).unwrap()).unwrap();
    assert_eq!(key.public(), &public);
    we_sign_and_stock_verifies(&key, dir.path());
}

/// A key from `minisign -G` with a password, at minisign's own (1 GiB,
/// seconds) scrypt cost: the parameters must be libsodium's exactly.
#[test]
fn stock_encrypted_key_is_read_with_its_password() {
    require_minisign();
    let dir = tempfile::tempdir().unwrap();
    let (pk, sk) = (dir.path().join("s.pub"), dir.path().join("s.key"));
    let mut child = Command::new("minisign")
        .args(["-G", "-p"])
        .arg(&pk)
        .arg("-s")
        .arg(&sk)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Not a terminal: minisign reads the password and its confirmation as
    // lines from stdin.
    child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"s3cret\ns3cret\n")
        .unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = NodeId::parse(&std::fs::read_to_string(&pk).unwrap()).unwrap();
    let err = SigningKey::read_file(&sk, Some("not it")).unwrap_err();
    assert!(matches!(err, SecretKeyError::WrongPassword { .. }), "{err}");
    let key = SigningKey::read_file(&sk, Some("s3cret")).unwrap();
    assert_eq!(key.public(), &public);
    we_sign_and_stock_verifies(&key, dir.path());
}

#[test]
fn a_public_key_or_garbage_is_not_taken_for_a_secret_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate();
    let path = dir.path().join("op.pub");
    std::fs::write(&path, key.public_key_file()).unwrap();
    let err = SigningKey::read_file(&path, None).unwrap_err();
    assert!(matches!(err, SecretKeyError::Malformed { .. }), "{err}");
    std::fs::write(&path, [0xffu8; 300]).unwrap();
    assert!(SigningKey::read_file(&path, None).is_err());
    let err = SigningKey::read_file(&dir.path().join("missing.key"), None).unwrap_err();
    assert!(err.to_string().contains("missing.key"), "{err}");
}
