//! `lockstep verify-receipt` and a receipt's chain signature, offline: a
//! format 3 receipt with `RECEIPT.eip712` verifies; a tampered or missing
//! signature file is refused; `--chain`/`--registry` refuse bad input with
//! exit 2 and an unreachable chain with exit 1, one line each. (The
//! on-chain happy path is tested against ganache by the fleet.)

use std::collections::BTreeMap;
use std::path::PathBuf;

use lockstep_chain::ChainKey;
use lockstep_identity::{DeviceKey, KeyProtection};
use lockstep_protocol::{
    DeviceRecord, Receipt, RECEIPT_FORMAT, RECEIPT_FORMAT_V2, RECEIPT_FORMAT_V3, RECEIPT_FORMAT_V4,
};

mod common;
use common::{assert_fails, lockstep, s};

const REGISTRY: &str = "0x5FbDB2315678afecb367f032d93F642f64180aa3";

/// A node's receipt as `lockstep submit` leaves it: `r.json`,
/// `r.json.minisig` and, from format 3, `r.json.eip712`.
struct Signed {
    _dir: tempfile::TempDir,
    receipt: PathBuf,
    node: String,
    address: String,
}

fn chain_key(key: &DeviceKey) -> ChainKey {
    (0..=255u8)
        .find_map(|c| ChainKey::from_bytes(&key.chain_key_material(c)).ok())
        .unwrap()
}

fn signed(format: u32) -> Signed {
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = DeviceKey::load_or_create(&dir.path().join("state")).unwrap();
    let chain = chain_key(&key);
    let address = chain.address().to_checksum();
    let receipt = Receipt {
        format,
        node: key.node_id().to_base64(),
        job_id: "00112233445566778899aabbccddeeff".into(),
        bundle_id: "ab".repeat(32),
        device: DeviceRecord {
            backend: "cpu".into(),
            name: "cpu".into(),
            vendor_id: 0,
            device_id: 0,
            driver_id: 0,
            driver_version: 0,
            api_version: 0,
            uuid: (format >= RECEIPT_FORMAT).then(|| "00".repeat(16)),
            index: (format >= RECEIPT_FORMAT).then_some(0),
        },
        program_sha256: "cd".repeat(32),
        inputs: BTreeMap::new(),
        outputs: BTreeMap::new(),
        trace_root: "23".repeat(32),
        started_at: "2026-11-24T07:49:03Z".into(),
        finished_at: "2026-11-24T07:49:04Z".into(),
        certified: false,
        key_protection: Some(KeyProtection::File),
        chain_address: (format >= RECEIPT_FORMAT_V3).then(|| address.clone()),
        submitter: None,
        references: (format >= RECEIPT_FORMAT_V4).then(BTreeMap::new),
    };
    let (bytes, signature) = receipt.sign(&key);
    let path = dir.path().join("r.json");
    std::fs::write(&path, &bytes).unwrap();
    std::fs::write(dir.path().join("r.json.minisig"), signature.to_file()).unwrap();
    if format >= RECEIPT_FORMAT_V3 {
        std::fs::write(
            dir.path().join("r.json.eip712"),
            format!("{}\n", receipt.sign_chain(&chain)),
        )
        .unwrap();
    }
    Signed {
        node: key.node_id().to_base64(),
        _dir: dir,
        receipt: path,
        address,
    }
}

fn eip712(r: &Signed) -> PathBuf {
    r.receipt.with_file_name("r.json.eip712")
}

#[test]
fn a_format_3_receipt_and_its_eip712_signature_verify() {
    let r = signed(RECEIPT_FORMAT);
    let out = lockstep(&["verify-receipt", s(&r.receipt), "--node-key", &r.node]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains(&format!(
            "chain address: {} (EIP-712 signature verified)",
            r.address
        )),
        "{}",
        out.stdout
    );

    // Format 2 (no chain address) still verifies, without a .eip712 file.
    let v2 = signed(RECEIPT_FORMAT_V2);
    let out = lockstep(&["verify-receipt", s(&v2.receipt), "--node-key", &v2.node]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("chain address: none"), "{}", out.stdout);
}

#[test]
fn a_tampered_or_missing_eip712_signature_is_refused() {
    let r = signed(RECEIPT_FORMAT);
    let good = std::fs::read_to_string(eip712(&r)).unwrap();
    // A flipped digit of r: another signature, recovering another address
    // or none.
    let mut bad = good.clone().into_bytes();
    bad[5] = if bad[5] == b'0' { b'1' } else { b'0' };
    std::fs::write(eip712(&r), &bad).unwrap();
    let out = lockstep(&["verify-receipt", s(&r.receipt), "--node-key", &r.node]);
    assert_fails(&out, 2, &["r.json.eip712", "chain signature"]);

    // Another receipt's signature.
    let other = signed(RECEIPT_FORMAT);
    std::fs::copy(eip712(&other), eip712(&r)).unwrap();
    let out = lockstep(&["verify-receipt", s(&r.receipt), "--node-key", &r.node]);
    assert_fails(&out, 2, &["r.json.eip712"]);

    for garbage in ["", "0x1234\n", "not hex at all\n"] {
        std::fs::write(eip712(&r), garbage).unwrap();
        let out = lockstep(&["verify-receipt", s(&r.receipt), "--node-key", &r.node]);
        assert_fails(&out, 2, &["r.json.eip712"]);
    }

    std::fs::remove_file(eip712(&r)).unwrap();
    let out = lockstep(&["verify-receipt", s(&r.receipt), "--node-key", &r.node]);
    assert_fails(&out, 2, &["r.json.eip712", "missing"]);

    std::fs::write(eip712(&r), good).unwrap();
    let out = lockstep(&["verify-receipt", s(&r.receipt), "--node-key", &r.node]);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[test]
fn chain_options_refuse_bad_input_with_2_and_an_unreachable_chain_with_1() {
    let r = signed(RECEIPT_FORMAT);
    let verify = |extra: &[&str]| {
        let mut args = vec!["verify-receipt", s(&r.receipt), "--node-key", &r.node];
        args.extend_from_slice(extra);
        lockstep(&args)
    };
    assert_fails(
        &verify(&["--chain", "http://127.0.0.1:1"]),
        2,
        &["--registry"],
    );
    assert_fails(&verify(&["--registry", REGISTRY]), 2, &["--chain"]);
    assert_fails(
        &verify(&["--chain", "http://127.0.0.1:1", "--registry", "0x12"]),
        2,
        &["--registry"],
    );
    for url in ["not a url", "https://127.0.0.1:8545", "ftp://127.0.0.1/"] {
        assert_fails(
            &verify(&["--chain", url, "--registry", REGISTRY]),
            2,
            &["--chain"],
        );
    }
    // Nothing listens on port 1 of loopback: a machine problem, exit 1.
    assert_fails(
        &verify(&["--chain", "http://127.0.0.1:1", "--registry", REGISTRY]),
        1,
        &["unreachable"],
    );
    // A format 2 receipt has nothing the registry could vouch for.
    let v2 = signed(RECEIPT_FORMAT_V2);
    let out = lockstep(&[
        "verify-receipt",
        s(&v2.receipt),
        "--node-key",
        &v2.node,
        "--chain",
        "http://127.0.0.1:1",
        "--registry",
        REGISTRY,
    ]);
    assert_fails(&out, 2, &["format 2"]);
}
