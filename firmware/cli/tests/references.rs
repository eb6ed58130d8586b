//! `lockstep keygen`, `permit` and `lineage`, offline: receipts are signed
//! here with a device key, as a node would sign them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lockstep_identity::{DeviceKey, KeyProtection, SigningKey};
use lockstep_protocol::{DeviceRecord, Receipt, ReferenceRecord, RECEIPT_FORMAT};

mod common;
use common::{assert_fails, lockstep, s, Outcome};

fn device_key(dir: &Path) -> DeviceKey {
    DeviceKey::load_or_create(dir).unwrap().0
}

fn receipt(
    key: &DeviceKey,
    job: u8,
    submitter: Option<String>,
    inputs: BTreeMap<String, String>,
    outputs: BTreeMap<String, String>,
    references: BTreeMap<String, ReferenceRecord>,
) -> Receipt {
    Receipt {
        format: RECEIPT_FORMAT,
        node: key.node_id().to_base64(),
        job_id: hex::encode([job; 16]),
        bundle_id: "ab".repeat(32),
        device: DeviceRecord {
            backend: "cpu".into(),
            name: "reference".into(),
            vendor_id: 0,
            device_id: 0,
            driver_id: 0,
            driver_version: 0,
            api_version: 0,
            uuid: Some("00".repeat(16)),
            index: Some(0),
        },
        program_sha256: "cd".repeat(32),
        inputs,
        outputs,
        trace_root: "23".repeat(32),
        started_at: "2026-12-03T00:00:00Z".into(),
        finished_at: "2026-12-03T00:00:01Z".into(),
        certified: false,
        key_protection: Some(KeyProtection::File),
        chain_address: Some("0x0000000000000000000000000000000000000001".into()),
        submitter,
        references: Some(references),
    }
}

/// Writes `dir/name` and `dir/name.minisig`; returns the path and bytes.
fn write_signed(dir: &Path, name: &str, key: &DeviceKey, r: &Receipt) -> (PathBuf, Vec<u8>) {
    let (bytes, signature) = r.sign(key);
    let path = dir.join(name);
    std::fs::write(&path, &bytes).unwrap();
    std::fs::write(dir.join(format!("{name}.minisig")), signature.to_file()).unwrap();
    (path, bytes)
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(b))
}

#[test]
fn keygen_writes_a_key_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("submitter.key");
    let out = lockstep(&["keygen", "--out", s(&key)]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let read = SigningKey::read_file(&key, None).unwrap();
    assert_eq!(out.stdout.trim(), read.public().to_base64());
    let public = std::fs::read_to_string(dir.path().join("submitter.key.pub")).unwrap();
    assert!(public.contains(&read.public().to_base64()));
    let again = lockstep(&["keygen", "--out", s(&key)]);
    assert_fails(&again, 2, &["already exists"]);
    assert_eq!(
        SigningKey::read_file(&key, None).unwrap().public(),
        read.public()
    );
}

struct Produced {
    dir: tempfile::TempDir,
    receipt: PathBuf,
    submitter: PathBuf,
    consumer: String,
}

fn produced() -> Produced {
    let dir = tempfile::tempdir().unwrap();
    let producer = device_key(&dir.path().join("producer"));
    let consumer = device_key(&dir.path().join("consumer"));
    let submitter = SigningKey::generate();
    let submitter_path = dir.path().join("submitter.key");
    submitter.write_file(&submitter_path, None).unwrap();
    let r = receipt(
        &producer,
        1,
        Some(submitter.public().to_base64()),
        BTreeMap::new(),
        [
            ("w1".to_string(), "11".repeat(32)),
            ("w2".to_string(), "22".repeat(32)),
        ]
        .into(),
        BTreeMap::new(),
    );
    let (path, _) = write_signed(dir.path(), "r.json", &producer, &r);
    Produced {
        receipt: path,
        submitter: submitter_path,
        consumer: consumer.node_id().to_base64(),
        dir,
    }
}

/// `lockstep permit` of `p`'s output `w1` for its consumer, into `out_dir`.
fn permit_w1(p: &Produced, out_dir: &Path) -> Outcome {
    lockstep(&[
        "permit",
        s(&p.receipt),
        "--consumer",
        &p.consumer,
        "--submitter-key",
        s(&p.submitter),
        "--output",
        "w1",
        "--address",
        "127.0.0.1:4433",
        "--out-dir",
        s(out_dir),
    ])
}

