//! Kernel bundles pushed by the fleet, kept in the state directory:
//!
//! ```text
//! STATE/bundles/<bundle id>.v<version>/manifest.json, *.spv, release.json(.minisig)
//! STATE/bundles/ACTIVE      {"bundle_id", "version", "floor"} (absent: the image's bundle)
//! ```
//!
//! A bundle directory is only ever created whole (written under a
//! temporary name, verified, renamed, the directory synced), and `ACTIVE`
//! is one record replaced by one atomic rename: the active bundle's id, ITS
//! release version, and the floor (the highest version this node ever
//! activated). So a crash at any point leaves the old bundle active with
//! its version or the new one with its version, and the floor survives even
//! when the active bundle can no longer be loaded: a rollback can never be
//! pushed after a crash. The directory name carries the version, so the
//! same bundle re-signed with a higher version never overwrites the active
//! one. Every load re-verifies hashes, float model and the operator's
//! release signature.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use lockstep_identity::NodeId;
use lockstep_kernels::Bundle;
use lockstep_limits::{MAX_ACTIVE_RECORD_BYTES, MAX_STORED_BUNDLES};
use lockstep_protocol::admin::{
    verify_release, ReleaseStatement, RELEASE_FILE, RELEASE_SIGNATURE_FILE,
};
use serde::{Deserialize, Serialize};

const ACTIVE: &str = "ACTIVE";
/// Prefixes of what a crash may leave behind; swept at start.
const INCOMING_PREFIX: &str = ".incoming-";
const ACTIVE_TMP_PREFIX: &str = ".ACTIVE.tmp-";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("bundle store {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Bundle(#[from] lockstep_kernels::BundleError),
    #[error("{0}")]
    Release(#[from] lockstep_protocol::admin::AdminError),
    #[error("rollback refused: release version {version} is not newer than {active}, the highest version this node has activated; sign the bundle with a higher version")]
    Rollback { version: u64, active: u64 },
    #[error("the pushed bundle ({id}, release {version}) is not the one the signed command names; refusing it")]
    NotNamed { id: String, version: u64 },
    #[error("{path} is not a valid ACTIVE record ({reason}); push a bundle again to replace it")]
    BadRecord { path: PathBuf, reason: String },
    #[error("the stored bundle for ACTIVE ({id}, release {version}) holds release {found}; push a bundle again")]
    Mismatch {
        id: String,
        version: u64,
        found: u64,
    },
    /// Test builds only: the simulated kill -9 (see `crash_after`).
    #[cfg(test)]
    #[error("simulated crash")]
    Crash,
}

/// What `ACTIVE` records, and what the node runs: the one truth about the
/// bundle shared by the worker, the network tasks and certification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveRecord {
    pub bundle_id: String,
    /// The release version of `bundle_id` (0: the image's own bundle).
    pub version: u64,
    /// The highest release version this node ever activated; a push must
    /// be newer than this, whatever is running now.
    pub floor: u64,
}

/// The active bundle as the running node sees it. Only the worker changes
/// it, in the same step that makes a switch effective (bundle_switch.rs),
/// right after `ACTIVE` is durably replaced.
#[derive(Debug)]
pub struct ActiveBundle(RwLock<ActiveRecord>);

impl ActiveBundle {
    pub fn new(record: ActiveRecord) -> ActiveBundle {
        ActiveBundle(RwLock::new(record))
    }

    pub fn get(&self) -> ActiveRecord {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn id(&self) -> String {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .bundle_id
            .clone()
    }

    pub fn set(&self, record: ActiveRecord) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = record;
    }
}

/// A verified bundle and its signed release.
#[derive(Debug)]
pub struct Stored {
    pub bundle: Bundle,
    pub release: ReleaseStatement,
}

/// What the store holds at start.
#[derive(Debug)]
pub struct Boot {
    /// The active pushed bundle, verified; `None`: the image's bundle.
    pub stored: Option<Stored>,
    /// The rollback floor, kept even when `stored` failed to load.
    pub floor: u64,
    /// Why the recorded active bundle could not be loaded, if it could not.
    pub problem: Option<StoreError>,
}

