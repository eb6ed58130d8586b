//! The deterministic math library (`reference::math`, twin of `math.glsl`):
//! division and square root bit-equal to the native IEEE operations, the
//! transcendental functions within their documented error bounds (against
//! an `f64` oracle), special values, Philox known-answer vectors, the
//! random-number transforms, and a float-model lint of `math.glsl` itself.
//!
//! The error bounds asserted here are the figures in docs/float-model.md
//! ("Math functions"); `exhaustive_*` (ignored, run in release) measures
//! them over all 2^32 inputs.

use lockstep_kernels::reference::math::{
    div, erf, exp, gelu, gelu_grad, log, normal_from_bits, philox4x32_10, sigmoid, sincos_2pi,
    sqrt, tanh, uniform_from_bits,
};

// Documented maximum errors, in ULPs of the exact result (see ulp_error),
// rounded up from the exhaustive measurements (docs/benchmarks.md).
const EXP_MAX_ULP: f64 = 1.0; // measured 0.910
const LOG_MAX_ULP: f64 = 1.0; // 0.888
const TANH_MAX_ULP: f64 = 1.5; // 1.427
const SIGMOID_MAX_ULP: f64 = 1.0; // 0.753 (0.522 where the result is normal)
const GELU_MAX_ULP: f64 = 1.0; // 0.754 (0.525 where the result is normal)
const GELU_GRAD_MAX_ABS: f64 = 2.5e-7; // 2.17e-7
const GELU_GRAD_MAX_ULP_NONNEG: f64 = 3.0; // x >= 0: 2.832
const SINCOS_MAX_ULP: f64 = 2.0; // 1.593
const ERF_MAX_ULP: f64 = 2.0; // the bound issue 19 asks for; measured below it (docs/float-model.md)

/// SplitMix64: a small, seedable generator, so every run tests the same
/// inputs and a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }
    /// Uniform in `0..n`.
    fn below(&mut self, n: u32) -> u32 {
        ((u64::from(self.u32()) * u64::from(n)) >> 32) as u32
    }
    /// A float with the given biased exponent, random significand and sign.
    fn with_exponent(&mut self, e: u32) -> f32 {
        f32::from_bits((self.u32() & 0x807F_FFFF) | (e << 23))
    }
    /// Uniform-ish float in `[lo, hi)` (through f64: test-side only).
    fn in_range(&mut self, lo: f64, hi: f64) -> f32 {
        let t = (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
        (lo + (hi - lo) * t) as f32
    }
}

/// Representative values of every class: ±0, the subnormal extremes, the
/// normal extremes, ±inf, NaNs of both signs, ±1 and their neighbours.
fn edge_values() -> Vec<f32> {
    let mut bits = vec![
        0x0000_0000u32,
        0x0000_0001,
        0x0000_0002,
        0x0000_0003,
        0x003F_FFFF,
        0x0040_0000,
        0x007F_FFFE,
        0x007F_FFFF,
        0x0080_0000,
        0x0080_0001,
        0x00FF_FFFF,
        0x3F7F_FFFF,
        0x3F80_0000,
        0x3F80_0001,
        0x3FFF_FFFF,
        0x4000_0000,
        0x4040_0000,
        0x3EAA_AAAB,
        0x7EFF_FFFF,
        0x7F00_0000,
        0x7F7F_FFFE,
        0x7F7F_FFFF,
        0x7F80_0000,
        0x7FC0_0000,
        0x7F80_0001,
        0x7FFF_FFFF,
        0x3400_0000,
        0x3380_0000,
        0x4B80_0000,
        0x4C00_0000,
        0x0C00_0000,
        0x7200_0000,
    ];
    let negatives: Vec<u32> = bits.iter().map(|b| b | 0x8000_0000).collect();
    bits.extend(negatives);
    bits.into_iter().map(f32::from_bits).collect()
}

/// Bit-equal, or both NaN (NaN results are canonicalised by the callers).
fn same(got: f32, want: f32) -> bool {
    if want.is_nan() {
        got.is_nan()
    } else {
        got.to_bits() == want.to_bits()
    }
}

/// `|got - want|` in units of the last place of `want` at binary32
/// precision (2^-149 below the normal range). 0 when `got` is `want`
/// rounded to binary32 (covers infinities and overflow); infinite when one
/// is NaN and the other is not, or `got` is infinite and `want` does not
/// round to it.
fn ulp_error(got: f32, want: f64) -> f64 {
    if want.is_nan() || got.is_nan() {
        return if want.is_nan() && got.is_nan() {
            0.0
        } else {
            f64::INFINITY
        };
    }
    let rounded = want as f32;
    if got == rounded && (got != 0.0 || got.is_sign_negative() == rounded.is_sign_negative()) {
        return 0.0;
    }
    if got.is_infinite() {
        return f64::INFINITY;
    }
    let a = want.abs();
    let e = if a < f64::from(f32::MIN_POSITIVE) {
        -149
    } else {
        ((a.to_bits() >> 52) as i32 - 1023) - 23
    };
    (f64::from(got) - want).abs() / 2f64.powi(e)
}

/// Whether error `e` beats the maximum so far (a NaN error always does).
fn worse(e: f64, max: f64) -> bool {
    e.is_nan() || e > max
}

