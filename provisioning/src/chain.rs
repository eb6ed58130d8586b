//! The fleet's on-chain registry (contracts/README.md): the operator's
//! chain key, the pinned `NodeRegistry` bytecode, deploying it, checking
//! that an address holds it, and checking a node's signed registration
//! before any gas is spent.
//!
//! Pinned means pinned: the fleet deploys only the committed build
//! (`contracts/out/NodeRegistry.json`, embedded here), and trusts an
//! existing registry only if `eth_getCode` answers exactly its
//! `deployedBytecode`, but for the one immutable the constructor fills in:
//! the owner's address ([`runtime_matches`]).
//!
//! The operator's chain key comes from a V3 keystore (`--keystore FILE`,
//! password in [`KEYSTORE_PASSWORD_ENV`]) or from [`CHAIN_KEY_ENV`]; it is
//! never logged or printed (its `Debug` shows only the address).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lockstep_chain::abi::{encode_call, signatures, Decoder, NodeRecord};
use lockstep_chain::client::{Registry, RpcClient, TxReceipt};
use lockstep_chain::eip712::{KeyProtection as ChainKeyProtection, Registration};
use lockstep_chain::keystore::{self, KeystoreError};
use lockstep_chain::{hex0x, Address, ChainKey, ClientError, Signature65};
use lockstep_identity::{KeyProtection, NodeId};
use lockstep_protocol::chain::RegistrationSignature;
use serde_json::json;
use zeroize::Zeroizing;

/// The environment variable holding a keystore's password.
pub const KEYSTORE_PASSWORD_ENV: &str = "LOCKSTEP_KEYSTORE_PASSWORD";
/// The environment variable holding a raw operator chain key (0x + 64
/// hex), the alternative to `--keystore`.
pub const CHAIN_KEY_ENV: &str = "LOCKSTEP_CHAIN_KEY";

/// The committed build of the registry, as `contracts/compile.mjs` wrote
/// it (and `contracts/check.mjs` reproduces it byte for byte).
pub const PINNED_BUILD: &str = include_str!("../../contracts/out/NodeRegistry.json");

/// The pinned registry's code.
#[derive(Debug)]
pub struct PinnedRegistry {
    /// Creation code (what `deploy` sends).
    pub bytecode: Vec<u8>,
    /// Runtime code (what `eth_getCode` of a deployed registry answers).
    pub deployed_bytecode: Vec<u8>,
}

/// The embedded build, parsed once.
pub fn pinned() -> &'static PinnedRegistry {
    static PINNED: OnceLock<PinnedRegistry> = OnceLock::new();
    PINNED.get_or_init(|| {
        let json: serde_json::Value =
            serde_json::from_str(PINNED_BUILD).expect("the committed NodeRegistry.json is JSON");
        let code = |field: &str| {
            let text = json[field]
                .as_str()
                .unwrap_or_else(|| panic!("NodeRegistry.json has no {field} string"));
            hex::decode(text.trim_start_matches("0x"))
                .unwrap_or_else(|e| panic!("NodeRegistry.json {field}: {e}"))
        };
        PinnedRegistry {
            bytecode: code("bytecode"),
            deployed_bytecode: code("deployedBytecode"),
        }
    })
}