/// An uploaded bundle, as received.
#[derive(Clone, Copy)]
pub struct Upload<'a> {
    pub manifest: &'a [u8],
    pub release: &'a [u8],
    pub release_signature: &'a str,
    pub files: &'a [(String, Vec<u8>)],
}

pub struct BundleStore {
    dir: PathBuf,
    /// Test builds only: file operations left before a simulated kill -9.
    #[cfg(test)]
    crash: std::sync::atomic::AtomicUsize,
    /// Test builds only: file operations so far.
    #[cfg(test)]
    steps: std::sync::atomic::AtomicUsize,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A stored bundle's directory name: id and version, so that two releases
/// of the same bundle never share (and overwrite) a directory.
fn dir_name(id: &str, version: u64) -> String {
    format!("{id}.v{version}")
}

/// The version in a bundle directory's name (`None`: not a bundle
/// directory; the pre-version layout, a bare id, gives `Some(None)`).
fn parse_dir_name(name: &str) -> Option<Option<u64>> {
    let (id, version) = match name.split_once(".v") {
        Some((id, v)) => (id, Some(v.parse::<u64>().ok()?)),
        None => (name, None),
    };
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(version)
}

impl BundleStore {
    pub fn new(state_dir: &Path) -> BundleStore {
        BundleStore {
            dir: state_dir.join("bundles"),
            #[cfg(test)]
            crash: std::sync::atomic::AtomicUsize::new(usize::MAX),
            #[cfg(test)]
            steps: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Test builds only: fail (as if killed, leaving everything as it is)
    /// before the `n`th next file operation.
    #[cfg(test)]
    pub fn crash_after(&self, n: usize) {
        self.crash.store(n, std::sync::atomic::Ordering::SeqCst);
    }

    /// Called before each file operation that changes the store.
    fn step(&self) -> Result<(), StoreError> {
        #[cfg(test)]
        {
            use std::sync::atomic::Ordering;
            self.steps.fetch_add(1, Ordering::SeqCst);
            let left = self.crash.load(Ordering::SeqCst);
            if left == 0 {
                return Err(StoreError::Crash);
            }
            if left != usize::MAX {
                self.crash.store(left - 1, Ordering::SeqCst);
            }
        }
        Ok(())
    }

    /// The `ACTIVE` record; `None` when the image's bundle is active.
    pub fn record(&self) -> Result<Option<ActiveRecord>, StoreError> {
        let path = self.dir.join(ACTIVE);
        let mut text = String::new();
        match File::open(&path) {
            Ok(f) => f
                .take(MAX_ACTIVE_RECORD_BYTES as u64 + 1)
                .read_to_string(&mut text)
                .map_err(io(&path))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path)(e)),
        };
        let bad = |reason: String| StoreError::BadRecord {
            path: path.clone(),
            reason,
        };
        if text.len() > MAX_ACTIVE_RECORD_BYTES {
            return Err(bad(format!("over {MAX_ACTIVE_RECORD_BYTES} bytes")));
        }
        let trimmed = text.trim();
        // The layout before records: a bare bundle id, the version only in
        // the bundle's release statement.
        if parse_dir_name(trimmed) == Some(None) {
            let release = self.dir.join(trimmed).join(RELEASE_FILE);
            let bytes = std::fs::read(&release).map_err(io(&release))?;
            let statement: ReleaseStatement = serde_json::from_slice(&bytes)
                .map_err(|e| bad(format!("its bundle's release: {e}")))?;
            return Ok(Some(ActiveRecord {
                bundle_id: trimmed.to_string(),
                version: statement.version,
                floor: statement.version,
            }));
        }
        let record: ActiveRecord = serde_json::from_str(trimmed).map_err(|e| bad(e.to_string()))?;
        if parse_dir_name(&record.bundle_id) != Some(None) || record.version > record.floor {
            return Err(bad("bundle id or version out of range".into()));
        }
        Ok(Some(record))
    }

