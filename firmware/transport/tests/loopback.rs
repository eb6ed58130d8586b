//! The transport on loopback: pinning, echo, a large transfer, many streams.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use lockstep_identity::DeviceKey;
use lockstep_transport::{client_config, connect, server_endpoint, PinError, TransportError};
use sha2::{Digest, Sha256};

/// Every test is bounded: a hang fails it instead of stalling the suite.
fn run<F: Future<Output = ()>>(test: F) {
    smol::block_on(smol::future::or(test, async {
        smol::Timer::after(Duration::from_secs(10)).await;
        panic!("test timed out");
    }))
}

fn new_key() -> (tempfile::TempDir, DeviceKey) {
    let dir = tempfile::tempdir().unwrap();
    let (key, created) = DeviceKey::load_or_create(dir.path()).unwrap();
    assert!(created);
    (dir, key)
}

const LOOPBACK: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// Starts a node on loopback. Each bidirectional stream starts with a mode
/// byte: `E` echoes the rest of the stream back; `H` reads it to the end and
/// answers its length (u64, big-endian) and SHA-256.
fn start_node(key: &DeviceKey) -> (quinn::Endpoint, SocketAddr) {
    let endpoint = server_endpoint(key, LOOPBACK).unwrap();
    let addr = endpoint.local_addr().unwrap();
    let accepting = endpoint.clone();
    smol::spawn(async move {
        while let Some(incoming) = accepting.accept().await {
            smol::spawn(async move {
                let Ok(connection) = incoming.await else {
                    return;
                };
                while let Ok((send, recv)) = connection.accept_bi().await {
                    smol::spawn(serve_stream(send, recv)).detach();
                }
            })
            .detach();
        }
    })
    .detach();
    (endpoint, addr)
}

async fn serve_stream(mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
    let mut mode = [0u8; 1];
    if recv.read_exact(&mut mode).await.is_err() {
        return;
    }
    let mut buf = vec![0u8; 256 * 1024];
    let mut hasher = Sha256::new();
    let mut len = 0u64;
    loop {
        match recv.read(&mut buf).await {
            Ok(Some(n)) => {
                if mode[0] == b'E' {
                    if send.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                } else {
                    hasher.update(&buf[..n]);
                    len += n as u64;
                }
            }
            Ok(None) => break,
            Err(_) => return,
        }
    }
    if mode[0] == b'H' {
        let _ = send.write_all(&len.to_be_bytes()).await;
        let _ = send.write_all(&hasher.finalize()).await;
    }
    let _ = send.finish();
}

/// Deterministic bytes that differ per stream.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Sends `data` on a new stream in echo mode and returns what came back.
async fn echo(connection: &quinn::Connection, data: Vec<u8>) -> Vec<u8> {
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    let writer = smol::spawn(async move {
        send.write_all(b"E").await.unwrap();
        send.write_all(&data).await.unwrap();
        send.finish().unwrap();
        // Keep the stream open until the peer has read everything.
        let _ = send.stopped().await;
    });
    let back = recv.read_to_end(64 << 20).await.unwrap();
    writer.await;
    back
}

#[test]
fn pinned_client_echoes() {
    run(async {
        let (_dir, key) = new_key();
        let (_node, addr) = start_node(&key);
        let connection = connect(addr, key.node_id()).await.unwrap();
        assert_eq!(
            connection
                .handshake_data()
                .unwrap()
                .downcast::<quinn::crypto::rustls::HandshakeData>()
                .unwrap()
                .protocol,
            Some(b"lockstep/1".to_vec())
        );
        let data = b"hello, lockstep".to_vec();
        assert_eq!(echo(&connection, data.clone()).await, data);
        connection.close(0u32.into(), b"done");
    });
}

