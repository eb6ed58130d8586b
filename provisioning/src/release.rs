//! Bundle releases on the fleet's side: `bundle sign` writes a release
//! statement (bundle id, version) and its operator signature beside the
//! manifest; `bundle push` reads a bundle directory into an upload.

use std::path::{Path, PathBuf};

use lockstep_identity::SigningKey;
use lockstep_kernels::Bundle;
use lockstep_protocol::admin::{
    BundleUpload, ReleaseStatement, UploadFile, RELEASE_FILE, RELEASE_FORMAT,
    RELEASE_SIGNATURE_FILE,
};

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("{0}; only a verified bundle is signed")]
    Bundle(#[from] lockstep_kernels::BundleError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a bundle manifest: {reason}")]
    Manifest { path: PathBuf, reason: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ReleaseError + '_ {
    move |source| ReleaseError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Verifies the bundle in `dir` (hashes, float model) and signs a release
/// of it at `version`; writes `release.json` and its `.minisig` there.
pub fn sign(dir: &Path, key: &SigningKey, version: u64) -> Result<ReleaseStatement, ReleaseError> {
    let bundle = Bundle::from_dir(dir)?;
    let statement = ReleaseStatement {
        format: RELEASE_FORMAT.to_string(),
        bundle_id: bundle.id_hex(),
        version,
    };
    let bytes = lockstep_canonical_json::to_vec(&statement).expect("releases serialise");
    let sig = key.sign_minisign(
        &bytes,
        &format!(
            "lockstep release {} of bundle {}",
            version, statement.bundle_id
        ),
    );
    let release = dir.join(RELEASE_FILE);
    std::fs::write(&release, &bytes).map_err(io(&release))?;
    let sig_path = dir.join(RELEASE_SIGNATURE_FILE);
    std::fs::write(&sig_path, sig.to_file()).map_err(io(&sig_path))?;
    Ok(statement)
}

/// A bundle directory as sent to nodes, exactly as it is on disk: the node
/// does every check (so a tampered or unsigned bundle is refused by the
/// node, which is the point). A missing release is sent as empty.
pub struct Upload {
    pub upload: BundleUpload,
    pub files: Vec<Vec<u8>>,
    /// From the release statement, if any (else empty / 0).
    pub bundle_id: String,
    pub version: u64,
}

pub fn read_upload(dir: &Path) -> Result<Upload, ReleaseError> {
    let manifest_path = dir.join("manifest.json");
    let manifest = read_bounded(&manifest_path, lockstep_limits::MAX_MANIFEST_BYTES)?;
    let value: serde_json::Value =
        serde_json::from_slice(&manifest).map_err(|e| ReleaseError::Manifest {
            path: manifest_path.clone(),
            reason: e.to_string(),
        })?;
    let mut names = Vec::new();
    for kernel in value["kernels"].as_array().into_iter().flatten() {
        for binary in kernel["binaries"].as_object().into_iter().flatten() {
            if let Some(file) = binary.1["file"].as_str() {
                if !names.iter().any(|n| n == file) {
                    names.push(file.to_string());
                }
            }
        }
    }
    let mut files = Vec::new();
    let mut listed = Vec::new();
    for name in names {
        let path = dir.join(&name);
        let bytes = read_bounded(&path, lockstep_limits::MAX_SPIRV_BYTES)?;
        listed.push(UploadFile {
            name,
            len: bytes.len() as u64,
        });
        files.push(bytes);
    }
    let optional = |name: &str| match std::fs::read(dir.join(name)) {
        Ok(b) => Ok(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io(&dir.join(name))(e)),
    };
    let release = optional(RELEASE_FILE)?;
    let release_signature =
        String::from_utf8_lossy(&optional(RELEASE_SIGNATURE_FILE)?).into_owned();
    let (bundle_id, version) = serde_json::from_slice::<ReleaseStatement>(&release)
        .map(|r| (r.bundle_id, r.version))
        .unwrap_or_default();
    Ok(Upload {
        upload: BundleUpload {
            manifest,
            release,
            release_signature,
            files: listed,
        },
        files,
        bundle_id,
        version,
    })
}

fn read_bounded(path: &Path, bound: usize) -> Result<Vec<u8>, ReleaseError> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(io(path))?
        .take(bound as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io(path))?;
    if bytes.len() > bound {
        return Err(ReleaseError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(format!("over the {bound}-byte bound")),
        });
    }
    Ok(bytes)
}
