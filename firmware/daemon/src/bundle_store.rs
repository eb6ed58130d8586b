//! Kernel bundles pushed by the fleet, kept in the state directory:
//!
//! ```text
//! STATE/bundles/<bundle id>/manifest.json, *.spv, release.json(.minisig)
//! STATE/bundles/ACTIVE      the active bundle's id (absent: the image's)
//! ```
//!
//! A bundle directory is only ever created whole (written under a
//! temporary name, verified, renamed), and `ACTIVE` is replaced atomically,
//! so a crash leaves the old bundle active or the new one, never half of
//! one. Every load re-verifies hashes, float model and the operator's
//! release signature.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use lockstep_identity::NodeId;
use lockstep_kernels::Bundle;
use lockstep_limits::MAX_STORED_BUNDLES;
use lockstep_protocol::admin::{
    verify_release, ReleaseStatement, RELEASE_FILE, RELEASE_SIGNATURE_FILE,
};

const ACTIVE: &str = "ACTIVE";

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
    #[error("rollback refused: release version {version} is not newer than the active version {active}; sign the bundle with a higher version")]
    Rollback { version: u64, active: u64 },
    #[error("the pushed bundle ({id}, release {version}) is not the one the signed command names; refusing it")]
    NotNamed { id: String, version: u64 },
}

/// A verified bundle and its signed release.
#[derive(Debug)]
pub struct Stored {
    pub bundle: Bundle,
    pub release: ReleaseStatement,
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
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl BundleStore {
    pub fn new(state_dir: &Path) -> BundleStore {
        BundleStore {
            dir: state_dir.join("bundles"),
        }
    }

    /// The active pushed bundle, verified; `None` when the image's own
    /// bundle is active.
    pub fn active(&self, trusted: &[NodeId]) -> Result<Option<Stored>, StoreError> {
        let path = self.dir.join(ACTIVE);
        let id = match std::fs::read_to_string(&path) {
            Ok(id) => id.trim().to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path)(e)),
        };
        if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(io(&path)(std::io::Error::other(
                "ACTIVE does not hold a bundle id",
            )));
        }
        self.load(&self.dir.join(&id), trusted).map(Some)
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

    /// Writes an uploaded bundle, then loads it back from disk with every
    /// check (hashes, float model, release signature), checks it is the
    /// `named` (id, version) and newer than `active_version`, and only then
    /// moves it into place. On any failure nothing is left behind and the
    /// stored bundles are untouched.
    pub fn stage(
        &self,
        upload: &Upload<'_>,
        trusted: &[NodeId],
        named: (&str, u64),
        active_version: u64,
    ) -> Result<Stored, StoreError> {
        let Upload {
            manifest,
            release,
            release_signature,
            files,
        } = *upload;
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let tmp = self.dir.join(format!(
            ".incoming-{}-{}",
            std::process::id(),
            hex::encode(rand_bytes())
        ));
        let result = (|| {
            std::fs::create_dir(&tmp).map_err(io(&tmp))?;
            write_file(&tmp.join("manifest.json"), manifest)?;
            write_file(&tmp.join(RELEASE_FILE), release)?;
            write_file(
                &tmp.join(RELEASE_SIGNATURE_FILE),
                release_signature.as_bytes(),
            )?;
            for (name, bytes) in files {
                write_file(&tmp.join(name), bytes)?;
            }
            let stored = self.load(&tmp, trusted)?;
            let (id, version) = (stored.bundle.id_hex(), stored.release.version);
            if id != named.0 || version != named.1 {
                return Err(StoreError::NotNamed { id, version });
            }
            if version <= active_version {
                return Err(StoreError::Rollback {
                    version,
                    active: active_version,
                });
            }
            let dest = self.dir.join(stored.bundle.id_hex());
            let _ = std::fs::remove_dir_all(&dest);
            std::fs::rename(&tmp, &dest).map_err(io(&dest))?;
            Ok(stored)
        })();
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        result
    }

    /// Makes `id` the active bundle (atomically) and deletes all but the
    /// newest `MAX_STORED_BUNDLES - 1` others.
    pub fn activate(&self, id: &str, previous: Option<&str>) -> Result<(), StoreError> {
        let tmp = self
            .dir
            .join(format!(".{ACTIVE}.tmp-{}", std::process::id()));
        write_file(&tmp, format!("{id}\n").as_bytes())?;
        let path = self.dir.join(ACTIVE);
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.dir))?;
        self.prune(&[Some(id), previous])
    }

    /// Forgets a staged bundle that failed its self-test.
    pub fn discard(&self, id: &str) {
        let _ = std::fs::remove_dir_all(self.dir.join(id));
    }

    fn prune(&self, keep: &[Option<&str>]) -> Result<(), StoreError> {
        let entries = std::fs::read_dir(&self.dir).map_err(io(&self.dir))?;
        let mut others = Vec::new();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.len() == 64 && !keep.contains(&Some(name.as_str())) {
                let modified = e.metadata().and_then(|m| m.modified()).ok();
                others.push((modified, name));
            }
        }
        others.sort();
        let kept = keep.iter().flatten().count();
        let room = MAX_STORED_BUNDLES.saturating_sub(kept);
        let drop = others.len().saturating_sub(room);
        for (_, name) in others.into_iter().take(drop) {
            let _ = std::fs::remove_dir_all(self.dir.join(name));
        }
        Ok(())
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    f.sync_all().map_err(io(path))
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
        assert!(store.active(&trusted).unwrap().is_none());
        let stored = store.stage(&upload, &trusted, (&parts.id, 2), 0).unwrap();
        store.activate(&stored.bundle.id_hex(), None).unwrap();
        let active = store.active(&trusted).unwrap().unwrap();
        assert_eq!(active.bundle.id_hex(), parts.id);
        assert_eq!(active.release.version, 2);
        // Another operator's trust does not accept it.
        let stranger = [SigningKey::generate().public().clone()];
        assert!(store.active(&stranger).is_err());
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
        store.activate(&parts.id, None).unwrap();
        let before = names(&state.path().join("bundles"));

        // Rollback: not newer than the active release.
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
        assert_eq!(store.active(&trusted).unwrap().unwrap().release.version, 2);
    }
}
