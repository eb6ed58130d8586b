#![no_main]

use libfuzzer_sys::fuzz_target;
use lockstep_program::{validate, Program, ValidateOptions};

fuzz_target!(|data: &[u8]| {
    // Whatever the bytes, both decoders and validation must return, not
    // panic; anything accepted must survive a round trip through both
    // encodings unchanged.
    for decoded in [Program::from_postcard(data), Program::from_json(data)] {
        if let Ok(p) = decoded {
            let wire = p.to_postcard();
            assert_eq!(Program::from_postcard(&wire).as_ref(), Ok(&p));
            let text = p.to_json_pretty();
            assert_eq!(Program::from_json(text.as_bytes()).as_ref(), Ok(&p));
            let _ = validate(&p, &ValidateOptions::default());
        }
    }
});
