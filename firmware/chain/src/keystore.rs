//! The V3 keystore (the Web3 Secret Storage Definition): a chain key
//! encrypted under a password, in the JSON file geth, clef and most
//! wallets read.
//!
//! Supported: kdf `scrypt` or `pbkdf2` (prf `hmac-sha256`), cipher
//! `aes-128-ctr`, MAC `keccak256(derivedKey[16..32] || ciphertext)`
//! compared in constant time. A file is bounded by
//! [`MAX_KEYSTORE_BYTES`] and its KDF cost by the `MAX_KEYSTORE_*`
//! limits, so a hostile file cannot make us spin or allocate gigabytes.
//! Encryption is sans-IO: salt, IV and id come from the caller.

use ctr::cipher::{KeyIvInit, StreamCipher};
use hmac::Hmac;
use lockstep_limits::{
    MAX_KEYSTORE_BYTES, MAX_KEYSTORE_PBKDF2_ROUNDS, MAX_KEYSTORE_SCRYPT_LOG_N,
    MAX_KEYSTORE_SCRYPT_MEMORY_BYTES, MAX_KEYSTORE_SCRYPT_P, MAX_KEYSTORE_SCRYPT_R,
};
use serde::Deserialize;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::address::keccak256;
use crate::key::ChainKey;

type Aes128Ctr = ctr::Ctr128BE<aes::Aes128>;

/// The key derivation a keystore uses, with its cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kdf {
    /// scrypt with N = 2^`log_n`.
    Scrypt { log_n: u8, r: u32, p: u32 },
    /// PBKDF2-HMAC-SHA256.
    Pbkdf2 { rounds: u32 },
}

/// What [`encrypt`] uses unless told otherwise: scrypt N = 2^17, r = 8,
/// p = 1 (128 MiB and about half a second; half geth's "standard" cost,
/// which a small node can afford at every start).
pub const DEFAULT_KDF: Kdf = Kdf::Scrypt {
    log_n: 17,
    r: 8,
    p: 1,
};

/// Why a keystore does not open (or cannot be written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeystoreError {
    #[error("the keystore's MAC does not match: wrong password or a corrupted file")]
    WrongPassword,
    #[error("the keystore is {bytes} bytes, over the {max}-byte bound: it is not a V3 keystore file; pass the keystore JSON itself")]
    TooLarge { bytes: usize, max: usize },
    #[error("the keystore is not a valid V3 keystore: {reason}; export the key again as a V3 (Web3 Secret Storage) keystore")]
    Malformed { reason: String },
    #[error("the keystore uses {what}, which this client does not support (only version 3, scrypt or pbkdf2 with hmac-sha256, aes-128-ctr); re-encrypt it with a supported scheme")]
    Unsupported { what: String },
    #[error("this machine could not allocate the {bytes} bytes the keystore's scrypt needs: free some memory, or re-encrypt the keystore with a smaller scrypt N")]
    OutOfMemory { bytes: u64 },
    #[error("the keystore's key derivation is too costly ({what}); re-encrypt it with a cheaper setting (scrypt N at most 2^{MAX_KEYSTORE_SCRYPT_LOG_N}, r and p at most {MAX_KEYSTORE_SCRYPT_R}, at most {MAX_KEYSTORE_SCRYPT_MEMORY_BYTES} bytes of memory; PBKDF2 at most {MAX_KEYSTORE_PBKDF2_ROUNDS} rounds)")]
    TooCostly { what: String },
}

fn malformed(reason: impl Into<String>) -> KeystoreError {
    KeystoreError::Malformed {
        reason: reason.into(),
    }
}

fn too_costly(what: impl Into<String>) -> KeystoreError {
    KeystoreError::TooCostly { what: what.into() }
}

#[derive(Deserialize)]
struct KeystoreFile {
    version: u64,
    #[serde(alias = "Crypto")]
    crypto: CryptoSection,
}

#[derive(Deserialize)]
struct CryptoSection {
    cipher: String,
    cipherparams: CipherParams,
    ciphertext: String,
    kdf: String,
    kdfparams: serde_json::Value,
    mac: String,
}

