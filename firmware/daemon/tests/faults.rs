//! Bad input and faults against a live node: garbage frames, clients that
//! vanish mid-upload, jobs past the time limit. After each, the node must
//! still answer.

use std::path::Path;

mod common;

use lockstep_identity::NodeId;
use lockstep_protocol::{header, Frame, JobRequest, Message, TensorHeader};
use lockstep_tensor::{Fill, SplitMix64, Tensor};
use lockstep_transport::frames::{write_frame, FrameReader};

/// A node and its address and id in parsed form.
struct Node {
    _process: common::Node,
    addr: std::net::SocketAddr,
    key: NodeId,
}

fn start(state: &Path, extra: &[&str]) -> Node {
    let process = common::start(state, "cpu", extra);
    Node {
        addr: process.addr.parse().unwrap(),
        key: NodeId::parse(&process.key).unwrap(),
        _process: process,
    }
}

/// Sends raw bytes on a fresh stream and returns the node's first reply.
async fn raw(node: &Node, bytes: &[u8]) -> Option<Message> {
    let conn = lockstep_transport::connect(node.addr, &node.key)
        .await
        .unwrap();
    let (mut send, recv) = conn.open_bi().await.unwrap();
    let _ = send.write_all(bytes).await;
    let _ = send.finish();
    let mut reader = FrameReader::new(recv);
    let reply = match reader.next().await {
        Ok(Some(Frame::Control(p))) => Message::decode(&p).ok(),
        _ => None,
    };
    conn.close(0u32.into(), b"");
    reply
}

async fn status_ok(node: &Node) -> bool {
    matches!(
        raw(node, &Message::StatusRequest.to_frame().encode()).await,
        Some(Message::Status(_))
    )
}

#[test]
fn garbage_frames_get_typed_refusals_and_the_node_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(&dir.path().join("state"), &[]);
    smol::block_on(async {
        let mut rng = SplitMix64::new(7);
        let valid = Message::StatusRequest.to_frame().encode();
        for case in 0..40 {
            let bytes: Vec<u8> = match case % 4 {
                // Random bytes.
                0 => (0..rng.below(300)).map(|_| rng.next_u64() as u8).collect(),
                // A valid frame with one bit flipped.
                1 => {
                    let mut b = valid.clone();
                    let i = rng.below(b.len() as u64) as usize;
                    b[i] ^= 1 << rng.below(8);
                    b
                }
                // An oversized length.
                2 => vec![0, 0xff, 0xff, 0xff, 0x7f],
                // Another protocol version.
                _ => {
                    let mut b = vec![0u8, 2, 0, 0, 0];
                    b.extend([9, 0]);
                    b
                }
            };
            if let Some(reply) = raw(&node, &bytes).await {
                assert!(
                    matches!(reply, Message::Rejected(_) | Message::Status(_)),
                    "case {case}: {reply:?}"
                );
            }
        }
        assert!(status_ok(&node).await, "the node stopped serving");
    });
}

#[test]
fn a_client_that_vanishes_mid_upload_costs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(&dir.path().join("state"), &[]);
    smol::block_on(async {
        let x = Tensor::filled(vec![1024, 1024], 1, Fill::Uniform).unwrap();
        let program = br#"{"version":1,"inputs":[{"name":"x","shape":[1024,1024]}],"outputs":["y"],
            "body":[{"op":"relu","inputs":["x"],"output":"y"}]}"#;
        let program = lockstep_program::Program::from_json(program).unwrap();
        for _ in 0..5 {
            let conn = lockstep_transport::connect(node.addr, &node.key)
                .await
                .unwrap();
            let (mut send, _recv) = conn.open_bi().await.unwrap();
            let request = Message::Submit(JobRequest {
                job_id: [1; 16],
                program: program.to_postcard(),
                inputs: vec![header("x", &x)],
                references: vec![],
                submitter: None,
                device: None,
            });
            write_frame(&mut send, &request.to_frame()).await.unwrap();
            // A quarter of the data, then gone.
            let first = Frame::Data(vec![0u8; 1 << 20]);
            write_frame(&mut send, &first).await.unwrap();
            conn.close(0u32.into(), b"vanished");
        }
        assert!(status_ok(&node).await);
        // A header announcing more than the tensor bound is refused before
        // any data is accepted.
        let huge = Message::Submit(JobRequest {
            job_id: [2; 16],
            program: program.to_postcard(),
            inputs: vec![TensorHeader {
                name: "x".into(),
                shape: vec![1 << 20, 1 << 20],
                sha256: [0; 32],
            }],
            references: vec![],
            submitter: None,
            device: None,
        });
        let reply = raw(&node, &huge.to_frame().encode()).await;
        assert!(matches!(reply, Some(Message::Rejected(_))), "{reply:?}");
        assert!(status_ok(&node).await);
    });
}

#[test]
fn a_job_past_the_time_limit_is_answered_with_a_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(&dir.path().join("state"), &["--job-timeout-s", "0"]);
    smol::block_on(async {
        let program = lockstep_program::Program::from_json(
            br#"{"version":1,"inputs":[],"outputs":["y"],
                "body":[{"op":"rand_normal","output":"y","attrs":{"shape":[512,512],"seed":1}}]}"#,
        )
        .unwrap();
        let request = Message::Submit(JobRequest {
            job_id: [3; 16],
            program: program.to_postcard(),
            inputs: vec![],
            references: vec![],
            submitter: None,
            device: None,
        });
        match raw(&node, &request.to_frame().encode()).await {
            Some(Message::Rejected(e)) => {
                assert_eq!(
                    e.kind,
                    lockstep_protocol::ErrorKind::Timeout,
                    "{}",
                    e.message
                )
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert!(status_ok(&node).await);
    });
}