/// Max ULP error of `f` against `oracle` over `inputs`, with the worst input.
fn worst(inputs: &[f32], f: impl Fn(f32) -> f32, oracle: impl Fn(f64) -> f64) -> (f64, f32) {
    let mut max = (0.0f64, 0.0f32);
    for &x in inputs {
        let err = ulp_error(f(x), oracle(f64::from(x)));
        if worse(err, max.0) {
            max = (err, x);
        }
    }
    max
}

fn assert_within(
    name: &str,
    inputs: &[f32],
    bound: f64,
    f: impl Fn(f32) -> f32,
    oracle: impl Fn(f64) -> f64,
) {
    let (err, x) = worst(inputs, &f, &oracle);
    println!(
        "{name}: max {err:.4} ULP over {} inputs (at {x:e} = {:#010x})",
        inputs.len(),
        x.to_bits()
    );
    assert!(
        err <= bound,
        "{name}({x:e} = {:#010x}) = {:e}, exact {:e}: {err} ULP > {bound}",
        x.to_bits(),
        f(x),
        oracle(f64::from(x))
    );
}

// Oracles (test-side only: f64 is not allowed in the reference).
fn exp64(x: f64) -> f64 {
    x.exp()
}
fn log64(x: f64) -> f64 {
    x.ln()
}
fn tanh64(x: f64) -> f64 {
    x.tanh()
}
fn sigmoid64(x: f64) -> f64 {
    if x > 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}
const K: f64 = 0.044715;
fn gelu_v64(x: f64) -> f64 {
    2.0 * (2.0 / std::f64::consts::PI).sqrt() * (x + K * x * x * x)
}
fn gelu64(x: f64) -> f64 {
    if x == f64::NEG_INFINITY {
        return -0.0;
    }
    x * sigmoid64(gelu_v64(x))
}
fn gelu_grad64(x: f64) -> f64 {
    if x.is_infinite() {
        return if x > 0.0 { 1.0 } else { 0.0 };
    }
    let v = gelu_v64(x);
    let dv = 2.0 * (2.0 / std::f64::consts::PI).sqrt() * (1.0 + 3.0 * K * x * x);
    let s = sigmoid64(v);
    s + x * s * sigmoid64(-v) * dv
}

// ---------------------------------------------------------------------------
// div and sqrt: bit-equal to the native operations.
// ---------------------------------------------------------------------------

fn check_div(a: f32, b: f32) {
    let got = div(a, b);
    let want = a / b;
    assert!(
        same(got, want),
        "div({a:e} = {:#010x}, {b:e} = {:#010x}) = {:#010x}, native {:#010x}",
        a.to_bits(),
        b.to_bits(),
        got.to_bits(),
        want.to_bits()
    );
}

fn check_sqrt(x: f32) {
    let got = sqrt(x);
    let want = x.sqrt();
    assert!(
        same(got, want),
        "sqrt({x:e} = {:#010x}) = {:#010x}, native {:#010x}",
        x.to_bits(),
        got.to_bits(),
        want.to_bits()
    );
}

#[test]
fn div_edge_classes() {
    let edges = edge_values();
    for &a in &edges {
        for &b in &edges {
            check_div(a, b);
        }
    }
    // Signed zeros and infinities, exactly.
    assert_eq!(div(0.0, -1.0).to_bits(), 0x8000_0000);
    assert_eq!(div(-0.0, -1.0).to_bits(), 0);
    assert_eq!(div(1.0, -0.0).to_bits(), 0xFF80_0000);
    assert_eq!(div(-1.0, f32::INFINITY).to_bits(), 0x8000_0000);
    assert!(div(0.0, 0.0).is_nan() && div(f32::INFINITY, -f32::INFINITY).is_nan());
    assert_eq!(div(f32::NAN, 1.0).to_bits(), 0x7FC0_0000);
}

