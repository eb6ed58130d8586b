#![no_main]

use libfuzzer_sys::fuzz_target;
use lockstep_tensor::npy;

fuzz_target!(|data: &[u8]| {
    // Whatever the input, decoding must return, not panic; and anything it
    // accepts must survive a round trip bit for bit.
    if let Ok(t) = npy::decode(data) {
        let again = npy::decode(&npy::encode(&t)).expect("re-decoding our own encoding");
        assert!(t.bit_eq(&again));
    }
});
