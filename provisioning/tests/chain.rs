//! `lockstep-fleet chain` end to end: a real `lockstepd` (CPU backend) and
//! the pinned ganache on loopback, the committed NodeRegistry deployed by
//! the fleet, receipts checked against it by the `lockstep` CLI and by the
//! contract itself.
//!
//! Needs `contracts/node_modules` (`make test` installs it, or `cd
//! contracts && npm ci`): without it this test fails, it never skips. The
//! binaries `lockstepd` and `lockstep` are found beside `lockstep-fleet` in
//! the target directory (`cargo test --workspace`, make test, builds them).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use lockstep_chain::abi::RegistryRevert;
use lockstep_chain::client::{Registry, RpcClient};
use lockstep_chain::eip712::{DisputeOutcome, KeyProtection as ChainKeyProtection, Outcome};
use lockstep_chain::testing::{free_port, Ganache};
use lockstep_chain::{keccak256, Address, ChainKey, ClientError, Signature65};
use lockstep_fleet::chain::{check_registration, pinned, Expected};
use lockstep_fleet::session::Session;
use lockstep_identity::{KeyProtection, NodeId, SigningKey};
use lockstep_protocol::admin::AdminAction;
use serde_json::json;
use sha2::{Digest, Sha256};

const PASSWORD: &str = "correct horse battery staple";

fn fleet_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_lockstep-fleet"))
}

fn sibling(name: &str, package: &str) -> PathBuf {
    let path = fleet_bin().with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: build it first (cargo build -p {package}), or run make test",
        path.display()
    );
    path
}

