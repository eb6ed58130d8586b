//! CPU reference of elementwise.comp: one rounding per operation, NaN
//! results canonical.

use super::{canon, is_nan, math};

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

/// `x * alpha + beta`: the product rounded, then the sum.
pub fn affine(x: &[f32], alpha: f32, beta: f32) -> Vec<f32> {
    x.iter().map(|&a| canon(a * alpha + beta)).collect()
}

/// `alpha * x + beta * y`: both products rounded, then the sum.
pub fn axpby(x: &[f32], y: &[f32], alpha: f32, beta: f32) -> Vec<f32> {
    zip(x, y, |a, b| alpha * a + beta * b)
}

/// `w - lr * g`.
pub fn sgd_update(w: &[f32], g: &[f32], lr: f32) -> Vec<f32> {
    zip(w, g, |a, b| a - lr * b)
}

/// `dy * (1 - y * y)` with `y` the forward output of tanh.
pub fn tanh_backward(dy: &[f32], y: &[f32]) -> Vec<f32> {
    zip(dy, y, |g, t| g * (1.0 - t * t))
}

/// Correctly rounded `x / y` (software division, math.rs).
pub fn div(x: &[f32], y: &[f32]) -> Vec<f32> {
    zip(x, y, math::div)
}

/// Correctly rounded `x / alpha`.
pub fn div_scalar(x: &[f32], alpha: f32) -> Vec<f32> {
    unary(x, |a| math::div(a, alpha))
}

pub fn exp(x: &[f32]) -> Vec<f32> {
    unary(x, math::exp)
}

pub fn log(x: &[f32]) -> Vec<f32> {
    unary(x, math::log)
}

pub fn tanh(x: &[f32]) -> Vec<f32> {
    unary(x, math::tanh)
}

pub fn sigmoid(x: &[f32]) -> Vec<f32> {
    unary(x, math::sigmoid)
}

pub fn gelu(x: &[f32]) -> Vec<f32> {
    unary(x, math::gelu)
}

/// `c ≠ ±0 ? x : y`, element by element; the condition is tested on its
/// bits, so NaN and subnormal conditions pick `x`.
pub fn select(c: &[f32], x: &[f32], y: &[f32]) -> Vec<f32> {
    c.iter()
        .zip(x.iter().zip(y))
        .map(|(&c, (&x, &y))| canon(if c.to_bits() & 0x7FFF_FFFF != 0 { x } else { y }))
        .collect()
}

pub fn erf(x: &[f32]) -> Vec<f32> {
    unary(x, math::erf)
}

pub fn sqrt(x: &[f32]) -> Vec<f32> {
    unary(x, math::sqrt)
}

/// `dy * gelu'(x)` with `x` the forward input.
pub fn gelu_backward(dy: &[f32], x: &[f32]) -> Vec<f32> {
    zip(dy, x, |g, a| g * math::gelu_grad(a))
}

/// Mirrors adam.comp: `w - lr * ((m / c1) / (sqrt(v / c2) + eps))`.
pub fn adam_update(
    w: &[f32],
    m: &[f32],
    v: &[f32],
    c1: f32,
    c2: f32,
    lr: f32,
    eps: f32,
) -> Vec<f32> {
    assert!(
        w.len() == m.len() && w.len() == v.len(),
        "adam operands differ in length"
    );
    w.iter()
        .zip(m)
        .zip(v)
        .map(|((&wi, &mi), &vi)| {
            let mhat = math::div(mi, c1);
            let vhat = math::div(vi, c2);
            let den = math::sqrt(vhat) + eps;
            let q = math::div(mhat, den);
            canon(wi - lr * q)
        })
        .collect()
}

fn unary(x: &[f32], f: impl Fn(f32) -> f32) -> Vec<f32> {
    x.iter().map(|&a| canon(f(a))).collect()
}
