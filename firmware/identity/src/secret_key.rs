//! Signing keys that are not device keys (an operator's, a certifier's, a
//! referee's), kept in stock minisign secret key files so the same file
//! works with `minisign -S` and with Lockstep's tools.
//!
//! The file is two lines: an untrusted comment, then base64 of
//!
//! ```text
//! sig_alg "Ed" | kdf_alg "Sc" or 0,0 | chk_alg "B2" | kdf_salt[32]
//! | opslimit u64le | memlimit u64le
//! | (key_id[8] | seed[32] | public[32] | checksum[32]) XOR scrypt stream
//! ```
//!
//! where checksum = BLAKE2b-256(sig_alg | key_id | seed | public) and the
//! stream is libsodium's `crypto_pwhash_scryptsalsa208sha256` of the
//! password with the file's salt, opslimit and memlimit (no stream when
//! kdf_alg is 0,0: `minisign -G -W`).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};
use rand_core::{OsRng, RngCore};
use zeroize::Zeroizing;

use crate::minisign::sign_prehashed;
use crate::node_id::ALG_ED25519;
use crate::{NodeId, Signature};

const KDF_SCRYPT: [u8; 2] = *b"Sc";
const KDF_NONE: [u8; 2] = [0, 0];
const CHK_BLAKE2B: [u8; 2] = *b"B2";
const FILE_BYTES: usize = 158;
const KEYNUM_BYTES: usize = 104;
/// Offset of the (possibly encrypted) key id, key and checksum.
const KEYNUM_AT: usize = 54;

/// minisign's (libsodium's "sensitive") scrypt cost: about 1 GiB and a few
/// seconds, which is the point: it is what a stolen key file costs to crack.
pub const DEFAULT_OPSLIMIT: u64 = 33_554_432;
pub const DEFAULT_MEMLIMIT: u64 = 1_073_741_824;

/// The most scrypt memory a key file may ask us to spend (4 GiB, 4x
/// minisign's default): a hostile file cannot make us allocate without end.
const MAX_MEMLIMIT: u64 = 4 << 30;

/// Why a secret key could not be read or written. Messages never contain key
/// material or the password.
#[derive(Debug, thiserror::Error)]
pub enum SecretKeyError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a minisign secret key file ({reason}); pass the secret key (.key), not the public key or a signature")]
    Malformed { path: PathBuf, reason: &'static str },
    #[error("{path} is encrypted: give its password (set LOCKSTEP_KEY_PASSWORD, or run on a terminal to be asked)")]
    PasswordNeeded { path: PathBuf },
    #[error("wrong password for {path} (or the file is damaged): try again with the password given when the key was created")]
    WrongPassword { path: PathBuf },
    #[error("{path} asks for scrypt parameters this tool will not run ({reason}); re-encrypt the key with stock minisign (-C)")]
    Kdf { path: PathBuf, reason: &'static str },
}

/// An Ed25519 signing key that is not a device key. Not `Clone`; `Debug`
/// shows only the public half.
pub struct SigningKey {
    signing: ed25519_dalek::SigningKey,
    id: NodeId,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SigningKey {{ public: {}, secret: <redacted> }}",
            self.id
        )
    }
}

/// scrypt cost of a written key file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfCost {
    pub opslimit: u64,
    pub memlimit: u64,
}

impl Default for KdfCost {
    fn default() -> Self {
        KdfCost {
            opslimit: DEFAULT_OPSLIMIT,
            memlimit: DEFAULT_MEMLIMIT,
        }
    }
}

impl KdfCost {
    /// A cheap cost (N = 2^14, 16 MiB) for tests only: a key written with it
    /// is easy to crack, but stock minisign still reads it.
    pub const fn insecure_for_tests() -> KdfCost {
        KdfCost {
            opslimit: 524_288,
            memlimit: 16_777_216,
        }
    }
}

impl SigningKey {
    /// A fresh random key with a random minisign key id (as `minisign -G`).
    pub fn generate() -> SigningKey {
        let signing = ed25519_dalek::SigningKey::generate(&mut OsRng);
        let mut key_id = [0u8; 8];
        OsRng.fill_bytes(&mut key_id);
        let id = NodeId {
            key: signing.verifying_key(),
            key_id,
        };
        SigningKey { signing, id }
    }

