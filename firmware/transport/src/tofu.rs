//! The enrollment-time certificate check: any Ed25519 key is accepted, but
//! the handshake must be signed with it, and the key is remembered so the
//! caller can bind it to what the node says and signs.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, SubjectPublicKeyInfoDer, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};

use crate::pin::{node_id_form, PinError, ED25519_SPKI_PREFIX};

#[derive(Debug)]
pub(crate) struct PresentedKeyVerifier {
    addr: SocketAddr,
    presented: Mutex<Option<[u8; 32]>>,
    refusal: Mutex<Option<PinError>>,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

impl PresentedKeyVerifier {
    pub(crate) fn new(addr: SocketAddr) -> PresentedKeyVerifier {
        PresentedKeyVerifier {
            addr,
            presented: Mutex::new(None),
            refusal: Mutex::new(None),
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        }
    }

    /// The key the node presented, in node-id form.
    pub(crate) fn presented(&self) -> Option<String> {
        self.presented
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(node_id_form)
    }

    pub(crate) fn take_refusal(&self) -> Option<PinError> {
        self.refusal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    fn refuse(&self, error: PinError) -> rustls::Error {
        let text = error.to_string();
        *self.refusal.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(Refused(
            text,
        )))))
    }

    fn spki(&self) -> Option<Vec<u8>> {
        let key = (*self.presented.lock().unwrap_or_else(|e| e.into_inner()))?;
        let mut spki = ED25519_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(&key);
        Some(spki)
    }
}

impl ServerCertVerifier for PresentedKeyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = webpki::EndEntityCert::try_from(end_entity).map_err(|e| {
            self.refuse(PinError::Malformed {
                addr: self.addr,
                reason: e.to_string(),
            })
        })?;
        let spki = cert.subject_public_key_info();
        match spki.as_ref().strip_prefix(&ED25519_SPKI_PREFIX[..]) {
            Some(key) if key.len() == 32 => {
                *self.presented.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(key.try_into().expect("32 bytes"));
                Ok(ServerCertVerified::assertion())
            }
            _ => Err(self.refuse(PinError::Malformed {
                addr: self.addr,
                reason: "the certificate's key is not Ed25519, so it is no Lockstep node".into(),
            })),
        }
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
        // The key checked in verify_server_cert, which runs first.
        let spki = self.spki().ok_or(rustls::Error::General(
            "handshake signature before the certificate".into(),
        ))?;
        rustls::crypto::verify_tls13_signature_with_raw_key(
            message,
            &SubjectPublicKeyInfoDer::from(spki.as_slice()),
            dss,
            &self.algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}
