//! Any bytes through the ONNX decoder and the lowering: an error or a
//! program, never a panic. Seed it with the test models
//! (`firmware/cli/tests/onnx/models.py OUT`, then the `*.onnx` files).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let _ = lockstep_onnx::import(bytes);
});
