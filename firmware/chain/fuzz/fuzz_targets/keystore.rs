#![no_main]
//! Arbitrary bytes as a V3 keystore: opened with a password. It may not
//! panic, and a hostile KDF cost is refused before any work (the fuzzer's
//! time limit catches one that is not).

use libfuzzer_sys::fuzz_target;
use lockstep_chain::keystore;

fuzz_target!(|data: &[u8]| {
    let _ = keystore::decrypt(data, b"fuzz");
});
