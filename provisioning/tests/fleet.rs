//! `lockstep-fleet` against real `lockstepd` processes on loopback (CPU
//! backend: the bundle is still verified, signed and self-tested).
//!
//! `lockstepd` is found beside this crate's binary in the target
//! directory; `cargo test --workspace` (make test) builds it. The main
//! flow also runs with the inventory on PostgreSQL (`--db`), on a
//! throw-away server (tests/support/pg.rs).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod common;

use common::{
    fleet, fleet_bin, fleet_cmd, fleet_on, init, init_on, lockstep_bin, lockstepd_bin, ok, start,
    start_bare, start_env, stderr, submit, Node,
};
use lockstep_fleet::session::{Session, SessionError};
use lockstep_identity::{NodeId, SigningKey};
use lockstep_protocol::admin::AdminAction;

#[path = "support/pg.rs"]
mod pg;

fn list(dir: &Path) -> Vec<serde_json::Value> {
    list_on(dir, None)
}

fn list_on(dir: &Path, db: Option<&str>) -> Vec<serde_json::Value> {
    serde_json::from_str(&ok(&fleet_on(dir, db, &["list", "--json"]))).unwrap()
}

/// A copy of the repository's kernel bundle.
fn bundle_copy(to: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernels-spirv/src/kernels");
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name == "manifest.json" || name.ends_with(".spv") {
            std::fs::copy(&p, to.join(&name)).unwrap();
        }
    }
    to.to_path_buf()
}

/// The node's info as it reports it in a fresh session (no command).
fn info(node: &Node) -> lockstep_protocol::admin::NodeInfo {
    let id = NodeId::parse(&node.key).unwrap();
    smol::block_on(Session::open(node.addr.parse().unwrap(), Some(&id)))
        .unwrap()
        .info
}

