//! In-place A/B image updates (`lockstep-fleet image push`): reading and
//! measuring an image's slot parts, the update version and expiry, the
//! rollout waves, and one node's update from the signed command to the
//! node coming back healthy (or rolled back).

use std::io::{Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lockstep_identity::{NodeId, Signature, SigningKey};
use lockstep_protocol::admin::{AdminAction, ImageUpload, NodeInfo, SlotInfo};
use lockstep_update::{Artifact, ImageManifest, SignedUpdate, SlotArtifacts};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::inventory::NodeRecord;
use crate::session::{Session, SessionError, StreamPart};

/// Default validity of a signed update, in days.
pub const DEFAULT_EXPIRES_IN_DAYS: u64 = 7;
/// Longest validity (the nodes refuse more: `MAX_UPDATE_VALIDITY_S`).
pub const MAX_EXPIRES_IN_DAYS: u64 = lockstep_limits::MAX_UPDATE_VALIDITY_S / 86_400;
/// Default wait for a node to come back after it accepted an update.
pub const DEFAULT_BOOT_TIMEOUT_S: u64 = 1800;
/// Default interval between polls of a rebooting node.
pub const DEFAULT_POLL_S: u64 = 5;
/// Where signed updates are kept for audit: `FLEET/updates/VERSION/`.
pub const UPDATES_DIR: &str = "updates";

/// The manifest's `slot` object (image/build.sh).
#[derive(Debug, Clone, Deserialize)]
struct SlotManifest {
    slot: SlotParts,
}

#[derive(Debug, Clone, Deserialize)]
struct SlotParts {
    uki: FilePart,
    root: RangePart,
    verity: RangePart,
}

#[derive(Debug, Clone, Deserialize)]
struct FilePart {
    file: String,
    bytes: u64,
    sha256: String,
}

#[derive(Debug, Clone, Deserialize)]
struct RangePart {
    offset: u64,
    bytes: u64,
    sha256: String,
}

/// An image whose slot parts were read and measured: they match its
/// manifest.
#[derive(Debug, Clone)]
pub struct ImageSource {
    pub manifest: ImageManifest,
    pub manifest_path: PathBuf,
    /// The UKI, the root and the verity tree, in the order they are sent.
    pub parts: Vec<StreamPart>,
    pub artifacts: SlotArtifacts,
}

/// Reads `NAME.raw`'s manifest (`NAME.manifest.json` beside it), hashes
/// the UKI file and the root and verity ranges of the .raw (streaming, in
/// bounded memory), and refuses anything that differs from the manifest.
/// With `image_key`, the manifest's minisign signature
/// (`NAME.manifest.json.minisig`) must verify under it. Errors are one
/// line (bad input).
pub fn read_image(raw: &Path, image_key: Option<&NodeId>) -> Result<ImageSource, String> {
    let file_name = raw
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| format!("{}: not a file name", raw.display()))?;
    let name = file_name
        .strip_suffix(".raw")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            format!(
                "{}: expected an image NAME.raw written by image/build.sh",
                raw.display()
            )
        })?;
    let dir = raw.parent().unwrap_or(Path::new("."));
    let manifest_path = dir.join(format!("{name}.manifest.json"));
    let bytes = read_bounded(&manifest_path, lockstep_update::MAX_IMAGE_MANIFEST_BYTES)?;
    if let Some(key) = image_key {
        let sig_path = dir.join(format!("{name}.manifest.json.minisig"));
        let text = std::fs::read_to_string(&sig_path)
            .map_err(|e| format!("{}: {e} (--image-key needs it)", sig_path.display()))?;
        Signature::parse(&text)
            .and_then(|s| s.verify(key, &bytes))
            .map_err(|e| {
                format!(
                    "{}: the image manifest's signature does not verify under --image-key: {e}",
                    sig_path.display()
                )
            })?;
    }
    let manifest =
        ImageManifest::parse(&bytes).map_err(|e| format!("{}: {e}", manifest_path.display()))?;
    let slot: SlotManifest = serde_json::from_slice(&bytes).map_err(|e| {
        format!(
            "{}: no valid \"slot\" object ({e}): not an A/B image build; rebuild it with image/build.sh",
            manifest_path.display()
        )
    })?;
    let slot = slot.slot;
    let uki_name = &slot.uki.file;
    if uki_name.is_empty() || uki_name.starts_with('.') || uki_name.contains(['/', '\\', '\0']) {
        return Err(format!(
            "{}: slot.uki.file {uki_name:?} is not a plain file name",
            manifest_path.display()
        ));
    }
    let uki_path = dir.join(uki_name);
    let uki_len = std::fs::metadata(&uki_path)
        .map_err(|e| format!("{}: {e} (the image's UKI)", uki_path.display()))?
        .len();
    if uki_len != slot.uki.bytes {
        return Err(format!(
            "{}: {uki_len} bytes, the manifest says {}: the image changed after it was built; rebuild it",
            uki_path.display(),
            slot.uki.bytes
        ));
    }
    let raw_len = std::fs::metadata(raw)
        .map_err(|e| format!("{}: {e}", raw.display()))?
        .len();
    let parts = vec![
        StreamPart {
            name: "uki",
            path: uki_path,
            offset: 0,
            bytes: slot.uki.bytes,
        },
        range_part("root", raw, raw_len, &slot.root)?,
        range_part("verity", raw, raw_len, &slot.verity)?,
    ];
    let expected = [&slot.uki.sha256, &slot.root.sha256, &slot.verity.sha256];
    let mut measured = Vec::with_capacity(3);
    for (part, want) in parts.iter().zip(expected) {
        if part.bytes == 0 {
            return Err(format!(
                "{}: slot.{} is empty",
                manifest_path.display(),
                part.name
            ));
        }
        let got = hash_part(part)?;
        if !got.eq_ignore_ascii_case(want) {
            return Err(format!(
                "{}: the {} ({}) has SHA-256 {got}, the manifest says {want}: the image changed after it was built; rebuild it",
                part.path.display(),
                part.name,
                describe(part),
            ));
        }
        measured.push(Artifact {
            sha256: got,
            bytes: part.bytes,
        });
    }
    let verity = measured.pop().expect("three parts");
    let root = measured.pop().expect("three parts");
    let uki = measured.pop().expect("three parts");
    Ok(ImageSource {
        manifest,
        manifest_path,
        parts,
        artifacts: SlotArtifacts { uki, root, verity },
    })
}

