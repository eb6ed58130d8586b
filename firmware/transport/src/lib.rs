//! QUIC transport bound to the node's device key.
//!
//! # Why no certificate authority
//!
//! A Lockstep node is known by its node id: the Ed25519 public key of its
//! device key ([`lockstep_identity::NodeId`]), the same key that signs its
//! receipts. The node's TLS certificate is self-signed and its subject public
//! key *is* that device key, so the only fact a client has to trust is the
//! node id it was given (`--node-key`). A CA would add a second, weaker root
//! of trust (whoever can get a certificate for a name) and an operational
//! dependency (issuance, renewal, clocks) that an appliance on a lab network
//! does not need.
//!
//! # The pinning model
//!
//! The client ([`connect`]) accepts the server's certificate only if its
//! SubjectPublicKeyInfo is Ed25519 and equal to the pinned node id's key, and
//! then checks the TLS 1.3 handshake signature with that pinned key: the peer
//! proves it holds the device key in every handshake. Names, validity dates,
//! issuers and chains are ignored: the certificate is only a carrier for the
//! key. A mismatch is refused with [`PinError::KeyMismatch`], which names both
//! keys in node-id form.
//!
//! # Bounds
//!
//! Every connection, on both sides, uses the transport parameters in
//! [`transport_config`], taken from `lockstep-limits`: at most
//! `MAX_CONCURRENT_STREAMS_PER_CONNECTION` bidirectional streams open at once
//! (one per job) and no unidirectional streams or datagrams; a connection
//! closes after `IDLE_TIMEOUT_MS` of silence (which also bounds the
//! handshake), clients send keep-alives every `KEEP_ALIVE_INTERVAL_MS`; the
//! receive windows (`STREAM_RECEIVE_WINDOW_BYTES` per stream,
//! `CONNECTION_RECEIVE_WINDOW_BYTES` per connection) bound how much received
//! data QUIC buffers for a reader that is slower than its peer, and
//! `CONNECTION_SEND_WINDOW_BYTES` bounds what it buffers for sending.
//!
//! This crate holds no policy: what to do on a connection (jobs, busy
//! replies, time limits) is the daemon's and the client's business.

#![forbid(unsafe_code)]

pub mod frames;
mod pin;
mod server;
mod tofu;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::{Arc, Once};
use std::time::Duration;

use lockstep_identity::NodeId;
use lockstep_limits as limits;
use quinn::{IdleTimeout, TransportConfig, VarInt};

pub use pin::{PinError, PinnedKeyVerifier};
pub use server::{server_config, server_endpoint};

/// The one application protocol a Lockstep node speaks (TLS ALPN).
pub const ALPN: &[u8] = b"lockstep/1";

/// The TLS server name clients send and the certificate carries. It means
/// nothing: clients identify nodes by key, never by name.
pub const SERVER_NAME: &str = "lockstep-node";

/// Why a transport could not be set up or a connection was not made.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The pinned node id did not match what the node presented.
    #[error(transparent)]
    Pin(#[from] PinError),
    #[error("cannot bind UDP socket {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot build the node's certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("cannot build the TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("cannot build the QUIC TLS configuration: {0}")]
    Quic(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
    #[error("cannot connect to node at {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: quinn::ConnectError,
    },
    /// The node refused the connection at its first packet: it holds as
    /// many connections as it allows (in all, or from this address).
    #[error("node at {addr} refused the connection: it is at its connection limit (in all, or for your address); close other connections to it or retry later")]
    Refused { addr: SocketAddr },
    #[error("connection to node at {addr} failed: {source}")]
    Connection {
        addr: SocketAddr,
        source: quinn::ConnectionError,
    },
}

/// Installs rustls's ring provider as the process default, once. Building a
/// rustls config panics if no default can be chosen; this crate passes the
/// provider explicitly too, so the default only matters to other code in the
/// process. Safe to call any number of times, from any thread.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err means another provider was installed first: that one stays.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