#[derive(Deserialize)]
struct CipherParams {
    iv: String,
}

#[derive(Deserialize)]
struct ScryptParams {
    dklen: u64,
    n: u64,
    r: u64,
    p: u64,
    salt: String,
}

#[derive(Deserialize)]
struct Pbkdf2Params {
    c: u64,
    dklen: u64,
    prf: String,
    salt: String,
}

fn unhex(field: &str, text: &str) -> Result<Vec<u8>, KeystoreError> {
    let digits = text.strip_prefix("0x").unwrap_or(text);
    hex::decode(digits).map_err(|_| malformed(format!("{field} is not hex")))
}

/// Checks a KDF's cost against the limits.
pub fn check_kdf(kdf: &Kdf) -> Result<(), KeystoreError> {
    match *kdf {
        Kdf::Scrypt { log_n, r, p } => {
            if log_n == 0 || r == 0 || p == 0 {
                return Err(malformed("scrypt n must be at least 2, r and p at least 1"));
            }
            if log_n > MAX_KEYSTORE_SCRYPT_LOG_N {
                return Err(too_costly(format!("scrypt N = 2^{log_n}")));
            }
            if r > MAX_KEYSTORE_SCRYPT_R {
                return Err(too_costly(format!("scrypt r = {r}")));
            }
            if p > MAX_KEYSTORE_SCRYPT_P {
                return Err(too_costly(format!("scrypt p = {p}")));
            }
            let memory = 128u64 << log_n;
            if memory.saturating_mul(r.into()) > MAX_KEYSTORE_SCRYPT_MEMORY_BYTES {
                return Err(too_costly(format!(
                    "scrypt N = 2^{log_n} with r = {r} needs {} MiB",
                    memory.saturating_mul(r.into()) >> 20
                )));
            }
        }
        Kdf::Pbkdf2 { rounds } => {
            if rounds == 0 {
                return Err(malformed("pbkdf2 c must be at least 1"));
            }
            if rounds > MAX_KEYSTORE_PBKDF2_ROUNDS {
                return Err(too_costly(format!("PBKDF2 c = {rounds}")));
            }
        }
    }
    Ok(())
}

fn derive(kdf: &Kdf, password: &[u8], salt: &[u8]) -> Result<Zeroizing<[u8; 32]>, KeystoreError> {
    check_kdf(kdf)?;
    let mut key = Zeroizing::new([0u8; 32]);
    match *kdf {
        Kdf::Scrypt { log_n, r, p } => {
            crate::scrypt::scrypt(password, salt, log_n, r, p, key.as_mut()).map_err(|_| {
                KeystoreError::OutOfMemory {
                    bytes: (128u64 << log_n) * u64::from(r),
                }
            })?;
        }
        Kdf::Pbkdf2 { rounds } => {
            pbkdf2::pbkdf2::<Hmac<Sha256>>(password, salt, rounds, key.as_mut())
                .map_err(|_| malformed("the pbkdf2 parameters are invalid"))?;
        }
    }
    Ok(key)
}

fn parse_kdf(kdf: &str, params: serde_json::Value) -> Result<(Kdf, Vec<u8>), KeystoreError> {
    match kdf {
        "scrypt" => {
            let params: ScryptParams = serde_json::from_value(params)
                .map_err(|e| malformed(format!("scrypt kdfparams: {e}")))?;
            if params.dklen != 32 {
                return Err(KeystoreError::Unsupported {
                    what: format!("dklen {}", params.dklen),
                });
            }
            if params.n < 2 || !params.n.is_power_of_two() {
                return Err(malformed(format!(
                    "scrypt n = {} is not a power of two",
                    params.n
                )));
            }
            let log_n = params.n.trailing_zeros() as u8;
            let r = u32::try_from(params.r)
                .map_err(|_| too_costly(format!("scrypt r = {}", params.r)))?;
            let p = u32::try_from(params.p)
                .map_err(|_| too_costly(format!("scrypt p = {}", params.p)))?;
            Ok((Kdf::Scrypt { log_n, r, p }, unhex("salt", &params.salt)?))
        }
        "pbkdf2" => {
            let params: Pbkdf2Params = serde_json::from_value(params)
                .map_err(|e| malformed(format!("pbkdf2 kdfparams: {e}")))?;
            if params.prf != "hmac-sha256" {
                return Err(KeystoreError::Unsupported {
                    what: format!("prf {:?}", params.prf),
                });
            }
            if params.dklen != 32 {
                return Err(KeystoreError::Unsupported {
                    what: format!("dklen {}", params.dklen),
                });
            }
            let rounds = u32::try_from(params.c)
                .map_err(|_| too_costly(format!("PBKDF2 c = {}", params.c)))?;
            Ok((Kdf::Pbkdf2 { rounds }, unhex("salt", &params.salt)?))
        }
        other => Err(KeystoreError::Unsupported {
            what: format!("kdf {other:?}"),
        }),
    }
}

