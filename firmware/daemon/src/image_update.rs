//! In-place A/B image updates on the node (docs/updates.md): the boot
//! info the image writes, the update floor, and `PushImage`, which streams
//! a signed update into the inactive slot and stages it for the image's
//! root helper (`STATE/update/pending.env`).
//!
//! lockstepd runs unprivileged and never makes a slot bootable itself: it
//! writes the inactive slot's root and verity partitions (which only it and
//! the helper may write), keeps the UKI on the state partition, and writes
//! `pending.env` last. The helper, which runs as root, installs the UKI on
//! the ESP and reboots. Until `pending.env` exists, whatever lies in the
//! inactive slot is never booted, so a failed or cut push that leaves
//! partial bytes there is harmless.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use lockstep_identity::NodeId;
use lockstep_limits::{MAX_BOOT_INFO_BYTES, MAX_SLOT_TEXT_BYTES, MAX_UPDATE_FLOOR_FILE_BYTES};
use lockstep_protocol::admin::{ImageUpload, SlotInfo};
use lockstep_protocol::Frame;
use lockstep_transport::frames::FrameReader;
use lockstep_update::{
    verify_update, Artifact, Slot, UpdateError, VerifiedUpdate, UPDATE_FILE, UPDATE_SIGNATURE_FILE,
};
use serde::Deserialize;

/// The update's files on the state partition: `STATE/update/`.
pub const UPDATE_DIR: &str = "update";
/// The highest update version this node ever accepted.
pub const FLOOR_FILE: &str = "floor";
/// The verified UKI of the staged update.
pub const UKI_FILE: &str = "uki.efi";
/// The UKI while it streams in; deleted on any failure.
const UKI_TMP_FILE: &str = "uki.efi.tmp";
/// What the image's root helper acts on; written last.
pub const PENDING_FILE: &str = "pending.env";

/// One of the two slots of an A/B image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbSlot {
    A,
    B,
}

impl AbSlot {
    pub fn parse(s: &str) -> Option<AbSlot> {
        match s {
            "a" => Some(AbSlot::A),
            "b" => Some(AbSlot::B),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            AbSlot::A => "a",
            AbSlot::B => "b",
        }
    }

    pub fn other(self) -> AbSlot {
        match self {
            AbSlot::A => AbSlot::B,
            AbSlot::B => AbSlot::A,
        }
    }
}

/// What the image says about this boot (`--boot-info`, JSON written at
/// boot by the image).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootInfo {
    /// The slot whose root this boot runs from.
    pub slot: AbSlot,
    /// The image variant: the `target` an update must name.
    pub variant: String,
    pub image_version: String,
    /// The version of an update that did not come up healthy (the image
    /// returned to this slot).
    pub rolled_back_from: Option<String>,
    /// The version the other slot holds, if any.
    pub other_version: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BootInfoFile {
    slot: String,
    variant: String,
    image_version: String,
    rolled_back_from: Option<String>,
    other_version: Option<String>,
}

impl BootInfo {
    /// Parses the boot-info JSON: bounded, no unknown fields, slot `a` or
    /// `b`, every text a short `[A-Za-z0-9._+-]` token (they end up in
    /// `pending.env`, which a root shell script reads).
    pub fn parse(bytes: &[u8]) -> Result<BootInfo, String> {
        if bytes.len() > MAX_BOOT_INFO_BYTES {
            return Err(format!(
                "{} bytes, over the {MAX_BOOT_INFO_BYTES}-byte bound",
                bytes.len()
            ));
        }
        // An object, never serde's array form of a struct.
        let object: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let f: BootInfoFile =
            serde_json::from_value(serde_json::Value::Object(object)).map_err(|e| e.to_string())?;
        let slot = AbSlot::parse(&f.slot)
            .ok_or_else(|| format!("slot {:?}: a boot runs from slot \"a\" or \"b\"", f.slot))?;
        check_token("variant", &f.variant)?;
        check_token("image_version", &f.image_version)?;
        for (field, v) in [
            ("rolled_back_from", &f.rolled_back_from),
            ("other_version", &f.other_version),
        ] {
            if let Some(v) = v {
                check_token(field, v)?;
            }
        }
        Ok(BootInfo {
            slot,
            variant: f.variant,
            image_version: f.image_version,
            rolled_back_from: f.rolled_back_from,
            other_version: f.other_version,
        })
    }

