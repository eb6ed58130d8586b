//! A/B image updates end to end: lockstepd with `--slots`, `--boot-info`
//! and `--ready-file` (regular files standing in for the slot partitions),
//! an operator pushing signed updates over an admin session, and every
//! refusal leaving nothing staged while the node goes on serving.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use common::client::{admin, connect_from, job_id, one_op, submit};
use lockstep_identity::SigningKey;
use lockstep_protocol::admin::{AdminAction, AdminReply, ImageUpload};
use lockstep_protocol::Message;
use lockstep_tensor::{Fill, Tensor};
use lockstep_update::{Artifact, ImageManifest, SignedUpdate, SlotArtifacts, UpdateSigner};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;
const ROOT_SLOT_BYTES: u64 = 4 * MIB as u64;
const VERITY_SLOT_BYTES: u64 = 256 * KIB as u64;
const BOOT_INFO: &str = r#"{"slot":"a","variant":"lavapipe","image_version":"0.1.0-abc","rolled_back_from":null,"other_version":null}"#;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Deterministic pseudo-random bytes (xorshift), distinct per seed.
fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The three slot parts of one image.
struct Image {
    uki: Vec<u8>,
    root: Vec<u8>,
    verity: Vec<u8>,
}

impl Image {
    fn new(seed: u64) -> Image {
        Image {
            uki: bytes(100 * KIB, seed),
            root: bytes(3 * MIB, seed + 1),
            verity: bytes(64 * KIB, seed + 2),
        }
    }

    fn artifacts(&self) -> SlotArtifacts {
        SlotArtifacts {
            uki: Artifact::of(&self.uki),
            root: Artifact::of(&self.root),
            verity: Artifact::of(&self.verity),
        }
    }
}

fn manifest(variant: &str) -> ImageManifest {
    ImageManifest::parse(
        format!(
            r#"{{"format":1,"name":"lockstep-0.2.0-abc","version":"0.2.0-abc","variant":"{variant}",
            "root_hash":"{}","tpm_pcr11_sha256":"{}"}}"#,
            "c".repeat(64),
            "d".repeat(64)
        )
        .as_bytes(),
    )
    .unwrap()
}

fn sign(
    key: &SigningKey,
    image: &Image,
    version: u64,
    expires_at: u64,
    variant: &str,
) -> SignedUpdate {
    let signer = UpdateSigner::new(key);
    let m = signer
        .metadata(&manifest(variant), image.artifacts(), version, expires_at)
        .unwrap();
    signer.sign(&m).unwrap()
}

/// A node started as slot a of an A/B image, with its slot files.
struct AbNode {
    _dir: tempfile::TempDir,
    node: common::Node,
    state: PathBuf,
    slots: PathBuf,
    ready: PathBuf,
    operator: SigningKey,
}

