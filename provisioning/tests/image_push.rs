//! `lockstep-fleet image push` against fake A/B nodes on loopback: each
//! answers the admin challenge with a `NodeInfo` carrying a `SlotInfo`,
//! accepts an enrolment, and for a `PushImage` checks the streamed slot
//! parts against the signed metadata (per-artifact byte counts, hashes,
//! chunks never empty and never spanning two artifacts), replies, then
//! "reboots": its next sessions report the new image in slot b, or a
//! rollback to slot a.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use lockstep_identity::DeviceKey;
use lockstep_protocol::admin::{
    challenge_statement, AdminAction, AdminChallenge, AdminReply, AdminStatement, NodeInfo,
    SlotInfo,
};
use lockstep_protocol::{Frame, Message};
use lockstep_transport::frames::{write_frame, FrameReader};
use lockstep_update::{ArtifactCheck, Slot, UpdateMetadata};
use sha2::{Digest, Sha256};

fn fleet(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lockstep-fleet"))
        .arg("--dir")
        .arg(dir)
        .args(args)
        .env_remove("LOCKSTEP_KEY_PASSWORD")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// What the fake node does after it accepted an update.
#[derive(Clone, Copy, PartialEq, Eq)]
enum After {
    Healthy,
    RollBack,
    /// Refuses the update after receiving it.
    Refuse,
    /// Accepts it but never comes back on the new image.
    Hang,
    /// Not an A/B image: reports no slot.
    NoSlot,
}

#[derive(Default)]
struct Seen {
    /// Admin sessions opened (hellos answered).
    sessions: usize,
    /// Bytes received per artifact, in order: uki, root, verity.
    received: Vec<u64>,
    pushes: usize,
    metadata: Option<UpdateMetadata>,
}

struct FakeNode {
    addr: String,
    seen: Arc<Mutex<Seen>>,
}

fn info(id: &str, image_version: &str, slot: Option<SlotInfo>) -> NodeInfo {
    NodeInfo {
        node_id: id.to_string(),
        device_fingerprint: "0".repeat(64),
        device: "fake".into(),
        bundle_id: "0".repeat(64),
        bundle_version: 0,
        image_version: image_version.into(),
        certified: false,
        certification_report_sha256: None,
        trusted_operators: vec![],
        key_protection: lockstep_identity::KeyProtection::File,
        slot,
        chain_address: String::new(),
    }
}

fn reply(ok: bool, message: String) -> Message {
    Message::AdminReply(AdminReply {
        ok,
        message,
        bundle_id: "0".repeat(64),
        bundle_version: 0,
        certified: false,
        certification_report_sha256: None,
        registration: None,
        metrics: None,
    })
}

/// Receives the three slot parts after a PushImage: every chunk checked
/// against the signed metadata.
async fn receive_parts(
    reader: &mut FrameReader,
    meta: &UpdateMetadata,
    seen: &Mutex<Seen>,
) -> Result<(), String> {
    for (i, slot) in Slot::ALL.into_iter().enumerate() {
        let mut check = ArtifactCheck::new(meta.artifact(slot));
        let want = meta.artifact(slot).bytes;
        let mut got = 0u64;
        while got < want {
            let chunk = match reader.next().await.map_err(|e| e.to_string())? {
                Some(Frame::Data(d)) => d,
                other => return Err(format!("{slot}: expected data, got {other:?}")),
            };
            if chunk.is_empty() {
                return Err(format!("{slot}: an empty chunk"));
            }
            if got + chunk.len() as u64 > want {
                return Err(format!("{slot}: a chunk spans past the artifact"));
            }
            if chunk.len() > lockstep_limits::WIRE_CHUNK_BYTES {
                return Err(format!("{slot}: a chunk over WIRE_CHUNK_BYTES"));
            }
            check.update(&chunk).map_err(|e| e.to_string())?;
            got += chunk.len() as u64;
            seen.lock().unwrap().received[i] = got;
        }
        check.finish().map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn fake_node(dir: &Path, after: After) -> FakeNode {
    let (key, _) = DeviceKey::load_or_create(dir).unwrap();
    let endpoint =
        lockstep_transport::server_endpoint(&key, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = endpoint.local_addr().unwrap().to_string();
    let state = Arc::new(Mutex::new(info(
        &key.node_id().to_string(),
        "0.1.0-old",
        (after != After::NoSlot).then(|| SlotInfo {
            slot: "a".into(),
            variant: "lavapipe".into(),
            update_floor: 0,
            rolled_back_from: None,
            other_version: None,
        }),
    )));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let shared = seen.clone();
    let key = Arc::new(key);
    std::thread::spawn(move || {
        smol::block_on(async move {
            // Each connection on its own task, as lockstepd does: a fleet
            // process that exits without closing its connection does not
            // hold up the next one.
            while let Some(incoming) = endpoint.accept().await {
                let (key, state, seen) = (key.clone(), state.clone(), shared.clone());
                smol::spawn(async move {
                    if let Ok(connection) = incoming.await {
                        serve(connection, &key, &state, &seen, after).await;
                    }
                })
                .detach();
            }
        })
    });
    FakeNode { addr, seen }
}

async fn serve(
    connection: quinn::Connection,
    key: &DeviceKey,
    state: &Mutex<NodeInfo>,
    seen: &Mutex<Seen>,
    after: After,
) {
    while let Ok((mut send, recv)) = connection.accept_bi().await {
        let mut reader = FrameReader::new(recv);
        let Ok(Some(Frame::Control(p))) = reader.next().await else {
            continue;
        };
        let Ok(Message::AdminHello(hello)) = Message::decode(&p) else {
            continue;
        };
        seen.lock().unwrap().sessions += 1;
        let info = state.lock().unwrap().clone();
        let nonce = [7u8; 32];
        let signature = key
            .sign_minisign(&challenge_statement(&hello.challenge, &info, &nonce), "x")
            .to_file();
        let answer = Message::AdminChallenge(AdminChallenge {
            info,
            nonce,
            signature,
        });
        let _ = write_frame(&mut send, &answer.to_frame()).await;
        let Ok(Some(Frame::Control(p))) = reader.next().await else {
            continue;
        };
        let Ok(Message::AdminCommand(command)) = Message::decode(&p) else {
            continue;
        };
        let statement: AdminStatement = serde_json::from_slice(&command.statement).unwrap();
        match statement.action {
            AdminAction::Enroll => {
                let _ = write_frame(&mut send, &reply(true, "enrolled".into()).to_frame()).await;
            }
            AdminAction::PushImage {
                image_version,
                version,
            } => {
                let image = command.image.expect("PushImage carries an image");
                let meta = UpdateMetadata::parse(&image.metadata).unwrap();
                assert_eq!(meta.image_version, image_version);
                assert_eq!(meta.version, version);
                {
                    let mut s = seen.lock().unwrap();
                    s.pushes += 1;
                    s.received = vec![0; 3];
                    s.metadata = Some(meta.clone());
                }
                let mut result = receive_parts(&mut reader, &meta, seen).await;
                if after == After::Refuse && result.is_ok() {
                    result = Err(format!(
                        "update {version} is not newer than this node's floor 9"
                    ));
                }
                let ok = result.is_ok();
                let message = match result {
                    Ok(()) => format!("update {version} installed into slot b; rebooting"),
                    Err(e) => e,
                };
                let _ = write_frame(&mut send, &reply(ok, message).to_frame()).await;
                let _ = send.finish();
                if ok {
                    // The "reboot": the next sessions see the new state.
                    let mut info = state.lock().unwrap();
                    let slot = info.slot.as_mut().unwrap();
                    match after {
                        After::Healthy => {
                            slot.slot = "b".into();
                            slot.update_floor = version;
                            slot.other_version = Some("0.1.0-old".into());
                            info.image_version = image_version;
                        }
                        After::RollBack => {
                            slot.rolled_back_from = Some(image_version);
                            slot.update_floor = version;
                        }
                        After::Hang | After::Refuse | After::NoSlot => {}
                    }
                }
            }
            _ => {
                let _ = write_frame(&mut send, &reply(false, "no".into()).to_frame()).await;
            }
        }
    }
}

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// A fake A/B image: root and verity ranges in the .raw (the root spans
/// several wire chunks), the UKI beside it.
fn fake_image(dir: &Path) -> PathBuf {
    let root_len = 2 * lockstep_limits::WIRE_CHUNK_BYTES + 12345;
    let (root_off, verity_len) = (4096usize, 70_000usize);
    let raw: Vec<u8> = (0..root_off + root_len + verity_len + 512)
        .map(|i| (i * 31 % 253) as u8)
        .collect();
    let uki: Vec<u8> = (0..300_000u32).map(|i| (i % 199) as u8).collect();
    let root = &raw[root_off..root_off + root_len];
    let verity = &raw[root_off + root_len..root_off + root_len + verity_len];
    let manifest = serde_json::json!({
        "format": 1,
        "name": "lockstep-0.2.0-new",
        "version": "0.2.0-new",
        "variant": "lavapipe",
        "root_hash": "645c96d49ab0306766aa1c3e95b6a731711d2899a83fefc1172d9c54e5b4eb57",
        "tpm_pcr11_sha256": "f746fcb9267dc7988005856c4138061ce4db5b92222577df04d185187ad4757e",
        "slot": {
            "uki": {"file": "lockstep-0.2.0-new.efi", "bytes": uki.len(), "sha256": sha(&uki)},
            "root": {"offset": root_off, "bytes": root_len, "sha256": sha(root)},
            "verity": {"offset": root_off + root_len, "bytes": verity_len, "sha256": sha(verity)}
        }
    });
    std::fs::write(dir.join("lockstep-0.2.0-new.raw"), &raw).unwrap();
    std::fs::write(dir.join("lockstep-0.2.0-new.efi"), &uki).unwrap();
    std::fs::write(
        dir.join("lockstep-0.2.0-new.manifest.json"),
        serde_json::to_vec_pretty(&manifest).unwrap(),
    )
    .unwrap();
    dir.join("lockstep-0.2.0-new.raw")
}

fn setup(tmp: &Path, afters: &[After]) -> (PathBuf, Vec<FakeNode>) {
    let f = tmp.join("fleet");
    ok(&fleet(&f, &["init", "--unencrypted"]));
    let nodes: Vec<FakeNode> = afters
        .iter()
        .enumerate()
        .map(|(i, a)| fake_node(&tmp.join(format!("node{i}")), *a))
        .collect();
    for n in &nodes {
        ok(&fleet(&f, &["enroll", "--allow-file-key", &n.addr]));
    }
    (f, nodes)
}

fn list(f: &Path) -> Vec<serde_json::Value> {
    serde_json::from_str(&ok(&fleet(f, &["list", "--json"]))).unwrap()
}

#[test]
fn a_push_reaches_every_node_and_each_comes_back_healthy() {
    let tmp = tempfile::tempdir().unwrap();
    let (f, nodes) = setup(tmp.path(), &[After::Healthy, After::Healthy]);
    // Enrolment recorded the slot the nodes report.
    for n in list(&f) {
        assert_eq!(n["slot"], "a");
        assert_eq!(n["update_floor"], 0);
        assert_eq!(n["image_variant"], "lavapipe");
    }
    let text = ok(&fleet(&f, &["list"]));
    assert!(text.contains("slot a floor 0"), "{text}");
    let image = fake_image(tmp.path());
    let out = fleet(
        &f,
        &[
            "image",
            "push",
            image.to_str().unwrap(),
            "--all",
            "--poll-interval-s",
            "1",
            "--boot-timeout-s",
            "60",
        ],
    );
    let stdout = ok(&out);
    let err = stderr(&out);
    // The signed update was saved for audit, its path printed.
    let json = f.join("updates/1/update.json");
    assert!(
        stdout.contains(json.file_name().unwrap().to_str().unwrap()),
        "{stdout}"
    );
    assert!(json.exists() && f.join("updates/1/update.json.minisig").exists());
    let saved = UpdateMetadata::parse(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(
        (saved.version, saved.image_version.as_str()),
        (1, "0.2.0-new")
    );
    // A canary wave of 1, then the other.
    assert!(err.contains("wave 1/2: 1 node(s) (canary)"), "{err}");
    assert!(err.contains("wave 2/2: 1 node(s)"), "{err}");
    assert!(err.contains("root 100% ("), "{err}");
    // A line per 10% step the chunks cross (1 MiB chunks: 2 of 3 here).
    assert!(err.contains("root 49% (1.0/2.0 MiB, "), "{err}");
    assert_eq!(
        err.matches("healthy on 0.2.0-new in slot b").count(),
        2,
        "{err}"
    );
    assert!(err.contains("summary: 2 of 2 node(s) updated"), "{err}");
    for n in &nodes {
        let seen = n.seen.lock().unwrap();
        assert_eq!(seen.pushes, 1);
        let meta = seen.metadata.as_ref().unwrap();
        assert_eq!(
            seen.received,
            [meta.uki.bytes, meta.root.bytes, meta.verity.bytes]
        );
    }
    for n in list(&f) {
        assert_eq!(n["slot"], "b");
        assert_eq!(n["image_version"], "0.2.0-new");
        assert_eq!(n["update_floor"], 1);
        assert_eq!(n["last_update"], "healthy");
        assert_eq!(n["last_update_version"], 1);
    }
    let text = ok(&fleet(&f, &["list"]));
    assert!(
        text.contains("slot b floor 1 last update 1 healthy"),
        "{text}"
    );
    // Pushing the same image again: every node already runs it, so
    // nothing is signed.
    let out = fleet(&f, &["image", "push", image.to_str().unwrap(), "--all"]);
    ok(&out);
    assert!(
        stderr(&out).contains("already run image 0.2.0-new"),
        "{}",
        stderr(&out)
    );
    assert!(!f.join("updates/2").exists());
    // With an explicit version, each node is skipped.
    let out = fleet(
        &f,
        &[
            "image",
            "push",
            image.to_str().unwrap(),
            "--all",
            "--version",
            "7",
        ],
    );
    ok(&out);
    assert_eq!(
        stderr(&out).matches("skipped").count(),
        2,
        "{}",
        stderr(&out)
    );
    // A version is signed once.
    let out = fleet(
        &f,
        &[
            "image",
            "push",
            image.to_str().unwrap(),
            "--all",
            "--version",
            "7",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("signed before"), "{}", stderr(&out));
}

#[test]
fn a_rollback_stops_the_rollout_before_the_next_node() {
    let tmp = tempfile::tempdir().unwrap();
    let (f, nodes) = setup(tmp.path(), &[After::RollBack, After::Healthy]);
    let second_before = nodes[1].seen.lock().unwrap().sessions;
    let image = fake_image(tmp.path());
    let out = fleet(
        &f,
        &[
            "image",
            "push",
            image.to_str().unwrap(),
            // In this order (--all goes by enrolment time, then id).
            &nodes[0].addr,
            &nodes[1].addr,
            "--version",
            "5",
            "--poll-interval-s",
            "1",
            "--boot-timeout-s",
            "60",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("ROLLED BACK to 0.1.0-old (slot a): the update did not come up healthy; rollout stopped"),
        "{err}"
    );
    // The second node was never contacted.
    assert_eq!(nodes[1].seen.lock().unwrap().sessions, second_before);
    assert_eq!(nodes[1].seen.lock().unwrap().pushes, 0);
    let first = list(&f)
        .into_iter()
        .find(|n| n["address"] == nodes[0].addr.as_str())
        .unwrap();
    assert_eq!(first["last_update"], "rolled-back");
    assert_eq!(first["rolled_back_from"], "0.2.0-new");
    assert_eq!(first["slot"], "a");
    assert_eq!(first["last_update_version"], 5);
    let text = ok(&fleet(&f, &["list"]));
    assert!(text.contains("ROLLED BACK from 0.2.0-new"), "{text}");
}

#[test]
fn bad_input_exits_2_before_any_node_is_touched() {
    let tmp = tempfile::tempdir().unwrap();
    let (f, nodes) = setup(tmp.path(), &[After::Healthy]);
    let before = nodes[0].seen.lock().unwrap().sessions;
    let image = fake_image(tmp.path());
    let img = image.to_str().unwrap();
    let out = fleet(
        &f,
        &["image", "push", img, "--all", "--expires-in-days", "31"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("1 to 30"), "{}", stderr(&out));
    let out = fleet(&f, &["image", "push", img]);
    assert_eq!(out.status.code(), Some(2));
    // A changed root: refused with one line.
    let mut raw = std::fs::read(&image).unwrap();
    raw[5000] ^= 0xff;
    std::fs::write(&image, &raw).unwrap();
    let out = fleet(&f, &["image", "push", img, "--all"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stderr(&out).trim().lines().count(), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("SHA-256"), "{}", stderr(&out));
    assert_eq!(nodes[0].seen.lock().unwrap().sessions, before);
    assert!(!f.join("updates").exists());
}

#[test]
fn a_refusal_a_timeout_or_a_node_without_slots_stops_the_rollout() {
    let tmp = tempfile::tempdir().unwrap();
    let (f, nodes) = setup(
        tmp.path(),
        &[After::Refuse, After::Hang, After::NoSlot, After::Healthy],
    );
    let image = fake_image(tmp.path());
    let img = image.to_str().unwrap();
    let last = nodes[3].seen.lock().unwrap().sessions;
    let push = |node: &str, version: &str| {
        fleet(
            &f,
            &[
                "image",
                "push",
                img,
                node,
                &nodes[3].addr,
                "--version",
                version,
                "--poll-interval-s",
                "1",
                "--boot-timeout-s",
                "3",
            ],
        )
    };
    // The node's refusal, with its reason.
    let out = push(&nodes[0].addr, "1");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("refused the update: update 1 is not newer than this node's floor 9"),
        "{}",
        stderr(&out)
    );
    // Accepted, never back: the boot timeout.
    let out = push(&nodes[1].addr, "2");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("within 3 s"), "{}", stderr(&out));
    let hung = ok(&fleet(&f, &["show", &nodes[1].addr]));
    let hung: serde_json::Value = serde_json::from_str(&hung).unwrap();
    assert_eq!(hung["last_update"], "timed-out");
    // Not an A/B image: refused before anything is sent; without
    // --version, before anything is signed.
    let out = push(&nodes[2].addr, "3");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not an A/B image"),
        "{}",
        stderr(&out)
    );
    assert_eq!(nodes[2].seen.lock().unwrap().pushes, 0);
    let out = fleet(&f, &["image", "push", img, &nodes[2].addr]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not an A/B image"),
        "{}",
        stderr(&out)
    );
    assert!(!f.join("updates/4").exists());
    // The node after each of them was never contacted.
    assert_eq!(nodes[3].seen.lock().unwrap().sessions, last);
    let text = ok(&fleet(&f, &["list"]));
    assert!(text.contains("(no A/B slot)"), "{text}");
}