    /// Reads and parses `path`, never more than the bound.
    pub fn read(path: &Path) -> Result<BootInfo, String> {
        let bytes = read_bounded(path, MAX_BOOT_INFO_BYTES)?
            .ok_or_else(|| "the file does not exist".to_string())?;
        BootInfo::parse(&bytes)
    }
}

/// A value that is safe unquoted in a shell `KEY=VALUE` line and in a
/// file name: 1 to `MAX_SLOT_TEXT_BYTES` of `[A-Za-z0-9._+-]`.
fn check_token(field: &str, value: &str) -> Result<(), String> {
    let ok = !value.is_empty()
        && value.len() <= MAX_SLOT_TEXT_BYTES
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{field} {value:?} must be 1 to {MAX_SLOT_TEXT_BYTES} characters of [A-Za-z0-9._+-]"
        ))
    }
}

fn check_sha256(field: &str, value: &str) -> Result<(), String> {
    if value.len() == 64
        && value
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        Ok(())
    } else {
        Err(format!("{field} must be 64 lower-case hex digits"))
    }
}

/// The file's bytes, reading at most `max` (more is an error); `None` if
/// it does not exist.
fn read_bounded(path: &Path, max: usize) -> Result<Option<Vec<u8>>, String> {
    let mut bytes = Vec::new();
    match std::fs::File::open(path) {
        Ok(f) => f
            .take(max as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("{}: {e}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    if bytes.len() > max {
        return Err(format!("{} is over its {max}-byte bound", path.display()));
    }
    Ok(Some(bytes))
}

/// Replaces `path` atomically and durably (a crash leaves the old file or
/// the new one, never a part): a temporary file beside it, synced,
/// renamed, and the directory synced.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("not a file path"))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// The floor in `STATE/update/floor`: missing is 0 (no update installed
/// yet); anything but one decimal `u64` and a newline is an error, never 0,
/// because reading a damaged floor as 0 would reopen every rollback.
pub fn read_floor(state_dir: &Path) -> Result<u64, String> {
    let path = state_dir.join(UPDATE_DIR).join(FLOOR_FILE);
    let Some(bytes) = read_bounded(&path, MAX_UPDATE_FLOOR_FILE_BYTES)? else {
        return Ok(0);
    };
    let text = std::str::from_utf8(&bytes)
        .ok()
        .and_then(|t| t.strip_suffix('\n'))
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()));
    text.and_then(|t| t.parse::<u64>().ok()).ok_or_else(|| {
        format!(
            "{} is not one decimal version and a newline",
            path.display()
        )
    })
}

fn write_floor(state_dir: &Path, floor: u64) -> std::io::Result<()> {
    let dir = state_dir.join(UPDATE_DIR);
    std::fs::create_dir_all(&dir)?;
    write_atomic(&dir.join(FLOOR_FILE), format!("{floor}\n").as_bytes())
}

/// What the root helper installs: `STATE/update/pending.env`, shell-safe
/// `KEY=VALUE` lines (every value checked, never quoted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub version: u64,
    pub image_version: String,
    pub slot: AbSlot,
    pub from_version: String,
    pub root_hash: String,
    pub uki: Artifact,
    pub root: Artifact,
    pub verity: Artifact,
}