/// Why a chain command failed; [`ChainError::exit_code`] says whose
/// fault it is.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("no operator chain key: pass --keystore FILE (its password in {KEYSTORE_PASSWORD_ENV}) or set {CHAIN_KEY_ENV}=0x<64 hex>")]
    NoKey,
    #[error("two operator chain keys: both --keystore and {CHAIN_KEY_ENV} are given; use one (unset {CHAIN_KEY_ENV} or drop --keystore)")]
    TwoKeys,
    #[error("{KEYSTORE_PASSWORD_ENV} is not set: set it to the password of {}", .0.display())]
    NoPassword(PathBuf),
    #[error("{}: {reason}", path.display())]
    KeystoreFile { path: PathBuf, reason: String },
    #[error("{}: wrong password or corrupted keystore; check {KEYSTORE_PASSWORD_ENV}", .0.display())]
    WrongPassword(PathBuf),
    #[error("{}: {source}", path.display())]
    Keystore {
        path: PathBuf,
        source: KeystoreError,
    },
    #[error("{CHAIN_KEY_ENV} is not a secp256k1 secret key (0x followed by 64 hex digits); set it to one, or use --keystore")]
    BadEnvKey,
    #[error("{what} {text:?} is not an address: {reason}; write it as 0x and 40 hex digits")]
    BadAddress {
        what: &'static str,
        text: String,
        reason: String,
    },
    #[error("no registry: pass --rpc URL and --registry ADDR, or run `lockstep-fleet chain deploy --rpc URL` first")]
    NoRegistry,
    #[error("{0} does not hold the pinned NodeRegistry; check --registry (and --rpc), or deploy one with `lockstep-fleet chain deploy`")]
    NotPinned(Address),
    #[error("{0}")]
    Client(#[from] ClientError),
    /// The node's registration reply fails a local check: nothing was
    /// sent to the chain.
    #[error("node {node}: its registration {reason}; nothing was sent to the chain")]
    BadReply { node: String, reason: String },
    #[error("node {node} is not registered on the registry {registry}: run `lockstep-fleet chain register {node}`")]
    NotRegistered { node: String, registry: Address },
}

impl ChainError {
    /// 2 for bad input (the operator's keys, addresses, URLs, and requests
    /// the registry refuses), 1 for a machine, network or node problem.
    pub fn exit_code(&self) -> u8 {
        match self {
            ChainError::BadReply { .. } => 1,
            ChainError::Client(e) => match e {
                ClientError::BadUrl { .. }
                | ClientError::UnsupportedScheme { .. }
                | ClientError::Reverted(_) => 2,
                _ => 1,
            },
            _ => 2,
        }
    }
}

/// Parses an address given by the operator (`what` names the flag).
pub fn parse_address(what: &'static str, text: &str) -> Result<Address, ChainError> {
    Address::parse(text).map_err(|e| ChainError::BadAddress {
        what,
        text: text.to_string(),
        reason: e.to_string(),
    })
}

/// The operator's chain key: from the keystore at `keystore` (password
/// from `env(KEYSTORE_PASSWORD_ENV)`) or from `env(CHAIN_KEY_ENV)`,
/// exactly one of them. `env` is `std::env::var` outside tests.
pub fn operator_key(
    keystore: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ChainKey, ChainError> {
    let raw = env(CHAIN_KEY_ENV).map(Zeroizing::new);
    match (keystore, raw) {
        (None, None) => Err(ChainError::NoKey),
        (Some(_), Some(_)) => Err(ChainError::TwoKeys),
        (None, Some(raw)) => {
            let digits = raw.trim();
            let digits = digits.strip_prefix("0x").ok_or(ChainError::BadEnvKey)?;
            if digits.len() != 64 {
                return Err(ChainError::BadEnvKey);
            }
            let mut secret = Zeroizing::new([0u8; 32]);
            hex::decode_to_slice(digits, secret.as_mut()).map_err(|_| ChainError::BadEnvKey)?;
            ChainKey::from_bytes(&secret).map_err(|_| ChainError::BadEnvKey)
        }
        (Some(path), None) => {
            let password = Zeroizing::new(
                env(KEYSTORE_PASSWORD_ENV)
                    .ok_or_else(|| ChainError::NoPassword(path.to_path_buf()))?,
            );
            let text = read_keystore(path)?;
            keystore::decrypt(&text, password.as_bytes()).map_err(|e| match e {
                KeystoreError::WrongPassword => ChainError::WrongPassword(path.to_path_buf()),
                source => ChainError::Keystore {
                    path: path.to_path_buf(),
                    source,
                },
            })
        }
    }
}

fn read_keystore(path: &Path) -> Result<Vec<u8>, ChainError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| ChainError::KeystoreFile {
        path: path.to_path_buf(),
        reason: format!("{e}; give the path of a V3 keystore JSON file"),
    })?;
    // One byte over the bound is enough for decrypt to refuse it.
    let mut text = Vec::new();
    file.take(lockstep_limits::MAX_KEYSTORE_BYTES as u64 + 1)
        .read_to_end(&mut text)
        .map_err(|e| ChainError::KeystoreFile {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    Ok(text)
}

/// Randomness for a new keystore, drawn by the caller (the OS RNG).
pub struct KeystoreEntropy {
    pub key: [u8; 32],
    pub salt: [u8; 32],
    pub iv: [u8; 16],
    pub id: [u8; 16],
}

impl Drop for KeystoreEntropy {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key);
    }
}