fn start_ab() -> AbNode {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let slots = dir.path().join("slots");
    std::fs::create_dir_all(&slots).unwrap();
    for (name, len) in [
        ("lockstep-root-a", ROOT_SLOT_BYTES),
        ("lockstep-verity-a", VERITY_SLOT_BYTES),
        ("lockstep-root-b", ROOT_SLOT_BYTES),
        ("lockstep-verity-b", VERITY_SLOT_BYTES),
    ] {
        std::fs::File::create(slots.join(name))
            .unwrap()
            .set_len(len)
            .unwrap();
    }
    let boot = dir.path().join("boot.json");
    std::fs::write(&boot, BOOT_INFO).unwrap();
    let operator = SigningKey::generate();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "trusted_operators = [\"{}\"]\n",
            operator.public().to_base64()
        ),
    )
    .unwrap();
    let ready = dir.path().join("ready");
    let node = common::start(
        &state,
        "cpu",
        &[
            "--config",
            s(&config),
            "--slots",
            s(&slots),
            "--boot-info",
            s(&boot),
            "--ready-file",
            s(&ready),
        ],
    );
    AbNode {
        _dir: dir,
        node,
        state,
        slots,
        ready,
        operator,
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Each artifact cut into wire chunks, one after the other: chunks never
/// span two artifacts (the fleet's rule).
fn chunked(parts: &[&[u8]]) -> Vec<Vec<u8>> {
    parts
        .iter()
        .flat_map(|p| p.chunks(lockstep_limits::WIRE_CHUNK_BYTES))
        .map(<[u8]>::to_vec)
        .collect()
}

async fn push(
    node: &common::Node,
    key: &SigningKey,
    update: &SignedUpdate,
    parts: &[&[u8]],
) -> AdminReply {
    push_frames(node, key, update, chunked(parts)).await
}

async fn push_frames(
    node: &common::Node,
    key: &SigningKey,
    update: &SignedUpdate,
    frames: Vec<Vec<u8>>,
) -> AdminReply {
    let action = AdminAction::PushImage {
        image_version: update.metadata.image_version.clone(),
        version: update.metadata.version,
    };
    let image = ImageUpload {
        metadata: update.bytes.clone(),
        signature: update.signature.clone(),
    };
    admin(node, key, Some(action), Some(image), frames)
        .await
        .1
        .unwrap()
}

fn update_dir(ab: &AbNode) -> PathBuf {
    ab.state.join("update")
}

/// Nothing staged: no pending.env, no UKI (final or temporary), no floor.
fn assert_nothing_staged(ab: &AbNode) {
    for f in [
        "pending.env",
        "uki.efi",
        "uki.efi.tmp",
        "floor",
        "update.json",
    ] {
        assert!(!update_dir(ab).join(f).exists(), "{f} exists");
    }
}

async fn a_job_is_served(node: &common::Node, n: u64) {
    let conn = connect_from(node, "127.0.0.1").await.unwrap();
    let x = Tensor::filled(vec![4], 1, Fill::Uniform).unwrap();
    let reply = submit(&conn, job_id(0x1a, n), &one_op("relu", &[4]), &x)
        .await
        .expect("a reply");
    assert!(matches!(reply, Message::Done(_)), "{reply:?}");
    conn.close(0u32.into(), b"");
}

fn wait_for(path: &Path) -> String {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            return text;
        }
        assert!(Instant::now() < until, "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_signed_update_is_written_to_the_inactive_slot_and_staged() {
    let ab = start_ab();
    // Ready only after listening and the self-test.
    assert_eq!(wait_for(&ab.ready), "serving 0.1.0-abc; self-test passed\n");
    let image = Image::new(1);
    let update = sign(&ab.operator, &image, 7, now() + 86_400, "lavapipe");
    smol::block_on(async {
        let (info, _) = admin(&ab.node, &ab.operator, None, None, vec![]).await;
        assert_eq!(info.image_version, "0.1.0-abc");
        let slot = info.slot.expect("an A/B node reports its slot");
        assert_eq!(
            (slot.slot.as_str(), slot.variant.as_str(), slot.update_floor),
            ("a", "lavapipe", 0)
        );
        assert_eq!((slot.rolled_back_from, slot.other_version), (None, None));

        let reply = push(
            &ab.node,
            &ab.operator,
            &update,
            &[&image.uki, &image.root, &image.verity],
        )
        .await;
        assert!(reply.ok, "{}", reply.message);
        assert_eq!(
            reply.message,
            "update 0.2.0-abc (version 7) written to slot b and verified; installing it and rebooting"
        );

        // Exactly the bytes, at offset 0 of slot b's partitions, which keep
        // their size; slot a untouched.
        let root_b = std::fs::read(ab.slots.join("lockstep-root-b")).unwrap();
        assert_eq!(root_b.len() as u64, ROOT_SLOT_BYTES);
        assert_eq!(&root_b[..image.root.len()], &image.root[..]);
        assert!(root_b[image.root.len()..].iter().all(|&b| b == 0));
        let verity_b = std::fs::read(ab.slots.join("lockstep-verity-b")).unwrap();
        assert_eq!(verity_b.len() as u64, VERITY_SLOT_BYTES);
        assert_eq!(&verity_b[..image.verity.len()], &image.verity[..]);
        for a in ["lockstep-root-a", "lockstep-verity-a"] {
            assert!(std::fs::read(ab.slots.join(a))
                .unwrap()
                .iter()
                .all(|&b| b == 0));
        }
        let dir = update_dir(&ab);
        assert_eq!(std::fs::read(dir.join("uki.efi")).unwrap(), image.uki);
        assert!(!dir.join("uki.efi.tmp").exists());
        assert_eq!(
            std::fs::read(dir.join("update.json")).unwrap(),
            update.bytes
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("update.json.minisig")).unwrap(),
            update.signature
        );
        assert_eq!(std::fs::read_to_string(dir.join("floor")).unwrap(), "7\n");
        let a = image.artifacts();
        assert_eq!(
            std::fs::read_to_string(dir.join("pending.env")).unwrap(),
            format!(
                "VERSION=7\nIMAGE_VERSION=0.2.0-abc\nSLOT=b\nFROM_VERSION=0.1.0-abc\nROOT_HASH={}\n\
                 UKI_BYTES={}\nUKI_SHA256={}\nROOT_BYTES={}\nROOT_SHA256={}\nVERITY_BYTES={}\nVERITY_SHA256={}\n",
                "c".repeat(64),
                a.uki.bytes,
                a.uki.sha256,
                a.root.bytes,
                a.root.sha256,
                a.verity.bytes,
                a.verity.sha256
            )
        );
        let (info, _) = admin(&ab.node, &ab.operator, None, None, vec![]).await;
        let slot = info.slot.unwrap();
        assert_eq!(slot.update_floor, 7);
        assert_eq!(slot.other_version.as_deref(), Some("0.2.0-abc"));

        // Replay of the same update, and a downgrade: below the floor.
        for version in [7, 5] {
            let again = sign(&ab.operator, &image, version, now() + 86_400, "lavapipe");
            let reply = push(&ab.node, &ab.operator, &again, &[]).await;
            assert!(!reply.ok);
            assert!(
                reply.message.starts_with("image update refused (NotNewer)"),
                "{}",
                reply.message
            );
        }
        assert_eq!(std::fs::read_to_string(dir.join("floor")).unwrap(), "7\n");
        a_job_is_served(&ab.node, 1).await;
    });
}

