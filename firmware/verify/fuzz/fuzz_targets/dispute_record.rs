#![no_main]
//! Arbitrary bytes as a dispute record (parsed, then every check run) and
//! as a leaf proof fed to a bisection: neither may panic.

use libfuzzer_sys::fuzz_target;
use lockstep_verify::{Bisection, DisputeRecord, LeafProof};

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = DisputeRecord::parse(data) {
        let _ = record.check();
    }
    if data.len() >= 80 {
        let hash = |at: usize| -> [u8; 32] { data[at..at + 32].try_into().unwrap() };
        let size = u64::from(data[64]) + 1;
        let index = u64::from(data[65]) % size;
        let path: Vec<[u8; 32]> = data[80..]
            .chunks_exact(32)
            .map(|c| c.try_into().unwrap())
            .collect();
        let proof = LeafProof {
            index,
            size,
            leaf: hash(0),
            path,
        };
        if let Ok(mut search) = Bisection::new(size, hash(0), hash(32)) {
            let _ = search.answer(proof.clone(), proof);
        }
    }
});