    /// The minisign public key (the same type that names nodes).
    pub fn public(&self) -> &NodeId {
        &self.id
    }

    /// A prehashed minisign signature that stock `minisign -Vm` verifies.
    pub fn sign_minisign(&self, message: &[u8], trusted_comment: &str) -> Signature {
        sign_prehashed(&self.signing, self.id.key_id, message, trusted_comment)
    }

    /// The `.pub` file text.
    pub fn public_key_file(&self) -> String {
        self.id.to_public_key_file()
    }

    /// Reads a stock minisign secret key file, unencrypted (`minisign -G -W`)
    /// or scrypt-encrypted (then `password` is needed).
    pub fn read_file(path: &Path, password: Option<&str>) -> Result<SigningKey, SecretKeyError> {
        let io = |source| SecretKeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut text = Zeroizing::new(String::new());
        // A key file is under 300 bytes; bound the read so a wrong path
        // cannot eat memory.
        File::open(path)
            .map_err(io)?
            .take(4096)
            .read_to_string(&mut text)
            .map_err(io)?;
        SigningKey::parse(&text, password).map_err(|e| e.at(path))
    }

    /// Parses the file text; errors carry an empty path until [`at`].
    fn parse(text: &str, password: Option<&str>) -> Result<SigningKey, SecretKeyError> {
        let malformed = |reason| SecretKeyError::Malformed {
            path: PathBuf::new(),
            reason,
        };
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        let first = lines.next().ok_or(malformed("empty file"))?;
        if !first.starts_with("untrusted comment:") {
            return Err(malformed("first line is not an untrusted comment"));
        }
        let body = lines.next().ok_or(malformed("no key line"))?;
        let bytes = Zeroizing::new(
            STANDARD
                .decode(body)
                .map_err(|_| malformed("key line is not base64"))?,
        );
        if bytes.len() != FILE_BYTES {
            return Err(malformed("key is not 158 bytes"));
        }
        if bytes[0..2] != ALG_ED25519 {
            return Err(malformed("not an Ed25519 key"));
        }
        if bytes[4..6] != CHK_BLAKE2B {
            return Err(malformed("unknown checksum algorithm"));
        }
        let kdf = [bytes[2], bytes[3]];
        let mut keynum = Zeroizing::new([0u8; KEYNUM_BYTES]);
        keynum.copy_from_slice(&bytes[KEYNUM_AT..]);
        let encrypted = match kdf {
            KDF_NONE => false,
            KDF_SCRYPT => true,
            _ => return Err(malformed("unknown key derivation algorithm")),
        };
        if encrypted {
            let password = password.ok_or(SecretKeyError::PasswordNeeded {
                path: PathBuf::new(),
            })?;
            let salt: [u8; 32] = bytes[6..38].try_into().expect("32-byte slice");
            let cost = KdfCost {
                opslimit: u64::from_le_bytes(bytes[38..46].try_into().expect("8-byte slice")),
                memlimit: u64::from_le_bytes(bytes[46..54].try_into().expect("8-byte slice")),
            };
            xor_stream(&mut keynum, password, &salt, cost)?;
        }
        let mut key_id = [0u8; 8];
        key_id.copy_from_slice(&keynum[0..8]);
        let seed: Zeroizing<[u8; 32]> =
            Zeroizing::new(keynum[8..40].try_into().expect("32-byte slice"));
        let stored_chk = &keynum[72..104];
        let chk = checksum(&key_id, &keynum[8..72]);
        // minisign 0.11 leaves the checksum of an unencrypted (-W) key all
        // zero; an encrypted key's checksum is how a wrong password shows.
        let chk_ok = stored_chk == chk.as_slice() || (!encrypted && stored_chk == [0u8; 32]);
        if !chk_ok {
            return Err(if encrypted {
                SecretKeyError::WrongPassword {
                    path: PathBuf::new(),
                }
            } else {
                malformed("checksum does not match")
            });
        }
        let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
        if signing.verifying_key().as_bytes() != &keynum[40..72] {
            return Err(malformed("public half does not match the secret key"));
        }
        let id = NodeId {
            key: signing.verifying_key(),
            key_id,
        };
        Ok(SigningKey { signing, id })
    }