fn describe(part: &StreamPart) -> String {
    if part.name == "uki" {
        format!("{} bytes", part.bytes)
    } else {
        format!("bytes [{}, {})", part.offset, part.offset + part.bytes)
    }
}

fn range_part(
    name: &'static str,
    raw: &Path,
    raw_len: u64,
    r: &RangePart,
) -> Result<StreamPart, String> {
    match r.offset.checked_add(r.bytes) {
        Some(end) if end <= raw_len => Ok(StreamPart {
            name,
            path: raw.to_path_buf(),
            offset: r.offset,
            bytes: r.bytes,
        }),
        _ => Err(format!(
            "{}: the manifest's {name} range [{}, {}+{}) lies outside the file ({raw_len} bytes): wrong or truncated image",
            raw.display(),
            r.offset,
            r.offset,
            r.bytes
        )),
    }
}

fn read_bounded(path: &Path, max: usize) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(max as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() > max {
        return Err(format!("{}: over {max} bytes", path.display()));
    }
    Ok(bytes)
}

/// SHA-256 (hex) of one part, read through a bounded buffer.
fn hash_part(part: &StreamPart) -> Result<String, String> {
    let err = |e: std::io::Error| format!("{}: {e}", part.path.display());
    let mut file = std::fs::File::open(&part.path).map_err(err)?;
    file.seek(SeekFrom::Start(part.offset)).map_err(err)?;
    let mut reader = file.take(part.bytes);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf).map_err(err)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    if total != part.bytes {
        return Err(format!(
            "{}: ended after {total} of the {} {} bytes",
            part.path.display(),
            part.bytes,
            part.name
        ));
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The update version: `explicit`, else one above the fleet's last signed
/// update and every target node's floor.
pub fn choose_version(
    explicit: Option<u64>,
    fleet_last: Option<u64>,
    floors: impl IntoIterator<Item = u64>,
) -> u64 {
    explicit.unwrap_or_else(|| {
        floors
            .into_iter()
            .chain(fleet_last)
            .max()
            .unwrap_or(0)
            .saturating_add(1)
    })
}

/// `expires_at` for a validity of `days` from `now_unix_s`; more than
/// [`MAX_EXPIRES_IN_DAYS`] (what nodes accept) or 0 is refused.
pub fn expires_at(now_unix_s: u64, days: u64) -> Result<u64, String> {
    if days == 0 || days > MAX_EXPIRES_IN_DAYS {
        return Err(format!(
            "--expires-in-days {days}: give 1 to {MAX_EXPIRES_IN_DAYS} (nodes refuse updates valid for longer than {MAX_EXPIRES_IN_DAYS} days)"
        ));
    }
    Ok(now_unix_s + days * 86_400)
}

/// Wave sizes for `nodes` nodes: a canary of 1, then doubling (1, 2, 4,
/// …), or all of size `fixed`. The last wave takes what is left.
pub fn wave_sizes(nodes: usize, fixed: Option<usize>) -> Vec<usize> {
    let mut waves = Vec::new();
    let mut left = nodes;
    let mut next = fixed.unwrap_or(1).max(1);
    while left > 0 {
        let size = next.min(left);
        waves.push(size);
        left -= size;
        if fixed.is_none() {
            next = next.saturating_mul(2);
        }
    }
    waves
}

/// Saves a signed update for audit as `dir/update.json` and
/// `dir/update.json.minisig`; refuses to replace an earlier signing.
pub fn save_update(dir: &Path, signed: &SignedUpdate) -> Result<(), String> {
    let json = dir.join(lockstep_update::UPDATE_FILE);
    if json.exists() {
        return Err(format!(
            "update version {} was signed before ({}); update versions only go up: pass a higher --version, or leave it out",
            signed.metadata.version,
            json.display()
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let sig = dir.join(lockstep_update::UPDATE_SIGNATURE_FILE);
    std::fs::write(&json, &signed.bytes)
        .and_then(|_| std::fs::write(&sig, &signed.signature))
        .map_err(|e| format!("{}: {e}", dir.display()))
}

/// The first 8 characters of a node id, for progress lines.
pub fn id8(node_id: &str) -> String {
    node_id.chars().take(8).collect()
}

/// Prints `node <id8>: root 45% (180.0/400.0 MiB, 12.3 MiB/s)` lines to
/// stderr: at every 10% step of each part and at its end.
pub struct Progress {
    node: String,
    part: Option<&'static str>,
    started: Instant,
    next_step: u64,
}

impl Progress {
    pub fn new(node_id: &str) -> Progress {
        Progress {
            node: id8(node_id),
            part: None,
            started: Instant::now(),
            next_step: 1,
        }
    }

    /// The line to print after `sent` bytes of `part`, if one is due.
    pub fn update(&mut self, part: &StreamPart, sent: u64) -> Option<String> {
        if self.part != Some(part.name) {
            self.part = Some(part.name);
            self.started = Instant::now();
            self.next_step = 1;
        }
        let total = part.bytes.max(1);
        let step = sent.saturating_mul(10) / total;
        if step < self.next_step {
            return None;
        }
        self.next_step = step + 1;
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        Some(format!(
            "node {}: {} {}% ({:.1}/{:.1} MiB, {:.1} MiB/s)",
            self.node,
            part.name,
            sent.saturating_mul(100) / total,
            mib(sent),
            mib(part.bytes),
            mib(sent) / secs
        ))
    }
}

/// How one node's update ended, when it did not fail.
#[derive(Debug, Clone)]
pub enum NodeOutcome {
    /// Back on the update's image in the other slot.
    Healthy {
        info: NodeInfo,
        /// From opening the session to healthy.
        total: Duration,
        /// From the node's ok reply to healthy.
        downtime: Duration,
    },
    /// Already running this image version: nothing sent.
    Skipped { info: NodeInfo },
}

/// Why one node's update stopped the rollout.
#[derive(Debug)]
pub enum NodeFailure {
    /// Nothing reached the node (unreachable, refused before install).
    Before(String),
    /// The node came back on its old slot, the update not healthy.
    RolledBack {
        info: Box<NodeInfo>,
        message: String,
    },
    /// The node accepted the update but was not back in time.
    TimedOut(String),
    /// The local image could not be read while sending (bad input).
    Source(String),
}

impl std::fmt::Display for NodeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeFailure::Before(m)
            | NodeFailure::TimedOut(m)
            | NodeFailure::Source(m)
            | NodeFailure::RolledBack { message: m, .. } => f.write_str(m),
        }
    }
}

/// The knobs of one node's update.
pub struct NodeUpdate<'a> {
    pub key: &'a SigningKey,
    pub signed: &'a SignedUpdate,
    pub image: &'a ImageSource,
    pub boot_timeout: Duration,
    pub poll: Duration,
}