#[test]
fn wrong_pinned_key_is_refused_with_both_keys() {
    run(async {
        let (_dir, key) = new_key();
        let (_other_dir, other) = new_key();
        let (_node, addr) = start_node(&key);
        let error = connect(addr, other.node_id()).await.unwrap_err();
        let message = error.to_string();
        eprintln!("{message}");
        match error {
            TransportError::Pin(PinError::KeyMismatch {
                addr: at,
                presented,
                pinned,
            }) => {
                assert_eq!(at, addr);
                assert_eq!(presented, key.node_id().to_string());
                assert_eq!(pinned, other.node_id().to_string());
            }
            other => panic!("expected a key mismatch, got {other:?}"),
        }
        assert_eq!(
            message,
            format!(
                "node at {addr} presented key {}, not the pinned key {}; refusing the connection",
                key.node_id(),
                other.node_id()
            )
        );
        // With a hand-built endpoint, quinn's own error names both keys too,
        // and the verifier keeps the typed reason.
        let (config, verifier) = client_config(addr, other.node_id()).unwrap();
        let mut endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            None,
            std::net::UdpSocket::bind(LOOPBACK).unwrap(),
            std::sync::Arc::new(quinn::SmolRuntime),
        )
        .unwrap();
        endpoint.set_default_client_config(config);
        let quinn_error = endpoint
            .connect(addr, lockstep_transport::SERVER_NAME)
            .unwrap()
            .await
            .unwrap_err()
            .to_string();
        eprintln!("quinn: {quinn_error}");
        assert!(quinn_error.contains(&key.node_id().to_string()));
        assert!(quinn_error.contains(&other.node_id().to_string()));
        assert!(matches!(
            verifier.take_refusal(),
            Some(PinError::KeyMismatch { .. })
        ));
        // The node keeps serving clients that pin it correctly.
        let connection = connect(addr, key.node_id()).await.unwrap();
        assert_eq!(
            echo(&connection, b"still here".to_vec()).await,
            b"still here"
        );
    });
}

#[test]
fn large_transfer_arrives_intact() {
    run(async {
        const LEN: usize = 64 << 20;
        let (_dir, key) = new_key();
        let (_node, addr) = start_node(&key);
        let connection = connect(addr, key.node_id()).await.unwrap();
        let data = pattern(7, LEN);
        let expected: [u8; 32] = Sha256::digest(&data).into();
        let (mut send, mut recv) = connection.open_bi().await.unwrap();
        let start = Instant::now();
        send.write_all(b"H").await.unwrap();
        for chunk in data.chunks(1 << 20) {
            send.write_all(chunk).await.unwrap();
        }
        send.finish().unwrap();
        let reply = recv.read_to_end(64).await.unwrap();
        let elapsed = start.elapsed();
        assert_eq!(reply.len(), 40);
        assert_eq!(
            u64::from_be_bytes(reply[..8].try_into().unwrap()),
            LEN as u64
        );
        let mib_s = LEN as f64 / (1 << 20) as f64 / elapsed.as_secs_f64();
        println!(
            "loopback: 64 MiB over one stream in {:.1} ms: {:.0} MiB/s ({:.0} MB/s)",
            elapsed.as_secs_f64() * 1e3,
            mib_s,
            LEN as f64 / 1e6 / elapsed.as_secs_f64()
        );
        assert_eq!(reply[8..], expected);
        connection.close(0u32.into(), b"done");
    });
}

#[test]
fn concurrent_streams() {
    run(async {
        // Twice the per-connection bound: the extra opens wait for slots.
        let streams = 2 * lockstep_limits::MAX_CONCURRENT_STREAMS_PER_CONNECTION as u64;
        let (_dir, key) = new_key();
        let (_node, addr) = start_node(&key);
        let connection = connect(addr, key.node_id()).await.unwrap();
        let tasks: Vec<_> = (0..streams)
            .map(|i| {
                let connection = connection.clone();
                smol::spawn(async move {
                    let data = pattern(i, 256 * 1024 + i as usize);
                    assert_eq!(echo(&connection, data.clone()).await, data, "stream {i}");
                })
            })
            .collect();
        for task in tasks {
            task.await;
        }
        connection.close(0u32.into(), b"done");
    });
}

/// Enrollment's unpinned connect: whatever node answers, its handshake
/// proved the key that is returned, and the connection works.
#[test]
fn unpinned_connect_returns_the_key_the_handshake_proved() {
    run(async {
        let (_dir, key) = new_key();
        let (_node, addr) = start_node(&key);
        let (connection, presented) = lockstep_transport::connect_unpinned(addr).await.unwrap();
        assert_eq!(presented, key.node_id().to_string());
        let data = b"enroll me".to_vec();
        assert_eq!(echo(&connection, data.clone()).await, data);
        connection.close(0u32.into(), b"done");
    });
}