    /// Writes the key as a stock minisign secret key file, encrypted with
    /// `password` at minisign's default cost, or unencrypted with `None`.
    /// Atomic (a crash leaves the old file or the whole new one) and mode
    /// 0600 from creation.
    pub fn write_file(&self, path: &Path, password: Option<&str>) -> Result<(), SecretKeyError> {
        self.write_file_with_cost(path, password, KdfCost::default())
    }

    /// [`write_file`](Self::write_file) with a chosen scrypt cost.
    pub fn write_file_with_cost(
        &self,
        path: &Path,
        password: Option<&str>,
        cost: KdfCost,
    ) -> Result<(), SecretKeyError> {
        let text = self.to_file_text(password, cost).map_err(|e| e.at(path))?;
        write_atomic(path, text.as_bytes())
    }

    fn to_file_text(
        &self,
        password: Option<&str>,
        cost: KdfCost,
    ) -> Result<Zeroizing<String>, SecretKeyError> {
        let mut keynum = Zeroizing::new([0u8; KEYNUM_BYTES]);
        keynum[0..8].copy_from_slice(&self.id.key_id);
        keynum[8..40].copy_from_slice(&self.signing.to_bytes());
        keynum[40..72].copy_from_slice(self.id.key.as_bytes());
        let chk = checksum(&self.id.key_id, &keynum[8..72]);
        keynum[72..104].copy_from_slice(&chk);
        let mut salt = [0u8; 32];
        OsRng.fill_bytes(&mut salt);
        let (kdf, ops, mem) = match password {
            Some(password) => {
                xor_stream(&mut keynum, password, &salt, cost)?;
                (KDF_SCRYPT, cost.opslimit, cost.memlimit)
            }
            None => (KDF_NONE, 0, 0),
        };
        let mut bytes = Zeroizing::new(Vec::with_capacity(FILE_BYTES));
        bytes.extend_from_slice(&ALG_ED25519);
        bytes.extend_from_slice(&kdf);
        bytes.extend_from_slice(&CHK_BLAKE2B);
        bytes.extend_from_slice(&salt);
        bytes.extend_from_slice(&ops.to_le_bytes());
        bytes.extend_from_slice(&mem.to_le_bytes());
        bytes.extend_from_slice(keynum.as_slice());
        let comment = if password.is_some() {
            "minisign encrypted secret key"
        } else {
            "minisign secret key (unencrypted)"
        };
        Ok(Zeroizing::new(format!(
            "untrusted comment: {comment}\n{}\n",
            STANDARD.encode(bytes.as_slice())
        )))
    }
}

impl SecretKeyError {
    fn at(self, at: &Path) -> SecretKeyError {
        let path = at.to_path_buf();
        match self {
            SecretKeyError::Io { source, .. } => SecretKeyError::Io { path, source },
            SecretKeyError::Malformed { reason, .. } => SecretKeyError::Malformed { path, reason },
            SecretKeyError::PasswordNeeded { .. } => SecretKeyError::PasswordNeeded { path },
            SecretKeyError::WrongPassword { .. } => SecretKeyError::WrongPassword { path },
            SecretKeyError::Kdf { reason, .. } => SecretKeyError::Kdf { path, reason },
        }
    }
}

fn checksum(key_id: &[u8; 8], secret_and_public: &[u8]) -> [u8; 32] {
    let mut h = Blake2b::<U32>::new();
    h.update(ALG_ED25519);
    h.update(key_id);
    h.update(secret_and_public);
    h.finalize().into()
}