/// The node's address and pinned id from the inventory.
pub fn node_target(node: &NodeRecord) -> Result<(SocketAddr, NodeId), String> {
    use std::net::ToSocketAddrs;
    let addr = node
        .address
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| {
            format!(
                "node {}: inventory address {:?} is not an ADDR:PORT this machine can resolve",
                node.node_id, node.address
            )
        })?;
    let id = NodeId::parse(&node.node_id)
        .map_err(|e| format!("inventory node id {}: {e}", node.node_id))?;
    Ok((addr, id))
}

/// What a node reports, on a fresh pinned session (no command).
pub fn node_info(addr: SocketAddr, id: &NodeId) -> Result<NodeInfo, SessionError> {
    smol::block_on(Session::open(addr, Some(id))).map(|s| s.info)
}

/// Why a node cannot take `metadata`'s update, judged from its info:
/// not an A/B image, or another variant.
pub fn refuse_reason(info: &NodeInfo, target: &str) -> Option<String> {
    match &info.slot {
        None => Some(format!(
            "node {}: not an A/B image (it reports no slot, image {}); refusing to update it",
            info.node_id, info.image_version
        )),
        Some(s) if s.variant != target => Some(format!(
            "node {}: runs image variant {}, the update is for {target}; refusing to update it",
            info.node_id, s.variant
        )),
        Some(_) => None,
    }
}

