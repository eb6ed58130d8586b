//! The node's side: a self-signed certificate carrying the device key, and a
//! QUIC server endpoint that presents it.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;

use lockstep_identity::DeviceKey;
use rustls::pki_types::PrivatePkcs8KeyDer;
use rustls::sign::{CertifiedKey, SigningKey, SingleCertAndKey};
use rustls::SignatureScheme;

use crate::{crypto_provider, transport_config, TransportError, ALPN, SERVER_NAME};

/// Lets rcgen sign the certificate through the same in-memory key rustls
/// signs handshakes with, so no second copy of the secret is made.
struct CertSigner {
    key: Arc<dyn SigningKey>,
    public: [u8; 32],
}

impl rcgen::RemoteKeyPair for CertSigner {
    fn public_key(&self) -> &[u8] {
        &self.public
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let signer = self
            .key
            .choose_scheme(&[SignatureScheme::ED25519])
            .ok_or(rcgen::Error::RemoteKeyError)?;
        signer.sign(msg).map_err(|_| rcgen::Error::RemoteKeyError)
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ED25519
    }
}

/// The node's certificate and handshake key: a self-signed X.509
/// certificate whose subject public key is the device key, signed by it.
/// Its name and dates mean nothing (clients pin the key); the common name
/// carries the node id for people reading it with other tools.
pub(crate) fn certified_key(key: &DeviceKey) -> Result<CertifiedKey, TransportError> {
    let signing = {
        let pkcs8 = key.pkcs8_der();
        rustls::crypto::ring::sign::any_eddsa_type(&PrivatePkcs8KeyDer::from(pkcs8.as_slice()))?
        // `pkcs8` is wiped here; the only copy left is ring's key object.
    };
    let key_pair = rcgen::KeyPair::from_remote(Box::new(CertSigner {
        key: signing.clone(),
        public: key.node_id().public_key_bytes(),
    }))?;
    let mut params = rcgen::CertificateParams::new(vec![SERVER_NAME.to_string()])?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("lockstep node {}", key.node_id()),
    );
    let cert = params.self_signed(&key_pair)?;
    Ok(CertifiedKey::new(vec![cert.der().clone()], signing))
}

/// The node's QUIC server configuration: TLS 1.3 only (ring provider),
/// ALPN `lockstep/1`, the certificate bound to `key`, no client
/// authentication (jobs are authorised by the daemon, not by TLS), and the
/// bounded [`transport_config`].
pub fn server_config(key: &DeviceKey) -> Result<quinn::ServerConfig, TransportError> {
    config_presenting(certified_key(key)?)
}

fn config_presenting(certified: CertifiedKey) -> Result<quinn::ServerConfig, TransportError> {
    let mut tls = rustls::ServerConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(Arc::new(transport_config()));
    Ok(config)
}

/// A QUIC endpoint listening on `listen`, presenting the certificate bound
/// to `key`, driven by smol. Port 0 picks a free port
/// (`endpoint.local_addr()` tells which).
pub fn server_endpoint(
    key: &DeviceKey,
    listen: SocketAddr,
) -> Result<quinn::Endpoint, TransportError> {
    let config = server_config(key)?;
    let bind = |source| TransportError::Bind {
        addr: listen,
        source,
    };
    let socket = UdpSocket::bind(listen).map_err(bind)?;
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(config),
        socket,
        Arc::new(quinn::SmolRuntime),
    )
    .map_err(bind)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::time::Duration;

    use super::*;
    use crate::{connect, PinError};

    fn new_key() -> (tempfile::TempDir, DeviceKey) {
        let dir = tempfile::tempdir().unwrap();
        let (key, _) = DeviceKey::load_or_create(dir.path()).unwrap();
        (dir, key)
    }

    /// A node that shows the pinned key's certificate but cannot sign with
    /// that key (it signs the handshake with another) is refused: the pin
    /// checks possession of the key, not only the certificate's contents.
    #[test]
    fn certificate_without_its_key_is_refused() {
        let (_a_dir, a) = new_key();
        let (_b_dir, b) = new_key();
        let shown = certified_key(&a).unwrap();
        let held = certified_key(&b).unwrap();
        let forged = CertifiedKey::new(shown.cert.clone(), held.key.clone());
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(config_presenting(forged).unwrap()),
            socket,
            Arc::new(quinn::SmolRuntime),
        )
        .unwrap();
        let addr = endpoint.local_addr().unwrap();
        smol::block_on(smol::future::or(
            async {
                let accepting = endpoint.clone();
                smol::spawn(async move {
                    while let Some(incoming) = accepting.accept().await {
                        let _ = incoming.await;
                    }
                })
                .detach();
                match connect(addr, a.node_id()).await {
                    Err(TransportError::Connection { source, .. }) => {
                        eprintln!("refused: {source}");
                    }
                    Err(TransportError::Pin(e @ PinError::KeyMismatch { .. })) => {
                        panic!("the certificate carries the pinned key: {e}")
                    }
                    other => panic!("expected a failed handshake, got {other:?}"),
                }
            },
            async {
                smol::Timer::after(Duration::from_secs(10)).await;
                panic!("test timed out");
            },
        ));
    }
}
