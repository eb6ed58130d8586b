//! Tensor references between real nodes on loopback (docs/protocol.md,
//! "References"): a job input given as another node's output is checked,
//! fetched from the producer pinned by its key, checked against its hash
//! and recorded in the consuming receipt; a forged receipt, a wrong hash, a
//! missing or expired permission, an evicted output, a producer that is gone
//! and one that stalls mid-transfer are each refused with their reason, in
//! bounded time, and the node serves the next honest job. The producer
//! checks the permission and the consumer's key itself: a stranger, or a
//! proof replayed from another connection, gets nothing.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use lockstep_backend::CpuBackend;
use lockstep_identity::{DeviceKey, NodeId, SigningKey};
use lockstep_program::{execute, validate, ExecOptions, Program, ValidateOptions};
use lockstep_protocol::{
    header, proof_message, tensor_chunks, ErrorKind, EvidenceAccess, Frame, JobRequest, Message,
    OutputRequest, Permission, Receipt, ReferenceRefusal, TensorReceiver, TensorReference,
    FETCH_EXPORTER_LABEL,
};
use lockstep_tensor::{Fill, Tensor};
use rand_core::RngCore;

mod common;
use common::client::{ask, one_op};
use common::Node;

const SHAPE: [usize; 2] = [16, 8];

fn fresh_job_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut id);
    id
}

/// A device key of a node the test plays (a fake producer, a consumer).
fn device_key(dir: &Path, name: &str) -> DeviceKey {
    let state = dir.join(name);
    std::fs::create_dir_all(&state).unwrap();
    DeviceKey::load_or_create(&state).unwrap().0
}

fn start(dir: &Path, name: &str, extra: &[&str]) -> Node {
    let state = dir.join(name);
    std::fs::create_dir_all(&state).unwrap();
    common::start(&state, "cpu", extra)
}

/// What a producer's job left: its receipt (bytes, signature, parsed) and
/// its output `y`.
struct Produced {
    bytes: Vec<u8>,
    signature: String,
    receipt: Receipt,
    y: Tensor,
}

/// Runs `gelu` on a seeded `x` on `node`, submitted with `submitter`'s key.
fn produce(node: &Node, submitter: Option<&SigningKey>) -> Produced {
    let x = Tensor::filled(SHAPE.to_vec(), 11, Fill::Uniform).unwrap();
    let program = one_op("gelu", &SHAPE);
    let request = Message::Submit(JobRequest {
        job_id: fresh_job_id(),
        program: program.to_postcard(),
        inputs: vec![header("x", &x)],
        references: vec![],
        submitter: submitter.map(|k| k.public().to_base64()),
        device: None,
    });
    let data: Vec<Frame> = tensor_chunks(&x).collect();
    smol::block_on(async {
        let conn = lockstep_transport::connect(node.socket(), &node.node_id())
            .await
            .unwrap();
        let (reply, mut reader) = ask(&conn, &request, &data).await.unwrap();
        let Message::Done(done) = reply else {
            panic!("the producer's job failed: {reply:?}")
        };
        let mut receiver = TensorReceiver::new(done.outputs.clone()).unwrap();
        let mut outputs: BTreeMap<String, Tensor> = receiver.take_ready().into_iter().collect();
        while !receiver.is_done() {
            match reader.next().await.unwrap() {
                Some(Frame::Data(chunk)) => outputs.extend(receiver.push(&chunk).unwrap()),
                other => panic!("unexpected frame {other:?}"),
            }
        }
        let receipt = Receipt::verify(&done.receipt, &done.signature, &node.node_id()).unwrap();
        Produced {
            bytes: done.receipt,
            signature: done.signature,
            receipt,
            y: outputs.remove("y").unwrap(),
        }
    })
}

/// A reference to `produced`'s output `y` as input `x`, permitted by
/// `submitter` to `consumers` for `ttl`.
fn reference(
    producer: &Node,
    produced: &Produced,
    submitter: &SigningKey,
    consumers: &[NodeId],
    ttl: Duration,
) -> TensorReference {
    let permission = Permission::grant(
        submitter,
        &produced.receipt,
        "y",
        consumers,
        SystemTime::now() + ttl,
    )
    .unwrap();
    TensorReference {
        input: "x".into(),
        producer: producer.key.clone(),
        address: producer.addr.clone(),
        job_id: hex::decode(&produced.receipt.job_id)
            .unwrap()
            .try_into()
            .unwrap(),
        output: "y".into(),
        sha256: produced.y.sha256(),
        receipt: produced.bytes.clone(),
        signature: produced.signature.clone(),
        permission,
    }
}