#[test]
fn div_is_bit_equal_to_native_on_random_inputs() {
    const PER_GENERATOR: usize = 4_000_000;
    let mut rng = Rng(0x5EED_D1F1);
    // 1. Uniform bit patterns: every class and exponent.
    for _ in 0..PER_GENERATOR {
        check_div(f32::from_bits(rng.u32()), f32::from_bits(rng.u32()));
    }
    // 2. Subnormal operands (either or both), against operands of any size.
    for _ in 0..PER_GENERATOR {
        let sub = f32::from_bits(rng.u32() & 0x807F_FFFF >> rng.below(23));
        let e_other = rng.below(256).min(254);
        let other = rng.with_exponent(e_other);
        let sub2 = f32::from_bits(rng.u32() & 0x807F_FFFF);
        match rng.below(3) {
            0 => check_div(sub, other),
            1 => check_div(other, sub),
            _ => check_div(sub, sub2),
        }
    }
    // 3. Quotients near overflow and in and around the subnormal range:
    //    exponent differences chosen to land there.
    for _ in 0..PER_GENERATOR {
        let eb = 1 + rng.below(254);
        let target = if rng.below(2) == 0 {
            // Result exponent 250..=256 (the top binades and beyond).
            250 + rng.below(7) as i32
        } else {
            // Result exponent -26..=2: subnormal, zero, smallest normals.
            -26 + rng.below(29) as i32
        };
        let ea = target + eb as i32 - 127;
        if (1..=254).contains(&ea) {
            check_div(rng.with_exponent(ea as u32), rng.with_exponent(eb));
        }
    }
    // 4. Exact and halfway quotients: dividing by powers of two and small
    //    odd multiples of them, where subnormal results fall exactly
    //    halfway between two neighbours (ties to even) or are exact.
    for _ in 0..PER_GENERATOR {
        let odd = [1.0f32, 3.0, 5.0, 7.0, 9.0, 15.0][rng.below(6) as usize];
        let scale = f32::from_bits((1 + rng.below(254)) << 23);
        let b = odd * scale;
        let a = if rng.below(2) == 0 {
            f32::from_bits(rng.u32() & 0x80FF_FFFF) // tiny: subnormal or smallest normals
        } else {
            // An exact multiple of b, possibly nudged by one ULP.
            let m = f32::from_bits(rng.u32() & 0x807F_FFFF | (rng.below(60) << 23));
            let p = m * b;
            f32::from_bits(p.to_bits().wrapping_add(rng.below(3)).wrapping_sub(1))
        };
        check_div(a, b);
        check_div(b, a);
    }
    // 5. Quotients within a few ULPs of a representable value (the hardest
    //    rounding decisions): a = b * q rounded, nudged by up to 2 ULPs.
    for _ in 0..PER_GENERATOR {
        let (eb, eq) = (64 + rng.below(128), 64 + rng.below(128));
        let b = rng.with_exponent(eb);
        let q = rng.with_exponent(eq);
        let a = (b * q).to_bits();
        let a = f32::from_bits(a.wrapping_add(rng.below(5)).wrapping_sub(2));
        check_div(a, b);
    }
}

#[test]
fn sqrt_edge_classes() {
    for x in edge_values() {
        check_sqrt(x);
    }
    assert_eq!(sqrt(-0.0).to_bits(), 0x8000_0000);
    assert_eq!(sqrt(0.0).to_bits(), 0);
    assert_eq!(sqrt(f32::INFINITY), f32::INFINITY);
    assert!(sqrt(-1.0e-45).is_nan() && sqrt(f32::NEG_INFINITY).is_nan());
    assert_eq!(sqrt(4.0), 2.0);
}

#[test]
fn sqrt_is_bit_equal_to_native_on_random_inputs() {
    let mut rng = Rng(0x5EED_5027);
    // Uniform bit patterns (half of them negative or NaN).
    for _ in 0..4_000_000 {
        check_sqrt(f32::from_bits(rng.u32()));
    }
    // Positive finite values of every exponent, subnormals included.
    for _ in 0..3_000_000 {
        check_sqrt(f32::from_bits(rng.u32() % 0x7F80_0000));
    }
    // Every subnormal shape: significands with 1..=23 bits.
    for _ in 0..1_000_000 {
        check_sqrt(f32::from_bits(rng.u32() & 0x007F_FFFF >> rng.below(23)));
    }
    // Exact squares and their neighbours: y * y rounded, nudged by ±2 ULPs,
    // where the root is closest to a rounding boundary.
    for _ in 0..2_000_000 {
        let y = f32::from_bits(rng.u32() % 0x7F80_0000);
        let sq = (y * y).to_bits();
        if sq < 0x7F80_0000 {
            check_sqrt(f32::from_bits(
                sq.saturating_add(rng.below(5)).saturating_sub(2),
            ));
        }
    }
}

// ---------------------------------------------------------------------------
// exp, log, tanh, sigmoid, gelu: error bounds against f64.
// ---------------------------------------------------------------------------

/// Random bit patterns plus dense uniform samples in the given ranges.
fn samples(seed: u64, random_bits: usize, ranges: &[(f64, f64, usize)]) -> Vec<f32> {
    let mut rng = Rng(seed);
    let mut v: Vec<f32> = (0..random_bits)
        .map(|_| f32::from_bits(rng.u32()))
        .collect();
    for &(lo, hi, n) in ranges {
        v.extend((0..n).map(|_| rng.in_range(lo, hi)));
    }
    v.extend(edge_values());
    v
}

#[test]
fn exp_error_is_bounded() {
    let mut xs = samples(
        0xE1,
        2_000_000,
        &[
            (-104.0, 89.0, 1_000_000),
            (-1.5, 1.5, 500_000),
            (-0.001, 0.001, 100_000),
        ],
    );
    // Around the overflow and underflow thresholds, bit by bit.
    for centre in [88.72168f32, 88.72284, -87.33655, -103.27893, -103.97208] {
        let c = centre.to_bits();
        xs.extend((c - 2000..c + 2000).map(f32::from_bits));
    }
    assert_within("exp", &xs, EXP_MAX_ULP, exp, exp64);
}

