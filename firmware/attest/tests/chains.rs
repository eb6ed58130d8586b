//! EK certificate chains beyond what swtpm's local CA makes: ECDSA P-256
//! and P-384 issuers, an EK certificate with an empty subject and a
//! critical subjectAltName (as TPM manufacturers issue them), the depth
//! bound, and issuers that are not CAs or have expired.

use der::Decode;
use lockstep_attest::{
    challenge, verify, AcceptedRelease, AttestError, Evidence, NodeTpm, PcrValue, Policy,
};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, CustomExtension, DistinguishedName, DnType,
    IsCa, KeyPair, PublicKeyData, SignatureAlgorithm, PKCS_ECDSA_P256_SHA256,
    PKCS_ECDSA_P384_SHA384,
};
use sha2::{Digest, Sha256};
use std::path::Path;

const NOW: u64 = 1_900_000_000;
const SECRET: [u8; 32] = [0x5e; 32];

fn file(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/a")
            .join(name),
    )
    .unwrap()
}

/// TPM A's EK public key, to be certified by the test CAs.
struct EkKey(Vec<u8>);

impl PublicKeyData for EkKey {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }
    fn algorithm(&self) -> &SignatureAlgorithm {
        &rcgen::PKCS_RSA_SHA256
    }
}

struct Ca {
    cert: Certificate,
    key: KeyPair,
}

fn ca_params(name: &str, ca: bool) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    if ca {
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    }
    params
}

fn new_root(alg: &'static SignatureAlgorithm) -> Ca {
    let key = KeyPair::generate_for(alg).unwrap();
    let cert = ca_params("Test EK Root", true).self_signed(&key).unwrap();
    Ca { cert, key }
}

fn issue(params: CertificateParams, alg: &'static SignatureAlgorithm, by: &Ca) -> Ca {
    let key = KeyPair::generate_for(alg).unwrap();
    let cert = params.signed_by(&key, &by.cert, &by.key).unwrap();
    Ca { cert, key }
}

/// An EK certificate for TPM A's EK as manufacturers write them: empty
/// subject, the TPM's identity in a critical subjectAltName.
fn ek_certificate(by: &Ca) -> Vec<u8> {
    let recorded = x509_cert::Certificate::from_der(&file("ek.crt.der")).unwrap();
    let tbs = &recorded.tbs_certificate;
    let key = EkKey(
        tbs.subject_public_key_info
            .subject_public_key
            .raw_bytes()
            .to_vec(),
    );
    let san = tbs
        .extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id.to_string() == "2.5.29.17")
        .expect("swtpm's EK certificate has a subjectAltName");
    let mut ext =
        CustomExtension::from_oid_content(&[2, 5, 29, 17], san.extn_value.as_bytes().to_vec());
    ext.set_criticality(true);
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.custom_extensions.push(ext);
    params
        .signed_by(&key, &by.cert, &by.key)
        .unwrap()
        .der()
        .to_vec()
}

fn verify_with(
    ek_certificate: Vec<u8>,
    roots: &[&Ca],
) -> Result<lockstep_attest::Attestation, AttestError> {
    let node = NodeTpm {
        ek_public: file("ek.pub"),
        ek_certificate,
        ak_public: file("ak.pub"),
    };
    let pending = challenge(
        &node,
        file("nonce.bin").try_into().unwrap(),
        SECRET,
        [0; 32],
    )
    .unwrap()
    .0;
    let values = file("pcrs.bin");
    let pcrs: Vec<PcrValue> = [0u8, 1, 2, 3, 4, 5, 6, 7, 11, 12]
        .iter()
        .zip(values.chunks_exact(32))
        .map(|(index, v)| PcrValue {
            index: *index,
            sha256: v.try_into().unwrap(),
        })
        .collect();
    let pcr11 = pcrs[8].sha256;
    let evidence = Evidence {
        quote: file("quote.msg"),
        signature: file("quote.sig"),
        pcrs,
        activated_secret: SECRET.to_vec(),
    };
    let policy = Policy::new(
        roots.iter().map(|ca| ca.cert.der().to_vec()).collect(),
        vec![AcceptedRelease {
            name: "r".into(),
            pcr11,
        }],
        NOW,
    );
    verify(&pending, &evidence, &file("node_key.bin"), &policy)
}

fn assert_untrusted(result: Result<lockstep_attest::Attestation, AttestError>) {
    assert!(
        matches!(result, Err(AttestError::EkCertificateUntrusted { .. })),
        "{result:?}"
    );
}

#[test]
fn ecdsa_chains_and_manufacturer_style_ek_certificates_are_accepted() {
    let root = new_root(&PKCS_ECDSA_P256_SHA256);
    let intermediate = issue(
        ca_params("Test EK CA", true),
        &PKCS_ECDSA_P384_SHA384,
        &root,
    );
    let ek = ek_certificate(&intermediate);
    let attestation = verify_with(ek.clone(), &[&intermediate, &root]).unwrap();
    assert_eq!(
        attestation.ek_certificate_sha256,
        <[u8; 32]>::from(Sha256::digest(&ek))
    );
    // The order of the policy's certificates does not matter.
    verify_with(ek.clone(), &[&root, &intermediate]).unwrap();
    // Without the intermediate, or with it but no anchor, it is untrusted.
    assert_untrusted(verify_with(ek.clone(), &[&root]));
    assert_untrusted(verify_with(ek.clone(), &[&intermediate]));
    // Another root with the same name is not the root.
    let impostor = new_root(&PKCS_ECDSA_P256_SHA256);
    assert_untrusted(verify_with(ek, &[&intermediate, &impostor]));
}

#[test]
fn chains_longer_than_four_issuers_are_refused() {
    for (intermediates, trusted) in [(3, true), (4, false)] {
        let root = new_root(&PKCS_ECDSA_P256_SHA256);
        let mut chain = vec![root];
        for i in 0..intermediates {
            let next = issue(
                ca_params(&format!("CA {i}"), true),
                &PKCS_ECDSA_P256_SHA256,
                chain.last().unwrap(),
            );
            chain.push(next);
        }
        let ek = ek_certificate(chain.last().unwrap());
        let roots: Vec<&Ca> = chain.iter().collect();
        let result = verify_with(ek, &roots);
        if trusted {
            assert!(result.is_ok(), "{intermediates} intermediates: {result:?}");
        } else {
            assert_untrusted(result);
        }
    }
}

#[test]
fn issuers_that_are_not_cas_or_have_expired_are_refused() {
    let root = new_root(&PKCS_ECDSA_P256_SHA256);
    let not_ca = issue(ca_params("Not a CA", false), &PKCS_ECDSA_P256_SHA256, &root);
    assert_untrusted(verify_with(ek_certificate(&not_ca), &[&not_ca, &root]));

    let mut params = ca_params("Expired CA", true);
    params.not_after = rcgen::date_time_ymd(2020, 1, 1);
    let expired = issue(params, &PKCS_ECDSA_P256_SHA256, &root);
    assert_untrusted(verify_with(ek_certificate(&expired), &[&expired, &root]));
}