/// Submits `gelu` on `consumer` with input `x` given by `r`; the first
/// reply and the outputs that follow a `Done`.
fn consume(consumer: &Node, r: TensorReference) -> (Message, BTreeMap<String, Tensor>) {
    let program = one_op("gelu", &SHAPE);
    let request = Message::Submit(JobRequest {
        job_id: fresh_job_id(),
        program: program.to_postcard(),
        inputs: vec![],
        references: vec![r],
        submitter: None,
        device: None,
    });
    smol::block_on(async {
        let conn = lockstep_transport::connect(consumer.socket(), &consumer.node_id())
            .await
            .unwrap();
        let (reply, mut reader) = ask(&conn, &request, &[]).await.unwrap();
        let mut outputs = BTreeMap::new();
        if let Message::Done(done) = &reply {
            let mut receiver = TensorReceiver::new(done.outputs.clone()).unwrap();
            outputs.extend(receiver.take_ready());
            while !receiver.is_done() {
                match reader.next().await.unwrap() {
                    Some(Frame::Data(chunk)) => outputs.extend(receiver.push(&chunk).unwrap()),
                    other => panic!("unexpected frame {other:?}"),
                }
            }
        }
        (reply, outputs)
    })
}

/// The refusal a consumer answered with, and its message.
fn refusal(reply: &Message) -> (ReferenceRefusal, String) {
    match reply {
        Message::Rejected(e) => match e.kind {
            ErrorKind::Reference(r) => (r, e.message.clone()),
            other => panic!(
                "refused as {other:?}, not a reference refusal: {}",
                e.message
            ),
        },
        other => panic!("expected a reference refusal, got {other:?}"),
    }
}

fn gelu_on_cpu(x: &Tensor) -> Tensor {
    let program = validate(&one_op("gelu", &SHAPE), &ValidateOptions::default()).unwrap();
    let inputs = BTreeMap::from([("x".to_string(), x.clone())]);
    let mut report = execute(
        &program,
        &mut CpuBackend::new(),
        inputs,
        ExecOptions::default(),
    )
    .unwrap();
    report.outputs.remove("y").unwrap()
}

/// A producer (started with `producer_flags`) and a consumer, and a job
/// the producer ran for a submitter with a key.
fn two_nodes(dir: &Path, producer_flags: &[&str]) -> (Node, Node, SigningKey, Produced) {
    let producer = start(dir, "producer", producer_flags);
    let consumer = start(dir, "consumer", &[]);
    let submitter = SigningKey::generate();
    let produced = produce(&producer, Some(&submitter));
    (producer, consumer, submitter, produced)
}

#[test]
fn a_reference_is_fetched_checked_and_recorded_in_the_receipt() {
    let dir = tempfile::tempdir().unwrap();
    let (producer, consumer, submitter, produced) = two_nodes(dir.path(), &[]);
    assert_eq!(
        produced.receipt.submitter.as_deref(),
        Some(submitter.public().to_base64().as_str())
    );

    let r = reference(
        &producer,
        &produced,
        &submitter,
        &[consumer.node_id()],
        Duration::from_secs(600),
    );
    let (reply, outputs) = consume(&consumer, r);
    let Message::Done(done) = &reply else {
        panic!("the consumer's job failed: {reply:?}")
    };
    let receipt = Receipt::verify(&done.receipt, &done.signature, &consumer.node_id()).unwrap();
    // The consumed input is the producer's output, bit for bit, and the
    // consumer's output is what the CPU reference computes from it.
    assert_eq!(receipt.inputs["x"], produced.y.sha256_hex());
    assert_eq!(outputs["y"].sha256(), gelu_on_cpu(&produced.y).sha256());
    assert_eq!(receipt.outputs["y"], outputs["y"].sha256_hex());
    // The lineage link: the source receipt's digest, producer, job, output.
    let record = &receipt.references.as_ref().unwrap()["x"];
    assert_eq!(
        record.source_receipt_sha256,
        hex::encode(produced.receipt.digest())
    );
    assert_eq!(record.producer, producer.key);
    assert_eq!(record.job_id, produced.receipt.job_id);
    assert_eq!(record.output, "y");
}