#[test]
fn permit_writes_reference_files() {
    let p = produced();
    let out_dir = p.dir.path().join("refs");
    let out = permit_w1(&p, &out_dir);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.lines().count(), 1, "{}", out.stdout);
    let text = std::fs::read_to_string(out_dir.join("w1.ref.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["format"], "lockstep-reference/1");
    assert_eq!(v["output"], "w1");
    assert_eq!(v["address"], "127.0.0.1:4433");
    assert_eq!(v["sha256"], "11".repeat(32));
    assert_eq!(v["job_id"], hex::encode([1u8; 16]));
    assert_eq!(
        v["receipt"].as_str().unwrap().as_bytes(),
        std::fs::read(&p.receipt).unwrap()
    );
    assert!(!out_dir.join("w2.ref.json").exists());
    // What the consumer node checks, it accepts.
    let r = lockstep_protocol::TensorReference {
        input: "x".into(),
        producer: v["producer"].as_str().unwrap().into(),
        address: v["address"].as_str().unwrap().into(),
        job_id: [1u8; 16],
        output: "w1".into(),
        sha256: [0x11; 32],
        receipt: v["receipt"].as_str().unwrap().as_bytes().to_vec(),
        signature: v["signature"].as_str().unwrap().into(),
        permission: lockstep_protocol::Permission {
            statement: v["permission"]["statement"]
                .as_str()
                .unwrap()
                .as_bytes()
                .to_vec(),
            signature: v["permission"]["signature"].as_str().unwrap().into(),
        },
    };
    let consumer = lockstep_identity::NodeId::parse(&p.consumer).unwrap();
    lockstep_protocol::check_reference(&r, &consumer, std::time::SystemTime::now()).unwrap();
    // Default: every output.
    let all = p.dir.path().join("all");
    let out = lockstep(&[
        "permit",
        s(&p.receipt),
        "--consumer",
        &p.consumer,
        "--submitter-key",
        s(&p.submitter),
        "--address",
        "127.0.0.1:4433",
        "--out-dir",
        s(&all),
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(all.join("w1.ref.json").is_file() && all.join("w2.ref.json").is_file());
}

#[test]
fn permit_refuses_the_wrong_submitter_and_bad_flags() {
    let p = produced();
    let other = p.dir.path().join("other.key");
    SigningKey::generate().write_file(&other, None).unwrap();
    let out_dir = p.dir.path().join("refs");
    let out = lockstep(&[
        "permit",
        s(&p.receipt),
        "--consumer",
        &p.consumer,
        "--submitter-key",
        s(&other),
        "--address",
        "127.0.0.1:4433",
        "--out-dir",
        s(&out_dir),
    ]);
    assert_fails(&out, 2, &["only that key can permit"]);
    let out = lockstep(&[
        "permit",
        s(&p.receipt),
        "--consumer",
        &p.consumer,
        "--submitter-key",
        s(&p.submitter),
        "--out-dir",
        s(&out_dir),
    ]);
    assert_fails(&out, 2, &["--address"]);
    let out = lockstep(&[
        "permit",
        s(&p.receipt),
        "--consumer",
        "not-a-key",
        "--submitter-key",
        s(&p.submitter),
        "--address",
        "127.0.0.1:4433",
        "--out-dir",
        s(&out_dir),
    ]);
    assert_fails(&out, 2, &["--consumer"]);
}

#[derive(PartialEq)]
enum Tamper {
    None,
    Edited,
    WrongSigner,
}

/// Two receipts: job 2 (on node B) takes input x from job 1's output w1
/// (on node A). Returns (dir of sources, the consumer's receipt path).
fn chain(mode: Tamper) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let a = device_key(&dir.path().join("a"));
    let b = device_key(&dir.path().join("b"));
    let sources = dir.path().join("sources");
    std::fs::create_dir_all(&sources).unwrap();
    let w1 = "11".repeat(32);
    let first = receipt(
        &a,
        1,
        None,
        BTreeMap::new(),
        [("w1".to_string(), w1.clone())].into(),
        BTreeMap::new(),
    );
    let signer = if mode == Tamper::WrongSigner { &b } else { &a };
    let (path, bytes) = write_signed(&sources, "first.json", signer, &first);
    let record = ReferenceRecord {
        producer: a.node_id().to_base64(),
        job_id: first.job_id.clone(),
        output: "w1".into(),
        source_receipt_sha256: sha256_hex(&bytes),
    };
    if mode == Tamper::Edited {
        let edited = String::from_utf8(bytes)
            .unwrap()
            .replace("reference", "referencf");
        std::fs::write(&path, edited).unwrap();
    }
    let second = receipt(
        &b,
        2,
        None,
        [("x".to_string(), w1)].into(),
        [("y".to_string(), "33".repeat(32))].into(),
        [("x".to_string(), record)].into(),
    );
    let (root, _) = write_signed(dir.path(), "second.json", &b, &second);
    (dir, sources, root)
}

#[test]
fn lineage_walks_receipts_back_to_their_sources() {
    let (dir, sources, root) = chain(Tamper::None);
    let out = lockstep(&["lineage", s(&root), "--receipts", s(&sources)]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", out.stdout);
    assert!(lines[0].starts_with(&format!("step 1  job {}", hex::encode([1u8; 16]))));
    assert!(lines[1].starts_with(&format!("step 2  job {}", hex::encode([2u8; 16]))));
    assert!(lines[1].contains("device reference (cpu)  uncertified  program cdcdcdcdcdcdcdcd"));
    assert_eq!(lines[2], "  input x <- step 1 output w1 (1111111111111111)");
    assert_eq!(
        lines[3],
        "lineage: 2 steps on 2 nodes, every signature and hash verified"
    );
    let out = lockstep(&["lineage", s(&root), "--receipts", s(&sources), "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["steps"].as_array().unwrap().len(), 2);
    assert_eq!(v["steps"][1]["inputs"][0]["source_step"], 1);
    let saved = dir.path().join("saved");
    let out = lockstep(&[
        "lineage",
        s(&root),
        "--receipts",
        s(&sources),
        "--save",
        s(&saved),
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let first = format!("{}.json", hex::encode([1u8; 16]));
    assert!(saved.join(&first).is_file());
    assert!(saved.join(format!("{first}.minisig")).is_file());
}

#[test]
fn lineage_refuses_an_edited_source_and_bad_flags() {
    let (_dir, sources, root) = chain(Tamper::WrongSigner);
    let out = lockstep(&["lineage", s(&root), "--receipts", s(&sources)]);
    assert_fails(
        &out,
        1,
        &["lineage step job", "does not verify under producer"],
    );
    let (_dir, sources, root) = chain(Tamper::Edited);
    // The edited source no longer hashes to the recorded digest, so it is
    // not found among the receipts, and there is no node to ask.
    let out = lockstep(&["lineage", s(&root), "--receipts", s(&sources)]);
    assert_fails(&out, 1, &["lineage step job", "input 'x'"]);
    let out = lockstep(&["lineage", s(&root), "--receipts", "/nonexistent/dir"]);
    assert_fails(&out, 2, &["--receipts"]);
    let out = lockstep(&["lineage", "/nonexistent/r.json"]);
    assert_fails(&out, 2, &["r.json"]);
    let out = lockstep(&["lineage", s(&root), "--node-key", "nope"]);
    assert_fails(&out, 2, &["--node-key"]);
}

#[test]
fn submit_checks_references_before_connecting() {
    let p = produced();
    let refs = p.dir.path().join("refs");
    let out = permit_w1(&p, &refs);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let program = p.dir.path().join("p.json");
    std::fs::write(
        &program,
        r#"{"version":1,"inputs":[{"name":"x","shape":[4]},{"name":"z","shape":[4]}],"outputs":["y"],"body":[{"op":"add","inputs":["x","z"],"output":"y"}]}"#,
    )
    .unwrap();
    let other = device_key(&p.dir.path().join("other"))
        .node_id()
        .to_base64();
    let x = format!("x={}", refs.join("w1.ref.json").display());
    let submit = |node_key: &str, extra: &[&str]| {
        let mut args = vec![
            "submit",
            "--node",
            "127.0.0.1:9",
            "--node-key",
            node_key,
            "--receipt",
            "/nonexistent/r.json",
            "exec",
            s(&program),
            "--out-dir",
            "/nonexistent/out",
        ];
        args.extend_from_slice(extra);
        lockstep(&args)
    };
    // The permission does not name this node: refused here, exit 2.
    let out = submit(&other, &["--ref", &x, "--input", "z=/nonexistent/z.npy"]);
    assert_fails(&out, 2, &["does not name node"]);
    // Every declared input once: z is missing.
    let out = submit(&p.consumer, &["--ref", &x]);
    assert_fails(&out, 2, &["input 'z'"]);
    // x both as --ref and --input.
    let out = submit(&p.consumer, &["--ref", &x, "--input", "x=/a.npy"]);
    assert_fails(&out, 2, &["both as --input and as --ref"]);
}