/// Writes a new V3 keystore at `path` (never over an existing file; mode
/// 0600) holding a fresh key, encrypted with the password from
/// `env(KEYSTORE_PASSWORD_ENV)`; returns its address.
pub fn new_keystore(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    entropy: KeystoreEntropy,
) -> Result<Address, ChainError> {
    use std::io::Write;
    let password = Zeroizing::new(
        env(KEYSTORE_PASSWORD_ENV).ok_or_else(|| ChainError::NoPassword(path.to_path_buf()))?,
    );
    if password.is_empty() {
        return Err(ChainError::KeystoreFile {
            path: path.to_path_buf(),
            reason: format!("{KEYSTORE_PASSWORD_ENV} is empty; set a password"),
        });
    }
    let key = ChainKey::generate(entropy.key).map_err(|e| ChainError::KeystoreFile {
        path: path.to_path_buf(),
        reason: format!("the drawn key is unusable ({e}); run the command again"),
    })?;
    let text = keystore::encrypt(
        &key,
        password.as_bytes(),
        keystore::DEFAULT_KDF,
        entropy.salt,
        entropy.iv,
        entropy.id,
    )
    .map_err(|source| ChainError::Keystore {
        path: path.to_path_buf(),
        source,
    })?;
    let file_error = |e: std::io::Error| ChainError::KeystoreFile {
        path: path.to_path_buf(),
        reason: if e.kind() == std::io::ErrorKind::AlreadyExists {
            "already exists; choose another file name (a keystore is never overwritten)".into()
        } else {
            e.to_string()
        },
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(file_error)?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(file_error)?;
    Ok(key.address())
}

/// Whether `deployed` (what `eth_getCode` answers) is the pinned runtime
/// code `committed` of a registry owned by `owner`: the same bytes except
/// where the compiler left the immutable `_owner`'s 32 zero bytes (the
/// operand of a PUSH32), which the constructor filled with the owner's
/// address.
pub fn runtime_matches(committed: &[u8], deployed: &[u8], owner: &Address) -> bool {
    const PUSH32: u8 = 0x7f;
    if committed.len() != deployed.len() {
        return false;
    }
    let mut word = [0u8; 32];
    word[12..].copy_from_slice(owner.as_bytes());
    let mut i = 0;
    while i < committed.len() {
        if committed[i] == deployed[i] {
            i += 1;
            continue;
        }
        // A difference: it must be inside an owner word standing where
        // the committed code has a PUSH32 of 32 zero bytes (how solc
        // leaves an immutable). Such a word starts at most 31 bytes before.
        let start = (i.saturating_sub(31)..=i).find(|&s| {
            s >= 1
                && s + 32 <= committed.len()
                && committed[s - 1] == PUSH32
                && committed[s..s + 32] == [0u8; 32]
                && deployed[s..s + 32] == word
        });
        match start {
            Some(s) => i = s + 32,
            None => return false,
        }
    }
    true
}

/// Checks that `address` holds the pinned registry's runtime code (the
/// committed `deployedBytecode` with its owner filled in).
pub fn check_pinned(rpc: &RpcClient, address: &Address) -> Result<(), ChainError> {
    let code = rpc.call("eth_getCode", json!([address.to_string(), "latest"]))?;
    let code = lockstep_chain::rpc::parse_data_value(&code).map_err(ClientError::from)?;
    let committed = &pinned().deployed_bytecode;
    if code.len() != committed.len() {
        return Err(ChainError::NotPinned(*address));
    }
    let answer = match rpc.eth_call(None, address, &encode_call(signatures::OWNER, &[])) {
        Ok(answer) => answer,
        Err(ClientError::Reverted(_)) => return Err(ChainError::NotPinned(*address)),
        Err(e) => return Err(e.into()),
    };
    let owner = Decoder::new(&answer)
        .address(0)
        .map_err(|_| ChainError::NotPinned(*address))?;
    if !runtime_matches(committed, &code, &owner) {
        return Err(ChainError::NotPinned(*address));
    }
    Ok(())
}

/// The pinned registry at `address`, after checking its code.
pub fn open_registry(url: &str, address: Address) -> Result<Registry, ChainError> {
    let registry = Registry::at(url, address)?;
    check_pinned(registry.rpc(), &address)?;
    Ok(registry)
}

/// Deploys the pinned registry with `referees` trusted, paid by (and
/// owned by) `owner`, and checks the deployed code.
pub fn deploy(
    url: &str,
    owner: &ChainKey,
    referees: &[Address],
) -> Result<(Registry, TxReceipt), ChainError> {
    let (registry, receipt) = Registry::deploy(url, owner, &pinned().bytecode, referees)?;
    check_pinned(registry.rpc(), &registry.address())?;
    Ok((registry, receipt))
}

/// A node's registry id: its Ed25519 public key.
pub fn node_id_bytes(node: &NodeId) -> [u8; 32] {
    node.public_key_bytes()
}

/// The registry's code for a key protection.
pub fn chain_key_protection(p: KeyProtection) -> ChainKeyProtection {
    match p {
        KeyProtection::TpmSealed => ChainKeyProtection::TpmSealed,
        KeyProtection::File => ChainKeyProtection::File,
    }
}

/// The name of a registry key protection code.
pub fn key_protection_name(code: u8) -> String {
    match ChainKeyProtection::from_code(code) {
        Some(ChainKeyProtection::TpmSealed) => KeyProtection::TpmSealed.to_string(),
        Some(ChainKeyProtection::File) => KeyProtection::File.to_string(),
        _ => format!("unknown ({code})"),
    }
}

/// What the fleet expects of a registration reply.
pub struct Expected<'a> {
    pub node: &'a NodeId,
    /// The chain address the node reported in its session info.
    pub chain_address: &'a str,
    /// The key protection the inventory recorded at enrolment.
    pub key_protection: KeyProtection,
    /// The attestation digest sent (None: none sent).
    pub attestation_digest: Option<[u8; 32]>,
    pub operator: Address,
    pub chain_id: u64,
    pub registry: Address,
}