#[test]
fn each_bad_reference_is_refused_with_its_reason_and_the_node_serves_on() {
    let dir = tempfile::tempdir().unwrap();
    let (producer, consumer, submitter, produced) = two_nodes(dir.path(), &[]);
    let me = [consumer.node_id()];
    let good = || {
        reference(
            &producer,
            &produced,
            &submitter,
            &me,
            Duration::from_secs(600),
        )
    };

    let mut forged = good();
    let at = forged.receipt.len() / 2;
    forged.receipt[at] ^= 1;
    assert_eq!(
        refusal(&consume(&consumer, forged).0).0,
        ReferenceRefusal::ForgedReceipt
    );

    // A receipt signed by another key than the producer it names.
    let mut impostor = good();
    impostor.producer = consumer.key.clone();
    assert_eq!(
        refusal(&consume(&consumer, impostor).0).0,
        ReferenceRefusal::ForgedReceipt
    );

    let mut wrong_hash = good();
    wrong_hash.sha256[0] ^= 1;
    let (why, message) = refusal(&consume(&consumer, wrong_hash).0);
    assert_eq!(why, ReferenceRefusal::NotInReceipt);
    assert!(message.contains("'x'"), "{message}");

    // A permission for somebody else.
    let stranger = SigningKey::generate();
    let elsewhere = reference(
        &producer,
        &produced,
        &submitter,
        &[stranger.public().clone()],
        Duration::from_secs(600),
    );
    assert_eq!(
        refusal(&consume(&consumer, elsewhere).0).0,
        ReferenceRefusal::NoPermission
    );

    // A permission signed by somebody who is not the job's submitter.
    let mut not_the_submitter = good();
    let mut claimed = produced.receipt.clone();
    claimed.submitter = Some(stranger.public().to_base64());
    not_the_submitter.permission = Permission::grant(
        &stranger,
        &claimed,
        "y",
        &me,
        SystemTime::now() + Duration::from_secs(600),
    )
    .unwrap();
    assert_eq!(
        refusal(&consume(&consumer, not_the_submitter).0).0,
        ReferenceRefusal::NoPermission
    );

    // A job submitted without a submitter key: nobody can permit a fetch.
    let anonymous = produce(&producer, None);
    let mut unpermitted = good();
    unpermitted.job_id = hex::decode(&anonymous.receipt.job_id)
        .unwrap()
        .try_into()
        .unwrap();
    unpermitted.receipt = anonymous.bytes.clone();
    unpermitted.signature = anonymous.signature.clone();
    assert_eq!(
        refusal(&consume(&consumer, unpermitted).0).0,
        ReferenceRefusal::NoPermission
    );

    let expiring = reference(
        &producer,
        &produced,
        &submitter,
        &me,
        Duration::from_secs(1),
    );
    std::thread::sleep(Duration::from_millis(2100));
    let (why, message) = refusal(&consume(&consumer, expiring).0);
    assert_eq!(why, ReferenceRefusal::PermissionExpired);
    assert!(message.contains("expired"), "{message}");

    // After all that, an honest reference still runs.
    let (reply, _) = consume(&consumer, good());
    assert!(matches!(reply, Message::Done(_)), "{reply:?}");
}

#[test]
fn an_evicted_output_is_refused_naming_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let (producer, consumer, submitter, produced) =
        two_nodes(dir.path(), &["--retention-window-s", "1"]);
    let r = reference(
        &producer,
        &produced,
        &submitter,
        &[consumer.node_id()],
        Duration::from_secs(600),
    );
    std::thread::sleep(Duration::from_millis(2500));
    let (why, message) = refusal(&consume(&consumer, r).0);
    assert_eq!(why, ReferenceRefusal::NotRetained, "{message}");
    assert!(message.contains("'x'"), "{message}");
}

#[test]
fn a_producer_that_is_gone_fails_the_job_in_bounded_time() {
    let dir = tempfile::tempdir().unwrap();
    let (mut producer, consumer, submitter, produced) = two_nodes(dir.path(), &[]);
    let r = reference(
        &producer,
        &produced,
        &submitter,
        &[consumer.node_id()],
        Duration::from_secs(600),
    );
    producer.child.kill().unwrap();
    producer.child.wait().unwrap();
    let started = Instant::now();
    let (why, message) = refusal(&consume(&consumer, r).0);
    let took = started.elapsed();
    assert_eq!(why, ReferenceRefusal::Unreachable, "{message}");
    let bound = Duration::from_millis(
        u64::from(lockstep_limits::PEER_FETCH_ATTEMPTS)
            * (lockstep_limits::PEER_CONNECT_TIMEOUT_MS
                + 4 * lockstep_limits::PEER_FETCH_RETRY_BACKOFF_MS)
            + 5_000,
    );
    assert!(took < bound, "took {took:?}, bound {bound:?}");
}

