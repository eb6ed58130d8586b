#![no_main]
//! Arbitrary bytes as every structure a node sends: TPM2B_PUBLIC (alone and
//! as the EK and AK of a challenge), TPMS_ATTEST, TPMT_SIGNATURE, and an EK
//! certificate checked against a trust list, and as a PEM bundle. None may
//! panic; each is Ok or a typed error.

use libfuzzer_sys::fuzz_target;
use lockstep_attest::{
    challenge, check_ek_certificate, parse_public, parse_quote, parse_signature, pem_certificates,
    verify, Evidence, NodeTpm, Policy,
};

fuzz_target!(|data: &[u8]| {
    let _ = parse_public(data, "fuzz");
    let _ = parse_quote(data);
    let _ = parse_signature(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = pem_certificates(text);
    }
    // Split the input in two at its first byte, for the EK and AK publics.
    let (first, rest) = data.split_first().map_or((0, data), |(b, r)| (*b, r));
    let cut = usize::from(first).min(rest.len());
    let (ek, ak) = rest.split_at(cut);
    let node = NodeTpm {
        ek_public: ek.to_vec(),
        ek_certificate: data.to_vec(),
        ak_public: ak.to_vec(),
    };
    // The same bytes as a certificate and as the trust list's only entry,
    // then the EK part as the certificate under the AK part as its root.
    let _ = check_ek_certificate(data, &[data.to_vec()], 1_900_000_000);
    let _ = check_ek_certificate(ek, &[ak.to_vec()], 1_900_000_000);
    // With the split publics as keys, the same bytes as quote and signature.
    if let Ok((pending, _)) = challenge(&node, [1; 32], [2; 32], [3; 32]) {
        let evidence = Evidence {
            quote: data.to_vec(),
            signature: data.to_vec(),
            pcrs: Vec::new(),
            activated_secret: vec![2; 32],
        };
        let policy = Policy::new(vec![data.to_vec()], Vec::new(), 0);
        let _ = verify(&pending, &evidence, &[0; 32], &policy);
    }
});