impl Pending {
    /// The file's text; refuses any value that is not a plain token, hex
    /// digest or number, so a shell that sources it runs nothing.
    pub fn render(&self) -> Result<String, String> {
        check_token("IMAGE_VERSION", &self.image_version)?;
        check_token("FROM_VERSION", &self.from_version)?;
        check_sha256("ROOT_HASH", &self.root_hash)?;
        let mut out = format!(
            "VERSION={}\nIMAGE_VERSION={}\nSLOT={}\nFROM_VERSION={}\nROOT_HASH={}\n",
            self.version,
            self.image_version,
            self.slot.name(),
            self.from_version,
            self.root_hash
        );
        for (key, a) in [
            ("UKI", &self.uki),
            ("ROOT", &self.root),
            ("VERITY", &self.verity),
        ] {
            check_sha256(&format!("{key}_SHA256"), &a.sha256)?;
            out.push_str(&format!(
                "{key}_BYTES={}\n{key}_SHA256={}\n",
                a.bytes, a.sha256
            ));
        }
        Ok(out)
    }
}

/// The node's update state, decided at start.
pub struct ImageUpdates {
    state_dir: PathBuf,
    slots_dir: Option<PathBuf>,
    boot: Option<BootInfo>,
    /// `None`: the floor file is unreadable (updates disabled).
    floor: Mutex<Option<u64>>,
    /// The version staged in the other slot by a push since start.
    staged: Mutex<Option<String>>,
    /// Why `PushImage` is refused; `None`: updates are enabled.
    disabled: Option<String>,
    /// Free bytes the state partition keeps after the UKI
    /// (`--update-free-floor-bytes`).
    free_floor: u64,
}

impl ImageUpdates {
    /// Reads the boot info and the floor. Never fails: a node with a bad
    /// boot info or floor serves jobs with updates disabled, and says why
    /// loudly (the fleet sees it refuse `PushImage`).
    pub fn open(
        state_dir: &Path,
        slots_dir: Option<PathBuf>,
        boot_info: Option<&Path>,
        free_floor: u64,
    ) -> ImageUpdates {
        let boot = boot_info.and_then(|p| match BootInfo::read(p) {
            Ok(b) => Some(b),
            Err(e) => {
                tracing::error!(file = %p.display(), error = %e, "BOOT INFO UNUSABLE: serving with image updates disabled; the image writes this file at boot: check its boot-info service");
                None
            }
        });
        let floor = if boot_info.is_some() || slots_dir.is_some() {
            match read_floor(state_dir) {
                Ok(f) => Some(f),
                Err(e) => {
                    tracing::error!(error = %e, "UPDATE FLOOR UNREADABLE: serving with image updates disabled (never treating it as 0, which would allow rollbacks); restore STATE/update/floor with the highest update version this node installed");
                    None
                }
            }
        } else {
            Some(0)
        };
        let disabled = match (&slots_dir, boot_info, &boot, floor) {
            (None, _, _, _) | (_, None, _, _) => Some(
                "this node is not an A/B image: no --slots/--boot-info; it cannot install image updates (reflash it with an A/B image); nothing changed"
                    .to_string(),
            ),
            (_, Some(p), None, _) => Some(format!(
                "this node's boot info ({}) is unusable (see its log), so it does not know which slot it runs: image updates are disabled until the image writes a valid one; nothing changed",
                p.display()
            )),
            (_, _, _, None) => Some(format!(
                "this node's update floor ({}) is unreadable (see its log): image updates are disabled until it is restored; nothing changed",
                state_dir.join(UPDATE_DIR).join(FLOOR_FILE).display()
            )),
            _ => None,
        };
        if disabled.is_none() {
            // A push cut short by a crash leaves its temporary UKI.
            let _ = std::fs::remove_file(state_dir.join(UPDATE_DIR).join(UKI_TMP_FILE));
            if let Some(b) = &boot {
                tracing::info!(slot = b.slot.name(), variant = %b.variant, image = %b.image_version, floor = floor.unwrap_or(0), "A/B image: updates enabled");
            }
        }
        ImageUpdates {
            state_dir: state_dir.to_path_buf(),
            slots_dir,
            boot,
            floor: Mutex::new(floor),
            staged: Mutex::new(None),
            disabled,
            free_floor,
        }
    }

