#![no_main]
//! Arbitrary bytes as a node's metrics exposition, as the fleet reads it:
//! parsing may refuse but never panic, and whatever it accepts is merged
//! under a node label and reads back as the same families.

use libfuzzer_sys::fuzz_target;
use lockstep_metrics::{encode, parse, Merged};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(families) = parse(text) else {
        return;
    };
    // NaN never equals itself: compare the text, which is canonical.
    let again = encode(&families);
    assert_eq!(encode(&parse(&again).expect("encoder output parses")), again);
    let mut merged = Merged::new();
    if merged.add_node("n", families).is_ok() {
        let _ = parse(&merged.encode());
    }
});
