//! The node against hostile peers on loopback: floods of connections and
//! streams, half-sent frames, a reader that stops reading, thousands of
//! tiny jobs, a full state disk. Every attack is bounded in count and time;
//! after each, an honest client from another address is served. Peers play
//! from different loopback addresses (127.0.0.1 honest, 127.0.0.2 and up
//! hostile) because the node counts per source.
//!
//! The figures each test prints (peak memory of the node) are recorded in
//! docs/benchmarks.md; run with `--nocapture` to see them.

mod common;

use std::time::{Duration, Instant};

use common::client::{self, ask, connect_from, one_op, submit};
use lockstep_protocol::{ErrorKind, Frame, Message};
use lockstep_tensor::{Fill, Tensor};
use lockstep_transport::TransportError;

const HONEST: &str = "127.0.0.1";
const HOSTILE: &str = "127.0.0.2";

fn tiny() -> Tensor {
    Tensor::filled(vec![4], 1, Fill::Uniform).unwrap()
}

/// An honest client from 127.0.0.1 runs a tiny job and gets its receipt.
async fn honest_job(node: &common::Node, n: u64) -> Message {
    let conn = connect_from(node, HONEST).await.expect("honest connection");
    let reply = submit(
        &conn,
        client::job_id(0xa0, n),
        &one_op("relu", &[4]),
        &tiny(),
    )
    .await
    .expect("a reply");
    conn.close(0u32.into(), b"");
    reply
}