    /// What the image said about this boot, if it said so validly.
    pub fn boot(&self) -> Option<&BootInfo> {
        self.boot.as_ref()
    }

    fn floor(&self) -> Option<u64> {
        *self.floor.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The slot and update state `NodeInfo` reports; `None` without a
    /// valid boot info, or when the floor is unknown (unreadable).
    pub fn slot_info(&self) -> Option<SlotInfo> {
        let boot = self.boot.as_ref()?;
        let floor = self.floor()?;
        let staged = self
            .staged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Some(SlotInfo {
            slot: boot.slot.name().to_string(),
            variant: boot.variant.clone(),
            update_floor: floor,
            rolled_back_from: boot.rolled_back_from.clone(),
            other_version: staged.or_else(|| boot.other_version.clone()),
        })
    }
}

/// The name of an `UpdateError` variant (`NotNewer`, ...), so a refusal
/// says which check failed in a word a script can match.
fn variant_name(e: &UpdateError) -> String {
    format!("{e:?}")
        .split(|c: char| !c.is_ascii_alphanumeric())
        .next()
        .unwrap_or_default()
        .to_string()
}

fn refused(e: &UpdateError) -> String {
    format!(
        "image update refused ({}): {e}; nothing installed",
        variant_name(e)
    )
}

/// Opens the inactive slot's `part` partition for writing at offset 0
/// (never created or truncated: it is a block device on the appliance),
/// and checks that it holds at least `needed` bytes.
fn open_partition(
    slots_dir: &Path,
    part: &str,
    slot: AbSlot,
    needed: u64,
) -> Result<(std::fs::File, PathBuf), String> {
    let path = slots_dir.join(format!("lockstep-{part}-{}", slot.name()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|e| {
            format!(
                "cannot open slot {}'s {part} partition {}: {e}; is this an A/B image (--slots)? nothing installed",
                slot.name(),
                path.display()
            )
        })?;
    // Seeking to the end gives the size of a block device as of a file
    // (metadata().len() is 0 for a device).
    let size = f
        .seek(SeekFrom::End(0))
        .and_then(|size| f.seek(SeekFrom::Start(0)).map(|_| size))
        .map_err(|e| format!("cannot size {}: {e}; nothing installed", path.display()))?;
    if size < needed {
        return Err(format!(
            "slot {}'s {part} partition holds {size} bytes; the update needs {needed}: build a smaller image, or reflash with larger slots; nothing installed",
            slot.name()
        ));
    }
    Ok((f, path))
}

/// One artifact on its way to disk.
struct Sink {
    slot: Slot,
    file: std::fs::File,
    path: PathBuf,
}

/// Receives a `PushImage`'s data chunks into the inactive slot and the
/// state partition, and stages the update. Refusals are one line; on any
/// failure nothing is staged (`pending.env`, the floor and `uki.efi`
/// untouched) and the temporary UKI is deleted.
pub async fn push(
    reader: &mut FrameReader,
    updates: &ImageUpdates,
    trusted: &[NodeId],
    upload: Option<ImageUpload>,
    image_version: &str,
    version: u64,
) -> Result<String, String> {
    if let Some(why) = &updates.disabled {
        return Err(why.clone());
    }
    let (Some(boot), Some(slots_dir)) = (&updates.boot, &updates.slots_dir) else {
        return Err(
            "this node is not an A/B image: no --slots/--boot-info; nothing changed".into(),
        );
    };
    let upload = upload.ok_or(
        "an image push without the update (update.json and its signature); push with `lockstep-fleet`; nothing changed",
    )?;
    let floor = updates
        .floor()
        .ok_or("this node's update floor is unreadable; nothing changed")?;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let verified = verify_update(
        &upload.metadata,
        &upload.signature,
        trusted,
        floor,
        now,
        &boot.variant,
    )
    .map_err(|e| refused(&e))?;
    let m = verified.metadata();
    if m.image_version != image_version || m.version != version {
        return Err(format!(
            "the signed command installs {image_version} (version {version}) but the update is {} (version {}): they come from two rollouts; push again with `lockstep-fleet`; nothing installed",
            m.image_version, m.version
        ));
    }
    // The helper's shell reads these values; the metadata check allows
    // any printable text.
    check_token("the update's image_version", &m.image_version).map_err(|e| {
        format!("{e}; sign an image whose version is a plain token; nothing installed")
    })?;
    let dir = updates.state_dir.join(UPDATE_DIR);
    let pending = dir.join(PENDING_FILE);
    if pending.exists() {
        return Err(format!(
            "an update is already staged ({}): the node is installing it and rebooting; push again once it is back; nothing changed",
            pending.display()
        ));
    }
    let target = boot.slot.other();
    // Every check that needs no artifact byte comes first.
    let (root, root_path) = open_partition(slots_dir, "root", target, m.root.bytes)?;
    let (verity, verity_path) = open_partition(slots_dir, "verity", target, m.verity.bytes)?;
    std::fs::create_dir_all(&dir)
        .map_err(|e| format!("cannot create {}: {e}; nothing installed", dir.display()))?;
    let free = crate::retention::free_bytes(&dir).map_err(|e| {
        format!(
            "cannot read the free space of {}: {e}; nothing installed",
            dir.display()
        )
    })?;
    let needed = updates.free_floor.saturating_add(m.uki.bytes);
    if free < needed {
        return Err(format!(
            "the state partition has {free} bytes free; the UKI needs {} above its {}-byte free floor (--update-free-floor-bytes): free the state partition; nothing installed",
            m.uki.bytes, updates.free_floor
        ));
    }
    let uki_tmp = dir.join(UKI_TMP_FILE);
    let uki = std::fs::File::create(&uki_tmp).map_err(|e| {
        format!(
            "cannot create {}: {e}; nothing installed",
            uki_tmp.display()
        )
    })?;
    let sinks = vec![
        Sink {
            slot: Slot::Uki,
            file: uki,
            path: uki_tmp.clone(),
        },
        Sink {
            slot: Slot::Root,
            file: root,
            path: root_path,
        },
        Sink {
            slot: Slot::Verity,
            file: verity,
            path: verity_path,
        },
    ];
    // Partitions may now hold partial bytes of a failed push: harmless,
    // the inactive slot is not bootable until pending.env is written.
    let outcome = match receive(reader, &verified, sinks).await {
        Ok(files) => stage(updates, &upload, &verified, boot, target, files).await,
        Err(e) => Err(e),
    };
    if let Err(e) = outcome {
        let _ = std::fs::remove_file(&uki_tmp);
        return Err(e);
    }
    let m = verified.metadata();
    *updates.staged.lock().unwrap_or_else(|e| e.into_inner()) = Some(m.image_version.clone());
    Ok(format!(
        "update {} (version {}) written to slot {} and verified; installing it and rebooting",
        m.image_version,
        m.version,
        target.name()
    ))
}

/// Streams the data chunks into `sinks`, in order, each exactly its
/// artifact's length (chunks never span two artifacts) and hash, within
/// the upload deadline; returns the files, written but not yet synced.
async fn receive(
    reader: &mut FrameReader,
    verified: &VerifiedUpdate,
    sinks: Vec<Sink>,
) -> Result<Vec<std::fs::File>, String> {
    let m = verified.metadata();
    let total = m
        .uki
        .bytes
        .saturating_add(m.root.bytes)
        .saturating_add(m.verity.bytes);
    // The whole upload has a deadline, as for bundles and job inputs: a
    // peer that trickles cannot hold the admin lock for ever.
    let deadline = Instant::now()
        + Duration::from_millis(lockstep_limits::FRAME_READ_TIMEOUT_MS)
        + Duration::from_secs(total / lockstep_limits::PEER_RATE_MIN_BYTES_PER_S);
    let mut files = Vec::with_capacity(sinks.len());
    for Sink {
        slot,
        mut file,
        path,
    } in sinks
    {
        let started = Instant::now();
        let mut check = verified.artifact_check(slot);
        while check.received() < check.announced() {
            let left = deadline.saturating_duration_since(Instant::now());
            let next = crate::stream::within(left, reader.next())
                .await
                .ok_or_else(|| {
                    format!(
                        "the peer stalled: the image did not arrive at {} bytes/s or faster; push again over a faster link; nothing installed",
                        lockstep_limits::PEER_RATE_MIN_BYTES_PER_S
                    )
                })?
                .map_err(|e| format!("the image upload broke off: {e}; push again; nothing installed"))?;
            let chunk = match next {
                Some(Frame::Data(chunk)) => chunk,
                Some(Frame::Control(_)) => {
                    return Err("a control message arrived inside the image's data; nothing installed".into())
                }
                None => {
                    return Err(format!(
                        "the stream ended after {} of the {} bytes of the {slot}; push again; nothing installed",
                        check.received(),
                        check.announced()
                    ))
                }
            };
            if chunk.is_empty() {
                return Err("an empty data chunk inside the image's data: every chunk carries bytes; nothing installed".into());
            }
            check.update(&chunk).map_err(|e| {
                format!(
                    "{} (data chunks never span two artifacts: the {slot}'s last chunk ends at its length)",
                    refused(&e)
                )
            })?;
            // One chunk (at most a wire chunk) is all that is held; the
            // write runs off the network executor.
            file = smol::unblock(move || file.write_all(&chunk).map(|()| file))
                .await
                .map_err(|e| {
                    format!(
                        "cannot write the {slot} to {}: {e}; nothing installed",
                        path.display()
                    )
                })?;
        }
        check.finish().map_err(|e| refused(&e))?;
        tracing::info!(
            artifact = %slot,
            bytes = m.artifact(slot).bytes,
            ms = started.elapsed().as_millis() as u64,
            to = %path.display(),
            "image update: artifact written and verified"
        );
        files.push(file);
    }
    Ok(files)
}

/// Makes a received update durable and staged, in this order: partitions
/// and UKI synced, `uki.efi` renamed into place, the signed metadata kept,
/// the floor raised, and `pending.env` written last (what the helper acts
/// on). The floor goes up before `pending.env` so that no crash can leave
/// an installable update behind a floor that would take the same version
/// again.
async fn stage(
    updates: &ImageUpdates,
    upload: &ImageUpload,
    verified: &VerifiedUpdate,
    boot: &BootInfo,
    target: AbSlot,
    files: Vec<std::fs::File>,
) -> Result<(), String> {
    let m = verified.metadata().clone();
    let pending = Pending {
        version: m.version,
        image_version: m.image_version.clone(),
        slot: target,
        from_version: boot.image_version.clone(),
        root_hash: m.root_hash.clone(),
        uki: m.uki.clone(),
        root: m.root.clone(),
        verity: m.verity.clone(),
    }
    .render()
    .map_err(|e| format!("{e}; nothing installed"))?;
    let dir = updates.state_dir.join(UPDATE_DIR);
    let state_dir = updates.state_dir.clone();
    let (metadata, signature) = (upload.metadata.clone(), upload.signature.clone());
    let version = m.version;
    let durable = smol::unblock(move || -> Result<(), String> {
        for f in &files {
            f.sync_all()
                .map_err(|e| format!("cannot sync the written slot: {e}; nothing installed"))?;
        }
        drop(files);
        let io = |what: &str, e: std::io::Error| format!("cannot {what}: {e}; nothing installed");
        std::fs::rename(dir.join(UKI_TMP_FILE), dir.join(UKI_FILE))
            .map_err(|e| io("keep the UKI", e))?;
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("sync the update directory", e))?;
        write_atomic(&dir.join(UPDATE_FILE), &metadata).map_err(|e| io("keep update.json", e))?;
        write_atomic(&dir.join(UPDATE_SIGNATURE_FILE), signature.as_bytes())
            .map_err(|e| io("keep update.json.minisig", e))?;
        write_floor(&state_dir, version).map_err(|e| io("raise the update floor", e))?;
        Ok(())
    })
    .await;
    durable?;
    *updates.floor.lock().unwrap_or_else(|e| e.into_inner()) = Some(version);
    tracing::info!(version, "image update: floor raised");
    let path = updates.state_dir.join(UPDATE_DIR).join(PENDING_FILE);
    let pending_path = path.clone();
    smol::unblock(move || write_atomic(&pending_path, pending.as_bytes()))
        .await
        .map_err(|e| {
            format!(
                "cannot write {}: {e}; the floor is already {version}, so push this image again signed with a higher version",
                path.display()
            )
        })?;
    tracing::info!(version, image = %m.image_version, slot = target.name(), "image update staged: pending.env written; the image's helper installs it and reboots");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"slot":"a","variant":"lavapipe","image_version":"0.1.0-abc","rolled_back_from":null,"other_version":"0.0.9-x"}"#;