    fn record_dir(&self, record: &ActiveRecord) -> PathBuf {
        let versioned = self.dir.join(dir_name(&record.bundle_id, record.version));
        if versioned.exists() {
            versioned
        } else {
            // The pre-version layout.
            self.dir.join(&record.bundle_id)
        }
    }

    /// At start: sweeps what a crash left behind, then loads the recorded
    /// active bundle with every check. The floor survives a bundle that no
    /// longer loads; if `ACTIVE` itself is unreadable, the floor is the
    /// highest version among the stored bundles (conservative: a rollback
    /// stays impossible).
    pub fn boot(&self, trusted: &[NodeId]) -> Boot {
        self.sweep();
        match self.record() {
            Ok(None) => Boot {
                stored: None,
                floor: 0,
                problem: None,
            },
            Ok(Some(record)) => match self.load_record(&record, trusted) {
                Ok(stored) => Boot {
                    stored: Some(stored),
                    floor: record.floor,
                    problem: None,
                },
                Err(e) => Boot {
                    stored: None,
                    floor: record.floor,
                    problem: Some(e),
                },
            },
            Err(e) => Boot {
                stored: None,
                floor: self.highest_stored_version(),
                problem: Some(e),
            },
        }
    }

    fn load_record(&self, record: &ActiveRecord, trusted: &[NodeId]) -> Result<Stored, StoreError> {
        let stored = self.load(&self.record_dir(record), trusted)?;
        if stored.bundle.id_hex() != record.bundle_id || stored.release.version != record.version {
            return Err(StoreError::Mismatch {
                id: record.bundle_id.clone(),
                version: record.version,
                found: stored.release.version,
            });
        }
        Ok(stored)
    }

    fn highest_stored_version(&self) -> u64 {
        std::fs::read_dir(&self.dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| parse_dir_name(&e.file_name().to_string_lossy()).flatten())
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0)
    }