/// XORs `keynum` with libsodium's `crypto_pwhash_scryptsalsa208sha256`
/// output for the password, salt and cost.
fn xor_stream(
    keynum: &mut [u8; KEYNUM_BYTES],
    password: &str,
    salt: &[u8; 32],
    cost: KdfCost,
) -> Result<(), SecretKeyError> {
    let kdf = |reason| SecretKeyError::Kdf {
        path: PathBuf::new(),
        reason,
    };
    if cost.memlimit > MAX_MEMLIMIT {
        return Err(kdf("memlimit above 4 GiB"));
    }
    let (log_n, r, p) = pick_params(cost.opslimit, cost.memlimit);
    // minisign's files use p = 1; a huge p is only a way to burn our CPU.
    if p > 64 {
        return Err(kdf("scrypt parallelism above 64"));
    }
    // The `len` here only matters for password-hash strings; the output
    // length is the slice given to `scrypt`.
    let params = scrypt::Params::new(log_n, r, p, scrypt::Params::RECOMMENDED_LEN)
        .map_err(|_| kdf("invalid scrypt parameters"))?;
    let mut stream = Zeroizing::new([0u8; KEYNUM_BYTES]);
    scrypt::scrypt(password.as_bytes(), salt, &params, stream.as_mut_slice())
        .map_err(|_| kdf("invalid scrypt output length"))?;
    for (b, s) in keynum.iter_mut().zip(stream.iter()) {
        *b ^= s;
    }
    Ok(())
}

/// libsodium's `pickparams`: how (opslimit, memlimit) become scrypt's
/// (log2 N, r, p). Must match it exactly, or keys from stock minisign would
/// not decrypt.
fn pick_params(opslimit: u64, memlimit: u64) -> (u8, u32, u32) {
    let opslimit = opslimit.max(32_768);
    let r: u64 = 8;
    let mut n_log2: u8 = 1;
    if opslimit < memlimit / 32 {
        let max_n = opslimit / (r * 4);
        while n_log2 < 63 && (1u64 << n_log2) <= max_n / 2 {
            n_log2 += 1;
        }
        (n_log2, r as u32, 1)
    } else {
        let max_n = memlimit / (r * 128);
        while n_log2 < 63 && (1u64 << n_log2) <= max_n / 2 {
            n_log2 += 1;
        }
        let max_rp = ((opslimit / 4) / (1u64 << n_log2)).min(0x3fff_ffff);
        let p = (max_rp as u32) / (r as u32);
        (n_log2, r as u32, p.max(1))
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SecretKeyError> {
    let io = |p: &Path| {
        let path = p.to_path_buf();
        move |source| SecretKeyError::Io { path, source }
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "key".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    file.write_all(bytes).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io(path))?;
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(io(&dir))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pick_params_matches_libsodium_for_minisign_defaults() {
        // N = 2^20, r = 8, p = 1: 1 GiB, what minisign's keys use.
        assert_eq!(pick_params(DEFAULT_OPSLIMIT, DEFAULT_MEMLIMIT), (20, 8, 1));
        // Cheap test cost: opslimit < memlimit/32 branch.
        assert_eq!(pick_params(524_288, 16_777_216), (14, 8, 1));
    }

    #[test]
    fn round_trips_unencrypted_and_encrypted() {
        let key = SigningKey::generate();
        let plain = key.to_file_text(None, KdfCost::default()).unwrap();
        let back = SigningKey::parse(&plain, None).unwrap();
        assert_eq!(back.public(), key.public());
        let cost = KdfCost::insecure_for_tests();
        let enc = key.to_file_text(Some("pw"), cost).unwrap();
        assert!(matches!(
            SigningKey::parse(&enc, None),
            Err(SecretKeyError::PasswordNeeded { .. })
        ));
        assert!(matches!(
            SigningKey::parse(&enc, Some("nope")),
            Err(SecretKeyError::WrongPassword { .. })
        ));
        let back = SigningKey::parse(&enc, Some("pw")).unwrap();
        assert_eq!(back.public(), key.public());
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        for text in ["", "untrusted comment: x\n", "untrusted comment: x\nAAAA\n"] {
            assert!(matches!(
                SigningKey::parse(text, None),
                Err(SecretKeyError::Malformed { .. })
            ));
        }
    }

    #[test]
    fn debug_is_redacted() {
        let key = SigningKey::generate();
        let shown = format!("{key:?}");
        assert!(shown.contains("redacted"));
        assert!(!shown.contains(&STANDARD.encode(key.signing.to_bytes())));
    }
}