#[test]
fn exp_special_values() {
    assert_eq!(exp(0.0), 1.0);
    assert_eq!(exp(-0.0), 1.0);
    assert_eq!(exp(f32::INFINITY), f32::INFINITY);
    assert_eq!(exp(f32::NEG_INFINITY).to_bits(), 0);
    assert!(exp(f32::NAN).is_nan() && exp(-f32::NAN).is_nan());
    assert_eq!(exp(f32::MAX), f32::INFINITY);
    assert_eq!(exp(f32::MIN).to_bits(), 0);
    // Around the thresholds the results are the correctly rounded ones:
    // the largest finite results, overflow, the smallest subnormals, zero.
    for x in [
        88.72168f32,
        88.7217,
        88.72283,
        88.72284,
        -87.33655,
        -103.278,
        -103.9,
        -103.972,
        -103.973,
        -104.0,
    ] {
        let want = (f64::from(x)).exp() as f32;
        assert_eq!(exp(x).to_bits(), want.to_bits(), "exp({x})");
    }
    assert_eq!(exp(88.72284), f32::INFINITY);
    assert_eq!(exp(-104.0).to_bits(), 0);
    assert_eq!(exp(1.0e-45), 1.0);
    assert_eq!(exp(1.0).to_bits(), std::f32::consts::E.to_bits());
}

#[test]
fn log_error_is_bounded() {
    let mut rng = Rng(0x109);
    let mut xs = samples(
        0x10,
        2_000_000,
        &[
            (0.0, 4.0, 500_000),
            (0.99, 1.01, 500_000),
            (1.0, 1.0e6, 200_000),
        ],
    );
    // Every binade around 1 densely, and subnormals.
    xs.extend((0..500_000).map(|_| f32::from_bits(0x3F7F_0000 + rng.below(0x0001_1000))));
    xs.extend((0..200_000).map(|_| f32::from_bits(rng.u32() & 0x007F_FFFF)));
    assert_within("log", &xs, LOG_MAX_ULP, log, log64);
}

#[test]
fn log_special_values() {
    assert_eq!(log(1.0).to_bits(), 0);
    assert_eq!(log(0.0), f32::NEG_INFINITY);
    assert_eq!(log(-0.0), f32::NEG_INFINITY);
    assert_eq!(log(f32::INFINITY), f32::INFINITY);
    assert!(log(-1.0).is_nan() && log(-1.0e-45).is_nan() && log(f32::NEG_INFINITY).is_nan());
    assert!(log(f32::NAN).is_nan() && log(-f32::NAN).is_nan());
    assert_eq!(log(2.0).to_bits(), std::f32::consts::LN_2.to_bits());
    assert_eq!(log(f32::from_bits(1)), -103.27893);
}

#[test]
fn tanh_error_is_bounded() {
    let xs = samples(
        0x7A,
        2_000_000,
        &[
            (-12.0, 12.0, 1_000_000),
            (-0.6, 0.6, 1_000_000),
            (0.54, 0.56, 100_000),
            (8.9, 10.1, 100_000),
        ],
    );
    assert_within("tanh", &xs, TANH_MAX_ULP, tanh, tanh64);
}

#[test]
fn tanh_special_values_and_symmetry() {
    assert_eq!(tanh(0.0).to_bits(), 0);
    assert_eq!(tanh(-0.0).to_bits(), 0x8000_0000);
    assert_eq!(tanh(f32::from_bits(0x8000_0001)).to_bits(), 0x8000_0001);
    assert_eq!(tanh(f32::INFINITY), 1.0);
    assert_eq!(tanh(f32::NEG_INFINITY), -1.0);
    assert_eq!(tanh(9.9), 1.0);
    assert!(tanh(f32::NAN).is_nan());
    let mut rng = Rng(0x0DD);
    for _ in 0..100_000 {
        let x = rng.in_range(-12.0, 12.0);
        assert_eq!(tanh(-x).to_bits(), tanh(x).to_bits() ^ 0x8000_0000);
    }
}

#[test]
fn sigmoid_error_is_bounded() {
    let xs = samples(
        0x51,
        2_000_000,
        &[
            (-110.0, 20.0, 1_000_000),
            (-10.0, 10.0, 1_000_000),
            (-104.0, -86.0, 500_000),
        ],
    );
    assert_within("sigmoid", &xs, SIGMOID_MAX_ULP, sigmoid, sigmoid64);
}

#[test]
fn sigmoid_special_values() {
    assert_eq!(sigmoid(0.0), 0.5);
    assert_eq!(sigmoid(-0.0), 0.5);
    assert_eq!(sigmoid(f32::INFINITY), 1.0);
    assert_eq!(sigmoid(f32::NEG_INFINITY).to_bits(), 0);
    assert_eq!(sigmoid(20.0), 1.0);
    assert_eq!(sigmoid(-104.0).to_bits(), 0);
    assert!(sigmoid(-100.0) > 0.0); // subnormal results are kept
    assert!(sigmoid(f32::NAN).is_nan());
}

#[test]
fn gelu_error_is_bounded() {
    let xs = samples(
        0x6E,
        2_000_000,
        &[
            (-20.0, 20.0, 1_000_000),
            (-5.0, 5.0, 1_000_000),
            (-12.0, -9.0, 500_000),
        ],
    );
    assert_within("gelu", &xs, GELU_MAX_ULP, gelu, gelu64);
}