pub(crate) fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    install_crypto_provider();
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The bounded QUIC transport parameters every Lockstep connection uses (see
/// the crate docs).
pub fn transport_config() -> TransportConfig {
    let mut t = TransportConfig::default();
    t.max_concurrent_bidi_streams(VarInt::from_u32(
        limits::MAX_CONCURRENT_STREAMS_PER_CONNECTION,
    ))
    .max_concurrent_uni_streams(VarInt::from_u32(0))
    .datagram_receive_buffer_size(None)
    .max_idle_timeout(Some(IdleTimeout::from(VarInt::from_u32(
        u32::try_from(limits::IDLE_TIMEOUT_MS).expect("idle timeout fits a u32 of ms"),
    ))))
    .stream_receive_window(VarInt::from_u32(limits::STREAM_RECEIVE_WINDOW_BYTES))
    .receive_window(VarInt::from_u32(limits::CONNECTION_RECEIVE_WINDOW_BYTES))
    .send_window(limits::CONNECTION_SEND_WINDOW_BYTES);
    t
}

/// The client's QUIC configuration pinning `node` at `addr`, and the verifier
/// (which remembers why it refused a certificate, for [`connect`]).
pub fn client_config(
    addr: SocketAddr,
    node: &NodeId,
) -> Result<(quinn::ClientConfig, Arc<PinnedKeyVerifier>), TransportError> {
    let verifier = Arc::new(PinnedKeyVerifier::new(addr, node));
    let mut tls = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    let mut transport = transport_config();
    transport.keep_alive_interval(Some(Duration::from_millis(limits::KEEP_ALIVE_INTERVAL_MS)));
    config.transport_config(Arc::new(transport));
    Ok((config, verifier))
}

/// Connects to the node at `addr`, accepting it only if it proves it holds
/// the key of `node`. Creates a client endpoint on an ephemeral port (on the
/// loopback interface when `addr` is loopback), driven by smol; it lives as
/// long as the returned connection.
///
/// A node presenting another key gives [`TransportError::Pin`]; the
/// handshake is bounded by `IDLE_TIMEOUT_MS`.
pub async fn connect(addr: SocketAddr, node: &NodeId) -> Result<quinn::Connection, TransportError> {
    connect_from(default_local_ip(addr), addr, node).await
}

/// [`connect`] from a chosen local address: a multi-homed client picks its
/// interface, and tests play several peers from several loopback addresses
/// (a node counts connections per source address).
pub async fn connect_from(
    local: IpAddr,
    addr: SocketAddr,
    node: &NodeId,
) -> Result<quinn::Connection, TransportError> {
    let (config, verifier) = client_config(addr, node)?;
    let endpoint = bind_client(local, config)?;
    let connecting = endpoint
        .connect(addr, SERVER_NAME)
        .map_err(|source| TransportError::Connect { addr, source })?;
    match connecting.await {
        Ok(connection) => Ok(connection),
        // quinn reports a refused certificate only as a TLS alert with a
        // string; the verifier kept the typed reason.
        Err(source) => Err(match verifier.take_refusal() {
            Some(refusal) => TransportError::Pin(refusal),
            None => connection_error(addr, source),
        }),
    }
}

/// Connects to whatever node answers at `addr`, for enrollment, when the
/// node id is not known yet. The node still proves in the handshake that
/// it holds the key its certificate carries; that key, in node-id form, is
/// returned so the caller can check that the node signs its enrollment
/// challenge with the same key (`lockstep-fleet enroll`). Never use this
/// to submit jobs: it trusts the first key it sees.
pub async fn connect_unpinned(
    addr: SocketAddr,
) -> Result<(quinn::Connection, String), TransportError> {
    let verifier = Arc::new(tofu::PresentedKeyVerifier::new(addr));
    let mut tls = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    let mut transport = transport_config();
    transport.keep_alive_interval(Some(Duration::from_millis(limits::KEEP_ALIVE_INTERVAL_MS)));
    config.transport_config(Arc::new(transport));
    let endpoint = client_endpoint(addr, config)?;
    let connecting = endpoint
        .connect(addr, SERVER_NAME)
        .map_err(|source| TransportError::Connect { addr, source })?;
    match connecting.await {
        Ok(connection) => match verifier.presented() {
            Some(key) => Ok((connection, key)),
            None => Err(TransportError::Pin(PinError::Malformed {
                addr,
                reason: "no certificate was presented".into(),
            })),
        },
        Err(source) => Err(match verifier.take_refusal() {
            Some(refusal) => TransportError::Pin(refusal),
            None => connection_error(addr, source),
        }),
    }
}

fn connection_error(addr: SocketAddr, source: quinn::ConnectionError) -> TransportError {
    match source {
        quinn::ConnectionError::ConnectionClosed(ref c)
            if c.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED =>
        {
            TransportError::Refused { addr }
        }
        source => TransportError::Connection { addr, source },
    }
}

/// The local address a client binds to reach `addr`: the loopback
/// interface when `addr` is loopback, else any.
fn default_local_ip(addr: SocketAddr) -> IpAddr {
    match (addr.is_ipv4(), addr.ip().is_loopback()) {
        (true, true) => Ipv4Addr::LOCALHOST.into(),
        (true, false) => Ipv4Addr::UNSPECIFIED.into(),
        (false, true) => Ipv6Addr::LOCALHOST.into(),
        (false, false) => Ipv6Addr::UNSPECIFIED.into(),
    }
}

/// A client endpoint on an ephemeral port (on the loopback interface when
/// `addr` is loopback), driven by smol.
fn client_endpoint(
    addr: SocketAddr,
    config: quinn::ClientConfig,
) -> Result<quinn::Endpoint, TransportError> {
    bind_client(default_local_ip(addr), config)
}

fn bind_client(ip: IpAddr, config: quinn::ClientConfig) -> Result<quinn::Endpoint, TransportError> {
    let local = SocketAddr::new(ip, 0);
    let bind = |source| TransportError::Bind {
        addr: local,
        source,
    };
    let socket = UdpSocket::bind(local).map_err(bind)?;
    let mut endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        socket,
        Arc::new(quinn::SmolRuntime),
    )
    .map_err(bind)?;
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}