/// A registration checked here, ready to send.
#[derive(Debug)]
pub struct CheckedRegistration {
    pub registration: Registration,
    pub node_signature: Signature65,
    pub device_signature: [u8; 64],
}

/// Checks a node's registration reply before any gas is spent: the
/// address is the one the node reported, the key protection the one the
/// inventory recorded, the attestation digest the one sent; then (the
/// protocol's `RegistrationSignature::verify`) the node signature recovers
/// to that address over the Registration digest computed here, for this
/// operator, chain and registry, and the device signature binds the
/// address to the node id.
pub fn check_registration(
    reply: &RegistrationSignature,
    expected: &Expected<'_>,
) -> Result<CheckedRegistration, ChainError> {
    let bad = |reason: String| ChainError::BadReply {
        node: expected.node.to_base64(),
        reason,
    };
    let node_address = Address::parse(&reply.node_address)
        .map_err(|e| bad(format!("node address {:?}: {e}", reply.node_address)))?;
    let reported = Address::parse(expected.chain_address).map_err(|e| {
        bad(format!(
            "session's chain address {:?}: {e}",
            expected.chain_address
        ))
    })?;
    if node_address != reported {
        return Err(bad(format!(
            "names the chain address {node_address}, but the node reports {reported}"
        )));
    }
    if reply.key_protection != expected.key_protection {
        return Err(bad(format!(
            "states key protection {}, but the inventory recorded {} at enrolment; enroll the node again if it changed",
            reply.key_protection, expected.key_protection
        )));
    }
    let (registration, node_signature, device_signature) = reply
        .verify(
            expected.node,
            expected.chain_id,
            expected.registry,
            expected.operator,
        )
        .map_err(|e| bad(e.to_string()))?;
    let sent = expected.attestation_digest.unwrap_or([0; 32]);
    if registration.attestation_digest != sent {
        return Err(bad(format!(
            "carries the attestation digest {}, not the {} sent",
            hex::encode(registration.attestation_digest),
            hex::encode(sent)
        )));
    }
    Ok(CheckedRegistration {
        registration,
        node_signature,
        device_signature,
    })
}

