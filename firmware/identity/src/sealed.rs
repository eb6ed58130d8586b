//! The sealed identity: the device key and the node's first operator set,
//! in one small document that only ever exists in a pipe or in memory.
//!
//! On the appliance `lockstepd new-identity` prints it into
//! `systemd-creds encrypt --with-key=tpm2`, and at every start systemd
//! decrypts it into `$CREDENTIALS_DIRECTORY` (a ramfs) for
//! `lockstepd --sealed-identity NAME`. The TPM, not the state partition,
//! holds the key, and whoever writes the ESP or the state partition cannot
//! change the operator set sealed with it.
//!
//! The document is canonical JSON (keys sorted, no whitespace):
//!
//! ```text
//! {"format":"lockstep-sealed-identity/1","operators":["RWQ…",…],"secret_key":"<base64 of the 32-byte Ed25519 seed>"}
//! ```
//!
//! A trailing newline is accepted and nothing else: it is written only by
//! `lockstepd new-identity`. Parse errors never contain the secret.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::SigningKey;
use lockstep_limits::MAX_TRUSTED_OPERATORS;
use rand_core::OsRng;
use zeroize::Zeroizing;

use crate::{DeviceKey, NodeId, NodeIdError};

/// `format` of a sealed identity.
pub const SEALED_FORMAT: &str = "lockstep-sealed-identity/1";

/// Largest sealed identity accepted (64 operators of 56 characters, the key,
/// the punctuation: well under this).
pub const MAX_SEALED_IDENTITY_BYTES: usize = 16 * 1024;

/// How the node's device key is protected; reported in receipts, status,
/// enrolment and the fleet's records, so nobody takes a file key for a
/// sealed one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyProtection {
    /// Sealed by the TPM (a systemd credential); the key is never on disk
    /// in the clear.
    TpmSealed,
    /// A plain file in the state partition (`STATE/device.key`, mode 0600).
    File,
}

impl KeyProtection {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyProtection::TpmSealed => "tpm-sealed",
            KeyProtection::File => "file",
        }
    }
}

impl std::fmt::Display for KeyProtection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for KeyProtection {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tpm-sealed" => Ok(KeyProtection::TpmSealed),
            "file" => Ok(KeyProtection::File),
            other => Err(format!(
                "key protection {other:?} is neither \"tpm-sealed\" nor \"file\""
            )),
        }
    }
}

/// Why a sealed identity does not parse. Never carries secret bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealedIdentityError {
    #[error("is over {MAX_SEALED_IDENTITY_BYTES} bytes")]
    TooLarge,
    #[error("is not UTF-8")]
    NotUtf8,
    #[error("is not a {SEALED_FORMAT} document (expected canonical JSON beginning {{\"format\":\"{SEALED_FORMAT}\"; it is written only by `lockstepd new-identity`)")]
    Format,
    #[error("is malformed at byte {at}: {what}")]
    Syntax { at: usize, what: &'static str },
    #[error("operator {index}: {source}")]
    Operator { index: usize, source: NodeIdError },
    #[error("names operator {0} twice")]
    DuplicateOperator(String),
    #[error("holds {0} operators, not 1 to {MAX_TRUSTED_OPERATORS}")]
    OperatorCount(usize),
    #[error("secret_key is not base64")]
    SecretBase64,
    #[error("secret_key has {0} bytes, an Ed25519 seed has 32")]
    SecretLength(usize),
}

/// A device key and its first operator set. Not `Clone`; `Debug` shows only
/// the public half; the seed is wiped on drop.
pub struct SealedIdentity {
    seed: Zeroizing<[u8; 32]>,
    node_id: NodeId,
    operators: Vec<NodeId>,
}

impl std::fmt::Debug for SealedIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SealedIdentity {{ node: {}, operators: {:?}, secret: <redacted> }}",
            self.node_id, self.operators
        )
    }
}

fn node_of(seed: &[u8; 32]) -> NodeId {
    NodeId::from_key(SigningKey::from_bytes(seed).verifying_key())
}

impl SealedIdentity {
    /// A fresh key with `operators` (1 to `MAX_TRUSTED_OPERATORS`, no
    /// duplicates) as its first operator set.
    pub fn generate(operators: Vec<NodeId>) -> Result<SealedIdentity, SealedIdentityError> {
        check_operators(&operators)?;
        let seed = Zeroizing::new(SigningKey::generate(&mut OsRng).to_bytes());
        let node_id = node_of(&seed);
        Ok(SealedIdentity {
            seed,
            node_id,
            operators,
        })
    }

    pub fn node_id(&self) -> &NodeId {
        &self.node_id
    }

    pub fn operators(&self) -> &[NodeId] {
        &self.operators
    }

