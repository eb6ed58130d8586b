//! The Rust client against the real `NodeRegistry` (the committed
//! `contracts/out/NodeRegistry.json`) on a local ganache chain.
//!
//! Needs `contracts/node_modules` (`make test` installs it, or `cd
//! contracts && npm ci`): without it this test fails, it never skips. The
//! chain is `lockstep_chain::testing::Ganache`, shared with other crates' tests.

use lockstep_chain::abi::{RegistryEvent, RegistryRevert};
use lockstep_chain::client::Registry;
use lockstep_chain::eip712::{
    receipt_typed_digest, registry_domain_separator, DisputeOutcome, KeyProtection, Outcome,
    Registration,
};
use lockstep_chain::testing::{free_port, repo_root, Ganache, CHAIN_ID};
use lockstep_chain::{keccak256, Address, ChainKey, ClientError};
use sha2::{Digest, Sha256};

fn key(name: &str) -> ChainKey {
    ChainKey::from_bytes(&keccak256(format!("lockstep test {name}").as_bytes())).unwrap()
}

fn bytecode() -> Vec<u8> {
    let path = repo_root().join("contracts/out/NodeRegistry.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let hex_code = json["bytecode"].as_str().expect("a bytecode string");
    hex::decode(hex_code.trim_start_matches("0x")).unwrap()
}

fn reverted(result: Result<impl std::fmt::Debug, ClientError>) -> RegistryRevert {
    match result {
        Err(ClientError::Reverted(revert)) => revert,
        other => panic!("expected a revert, got {other:?}"),
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[test]
fn registry_on_ganache() {
    let operator = key("operator");
    let other_operator = key("other operator");
    let referee = key("referee");
    let untrusted = key("untrusted referee");
    let chain = Ganache::start(&[&operator, &other_operator, &referee, &untrusted]);
    let code = bytecode();

    // Deploy.
    let (registry, deployed) =
        Registry::deploy(&chain.url, &operator, &code, &[referee.address()]).unwrap();
    eprintln!("gas: deploy {}", deployed.gas_used);
    assert_eq!(registry.chain_id(), CHAIN_ID);
    assert_eq!(registry.owner().unwrap(), operator.address());
    assert!(registry.is_referee(&referee.address()).unwrap());
    assert!(!registry.is_referee(&untrusted.address()).unwrap());
    assert_eq!(
        registry.domain_separator().unwrap(),
        registry_domain_separator(CHAIN_ID, registry.address())
    );
    let (other_registry, _) =
        Registry::deploy(&chain.url, &operator, &code, &[referee.address()]).unwrap();
    assert_ne!(other_registry.address(), registry.address());

    // The node's chain key signs its registration.
    let node = ChainKey::generate(sha256(b"fixed entropy for the test node")).unwrap();
    let node_id = sha256(b"node 1's Ed25519 public key");
    let registration = Registration {
        operator: operator.address(),
        node_id,
        node_address: node.address(),
        key_protection: KeyProtection::TpmSealed,
        attestation_digest: sha256(b"attestation"),
        certification_report_hash: sha256(b"certification report"),
        bundle_id: sha256(b"bundle"),
    };
    let digest = registration.digest(CHAIN_ID, registry.address());
    assert_eq!(registry.registration_digest(&registration).unwrap(), digest);
    let node_signature = node.sign_digest(&digest);
    let device_signature = [0xd5; 64];

    // Refused: sent by an account the node did not sign for.
    assert_eq!(
        reverted(registry.register(
            &other_operator,
            &registration,
            &node_signature,
            &device_signature
        )),
        RegistryRevert::NodeSignatureInvalid
    );
    // Refused: signed by another key than the node's.
    let impostor = other_operator.sign_digest(&digest);
    assert_eq!(
        reverted(registry.register(&operator, &registration, &impostor, &device_signature)),
        RegistryRevert::NodeSignatureInvalid
    );
    // Refused: signed for another chain, and for another registry.
    for wrong in [
        registration.digest(1, registry.address()),
        registration.digest(CHAIN_ID, other_registry.address()),
    ] {
        assert_eq!(
            reverted(registry.register(
                &operator,
                &registration,
                &node.sign_digest(&wrong),
                &device_signature
            )),
            RegistryRevert::NodeSignatureInvalid
        );
    }
    let refusal =
        reverted(registry.register(&operator, &registration, &impostor, &device_signature));
    eprintln!("a refusal reads: {refusal}");

    // Accepted.
    let registered = registry
        .register(&operator, &registration, &node_signature, &device_signature)
        .unwrap();
    eprintln!("gas: register {}", registered.gas_used);
    let event = registered
        .logs
        .iter()
        .find_map(|log| RegistryEvent::decode(&log.topics, &log.data).ok())
        .expect("a NodeRegistered event");
    assert!(matches!(
        event,
        RegistryEvent::NodeRegistered { node_id: id, operator: op, ref device_signature, .. }
            if id == node_id && op == operator.address() && device_signature == &[0xd5; 64]
    ));
    let record = registry.get_node(&node_id).unwrap();
    assert_eq!(record.node_id, node_id);
    assert_eq!(record.node_address, node.address());
    assert_eq!(record.operator, operator.address());
    assert_eq!(record.key_protection, KeyProtection::TpmSealed.code());
    assert_eq!(record.attestation_digest, registration.attestation_digest);
    assert_eq!(
        record.certification_report_hash,
        registration.certification_report_hash
    );
    assert_eq!(record.bundle_id, registration.bundle_id);
    assert!(record.registered_at > 0);
    assert_eq!(record.revoked_at, 0);
    assert_eq!(registry.node_id_of(&node.address()).unwrap(), node_id);

    // Refused: already registered.
    assert_eq!(
        reverted(registry.register(&operator, &registration, &node_signature, &device_signature)),
        RegistryRevert::AlreadyRegistered { node_id }
    );

    // A receipt signed by the node verifies.
    let receipt_digest = sha256(b"a receipt's canonical bytes");
    let typed = receipt_typed_digest(&receipt_digest);
    assert_eq!(
        registry.receipt_typed_digest(&receipt_digest).unwrap(),
        typed
    );
    let receipt_signature = node.sign_digest(&typed);
    let verdict = registry
        .verify_receipt(&receipt_digest, &receipt_signature.0)
        .unwrap();
    assert!(verdict.valid);
    assert_eq!(verdict.node_id, node_id);
    assert_eq!(verdict.registered_at, record.registered_at);
    eprintln!(
        "gas: verifyReceipt (eth_estimateGas) {}",
        registry
            .estimate_verify_receipt(&receipt_digest, &receipt_signature.0)
            .unwrap()
    );
    // Signed by a key that is no node: not valid, and no node.
    let stranger = registry
        .verify_receipt(&receipt_digest, &untrusted.sign_digest(&typed).0)
        .unwrap();
    assert!(!stranger.valid);
    assert_eq!(stranger.node_id, [0; 32]);

    // Disputes.
    let dispute = DisputeOutcome {
        node_id,
        receipt_digest,
        outcome: Outcome::NodeAtFault,
        details_hash: sha256(b"dispute details"),
    };
    let dispute_digest = dispute.digest(CHAIN_ID, registry.address());
    assert_eq!(registry.dispute_digest(&dispute).unwrap(), dispute_digest);
    let referee_signature = referee.sign_digest(&dispute_digest);
    let (dispute_id, recorded) = registry
        .record_dispute(&other_operator, &dispute, &referee_signature)
        .unwrap();
    eprintln!("gas: recordDispute {}", recorded.gas_used);
    assert_eq!(dispute_id, dispute_digest);
    assert_eq!(registry.fault_count(&node_id).unwrap(), 1);
    assert_eq!(registry.cleared_count(&node_id).unwrap(), 0);
    let stored = registry.get_dispute(&dispute_id).unwrap();
    assert_eq!(stored.referee, referee.address());
    assert_eq!(stored.outcome, Outcome::NodeAtFault.code());
    assert!(stored.recorded_at > 0);
    let cleared = DisputeOutcome {
        outcome: Outcome::NodeCleared,
        ..dispute.clone()
    };
    assert_eq!(
        reverted(registry.record_dispute(
            &operator,
            &cleared,
            &untrusted.sign_digest(&cleared.digest(CHAIN_ID, registry.address()))
        )),
        RegistryRevert::NotReferee {
            signer: untrusted.address()
        }
    );
    assert_eq!(
        reverted(registry.record_dispute(&operator, &dispute, &referee_signature)),
        RegistryRevert::DisputeAlreadyRecorded { dispute_id }
    );

    // Revocation.
    assert_eq!(
        reverted(registry.revoke(&other_operator, &node_id)),
        RegistryRevert::NotOperator {
            node_id,
            caller: other_operator.address()
        }
    );
    let revoked = registry.revoke(&operator, &node_id).unwrap();
    eprintln!("gas: revoke {}", revoked.gas_used);
    assert!(revoked.logs.iter().any(|log| matches!(
        RegistryEvent::decode(&log.topics, &log.data),
        Ok(RegistryEvent::NodeRevoked { node_id: id, .. }) if id == node_id
    )));
    let after = registry
        .verify_receipt(&receipt_digest, &receipt_signature.0)
        .unwrap();
    assert!(!after.valid);
    assert_eq!(after.node_id, node_id);
    assert!(after.revoked_at >= after.registered_at && after.revoked_at > 0);
    assert_eq!(
        reverted(registry.revoke(&operator, &node_id)),
        RegistryRevert::AlreadyRevoked { node_id }
    );

    // A chain that is down, and a URL that is not one.
    let down = format!("http://127.0.0.1:{}", free_port());
    assert!(matches!(
        Registry::at(&down, registry.address()),
        Err(ClientError::Unreachable { .. })
    ));
    assert!(matches!(
        Registry::at("127.0.0.1:8545", Address::ZERO),
        Err(ClientError::BadUrl { .. })
    ));
}