    /// Removes temporary files and directories of interrupted pushes.
    fn sweep(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(INCOMING_PREFIX) {
                let _ = std::fs::remove_dir_all(e.path());
            } else if name.starts_with(ACTIVE_TMP_PREFIX) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    fn load(&self, dir: &Path, trusted: &[NodeId]) -> Result<Stored, StoreError> {
        let bundle = Bundle::from_dir(dir)?;
        let release_path = dir.join(RELEASE_FILE);
        let release = std::fs::read(&release_path).map_err(io(&release_path))?;
        let sig_path = dir.join(RELEASE_SIGNATURE_FILE);
        let sig = std::fs::read_to_string(&sig_path).map_err(io(&sig_path))?;
        let release = verify_release(&release, &sig, trusted, &bundle.id_hex())?;
        Ok(Stored { bundle, release })
    }

    /// Whether the release of the recorded bundle is signed by one of
    /// `keys` (an operator-set change must not orphan the active bundle).
    pub fn release_signed_by(
        &self,
        record: &ActiveRecord,
        keys: &[NodeId],
    ) -> Result<(), StoreError> {
        let dir = self.record_dir(record);
        let release_path = dir.join(RELEASE_FILE);
        let release = std::fs::read(&release_path).map_err(io(&release_path))?;
        let sig_path = dir.join(RELEASE_SIGNATURE_FILE);
        let sig = std::fs::read_to_string(&sig_path).map_err(io(&sig_path))?;
        verify_release(&release, &sig, keys, &record.bundle_id)?;
        Ok(())
    }

    /// Writes an uploaded bundle, then loads it back from disk with every
    /// check (hashes, float model, release signature), checks it is the
    /// `named` (id, version) and newer than `floor`, and only then moves it
    /// into place (its own directory: never the active one, whose version
    /// is at most the floor). On any failure nothing is left behind and the
    /// stored bundles are untouched.
    pub fn stage(
        &self,
        upload: &Upload<'_>,
        trusted: &[NodeId],
        named: (&str, u64),
        floor: u64,
    ) -> Result<Stored, StoreError> {
        let Upload {
            manifest,
            release,
            release_signature,
            files,
        } = *upload;
        self.step()?;
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let tmp = self.dir.join(format!(
            "{INCOMING_PREFIX}{}-{}",
            std::process::id(),
            hex::encode(rand_bytes())
        ));
        let result = (|| {
            self.step()?;
            std::fs::create_dir(&tmp).map_err(io(&tmp))?;
            self.write_file(&tmp.join("manifest.json"), manifest)?;
            self.write_file(&tmp.join(RELEASE_FILE), release)?;
            self.write_file(
                &tmp.join(RELEASE_SIGNATURE_FILE),
                release_signature.as_bytes(),
            )?;
            for (name, bytes) in files {
                self.write_file(&tmp.join(name), bytes)?;
            }
            let stored = self.load(&tmp, trusted)?;
            let (id, version) = (stored.bundle.id_hex(), stored.release.version);
            if id != named.0 || version != named.1 {
                return Err(StoreError::NotNamed { id, version });
            }
            if version <= floor {
                return Err(StoreError::Rollback {
                    version,
                    active: floor,
                });
            }
            let dest = self.dir.join(dir_name(&id, version));
            self.step()?;
            let _ = std::fs::remove_dir_all(&dest);
            self.step()?;
            std::fs::rename(&tmp, &dest).map_err(io(&dest))?;
            // ACTIVE will point here: the rename must be durable first.
            self.step()?;
            sync_dir(&self.dir)?;
            Ok(stored)
        })();
        match &result {
            // A kill leaves everything as it is; `boot` sweeps it.
            #[cfg(test)]
            Err(StoreError::Crash) => {}
            Err(_) => {
                let _ = std::fs::remove_dir_all(&tmp);
            }
            Ok(_) => {}
        }
        result
    }

    /// Makes `record` the active bundle in one atomic, durable step (the
    /// whole record in a synced temporary file, renamed over `ACTIVE`, the
    /// directory synced), then deletes all but the newest
    /// `MAX_STORED_BUNDLES - 1` other bundles, keeping `previous`.
    pub fn activate(
        &self,
        record: &ActiveRecord,
        previous: Option<&ActiveRecord>,
    ) -> Result<(), StoreError> {
        let bytes = lockstep_canonical_json::to_vec(record).map_err(|e| StoreError::BadRecord {
            path: self.dir.join(ACTIVE),
            reason: e.to_string(),
        })?;
        let tmp = self
            .dir
            .join(format!("{ACTIVE_TMP_PREFIX}{}", std::process::id()));
        self.write_file(&tmp, &bytes)?;
        let path = self.dir.join(ACTIVE);
        self.step()?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        self.step()?;
        sync_dir(&self.dir)?;
        // The switch is recorded; a failed clean-up only costs disk until
        // the next switch.
        let keep = [
            Some(dir_name(&record.bundle_id, record.version)),
            previous.map(|p| dir_name(&p.bundle_id, p.version)),
        ];
        if let Err(e) = self.prune(&keep) {
            tracing::warn!(error = %e, "could not delete old bundles");
        }
        Ok(())
    }

    /// Forgets a staged bundle that failed its self-test.
    pub fn discard(&self, id: &str, version: u64) {
        let _ = std::fs::remove_dir_all(self.dir.join(dir_name(id, version)));
    }

    fn prune(&self, keep: &[Option<String>]) -> Result<(), StoreError> {
        let entries = std::fs::read_dir(&self.dir).map_err(io(&self.dir))?;
        let mut others = Vec::new();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if parse_dir_name(&name).is_some() && !keep.contains(&Some(name.clone())) {
                let modified = e.metadata().and_then(|m| m.modified()).ok();
                others.push((modified, name));
            }
        }
        others.sort();
        let kept = keep.iter().flatten().count();
        let room = MAX_STORED_BUNDLES.saturating_sub(kept);
        let drop = others.len().saturating_sub(room);
        for (_, name) in others.into_iter().take(drop) {
            self.step()?;
            let _ = std::fs::remove_dir_all(self.dir.join(name));
        }
        Ok(())
    }