#[test]
fn connection_floods_are_capped_per_source_and_in_all() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::start(
        &dir.path().join("state"),
        "cpu",
        &[
            "--max-connections",
            "24",
            "--max-connections-per-source",
            "8",
        ],
    );
    smol::block_on(async {
        // One source asks for 30 connections: 8 are admitted, the rest
        // refused at the first packet.
        let mut held = Vec::new();
        let mut refused = 0;
        for _ in 0..30 {
            match connect_from(&node, HOSTILE).await {
                Ok(c) => held.push(c),
                Err(TransportError::Refused { .. }) => refused += 1,
                Err(e) => panic!("unexpected failure: {e}"),
            }
        }
        assert_eq!((held.len(), refused), (8, 22));
        // Another source is still served.
        assert!(matches!(honest_job(&node, 1).await, Message::Done(_)));
        // Many sources together reach the node-wide cap and no further.
        for i in 3..8 {
            for _ in 0..8 {
                match connect_from(&node, &format!("127.0.0.{i}")).await {
                    Ok(c) => held.push(c),
                    Err(TransportError::Refused { .. }) => {}
                    Err(e) => panic!("unexpected failure: {e}"),
                }
            }
        }
        assert_eq!(held.len(), 24, "the node-wide cap");
        let (rss, peak) = node.memory_kib();
        println!(
            "connection flood: 30 from one source, 40 from five more; 24 held; node RSS {} MiB, peak {} MiB",
            rss / 1024,
            peak / 1024
        );
        assert!(matches!(
            connect_from(&node, HONEST).await,
            Err(TransportError::Refused { .. })
        ));
        // Connections given back are slots free again.
        for c in held.drain(..) {
            c.close(0u32.into(), b"");
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match connect_from(&node, HONEST).await {
                Ok(c) => {
                    c.close(0u32.into(), b"");
                    break;
                }
                Err(_) if Instant::now() < deadline => {
                    smol::Timer::after(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("slots never came back: {e}"),
            }
        }
        assert!(matches!(honest_job(&node, 2).await, Message::Done(_)));
    });
}

#[test]
fn half_sent_frames_on_every_stream_stay_within_the_memory_budget() {
    let dir = tempfile::tempdir().unwrap();
    let budget_mib = 512u64;
    let budget = (budget_mib << 20).to_string();
    let node = common::start(
        &dir.path().join("state"),
        "cpu",
        &["--memory-budget-bytes", &budget],
    );
    let (rss_before_kib, _) = node.memory_kib();
    smol::block_on(async {
        // Every connection one source may hold, every stream QUIC lets it
        // open, each sending all but the last byte of the largest control
        // frame there is, and then nothing.
        let conns = lockstep_limits::MAX_CONNECTIONS_PER_SOURCE;
        let streams = lockstep_limits::MAX_CONCURRENT_STREAMS_PER_CONNECTION as usize;
        let len = lockstep_limits::MAX_FRAME_BYTES;
        let mut frame = vec![0u8];
        frame.extend_from_slice(&(len as u32).to_le_bytes());
        frame.resize(5 + len - 1, 7);
        let frame: std::sync::Arc<[u8]> = frame.into();
        let mut held = Vec::new();
        let mut tasks = Vec::new();
        for _ in 0..conns {
            let conn = connect_from(&node, HOSTILE).await.unwrap();
            for _ in 0..streams {
                let (mut send, recv) = conn.open_bi().await.unwrap();
                let frame = frame.clone();
                tasks.push(smol::spawn(async move {
                    let _ = send.write_all(&frame).await;
                    let mut reader = lockstep_transport::frames::FrameReader::new(recv);
                    let reply = match reader.next().await {
                        Ok(Some(Frame::Control(p))) => Message::decode(&p).ok(),
                        _ => None,
                    };
                    (reply, send)
                }));
            }
            held.push(conn);
        }
        // Let the node take in what it will, then see what it answered the
        // streams it refused.
        smol::Timer::after(Duration::from_secs(3)).await;
        // Meanwhile an honest client from elsewhere is served.
        assert!(matches!(honest_job(&node, 1).await, Message::Done(_)));
        let (rss_kib, peak_kib) = node.memory_kib();
        // The bound: what the budgets let one source make the node hold
        // (its connections' frame buffers, within the node budget) plus
        // QUIC's receive windows for those connections, over the node's
        // own memory before the attack.
        let frame_share = (budget_mib << 20)
            / lockstep_limits::FRAME_BUDGET_SHARE_DIV
            / lockstep_limits::FRAME_BUDGET_SOURCES_MIN;
        let source_frames =
            (conns as u64 * lockstep_limits::CONNECTION_FRAME_BUFFER_BYTES_MAX).min(frame_share);
        let windows = conns as u64 * lockstep_limits::CONNECTION_RECEIVE_WINDOW_BYTES as u64;
        let bound_kib = rss_before_kib + (source_frames + windows) / 1024;
        println!(
            "half-sent frames: {conns} connections x {streams} streams x {len} bytes announced; node RSS {} MiB, peak {} MiB (before {} MiB, bound {} MiB)",
            rss_kib / 1024,
            peak_kib / 1024,
            rss_before_kib / 1024,
            bound_kib / 1024
        );
        assert!(
            peak_kib < bound_kib,
            "peak {peak_kib} KiB over {bound_kib} KiB"
        );
        // Streams over the source's (or the connection's) frame budget were
        // refused Busy at once (the others hold their frame until the read
        // timeout).
        let mut busy = 0;
        for conn in &held {
            conn.close(0u32.into(), b"");
        }
        for t in tasks {
            if let (Some(Message::Busy { .. }), _) = t.await {
                busy += 1;
            }
        }
        assert!(busy > 0, "no stream was refused busy");
    });
}

#[test]
fn a_reader_that_stops_reading_frees_its_evidence_turn() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::start(&dir.path().join("state"), "cpu", &[]);
    // A 16 MiB leaf: more than the client's stream receive window, so a
    // reader that never reads stalls the node's writes.
    let shape = [2048, 2048];
    let x = Tensor::filled(shape.to_vec(), 3, Fill::Uniform).unwrap();
    let program = one_op("relu", &shape);
    smol::block_on(async {
        let hostile = connect_from(&node, HOSTILE).await.unwrap();
        let job = client::job_id(0xb0, 1);
        let done = submit(&hostile, job, &program, &x).await.unwrap();
        let access = client::access(&done);
        // Knowing a job id is not enough: no receipt, no evidence.
        let honest = connect_from(&node, HONEST).await.unwrap();
        let honest_job = client::job_id(0xa0, 1);
        let mine = submit(&honest, honest_job, &program, &x).await.unwrap();
        let (reply, _) = ask(
            &honest,
            &client::leaf_request(job, 0, true, client::access(&mine)),
            &[],
        )
        .await
        .unwrap();
        assert!(
            matches!(&reply, Message::Rejected(e) if e.kind == ErrorKind::Unauthorized),
            "{reply:?}"
        );
        // The hostile reader asks for its leaf twice (its source's share of
        // turns) and reads nothing after the header.
        let mut stalled = Vec::new();
        for _ in 0..lockstep_limits::MAX_CONCURRENT_EVIDENCE_PER_SOURCE {
            let (reply, reader) = ask(
                &hostile,
                &client::leaf_request(job, 0, true, access.clone()),
                &[],
            )
            .await
            .unwrap();
            assert!(matches!(reply, Message::Leaf(_)), "{reply:?}");
            stalled.push(reader);
        }
        let started = Instant::now();
        // A third is refused at once: that source holds its share.
        let (reply, _) = ask(
            &hostile,
            &client::leaf_request(job, 0, false, access.clone()),
            &[],
        )
        .await
        .unwrap();
        assert!(matches!(reply, Message::Busy { .. }), "{reply:?}");
        // An honest requester is served meanwhile, data and all.
        let (reply, mut reader) = ask(
            &honest,
            &client::leaf_request(honest_job, 0, true, client::access(&mine)),
            &[],
        )
        .await
        .unwrap();
        let Message::Leaf(leaf) = reply else {
            panic!("{reply:?}")
        };
        let mut receiver =
            lockstep_protocol::TensorReceiver::new(vec![leaf.tensor.unwrap()]).unwrap();
        while !receiver.is_done() {
            let Ok(Some(Frame::Data(chunk))) = reader.next().await else {
                panic!("the leaf's data stopped")
            };
            receiver.push(&chunk).unwrap();
        }
        // After the write stall limit the stalled turns are given back.
        let limit = Duration::from_millis(lockstep_limits::WRITE_STALL_TIMEOUT_MS);
        smol::Timer::at(started + limit + Duration::from_secs(2)).await;
        let (reply, _) = ask(
            &hostile,
            &client::leaf_request(job, 0, false, access.clone()),
            &[],
        )
        .await
        .unwrap();
        assert!(matches!(reply, Message::Leaf(_)), "{reply:?}");
        drop(stalled);
        let (rss, peak) = node.memory_kib();
        println!(
            "stalled evidence readers: turns back after {:.1} s; node RSS {} MiB, peak {} MiB (two 16 MiB jobs held)",
            started.elapsed().as_secs_f64(),
            rss / 1024,
            peak / 1024
        );
    });
}

