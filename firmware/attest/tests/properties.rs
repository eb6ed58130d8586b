//! Random bytes into every parser, and random damage to a recorded
//! attestation: always Ok or a typed error, never a panic.

use lockstep_attest::{
    challenge, check_ek_certificate, parse_public, parse_quote, parse_signature, pem_certificates,
    verify, AttestError, Evidence, NodeTpm, PcrValue, Policy,
};
use proptest::prelude::*;
use std::path::Path;

fn file(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/a")
            .join(name),
    )
    .unwrap()
}

fn recorded() -> (NodeTpm, Evidence, [u8; 32], [u8; 32]) {
    let values = file("pcrs.bin");
    let pcrs = [0u8, 1, 2, 3, 4, 5, 6, 7, 11, 12]
        .iter()
        .zip(values.chunks_exact(32))
        .map(|(index, v)| PcrValue {
            index: *index,
            sha256: v.try_into().unwrap(),
        })
        .collect();
    (
        NodeTpm {
            ek_public: file("ek.pub"),
            ek_certificate: file("ek.crt.der"),
            ak_public: file("ak.pub"),
        },
        Evidence {
            quote: file("quote.msg"),
            signature: file("quote.sig"),
            pcrs,
            activated_secret: vec![9; 32],
        },
        file("nonce.bin").try_into().unwrap(),
        file("node_key.bin").try_into().unwrap(),
    )
}

/// Overwrites up to three bytes of `bytes` at positions drawn from `edits`.
fn damage(bytes: &mut [u8], edits: &[(usize, u8)]) {
    let len = bytes.len();
    for (at, value) in edits {
        if let Some(b) = bytes.get_mut(at % len.max(1)) {
            *b = *value;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1200)) {
        let _ = parse_public(&bytes, "random");
        let _ = parse_quote(&bytes);
        let _ = parse_signature(&bytes);
        let _ = check_ek_certificate(&bytes, std::slice::from_ref(&bytes), 1_900_000_000);
        let _ = pem_certificates(&String::from_utf8_lossy(&bytes));
        let text = format!("-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----", String::from_utf8_lossy(&bytes));
        let _ = pem_certificates(&text);
    }

    #[test]
    fn challenge_never_panics(ek in proptest::collection::vec(any::<u8>(), 0..400),
                              ak in proptest::collection::vec(any::<u8>(), 0..400)) {
        let node = NodeTpm { ek_public: ek, ek_certificate: Vec::new(), ak_public: ak };
        let _ = challenge(&node, [0; 32], [0; 32], [0; 32]);
    }

    #[test]
    fn damaged_publics_are_errors_or_other_keys(
        which in 0..2u8,
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
    ) {
        let (mut node, ..) = recorded();
        let target = if which == 0 { &mut node.ek_public } else { &mut node.ak_public };
        damage(target, &edits);
        let _ = challenge(&node, [0; 32], [9; 32], [0; 32]);
    }

    #[test]
    fn damaged_evidence_is_refused(
        which in 0..4u8,
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
    ) {
        let (node, mut evidence, nonce, node_key) = recorded();
        let original = evidence.clone();
        let (pending, _) = challenge(&node, nonce, [9; 32], [0; 32]).unwrap();
        let mut certificate = node.ek_certificate.clone();
        match which {
            0 => damage(&mut evidence.quote, &edits),
            1 => damage(&mut evidence.signature, &edits),
            2 => damage(&mut evidence.pcrs[edits[0].0 % 10].sha256, &edits),
            _ => damage(&mut certificate, &edits),
        }
        let pending = if which == 3 {
            challenge(&NodeTpm { ek_certificate: certificate.clone(), ..node }, nonce, [9; 32], [0; 32]).unwrap().0
        } else {
            pending
        };
        let result = verify(&pending, &evidence, &node_key, &Policy::new(Vec::new(), Vec::new(), 1_900_000_000));
        // No roots are trusted, so even undamaged evidence stops at the chain;
        // damaged evidence must stop there or earlier.
        prop_assert!(result.is_err());
        if evidence != original {
            prop_assert!(!matches!(result, Err(AttestError::EkCertificateUntrusted { .. })), "{:?}", result);
        }
    }
}