    /// The canonical JSON document (with a trailing newline), in a buffer
    /// wiped when dropped. Write it only into a pipe to the sealing tool.
    pub fn to_json(&self) -> Zeroizing<String> {
        let ops: Vec<String> = self
            .operators
            .iter()
            .map(|k| format!("\"{}\"", k.to_base64()))
            .collect();
        let ops = ops.join(",");
        // Sized up front so the secret is never left behind by a regrowth.
        let mut out = Zeroizing::new(String::with_capacity(128 + ops.len()));
        out.push_str("{\"format\":\"");
        out.push_str(SEALED_FORMAT);
        out.push_str("\",\"operators\":[");
        out.push_str(&ops);
        out.push_str("],\"secret_key\":\"");
        let mut b64 = Zeroizing::new([0u8; 44]);
        let n = STANDARD
            .encode_slice(self.seed.as_slice(), b64.as_mut_slice())
            .expect("32 bytes are 44 base64 characters");
        out.push_str(std::str::from_utf8(&b64[..n]).expect("base64 is ASCII"));
        out.push_str("\"}\n");
        out
    }

    /// Parses the document (see the module docs). Only the exact canonical
    /// form is accepted, plus a trailing newline.
    pub fn parse(bytes: &[u8]) -> Result<SealedIdentity, SealedIdentityError> {
        if bytes.len() > MAX_SEALED_IDENTITY_BYTES {
            return Err(SealedIdentityError::TooLarge);
        }
        let text = std::str::from_utf8(bytes).map_err(|_| SealedIdentityError::NotUtf8)?;
        let text = text.strip_suffix('\n').unwrap_or(text);
        let head = format!("{{\"format\":\"{SEALED_FORMAT}\",\"operators\":[");
        let mut rest = text
            .strip_prefix(head.as_str())
            .ok_or(SealedIdentityError::Format)?;
        let at = |rest: &str| text.len() - rest.len();
        let syntax = |rest: &str, what| SealedIdentityError::Syntax { at: at(rest), what };
        let mut operators = Vec::new();
        if let Some(r) = rest.strip_prefix(']') {
            rest = r;
        } else {
            loop {
                let r = rest
                    .strip_prefix('"')
                    .ok_or_else(|| syntax(rest, "expected an operator key string"))?;
                let end = r
                    .find('"')
                    .ok_or_else(|| syntax(r, "unterminated operator key"))?;
                if operators.len() == MAX_TRUSTED_OPERATORS {
                    return Err(SealedIdentityError::OperatorCount(operators.len() + 1));
                }
                let key =
                    NodeId::parse(&r[..end]).map_err(|source| SealedIdentityError::Operator {
                        index: operators.len(),
                        source,
                    })?;
                operators.push(key);
                rest = &r[end + 1..];
                if let Some(r) = rest.strip_prefix(',') {
                    rest = r;
                } else if let Some(r) = rest.strip_prefix(']') {
                    rest = r;
                    break;
                } else {
                    return Err(syntax(rest, "expected , or ] after an operator key"));
                }
            }
        }
        check_operators(&operators)?;
        let r = rest
            .strip_prefix(",\"secret_key\":\"")
            .ok_or_else(|| syntax(rest, "expected \"secret_key\" after the operators"))?;
        let b64 = r
            .strip_suffix("\"}")
            .ok_or_else(|| syntax(r, "expected the document to end after secret_key"))?;
        if b64.contains('"') {
            return Err(syntax(r, "expected the document to end after secret_key"));
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        // decode_slice refuses output that does not fit: a long value is
        // measured without decoding it in full.
        let n = STANDARD
            .decode_slice(b64, seed.as_mut_slice())
            .map_err(|e| match e {
                base64::DecodeSliceError::OutputSliceTooSmall => {
                    SealedIdentityError::SecretLength(b64.len() / 4 * 3)
                }
                base64::DecodeSliceError::DecodeError(_) => SealedIdentityError::SecretBase64,
            })?;
        if n != 32 {
            return Err(SealedIdentityError::SecretLength(n));
        }
        let node_id = node_of(&seed);
        Ok(SealedIdentity {
            seed,
            node_id,
            operators,
        })
    }

    /// The device key and the sealed operator set.
    pub fn into_parts(self) -> (DeviceKey, Vec<NodeId>) {
        (DeviceKey::from_seed(&self.seed), self.operators)
    }
}

fn check_operators(operators: &[NodeId]) -> Result<(), SealedIdentityError> {
    if operators.is_empty() || operators.len() > MAX_TRUSTED_OPERATORS {
        return Err(SealedIdentityError::OperatorCount(operators.len()));
    }
    for (i, k) in operators.iter().enumerate() {
        if operators[..i].contains(k) {
            return Err(SealedIdentityError::DuplicateOperator(k.key_id_hex()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SigningKey as OperatorKey;
    use proptest::prelude::*;

    fn op() -> NodeId {
        OperatorKey::generate().public().clone()
    }

    #[test]
    fn round_trips_and_the_key_is_the_same() {
        let ops = vec![op(), op()];
        let id = SealedIdentity::generate(ops.clone()).unwrap();
        let json = id.to_json();
        assert!(json.starts_with("{\"format\":\"lockstep-sealed-identity/1\",\"operators\":[\"RW"));
        assert!(json.ends_with("\"}\n"));
        let back = SealedIdentity::parse(json.as_bytes()).unwrap();
        assert_eq!(back.node_id(), id.node_id());
        assert_eq!(back.operators(), ops.as_slice());
        // Without the newline too.
        let trimmed = json.trim_end();
        assert!(SealedIdentity::parse(trimmed.as_bytes()).is_ok());
        let (key, operators) = back.into_parts();
        assert_eq!(key.node_id(), id.node_id());
        assert_eq!(operators, ops);
        // Debug never shows the secret.
        assert!(!format!("{id:?}").contains(&trimmed[trimmed.len() - 46..trimmed.len() - 2]));
    }

    #[test]
    fn errors_are_typed_and_never_echo_the_secret() {
        let id = SealedIdentity::generate(vec![op()]).unwrap();
        let json = id.to_json();
        let secret_at = json.find("secret_key\":\"").unwrap() + 13;
        let secret = &json[secret_at..secret_at + 44];
        type Check = fn(&SealedIdentityError) -> bool;
        let cases: Vec<(String, Check)> = vec![
            (json.replace("identity/1", "identity/2"), |e| {
                matches!(e, SealedIdentityError::Format)
            }),
            (json.replace("],\"secret_key", "] ,\"secret_key"), |e| {
                matches!(e, SealedIdentityError::Syntax { .. })
            }),
            (json.replace(secret, &secret[..40]), |e| {
                matches!(
                    e,
                    SealedIdentityError::SecretLength(_) | SealedIdentityError::SecretBase64
                )
            }),
            (
                json.replace(secret, &format!("{}AAAAAAAA", &secret[..40])),
                |e| matches!(e, SealedIdentityError::SecretLength(_)),
            ),
            (json.replace(&secret[..4], "!!!!"), |e| {
                matches!(e, SealedIdentityError::SecretBase64)
            }),
            (json.replace("\"}\n", "\"} \n"), |e| {
                matches!(e, SealedIdentityError::Syntax { .. })
            }),
            (json.replace("[\"RW", "[\"XW"), |e| {
                matches!(e, SealedIdentityError::Operator { index: 0, .. })
            }),
        ];
        for (text, expected) in cases {
            let e = SealedIdentity::parse(text.as_bytes()).unwrap_err();
            assert!(expected(&e), "{e:?} for {text}");
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains(&secret[..12]), "{shown}");
        }
        let dup = op();
        let doubled = format!(
            "{{\"format\":\"{SEALED_FORMAT}\",\"operators\":[\"{dup}\",\"{dup}\"],\"secret_key\":\"{secret}\"}}"
        );
        assert!(matches!(
            SealedIdentity::parse(doubled.as_bytes()),
            Err(SealedIdentityError::DuplicateOperator(_))
        ));
        let none = format!(
            "{{\"format\":\"{SEALED_FORMAT}\",\"operators\":[],\"secret_key\":\"{secret}\"}}"
        );
        assert_eq!(
            SealedIdentity::parse(none.as_bytes()).unwrap_err(),
            SealedIdentityError::OperatorCount(0)
        );
        assert!(SealedIdentity::generate(vec![]).is_err());
        assert_eq!(
            SealedIdentity::parse(&[0xff, 0xfe]).unwrap_err(),
            SealedIdentityError::NotUtf8
        );
    }

    #[test]
    fn protection_names() {
        for p in [KeyProtection::TpmSealed, KeyProtection::File] {
            assert_eq!(p.as_str().parse::<KeyProtection>().unwrap(), p);
        }
        assert_eq!(KeyProtection::TpmSealed.to_string(), "tpm-sealed");
        assert!("tpm".parse::<KeyProtection>().is_err());
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = SealedIdentity::parse(&bytes);
        }

        #[test]
        fn mutated_documents_never_panic(pos in 0usize..400, byte in any::<u8>(), cut in 0usize..400) {
            let id = SealedIdentity::generate(vec![OperatorKey::generate().public().clone()]).unwrap();
            let mut bytes = id.to_json().as_bytes().to_vec();
            let pos = pos % bytes.len();
            bytes[pos] = byte;
            bytes.truncate(cut.max(1).min(bytes.len()));
            let _ = SealedIdentity::parse(&bytes);
        }
    }
}
