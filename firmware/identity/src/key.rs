//! The device key on disk.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::SigningKey;
use rand_core::OsRng;
use zeroize::Zeroizing;

use crate::NodeId;

/// File name of the key inside the state directory.
pub const KEY_FILE: &str = "device.key";

const HEADER: &str = "lockstep device key v1 (Ed25519 seed, base64); never copy this file\n";

/// Why the key could not be loaded or created. Messages never contain key
/// material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is readable or writable by other users (mode {mode:o}); the device key must be mode 600: check who else had access, then chmod 600 it")]
    Permissions { path: PathBuf, mode: u32 },
    #[error("{path} is not a Lockstep device key ({reason}); restore it from the node's backup policy, or move it away to make the node a new identity")]
    Malformed { path: PathBuf, reason: &'static str },
}

/// The node's signing key. Deliberately not `Clone`, and its `Debug` shows
/// only the public half.
pub struct DeviceKey {
    signing: SigningKey,
    id: NodeId,
}

impl std::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceKey {{ node: {}, secret: <redacted> }}", self.id)
    }
}

impl DeviceKey {
    /// Loads the key from `state_dir`, or creates it there if there is none.
    /// Returns the key and whether it was created now.
    pub fn load_or_create(state_dir: &Path) -> Result<(DeviceKey, bool), KeyError> {
        let path = state_dir.join(KEY_FILE);
        match File::open(&path) {
            Ok(file) => Ok((DeviceKey::read(&path, file)?, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok((DeviceKey::create(state_dir)?, true))
            }
            Err(source) => Err(KeyError::Io { path, source }),
        }
    }

    /// Loads an existing key; never creates one.
    pub fn load(state_dir: &Path) -> Result<DeviceKey, KeyError> {
        let path = state_dir.join(KEY_FILE);
        let file = File::open(&path).map_err(|source| KeyError::Io {
            path: path.clone(),
            source,
        })?;
        DeviceKey::read(&path, file)
    }

    fn read(path: &Path, mut file: File) -> Result<DeviceKey, KeyError> {
        let io = |source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mode = file.metadata().map_err(io)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        let mut text = String::new();
        // The file is tiny; bound the read so a wrong path cannot eat memory.
        Read::by_ref(&mut file)
            .take(4096)
            .read_to_string(&mut text)
            .map_err(io)?;
        let malformed = |reason| KeyError::Malformed {
            path: path.to_path_buf(),
            reason,
        };
        let body = text.strip_prefix(HEADER).ok_or(malformed("wrong header"))?;
        let seed = STANDARD
            .decode(body.trim())
            .map_err(|_| malformed("not base64"))?;
        let seed: [u8; 32] = seed
            .as_slice()
            .try_into()
            .map_err(|_| malformed("not 32 bytes"))?;
        Ok(DeviceKey::from_seed(&seed))
    }

    fn create(state_dir: &Path) -> Result<DeviceKey, KeyError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| KeyError::Io { path, source }
        };
        std::fs::create_dir_all(state_dir).map_err(io(state_dir))?;
        let key = DeviceKey::from_seed(&SigningKey::generate(&mut OsRng).to_bytes());
        // Write a temporary file with mode 0600 from its creation, make it
        // durable, then rename it into place: a crash leaves either no key
        // or a complete one, never a half-written key.
        let tmp = state_dir.join(format!(".{KEY_FILE}.tmp-{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp))?;
        let text = format!("{HEADER}{}\n", STANDARD.encode(key.signing.to_bytes()));
        file.write_all(text.as_bytes()).map_err(io(&tmp))?;
        file.sync_all().map_err(io(&tmp))?;
        drop(file);
        let path = state_dir.join(KEY_FILE);
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        File::open(state_dir)
            .and_then(|d| d.sync_all())
            .map_err(io(state_dir))?;
        Ok(key)
    }

    pub(crate) fn from_seed(seed: &[u8; 32]) -> DeviceKey {
        let signing = SigningKey::from_bytes(seed);
        let id = NodeId::from_key(signing.verifying_key());
        DeviceKey { signing, id }
    }

    pub fn node_id(&self) -> &NodeId {
        &self.id
    }

    /// The key as an unencrypted PKCS#8 v2 document (RFC 5958 / RFC 8410:
    /// seed and public key), in a buffer that is wiped when dropped.
    ///
    /// This exists only so the QUIC transport can build the node's TLS
    /// certificate and handshake signer in memory (`lockstep-transport`).
    /// Never write it anywhere, log it or send it: it is the secret key.
    pub fn pkcs8_der(&self) -> Zeroizing<Vec<u8>> {
        // SEQUENCE { INTEGER 1, SEQUENCE { OID 1.3.101.112 },
        //   OCTET STRING { OCTET STRING seed }, [1] BIT STRING public key }
        const PREFIX: [u8; 16] = [
            0x30, 0x53, 0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        const PUBLIC: [u8; 5] = [0xa1, 0x23, 0x03, 0x21, 0x00];
        let mut der = Zeroizing::new(Vec::with_capacity(85));
        der.extend_from_slice(&PREFIX);
        der.extend_from_slice(Zeroizing::new(self.signing.to_bytes()).as_slice());
        der.extend_from_slice(&PUBLIC);
        der.extend_from_slice(self.id.key.as_bytes());
        der
    }

    pub(crate) fn signing_key(&self) -> &SigningKey {
        &self.signing
    }
}
