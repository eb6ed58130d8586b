//! The protocol's pieces end to end, without I/O: a job's frames through the
//! decoder, tensors through the receiver, receipts through the stock
//! minisign tool; and garbage never panics a decoder.

use std::collections::BTreeMap;
use std::process::Command;

use lockstep_identity::DeviceKey;
use lockstep_protocol::*;
use lockstep_tensor::{Fill, Tensor};
use proptest::prelude::*;
use sha2::Digest as _;

fn tensors() -> Vec<(String, Tensor)> {
    vec![
        (
            "a".into(),
            Tensor::filled(
                vec![300, 1000],
                1,
                Fill::Edgy {
                    edge_per_mille: 100,
                },
            )
            .unwrap(),
        ),
        ("empty".into(), Tensor::zeros(vec![0, 4]).unwrap()),
        (
            "b".into(),
            Tensor::filled(vec![5], 2, Fill::Uniform).unwrap(),
        ),
    ]
}

#[test]
fn a_job_survives_the_wire_in_any_split() {
    let ts = tensors();
    let request = Message::Submit(JobRequest {
        job_id: [1; 16],
        program: vec![0xAB; 100],
        inputs: ts.iter().map(|(n, t)| header(n, t)).collect(),
        references: vec![],
        submitter: None,
        device: None,
    });
    let mut wire = request.to_frame().encode();
    for (_, t) in &ts {
        for f in tensor_chunks(t) {
            wire.extend(f.encode());
        }
    }
    for step in [3, 4096, 1 << 20, wire.len()] {
        let mut decoder = FrameDecoder::new();
        let mut receiver: Option<TensorReceiver> = None;
        let mut got = Vec::new();
        for piece in wire.chunks(step) {
            for frame in decoder.push(piece).unwrap() {
                match frame {
                    Frame::Control(p) => {
                        let Message::Submit(r) = Message::decode(&p).unwrap() else {
                            panic!("submit expected")
                        };
                        let mut rx = TensorReceiver::new(r.inputs).unwrap();
                        got.extend(rx.take_ready());
                        receiver = Some(rx);
                    }
                    Frame::Data(d) => got.extend(receiver.as_mut().unwrap().push(&d).unwrap()),
                }
            }
        }
        decoder.finish().unwrap();
        assert!(receiver.unwrap().is_done());
        let mut want: Vec<_> = ts.iter().map(|(n, _)| n.clone()).collect();
        let mut names: Vec<_> = got.iter().map(|(n, _)| n.clone()).collect();
        want.sort();
        names.sort();
        assert_eq!(names, want);
        for (n, t) in &got {
            let orig = &ts.iter().find(|(m, _)| m == n).unwrap().1;
            assert!(t.bit_eq(orig), "{n} changed in transit");
        }
    }
}

#[test]
fn corrupted_or_overlong_data_is_refused() {
    let t = Tensor::filled(vec![10], 3, Fill::Uniform).unwrap();
    let mut rx = TensorReceiver::new(vec![header("x", &t)]).unwrap();
    let mut bytes: Vec<u8> = t.data().iter().flat_map(|v| v.to_le_bytes()).collect();
    bytes[7] ^= 1;
    assert!(matches!(
        rx.push(&bytes),
        Err(TensorStreamError::Hash { .. })
    ));
    let mut rx = TensorReceiver::new(vec![header("x", &t)]).unwrap();
    assert!(matches!(
        rx.push(&[0; 44]),
        Err(TensorStreamError::Overrun { .. })
    ));
    let huge = TensorHeader {
        name: "h".into(),
        shape: vec![1 << 20, 1 << 20],
        sha256: [0; 32],
    };
    assert!(matches!(
        TensorReceiver::new(vec![huge]),
        Err(TensorStreamError::Shape { .. })
    ));
}