#[test]
fn gelu_grad_error_is_bounded() {
    let xs = samples(
        0x6D,
        2_000_000,
        &[(-20.0, 20.0, 1_000_000), (-5.0, 5.0, 1_000_000)],
    );
    let mut max = (0.0f64, 0.0f32);
    for &x in &xs {
        let got = gelu_grad(x);
        let want = gelu_grad64(f64::from(x));
        let err = if want.is_nan() {
            if got.is_nan() {
                0.0
            } else {
                f64::INFINITY
            }
        } else {
            (f64::from(got) - want).abs()
        };
        if worse(err, max.0) {
            max = (err, x);
        }
    }
    println!("gelu_grad: max absolute error {:e} (at {:e})", max.0, max.1);
    assert!(
        max.0 <= GELU_GRAD_MAX_ABS,
        "gelu_grad({:e}): absolute error {:e}",
        max.1,
        max.0
    );
    // For x >= 0 (no cancellation there), also in ULPs.
    let nonneg: Vec<f32> = xs.iter().copied().filter(|&x| x >= 0.0).collect();
    assert_within(
        "gelu_grad (x >= 0)",
        &nonneg,
        GELU_GRAD_MAX_ULP_NONNEG,
        gelu_grad,
        gelu_grad64,
    );
}

/// erf in f64 (libm's, a port of FreeBSD's, within 1 ULP of f64).
fn erf64(x: f64) -> f64 {
    libm::erf(x)
}

#[test]
fn erf_error_is_bounded() {
    let mut xs = samples(
        0xEF,
        2_000_000,
        &[
            (-5.0, 5.0, 2_000_000),
            (-1.0, 1.0, 1_000_000),
            (-0.001, 0.001, 100_000),
        ],
    );
    // Both sides of each range boundary (0.875 and 4), and where erf
    // starts to round to 1, bit by bit.
    for centre in [0.875f32, 4.0, 3.9165] {
        let c = centre.to_bits();
        xs.extend((c - 20_000..c + 20_000).map(f32::from_bits));
        xs.extend((c - 20_000..c + 20_000).map(|b| f32::from_bits(b | 0x8000_0000)));
    }
    assert_within("erf", &xs, ERF_MAX_ULP, erf, erf64);
}

#[test]
fn erf_special_values() {
    assert_eq!(erf(0.0).to_bits(), 0);
    assert_eq!(erf(-0.0).to_bits(), 0x8000_0000);
    assert_eq!(erf(f32::INFINITY), 1.0);
    assert_eq!(erf(f32::NEG_INFINITY), -1.0);
    assert_eq!(erf(4.0), 1.0);
    assert_eq!(erf(-1.0e30), -1.0);
    assert_eq!(erf(f32::NAN).to_bits(), 0x7fc0_0000);
    // Odd, bit for bit.
    for x in [1.0e-30f32, 0.3, 0.875, 1.7, 3.0, 3.95] {
        assert_eq!(erf(-x).to_bits(), erf(x).to_bits() | 0x8000_0000, "{x}");
    }
    // Subnormals are kept, not flushed: erf(x) ~ 1.128 x.
    let tiny = f32::from_bits(0x0000_1000);
    assert!(erf(tiny) > tiny && erf(tiny) < tiny * 1.2);
    // Monotone across the range boundaries.
    for centre in [0.875f32, 4.0] {
        let mut prev = erf(f32::from_bits(centre.to_bits() - 1000));
        for b in centre.to_bits() - 999..centre.to_bits() + 1000 {
            let y = erf(f32::from_bits(b));
            assert!(y >= prev, "erf is not monotone at {:#010x}", b);
            prev = y;
        }
    }
}

#[test]
fn gelu_special_values() {
    assert_eq!(gelu(0.0).to_bits(), 0);
    assert_eq!(gelu(-0.0).to_bits(), 0x8000_0000);
    assert_eq!(gelu(f32::INFINITY), f32::INFINITY);
    assert_eq!(gelu(f32::NEG_INFINITY).to_bits(), 0x8000_0000);
    assert_eq!(gelu(-15.9).to_bits(), 0x8000_0000);
    assert_eq!(gelu(1.0e30), 1.0e30);
    assert_eq!(gelu(16.0), 16.0);
    // Tiny inputs give x * 0.5, rounded: -2^-149 gives -0.
    assert_eq!(gelu(-1.0e-10), -0.5e-10);
    assert_eq!(gelu(f32::from_bits(0x8000_0001)).to_bits(), 0x8000_0000);
    assert_eq!(gelu(f32::from_bits(0x0000_0003)).to_bits(), 0x0000_0002);
    assert!(gelu(f32::NAN).is_nan());
    assert_eq!(gelu_grad(0.0), 0.5);
    assert_eq!(gelu_grad(f32::INFINITY), 1.0);
    assert_eq!(gelu_grad(f32::NEG_INFINITY).to_bits(), 0);
    assert_eq!(gelu_grad(15.9), 1.0);
    assert_eq!(gelu_grad(-15.9).to_bits(), 0);
    assert!(gelu_grad(f32::NAN).is_nan());
    // The guards return what the formula gives next to them.
    assert_eq!(gelu((-16.0f32).next_up()).to_bits(), 0x8000_0000);
    assert_eq!(gelu(16.0f32.next_down()), 16.0f32.next_down());
    let tiny = f32::from_bits(0x3080_0000); // 2^-30, the first input computed in full
    assert_eq!(gelu(tiny.next_down()), tiny.next_down() * 0.5);
    assert_eq!(gelu_grad(16.0f32.next_down()), 1.0);
    assert_eq!(gelu_grad((-16.0f32).next_up()).to_bits(), 0);
}