struct Node {
    child: Child,
    addr: String,
    key: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A node with a file key and a first-enrolment window, as in fleet.rs.
fn start_node(state: &Path) -> Node {
    let mut child = Command::new(sibling("lockstepd", "lockstep-daemon"))
        .arg("--file-key")
        .args(["--listen", "127.0.0.1:0", "--backend", "cpu", "--state"])
        .arg(state)
        .arg("--uncertified")
        .args(["--enroll-window-s", "600"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let rest = line
        .strip_prefix("lockstepd listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    let (addr, key) = rest.trim().split_once(" as ").unwrap();
    Node {
        child,
        addr: addr.to_string(),
        key: key.to_string(),
    }
}

/// `lockstep-fleet --dir DIR ARGS` with only the chain key sources in
/// `env` (none of the caller's).
fn fleet(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(fleet_bin());
    command
        .arg("--dir")
        .arg(dir)
        .args(args)
        .env_remove("LOCKSTEP_KEY_PASSWORD")
        .env_remove("LOCKSTEP_KEYSTORE_PASSWORD")
        .env_remove("LOCKSTEP_CHAIN_KEY")
        .stdin(Stdio::null());
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        stderr(out)
    );
    stdout(out)
}

/// Fails with exit `code` and one line on stderr containing `needle`.
fn fails(out: &Output, code: i32, needle: &str) -> String {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "{err}");
    assert!(err.contains(needle), "expected {needle:?} in {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    err
}

/// The number after `label` in `text` (`gas used 1234`).
fn number_after(text: &str, label: &str) -> u64 {
    let at = text
        .find(label)
        .unwrap_or_else(|| panic!("no {label:?} in {text}"));
    text[at + label.len()..]
        .trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|e| panic!("{label:?} in {text}: {e}"))
}

fn test_key(name: &str) -> ChainKey {
    ChainKey::from_bytes(&keccak256(format!("lockstep fleet test {name}").as_bytes())).unwrap()
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Gives `address` 1000 ether on ganache.
fn fund(rpc: &RpcClient, address: &Address) {
    rpc.call(
        "evm_setAccountBalance",
        json!([address.to_string(), "0x3635c9adc5dea00000"]),
    )
    .unwrap();
}

fn submit(node: &Node, receipt: &Path, out: &Path) {
    let program = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/attention.json");
    let o = Command::new(sibling("lockstep", "lockstep-cli"))
        .args([
            "submit",
            "--node",
            &node.addr,
            "--node-key",
            &node.key,
            "--receipt",
        ])
        .arg(receipt)
        .arg("exec")
        .arg(&program)
        .arg("--out-dir")
        .arg(out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
}

fn verify_on_chain(receipt: &Path, node: &Node, rpc: &str, registry: &Address) -> Output {
    Command::new(sibling("lockstep", "lockstep-cli"))
        .arg("verify-receipt")
        .arg(receipt)
        .args(["--node-key", &node.key, "--chain", rpc, "--registry"])
        .arg(registry.to_string())
        .output()
        .unwrap()
}

/// `R.json.eip712` beside a receipt: its EIP-712 Receipt signature.
fn eip712_path(receipt: &Path) -> PathBuf {
    let mut name = receipt.file_name().unwrap().to_os_string();
    name.push(".eip712");
    receipt.with_file_name(name)
}

/// The receipt's digest (`Receipt::digest`: SHA-256 of its canonical
/// bytes) and its EIP-712 signature (`R.json.eip712`: `0x` + 130 hex).
fn receipt_signature(receipt: &Path) -> ([u8; 32], Signature65) {
    let parsed: lockstep_protocol::receipt::Receipt =
        serde_json::from_slice(&std::fs::read(receipt).unwrap()).unwrap();
    let path = eip712_path(receipt);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let signature = hex::decode(text.trim().trim_start_matches("0x")).unwrap();
    (
        parsed.digest(),
        Signature65::from_slice(&signature).unwrap(),
    )
}

fn sleep_past_a_second() {
    std::thread::sleep(Duration::from_millis(1100));
}

#[test]
fn a_node_on_a_local_chain() {
    let referee = test_key("referee");
    let other_operator = test_key("other operator");
    let chain = Ganache::start(&[&referee, &other_operator]);
    let rpc = chain.rpc();
    let url = chain.url.as_str();
    let tmp = tempfile::tempdir().unwrap();

    // A node, enrolled with the fleet.
    let node = start_node(&tmp.path().join("node"));
    let f = tmp.path().join("fleet");
    ok(&fleet(&f, &["init", "--unencrypted"], &[]));
    ok(&fleet(&f, &["enroll", "--allow-file-key", &node.addr], &[]));
    let node_id = NodeId::parse(&node.key).unwrap();

    // The operator's chain account: a new keystore, funded.
    let keystore = tmp.path().join("operator.keystore.json");
    let ks = keystore.to_str().unwrap();
    fails(
        &fleet(&f, &["chain", "new-keystore", ks], &[]),
        2,
        "LOCKSTEP_KEYSTORE_PASSWORD",
    );
    let pw = [("LOCKSTEP_KEYSTORE_PASSWORD", PASSWORD)];
    let printed = ok(&fleet(&f, &["chain", "new-keystore", ks], &pw));
    let operator_address = Address::parse(printed.trim()).unwrap();
    let operator =
        lockstep_chain::keystore::decrypt(&std::fs::read(&keystore).unwrap(), PASSWORD.as_bytes())
            .unwrap();
    assert_eq!(operator.address(), operator_address);
    fund(&rpc, &operator_address);

    // The key's sources: exactly one, with its password.
    let deploy = |env: &[(&str, &str)], with_keystore: bool| {
        let mut args = vec!["chain", "deploy", "--rpc", url];
        let referee_address = referee.address().to_string();
        args.extend(["--referee", &referee_address]);
        if with_keystore {
            args.extend(["--keystore", ks]);
        }
        fleet(&f, &args, env)
    };
    fails(&deploy(&[], false), 2, "LOCKSTEP_CHAIN_KEY");
    fails(&deploy(&[], true), 2, "LOCKSTEP_KEYSTORE_PASSWORD");
    fails(
        &deploy(&[("LOCKSTEP_KEYSTORE_PASSWORD", "wrong")], true),
        2,
        "wrong password or corrupted keystore",
    );
    let raw = format!("0x{}", hex::encode(*other_operator.to_bytes()));
    let both = deploy(
        &[
            ("LOCKSTEP_KEYSTORE_PASSWORD", PASSWORD),
            ("LOCKSTEP_CHAIN_KEY", &raw),
        ],
        true,
    );
    let err = fails(&both, 2, "two operator chain keys");
    assert!(!err.contains(&raw[2..]), "the key was printed: {err}");

    // Deploy.
    let deployed = deploy(&pw, true);
    let out = ok(&deployed);
    let registry_text = out
        .lines()
        .find_map(|l| l.strip_prefix("registry "))
        .unwrap_or_else(|| panic!("no registry line in {out}"));
    let registry_address = Address::parse(registry_text).unwrap();
    assert_eq!(number_after(&out, "chain id"), 1337);
    let deploy_gas = number_after(&out, "gas used");
    eprintln!("gas: deploy {deploy_gas}");
    let registry = Registry::at(url, registry_address).unwrap();
    assert_eq!(registry.owner().unwrap(), operator_address);
    assert!(registry.is_referee(&referee.address()).unwrap());
    let shown: serde_json::Value =
        serde_json::from_str(&ok(&fleet(&f, &["show", &node.key], &[]))).unwrap();
    assert!(shown["chain"].is_null(), "{shown}");

    // A signed registration for this operator, asked for here (the fleet's
    // own admin key), to replay it where it does not belong.
    let fleet_key = SigningKey::read_file(&f.join("operator.key"), None).unwrap();
    let (info, reply) = smol::block_on(async {
        let session = Session::open(node.addr.parse().unwrap(), Some(&node_id))
            .await
            .unwrap();
        let info = session.info.clone();
        let command = session.sign(
            &fleet_key,
            AdminAction::SignRegistration {
                chain_id: 1337,
                registry: registry_address.to_string(),
                operator: operator_address.to_string(),
                attestation_digest: String::new(),
            },
            None,
        );
        (info, session.send(command, &[]).await.unwrap())
    });
    let signed = reply.registration.expect("a signed registration");
    assert_eq!(signed.node_address, info.chain_address);
    let checked = check_registration(
        &signed,
        &Expected {
            node: &node_id,
            chain_address: &info.chain_address,
            key_protection: KeyProtection::File,
            attestation_digest: None,
            operator: operator_address,
            chain_id: 1337,
            registry: registry_address,
        },
    )
    .unwrap();
    assert_eq!(
        checked.registration.key_protection,
        ChainKeyProtection::File
    );
    // Sent by another operator: refused.
    let refusal = registry.register(
        &other_operator,
        &checked.registration,
        &checked.node_signature,
        &checked.device_signature,
    );
    assert!(
        matches!(
            refusal,
            Err(ClientError::Reverted(RegistryRevert::NodeSignatureInvalid))
        ),
        "{refusal:?}"
    );
    // Replayed to a second registry: refused.
    let (second, _) =
        Registry::deploy(url, &operator, &pinned().bytecode, &[referee.address()]).unwrap();
    let refusal = second.register(
        &operator,
        &checked.registration,
        &checked.node_signature,
        &checked.device_signature,
    );
    assert!(
        matches!(
            refusal,
            Err(ClientError::Reverted(RegistryRevert::NodeSignatureInvalid))
        ),
        "{refusal:?}"
    );

    // Register through the fleet.
    let registered = fleet(
        &f,
        &["chain", "register", &node.key[..12], "--keystore", ks],
        &pw,
    );
    let out = ok(&registered);
    let register_gas = number_after(&stderr(&registered), "gas used");
    eprintln!("gas: register {register_gas}");
    assert!(out.contains(&signed.node_address), "{out}");
    assert!(out.contains(&operator_address.to_string()), "{out}");
    let record = registry.get_node(&node_id.public_key_bytes()).unwrap();
    assert_eq!(record.node_address.to_string(), signed.node_address);
    assert_eq!(record.operator, operator_address);
    let shown: serde_json::Value =
        serde_json::from_str(&ok(&fleet(&f, &["show", &node.key], &[]))).unwrap();
    assert_eq!(shown["chain"]["registered_at"], record.registered_at);
    assert!(ok(&fleet(&f, &["list"], &[])).contains("chain registered"));

    // Registered once only.
    fails(
        &fleet(&f, &["chain", "register", &node.key, "--keystore", ks], &pw),
        2,
        "is already registered",
    );

    // A job's receipt, checked by the CLI against the registry and by the
    // registry itself.
    let before = tmp.path().join("before.json");
    submit(&node, &before, &tmp.path().join("out1"));
    assert!(eip712_path(&before).exists());
    let checked_before = verify_on_chain(&before, &node, url, &registry_address);
    let said = format!("{}{}", stdout(&checked_before), stderr(&checked_before));
    assert!(checked_before.status.success(), "{said}");
    assert!(
        said.contains("registered at") && said.contains("not revoked"),
        "{said}"
    );
    let (digest, signature) = receipt_signature(&before);
    let verdict = registry.verify_receipt(&digest, &signature.0).unwrap();
    assert!(verdict.valid);
    assert_eq!(verdict.node_id, node_id.public_key_bytes());
    eprintln!(
        "gas: verifyReceipt (eth_estimateGas) {}",
        registry
            .estimate_verify_receipt(&digest, &signature.0)
            .unwrap()
    );

    // A dispute outcome signed by the referee is recorded; one by anyone
    // else is refused.
    let dispute = DisputeOutcome {
        node_id: node_id.public_key_bytes(),
        receipt_digest: digest,
        outcome: Outcome::NodeAtFault,
        details_hash: sha256(b"the referee's findings"),
    };
    let dispute_digest = dispute.digest(1337, registry_address);
    let (_, recorded) = registry
        .record_dispute(&referee, &dispute, &referee.sign_digest(&dispute_digest))
        .unwrap();
    eprintln!("gas: recordDispute {}", recorded.gas_used);
    let cleared = DisputeOutcome {
        outcome: Outcome::NodeCleared,
        ..dispute.clone()
    };
    let refusal = registry.record_dispute(
        &other_operator,
        &cleared,
        &other_operator.sign_digest(&cleared.digest(1337, registry_address)),
    );
    assert!(
        matches!(
            refusal,
            Err(ClientError::Reverted(RegistryRevert::NotReferee { .. }))
        ),
        "{refusal:?}"
    );
    let shown = ok(&fleet(&f, &["chain", "show", &node.key], &[]));
    assert!(shown.contains("1 fault, 0 cleared"), "{shown}");
    assert!(shown.contains(&signed.node_address), "{shown}");

    // Revoke (only the registering operator may), then a new receipt is
    // refused and the earlier one reported as signed before.
    sleep_past_a_second();
    fails(
        &fleet(
            &f,
            &["chain", "revoke", &node.key],
            &[("LOCKSTEP_CHAIN_KEY", &raw)],
        ),
        2,
        "is not the operator of node",
    );
    let revoked = fleet(&f, &["chain", "revoke", &node.key, "--keystore", ks], &pw);
    let out = ok(&revoked);
    let revoke_gas = number_after(&out, "gas used");
    eprintln!("gas: revoke {revoke_gas}");
    assert!(ok(&fleet(&f, &["list"], &[])).contains("chain revoked"));
    let shown = ok(&fleet(&f, &["chain", "show", &node.key], &[]));
    let revoked_line = shown
        .lines()
        .find(|l| l.starts_with("revoked at"))
        .unwrap_or_else(|| panic!("no revoked line in {shown}"));
    assert!(!revoked_line.ends_with('—'), "{shown}");
    sleep_past_a_second();
    let after = tmp.path().join("after.json");
    submit(&node, &after, &tmp.path().join("out2"));
    let refused = verify_on_chain(&after, &node, url, &registry_address);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("from a revoked node"),
        "{}",
        stderr(&refused)
    );
    let earlier = verify_on_chain(&before, &node, url, &registry_address);
    let said = format!("{}{}", stdout(&earlier), stderr(&earlier));
    assert!(earlier.status.success(), "{said}");
    assert!(said.contains("; revoked at"), "{said}");
    assert!(said.contains("after this receipt"), "{said}");

    // The registry must be the pinned one.
    fails(
        &fleet(
            &f,
            &[
                "chain",
                "show",
                &node.key,
                "--registry",
                &referee.address().to_string(),
            ],
            &[],
        ),
        2,
        "does not hold the pinned NodeRegistry",
    );
    // A URL that is not one, and a chain that is down.
    fails(
        &fleet(
            &f,
            &["chain", "show", &node.key, "--rpc", "127.0.0.1:8545"],
            &[],
        ),
        2,
        "not a usable RPC URL",
    );
    fails(
        &fleet(
            &f,
            &["chain", "deploy", "--rpc", url, "--referee", "0x12"],
            &[("LOCKSTEP_CHAIN_KEY", &raw)],
        ),
        2,
        "is not an address",
    );
    fails(
        &fleet(&f, &["chain", "show", "RWQnosuchnode"], &[]),
        2,
        "no node RWQnosuchnode",
    );
    let down = format!("http://127.0.0.1:{}", free_port());
    fails(
        &fleet(&f, &["chain", "show", &node.key, "--rpc", &down], &[]),
        1,
        "unreachable",
    );
}