#[test]
fn enrollment_in_the_window_records_the_node_and_pins_the_operator() {
    let tmp = tempfile::tempdir().unwrap();
    let node = start(&tmp.path().join("node"), &[]);
    let f = tmp.path().join("fleet");
    let op = init(&f);
    assert_eq!(
        std::fs::metadata(f.join("operator.key"))
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
            .unwrap(),
        0o600
    );
    let out = ok(&fleet(&f, &["enroll", "--allow-file-key", &node.addr]));
    assert_eq!(out.trim(), node.key);
    let nodes = list(&f);
    assert_eq!(nodes.len(), 1);
    let n = &nodes[0];
    assert_eq!(n["node_id"], node.key.as_str());
    assert_eq!(n["address"], node.addr.as_str());
    assert_eq!(n["device_fingerprint"].as_str().unwrap().len(), 64);
    assert_eq!(n["bundle_id"].as_str().unwrap().len(), 64);
    assert_eq!(n["certified"], false);
    assert!(n["image_version"].as_str().unwrap().contains("lockstepd"));
    assert!(n["enrolled_at"].as_str().unwrap().ends_with('Z'));
    // The node now trusts this operator (first enrolment, pinned).
    assert_eq!(info(&node).trusted_operators, vec![op.public().to_base64()]);
    let pinned = std::fs::read_to_string(tmp.path().join("node/operators")).unwrap();
    assert!(pinned.contains(&op.public().to_base64()), "{pinned}");
    let shown = ok(&fleet(&f, &["show", &node.key[..12]]));
    assert!(shown.contains(&node.addr));

    // A second operator is refused by the node now, and records nothing.
    let other = tmp.path().join("other");
    init(&other);
    let out = fleet(&other, &["enroll", "--allow-file-key", &node.addr]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not trusted"), "{}", stderr(&out));
    assert!(list(&other).is_empty());

    // Revoked nodes are marked and skipped by --all.
    ok(&fleet(&f, &["revoke", &node.key]));
    assert!(list(&f)[0]["revoked_at"].is_string());
}

#[test]
fn an_impostor_fails_and_nothing_is_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let real = start(&tmp.path().join("real"), &[]);
    let impostor = start(&tmp.path().join("impostor"), &[]);
    let f = tmp.path().join("fleet");
    init(&f);
    // The operator expects the real node's key, but the impostor answers
    // at that address.
    let out = fleet(
        &f,
        &[
            "enroll",
            "--allow-file-key",
            &impostor.addr,
            "--node-key",
            &real.key,
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("not the pinned key"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(list(&f).is_empty());
    // Nor did the impostor learn to trust the operator.
    assert!(info(&impostor).trusted_operators.is_empty());
}

#[test]
fn a_replayed_admin_command_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let node = start(&tmp.path().join("node"), &[]);
    let op = SigningKey::generate();
    let addr = node.addr.parse().unwrap();
    let id = NodeId::parse(&node.key).unwrap();
    let command = smol::block_on(async {
        let s = Session::open(addr, Some(&id)).await.unwrap();
        let c = s.sign(&op, AdminAction::Enroll, None);
        s.send(c.clone(), &[]).await.unwrap();
        c
    });
    let err = smol::block_on(async {
        let s = Session::open(addr, Some(&id)).await.unwrap();
        s.send(command, &[]).await.unwrap_err()
    });
    match err {
        SessionError::Refused { message, .. } => assert!(message.contains("nonce"), "{message}"),
        other => panic!("expected a refusal, got {other}"),
    }
}

#[test]
fn configured_operators_are_the_only_ones_trusted() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("fleet");
    let op = init(&f);
    let config = tmp.path().join("lockstepd.toml");
    std::fs::write(
        &config,
        format!("trusted_operators = [\"{}\"]\n", op.public()),
    )
    .unwrap();
    let node = start(
        &tmp.path().join("node"),
        &["--config", config.to_str().unwrap()],
    );
    // Not the first-come operator: the image's.
    let other = tmp.path().join("other");
    init(&other);
    let out = fleet(&other, &["enroll", "--allow-file-key", &node.addr]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    ok(&fleet(&f, &["enroll", "--allow-file-key", &node.addr]));
}

#[test]
fn bad_bundles_are_refused_and_the_node_keeps_its_old_one() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("node");
    let mut node = start(&state, &[]);
    let f = tmp.path().join("fleet");
    init(&f);
    ok(&fleet(&f, &["enroll", "--allow-file-key", &node.addr]));
    let original = info(&node).bundle_id;
    let key = node.key.clone();
    let push = |dir: &Path| {
        fleet(
            &f,
            &["bundle", "push", &key, "--bundle", dir.to_str().unwrap()],
        )
    };
    let refused = |out: Output, what: &str| {
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(stderr(&out).contains(what), "{what}: {}", stderr(&out));
    };

    // Unsigned.
    let unsigned = bundle_copy(&tmp.path().join("unsigned"));
    refused(push(&unsigned), "unsigned");

    // Tampered after signing: one byte of one binary.
    let tampered = bundle_copy(&tmp.path().join("tampered"));
    ok(&fleet(
        &f,
        &[
            "bundle",
            "sign",
            tampered.to_str().unwrap(),
            "--version",
            "5",
        ],
    ));
    let spv = std::fs::read_dir(&tampered)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "spv"))
        .unwrap();
    let mut bytes = std::fs::read(&spv).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&spv, bytes).unwrap();
    refused(push(&tampered), "SHA-256");

    // Signed by an operator the node does not trust.
    let stranger = tmp.path().join("stranger");
    init(&stranger);
    let foreign = bundle_copy(&tmp.path().join("foreign"));
    ok(&fleet(
        &stranger,
        &[
            "bundle",
            "sign",
            foreign.to_str().unwrap(),
            "--version",
            "9",
        ],
    ));
    refused(push(&foreign), "not signed by a key this node trusts");

    assert_eq!(info(&node).bundle_id, original);
    assert_eq!(info(&node).bundle_version, 0);

    // A good release switches; an older one is then a rollback.
    let good = bundle_copy(&tmp.path().join("good"));
    ok(&fleet(
        &f,
        &["bundle", "sign", good.to_str().unwrap(), "--version", "3"],
    ));
    let out = push(&good);
    assert!(stderr(&ok_status(out)).contains("switched"));
    assert_eq!(info(&node).bundle_version, 3);
    let old = bundle_copy(&tmp.path().join("old"));
    ok(&fleet(
        &f,
        &["bundle", "sign", old.to_str().unwrap(), "--version", "2"],
    ));
    refused(push(&old), "rollback refused");
    assert_eq!(info(&node).bundle_version, 3);
    assert_eq!(list(&f)[0]["bundle_version"], 3);
    // The same release again (a rollout run twice) succeeds and changes
    // nothing.
    let out = push(&good);
    assert!(stderr(&ok_status(out)).contains("already running"));
    assert_eq!(info(&node).bundle_version, 3);
    // After every refusal the node still serves jobs.
    submit(&node, &tmp.path().join("r.json"), &tmp.path().join("out"));

    // After a restart the node loads the pushed bundle again (verified).
    drop(node);
    node = start(&state, &[]);
    let after = info(&node);
    assert_eq!(after.bundle_version, 3);
    // It listens on a new port: enrolling again records the address (the
    // node still trusts this operator).
    ok(&fleet(&f, &["enroll", "--allow-file-key", &node.addr]));
    refused(push(&old), "rollback refused");
}