// ---------------------------------------------------------------------------
// sincos_2pi, Philox, uniform and normal.
// ---------------------------------------------------------------------------

/// sin and cos of 2πu in f64, with the same exact reduction.
fn sincos64(u: f32) -> (f64, f64) {
    let u = f64::from(u);
    let q = (4.0 * u).round();
    let r = u - q / 4.0;
    let (s, c) = (2.0 * std::f64::consts::PI * r).sin_cos();
    match q as i32 & 3 {
        0 => (s, c),
        1 => (c, -s),
        2 => (-s, -c),
        _ => (-c, s),
    }
}

#[test]
fn sincos_2pi_error_is_bounded() {
    let mut rng = Rng(0x2B1);
    let mut us: Vec<f32> = (0..2_000_000)
        .map(|_| uniform_from_bits(rng.u32()))
        .collect();
    us.extend((0..1_000_000).map(|_| f32::from_bits(rng.below(0x3F80_0000))));
    us.extend((0..=64).map(|i| i as f32 / 64.0).filter(|&u| u < 1.0));
    us.push(1.0f32.next_down());
    let (mut max_ulp, mut max_abs) = ((0.0f64, 0.0f32), (0.0f64, 0.0f32));
    for &u in &us {
        let (s, c) = sincos_2pi(u);
        let (s64, c64) = sincos64(u);
        for (got, want) in [(s, s64), (c, c64)] {
            let e = ulp_error(got, want);
            if e > max_ulp.0 {
                max_ulp = (e, u);
            }
            let a = (f64::from(got) - want).abs();
            if a > max_abs.0 {
                max_abs = (a, u);
            }
        }
    }
    println!(
        "sincos_2pi: max {:.4} ULP (u = {:e}), max absolute error {:e} (u = {:e})",
        max_ulp.0, max_ulp.1, max_abs.0, max_abs.1
    );
    assert!(
        max_ulp.0 <= SINCOS_MAX_ULP,
        "sincos_2pi({:e}): {} ULP",
        max_ulp.1,
        max_ulp.0
    );
    assert_eq!(sincos_2pi(0.0), (0.0, 1.0));
    assert_eq!(sincos_2pi(0.25), (1.0, -0.0));
    assert_eq!(sincos_2pi(0.5).1, -1.0);
    assert_eq!(sincos_2pi(0.75).0, -1.0);
}

#[test]
fn philox_known_answers() {
    // Random123's kat_vectors for philox4x32, 10 rounds.
    assert_eq!(
        philox4x32_10([0; 4], [0; 2]),
        [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8]
    );
    assert_eq!(
        philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
        [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd]
    );
    assert_eq!(
        philox4x32_10(
            [0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344],
            [0xa409_3822, 0x299f_31d0]
        ),
        [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1]
    );
}

#[test]
fn uniform_is_in_the_unit_interval() {
    assert_eq!(uniform_from_bits(0), 0.0);
    assert_eq!(uniform_from_bits(0xFF), 0.0);
    assert_eq!(uniform_from_bits(u32::MAX), 1.0f32.next_down());
    assert_eq!(uniform_from_bits(0x8000_0000), 0.5);
    let mut sum = 0.0f64;
    const N: u32 = 1_000_000;
    for i in 0..N {
        let r = philox4x32_10([i, 0, 0, 0], [7, 0]);
        for x in r {
            let u = uniform_from_bits(x);
            assert!((0.0..1.0).contains(&u));
            sum += f64::from(u);
        }
    }
    let mean = sum / f64::from(4 * N);
    assert!((mean - 0.5).abs() < 1.0e-3, "mean {mean}");
}

#[test]
fn normal_has_unit_mean_and_variance() {
    const N: u32 = 1_000_000;
    let (mut s1, mut s2, mut s4) = (0.0f64, 0.0f64, 0.0f64);
    let mut extreme = 0.0f32;
    for i in 0..N / 2 {
        let r = philox4x32_10([i, 0, 1, 0], [0x1234_5678, 0x9abc_def0]);
        for z in [normal_from_bits(r[0], r[1]), normal_from_bits(r[2], r[3])] {
            assert!(z.is_finite());
            let z64 = f64::from(z);
            s1 += z64;
            s2 += z64 * z64;
            s4 += z64 * z64 * z64 * z64;
            extreme = extreme.max(z.abs());
        }
    }
    let n = f64::from(N);
    let (mean, var, kurt) = (s1 / n, s2 / n - (s1 / n).powi(2), s4 / n);
    println!("normal: mean {mean:.5}, variance {var:.5}, E[z^4] {kurt:.4}, max |z| {extreme}");
    // Standard errors at n = 10^6: mean 0.001, variance 0.0014, E[z^4] 0.01.
    assert!(mean.abs() < 0.005, "mean {mean}");
    assert!((var - 1.0).abs() < 0.007, "variance {var}");
    assert!((kurt - 3.0).abs() < 0.1, "fourth moment {kurt}");
    // The extremes of the transform: u1 = 2^-24 (|z| = 5.768) and u1 = 1 (0).
    let top = normal_from_bits(0, 0);
    assert!((f64::from(top) - (-2.0 * (2f64.powi(-24)).ln()).sqrt()).abs() < 1.0e-5);
    assert_eq!(normal_from_bits(u32::MAX, 0).abs(), 0.0);
}