/// Opens a V3 keystore with `password`.
pub fn decrypt(json: &[u8], password: &[u8]) -> Result<ChainKey, KeystoreError> {
    if json.len() > MAX_KEYSTORE_BYTES {
        return Err(KeystoreError::TooLarge {
            bytes: json.len(),
            max: MAX_KEYSTORE_BYTES,
        });
    }
    let file: KeystoreFile =
        serde_json::from_slice(json).map_err(|e| malformed(format!("not keystore JSON: {e}")))?;
    if file.version != 3 {
        return Err(KeystoreError::Unsupported {
            what: format!("version {}", file.version),
        });
    }
    let crypto = file.crypto;
    if crypto.cipher != "aes-128-ctr" {
        return Err(KeystoreError::Unsupported {
            what: format!("cipher {:?}", crypto.cipher),
        });
    }
    let iv: [u8; 16] = unhex("iv", &crypto.cipherparams.iv)?
        .try_into()
        .map_err(|_| malformed("the iv is not 16 bytes"))?;
    let ciphertext = unhex("ciphertext", &crypto.ciphertext)?;
    if ciphertext.len() != 32 {
        return Err(malformed(format!(
            "the ciphertext is {} bytes, not the 32 of a secp256k1 key",
            ciphertext.len()
        )));
    }
    let mac: [u8; 32] = unhex("mac", &crypto.mac)?
        .try_into()
        .map_err(|_| malformed("the mac is not 32 bytes"))?;
    let (kdf, salt) = parse_kdf(&crypto.kdf, crypto.kdfparams)?;
    let derived = derive(&kdf, password, &salt)?;
    let mut mac_input = Vec::with_capacity(16 + ciphertext.len());
    mac_input.extend_from_slice(&derived[16..32]);
    mac_input.extend_from_slice(&ciphertext);
    let expected = keccak256(&mac_input);
    if !bool::from(expected.ct_eq(&mac)) {
        return Err(KeystoreError::WrongPassword);
    }
    let mut secret = Zeroizing::new([0u8; 32]);
    secret.copy_from_slice(&ciphertext);
    let cipher_key: [u8; 16] = derived[..16].try_into().expect("16 bytes");
    Aes128Ctr::new(&cipher_key.into(), &iv.into()).apply_keystream(secret.as_mut());
    ChainKey::from_bytes(&secret)
        .map_err(|_| malformed("the decrypted key is not a valid secp256k1 secret"))
}