    fn write_file(&self, path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        self.step()?;
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(io(path))?;
        // A kill between writing and syncing leaves a short file.
        f.write_all(&bytes[..bytes.len() / 2]).map_err(io(path))?;
        self.step()?;
        f.write_all(&bytes[bytes.len() / 2..]).map_err(io(path))?;
        f.sync_all().map_err(io(path))
    }
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

fn rand_bytes() -> [u8; 8] {
    use rand_core::RngCore;
    let mut b = [0u8; 8];
    rand_core::OsRng.fill_bytes(&mut b);
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use lockstep_identity::SigningKey;
    use lockstep_protocol::admin::RELEASE_FORMAT;

    struct Parts {
        manifest: Vec<u8>,
        files: Vec<(String, Vec<u8>)>,
        id: String,
    }

    fn repo_bundle() -> Parts {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../kernels-spirv/src/kernels");
        let manifest = std::fs::read(dir.join("manifest.json")).unwrap();
        let files = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "spv"))
            .map(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read(&p).unwrap())
            })
            .collect();
        let id = Bundle::from_dir(&dir).unwrap().id_hex();
        Parts {
            manifest,
            files,
            id,
        }
    }

    fn signed(key: &SigningKey, id: &str, version: u64) -> (Vec<u8>, String) {
        let bytes = lockstep_canonical_json::to_vec(&ReleaseStatement {
            format: RELEASE_FORMAT.into(),
            bundle_id: id.into(),
            version,
        })
        .unwrap();
        let sig = key.sign_minisign(&bytes, "release").to_file();
        (bytes, sig)
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .map(|r| {
                r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    fn record(id: &str, version: u64, floor: u64) -> ActiveRecord {
        ActiveRecord {
            bundle_id: id.into(),
            version,
            floor,
        }
    }

    #[test]
    fn a_verified_release_is_stored_activated_and_reloaded() {
        let state = tempfile::tempdir().unwrap();
        let store = BundleStore::new(state.path());
        let key = SigningKey::generate();
        let trusted = [key.public().clone()];
        let parts = repo_bundle();
        let (release, sig) = signed(&key, &parts.id, 2);
        let upload = Upload {
            manifest: &parts.manifest,
            release: &release,
            release_signature: &sig,
            files: &parts.files,
        };
        let boot = store.boot(&trusted);
        assert!(boot.stored.is_none() && boot.problem.is_none());
        assert_eq!(boot.floor, 0);
        let stored = store.stage(&upload, &trusted, (&parts.id, 2), 0).unwrap();
        store
            .activate(&record(&stored.bundle.id_hex(), 2, 2), None)
            .unwrap();
        let boot = store.boot(&trusted);
        let active = boot.stored.unwrap();
        assert_eq!(active.bundle.id_hex(), parts.id);
        assert_eq!(active.release.version, 2);
        assert_eq!(boot.floor, 2);
        // Another operator's trust does not accept it, but the floor stays.
        let stranger = [SigningKey::generate().public().clone()];
        let boot = store.boot(&stranger);
        assert!(boot.stored.is_none() && boot.problem.is_some());
        assert_eq!(boot.floor, 2);
    }

    #[test]
    fn the_floor_survives_a_bundle_that_no_longer_loads_or_an_unreadable_record() {
        let state = tempfile::tempdir().unwrap();
        let store = BundleStore::new(state.path());
        let key = SigningKey::generate();
        let trusted = [key.public().clone()];
        let parts = repo_bundle();
        let (release, sig) = signed(&key, &parts.id, 4);
        let upload = Upload {
            manifest: &parts.manifest,
            release: &release,
            release_signature: &sig,
            files: &parts.files,
        };
        store.stage(&upload, &trusted, (&parts.id, 4), 0).unwrap();
        store.activate(&record(&parts.id, 4, 4), None).unwrap();
        let dir = state.path().join("bundles");
        // The bundle's files are damaged: the image's bundle runs, but a
        // rollback below 4 is still refused.
        std::fs::remove_file(dir.join(dir_name(&parts.id, 4)).join("manifest.json")).unwrap();
        let boot = store.boot(&trusted);
        assert!(boot.stored.is_none());
        assert_eq!(boot.floor, 4);
        let (old, old_sig) = signed(&key, &parts.id, 3);
        let rollback = Upload {
            release: &old,
            release_signature: &old_sig,
            ..upload
        };
        let err = store
            .stage(&rollback, &trusted, (&parts.id, 3), boot.floor)
            .unwrap_err();
        assert!(matches!(err, StoreError::Rollback { .. }), "{err}");
        // ACTIVE itself garbled: the floor is the highest stored version.
        std::fs::write(dir.join(ACTIVE), b"{garbage").unwrap();
        let boot = store.boot(&trusted);
        assert!(matches!(boot.problem, Some(StoreError::BadRecord { .. })));
        assert_eq!(boot.floor, 4);
    }

    #[test]
    fn the_pre_version_layout_still_loads() {
        let state = tempfile::tempdir().unwrap();
        let store = BundleStore::new(state.path());
        let key = SigningKey::generate();
        let trusted = [key.public().clone()];
        let parts = repo_bundle();
        let (release, sig) = signed(&key, &parts.id, 5);
        let upload = Upload {
            manifest: &parts.manifest,
            release: &release,
            release_signature: &sig,
            files: &parts.files,
        };
        store.stage(&upload, &trusted, (&parts.id, 5), 0).unwrap();
        let dir = state.path().join("bundles");
        std::fs::rename(dir.join(dir_name(&parts.id, 5)), dir.join(&parts.id)).unwrap();
        std::fs::write(dir.join(ACTIVE), format!("{}\n", parts.id)).unwrap();
        let boot = store.boot(&trusted);
        assert_eq!(boot.stored.unwrap().release.version, 5);
        assert_eq!(boot.floor, 5);
    }

    /// kill -9 at the file operations of a push (stage, then activate):
    /// after a "restart" (a fresh store, `boot`) the node runs the old
    /// bundle with the old version or the new one with the new version,
    /// never anything else, and the floor is that version. Every operation
    /// outside the temporary upload directory is a crash point; inside it
    /// (one write per binary, all equivalent: the directory is swept) the
    /// first and last few are.
    #[test]
    fn a_kill_at_any_step_of_a_switch_leaves_one_consistent_bundle() {
        use std::sync::atomic::Ordering;
        let key = SigningKey::generate();
        let trusted = [key.public().clone()];
        let parts = repo_bundle();
        let (r1, s1) = signed(&key, &parts.id, 1);
        let (r2, s2) = signed(&key, &parts.id, 2);
        let v1 = Upload {
            manifest: &parts.manifest,
            release: &r1,
            release_signature: &s1,
            files: &parts.files,
        };
        let v2 = Upload {
            release: &r2,
            release_signature: &s2,
            ..v1
        };
        let old = record(&parts.id, 1, 1);
        let new = record(&parts.id, 2, 2);
        // A node with release 1 active, copied for every run.
        let template = tempfile::tempdir().unwrap();
        let store = BundleStore::new(template.path());
        store.stage(&v1, &trusted, (&parts.id, 1), 0).unwrap();
        store.activate(&old, None).unwrap();
        let fresh = || {
            let state = tempfile::tempdir().unwrap();
            let to = state.path().join("bundles");
            std::fs::create_dir(&to).unwrap();
            for e in std::fs::read_dir(template.path().join("bundles")).unwrap() {
                let e = e.unwrap();
                if e.file_type().unwrap().is_dir() {
                    let d = to.join(e.file_name());
                    std::fs::create_dir(&d).unwrap();
                    for f in std::fs::read_dir(e.path()).unwrap() {
                        let f = f.unwrap();
                        std::fs::copy(f.path(), d.join(f.file_name())).unwrap();
                    }
                } else {
                    std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
                }
            }
            state
        };
        // How many file operations a whole push takes.
        let state = fresh();
        let store = BundleStore::new(state.path());
        store.stage(&v2, &trusted, (&parts.id, 2), 1).unwrap();
        store.activate(&new, Some(&old)).unwrap();
        let total = store.steps.load(Ordering::SeqCst);
        assert!(total > 20, "{total} steps");

        let mut saw = [false; 2];
        for n in (0..8).chain(total - 12..=total) {
            let state = fresh();
            let store = BundleStore::new(state.path());
            store.crash_after(n);
            let outcome = store
                .stage(&v2, &trusted, (&parts.id, 2), 1)
                .and_then(|_| store.activate(&new, Some(&old)));
            match outcome {
                Err(StoreError::Crash) => assert!(n < total, "step {n}"),
                Ok(()) => assert_eq!(n, total),
                Err(e) => panic!("step {n}: {e}"),
            }

            // Restart.
            let store = BundleStore::new(state.path());
            let boot = store.boot(&trusted);
            assert!(boot.problem.is_none(), "step {n}: {:?}", boot.problem);
            let stored = boot.stored.expect("a pushed bundle stays active");
            let version = stored.release.version;
            assert_eq!(stored.bundle.id_hex(), parts.id);
            assert_eq!(boot.floor, version, "step {n}");
            assert_eq!(store.record().unwrap().unwrap().version, version);
            saw[version as usize - 1] = true;
            // Nothing half-written is left behind.
            assert!(names(&state.path().join("bundles"))
                .iter()
                .all(|n| !n.starts_with('.')));
            // After the crash the push can be repeated, or (once switched)
            // the old release is a rollback.
            if version == 1 {
                store
                    .stage(&v2, &trusted, (&parts.id, 2), boot.floor)
                    .unwrap();
            } else {
                let err = store
                    .stage(&v1, &trusted, (&parts.id, 1), boot.floor)
                    .unwrap_err();
                assert!(matches!(err, StoreError::Rollback { .. }), "{err}");
            }
        }
        assert_eq!(saw, [true, true]);
    }

    #[test]
    fn refused_uploads_leave_the_store_as_it_was() {
        let state = tempfile::tempdir().unwrap();
        let store = BundleStore::new(state.path());
        let key = SigningKey::generate();
        let trusted = [key.public().clone()];
        let parts = repo_bundle();
        let (release, sig) = signed(&key, &parts.id, 2);
        let good = Upload {
            manifest: &parts.manifest,
            release: &release,
            release_signature: &sig,
            files: &parts.files,
        };
        store.stage(&good, &trusted, (&parts.id, 2), 0).unwrap();
        store.activate(&record(&parts.id, 2, 2), None).unwrap();
        let before = names(&state.path().join("bundles"));

        // Rollback: not newer than the floor.
        let err = store.stage(&good, &trusted, (&parts.id, 2), 2).unwrap_err();
        assert!(matches!(err, StoreError::Rollback { .. }), "{err}");
        // Tampered binary.
        let mut files = parts.files.clone();
        files[0].1[20] ^= 1;
        let tampered = Upload {
            files: &files,
            ..good
        };
        let err = store
            .stage(&tampered, &trusted, (&parts.id, 3), 2)
            .unwrap_err();
        assert!(err.to_string().contains("SHA-256"), "{err}");
        // Unsigned.
        let unsigned = Upload {
            release: b"",
            release_signature: "",
            ..good
        };
        let err = store
            .stage(&unsigned, &trusted, (&parts.id, 3), 2)
            .unwrap_err();
        assert!(err.to_string().contains("unsigned"), "{err}");
        // Signed for another version than the command names.
        let err = store.stage(&good, &trusted, (&parts.id, 7), 0).unwrap_err();
        assert!(matches!(err, StoreError::NotNamed { .. }), "{err}");

        assert_eq!(names(&state.path().join("bundles")), before);
        assert_eq!(store.boot(&trusted).stored.unwrap().release.version, 2);
    }
}