#[test]
fn five_thousand_tiny_jobs_from_one_client_leave_another_clients_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::start(&dir.path().join("state"), "cpu", &[]);
    let program = one_op("relu", &[4]);
    smol::block_on(async {
        let honest = connect_from(&node, HONEST).await.unwrap();
        let mine = client::job_id(0xa0, 0);
        let done = submit(&honest, mine, &program, &tiny()).await.unwrap();
        let access = client::access(&done);
        honest.close(0u32.into(), b"");

        let hostile = connect_from(&node, HOSTILE).await.unwrap();
        let jobs = 5000u64;
        let parallel = 8u64;
        let started = Instant::now();
        let workers: Vec<_> = (0..parallel)
            .map(|w| {
                let conn = hostile.clone();
                let program = program.clone();
                smol::spawn(async move {
                    let mut done = 0;
                    let mut n = w;
                    while n < jobs {
                        match submit(&conn, client::job_id(0xb0, n), &program, &tiny()).await {
                            Some(Message::Done(_)) => {
                                done += 1;
                                n += parallel;
                            }
                            // Busy: the node's job slots are full; retry.
                            Some(Message::Busy { .. }) => {
                                smol::Timer::after(Duration::from_millis(5)).await;
                            }
                            other => panic!("job {n}: {other:?}"),
                        }
                    }
                    done
                })
            })
            .collect();
        let mut done = 0;
        for w in workers {
            done += w.await;
        }
        assert_eq!(done, jobs);
        let (rss, peak) = node.memory_kib();
        println!(
            "{jobs} tiny jobs from one source in {:.1} s; node RSS {} MiB, peak {} MiB",
            started.elapsed().as_secs_f64(),
            rss / 1024,
            peak / 1024
        );
        // The honest client's evidence is still there.
        let honest = connect_from(&node, HONEST).await.unwrap();
        let (reply, _) = ask(&honest, &client::leaf_request(mine, 0, false, access), &[])
            .await
            .unwrap();
        assert!(matches!(reply, Message::Leaf(_)), "{reply:?}");
    });
    // And the flood kept only its own quota on disk.
    let retained = std::fs::read_dir(dir.path().join("state").join("retained"))
        .unwrap()
        .count();
    assert!(
        retained <= lockstep_limits::RETAINED_JOBS_PER_SOURCE_MAX + 1,
        "{retained} jobs retained"
    );
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// Needs root (CI runs as root). `None` where mounting is not allowed.
    fn mount(at: &std::path::Path, size_mib: u64) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let ok = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size_mib}m,mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_full_state_disk_keeps_the_node_serving_and_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let Some(_fs) = Tmpfs::mount(&state, 48) else {
        // Only where tmpfs cannot be mounted (not root); CI runs as root.
        eprintln!("SKIPPED: mounting a tmpfs needs root");
        return;
    };
    let floor = (4u64 << 20).to_string();
    let shape = [1024, 1024];
    let program = one_op("relu", &shape);
    let x = Tensor::filled(shape.to_vec(), 5, Fill::Uniform).unwrap();
    let mut node = common::start(&state, "cpu", &["--state-free-floor-bytes", &floor]);
    let key_file = state.join(lockstep_identity::KEY_FILE);
    let key_bytes = std::fs::read(&key_file).unwrap();
    let first = client::job_id(0xa0, 1);
    let access = smol::block_on(async {
        let conn = connect_from(&node, HONEST).await.unwrap();
        let done = submit(&conn, first, &program, &x).await.unwrap();
        client::access(&done)
    });
    assert!(state.join("retained").join(hex::encode(first)).is_dir());
    // Something fills the disk to the last byte.
    let filler = state.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let block = vec![0xffu8; 1 << 20];
    let mut small = vec![0xffu8; 4096];
    while std::io::Write::write_all(&mut f, &block).is_ok() {}
    while std::io::Write::write_all(&mut f, &small[..]).is_ok() {}
    small.truncate(1);
    while std::io::Write::write_all(&mut f, &small).is_ok() {}
    drop(f);
    smol::block_on(async {
        let conn = connect_from(&node, HONEST).await.unwrap();
        // Jobs are still served and receipted; their evidence is not kept.
        for n in 2..5 {
            let job = client::job_id(0xa0, n);
            let reply = submit(&conn, job, &program, &x).await.unwrap();
            assert!(matches!(reply, Message::Done(_)), "job {n}: {reply:?}");
            assert!(!state.join("retained").join(hex::encode(job)).exists());
        }
        // Evidence kept before the disk filled is still served.
        let (reply, _) = ask(&conn, &client::leaf_request(first, 0, false, access), &[])
            .await
            .unwrap();
        assert!(matches!(reply, Message::Leaf(_)), "{reply:?}");
    });
    assert!(node.alive());
    assert_eq!(
        std::fs::read(&key_file).unwrap(),
        key_bytes,
        "the key is intact"
    );
    // A restart on the full disk comes back as the same node.
    let id = node.key.clone();
    drop(node);
    let node = common::start(&state, "cpu", &["--state-free-floor-bytes", &floor]);
    assert_eq!(node.key, id);
    assert!(matches!(
        smol::block_on(honest_job(&node, 9)),
        Message::Done(_)
    ));
}
