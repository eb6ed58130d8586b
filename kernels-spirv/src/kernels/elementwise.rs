//! CPU reference of elementwise.comp: one rounding per operation, NaN
//! results canonical.

use super::{canon, is_nan};

pub fn add(x: &[f32], y: &[f32]) -> Vec<f32> {
    zip(x, y, |a, b| a + b)
}

pub fn sub(x: &[f32], y: &[f32]) -> Vec<f32> {
    zip(x, y, |a, b| a - b)
}

pub fn mul(x: &[f32], y: &[f32]) -> Vec<f32> {
    zip(x, y, |a, b| a * b)
}

/// `x * alpha`.
pub fn scale(x: &[f32], alpha: f32) -> Vec<f32> {
    x.iter().map(|&a| canon(a * alpha)).collect()
}

/// NaN stays NaN; otherwise `x > 0 ? x : +0.0` (so `-0.0` becomes `+0.0`).
pub fn relu(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&a| canon(relu_one(a))).collect()
}

/// Gradient of relu: `dy` where the forward input `x > 0`, `+0.0` where it is
/// not, NaN where the forward input was NaN.
pub fn relu_backward(dy: &[f32], x: &[f32]) -> Vec<f32> {
    zip(dy, x, |g, a| {
        if is_nan(a) {
            a
        } else if a > 0.0 {
            g
        } else {
            0.0
        }
    })
}

fn relu_one(a: f32) -> f32 {
    // NaN compares false, so test it first: it stays NaN (made canonical by
    // the caller) instead of becoming +0.0.
    if is_nan(a) || a > 0.0 {
        a
    } else {
        0.0
    }
}

fn zip(x: &[f32], y: &[f32], f: impl Fn(f32, f32) -> f32) -> Vec<f32> {
    assert_eq!(x.len(), y.len(), "element-wise operands differ in length");
    x.iter().zip(y).map(|(&a, &b)| canon(f(a, b))).collect()
}