// ---------------------------------------------------------------------------
// The GLSL side: math.glsl passes the float-model lint.
// ---------------------------------------------------------------------------

/// Calls every function in math.glsl, so each is compiled into the module.
const PROBE: &str = r#"#version 450
#extension GL_GOOGLE_include_directive : require
#include "float_model.glsl"
#include "math.glsl"
#include "math.glsl"
layout(local_size_x = 64, local_size_y = 1, local_size_z = 1) in;
layout(std430, set = 0, binding = 0) readonly buffer In_ { uint xin[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Out_ { uint outv[]; };
void main() {
    uint i = gl_GlobalInvocationID.x;
    float a = uintBitsToFloat(xin[2u * i]);
    float b = uintBitsToFloat(xin[2u * i + 1u]);
    float s, c;
    ls_sincos_2pi(a, s, c);
    uvec4 p = philox4x32_10(uvec4(i, 1u, 2u, 3u), uvec2(xin[0], xin[1]));
    uint o = 16u * i;
    outv[o + 0u] = floatBitsToUint(canon(ls_div(a, b)));
    outv[o + 1u] = floatBitsToUint(canon(ls_sqrt(a)));
    outv[o + 2u] = floatBitsToUint(canon(ls_exp(a)));
    outv[o + 3u] = floatBitsToUint(canon(ls_log(a)));
    outv[o + 4u] = floatBitsToUint(canon(ls_tanh(a)));
    outv[o + 5u] = floatBitsToUint(canon(ls_sigmoid(a)));
    outv[o + 6u] = floatBitsToUint(canon(ls_gelu(a)));
    outv[o + 7u] = floatBitsToUint(canon(ls_gelu_grad(a)));
    outv[o + 8u] = floatBitsToUint(s);
    outv[o + 9u] = floatBitsToUint(c);
    outv[o + 10u] = p.x;
    outv[o + 11u] = p.y;
    outv[o + 12u] = p.z;
    outv[o + 13u] = p.w;
    outv[o + 14u] = floatBitsToUint(ls_uniform_from_bits(xin[2u * i]));
    outv[o + 15u] = floatBitsToUint(ls_normal_from_bits(xin[2u * i], xin[2u * i + 1u]));
}
"#;

#[test]
fn math_glsl_passes_the_float_model_lint() {
    use lockstep_kernels::manifest::Variant;
    use lockstep_kernels::spirv;
    use std::process::Command;

    // Needs glslangValidator and spirv-val (make test installs them).
    let kernels = lockstep_kernels::rebuild::committed_dir();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("probe.comp");
    let spv = dir.path().join("probe.spv");
    std::fs::write(&src, PROBE).unwrap();
    let out = Command::new("glslangValidator")
        .args(["-V", "--target-env", "vulkan1.2", "-S", "comp"])
        .arg(format!("-I{}", kernels.display()))
        .arg("-o")
        .arg(&spv)
        .arg(&src)
        .output()
        .expect("glslangValidator not found: install Debian's glslang-tools");
    assert!(
        out.status.success(),
        "glslangValidator failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let val = Command::new("spirv-val")
        .args(["--target-env", "vulkan1.2"])
        .arg(&spv)
        .output()
        .expect("spirv-val not found: install Debian's spirv-tools");
    assert!(
        val.status.success(),
        "spirv-val rejects the probe: {}",
        String::from_utf8_lossy(&val.stderr)
    );
    let words = spirv::words(&std::fs::read(&spv).unwrap()).unwrap();
    spirv::check(&words, Variant::Base).unwrap();
}

// ---------------------------------------------------------------------------
// Exhaustive measurements (ignored; run in release):
//   cargo test --release -p lockstep-kernels --test math -- --ignored --nocapture exhaustive
// ---------------------------------------------------------------------------

/// Runs `f` over the bit patterns `lo..hi` on every core; returns the
/// largest value of `f` with its input, and the seconds it took.
fn sweep(lo: u64, hi: u64, f: impl Fn(u32) -> f64 + Sync) -> ((f64, u32), f64) {
    let start = std::time::Instant::now();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let chunk = (hi - lo).div_ceil(threads);
    let worst = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let f = &f;
                scope.spawn(move || {
                    let mut max = (0.0f64, 0u32);
                    let start = lo + t * chunk;
                    let end = (start + chunk).min(hi);
                    for b in start..end {
                        let e = f(b as u32);
                        if worse(e, max.0) {
                            max = (e, b as u32);
                        }
                    }
                    max
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .fold((0.0f64, 0u32), |a, b| if worse(b.0, a.0) { b } else { a })
    });
    (worst, start.elapsed().as_secs_f64())
}

const ALL: (u64, u64) = (0, 1 << 32);

/// The ULP error of `f` at the float with bits `b`.
fn ulp_at(f: fn(f32) -> f32, oracle: fn(f64) -> f64) -> impl Fn(u32) -> f64 + Sync {
    move |b| {
        let x = f32::from_bits(b);
        ulp_error(f(x), oracle(f64::from(x)))
    }
}

fn report(name: &str, what: &str, ((err, at), secs): ((f64, u32), f64)) -> f64 {
    println!(
        "{name}: max {err:.4} {what} at {:e} ({at:#010x}), {secs:.1} s",
        f32::from_bits(at)
    );
    err
}

#[test]
#[ignore = "2^32 inputs per function: run in release, see the comment above"]
fn exhaustive_exp_log_ulp() {
    let e = report(
        "exp, all 2^32 inputs",
        "ULP",
        sweep(ALL.0, ALL.1, ulp_at(exp, exp64)),
    );
    let l = report(
        "log, all 2^32 inputs",
        "ULP",
        sweep(ALL.0, ALL.1, ulp_at(log, log64)),
    );
    assert!(e <= EXP_MAX_ULP && l <= LOG_MAX_ULP);
}

#[test]
#[ignore = "2^32 inputs: run in release, see the comment above"]
fn exhaustive_erf_ulp() {
    let e = report(
        "erf, all 2^32 inputs",
        "ULP",
        sweep(ALL.0, ALL.1, ulp_at(erf, erf64)),
    );
    assert!(e <= ERF_MAX_ULP);
}

#[test]
#[ignore = "2^32 inputs: run in release, see the comment above"]
fn exhaustive_sqrt_bits() {
    let ((bad, at), secs) = sweep(ALL.0, ALL.1, |b| {
        let x = f32::from_bits(b);
        if same(sqrt(x), x.sqrt()) {
            0.0
        } else {
            1.0
        }
    });
    println!(
        "sqrt, all 2^32 inputs: bit-equal to native: {}, {secs:.1} s",
        bad == 0.0
    );
    assert_eq!(bad, 0.0, "sqrt({at:#010x}) differs from native");
}

#[test]
#[ignore = "2^32 inputs per function: run in release, see the comment above"]
fn exhaustive_activation_ulp() {
    let t = report(
        "tanh, all 2^32 inputs",
        "ULP",
        sweep(ALL.0, ALL.1, ulp_at(tanh, tanh64)),
    );
    let s = report(
        "sigmoid, all 2^32 inputs",
        "ULP",
        sweep(ALL.0, ALL.1, ulp_at(sigmoid, sigmoid64)),
    );
    // gelu: x >= 0 (and +NaNs), then x < 0 binade by binade (the figures
    // in docs/float-model.md).
    let gp = report(
        "gelu, x >= 0",
        "ULP",
        sweep(0, 1 << 31, ulp_at(gelu, gelu64)),
    );
    let mut gn = report(
        "gelu, -2^-6 < x < 0",
        "ULP",
        sweep(0x8000_0000, 0xBC80_0000, ulp_at(gelu, gelu64)),
    );
    for e in -6..=3 {
        let lo = 0x8000_0000u64 | (((e + 127) as u64) << 23);
        let name = format!("gelu, -2^{} <= x < -2^{e}", e + 1);
        let r = report(
            &name,
            "ULP",
            sweep(lo, lo + (1 << 23), ulp_at(gelu, gelu64)),
        );
        gn = gn.max(r);
    }
    let rest = report(
        "gelu, x <= -16 and -NaNs",
        "ULP",
        sweep(0xC180_0000, ALL.1, ulp_at(gelu, gelu64)),
    );
    let ((ga, _), _) = report_abs(
        "gelu_grad, all 2^32 inputs",
        sweep(ALL.0, ALL.1, |b| {
            let x = f32::from_bits(b);
            let (got, want) = (gelu_grad(x), gelu_grad64(f64::from(x)));
            if want.is_nan() || got.is_nan() {
                return if want.is_nan() && got.is_nan() {
                    0.0
                } else {
                    f64::INFINITY
                };
            }
            (f64::from(got) - want).abs()
        }),
    );
    let gg = report(
        "gelu_grad, x >= 0",
        "ULP",
        sweep(0, 1 << 31, ulp_at(gelu_grad, gelu_grad64)),
    );
    let sc = report(
        "sincos_2pi, all u in [0, 1)",
        "ULP",
        sweep(0, 0x3F80_0000, |b| {
            let u = f32::from_bits(b);
            let (s, c) = sincos_2pi(u);
            let (s64, c64) = sincos64(u);
            ulp_error(s, s64).max(ulp_error(c, c64))
        }),
    );
    assert!(t <= TANH_MAX_ULP && s <= SIGMOID_MAX_ULP && sc <= SINCOS_MAX_ULP);
    assert!(gp.max(gn).max(rest) <= GELU_MAX_ULP);
    assert!(ga <= GELU_GRAD_MAX_ABS && gg <= GELU_GRAD_MAX_ULP_NONNEG);
}

fn report_abs(name: &str, r: ((f64, u32), f64)) -> ((f64, u32), f64) {
    let ((err, at), secs) = r;
    println!(
        "{name}: max absolute error {err:e} at {:e} ({at:#010x}), {secs:.1} s",
        f32::from_bits(at)
    );
    r
}