#[test]
fn refused_updates_stage_nothing_and_the_node_keeps_serving() {
    let ab = start_ab();
    wait_for(&ab.ready);
    let image = Image::new(2);
    let good = sign(&ab.operator, &image, 3, now() + 86_400, "lavapipe");
    let all: [&[u8]; 3] = [&image.uki, &image.root, &image.verity];
    smol::block_on(async {
        let mut cases: Vec<(&str, SignedUpdate, Vec<&[u8]>)> = Vec::new();
        // Tampered: one byte of the metadata changed after signing.
        let mut tampered = good.clone();
        let at = tampered.bytes.windows(3).position(|w| w == b"abc").unwrap();
        tampered.bytes[at + 2] = b'd';
        cases.push(("BadSignature", tampered, all.to_vec()));
        let mut unsigned = good.clone();
        unsigned.signature = String::new();
        cases.push(("Unsigned", unsigned, all.to_vec()));
        let stranger = SigningKey::generate();
        cases.push((
            "Untrusted",
            sign(&stranger, &image, 3, now() + 86_400, "lavapipe"),
            all.to_vec(),
        ));
        cases.push((
            "Expired",
            sign(&ab.operator, &image, 3, now() - 10, "lavapipe"),
            all.to_vec(),
        ));
        cases.push((
            "WrongTarget",
            sign(&ab.operator, &image, 3, now() + 86_400, "nvidia"),
            all.to_vec(),
        ));
        cases.push((
            "NotNewer",
            sign(&ab.operator, &image, 0, now() + 86_400, "lavapipe"),
            all.to_vec(),
        ));
        // The root's bytes differ from its signed hash (one bit).
        let mut bad_root = image.root.clone();
        bad_root[12345] ^= 1;
        let bad_root: &[u8] = &bad_root;
        let parts = vec![&image.uki[..], bad_root, &image.verity[..]];
        for (why, update, parts) in
            cases
                .iter()
                .chain(std::iter::once(&("ArtifactHash", good.clone(), parts)))
        {
            let reply = push(&ab.node, &ab.operator, update, parts).await;
            assert!(!reply.ok, "{why}");
            assert!(
                reply
                    .message
                    .starts_with(&format!("image update refused ({why})")),
                "{why}: {}",
                reply.message
            );
            assert!(
                reply.message.contains("nothing installed"),
                "{}",
                reply.message
            );
            assert_nothing_staged(&ab);
        }

        // A chunk that spans the UKI's end into the root, and an empty
        // chunk: both refused, nothing staged.
        let mut spanning = image.uki.clone();
        spanning.push(image.root[0]);
        let reply = push_frames(&ab.node, &ab.operator, &good, vec![spanning]).await;
        assert!(
            reply
                .message
                .starts_with("image update refused (ArtifactOverlong)")
                && reply.message.contains("never span two artifacts"),
            "{}",
            reply.message
        );
        assert_nothing_staged(&ab);
        let reply = push_frames(&ab.node, &ab.operator, &good, vec![vec![]]).await;
        assert!(
            !reply.ok && reply.message.contains("empty data chunk"),
            "{}",
            reply.message
        );
        assert_nothing_staged(&ab);
        // The stream ends before the verity.
        let mut short = chunked(&all);
        short.pop();
        let reply = push_frames(&ab.node, &ab.operator, &good, short).await;
        assert!(
            !reply.ok && reply.message.contains("the stream ended after"),
            "{}",
            reply.message
        );
        assert_nothing_staged(&ab);

        // A root larger than slot b's partition: refused before any byte
        // is read (none is sent).
        let mut big = Image::new(3);
        big.root = bytes(ROOT_SLOT_BYTES as usize + 1, 9);
        let too_big = sign(&ab.operator, &big, 3, now() + 86_400, "lavapipe");
        let reply = push(&ab.node, &ab.operator, &too_big, &[]).await;
        assert!(!reply.ok);
        assert!(
            reply.message.starts_with(&format!(
                "slot b's root partition holds {ROOT_SLOT_BYTES} bytes; the update needs {}",
                ROOT_SLOT_BYTES + 1
            )),
            "{}",
            reply.message
        );
        assert_nothing_staged(&ab);

        // The command and the update from two rollouts.
        let action = AdminAction::PushImage {
            image_version: "0.2.0-abc".into(),
            version: 4,
        };
        let image_upload = ImageUpload {
            metadata: good.bytes.clone(),
            signature: good.signature.clone(),
        };
        let (_, reply) = admin(
            &ab.node,
            &ab.operator,
            Some(action),
            Some(image_upload),
            vec![],
        )
        .await;
        let reply = reply.unwrap();
        assert!(
            !reply.ok && reply.message.contains("two rollouts"),
            "{}",
            reply.message
        );

        // An untrusted operator is refused before the image is looked at.
        let reply = push(&ab.node, &stranger, &good, &[]).await;
        assert!(
            !reply.ok && reply.message.contains("is not trusted"),
            "{}",
            reply.message
        );
        assert_nothing_staged(&ab);

        // Still serving jobs and admin sessions, and still at floor 0.
        a_job_is_served(&ab.node, 2).await;
        let (info, _) = admin(&ab.node, &ab.operator, None, None, vec![]).await;
        assert_eq!(info.slot.unwrap().update_floor, 0);

        // And the good update still goes in afterwards.
        let reply = push(&ab.node, &ab.operator, &good, &all).await;
        assert!(reply.ok, "{}", reply.message);
    });
}