/// A producer that answers a fetch with the output's header and a little
/// of its data, then stalls with the stream open.
fn stalling_producer(
    dir: &Path,
    submitter: &SigningKey,
) -> (TensorReference, std::thread::JoinHandle<()>) {
    let key = device_key(dir, "stalling");
    let id = key.node_id().clone();
    let shape = SHAPE.to_vec();
    let y = Tensor::filled(shape.clone(), 5, Fill::Uniform).unwrap();
    let job_id = fresh_job_id();
    let receipt = Receipt {
        format: lockstep_protocol::RECEIPT_FORMAT,
        node: id.to_base64(),
        job_id: hex::encode(job_id),
        bundle_id: "00".repeat(32),
        device: lockstep_protocol::DeviceRecord {
            backend: "cpu".into(),
            name: "stalling".into(),
            vendor_id: 0,
            device_id: 0,
            driver_id: 0,
            driver_version: 0,
            api_version: 0,
            uuid: Some("00".repeat(16)),
            index: Some(0),
        },
        program_sha256: "00".repeat(32),
        inputs: BTreeMap::new(),
        outputs: BTreeMap::from([("y".to_string(), y.sha256_hex())]),
        trace_root: "00".repeat(32),
        started_at: lockstep_protocol::rfc3339(SystemTime::now()),
        finished_at: lockstep_protocol::rfc3339(SystemTime::now()),
        certified: false,
        key_protection: Some(lockstep_protocol::KeyProtection::File),
        chain_address: Some("0x0000000000000000000000000000000000000001".into()),
        submitter: Some(submitter.public().to_base64()),
        references: Some(BTreeMap::new()),
    };
    let (bytes, signature) = receipt.sign(&key);
    let sha256 = y.sha256();
    let endpoint =
        lockstep_transport::server_endpoint(&key, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = endpoint.local_addr().unwrap().to_string();
    // Every connection gets the header and half a chunk, then silence.
    let serving = std::thread::spawn(move || {
        smol::block_on(async move {
            while let Some(incoming) = endpoint.accept().await {
                let y = y.clone();
                smol::spawn(async move {
                    let Ok(conn) = incoming.await else { return };
                    let Ok((mut send, recv)) = conn.accept_bi().await else {
                        return;
                    };
                    let mut reader = lockstep_transport::frames::FrameReader::new(recv);
                    let _ = reader.next().await;
                    let reply = Message::Output(header("y", &y));
                    let _ =
                        lockstep_transport::frames::write_frame(&mut send, &reply.to_frame()).await;
                    let first: Vec<u8> = match tensor_chunks(&y).next() {
                        Some(Frame::Data(d)) => d[..d.len() / 2].to_vec(),
                        _ => unreachable!(),
                    };
                    let _ = lockstep_transport::frames::write_frame(&mut send, &Frame::Data(first))
                        .await;
                    // Stall, holding the connection open.
                    smol::Timer::after(Duration::from_secs(60)).await;
                    drop(conn);
                })
                .detach();
            }
        })
    });
    // The permission is the caller's to grant, for its consumer.
    let r = TensorReference {
        input: "x".into(),
        producer: id.to_base64(),
        address: addr,
        job_id,
        output: "y".into(),
        sha256,
        receipt: bytes,
        signature: signature.to_file(),
        permission: Permission {
            statement: vec![],
            signature: String::new(),
        },
    };
    (r, serving)
}

#[test]
fn a_producer_that_stalls_mid_transfer_gets_a_bounded_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let consumer = start(dir.path(), "consumer", &[]);
    let submitter = SigningKey::generate();
    let (mut r, _serving) = stalling_producer(dir.path(), &submitter);
    let receipt = Receipt::verify(
        &r.receipt,
        &r.signature,
        &NodeId::parse(&r.producer).unwrap(),
    )
    .unwrap();
    r.permission = Permission::grant(
        &submitter,
        &receipt,
        "y",
        &[consumer.node_id()],
        SystemTime::now() + Duration::from_secs(600),
    )
    .unwrap();
    // Two jobs of one source stall on the producer at once; a third from
    // the same source is refused at once (its source's fetch slots are
    // taken), not queued behind them.
    std::thread::scope(|scope| {
        let stalled: Vec<_> = (0..2)
            .map(|_| {
                let (consumer, r) = (&consumer, r.clone());
                scope.spawn(move || {
                    let started = Instant::now();
                    (consume(consumer, r).0, started.elapsed())
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(1500));
        let started = Instant::now();
        let (why, message) = refusal(&consume(&consumer, r.clone()).0);
        assert_eq!(why, ReferenceRefusal::Busy, "{message}");
        assert!(started.elapsed() < Duration::from_secs(2), "{message}");
        let bound = Duration::from_millis(lockstep_limits::PEER_FETCH_STALL_TIMEOUT_MS + 10_000);
        for handle in stalled {
            let (reply, took) = handle.join().unwrap();
            let (why, message) = refusal(&reply);
            assert_eq!(why, ReferenceRefusal::Stalled, "{message}");
            assert!(took < bound, "took {took:?}, bound {bound:?}");
        }
    });
}

/// The producer's own checks, with the test playing a consuming node: a
/// permission for another node, a claim to be that node without its key,
/// and a proof replayed on another connection are refused; the named
/// node with a proof for this connection gets the tensor.
#[test]
fn the_producer_serves_only_the_permitted_node_on_its_own_connection() {
    let dir = tempfile::tempdir().unwrap();
    let producer = start(dir.path(), "producer", &[]);
    let submitter = SigningKey::generate();
    let produced = produce(&producer, Some(&submitter));
    let me = DeviceKey::load_or_create(&dir.path().join("me")).unwrap().0;
    let other = DeviceKey::load_or_create(&dir.path().join("other"))
        .unwrap()
        .0;
    let r = reference(
        &producer,
        &produced,
        &submitter,
        &[me.node_id().clone()],
        Duration::from_secs(600),
    );
    smol::block_on(async {
        let producer_id = producer.node_id();
        let connect = || lockstep_transport::connect(producer.socket(), &producer_id);
        let exporter = |conn: &quinn::Connection| {
            let mut e = [0u8; 32];
            conn.export_keying_material(&mut e, FETCH_EXPORTER_LABEL, b"")
                .unwrap();
            e
        };
        let request = |signer: &DeviceKey, claimed: &NodeId, e: &[u8; 32]| {
            Message::FetchOutput(OutputRequest {
                job_id: r.job_id,
                output: "y".into(),
                permission: r.permission.clone(),
                consumer: claimed.to_base64(),
                proof: signer
                    .sign_minisign(&proof_message(e, &r.producer, &r.job_id, "y"), "fetch")
                    .to_file(),
            })
        };
        let refused = |m: &Message| match m {
            Message::Rejected(e) => e.kind,
            other => panic!("expected a refusal, got {other:?}"),
        };
        let conn = connect().await.unwrap();
        let e = exporter(&conn);
        let no = ErrorKind::Reference(ReferenceRefusal::NoPermission);
        // Another node, with its own key: not named.
        let (m, _) = ask(&conn, &request(&other, other.node_id(), &e), &[])
            .await
            .unwrap();
        assert_eq!(refused(&m), no);
        // Another node claiming to be the named one.
        let (m, _) = ask(&conn, &request(&other, me.node_id(), &e), &[])
            .await
            .unwrap();
        assert_eq!(refused(&m), no);
        // The named node's proof, made for another connection.
        let conn2 = connect().await.unwrap();
        let replayed = request(&me, me.node_id(), &exporter(&conn2));
        let (m, _) = ask(&conn, &replayed, &[]).await.unwrap();
        assert_eq!(refused(&m), no);
        // The named node, on its own connection: the output, as hashed.
        let (m, mut reader) = ask(&conn, &request(&me, me.node_id(), &e), &[])
            .await
            .unwrap();
        let Message::Output(h) = m else {
            panic!("expected the output, got {m:?}")
        };
        assert_eq!(h.sha256, produced.y.sha256());
        let mut receiver = TensorReceiver::new(vec![h]).unwrap();
        let mut got: BTreeMap<String, Tensor> = receiver.take_ready().into_iter().collect();
        while !receiver.is_done() {
            match reader.next().await.unwrap() {
                Some(Frame::Data(chunk)) => got.extend(receiver.push(&chunk).unwrap()),
                other => panic!("unexpected frame {other:?}"),
            }
        }
        assert_eq!(got["y"].sha256(), produced.y.sha256());
        // Evidence access rules are unchanged: a receipt is needed for the
        // program, and the right one gets it.
        let access = EvidenceAccess::Receipt {
            receipt: produced.bytes.clone(),
            signature: produced.signature.clone(),
        };
        let ask_program = Message::FetchProgram(lockstep_protocol::ProgramRequest {
            job_id: r.job_id,
            access,
        });
        let (m, _) = ask(&conn, &ask_program, &[]).await.unwrap();
        let Message::Program(bytes) = m else {
            panic!("expected the program, got {m:?}")
        };
        assert_eq!(
            hex::encode(Program::from_postcard(&bytes).unwrap().sha256()),
            produced.receipt.program_sha256
        );
    });
}
