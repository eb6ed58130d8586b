//! `verify` against quotes recorded from two software TPMs
//! (`tests/fixtures/record.sh`): the good one is accepted, and each way of
//! breaking it is refused with the variant that names what broke.

use lockstep_attest::{
    attestation_digest, challenge, parse_public, parse_quote, parse_signature, pem_certificates,
    quote_qualifying_data, verify, AcceptedRelease, AttestError, Evidence, NodeTpm, PcrValue,
    Pending, Policy,
};
use sha2::{Digest, Sha256};
use std::path::Path;

/// A time inside every recorded certificate's validity (2030-03-17).
const NOW: u64 = 1_900_000_000;
const SECRET: [u8; 32] = [0x5e; 32];
const QUOTED: [u8; 10] = [0, 1, 2, 3, 4, 5, 6, 7, 11, 12];

struct Recorded {
    node: NodeTpm,
    ak_name: Vec<u8>,
    quote: Vec<u8>,
    signature: Vec<u8>,
    pcrs: Vec<PcrValue>,
    nonce: [u8; 32],
    node_key: [u8; 32],
    roots: Vec<Vec<u8>>,
    pcr11_extend: [u8; 32],
}

fn file(tpm: &str, name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(tpm)
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn load(tpm: &str) -> Recorded {
    let values = file(tpm, "pcrs.bin");
    assert_eq!(values.len(), 32 * QUOTED.len());
    let pcrs = QUOTED
        .iter()
        .zip(values.chunks_exact(32))
        .map(|(index, v)| PcrValue {
            index: *index,
            sha256: v.try_into().unwrap(),
        })
        .collect();
    let mut roots = pem_certificates(std::str::from_utf8(&file(tpm, "root.pem")).unwrap()).unwrap();
    roots.extend(pem_certificates(std::str::from_utf8(&file(tpm, "issuer.pem")).unwrap()).unwrap());
    Recorded {
        node: NodeTpm {
            ek_public: file(tpm, "ek.pub"),
            ek_certificate: file(tpm, "ek.crt.der"),
            ak_public: file(tpm, "ak.pub"),
        },
        ak_name: file(tpm, "ak.name"),
        quote: file(tpm, "quote.msg"),
        signature: file(tpm, "quote.sig"),
        pcrs,
        nonce: file(tpm, "nonce.bin").try_into().unwrap(),
        node_key: file(tpm, "node_key.bin").try_into().unwrap(),
        roots,
        pcr11_extend: file(tpm, "pcr11_extend.bin").try_into().unwrap(),
    }
}

impl Recorded {
    fn pending(&self) -> Pending {
        challenge(&self.node, self.nonce, SECRET, [3; 32])
            .expect("the recorded TPM's keys are accepted")
            .0
    }

    fn evidence(&self) -> Evidence {
        Evidence {
            quote: self.quote.clone(),
            signature: self.signature.clone(),
            pcrs: self.pcrs.clone(),
            activated_secret: SECRET.to_vec(),
        }
    }

    /// PCR 11 after one extend from zero with the recorded release digest.
    fn release_pcr11(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update([0u8; 32]);
        h.update(self.pcr11_extend);
        h.finalize().into()
    }

    fn policy(&self) -> Policy {
        Policy::new(
            self.roots.clone(),
            vec![
                AcceptedRelease {
                    name: "older".into(),
                    pcr11: [0xee; 32],
                },
                AcceptedRelease {
                    name: "release 1".into(),
                    pcr11: self.release_pcr11(),
                },
            ],
            NOW,
        )
    }

    fn verify(&self) -> Result<lockstep_attest::Attestation, AttestError> {
        verify(
            &self.pending(),
            &self.evidence(),
            &self.node_key,
            &self.policy(),
        )
    }
}

#[test]
fn the_recorded_quotes_are_accepted() {
    for tpm in ["a", "b"] {
        let r = load(tpm);
        let a = r.verify().unwrap_or_else(|e| panic!("TPM {tpm}: {e}"));
        assert_eq!(a.release, "release 1");
        assert_eq!(
            a.ak_name, r.ak_name,
            "the AK name is what tpm2_createak -n wrote"
        );
        assert_eq!(a.pcrs, r.pcrs);
        let ek_sha: [u8; 32] = Sha256::digest(&r.node.ek_certificate).into();
        assert_eq!(a.ek_certificate_sha256, ek_sha);
        assert_eq!(
            a.digest,
            attestation_digest(&r.node_key, &ek_sha, &r.ak_name, &r.quote, &r.signature)
        );
        // The digest as the crate docs define it, written out again here.
        let mut s = b"lockstep-attestation/1\0".to_vec();
        for (i, field) in [
            &r.node_key[..],
            &ek_sha[..],
            &r.ak_name,
            &r.quote,
            &r.signature,
        ]
        .into_iter()
        .enumerate()
        {
            if i != 1 {
                s.extend_from_slice(&(field.len() as u32).to_be_bytes());
            }
            s.extend_from_slice(field);
        }
        assert_eq!(a.digest, <[u8; 32]>::from(Sha256::digest(&s)));
        let quote = parse_quote(&r.quote).unwrap();
        assert_eq!(a.reset_count, quote.reset_count);
        assert_eq!(a.restart_count, quote.restart_count);
        assert_eq!(a.firmware_version, quote.firmware_version);
        assert_eq!(quote.pcr_selection, QUOTED);
    }
}

#[test]
fn the_qualifying_data_is_what_the_node_quoted() {
    let r = load("a");
    let quote = parse_quote(&r.quote).unwrap();
    assert_eq!(
        quote.extra_data,
        quote_qualifying_data(&r.nonce, &r.node_key)
    );
}

#[test]
fn every_flipped_quote_byte_breaks_the_signature() {
    let r = load("a");
    let (pending, policy) = (r.pending(), r.policy());
    for i in 0..r.quote.len() {
        let mut evidence = r.evidence();
        evidence.quote[i] ^= 0x01;
        assert_eq!(
            verify(&pending, &evidence, &r.node_key, &policy),
            Err(AttestError::BadQuoteSignature),
            "byte {i}"
        );
    }
}

#[test]
fn a_flipped_signature_byte_is_refused() {
    let r = load("a");
    let (pending, policy) = (r.pending(), r.policy());
    for i in 0..r.signature.len() {
        let mut evidence = r.evidence();
        evidence.signature[i] ^= 0x80;
        let result = verify(&pending, &evidence, &r.node_key, &policy);
        assert!(result.is_err(), "byte {i}");
        // Past the algorithm ids and the size of r, the scalars themselves.
        if (7..6 + 32).contains(&i) || (40..).contains(&i) {
            assert_eq!(result, Err(AttestError::BadQuoteSignature), "byte {i}");
        }
    }
}

#[test]
fn another_nonce_or_node_key_is_refused() {
    let r = load("a");
    let other_nonce = challenge(&r.node, [0x77; 32], SECRET, [3; 32]).unwrap().0;
    assert_eq!(
        verify(&other_nonce, &r.evidence(), &r.node_key, &r.policy()),
        Err(AttestError::WrongNonceOrKey)
    );
    let mut other_key = r.node_key;
    other_key[31] ^= 1;
    assert_eq!(
        verify(&r.pending(), &r.evidence(), &other_key, &r.policy()),
        Err(AttestError::WrongNonceOrKey)
    );
    assert!(matches!(
        verify(&r.pending(), &r.evidence(), &r.node_key[..31], &r.policy()),
        Err(AttestError::Malformed { .. })
    ));
}

#[test]
fn edited_omitted_or_reordered_pcrs_are_refused() {
    let r = load("a");
    let (pending, policy) = (r.pending(), r.policy());
    let check = |pcrs: Vec<PcrValue>| {
        let evidence = Evidence {
            pcrs,
            ..r.evidence()
        };
        assert_eq!(
            verify(&pending, &evidence, &r.node_key, &policy),
            Err(AttestError::PcrDigestMismatch)
        );
    };
    for i in 0..r.pcrs.len() {
        let mut pcrs = r.pcrs.clone();
        pcrs[i].sha256[0] ^= 1;
        check(pcrs);
        let mut pcrs = r.pcrs.clone();
        pcrs.remove(i);
        check(pcrs);
    }
    let mut pcrs = r.pcrs.clone();
    pcrs.swap(0, 1);
    check(pcrs);
    let mut pcrs = r.pcrs.clone();
    pcrs.push(PcrValue {
        index: 13,
        sha256: [0; 32],
    });
    check(pcrs);
    check(Vec::new());
}

#[test]
fn a_required_pcr_outside_the_quote_is_refused() {
    let r = load("a");
    let mut policy = r.policy();
    policy.required_pcrs = vec![7, 11, 14];
    assert_eq!(
        verify(&r.pending(), &r.evidence(), &r.node_key, &policy),
        Err(AttestError::RequiredPcrMissing { index: 14 })
    );
}

#[test]
fn another_tpms_quote_is_refused() {
    let (a, b) = (load("a"), load("b"));
    // TPM B's quote and PCRs, checked against TPM A's AK.
    let evidence = Evidence {
        quote: b.quote.clone(),
        signature: b.signature.clone(),
        pcrs: b.pcrs.clone(),
        activated_secret: SECRET.to_vec(),
    };
    assert_eq!(
        verify(&a.pending(), &evidence, &a.node_key, &a.policy()),
        Err(AttestError::BadQuoteSignature)
    );
}

#[test]
fn an_ek_certificate_for_another_ek_is_refused() {
    let (a, b) = (load("a"), load("b"));
    let node = NodeTpm {
        ek_certificate: b.node.ek_certificate.clone(),
        ..a.node.clone()
    };
    let pending = challenge(&node, a.nonce, SECRET, [3; 32]).unwrap().0;
    let mut policy = a.policy();
    policy.ek_roots.extend(b.roots.clone());
    assert_eq!(
        verify(&pending, &a.evidence(), &a.node_key, &policy),
        Err(AttestError::EkCertificateKeyMismatch)
    );
}

#[test]
fn an_untrusted_ek_certificate_is_refused() {
    let (a, b) = (load("a"), load("b"));
    let untrusted = |roots: Vec<Vec<u8>>| {
        let policy = Policy {
            ek_roots: roots,
            ..a.policy()
        };
        let result = verify(&a.pending(), &a.evidence(), &a.node_key, &policy);
        assert!(
            matches!(result, Err(AttestError::EkCertificateUntrusted { .. })),
            "{result:?}"
        );
    };
    untrusted(Vec::new());
    untrusted(b.roots.clone());
    // The root alone lacks the intermediate that issued the EK certificate.
    untrusted(vec![a.roots[0].clone()]);
    // The intermediate alone is not self-signed: no anchor.
    untrusted(vec![a.roots[1].clone()]);
    // The EK certificate is not a trust anchor for itself.
    untrusted(vec![a.node.ek_certificate.clone()]);
    // Garbage in the policy is reported, not ignored.
    untrusted(vec![vec![0x30, 0x00]]);
    // Both CAs: A's chain is found among them.
    let mut both = b.roots.clone();
    both.extend(a.roots.clone());
    let policy = Policy {
        ek_roots: both,
        ..a.policy()
    };
    assert!(verify(&a.pending(), &a.evidence(), &a.node_key, &policy).is_ok());
}

#[test]
fn an_ek_certificate_outside_its_validity_is_refused() {
    let r = load("a");
    for now in [1_700_000_000, 253_402_300_800] {
        let policy = Policy {
            now_unix_s: now,
            ..r.policy()
        };
        let result = verify(&r.pending(), &r.evidence(), &r.node_key, &policy);
        assert!(
            matches!(result, Err(AttestError::EkCertificateNotValidNow { now_unix_s, .. }) if now_unix_s == now),
            "{result:?}"
        );
    }
}

#[test]
fn an_unaccepted_release_is_refused() {
    let r = load("a");
    let mut policy = r.policy();
    policy
        .accepted
        .retain(|release| release.name != "release 1");
    assert_eq!(
        verify(&r.pending(), &r.evidence(), &r.node_key, &policy),
        Err(AttestError::UnacceptedMeasurements {
            pcr11_hex: hex::encode(r.release_pcr11())
        })
    );
}

#[test]
fn a_wrong_activated_secret_is_refused() {
    let r = load("a");
    for secret in [
        vec![],
        vec![0x5e; 31],
        vec![0x5f; 32],
        vec![0x5e; 33],
        vec![0; 10_000],
    ] {
        let evidence = Evidence {
            activated_secret: secret,
            ..r.evidence()
        };
        assert_eq!(
            verify(&r.pending(), &evidence, &r.node_key, &r.policy()),
            Err(AttestError::CredentialNotActivated)
        );
    }
}

#[test]
fn keys_in_the_wrong_role_are_refused() {
    let r = load("a");
    let swapped = NodeTpm {
        ek_public: r.node.ak_public.clone(),
        ak_public: r.node.ek_public.clone(),
        ..r.node.clone()
    };
    assert!(matches!(
        challenge(&swapped, r.nonce, SECRET, [3; 32]),
        Err(AttestError::BadEkPublic { .. })
    ));
    let ek_as_ak = NodeTpm {
        ak_public: r.node.ek_public.clone(),
        ..r.node.clone()
    };
    assert!(matches!(
        challenge(&ek_as_ak, r.nonce, SECRET, [3; 32]),
        Err(AttestError::BadAkPublic { .. })
    ));
    // An AK without `restricted` could sign a forged TPMS_ATTEST.
    let mut unrestricted = r.node.ak_public.clone();
    unrestricted[2 + 4 + 1] &= !0x01; // TPMA_OBJECT bit 16, big-endian
    let node = NodeTpm {
        ak_public: unrestricted,
        ..r.node.clone()
    };
    assert!(matches!(
        challenge(&node, r.nonce, SECRET, [3; 32]),
        Err(AttestError::BadAkPublic { .. })
    ));
}

#[test]
fn truncated_inputs_are_errors_at_every_length() {
    let r = load("a");
    for n in 0..r.node.ek_public.len() {
        let node = NodeTpm {
            ek_public: r.node.ek_public[..n].to_vec(),
            ..r.node.clone()
        };
        assert!(
            challenge(&node, r.nonce, SECRET, [3; 32]).is_err(),
            "EK public, {n} bytes"
        );
    }
    for n in 0..r.node.ak_public.len() {
        let node = NodeTpm {
            ak_public: r.node.ak_public[..n].to_vec(),
            ..r.node.clone()
        };
        assert!(
            challenge(&node, r.nonce, SECRET, [3; 32]).is_err(),
            "AK public, {n} bytes"
        );
    }
    let (pending, policy) = (r.pending(), r.policy());
    for n in 0..r.quote.len() {
        let evidence = Evidence {
            quote: r.quote[..n].to_vec(),
            ..r.evidence()
        };
        assert!(
            verify(&pending, &evidence, &r.node_key, &policy).is_err(),
            "quote, {n} bytes"
        );
        assert!(parse_quote(&r.quote[..n]).is_err());
    }
    for n in 0..r.signature.len() {
        let evidence = Evidence {
            signature: r.signature[..n].to_vec(),
            ..r.evidence()
        };
        assert!(
            verify(&pending, &evidence, &r.node_key, &policy).is_err(),
            "signature, {n} bytes"
        );
        assert!(parse_signature(&r.signature[..n]).is_err());
    }
    for n in 0..r.node.ek_certificate.len() {
        let node = NodeTpm {
            ek_certificate: r.node.ek_certificate[..n].to_vec(),
            ..r.node.clone()
        };
        let pending = challenge(&node, r.nonce, SECRET, [3; 32]).unwrap().0;
        assert!(
            matches!(
                verify(&pending, &r.evidence(), &r.node_key, &policy),
                Err(AttestError::BadEkCertificate { .. })
            ),
            "EK certificate, {n} bytes"
        );
    }
    assert!(parse_public(&r.node.ek_public, "EK").is_ok());
    let pem = String::from_utf8(file("a", "root.pem")).unwrap();
    // Up to the END line's last dash (a missing final newline is fine).
    for n in 0..pem.trim_end().len() {
        assert!(pem_certificates(&pem[..n]).is_err(), "PEM, {n} bytes");
    }
}

#[test]
fn pem_bundles_are_read_in_order() {
    let root = String::from_utf8(file("a", "root.pem")).unwrap();
    let issuer = String::from_utf8(file("a", "issuer.pem")).unwrap();
    let bundle = format!("comment\n{root}\nBag Attributes: x\n{issuer}");
    let certs = pem_certificates(&bundle).unwrap();
    assert_eq!(certs, load("a").roots);
    assert!(matches!(
        pem_certificates(""),
        Err(AttestError::BadPem { .. })
    ));
    let broken = root.replace("MII", "M!I");
    assert!(matches!(
        pem_certificates(&broken),
        Err(AttestError::BadPem { .. })
    ));
}

#[test]
fn the_challenge_is_deterministic_in_its_inputs_and_keeps_the_secret_out_of_debug() {
    let r = load("a");
    let (p1, c1) = challenge(&r.node, r.nonce, SECRET, [3; 32]).unwrap();
    let (_, c2) = challenge(&r.node, r.nonce, SECRET, [3; 32]).unwrap();
    let (_, c3) = challenge(&r.node, r.nonce, SECRET, [4; 32]).unwrap();
    assert_eq!(c1, c2);
    assert_ne!(c1.encrypted_secret, c3.encrypted_secret);
    assert_eq!(c1.id_object.len(), 2 + 2 + 32 + 34);
    assert_eq!(c1.encrypted_secret.len(), 2 + 256);
    assert_eq!(p1.ak_name(), r.ak_name.as_slice());
    let debug = format!("{p1:?}");
    assert!(!debug.contains(&hex::encode(SECRET)));
    assert!(debug.contains("redacted"));
}