#[test]
fn without_slots_or_with_a_bad_boot_info_updates_are_disabled_but_jobs_run() {
    let dir = tempfile::tempdir().unwrap();
    let operator = SigningKey::generate();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "trusted_operators = [\"{}\"]\n",
            operator.public().to_base64()
        ),
    )
    .unwrap();
    let image = Image::new(4);
    let update = sign(&operator, &image, 1, now() + 86_400, "lavapipe");
    // Not an A/B image at all.
    let plain = common::start(&dir.path().join("s1"), "cpu", &["--config", s(&config)]);
    // A boot info naming a slot c: logged, updates disabled, node serves.
    let boot = dir.path().join("boot.json");
    std::fs::write(&boot, BOOT_INFO.replace("\"a\"", "\"c\"")).unwrap();
    let bad = common::start(
        &dir.path().join("s2"),
        "cpu",
        &[
            "--config",
            s(&config),
            "--slots",
            s(dir.path()),
            "--boot-info",
            s(&boot),
        ],
    );
    // A valid A/B node whose state partition is below its free floor.
    let slots = dir.path().join("slots");
    std::fs::create_dir_all(&slots).unwrap();
    for name in [
        "lockstep-root-a",
        "lockstep-verity-a",
        "lockstep-root-b",
        "lockstep-verity-b",
    ] {
        std::fs::File::create(slots.join(name))
            .unwrap()
            .set_len(ROOT_SLOT_BYTES)
            .unwrap();
    }
    let good_boot = dir.path().join("good-boot.json");
    std::fs::write(&good_boot, BOOT_INFO).unwrap();
    let full = common::start(
        &dir.path().join("s3"),
        "cpu",
        &[
            "--config",
            s(&config),
            "--slots",
            s(&slots),
            "--boot-info",
            s(&good_boot),
            "--update-free-floor-bytes",
            "1000000000000000000",
        ],
    );
    smol::block_on(async {
        let reply = push(&full, &operator, &update, &[]).await;
        assert!(!reply.ok);
        assert!(
            reply.message.starts_with("the state partition has")
                && reply.message.contains("--update-free-floor-bytes"),
            "{}",
            reply.message
        );
        assert!(!dir.path().join("s3/update/uki.efi.tmp").exists());
        a_job_is_served(&full, 5).await;

        let reply = push(&plain, &operator, &update, &[]).await;
        assert!(!reply.ok);
        assert!(
            reply
                .message
                .starts_with("this node is not an A/B image: no --slots/--boot-info"),
            "{}",
            reply.message
        );
        let (info, _) = admin(&plain, &operator, None, None, vec![]).await;
        assert_eq!(info.slot, None);
        a_job_is_served(&plain, 3).await;

        let reply = push(&bad, &operator, &update, &[]).await;
        assert!(!reply.ok);
        assert!(reply.message.contains("boot info"), "{}", reply.message);
        let (info, _) = admin(&bad, &operator, None, None, vec![]).await;
        assert_eq!(info.slot, None);
        a_job_is_served(&bad, 4).await;
    });
}
