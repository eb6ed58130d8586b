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

/// Comparisons on bits (elementwise.comp): NaN compares false, -0 equals
/// +0, subnormals order as numbers whatever a device flushes.
fn cmp_key(x: f32) -> Option<i32> {
    let b = x.to_bits();
    let mag = (b & 0x7FFF_FFFF) as i32;
    if mag > 0x7F80_0000 {
        return None;
    }
    Some(if b >> 31 != 0 { -mag } else { mag })
}

fn compare(x: &[f32], y: &[f32], f: impl Fn(i32, i32) -> bool) -> Vec<f32> {
    assert_eq!(x.len(), y.len(), "element-wise operands differ in length");
    x.iter()
        .zip(y)
        .map(|(&a, &b)| match (cmp_key(a), cmp_key(b)) {
            (Some(a), Some(b)) if f(a, b) => 1.0,
            _ => 0.0,
        })
        .collect()
}

/// 1.0 where `x > y`, else 0.0.
pub fn greater(x: &[f32], y: &[f32]) -> Vec<f32> {
    compare(x, y, |a, b| a > b)
}

/// 1.0 where `x < y`, else 0.0.
pub fn less(x: &[f32], y: &[f32]) -> Vec<f32> {
    compare(x, y, |a, b| a < b)
}

/// 1.0 where `x == y` (±0 equal, NaN never), else 0.0.
pub fn equal(x: &[f32], y: &[f32]) -> Vec<f32> {
    compare(x, y, |a, b| a == b)
}

#[cfg(test)]
mod comparison_tests {
    use super::*;

    #[test]
    fn comparisons_agree_with_ieee_on_every_kind_of_value() {
        let v = [
            0.0,
            -0.0,
            f32::from_bits(1),
            -f32::from_bits(1),
            1.0,
            -1.0,
            f32::MAX,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::from_bits(0xFFC0_0001),
        ];
        for &a in &v {
            for &b in &v {
                let one = |t: bool| if t { 1.0 } else { 0.0 };
                assert_eq!(greater(&[a], &[b])[0], one(a > b), "{a} > {b}");
                assert_eq!(less(&[a], &[b])[0], one(a < b), "{a} < {b}");
                assert_eq!(equal(&[a], &[b])[0], one(a == b), "{a} == {b}");
            }
        }
    }
}