fn ok_status(out: Output) -> Output {
    assert!(out.status.success(), "{}", stderr(&out));
    out
}

#[test]
fn a_push_to_five_nodes_reports_each_outcome() {
    push_to_five_nodes(None);
}

/// The same flow with the inventory on PostgreSQL.
#[test]
fn a_push_to_five_nodes_reports_each_outcome_on_postgres() {
    let db = pg::database_url();
    push_to_five_nodes(Some(&db));
    // Only the inventory moved: no SQLite file in the fleet directory.
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("fleet");
    init_on(&f, Some(&pg::database_url()));
    assert!(f.join("operator.key").exists());
    assert!(!f.join("inventory.sqlite3").exists());
}

/// Five nodes enrolled at once, a signed bundle pushed to all while one is
/// down; the inventory in `db` (None: SQLite).
fn push_to_five_nodes(db: Option<&str>) {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("fleet");
    init_on(&f, db);
    let mut nodes: Vec<Node> = (0..5)
        .map(|i| start(&tmp.path().join(format!("node{i}")), &[]))
        .collect();
    // Enroll all five at once: concurrent invocations share the inventory.
    let children: Vec<_> = nodes
        .iter()
        .map(|n| {
            fleet_cmd(&f, db)
                .args(["enroll", "--allow-file-key", &n.addr])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert_eq!(list_on(&f, db).len(), 5);
    // One node goes down before the push.
    let down = nodes.remove(2);
    let down_key = down.key.clone();
    drop(down);
    let bundle = bundle_copy(&tmp.path().join("bundle"));
    ok(&fleet_on(
        &f,
        db,
        &["bundle", "sign", bundle.to_str().unwrap()],
    ));
    // LOCKSTEP_FLEET_DB is --db's default.
    let mut push = fleet_cmd(&f, None);
    if let Some(db) = db {
        push.env("LOCKSTEP_FLEET_DB", db);
    }
    let out = push.args(["bundle", "push", "--all"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    for n in &nodes {
        assert!(
            err.lines()
                .any(|l| l.contains(&n.key) && l.contains(" ok: ")),
            "{err}"
        );
    }
    assert!(
        err.lines()
            .any(|l| l.contains(&down_key) && l.contains("FAILED")),
        "{err}"
    );
    assert!(err.contains("1 of 5 node(s) failed"), "{err}");
    assert!(err.contains("4 of 5 node(s) switched"), "{err}");
    let versions: Vec<u64> = list_on(&f, db)
        .iter()
        .map(|n| n["bundle_version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions.iter().filter(|&&v| v == 1).count(), 4);
}

#[test]
fn registry_records_are_signed_by_the_operator() {
    let tmp = tempfile::tempdir().unwrap();
    let node = start(&tmp.path().join("node"), &[]);
    let f = tmp.path().join("fleet");
    let op = init(&f);
    ok(&fleet(&f, &["enroll", "--allow-file-key", &node.addr]));
    let out = ok(&fleet(&f, &["export-registry", "--format", "json"]));
    let records: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r["record"]["node"], node.key.as_str());
    assert_eq!(r["record"]["operator"], op.public().to_base64().as_str());
    assert!(r["record"]["certification_report_sha256"].is_null());
    // The stock minisign verifies the record with the operator's key.
    let file = tmp.path().join("record.json");
    std::fs::write(&file, r["canonical"].as_str().unwrap()).unwrap();
    std::fs::write(
        tmp.path().join("record.json.minisig"),
        r["signature"].as_str().unwrap(),
    )
    .unwrap();
    let v = Command::new("minisign")
        .arg("-Vm")
        .arg(&file)
        .args(["-P", &op.public().to_base64()])
        .output()
        .unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
}

#[test]
fn usage_errors_exit_2_with_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let out = fleet(tmp.path(), &["list"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("lockstep-fleet init"));
    assert_eq!(stderr(&out).lines().count(), 1);
    // An encrypted key with no password and no terminal: a clear error.
    let enc = fleet(&tmp.path().join("enc"), &["init"]);
    assert_eq!(enc.status.code(), Some(2));
    assert!(
        stderr(&enc).contains("LOCKSTEP_KEY_PASSWORD"),
        "{}",
        stderr(&enc)
    );
}

#[test]
fn db_urls_are_checked_with_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let one_line = |out: &Output, code: i32, what: &str| {
        assert_eq!(out.status.code(), Some(code), "{}", stderr(out));
        assert!(stderr(out).contains(what), "{what}: {}", stderr(out));
        assert_eq!(stderr(out).lines().count(), 1, "{}", stderr(out));
    };
    let on = |db: &str, args: &[&str]| fleet_on(tmp.path(), Some(db), args);
    one_line(&on("mysql://u@127.0.0.1/f", &["list"]), 2, "postgres://");
    one_line(
        &on("postgres://u@db.example/f", &["init", "--unencrypted"]),
        2,
        "not loopback",
    );
    one_line(
        &on("postgres://u@127.0.0.1/f?sslmode=require", &["list"]),
        2,
        "TLS",
    );
    // Nothing listens there: the machine's problem (1), said clearly, and
    // `init` leaves no operator key behind.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nowhere = format!("postgres://u@127.0.0.1:{port}/f");
    one_line(
        &on(&nowhere, &["init", "--unencrypted"]),
        1,
        "cannot connect to PostgreSQL",
    );
    assert!(!tmp.path().join("operator.key").exists());
    // An empty database: not initialised yet.
    one_line(
        &on(&pg::database_url(), &["list"]),
        2,
        "lockstep-fleet init --db",
    );
}

fn verify(receipt: &Path, fleet_dir: &Path) -> Output {
    Command::new(lockstep_bin())
        .arg("verify-receipt")
        .arg(receipt)
        .arg("--fleet")
        .arg(fleet_dir)
        .output()
        .unwrap()
}

#[test]
fn receipts_from_revoked_or_unknown_nodes_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let node = start(&tmp.path().join("node"), &[]);
    let f = tmp.path().join("fleet");
    init(&f);
    ok(&fleet(&f, &["enroll", "--allow-file-key", &node.addr]));
    let before = tmp.path().join("before.json");
    submit(&node, &before, &tmp.path().join("out1"));
    let out = ok(&verify(&before, &f));
    assert!(out.contains("enrolled in the fleet"), "{out}");

    // A fleet that never enrolled the node: unknown.
    let other = tmp.path().join("other");
    init(&other);
    let o = verify(&before, &other);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("unknown to the fleet"),
        "{}",
        stderr(&o)
    );

    // Times have one-second resolution, and a receipt from the very second
    // of the revocation counts as after it.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    ok(&fleet(&f, &["revoke", &node.key]));
    // Signed before the revocation: verified, with a note.
    let out = ok(&verify(&before, &f));
    assert!(out.contains("was revoked"), "{out}");
    // Signed after it: reported as from a revoked node.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let after = tmp.path().join("after.json");
    submit(&node, &after, &tmp.path().join("out2"));
    let o = verify(&after, &f);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("from a revoked node"), "{}", stderr(&o));
}

/// The default: an encrypted operator key (minisign's own scrypt cost),
/// its password from the environment.
#[test]
fn an_encrypted_operator_key_needs_its_password() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("fleet");
    let with = |pw: &str, args: &[&str]| {
        Command::new(fleet_bin())
            .arg("--dir")
            .arg(&f)
            .args(args)
            .env("LOCKSTEP_KEY_PASSWORD", pw)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    ok(&with("hunter2", &["init"]));
    let text = std::fs::read_to_string(f.join("operator.key")).unwrap();
    assert!(text.starts_with("untrusted comment: minisign encrypted secret key"));
    assert!(SigningKey::read_file(&f.join("operator.key"), None).is_err());
    let bundle = bundle_copy(&tmp.path().join("bundle"));
    let b = bundle.to_str().unwrap();
    let wrong = with("hunter3", &["bundle", "sign", b]);
    assert_eq!(wrong.status.code(), Some(2));
    assert!(
        stderr(&wrong).contains("wrong password"),
        "{}",
        stderr(&wrong)
    );
    ok(&with("hunter2", &["bundle", "sign", b]));
    let public = NodeId::parse(&std::fs::read_to_string(f.join("operator.pub")).unwrap()).unwrap();
    let sig = lockstep_identity::Signature::parse(
        &std::fs::read_to_string(bundle.join("release.json.minisig")).unwrap(),
    )
    .unwrap();
    sig.verify(
        &public,
        &std::fs::read(bundle.join("release.json")).unwrap(),
    )
    .unwrap();
}

/// A fake node whose TLS key is `tls` but which answers the enrollment
/// challenge as `claims`, signing with `signs`: the shapes an impostor
/// takes when it does not hold the key it claims.
fn fake_node(
    tls: lockstep_identity::DeviceKey,
    claims: String,
    signs: lockstep_identity::DeviceKey,
) -> std::net::SocketAddr {
    use lockstep_protocol::admin::{challenge_statement, AdminChallenge, NodeInfo};
    use lockstep_protocol::{Frame, Message};
    use lockstep_transport::frames::{write_frame, FrameReader};
    let endpoint =
        lockstep_transport::server_endpoint(&tls, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = endpoint.local_addr().unwrap();
    std::thread::spawn(move || {
        smol::block_on(async move {
            while let Some(incoming) = endpoint.accept().await {
                let Ok(connection) = incoming.await else {
                    continue;
                };
                while let Ok((mut send, recv)) = connection.accept_bi().await {
                    let mut reader = FrameReader::new(recv);
                    let Ok(Some(Frame::Control(p))) = reader.next().await else {
                        continue;
                    };
                    let Ok(Message::AdminHello(hello)) = Message::decode(&p) else {
                        continue;
                    };
                    let info = NodeInfo {
                        node_id: claims.clone(),
                        device_fingerprint: "0".repeat(64),
                        device: "fake".into(),
                        bundle_id: "0".repeat(64),
                        bundle_version: 0,
                        image_version: "fake".into(),
                        certified: false,
                        certification_report_sha256: None,
                        trusted_operators: vec![],
                        key_protection: lockstep_identity::KeyProtection::File,
                        slot: None,
                        chain_address: String::new(),
                    };
                    let nonce = [7u8; 32];
                    let signature = signs
                        .sign_minisign(&challenge_statement(&hello.challenge, &info, &nonce), "x")
                        .to_file();
                    let answer = Message::AdminChallenge(AdminChallenge {
                        info,
                        nonce,
                        signature,
                    });
                    let _ = write_frame(&mut send, &answer.to_frame()).await;
                    let _ = reader.next().await;
                }
            }
        })
    });
    addr
}

#[test]
fn a_node_that_cannot_prove_the_key_it_claims_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let key = |name: &str| {
        lockstep_identity::DeviceKey::load_or_create(&tmp.path().join(name))
            .unwrap()
            .0
    };
    let f = tmp.path().join("fleet");
    init(&f);
    // TLS key A, claims to be B and signs as B (B's key was stolen, or
    // the answer is relayed from B): the claim is not the handshake's key.
    let b = key("b");
    let relay = fake_node(key("a"), b.node_id().to_string(), key("b"));
    let out = fleet(&f, &["enroll", "--allow-file-key", &relay.to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("impostor"), "{}", stderr(&out));
    assert!(stderr(&out).contains("claims node id"), "{}", stderr(&out));
    // TLS key A, claims A, but signs the challenge with C.
    let a2 = key("a2");
    let claim = a2.node_id().to_string();
    let forger = fake_node(a2, claim, key("c"));
    let out = fleet(&f, &["enroll", "--allow-file-key", &forger.to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("challenge signature"),
        "{}",
        stderr(&out)
    );
    assert!(list(&f).is_empty());
}

#[test]
fn an_unprovisioned_node_without_a_window_refuses_enrolment() {
    let tmp = tempfile::tempdir().unwrap();
    let node = start_bare(&tmp.path().join("node"), &[]);
    let f = tmp.path().join("fleet");
    init(&f);
    let out = fleet(&f, &["enroll", "--allow-file-key", &node.addr]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("unprovisioned"), "{err}");
    assert!(err.contains("--enroll-window-s"), "{err}");
    assert!(err.contains("provision-image"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(list(&f).is_empty());
    assert!(info(&node).trusted_operators.is_empty());
    assert!(!tmp.path().join("node/operators").exists());
}

#[test]
fn the_enrolment_window_closes() {
    let tmp = tempfile::tempdir().unwrap();
    let node = start_bare(&tmp.path().join("node"), &["--enroll-window-s", "1"]);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let f = tmp.path().join("fleet");
    init(&f);
    let out = fleet(&f, &["enroll", "--allow-file-key", &node.addr]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("window") && err.contains("closed"), "{err}");
    assert!(info(&node).trusted_operators.is_empty());
    // Out-of-range windows are usage errors.
    for bad in ["0", "86401"] {
        let o = Command::new(lockstepd_bin())
            .args([
                "--file-key",
                "--listen",
                "127.0.0.1:0",
                "--backend",
                "cpu",
                "--state",
            ])
            .arg(tmp.path().join("other"))
            .args(["--enroll-window-s", bad])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{bad}");
    }
}

/// Whoever can write the ESP (the provisioning file) or the config cannot
/// replace the operators once they are pinned in the state partition.
#[test]
fn pinned_operators_win_over_a_replaced_provisioning_file() {
    let tmp = tempfile::tempdir().unwrap();
    let a_dir = tmp.path().join("a");
    let a = init(&a_dir);
    let b_dir = tmp.path().join("b");
    let b = init(&b_dir);
    let provision = tmp.path().join("provision.toml");
    let names = |keys: &[&SigningKey]| {
        let list: Vec<String> = keys.iter().map(|k| format!("\"{}\"", k.public())).collect();
        format!("trusted_operators = [{}]\n", list.join(", "))
    };
    std::fs::write(&provision, names(&[&a])).unwrap();
    let state = tmp.path().join("node");
    let flags = ["--provision", provision.to_str().unwrap()];
    let node = start_bare(&state, &flags);
    assert_eq!(info(&node).trusted_operators, vec![a.public().to_base64()]);
    drop(node);
    // The ESP now names another operator (and even the window flag is
    // given): the pinned set wins.
    std::fs::write(&provision, names(&[&b])).unwrap();
    let node = start_bare(
        &state,
        &[
            "--provision",
            provision.to_str().unwrap(),
            "--enroll-window-s",
            "600",
        ],
    );
    assert_eq!(info(&node).trusted_operators, vec![a.public().to_base64()]);
    let out = fleet(&b_dir, &["enroll", "--allow-file-key", &node.addr]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not trusted"), "{}", stderr(&out));
    ok(&fleet(&a_dir, &["enroll", "--allow-file-key", &node.addr]));
}

/// `SetOperators` (lockstep-fleet operators set) changes the pinned set
/// when a current operator signs it, and only then.
#[test]
fn operators_set_needs_a_current_operator() {
    let tmp = tempfile::tempdir().unwrap();
    let a_dir = tmp.path().join("a");
    let a = init(&a_dir);
    let b_dir = tmp.path().join("b");
    let b = init(&b_dir);
    let config = tmp.path().join("lockstepd.toml");
    std::fs::write(
        &config,
        format!("trusted_operators = [\"{}\"]\n", a.public()),
    )
    .unwrap();
    let state = tmp.path().join("node");
    let node = start_bare(&state, &["--config", config.to_str().unwrap()]);
    let addr = node.addr.parse().unwrap();
    let id = NodeId::parse(&node.key).unwrap();
    let set = |signer: &SigningKey, keys: Vec<String>| {
        smol::block_on(async {
            let s = Session::open(addr, Some(&id)).await.unwrap();
            let c = s.sign(signer, AdminAction::SetOperators { keys }, None);
            s.send(c, &[]).await
        })
    };
    let refused = |r: Result<_, SessionError>, what: &str| match r {
        Err(SessionError::Refused { message, .. }) => {
            assert!(message.contains(what), "{what}: {message}")
        }
        Err(other) => panic!("expected a refusal, got {other}"),
        Ok(_) => panic!("expected a refusal ({what})"),
    };
    // Not an operator of this node: refused, nothing changes.
    refused(set(&b, vec![b.public().to_base64()]), "not trusted");
    refused(set(&a, vec![]), "1 to");
    refused(
        set(&a, vec!["nonsense".into()]),
        "not a minisign public key",
    );
    assert_eq!(info(&node).trusted_operators, vec![a.public().to_base64()]);

    // A adds B, through the fleet tool.
    ok(&fleet(&a_dir, &["enroll", "--allow-file-key", &node.addr]));
    let b_pub = b_dir.join("operator.pub");
    let out = fleet(
        &a_dir,
        &[
            "operators",
            "set",
            &node.key,
            &a.public().to_base64(),
            b_pub.to_str().unwrap(),
        ],
    );
    assert!(stderr(&ok_status(out)).contains("2 key(s)"));
    ok(&fleet(&b_dir, &["enroll", "--allow-file-key", &node.addr]));

    // A release signed by A is active: a set without A would orphan it.
    let bundle = bundle_copy(&tmp.path().join("bundle"));
    ok(&fleet(
        &a_dir,
        &["bundle", "sign", bundle.to_str().unwrap(), "--version", "1"],
    ));
    ok(&fleet(
        &a_dir,
        &[
            "bundle",
            "push",
            &node.key,
            "--bundle",
            bundle.to_str().unwrap(),
        ],
    ));
    refused(set(&b, vec![b.public().to_base64()]), "active bundle");
    // B re-releases it, then hands the node over to itself alone.
    let again = bundle_copy(&tmp.path().join("again"));
    ok(&fleet(
        &b_dir,
        &["bundle", "sign", again.to_str().unwrap(), "--version", "2"],
    ));
    ok(&fleet(
        &b_dir,
        &[
            "bundle",
            "push",
            &node.key,
            "--bundle",
            again.to_str().unwrap(),
        ],
    ));
    set(&b, vec![b.public().to_base64()]).unwrap();
    assert_eq!(info(&node).trusted_operators, vec![b.public().to_base64()]);
    refused(set(&a, vec![a.public().to_base64()]), "not trusted");

    // After a restart with the config still naming A: B, pinned, and the
    // bundle B signed still loads.
    drop(node);
    let node = start_bare(&state, &["--config", config.to_str().unwrap()]);
    let after = info(&node);
    assert_eq!(after.trusted_operators, vec![b.public().to_base64()]);
    assert_eq!(after.bundle_version, 2);
}

/// `lockstepd new-identity --provision FILE` into a pipe: the sealed JSON
/// (stdout) and the node id it printed (stderr).
fn new_identity(provision: &Path) -> (Vec<u8>, String) {
    let o = Command::new(lockstepd_bin())
        .args(["new-identity", "--provision"])
        .arg(provision)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{err}");
    let id = err
        .lines()
        .find_map(|l| l.strip_prefix("lockstepd: new identity "))
        .unwrap_or_else(|| panic!("no node id in {err:?}"))
        .trim()
        .to_string();
    (o.stdout, id)
}

/// A node started with `--sealed-identity` (the credential systemd would
/// decrypt from the TPM): its id is the sealed key's, its operators are the
/// sealed set whatever the provisioning file says, a signed `SetOperators`
/// survives a restart through the chain, and a tampered chain entry is
/// refused at replay.
#[test]
fn a_sealed_identity_fixes_the_key_and_the_first_operators() {
    let tmp = tempfile::tempdir().unwrap();
    let a_dir = tmp.path().join("a");
    let a = init(&a_dir);
    let b_dir = tmp.path().join("b");
    let b = init(&b_dir);
    let c = init(&tmp.path().join("c"));
    let provision = tmp.path().join("provision.toml");
    std::fs::write(
        &provision,
        format!("trusted_operators = [\"{}\"]\n", a.public()),
    )
    .unwrap();
    let (json, printed) = new_identity(&provision);
    let text = String::from_utf8(json.clone()).unwrap();
    assert!(
        text.starts_with("{\"format\":\"lockstep-sealed-identity/1\",\"operators\":["),
        "{text}"
    );
    let creds = tmp.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(creds.join("lockstep-identity"), &json).unwrap();
    // The ESP now names another operator: ignored.
    std::fs::write(
        &provision,
        format!("trusted_operators = [\"{}\"]\n", c.public()),
    )
    .unwrap();
    let state = tmp.path().join("node");
    // A sealed key is attested at enrolment: the node's TPM is a software
    // one here.
    let tpm = lockstep_tpm::testing::Swtpm::start();
    let tcti = tpm.tcti();
    let flags = [
        "--sealed-identity",
        "lockstep-identity",
        "--provision",
        provision.to_str().unwrap(),
        "--tpm-tcti",
        &tcti,
    ];
    let node = start_env(&state, &flags, Some(&creds));
    assert_eq!(node.key, printed);
    let first = info(&node);
    assert_eq!(first.trusted_operators, vec![a.public().to_base64()]);
    assert_eq!(
        first.key_protection,
        lockstep_identity::KeyProtection::TpmSealed
    );
    assert!(!state.join("device.key").exists());
    // Enrolment attests the node and records the protection.
    let roots = tpm.ek_roots_pem();
    ok(&fleet(&a_dir, &["trust-ek-roots", roots.to_str().unwrap()]));
    let manifest = tmp.path().join("image.manifest.json");
    let image =
        serde_json::json!({"name": "test-image", "tpm_pcr11_sha256": hex::encode(tpm.pcr(11))});
    std::fs::write(&manifest, image.to_string()).unwrap();
    ok(&fleet(
        &a_dir,
        &["accept-image", manifest.to_str().unwrap()],
    ));
    ok(&fleet(&a_dir, &["enroll", &node.addr]));
    assert_eq!(list(&a_dir)[0]["key_protection"], "tpm-sealed");
    assert_eq!(list(&a_dir)[0]["attested_release"], "test-image");

    // A (sealed) adds B; the change survives a restart through the chain.
    let b_pub = b_dir.join("operator.pub");
    ok_status(fleet(
        &a_dir,
        &[
            "operators",
            "set",
            &node.key,
            &a.public().to_base64(),
            b_pub.to_str().unwrap(),
        ],
    ));
    let mut both = vec![a.public().to_base64(), b.public().to_base64()];
    both.sort();
    assert_eq!(info(&node).trusted_operators, both);
    drop(node);
    let chain = state.join("operators.chain");
    assert!(chain.exists());
    let node = start_env(&state, &flags, Some(&creds));
    assert_eq!(node.key, printed);
    assert_eq!(info(&node).trusted_operators, both);
    drop(node);

    // A tampered entry (the key set edited after signing): the replay
    // stops there and the node serves with the sealed set.
    let original = std::fs::read_to_string(&chain).unwrap();
    let b_key = b.public().to_base64();
    let tampered = original.replace(&b_key, &c.public().to_base64());
    assert_ne!(tampered, original);
    std::fs::write(&chain, tampered).unwrap();
    let node = start_env(&state, &flags, Some(&creds));
    assert_eq!(info(&node).trusted_operators, vec![a.public().to_base64()]);
    drop(node);
    // Restored, it replays again.
    std::fs::write(&chain, original).unwrap();
    let node = start_env(&state, &flags, Some(&creds));
    assert_eq!(info(&node).trusted_operators, both);
}

/// kill -9 of a real lockstepd at different moments of a push: after the
/// restart it runs the old release or the new one, each with its own
/// version, never the image's bundle with version 0, and rollbacks stay
/// refused.
#[test]
fn a_node_killed_mid_push_restarts_with_one_consistent_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("node");
    let mut node = start(&state, &[]);
    let f = tmp.path().join("fleet");
    init(&f);
    ok(&fleet(&f, &["enroll", "--allow-file-key", &node.addr]));
    let bundle = bundle_copy(&tmp.path().join("bundle"));
    let b = bundle.to_str().unwrap().to_string();
    ok(&fleet(&f, &["bundle", "sign", &b, "--version", "1"]));
    ok(&fleet(&f, &["bundle", "push", &node.key, "--bundle", &b]));
    let mut current = 1u64;
    for delay_ms in [0u64, 20, 60, 120, 250, 500] {
        let next = current + 1;
        ok(&fleet(
            &f,
            &["bundle", "sign", &b, "--version", &next.to_string()],
        ));
        let push = Command::new(fleet_bin())
            .arg("--dir")
            .arg(&f)
            .args(["bundle", "push", &node.key, "--bundle", &b])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        drop(node); // SIGKILL
        let _ = push.wait_with_output();
        node = start(&state, &[]);
        let after = info(&node);
        assert!(
            after.bundle_version == current || after.bundle_version == next,
            "killed after {delay_ms} ms: version {} (expected {current} or {next})",
            after.bundle_version
        );
        current = after.bundle_version;
        // The new port goes to the inventory.
        ok(&fleet(&f, &["enroll", "--allow-file-key", &node.addr]));
    }
    // Release 1 is always a rollback now; the next release still goes in.
    let old = bundle_copy(&tmp.path().join("old"));
    ok(&fleet(
        &f,
        &["bundle", "sign", old.to_str().unwrap(), "--version", "1"],
    ));
    let out = fleet(
        &f,
        &[
            "bundle",
            "push",
            &node.key,
            "--bundle",
            old.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("rollback refused"),
        "{}",
        stderr(&out)
    );
    ok(&fleet(
        &f,
        &[
            "bundle",
            "sign",
            &b,
            "--version",
            &(current + 1).to_string(),
        ],
    ));
    ok(&fleet(&f, &["bundle", "push", &node.key, "--bundle", &b]));
    assert_eq!(info(&node).bundle_version, current + 1);
    submit(&node, &tmp.path().join("r.json"), &tmp.path().join("out"));
}