    #[test]
    fn boot_info_parses_and_refuses_hostile_files() {
        let b = BootInfo::parse(GOOD.as_bytes()).unwrap();
        assert_eq!(b.slot, AbSlot::A);
        assert_eq!(b.slot.other(), AbSlot::B);
        assert_eq!(b.variant, "lavapipe");
        assert_eq!(b.image_version, "0.1.0-abc");
        assert_eq!(b.other_version.as_deref(), Some("0.0.9-x"));
        for (bad, why) in [
            (GOOD.replace("\"a\"", "\"c\""), "slot"),
            (GOOD.replace("\"a\"", "\"A\""), "slot"),
            (GOOD.replace("0.1.0-abc", "0.1.0 abc"), "image_version"),
            (GOOD.replace("0.1.0-abc", "$(reboot)"), "image_version"),
            (GOOD.replace("0.1.0-abc", "a\\nb"), "image_version"),
            (GOOD.replace("0.1.0-abc", ""), "image_version"),
            (GOOD.replace("0.1.0-abc", &"9".repeat(129)), "image_version"),
            (GOOD.replace("lavapipe", "lava/pipe"), "variant"),
            (GOOD.replace("0.0.9-x", "x;y"), "other_version"),
            (GOOD.replace("}", r#","extra":1}"#), "unknown field"),
            (
                GOOD.replace(r#""variant":"lavapipe","#, ""),
                "missing field",
            ),
            ("not json".to_string(), "expected"),
            ("[]".to_string(), "invalid type"),
            (
                r#"["a","lavapipe","0.1.0-abc",null,null]"#.to_string(),
                "invalid type",
            ),
        ] {
            let err = BootInfo::parse(bad.as_bytes()).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
        let mut big = GOOD.as_bytes().to_vec();
        big.resize(MAX_BOOT_INFO_BYTES + 1, b' ');
        assert!(BootInfo::parse(&big).unwrap_err().contains("bound"));
    }

    #[test]
    fn boot_info_reads_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("boot.json");
        assert!(BootInfo::read(&path)
            .unwrap_err()
            .contains("does not exist"));
        std::fs::write(&path, vec![b' '; 1 << 20]).unwrap();
        assert!(BootInfo::read(&path).unwrap_err().contains("bound"));
        std::fs::write(&path, GOOD).unwrap();
        assert_eq!(BootInfo::read(&path).unwrap().slot, AbSlot::A);
    }

    #[test]
    fn the_floor_is_missing_zero_and_garbage_an_error() {
        let state = tempfile::tempdir().unwrap();
        assert_eq!(read_floor(state.path()), Ok(0));
        write_floor(state.path(), 7).unwrap();
        assert_eq!(read_floor(state.path()), Ok(7));
        let path = state.path().join(UPDATE_DIR).join(FLOOR_FILE);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "7\n");
        for bad in [
            "",
            "\n",
            "7",
            "-1\n",
            "7 \n",
            "x\n",
            "99999999999999999999999\n",
        ] {
            std::fs::write(&path, bad).unwrap();
            assert!(read_floor(state.path()).is_err(), "{bad:?}");
        }
        std::fs::write(&path, vec![b'1'; 1000]).unwrap();
        assert!(read_floor(state.path()).is_err());
    }

    fn pending() -> Pending {
        Pending {
            version: 7,
            image_version: "0.2.0-abc".into(),
            slot: AbSlot::B,
            from_version: "0.1.0-abc".into(),
            root_hash: "c".repeat(64),
            uki: Artifact::of(b"uki"),
            root: Artifact::of(b"root"),
            verity: Artifact::of(b"verity"),
        }
    }

    #[test]
    fn pending_env_is_plain_key_value_lines() {
        let text = pending().render().unwrap();
        let uki = Artifact::of(b"uki");
        let expected = format!(
            "VERSION=7\nIMAGE_VERSION=0.2.0-abc\nSLOT=b\nFROM_VERSION=0.1.0-abc\nROOT_HASH={}\nUKI_BYTES=3\nUKI_SHA256={}\nROOT_BYTES=4\nROOT_SHA256={}\nVERITY_BYTES=6\nVERITY_SHA256={}\n",
            "c".repeat(64),
            uki.sha256,
            Artifact::of(b"root").sha256,
            Artifact::of(b"verity").sha256
        );
        assert_eq!(text, expected);
        for line in text.lines() {
            let (k, v) = line.split_once('=').unwrap();
            assert!(k
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b == b'_' || b.is_ascii_digit()));
            assert!(v
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b)));
        }
    }

    #[test]
    fn pending_env_refuses_unsafe_values() {
        let mut p = pending();
        p.image_version = "0.2.0;reboot".into();
        assert!(p.render().is_err());
        let mut p = pending();
        p.from_version = "dev (lockstepd 0.1.0)".into();
        assert!(p.render().is_err());
        let mut p = pending();
        p.root_hash = "C".repeat(64);
        assert!(p.render().is_err());
        let mut p = pending();
        p.root.sha256 = "$(x)".into();
        assert!(p.render().is_err());
    }

    #[test]
    fn atomic_writes_replace_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ready");
        write_atomic(&path, b"one\n").unwrap();
        write_atomic(&path, b"two\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_partition_is_sized_by_seeking_and_never_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lockstep-root-b");
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(1000).unwrap();
        drop(f);
        let (_, p) = open_partition(dir.path(), "root", AbSlot::B, 1000).unwrap();
        assert_eq!(p, path);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 1000);
        let err = open_partition(dir.path(), "root", AbSlot::B, 1001).unwrap_err();
        assert!(
            err.contains("slot b's root partition holds 1000 bytes; the update needs 1001"),
            "{err}"
        );
        assert!(open_partition(dir.path(), "verity", AbSlot::B, 1).is_err());
        assert!(!dir.path().join("lockstep-verity-b").exists());
    }

    #[test]
    fn refusals_name_the_update_error() {
        let e = UpdateError::NotNewer {
            version: 3,
            floor: 7,
        };
        let r = refused(&e);
        assert!(
            r.starts_with("image update refused (NotNewer): rollback or replay refused"),
            "{r}"
        );
        assert_eq!(variant_name(&UpdateError::Unsigned), "Unsigned");
    }
}