/// Unix seconds as RFC 3339, or "—" for 0 (never).
pub fn chain_time(seconds: u64) -> String {
    if seconds == 0 {
        return "—".to_string();
    }
    lockstep_protocol::rfc3339(UNIX_EPOCH + Duration::from_secs(seconds))
}

/// The current time in unix seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A node's on-chain record, with its dispute counts, as lines of text.
pub fn describe(
    node: &str,
    record: &NodeRecord,
    faults: u128,
    cleared: u128,
    registry: &Address,
) -> String {
    format!(
        "node id                    {node}\n\
         node id (bytes32)          {}\n\
         registry                   {registry}\n\
         chain address              {}\n\
         operator                   {}\n\
         key protection             {}\n\
         attestation digest         {}\n\
         certification report hash  {}\n\
         bundle id                  {}\n\
         registered at              {}\n\
         revoked at                 {}\n\
         disputes                   {faults} fault, {cleared} cleared\n",
        hex0x(&record.node_id),
        record.node_address,
        record.operator,
        key_protection_name(record.key_protection),
        hex0x(&record.attestation_digest),
        hex0x(&record.certification_report_hash),
        hex0x(&record.bundle_id),
        chain_time(record.registered_at),
        chain_time(record.revoked_at),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use lockstep_identity::SigningKey;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    const SECRET: &str = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318";

    #[test]
    fn the_pinned_build_parses() {
        let p = pinned();
        assert!(p.bytecode.len() > p.deployed_bytecode.len());
        assert!(!p.deployed_bytecode.is_empty());
    }

    #[test]
    fn only_the_owner_may_differ_from_the_committed_code() {
        let owner = Address([0xab; 20]);
        let mut word = [0u8; 32];
        word[12..].copy_from_slice(&owner.0);
        // Two immutables (PUSH32 0x00…), at 10 and 47.
        let mut committed = vec![0x60; 9];
        committed.push(0x7f);
        committed.extend_from_slice(&[0; 32]);
        committed.extend_from_slice(&[0x61; 4]);
        committed.push(0x7f);
        committed.extend_from_slice(&[0; 32]);
        // And 32 zero bytes that are no PUSH32's operand, at 80.
        committed.push(0x5b);
        committed.extend_from_slice(&[0; 32]);
        let mut deployed = committed.clone();
        deployed[10..42].copy_from_slice(&word);
        deployed[47..79].copy_from_slice(&word);
        assert!(runtime_matches(&committed, &deployed, &owner));
        assert!(runtime_matches(&committed, &committed, &owner));
        assert!(!runtime_matches(
            &committed,
            &deployed,
            &Address([0xac; 20])
        ));
        let mut changed = deployed.clone();
        changed[44] ^= 1;
        assert!(!runtime_matches(&committed, &changed, &owner));
        assert!(!runtime_matches(&committed, &deployed[1..], &owner));
        let mut elsewhere = deployed.clone();
        elsewhere[80..112].copy_from_slice(&word);
        assert!(!runtime_matches(&committed, &elsewhere, &owner));
    }

    #[test]
    fn exactly_one_key_source() {
        assert!(matches!(
            operator_key(None, &env_of(&[])),
            Err(ChainError::NoKey)
        ));
        assert!(matches!(
            operator_key(
                Some(Path::new("k.json")),
                &env_of(&[(CHAIN_KEY_ENV, SECRET)])
            ),
            Err(ChainError::TwoKeys)
        ));
        let key = operator_key(None, &env_of(&[(CHAIN_KEY_ENV, SECRET)])).unwrap();
        assert_eq!(
            key.address().to_string(),
            "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23"
        );
        // Neither the error nor the key's Debug shows the secret.
        let shown = format!("{key:?}");
        assert!(!shown.contains(&SECRET[2..]), "{shown}");
        for bad in ["4c0883", "0x12", &SECRET[2..], "0xzz"] {
            let e = operator_key(None, &env_of(&[(CHAIN_KEY_ENV, bad)])).unwrap_err();
            assert!(matches!(e, ChainError::BadEnvKey));
            assert_eq!(e.exit_code(), 2);
            assert!(!e.to_string().contains(bad));
        }
    }

    #[test]
    fn a_keystore_needs_its_password() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("operator.json");
        let entropy = || KeystoreEntropy {
            key: [7; 32],
            salt: [1; 32],
            iv: [2; 16],
            id: [3; 16],
        };
        assert!(matches!(
            new_keystore(&path, &env_of(&[]), entropy()),
            Err(ChainError::NoPassword(_))
        ));
        let env = env_of(&[(KEYSTORE_PASSWORD_ENV, "correct horse")]);
        let address = new_keystore(&path, &env, entropy()).unwrap();
        // Never overwritten.
        assert!(matches!(
            new_keystore(&path, &env, entropy()),
            Err(ChainError::KeystoreFile { .. })
        ));
        assert_eq!(operator_key(Some(&path), &env).unwrap().address(), address);
        let wrong =
            operator_key(Some(&path), &env_of(&[(KEYSTORE_PASSWORD_ENV, "wrong")])).unwrap_err();
        assert!(
            wrong
                .to_string()
                .contains("wrong password or corrupted keystore"),
            "{wrong}"
        );
        assert_eq!(wrong.exit_code(), 2);
        assert!(matches!(
            operator_key(Some(&path), &env_of(&[])),
            Err(ChainError::NoPassword(_))
        ));
    }

    #[test]
    fn refusals_are_input_and_outages_are_machine_problems() {
        let refused = ChainError::Client(ClientError::Reverted(
            lockstep_chain::abi::RegistryRevert::NodeSignatureInvalid,
        ));
        assert_eq!(refused.exit_code(), 2);
        let down = ChainError::Client(ClientError::Unreachable {
            url: "u".into(),
            reason: "r".into(),
        });
        assert_eq!(down.exit_code(), 1);
        assert_eq!(ChainError::NotPinned(Address::ZERO).exit_code(), 2);
        assert!(ChainError::NotPinned(Address::ZERO)
            .to_string()
            .starts_with(
                "0x0000000000000000000000000000000000000000 does not hold the pinned NodeRegistry"
            ));
    }

    /// A node's reply made here with a chain key and a device key that
    /// are not the node's: the binding check refuses it.
    #[test]
    fn a_reply_is_checked_before_any_gas() {
        let node = SigningKey::generate();
        let chain = ChainKey::from_bytes(&[9; 32]).unwrap();
        let operator = Address([1; 20]);
        let registry = Address([2; 20]);
        let registration = Registration {
            operator,
            node_id: node_id_bytes(node.public()),
            node_address: chain.address(),
            key_protection: ChainKeyProtection::File,
            attestation_digest: [0; 32],
            certification_report_hash: [0; 32],
            bundle_id: [5; 32],
        };
        let signature = chain.sign_digest(&registration.digest(1337, registry));
        let address = chain.address().to_string();
        let reply = RegistrationSignature {
            node_address: address.clone(),
            key_protection: KeyProtection::File,
            attestation_digest: "0".repeat(64),
            certification_report_hash: "0".repeat(64),
            bundle_id: "05".repeat(32),
            node_signature: hex0x(&signature.0),
            device_signature: hex0x(&[0u8; 64]),
        };
        let expected = Expected {
            node: node.public(),
            chain_address: &address,
            key_protection: KeyProtection::File,
            attestation_digest: None,
            operator,
            chain_id: 1337,
            registry,
        };
        let e = check_registration(&reply, &expected).unwrap_err();
        assert!(e.to_string().contains("device signature"), "{e}");
        assert_eq!(e.exit_code(), 1);
        // Signed for another operator: refused at the node signature.
        let other = Expected {
            operator: Address([3; 20]),
            ..expected
        };
        let e = check_registration(&reply, &other).unwrap_err();
        assert!(
            e.to_string().contains("node_signature was signed by"),
            "{e}"
        );
        // Another key protection than the inventory's.
        let tpm = Expected {
            key_protection: KeyProtection::TpmSealed,
            ..other
        };
        let e = check_registration(&reply, &tpm).unwrap_err();
        assert!(e.to_string().contains("key protection"), "{e}");
    }
}
