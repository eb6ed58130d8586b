#![no_main]
//! Arbitrary bytes as a submitted reference (postcard) and as a fetch
//! request, through both ends' checks: the receipt, permission and proof
//! parsers may refuse, never panic.

use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use lockstep_protocol::{check_fetch, check_reference, OutputRequest, Receipt, TensorReference};

fuzz_target!(|data: &[u8]| {
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let consumer = lockstep_identity_node();
    if let Ok(r) = postcard::from_bytes::<TensorReference>(data) {
        let _ = check_reference(&r, &consumer, now);
    }
    if let Ok(request) = postcard::from_bytes::<OutputRequest>(data) {
        if let Ok(receipt) = serde_json::from_slice::<Receipt>(&request.permission.statement) {
            let _ = check_fetch(&request, &receipt, &[7; 32], now);
        }
    }
});

/// A fixed, valid node id (the consumer the checks are made for).
fn lockstep_identity_node() -> lockstep_identity::NodeId {
    lockstep_identity::NodeId::parse("RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3")
        .expect("a valid minisign public key")
}
