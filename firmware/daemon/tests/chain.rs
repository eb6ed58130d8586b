//! The node's chain identity end to end (protocol v5): status and admin
//! info name the chain address, every receipt is format 3 with a chain
//! signature that recovers to it, and `SignRegistration` answers with
//! signatures that verify, or refuses bad input with one line while the
//! node keeps serving.

mod common;

use common::client::{ask, connect_from, job_id, one_op, submit};
use lockstep_chain::Address;
use lockstep_identity::{verify_chain_binding, SigningKey};
use lockstep_protocol::admin::{AdminAction, AdminReply, NodeInfo};
use lockstep_protocol::{verify_chain_signature, KeyProtection, Message, Receipt, RECEIPT_FORMAT};
use lockstep_tensor::{Fill, Tensor};

const REGISTRY: &str = "0x5FbDB2315678afecb367f032d93F642f64180aa3";
const OPERATOR: &str = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266";

struct Fixture {
    _dir: tempfile::TempDir,
    node: common::Node,
    operator: SigningKey,
}

fn start() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let operator = SigningKey::generate();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "trusted_operators = [\"{}\"]\n",
            operator.public().to_base64()
        ),
    )
    .unwrap();
    let node = common::start(
        &dir.path().join("state"),
        "cpu",
        &["--config", config.to_str().unwrap()],
    );
    Fixture {
        _dir: dir,
        node,
        operator,
    }
}

/// One admin session: the node's signed info, then `action` signed by
/// `key`, and the reply.
async fn admin(
    node: &common::Node,
    key: &SigningKey,
    action: AdminAction,
) -> (NodeInfo, AdminReply) {
    let (info, reply) = common::client::admin(node, key, Some(action), None, Vec::new()).await;
    (info, reply.expect("an admin command is answered"))
}

async fn status_address(node: &common::Node) -> String {
    let conn = connect_from(node, "127.0.0.1").await.unwrap();
    let (reply, _) = ask(&conn, &Message::StatusRequest, &[]).await.unwrap();
    let Message::Status(status) = reply else {
        panic!("not a status: {reply:?}")
    };
    status.chain_address
}

fn sign_registration(attestation_digest: &str) -> AdminAction {
    AdminAction::SignRegistration {
        chain_id: 1337,
        registry: REGISTRY.into(),
        operator: OPERATOR.into(),
        attestation_digest: attestation_digest.into(),
    }
}

#[test]
fn status_and_receipts_carry_the_chain_address_and_signature() {
    let f = start();
    smol::block_on(async {
        let address = status_address(&f.node).await;
        let parsed = Address::parse(&address).unwrap();
        assert_eq!(parsed.to_checksum(), address, "EIP-55");

        let conn = connect_from(&f.node, "127.0.0.1").await.unwrap();
        let x = Tensor::filled(vec![8], 3, Fill::Uniform).unwrap();
        let reply = submit(&conn, job_id(0xc4, 1), &one_op("relu", &[8]), &x)
            .await
            .unwrap();
        let Message::Done(done) = reply else {
            panic!("the job did not finish: {reply:?}")
        };
        let receipt = Receipt::verify(&done.receipt, &done.signature, &f.node.node_id()).unwrap();
        assert_eq!(receipt.format, RECEIPT_FORMAT);
        assert_eq!(receipt.chain_address.as_deref(), Some(address.as_str()));
        assert_eq!(
            verify_chain_signature(&done.receipt, &done.chain_signature, &parsed).unwrap(),
            parsed
        );
        // The chain key signed the same digest the registry checks.
        let digest = lockstep_chain::eip712::receipt_typed_digest(&receipt.digest());
        let signature = lockstep_chain::Signature65::from_slice(
            &hex::decode(&done.chain_signature[2..]).unwrap(),
        )
        .unwrap();
        assert_eq!(
            lockstep_chain::recover(&digest, &signature).unwrap(),
            parsed
        );
    });
}

#[test]
fn the_chain_address_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let first = {
        let node = common::start(&state, "cpu", &[]);
        smol::block_on(status_address(&node))
    };
    let node = common::start(&state, "cpu", &[]);
    assert_eq!(smol::block_on(status_address(&node)), first);
}

