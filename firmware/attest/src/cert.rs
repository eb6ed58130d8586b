//! The EK certificate: X.509 parsing, validity at a given time, and the
//! chain up to a self-signed trust anchor, with the few signature
//! algorithms TPM manufacturers use.

use der::Decode;
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::{Pkcs1v15Sign, RsaPublicKey};
use sha2::{Digest, Sha256, Sha384};
use spki::ObjectIdentifier;
use x509_cert::Certificate;

/// The largest certificate accepted (EK certificates are 1-2 KiB; NV
/// indices hold at most a few KiB).
pub const MAX_CERTIFICATE_BYTES: usize = 16 * 1024;
/// At most this many certificates above the EK certificate.
pub const MAX_CHAIN_DEPTH: usize = 4;
/// At most this many certificates in the policy's trust list.
pub const MAX_ROOTS: usize = 256;

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const SHA256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const SHA384_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.12");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const BASIC_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");

/// A parsed certificate with its original bytes (the signature covers the
/// TBS bytes exactly as sent, not a re-encoding).
pub(crate) struct Cert {
    pub(crate) cert: Certificate,
    tbs: Vec<u8>,
}

/// Parses one DER certificate, bounded in size.
pub(crate) fn parse(der_bytes: &[u8], what: &'static str) -> Result<Cert, String> {
    if der_bytes.len() > MAX_CERTIFICATE_BYTES {
        return Err(format!(
            "{what} is {} bytes, more than the {MAX_CERTIFICATE_BYTES} allowed",
            der_bytes.len()
        ));
    }
    let cert =
        Certificate::from_der(der_bytes).map_err(|e| format!("{what} is not DER X.509: {e}"))?;
    let tbs = tbs_bytes(der_bytes).ok_or_else(|| format!("{what} has no TBS certificate"))?;
    Ok(Cert {
        cert,
        tbs: tbs.to_vec(),
    })
}

/// Checks that `der` parses as a certificate (used for PEM bundles).
pub fn check_certificate(der_bytes: &[u8]) -> Result<(), String> {
    parse(der_bytes, "certificate").map(|_| ())
}

/// The first element of the outer SEQUENCE, header included: the
/// TBSCertificate as the issuer signed it.
fn tbs_bytes(der_bytes: &[u8]) -> Option<&[u8]> {
    let (_, outer_body) = tlv(der_bytes)?;
    let (tbs_len, _) = tlv(outer_body)?;
    outer_body.get(..tbs_len)
}

/// One DER TLV at the start of `bytes`: (its total length, its contents).
fn tlv(bytes: &[u8]) -> Option<(usize, &[u8])> {
    let first = *bytes.get(1)?;
    let (header, len) = if first < 0x80 {
        (2, usize::from(first))
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let len = bytes
            .get(2..2 + n)?
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (2 + n, len)
    };
    let total = header.checked_add(len)?;
    Some((total, bytes.get(header..total)?))
}

impl Cert {
    /// Validity as unix seconds: (notBefore, notAfter).
    pub(crate) fn validity(&self) -> (u64, u64) {
        let v = &self.cert.tbs_certificate.validity;
        (
            v.not_before.to_unix_duration().as_secs(),
            v.not_after.to_unix_duration().as_secs(),
        )
    }

    fn valid_at(&self, now: u64) -> bool {
        let (from, until) = self.validity();
        from <= now && now <= until
    }

    /// The subject key as RSA, if it is one.
    pub(crate) fn rsa_key(&self) -> Option<RsaPublicKey> {
        let spki = &self.cert.tbs_certificate.subject_public_key_info;
        if spki.algorithm.oid != RSA_ENCRYPTION {
            return None;
        }
        RsaPublicKey::from_pkcs1_der(spki.subject_public_key.as_bytes()?).ok()
    }

    fn is_ca(&self) -> bool {
        self.cert
            .tbs_certificate
            .extensions
            .iter()
            .flatten()
            .filter(|e| e.extn_id == BASIC_CONSTRAINTS)
            .any(|e| {
                x509_cert::ext::pkix::BasicConstraints::from_der(e.extn_value.as_bytes())
                    .map(|bc| bc.ca)
                    .unwrap_or(false)
            })
    }

    fn issued_by(&self, issuer: &Cert) -> bool {
        self.cert.tbs_certificate.issuer == issuer.cert.tbs_certificate.subject
            && verify_signature(self, issuer).is_ok()
    }

    fn self_signed(&self) -> bool {
        self.issued_by(self)
    }

    fn same_as(&self, other: &Cert) -> bool {
        self.tbs == other.tbs && self.cert.signature == other.cert.signature
    }
}