/// Encrypts `key` under `password` as a V3 keystore (JSON text). The
/// caller draws `salt`, `iv` and `id` (a random UUID's 16 bytes) from
/// its random source.
pub fn encrypt(
    key: &ChainKey,
    password: &[u8],
    kdf: Kdf,
    salt: [u8; 32],
    iv: [u8; 16],
    id: [u8; 16],
) -> Result<String, KeystoreError> {
    let derived = derive(&kdf, password, &salt)?;
    let mut ciphertext = *key.to_bytes();
    let cipher_key: [u8; 16] = derived[..16].try_into().expect("16 bytes");
    Aes128Ctr::new(&cipher_key.into(), &iv.into()).apply_keystream(&mut ciphertext);
    let mut mac_input = Vec::with_capacity(48);
    mac_input.extend_from_slice(&derived[16..32]);
    mac_input.extend_from_slice(&ciphertext);
    let mac = keccak256(&mac_input);
    let kdfparams = match kdf {
        Kdf::Scrypt { log_n, r, p } => serde_json::json!({
            "dklen": 32, "n": 1u64 << log_n, "r": r, "p": p, "salt": hex::encode(salt),
        }),
        Kdf::Pbkdf2 { rounds } => serde_json::json!({
            "c": rounds, "dklen": 32, "prf": "hmac-sha256", "salt": hex::encode(salt),
        }),
    };
    let kdf_name = match kdf {
        Kdf::Scrypt { .. } => "scrypt",
        Kdf::Pbkdf2 { .. } => "pbkdf2",
    };
    let file = serde_json::json!({
        "address": hex::encode(key.address().0),
        "crypto": {
            "cipher": "aes-128-ctr",
            "cipherparams": { "iv": hex::encode(iv) },
            "ciphertext": hex::encode(ciphertext),
            "kdf": kdf_name,
            "kdfparams": kdfparams,
            "mac": hex::encode(mac),
        },
        "id": uuid_v4(id),
        "version": 3,
    });
    Ok(file.to_string())
}