/// Updates one node: the signed command and the slot parts on a pinned
/// session, then polls until the node is back healthy on the new image,
/// reports a rollback, or the boot timeout passes. Progress goes to
/// `log` (stderr in the tool).
pub fn update_node(
    node: &NodeRecord,
    u: &NodeUpdate<'_>,
    log: &(dyn Fn(String) + Sync),
) -> Result<NodeOutcome, NodeFailure> {
    let (addr, id) = node_target(node).map_err(NodeFailure::Before)?;
    let meta = &u.signed.metadata;
    let started = Instant::now();
    let session = smol::block_on(Session::open(addr, Some(&id)))
        .map_err(|e| NodeFailure::Before(format!("node {}: {e}", node.node_id)))?;
    let before = session.info.clone();
    if let Some(reason) = refuse_reason(&before, &meta.target) {
        return Err(NodeFailure::Before(reason));
    }
    if before.image_version == meta.image_version {
        return Ok(NodeOutcome::Skipped { info: before });
    }
    let old_slot: Option<SlotInfo> = before.slot.clone();
    let command = session.sign_image(
        u.key,
        AdminAction::PushImage {
            image_version: meta.image_version.clone(),
            version: meta.version,
        },
        ImageUpload {
            metadata: u.signed.bytes.clone(),
            signature: u.signed.signature.clone(),
        },
    );
    let mut progress = Progress::new(&node.node_id);
    let reply = smol::block_on(
        session.send_streamed(command, &u.image.parts, &mut |p, sent| {
            if let Some(line) = progress.update(p, sent) {
                log(line);
            }
        }),
    )
    .map_err(|e| match e {
        SessionError::Refused { message, .. } => NodeFailure::Before(format!(
            "node {} refused the update: {message}",
            node.node_id
        )),
        SessionError::Source { .. } => NodeFailure::Source(e.to_string()),
        e => NodeFailure::Before(format!("node {}: {e}", node.node_id)),
    })?;
    let accepted = Instant::now();
    log(format!(
        "node {}: accepted: {}; waiting for it to reboot into the new slot",
        id8(&node.node_id),
        reply.message
    ));
    let old_slot_name = old_slot.as_ref().map(|s| s.slot.clone());
    // A rolled-back verdict the node already reported before this push
    // (an earlier try of the same image) counts only once the node was
    // seen going down.
    let stale_rollback = old_slot
        .as_ref()
        .and_then(|s| s.rolled_back_from.as_deref())
        == Some(meta.image_version.as_str());
    let mut seen_down = false;
    loop {
        if accepted.elapsed() >= u.boot_timeout {
            return Err(NodeFailure::TimedOut(format!(
                "node {}: not back healthy on {} within {} s of accepting the update; rollout stopped (see the node's console)",
                node.node_id,
                meta.image_version,
                u.boot_timeout.as_secs()
            )));
        }
        std::thread::sleep(
            u.poll
                .min(u.boot_timeout.saturating_sub(accepted.elapsed())),
        );
        let info = match node_info(addr, &id) {
            Ok(info) => info,
            Err(_) => {
                // Expected while it reboots.
                seen_down = true;
                continue;
            }
        };
        let Some(slot) = &info.slot else {
            continue;
        };
        if slot.rolled_back_from.as_deref() == Some(meta.image_version.as_str())
            && (!stale_rollback || seen_down)
        {
            let message = format!(
                "node {}: ROLLED BACK to {} (slot {}): the update did not come up healthy; rollout stopped",
                node.node_id, info.image_version, slot.slot
            );
            return Err(NodeFailure::RolledBack {
                info: Box::new(info),
                message,
            });
        }
        if info.image_version == meta.image_version && Some(&slot.slot) != old_slot_name.as_ref() {
            return Ok(NodeOutcome::Healthy {
                total: started.elapsed(),
                downtime: accepted.elapsed(),
                info,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"{
  "format": 1,
  "name": "lockstep-0.2.0-abc",
  "version": "0.2.0-abc",
  "variant": "lavapipe",
  "root_hash": "645c96d49ab0306766aa1c3e95b6a731711d2899a83fefc1172d9c54e5b4eb57",
  "tpm_pcr11_sha256": "f746fcb9267dc7988005856c4138061ce4db5b92222577df04d185187ad4757e",
  "packages": [],
  "slot": SLOT
}"#;

    fn sha(b: &[u8]) -> String {
        hex::encode(Sha256::digest(b))
    }

    /// A fake image: a .raw of 4096 bytes with the root at 1024..3072 and
    /// the verity tree at 3072..3584, and a UKI file beside it.
    fn fake_image(dir: &Path) -> (PathBuf, Vec<u8>, Vec<u8>) {
        let raw: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
        let uki = b"MZ fake unified kernel image".to_vec();
        let slot = format!(
            r#"{{"uki": {{"file": "img.efi", "bytes": {}, "sha256": "{}"}},
                "root": {{"offset": 1024, "bytes": 2048, "sha256": "{}"}},
                "verity": {{"offset": 3072, "bytes": 512, "sha256": "{}"}}}}"#,
            uki.len(),
            sha(&uki),
            sha(&raw[1024..3072]),
            sha(&raw[3072..3584])
        );
        std::fs::write(dir.join("img.raw"), &raw).unwrap();
        std::fs::write(dir.join("img.efi"), &uki).unwrap();
        std::fs::write(
            dir.join("img.manifest.json"),
            MANIFEST.replace("SLOT", &slot),
        )
        .unwrap();
        (dir.join("img.raw"), raw, uki)
    }

    #[test]
    fn an_image_is_read_and_measured_by_ranges() {
        let tmp = tempfile::tempdir().unwrap();
        let (raw_path, raw, uki) = fake_image(tmp.path());
        let image = read_image(&raw_path, None).unwrap();
        assert_eq!(image.manifest.version, "0.2.0-abc");
        assert_eq!(image.artifacts.uki, Artifact::of(&uki));
        assert_eq!(image.artifacts.root, Artifact::of(&raw[1024..3072]));
        assert_eq!(image.artifacts.verity, Artifact::of(&raw[3072..3584]));
        let names: Vec<_> = image.parts.iter().map(|p| p.name).collect();
        assert_eq!(names, ["uki", "root", "verity"]);
        assert_eq!((image.parts[1].offset, image.parts[1].bytes), (1024, 2048));
    }

    #[test]
    fn a_changed_image_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let (raw_path, mut raw, _) = fake_image(tmp.path());
        raw[2000] ^= 1;
        std::fs::write(&raw_path, &raw).unwrap();
        let err = read_image(&raw_path, None).unwrap_err();
        assert!(err.contains("root") && err.contains("SHA-256"), "{err}");
        // A range past the end of the file.
        std::fs::write(&raw_path, &raw[..3000]).unwrap();
        let err = read_image(&raw_path, None).unwrap_err();
        assert!(err.contains("outside the file"), "{err}");
    }

    #[test]
    fn a_changed_uki_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let (raw_path, _, uki) = fake_image(tmp.path());
        let mut other = uki.clone();
        other[0] ^= 1;
        std::fs::write(tmp.path().join("img.efi"), &other).unwrap();
        let err = read_image(&raw_path, None).unwrap_err();
        assert!(err.contains("uki") && err.contains("SHA-256"), "{err}");
    }

    #[test]
    fn a_missing_uki_or_manifest_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let (raw_path, _, _) = fake_image(tmp.path());
        std::fs::remove_file(tmp.path().join("img.efi")).unwrap();
        let err = read_image(&raw_path, None).unwrap_err();
        assert!(err.contains("img.efi"), "{err}");
        let err = read_image(&tmp.path().join("other.raw"), None).unwrap_err();
        assert!(err.contains("other.manifest.json"), "{err}");
        let err = read_image(&tmp.path().join("img.qcow2"), None).unwrap_err();
        assert!(err.contains("NAME.raw"), "{err}");
    }

    #[test]
    fn a_manifest_without_slot_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let (raw_path, _, _) = fake_image(tmp.path());
        std::fs::write(
            tmp.path().join("img.manifest.json"),
            MANIFEST.replace(",\n  \"slot\": SLOT", ""),
        )
        .unwrap();
        let err = read_image(&raw_path, None).unwrap_err();
        assert!(err.contains("not an A/B image"), "{err}");
    }

    #[test]
    fn the_manifest_signature_is_checked_when_a_key_is_given() {
        let tmp = tempfile::tempdir().unwrap();
        let (raw_path, _, _) = fake_image(tmp.path());
        let key = SigningKey::generate();
        let err = read_image(&raw_path, Some(key.public())).unwrap_err();
        assert!(err.contains("minisig"), "{err}");
        let bytes = std::fs::read(tmp.path().join("img.manifest.json")).unwrap();
        std::fs::write(
            tmp.path().join("img.manifest.json.minisig"),
            key.sign_minisign(&bytes, "image").to_file(),
        )
        .unwrap();
        read_image(&raw_path, Some(key.public())).unwrap();
        let other = SigningKey::generate();
        assert!(read_image(&raw_path, Some(other.public())).is_err());
    }

    #[test]
    fn the_version_goes_above_the_fleet_and_every_floor() {
        assert_eq!(choose_version(None, None, []), 1);
        assert_eq!(choose_version(None, Some(4), [2, 3]), 5);
        assert_eq!(choose_version(None, Some(4), [2, 9]), 10);
        assert_eq!(choose_version(None, None, [0, 0]), 1);
        assert_eq!(choose_version(Some(42), Some(50), [60]), 42);
    }

    #[test]
    fn expiry_is_bounded() {
        assert_eq!(expires_at(1000, 7).unwrap(), 1000 + 7 * 86_400);
        assert_eq!(expires_at(1000, 30).unwrap(), 1000 + 30 * 86_400);
        assert!(expires_at(1000, 31).unwrap_err().contains("1 to 30"));
        assert!(expires_at(1000, 0).is_err());
    }

    #[test]
    fn waves_start_with_a_canary_and_double() {
        assert_eq!(wave_sizes(0, None), Vec::<usize>::new());
        assert_eq!(wave_sizes(1, None), [1]);
        assert_eq!(wave_sizes(2, None), [1, 1]);
        assert_eq!(wave_sizes(10, None), [1, 2, 4, 3]);
        assert_eq!(wave_sizes(15, None), [1, 2, 4, 8]);
        assert_eq!(wave_sizes(7, Some(3)), [3, 3, 1]);
        assert_eq!(wave_sizes(3, Some(0)), [1, 1, 1]);
    }

    #[test]
    fn progress_prints_every_ten_percent() {
        let part = StreamPart {
            name: "root",
            path: PathBuf::from("x"),
            offset: 0,
            bytes: 1000,
        };
        let mut p = Progress::new("RWQabcdefghij");
        let lines: Vec<String> = (1..=100).filter_map(|i| p.update(&part, i * 10)).collect();
        assert_eq!(lines.len(), 10, "{lines:?}");
        assert!(
            lines[0].starts_with("node RWQabcde: root 10% ("),
            "{}",
            lines[0]
        );
        assert!(lines[9].contains("root 100%"));
        // One big chunk: one line.
        let mut p = Progress::new("n");
        assert!(p.update(&part, 1000).unwrap().contains("100%"));
    }
}