/// Verifies `cert`'s signature with `issuer`'s key.
fn verify_signature(cert: &Cert, issuer: &Cert) -> Result<(), String> {
    let alg = cert.cert.signature_algorithm.oid;
    let sig = cert
        .cert
        .signature
        .as_bytes()
        .ok_or("the signature is not a whole number of bytes")?;
    let spki = &issuer.cert.tbs_certificate.subject_public_key_info;
    let key_bytes = spki
        .subject_public_key
        .as_bytes()
        .ok_or("the issuer key is not a whole number of bytes")?;
    if alg == SHA256_WITH_RSA || alg == SHA384_WITH_RSA {
        let key = issuer.rsa_key().ok_or("the issuer's key is not RSA")?;
        let ok = if alg == SHA256_WITH_RSA {
            key.verify(
                Pkcs1v15Sign::new::<Sha256>(),
                &Sha256::digest(&cert.tbs),
                sig,
            )
        } else {
            key.verify(
                Pkcs1v15Sign::new::<Sha384>(),
                &Sha384::digest(&cert.tbs),
                sig,
            )
        };
        return ok.map_err(|_| "the RSA signature does not verify".to_string());
    }
    if alg == ECDSA_SHA256 || alg == ECDSA_SHA384 {
        if spki.algorithm.oid != EC_PUBLIC_KEY {
            return Err("the issuer's key is not ECC".into());
        }
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<ObjectIdentifier>().ok())
            .ok_or("the issuer's ECC key names no curve")?;
        let digest: Vec<u8> = if alg == ECDSA_SHA256 {
            Sha256::digest(&cert.tbs).to_vec()
        } else {
            Sha384::digest(&cert.tbs).to_vec()
        };
        let bad = |_| "the ECDSA signature does not verify".to_string();
        return if curve == P256 {
            let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(key_bytes)
                .map_err(|_| "the issuer's P-256 key is invalid")?;
            let sig = p256::ecdsa::Signature::from_der(sig)
                .map_err(|_| "the ECDSA signature is malformed")?;
            key.verify_prehash(&digest, &sig).map_err(bad)
        } else if curve == P384 {
            let key = p384::ecdsa::VerifyingKey::from_sec1_bytes(key_bytes)
                .map_err(|_| "the issuer's P-384 key is invalid")?;
            let sig = p384::ecdsa::Signature::from_der(sig)
                .map_err(|_| "the ECDSA signature is malformed")?;
            key.verify_prehash(&digest, &sig).map_err(bad)
        } else {
            Err(format!("the issuer's curve {curve} is not P-256 or P-384"))
        };
    }
    Err(format!(
        "signature algorithm {alg} is not sha256WithRSAEncryption, sha384WithRSAEncryption or ECDSA with SHA-256/384"
    ))
}

/// Walks from `leaf` through certificates in `roots` (each a CA, valid at
/// `now`, whose key verifies the certificate below) to a self-signed
/// certificate in `roots`, at most [`MAX_CHAIN_DEPTH`] steps up. Returns
/// why not, for [`crate::AttestError::EkCertificateUntrusted`].
pub(crate) fn chain_to_root(leaf: &Cert, roots: &[Vec<u8>], now: u64) -> Result<(), String> {
    if roots.is_empty() {
        return Err("the policy trusts no EK certificate roots".into());
    }
    if roots.len() > MAX_ROOTS {
        return Err(format!(
            "the policy lists more than {MAX_ROOTS} certificates"
        ));
    }
    let pool: Vec<Cert> = roots
        .iter()
        .map(|der_bytes| parse(der_bytes, "a policy certificate"))
        .collect::<Result<_, _>>()?;
    let mut current = leaf;
    for _ in 0..MAX_CHAIN_DEPTH {
        let Some(issuer) = pool.iter().find(|c| current.issued_by(c)) else {
            return Err(format!(
                "no certificate in the policy issued {} (issuer {})",
                if std::ptr::eq(current, leaf) {
                    "the EK certificate".to_string()
                } else {
                    format!("'{}'", current.cert.tbs_certificate.subject)
                },
                current.cert.tbs_certificate.issuer
            ));
        };
        if !issuer.is_ca() {
            return Err(format!(
                "'{}' signs certificates but is not a CA (basicConstraints)",
                issuer.cert.tbs_certificate.subject
            ));
        }
        if !issuer.valid_at(now) {
            return Err(format!(
                "'{}' is not valid at the verifier's time",
                issuer.cert.tbs_certificate.subject
            ));
        }
        if issuer.self_signed() {
            return Ok(());
        }
        if issuer.same_as(current) {
            break;
        }
        current = issuer;
    }
    Err(format!(
        "no self-signed root in the policy within {MAX_CHAIN_DEPTH} certificates of the EK certificate"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tlv_reads_short_and_long_lengths() {
        assert_eq!(tlv(&[0x30, 0x01, 0xaa]), Some((3, &[0xaa][..])));
        let mut long = vec![0x30, 0x82, 0x01, 0x00];
        long.extend(std::iter::repeat_n(0u8, 256));
        assert_eq!(tlv(&long).map(|(n, b)| (n, b.len())), Some((260, 256)));
        assert_eq!(tlv(&[0x30, 0x85, 1, 1, 1, 1, 1]), None);
        assert_eq!(tlv(&[0x30, 0x05, 1]), None);
        assert_eq!(tlv(&[0x30]), None);
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert!(parse(&[0x30, 0x03, 0x02, 0x01, 0x00], "x").is_err());
        assert!(parse(&[], "x").is_err());
    }
}