#[test]
fn sign_registration_answers_with_signatures_that_verify() {
    let f = start();
    smol::block_on(async {
        let digest = "ab".repeat(32);
        let (info, reply) = admin(&f.node, &f.operator, sign_registration(&digest)).await;
        assert!(reply.ok, "{}", reply.message);
        let registration = reply.registration.expect("a registration");
        assert_eq!(registration.node_address, info.chain_address);
        assert_eq!(registration.node_address, status_address(&f.node).await);
        assert_eq!(registration.key_protection, KeyProtection::File);
        assert_eq!(registration.attestation_digest, digest);
        // Uncertified (--uncertified): no report hash; the active bundle.
        assert_eq!(registration.certification_report_hash, "0".repeat(64));
        assert_eq!(registration.bundle_id, info.bundle_id);

        let node = f.node.node_id();
        let registry: Address = REGISTRY.parse().unwrap();
        let operator: Address = OPERATOR.parse().unwrap();
        let (typed, node_signature, device_signature) = registration
            .verify(&node, 1337, registry, operator)
            .unwrap();
        assert_eq!(typed.node_id, node.public_key_bytes());
        assert_eq!(
            lockstep_chain::recover(&typed.digest(1337, registry), &node_signature).unwrap(),
            Address::parse(&registration.node_address).unwrap()
        );
        verify_chain_binding(
            &node,
            Address::parse(&registration.node_address)
                .unwrap()
                .as_bytes(),
            &device_signature,
        )
        .unwrap();
        // Made for chain 1337: not valid on another chain.
        assert!(registration.verify(&node, 1, registry, operator).is_err());

        // "" means no attestation: the zero bytes32.
        let (_, reply) = admin(&f.node, &f.operator, sign_registration("")).await;
        assert!(reply.ok, "{}", reply.message);
        assert_eq!(
            reply.registration.unwrap().attestation_digest,
            "0".repeat(64)
        );
    });
}

#[test]
fn bad_registration_requests_are_refused_and_the_node_keeps_serving() {
    let f = start();
    smol::block_on(async {
        let bad = [
            AdminAction::SignRegistration {
                chain_id: 1337,
                registry: "0x1234".into(),
                operator: OPERATOR.into(),
                attestation_digest: String::new(),
            },
            AdminAction::SignRegistration {
                chain_id: 1337,
                registry: REGISTRY.into(),
                operator: "f39fd6e51aad88f6f4ce6ab8827279cfffb92266".into(),
                attestation_digest: String::new(),
            },
            AdminAction::SignRegistration {
                chain_id: 1337,
                registry: REGISTRY.into(),
                // A mixed-case address that fails its checksum.
                operator: "0xF39fd6e51aad88f6f4ce6ab8827279cfffb92266".into(),
                attestation_digest: String::new(),
            },
            sign_registration("XYZ"),
            sign_registration(&"AB".repeat(32)),
            sign_registration(&"é".repeat(32)),
        ];
        for action in bad {
            let (_, reply) = admin(&f.node, &f.operator, action.clone()).await;
            assert!(!reply.ok, "{action:?} accepted");
            assert!(reply.registration.is_none());
            assert!(
                !reply.message.contains('\n') && reply.message.contains("refused"),
                "{}",
                reply.message
            );
        }
        // An operator the node does not trust is refused.
        let stranger = SigningKey::generate();
        let (_, reply) = admin(&f.node, &stranger, sign_registration("")).await;
        assert!(!reply.ok);
        assert!(reply.registration.is_none());

        // Still serving, and still signing.
        let conn = connect_from(&f.node, "127.0.0.1").await.unwrap();
        let x = Tensor::filled(vec![4], 9, Fill::Uniform).unwrap();
        let reply = submit(&conn, job_id(0xc5, 2), &one_op("relu", &[4]), &x)
            .await
            .unwrap();
        assert!(matches!(reply, Message::Done(_)), "{reply:?}");
        let (_, reply) = admin(&f.node, &f.operator, sign_registration("")).await;
        assert!(reply.ok, "{}", reply.message);
    });
}
