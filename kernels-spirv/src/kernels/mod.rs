//! The CPU reference: one plain-Rust twin per GLSL kernel in this directory,
//! with exactly the kernel's operation order. It is the executable spec and
//! the oracle of every bit-equality test.
//!
//! Rules that make Rust's `f32` follow the float model: `+`, `-`, `*` on
//! `f32` compile to single IEEE operations with round-to-nearest-even and
//! gradual underflow (Rust never contracts `a * b + c` into a fused
//! multiply-add and never reassociates), and nothing here calls `mul_add`,
//! `/`, `sqrt` or libm.

pub mod elementwise;
pub mod layout;
pub mod math;
pub mod matmul;
pub mod probe;
pub mod random;
pub mod reduce;
pub mod rows;
pub mod sha256;

/// The only NaN a kernel stores.
pub const CANONICAL_NAN_BITS: u32 = 0x7FC0_0000;

/// Mirrors `canon()` in float_model.glsl.
#[inline]
pub fn canon(x: f32) -> f32 {
    if is_nan(x) {
        f32::from_bits(CANONICAL_NAN_BITS)
    } else {
        x
    }
}

/// Mirrors `is_nan()` in float_model.glsl: a test on the bits.
#[inline]
pub fn is_nan(x: f32) -> bool {
    (x.to_bits() & 0x7FFF_FFFF) > 0x7F80_0000
}
