//! The client's certificate check: the server's key must be the pinned node
//! id's Ed25519 key, and the handshake must be signed with it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use lockstep_identity::NodeId;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, SubjectPublicKeyInfoDer, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};
use sha2::{Digest, Sha256};

/// DER of an Ed25519 SubjectPublicKeyInfo up to the 32 key bytes (RFC 8410):
/// SEQUENCE { SEQUENCE { OID 1.3.101.112 }, BIT STRING (0 unused bits) }.
pub(crate) const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Why a client refused a node's certificate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PinError {
    /// The node proved nothing about the pinned key: it presented another.
    /// Both keys are in node-id (minisign public key) form.
    #[error("node at {addr} presented key {presented}, not the pinned key {pinned}; refusing the connection")]
    KeyMismatch {
        addr: SocketAddr,
        presented: String,
        pinned: String,
    },
    #[error("node at {addr} presented a certificate whose key is not Ed25519, not the pinned key {pinned}; refusing the connection")]
    NotEd25519 { addr: SocketAddr, pinned: String },
    #[error(
        "node at {addr} presented a malformed certificate ({reason}); refusing the connection"
    )]
    Malformed { addr: SocketAddr, reason: String },
}

/// A [`PinError`] as rustls carries it. rustls formats the error it holds
/// with `Debug`, and quinn passes that string on, so `Debug` here is the
/// message: quinn's connection error then reads like the typed one.
struct Refusal(PinError);

impl std::fmt::Debug for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for Refusal {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// A rustls [`ServerCertVerifier`] that pins one node id.
///
/// It accepts the end-entity certificate only if its SubjectPublicKeyInfo is
/// Ed25519 and equal to the pinned key, and verifies the TLS 1.3 handshake
/// signature with the pinned key. Server names, validity dates, issuers and
/// intermediates are ignored on purpose (see the crate docs). TLS 1.2 is
/// refused; QUIC has only TLS 1.3.
#[derive(Debug)]
pub struct PinnedKeyVerifier {
    addr: SocketAddr,
    pinned: NodeId,
    pinned_spki: Vec<u8>,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
    refusal: Mutex<Option<PinError>>,
}

impl PinnedKeyVerifier {
    /// A verifier for the node `pinned` reached at `addr` (the address only
    /// appears in error messages).
    pub fn new(addr: SocketAddr, pinned: &NodeId) -> PinnedKeyVerifier {
        let mut pinned_spki = ED25519_SPKI_PREFIX.to_vec();
        pinned_spki.extend_from_slice(&pinned.public_key_bytes());
        PinnedKeyVerifier {
            addr,
            pinned: pinned.clone(),
            pinned_spki,
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
            refusal: Mutex::new(None),
        }
    }

    /// The reason of the last refusal, if any (taking it clears it).
    pub fn take_refusal(&self) -> Option<PinError> {
        self.refusal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    fn refuse(&self, error: PinError) -> rustls::Error {
        *self.refusal.lock().unwrap_or_else(|e| e.into_inner()) = Some(error.clone());
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(Refusal(
            error,
        )))))
    }

    /// Checks that `certificate` carries exactly the pinned key.
    pub fn check_certificate(&self, certificate: &CertificateDer<'_>) -> Result<(), PinError> {
        let cert =
            webpki::EndEntityCert::try_from(certificate).map_err(|e| PinError::Malformed {
                addr: self.addr,
                reason: e.to_string(),
            })?;
        let spki = cert.subject_public_key_info();
        let spki = spki.as_ref();
        if spki == self.pinned_spki.as_slice() {
            return Ok(());
        }
        match spki.strip_prefix(&ED25519_SPKI_PREFIX[..]) {
            Some(key) if key.len() == 32 => Err(PinError::KeyMismatch {
                addr: self.addr,
                presented: node_id_form(key.try_into().expect("32 bytes")),
                pinned: self.pinned.to_string(),
            }),
            _ => Err(PinError::NotEd25519 {
                addr: self.addr,
                pinned: self.pinned.to_string(),
            }),
        }
    }
}

impl ServerCertVerifier for PinnedKeyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check_certificate(end_entity)
            .map_err(|e| self.refuse(e))?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        _cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Always the pinned key: verify_server_cert has already checked that
        // the certificate carries it.
        rustls::crypto::verify_tls13_signature_with_raw_key(
            message,
            &SubjectPublicKeyInfoDer::from(self.pinned_spki.as_slice()),
            dss,
            &self.algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// A raw Ed25519 key in node-id form (minisign public key: "Ed", the first 8
/// bytes of its SHA-256, the key; base64), as `lockstep_identity::NodeId`
/// prints it. A presented key need not be a valid point, so it is formatted
/// here rather than parsed into a `NodeId`.
pub(crate) fn node_id_form(key: &[u8; 32]) -> String {
    let mut bytes = Vec::with_capacity(42);
    bytes.extend_from_slice(b"Ed");
    bytes.extend_from_slice(&Sha256::digest(key)[..8]);
    bytes.extend_from_slice(key);
    STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_form_matches_identity() {
        let dir = tempfile::tempdir().unwrap();
        let (key, _) = lockstep_identity::DeviceKey::load_or_create(dir.path()).unwrap();
        let id = key.node_id();
        assert_eq!(node_id_form(&id.public_key_bytes()), id.to_string());
    }
}