fn receipt(node: &str) -> Receipt {
    Receipt {
        format: RECEIPT_FORMAT,
        node: node.to_string(),
        job_id: "00112233445566778899aabbccddeeff".into(),
        bundle_id: "ab".repeat(32),
        device: DeviceRecord {
            backend: "vulkan".into(),
            name: "llvmpipe".into(),
            vendor_id: 0x10005,
            device_id: 0,
            driver_id: 13,
            driver_version: 1,
            api_version: 4_206_822,
            uuid: Some("00".repeat(16)),
            index: Some(0),
        },
        program_sha256: "cd".repeat(32),
        inputs: BTreeMap::from([("x".to_string(), "ef".repeat(32))]),
        outputs: BTreeMap::from([("y".to_string(), "01".repeat(32))]),
        trace_root: "23".repeat(32),
        started_at: "2026-11-24T07:49:03Z".into(),
        finished_at: "2026-11-24T07:49:04Z".into(),
        certified: false,
        key_protection: Some(lockstep_protocol::KeyProtection::TpmSealed),
        chain_address: Some(chain_key().address().to_checksum()),
        submitter: None,
        references: Some(BTreeMap::new()),
    }
}

/// A known secp256k1 key (address 0x2c7536E3605D9C16a7a3D7b1898e529396a65c23).
fn chain_key() -> lockstep_chain::ChainKey {
    let secret: [u8; 32] =
        hex::decode("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
            .unwrap()
            .try_into()
            .unwrap();
    lockstep_chain::ChainKey::from_bytes(&secret).unwrap()
}

#[test]
fn format_3_receipts_carry_a_chain_signature_over_the_same_digest() {
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = DeviceKey::load_or_create(&dir.path().join("a")).unwrap();
    let r = receipt(&key.node_id().to_base64());
    let (bytes, sig) = r.sign(&key);
    assert!(
        String::from_utf8_lossy(&bytes)
            .contains("\"chain_address\":\"0x2c7536E3605D9C16a7a3D7b1898e529396a65c23\""),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    let checked = Receipt::verify(&bytes, &sig.to_file(), key.node_id()).unwrap();
    let digest: [u8; 32] = sha2::Sha256::digest(&bytes).into();
    assert_eq!(checked.digest(), digest);

    let chain_signature = r.sign_chain(&chain_key());
    assert_eq!(chain_signature.len(), 132);
    assert!(chain_signature.starts_with("0x"));
    let address = checked.chain_address().unwrap();
    assert_eq!(
        verify_chain_signature(&bytes, &chain_signature, &address).unwrap(),
        chain_key().address()
    );
    // The signature is the registry's: EIP-712 Receipt(bytes32) in the
    // receipt domain, over the SHA-256 of the canonical bytes.
    let typed = lockstep_chain::eip712::receipt_typed_digest(&digest);
    let parsed =
        lockstep_chain::Signature65::from_slice(&hex::decode(&chain_signature[2..]).unwrap())
            .unwrap();
    assert_eq!(
        lockstep_chain::recover(&typed, &parsed).unwrap(),
        chain_key().address()
    );

    // Another receipt's bytes, a flipped signature byte, another address,
    // malformed text: all refused with typed errors.
    let edited = String::from_utf8(bytes.clone())
        .unwrap()
        .replace("\"certified\":false", "\"certified\":true");
    assert!(matches!(
        verify_chain_signature(edited.as_bytes(), &chain_signature, &address),
        Err(ReceiptError::ChainSignature(_))
    ));
    let mut flipped = chain_signature.clone().into_bytes();
    flipped[10] = if flipped[10] == b'0' { b'1' } else { b'0' };
    let flipped = String::from_utf8(flipped).unwrap();
    assert!(matches!(
        verify_chain_signature(&bytes, &flipped, &address),
        Err(ReceiptError::ChainSignature(_))
    ));
    assert!(matches!(
        verify_chain_signature(&bytes, &chain_signature, &lockstep_chain::Address([1; 20])),
        Err(ReceiptError::ChainSignature(_))
    ));
    for bad in [
        "",
        "0x",
        "zz",
        &chain_signature[2..],
        &chain_signature[..131],
    ] {
        assert!(
            verify_chain_signature(&bytes, bad, &address).is_err(),
            "{bad}"
        );
    }

    // Format 2 (no chain address) still verifies, and has no chain address.
    let mut v2 = r.clone();
    v2.format = lockstep_protocol::RECEIPT_FORMAT_V2;
    v2.device.uuid = None;
    v2.device.index = None;
    v2.chain_address = None;
    v2.references = None;
    let (b2, s2) = v2.sign(&key);
    let v2 = Receipt::verify(&b2, &s2.to_file(), key.node_id()).unwrap();
    assert!(matches!(
        v2.chain_address(),
        Err(ReceiptError::NoChainAddress { format: 2 })
    ));
    // A chain address not in its EIP-55 form is refused (one encoding).
    let mut lower = r.clone();
    lower.chain_address = Some("0x2c7536e3605d9c16a7a3d7b1898e529396a65c23".into());
    let (bl, sl) = lower.sign(&key);
    assert!(matches!(
        Receipt::verify(&bl, &sl.to_file(), key.node_id()),
        Err(ReceiptError::Malformed(_))
    ));
    let mut garbage = r.clone();
    garbage.chain_address = Some("0xnothex".into());
    let (bg, sg) = garbage.sign(&key);
    assert!(Receipt::verify(&bg, &sg.to_file(), key.node_id()).is_err());
}

#[test]
fn receipts_are_canonical_signed_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = DeviceKey::load_or_create(&dir.path().join("a")).unwrap();
    let (other, _) = DeviceKey::load_or_create(&dir.path().join("b")).unwrap();
    let r = receipt(&key.node_id().to_base64());
    let (bytes, sig) = r.sign(&key);
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(
        !text.contains(": ") && !text.contains(", "),
        "no insignificant whitespace: {text}"
    );
    assert!(text.starts_with("{\"bundle_id\":"), "keys sorted: {text}");
    assert_eq!(
        Receipt::verify(&bytes, &sig.to_file(), key.node_id()).unwrap(),
        r
    );
    // Another node's key, an edited receipt, a re-encoded one: all refused.
    assert!(Receipt::verify(&bytes, &sig.to_file(), other.node_id()).is_err());
    let edited = text.replace("\"certified\":false", "\"certified\":true");
    assert!(Receipt::verify(edited.as_bytes(), &sig.to_file(), key.node_id()).is_err());
    let pretty = serde_json::to_vec_pretty(&r).unwrap();
    let pretty_sig = key.sign_minisign(&pretty, "x");
    assert_eq!(
        Receipt::verify(&pretty, &pretty_sig.to_file(), key.node_id()),
        Err(ReceiptError::NotCanonical)
    );
    assert!(text.contains("\"key_protection\":\"tpm-sealed\""), "{text}");
    // Format 1 (before key_protection) still verifies, as it was signed;
    // each format must have exactly its own fields.
    let mut v1 = r.clone();
    v1.format = lockstep_protocol::RECEIPT_FORMAT_V1;
    v1.device.uuid = None;
    v1.device.index = None;
    v1.key_protection = None;
    v1.chain_address = None;
    v1.references = None;
    let (b1, s1) = v1.sign(&key);
    assert!(!String::from_utf8_lossy(&b1).contains("key_protection"));
    assert_eq!(
        Receipt::verify(&b1, &s1.to_file(), key.node_id()).unwrap(),
        v1
    );
    // Format 4 (before the device's uuid and index) still verifies; format
    // 5 must name the device, by a well-formed UUID.
    let mut v4 = r.clone();
    v4.format = lockstep_protocol::RECEIPT_FORMAT_V4;
    v4.device.uuid = None;
    v4.device.index = None;
    let (b4, s4) = v4.sign(&key);
    assert_eq!(
        Receipt::verify(&b4, &s4.to_file(), key.node_id()).unwrap(),
        v4
    );
    for (uuid, index) in [
        (None, Some(0)),
        (Some("00".repeat(16)), None),
        (Some("AB".repeat(16)), Some(0)),
        (Some("0".repeat(31)), Some(0)),
    ] {
        let mut bad = r.clone();
        bad.device.uuid = uuid.clone();
        bad.device.index = index;
        let (b, sig) = bad.sign(&key);
        assert!(
            matches!(
                Receipt::verify(&b, &sig.to_file(), key.node_id()),
                Err(ReceiptError::Malformed(_))
            ),
            "{uuid:?} {index:?}"
        );
    }
    // Format 3 (before references) still verifies too.
    let mut v3 = r.clone();
    v3.format = RECEIPT_FORMAT_V3;
    v3.device.uuid = None;
    v3.device.index = None;
    v3.references = None;
    let (b3, s3) = v3.sign(&key);
    assert_eq!(
        Receipt::verify(&b3, &s3.to_file(), key.node_id()).unwrap(),
        v3
    );
    // A reference must be for one of the receipt's inputs.
    let mut stray = r.clone();
    stray.references = Some(BTreeMap::from([(
        "not-an-input".to_string(),
        ReferenceRecord {
            producer: r.node.clone(),
            job_id: "00".repeat(16),
            output: "y".into(),
            source_receipt_sha256: "ab".repeat(32),
        },
    )]));
    let (bs, ss) = stray.sign(&key);
    assert!(matches!(
        Receipt::verify(&bs, &ss.to_file(), key.node_id()),
        Err(ReceiptError::Malformed(_))
    ));
    let chain = r.chain_address.clone();
    for (format, protection, chain_address) in [
        (RECEIPT_FORMAT, None, chain.clone()),
        (RECEIPT_FORMAT, r.key_protection, None),
        (
            lockstep_protocol::RECEIPT_FORMAT_V2,
            r.key_protection,
            chain.clone(),
        ),
        (lockstep_protocol::RECEIPT_FORMAT_V2, None, None),
        (lockstep_protocol::RECEIPT_FORMAT_V1, r.key_protection, None),
        (lockstep_protocol::RECEIPT_FORMAT_V1, None, chain.clone()),
        (RECEIPT_FORMAT_V3, None, chain.clone()),
        (99, r.key_protection, chain.clone()),
    ] {
        let mut odd = r.clone();
        odd.format = format;
        odd.key_protection = protection;
        odd.chain_address = chain_address;
        odd.references = (format >= RECEIPT_FORMAT).then(BTreeMap::new);
        let (b, s) = odd.sign(&key);
        assert!(matches!(
            Receipt::verify(&b, &s.to_file(), key.node_id()),
            Err(ReceiptError::Malformed(_))
        ));
    }
    // A receipt signed by one node but naming another is refused.
    let (b2, s2) = receipt(&other.node_id().to_base64()).sign(&key);
    assert!(matches!(
        Receipt::verify(&b2, &s2.to_file(), key.node_id()),
        Err(ReceiptError::OtherNode { .. })
    ));

    // The stock tool verifies the receipt file as the node wrote it.
    let file = dir.path().join("receipt.json");
    std::fs::write(&file, &bytes).unwrap();
    std::fs::write(dir.path().join("receipt.json.minisig"), sig.to_file()).unwrap();
    let out = Command::new("minisign")
        .arg("-Vm")
        .arg(&file)
        .args(["-P", &key.node_id().to_base64()])
        .output()
        .expect("the minisign tool (Debian package minisign; make test installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn garbage_never_panics_the_decoders(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut d = FrameDecoder::new();
        if let Ok(frames) = d.push(&bytes) {
            for f in frames {
                if let Frame::Control(p) = f {
                    let _ = Message::decode(&p);
                }
            }
        }
        let _ = Message::decode(&bytes);
    }

    #[test]
    fn mutated_messages_never_panic(pos in 0usize..200, bit in 0u8..8) {
        let m = Message::Submit(JobRequest {
            job_id: [5; 16],
            program: vec![1; 50],
            inputs: vec![TensorHeader { name: "x".into(), shape: vec![3, 4], sha256: [1; 32] }],
            references: vec![],
            submitter: None,
            device: None,
        });
        let Frame::Control(mut p) = m.to_frame() else { unreachable!() };
        let i = pos % p.len();
        p[i] ^= 1 << bit;
        let _ = Message::decode(&p);
    }
}
