//! The device key's life on disk, and minisign compatibility checked with
//! the stock `minisign` tool.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use lockstep_identity::{DeviceKey, NodeId, Signature, SignatureError, KEY_FILE};

#[test]
fn created_once_then_reused_with_mode_600() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (first, created) = DeviceKey::load_or_create(&state).unwrap();
    assert!(created);
    let mode = std::fs::metadata(state.join(KEY_FILE))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let (again, created) = DeviceKey::load_or_create(&state).unwrap();
    assert!(!created);
    assert_eq!(first.node_id(), again.node_id());
    assert_eq!(DeviceKey::load(&state).unwrap().node_id(), first.node_id());
    // Nothing but the key is left behind.
    let names: Vec<_> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from(KEY_FILE)]);
}

#[test]
fn a_key_others_can_read_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    DeviceKey::load_or_create(dir.path()).unwrap();
    let path = dir.path().join(KEY_FILE);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = DeviceKey::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("chmod 600"), "{err}");
}

#[test]
fn a_damaged_key_is_refused_and_a_stale_temporary_ignored() {
    let dir = tempfile::tempdir().unwrap();
    // A crash during generation leaves at most a temporary file: it is not a key.
    std::fs::write(dir.path().join(format!(".{KEY_FILE}.tmp-1")), b"partial").unwrap();
    let (key, created) = DeviceKey::load_or_create(dir.path()).unwrap();
    assert!(created);
    let path = dir.path().join(KEY_FILE);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, &text[..text.len() - 10]).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(DeviceKey::load(dir.path()).is_err());
    drop(key);
}

#[test]
fn debug_output_never_shows_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = DeviceKey::load_or_create(dir.path()).unwrap();
    let text = std::fs::read_to_string(dir.path().join(KEY_FILE)).unwrap();
    let secret_b64 = text.lines().nth(1).unwrap();
    let shown = format!("{key:?}");
    assert!(shown.contains("redacted"));
    assert!(!shown.contains(secret_b64));
}

#[test]
fn node_id_round_trips_through_its_text_forms() {
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = DeviceKey::load_or_create(dir.path()).unwrap();
    let id = key.node_id();
    assert_eq!(&NodeId::parse(&id.to_base64()).unwrap(), id);
    assert_eq!(&NodeId::parse(&id.to_public_key_file()).unwrap(), id);
    assert!(id.to_base64().starts_with("RW"));
    assert!(NodeId::parse("not a key").is_err());
    assert!(NodeId::parse("RWQ=").is_err());
}

#[test]
fn signatures_verify_and_tampering_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = DeviceKey::load_or_create(dir.path()).unwrap();
    let (other, _) = DeviceKey::load_or_create(&dir.path().join("other")).unwrap();
    let msg = br#"{"job":"1","root":"ab"}"#;
    let sig = key.sign_minisign(msg, "lockstep receipt for job 1");
    let parsed = Signature::parse(&sig.to_file()).unwrap();
    assert_eq!(parsed, sig);
    parsed.verify(key.node_id(), msg).unwrap();
    assert_eq!(
        parsed.verify(key.node_id(), b"{}"),
        Err(SignatureError::Invalid)
    );
    assert!(matches!(
        parsed.verify(other.node_id(), msg),
        Err(SignatureError::WrongKey { .. })
    ));
    let edited = sig.to_file().replace("job 1", "job 2");
    assert_eq!(
        Signature::parse(&edited)
            .unwrap()
            .verify(key.node_id(), msg),
        Err(SignatureError::Comment)
    );
}

/// The stock tool must accept our signatures: `minisign -Vm FILE -P KEY`.
#[test]
fn stock_minisign_verifies_our_signatures() {
    if Command::new("minisign").arg("-v").output().is_err() {
        panic!(
            "the minisign tool is not installed (Debian package minisign; make test installs it)"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = DeviceKey::load_or_create(&dir.path().join("state")).unwrap();
    let file = dir.path().join("receipt.json");
    std::fs::write(&file, br#"{"a":1}"#).unwrap();
    let sig = key.sign_minisign(br#"{"a":1}"#, "lockstep test");
    std::fs::write(dir.path().join("receipt.json.minisig"), sig.to_file()).unwrap();
    let verify = |pk: &str| {
        Command::new("minisign")
            .arg("-Vm")
            .arg(&file)
            .args(["-P", pk])
            .output()
            .unwrap()
    };
    let ok = verify(&key.node_id().to_base64());
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("lockstep test"));
    // A changed file fails the stock tool too.
    std::fs::write(&file, br#"{"a":2}"#).unwrap();
    assert!(!verify(&key.node_id().to_base64()).status.success());
}