/// A version 4 (random) UUID's text from 16 random bytes.
fn uuid_v4(mut bytes: [u8; 16]) -> String {
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let h = hex::encode(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECRET: &str = "7a28b5ba57c53603b0b07b56bba752f7784bf506fa95edc395f5cf6c7514fe9d";

    /// The Web3 Secret Storage Definition's test vectors.
    const PBKDF2_VECTOR: &str = r#"{
        "crypto" : {
            "cipher" : "aes-128-ctr",
            "cipherparams" : { "iv" : "6087dab2f9fdbbfaddc31a909735c1e6" },
            "ciphertext" : "5318b4d5bcd28de64ee5559e671353e16f075ecae9f99c7a79a38af5f869aa46",
            "kdf" : "pbkdf2",
            "kdfparams" : {
                "c" : 262144,
                "dklen" : 32,
                "prf" : "hmac-sha256",
                "salt" : "ae3cd4e7013836a3df6bd7241b12db061dbe2c6785853cce422d148a624ce0bd"
            },
            "mac" : "517ead924a9d0dc3124507e3393d175ce3ff7c1e96529c6c555ce9e51205e9b2"
        },
        "id" : "3198bc9c-6672-5ab3-d995-4942343ae5b6",
        "version" : 3
    }"#;

    const SCRYPT_VECTOR: &str = r#"{
        "crypto" : {
            "cipher" : "aes-128-ctr",
            "cipherparams" : { "iv" : "83dbcc02d8ccb40e466191a123791e0e" },
            "ciphertext" : "d172bf743a674da9cdad04534d56926ef8358534d458fffccd4e6ad2fbde479c",
            "kdf" : "scrypt",
            "kdfparams" : {
                "dklen" : 32,
                "n" : 262144,
                "p" : 8,
                "r" : 1,
                "salt" : "ab0c7876052600dd703518d6fc3fe8984592145b591fc8fb5c6d43190334ba19"
            },
            "mac" : "2103ac29920d71da29f15d75b4a16dbe95cfd7ff8faea1056c33131d846e3097"
        },
        "id" : "3198bc9c-6672-5ab3-d995-4942343ae5b6",
        "version" : 3
    }"#;

    #[test]
    fn spec_pbkdf2_vector() {
        let key = decrypt(PBKDF2_VECTOR.as_bytes(), b"testpassword").unwrap();
        assert_eq!(hex::encode(*key.to_bytes()), SECRET);
        assert_eq!(
            decrypt(PBKDF2_VECTOR.as_bytes(), b"wrong").unwrap_err(),
            KeystoreError::WrongPassword
        );
    }

    #[test]
    fn spec_scrypt_vector() {
        let key = decrypt(SCRYPT_VECTOR.as_bytes(), b"testpassword").unwrap();
        assert_eq!(hex::encode(*key.to_bytes()), SECRET);
    }

    #[test]
    fn hostile_costs_are_refused_before_any_work() {
        let costly = [
            SCRYPT_VECTOR.replace("262144", "2097152"),
            SCRYPT_VECTOR.replace("\"r\" : 1", "\"r\" : 17"),
            SCRYPT_VECTOR.replace("\"p\" : 8", "\"p\" : 17"),
            SCRYPT_VECTOR
                .replace("\"r\" : 1", "\"r\" : 16")
                .replace("262144", "1048576"),
            PBKDF2_VECTOR.replace("262144", "10000001"),
            PBKDF2_VECTOR.replace("262144", "100000000000"),
        ];
        for file in costly {
            assert!(
                matches!(
                    decrypt(file.as_bytes(), b"testpassword"),
                    Err(KeystoreError::TooCostly { .. })
                ),
                "{file}"
            );
        }
        let unsupported = [
            SCRYPT_VECTOR.replace("\"dklen\" : 32", "\"dklen\" : 64"),
            SCRYPT_VECTOR.replace("aes-128-ctr", "aes-128-cbc"),
            PBKDF2_VECTOR.replace("hmac-sha256", "hmac-sha512"),
            PBKDF2_VECTOR.replace("\"version\" : 3", "\"version\" : 4"),
            PBKDF2_VECTOR.replace("\"pbkdf2\"", "\"argon2\""),
        ];
        for file in unsupported {
            assert!(
                matches!(
                    decrypt(file.as_bytes(), b"testpassword"),
                    Err(KeystoreError::Unsupported { .. })
                ),
                "{file}"
            );
        }
        assert!(matches!(
            decrypt(SCRYPT_VECTOR.replace("262144", "262143").as_bytes(), b"x"),
            Err(KeystoreError::Malformed { .. })
        ));
        assert!(matches!(
            decrypt(&vec![b' '; MAX_KEYSTORE_BYTES + 1], b"x"),
            Err(KeystoreError::TooLarge { .. })
        ));
        assert!(matches!(
            decrypt(b"{}", b"x"),
            Err(KeystoreError::Malformed { .. })
        ));
    }

    #[test]
    fn encrypt_then_decrypt() {
        let key = ChainKey::generate([9; 32]).unwrap();
        let cheap = Kdf::Scrypt {
            log_n: 10,
            r: 8,
            p: 1,
        };
        let json = encrypt(&key, b"pw", cheap, [1; 32], [2; 16], [3; 16]).unwrap();
        let opened = decrypt(json.as_bytes(), b"pw").unwrap();
        assert_eq!(opened.address(), key.address());
        assert_eq!(
            decrypt(json.as_bytes(), b"pW").unwrap_err(),
            KeystoreError::WrongPassword
        );
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["id"], "03030303-0303-4303-8303-030303030303");
        assert!(!json.contains(&hex::encode(*key.to_bytes())));
        assert!(matches!(
            encrypt(
                &key,
                b"pw",
                Kdf::Pbkdf2 { rounds: u32::MAX },
                [1; 32],
                [2; 16],
                [3; 16]
            ),
            Err(KeystoreError::TooCostly { .. })
        ));
        check_kdf(&DEFAULT_KDF).unwrap();
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(8))]
        #[test]
        fn round_trip(secret in any::<[u8; 32]>(), password in proptest::collection::vec(any::<u8>(), 0..40), salt in any::<[u8; 32]>(), iv in any::<[u8; 16]>()) {
            if let Ok(key) = ChainKey::from_bytes(&secret) {
                let json = encrypt(&key, &password, Kdf::Pbkdf2 { rounds: 2 }, salt, iv, [0; 16]).unwrap();
                prop_assert_eq!(decrypt(json.as_bytes(), &password).unwrap().address(), key.address());
            }
        }

        #[test]
        fn decrypt_never_panics(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = decrypt(&data, b"pw");
        }
    }
}
