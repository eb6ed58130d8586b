#![no_main]
//! Arbitrary bytes as what the registry returns: every return tuple,
//! revert data, events (the first 32-byte words as topics), dynamic
//! values at every head word, and RLP. None may panic, whatever the
//! offsets and lengths say.

use libfuzzer_sys::fuzz_target;
use lockstep_chain::abi::{
    Decoder, DisputeRecord, NodeRecord, ReceiptVerdict, RegistryEvent, RegistryRevert,
};
use lockstep_chain::tx::Rlp;

fuzz_target!(|data: &[u8]| {
    let _ = NodeRecord::decode(data);
    let _ = ReceiptVerdict::decode(data);
    let _ = DisputeRecord::decode(data);
    let _ = RegistryRevert::decode(data).to_string();
    let decoder = Decoder::new(data);
    for index in 0..16 {
        let _ = decoder.bytes(index);
        let _ = decoder.string(index);
    }
    let topic_count = usize::from(data.first().copied().unwrap_or(0) % 5);
    let rest = data.get(1..).unwrap_or(&[]);
    let topics: Vec<[u8; 32]> = rest
        .chunks_exact(32)
        .take(topic_count)
        .map(|chunk| chunk.try_into().unwrap())
        .collect();
    let _ = RegistryEvent::decode(&topics, rest.get(topics.len() * 32..).unwrap_or(&[]));
    let _ = Rlp::decode(data);
});
