//! Deterministic math: the CPU twin of `math.glsl`, function for function and
//! operation for operation.
//!
//! Kernels may not use `/`, `sqrt`, `exp`, `log` or any other operation whose
//! result the Vulkan spec leaves to the device (docs/float-model.md, rule 3).
//! Everything here is therefore built from binary32 add, subtract and
//! multiply (each rounded once, to nearest even), comparisons, float <-> int
//! conversions of values that convert exactly or by truncation, bit casts,
//! and integer operations. Integer operations are exact, so the integer parts
//! (division, square root, scaling by powers of two) are the same on every
//! device by construction; the float parts give the same bits as the GLSL
//! because both sides perform the same IEEE operations in the same order.
//! Keep it that way: any change here is a change to `math.glsl` too, and to
//! the op definitions of every kernel that uses it.
//!
//! No `f64`, no `/` on floats, no `mul_add`, no `f32::sqrt`/`exp`/`ln`/`abs`,
//! no libm. Negation and absolute value are bit operations (`neg`,
//! `abs_bits`), never `0.0 - x`, which would turn -0 into +0.
//!
//! Accuracy (measured by `kernels-spirv/tests/math.rs`, documented in
//! docs/float-model.md, "Math functions"): `div` and `sqrt` are correctly
//! rounded; the others have the bounded errors listed there.

use super::CANONICAL_NAN_BITS;

const SIGN: u32 = 0x8000_0000;
const ABS: u32 = 0x7FFF_FFFF;
const INF: u32 = 0x7F80_0000;
const FRAC: u32 = 0x007F_FFFF;
const HIDDEN: u32 = 0x0080_0000;

#[inline]
fn nan() -> f32 {
    f32::from_bits(CANONICAL_NAN_BITS)
}

/// `-x` as a sign flip (exact for every input, including ±0 and NaN).
#[inline]
fn neg(x: f32) -> f32 {
    f32::from_bits(x.to_bits() ^ SIGN)
}

/// The bits of `|x|`.
#[inline]
fn abs_bits(x: f32) -> u32 {
    x.to_bits() & ABS
}

// ---------------------------------------------------------------------------
// Correctly rounded division and square root, in 32-bit integer arithmetic.
// ---------------------------------------------------------------------------

/// How far a nonzero significand `m < 2^24` must be shifted left to put its
/// leading one at bit 23. A binary search rather than a count-leading-zeros
/// instruction: GLSL's findMSB is a GLSL.std.450 function, which the
/// float-model lint refuses.
#[inline]
fn norm_shift(m: u32) -> u32 {
    let mut m = m;
    let mut s = 0u32;
    if m < 1 << 8 {
        m <<= 16;
        s += 16;
    }
    if m < 1 << 16 {
        m <<= 8;
        s += 8;
    }
    if m < 1 << 20 {
        m <<= 4;
        s += 4;
    }
    if m < 1 << 22 {
        m <<= 2;
        s += 2;
    }
    if m < 1 << 23 {
        s += 1;
    }
    s
}

/// Splits the bits of a finite, nonzero `|x|` into a significand in
/// `[2^23, 2^24)` and a biased exponent, so that `|x| = m * 2^(e - 150)`.
/// Subnormals are normalised here (their exponent becomes `<= 0`), so the
/// callers need no special case for them.
#[inline]
fn unpack(abs: u32) -> (u32, i32) {
    let e = (abs >> 23) as i32;
    let m = abs & FRAC;
    if e == 0 {
        let s = norm_shift(m);
        (m << s, 1 - s as i32)
    } else {
        (m | HIDDEN, e)
    }
}

/// Rounds `sig * 2^(e - 152)` to binary32, to nearest even, and applies
/// `sign`. `sig` is in `[2^25, 2^26)`: the 24 significand bits plus two more,
/// and `sticky` says whether anything nonzero lies below those. `e` is the
/// biased exponent the result has if it is normal.
///
/// The result is rounded exactly once, at its final precision: for a
/// subnormal result the significand is shifted right to the subnormal
/// position first (the bits shifted out join the sticky information), then
/// rounded. Rounding twice (first to 24 bits, then to the subnormal
/// position) would be wrong in halfway cases.
#[inline]
fn round_pack(sign: u32, e: i32, sig: u32, sticky: bool) -> f32 {
    if e >= 255 {
        return f32::from_bits(sign | INF);
    }
    // Normal: drop the 2 extra bits. Subnormal: drop 3 - e bits, so that the
    // result counts units of 2^-149; beyond 27 every bit (sig < 2^26) is
    // below the rounding position and the result is zero either way.
    let shift = if e >= 1 { 2 } else { (3 - e).min(27) as u32 };
    let m = sig >> shift;
    let half = 1u32 << (shift - 1);
    let below = (sig & (half - 1)) != 0 || sticky;
    let round_up = (sig & half) != 0 && (below || (m & 1) != 0);
    let exponent = if e >= 1 { ((e - 1) as u32) << 23 } else { 0 };
    // `m` still holds the hidden bit, so adding it to (e - 1) << 23 gives
    // exponent e; a carry out of the significand (m + 1 == 2^24) bumps the
    // exponent, up to infinity at e = 254, or turns the largest subnormal
    // into the smallest normal, both as IEEE requires.
    f32::from_bits(sign | (exponent + m + round_up as u32))
}

/// `a / b`, correctly rounded (round to nearest even), for every input:
/// bit-equal to IEEE-754 binary32 division except that a NaN result is the
/// canonical NaN.
pub fn div(a: f32, b: f32) -> f32 {
    let ua = a.to_bits();
    let ub = b.to_bits();
    let sign = (ua ^ ub) & SIGN;
    let aa = ua & ABS;
    let ab = ub & ABS;
    if aa > INF || ab > INF {
        return nan();
    }
    if aa == INF {
        return if ab == INF {
            nan()
        } else {
            f32::from_bits(sign | INF)
        };
    }
    if ab == INF {
        return f32::from_bits(sign);
    }
    if ab == 0 {
        return if aa == 0 {
            nan()
        } else {
            f32::from_bits(sign | INF)
        };
    }
    if aa == 0 {
        return f32::from_bits(sign);
    }
    let (ma, ea) = unpack(aa);
    let (mb, eb) = unpack(ab);
    // a / b = (ma / mb) * 2^(ea - eb). Doubling ma when ma < mb puts the
    // significand quotient in [1, 2), so it has exactly 26 bits below.
    let mut e = ea - eb + 127;
    let mut r = ma;
    if ma < mb {
        r = ma << 1;
        e -= 1;
    }
    // Restoring long division, one quotient bit per step: 1 integer bit and
    // 25 fraction bits (24 for the significand, 2 for rounding). r < 2 * mb
    // < 2^25 throughout, so nothing overflows 32 bits.
    let mut q = 0u32;
    for _ in 0..26 {
        q <<= 1;
        if r >= mb {
            r -= mb;
            q |= 1;
        }
        r <<= 1;
    }
    round_pack(sign, e, q, r != 0)
}

/// `sqrt(x)`, correctly rounded, for every input: bit-equal to IEEE-754
/// binary32 square root (sqrt(-0) = -0, negative -> NaN, +inf -> +inf)
/// except that a NaN result is the canonical NaN.
pub fn sqrt(x: f32) -> f32 {
    let u = x.to_bits();
    if u & ABS == 0 {
        return x;
    }
    if u & ABS > INF || u & SIGN != 0 {
        return nan();
    }
    if u == INF {
        return x;
    }
    let (m, e) = unpack(u);
    // x = m * 2^(e - 150). Make the power of two even, moving one or two
    // factors of 2 into the significand so it lies in [2^24, 2^26).
    let ex = e - 150;
    let (m2, ex2) = if ex & 1 != 0 {
        (m << 1, ex - 1)
    } else {
        (m << 2, ex - 2)
    };
    // Digit-by-digit square root of R = m2 * 2^26 (in [2^50, 2^52)), two
    // radicand bits per step: the 13 bit pairs of m2, then 13 pairs of
    // zeros. The root has 26 bits, in [2^25, 2^26); rem <= 2 * root < 2^27.
    let mut root = 0u32;
    let mut rem = 0u32;
    for i in 0..26u32 {
        let pair = if i < 13 { (m2 >> (24 - 2 * i)) & 3 } else { 0 };
        rem = (rem << 2) | pair;
        let trial = (root << 2) | 1;
        root <<= 1;
        if rem >= trial {
            rem -= trial;
            root |= 1;
        }
    }
    // sqrt(x) = root * 2^((ex2 - 26) / 2), with ex2 - 26 even.
    let e_out = 152 + ((ex2 - 26) >> 1);
    round_pack(0, e_out, root, rem != 0)
}

// ---------------------------------------------------------------------------
// exp and log: FreeBSD's e_expf.c and e_logf.c (Sun's fdlibm, converted to
// float by Ian Lance Taylor), with `/` replaced by `div` and the final
// scaling by 2^k done on the bits.
// ---------------------------------------------------------------------------

const LN2HI: f32 = f32::from_bits(0x3f31_7200); // 6.9314575195e-01
const LN2LO: f32 = f32::from_bits(0x35bf_be8e); // 1.4286067653e-06
const NEG_LN2LO: f32 = f32::from_bits(0xb5bf_be8e);
const INVLN2: f32 = f32::from_bits(0x3fb8_aa3b); // 1.4426950216e+00
                                                 // |x*(exp(x)+1)/(exp(x)-1) - p(x)| < 2^-27.74 on [-0.34568, 0.34568].
const EXP_P1: f32 = f32::from_bits(0x3e2a_aa8f); // 1.6666625440e-1 = 0xaaaa8f.0p-26
const EXP_P2: f32 = f32::from_bits(0xbb35_5215); // -2.7667332906e-3 = -0xb55215.0p-32
const O_THRESHOLD: f32 = f32::from_bits(0x42b1_7180); // 8.8721679688e+01
const U_THRESHOLD: f32 = f32::from_bits(0xc2cf_f1b5); // -1.0397208405e+02
const TWO_M100: f32 = f32::from_bits(0x0d80_0000);
const TWO_P127: f32 = f32::from_bits(0x7f00_0000);

/// `e^x`. Cody–Waite reduction `x = k ln2 + r`, `|r| <= ln2 / 2`, then
/// `e^r = 1 + 2r / (2 - R(r))` with a degree-4 rational correction, then a
/// scaling by `2^k` on the bits. Overflows to +inf above 88.72168 (the
/// largest finite result is at 88.72283), gives +0 below -103.97208 (half of
/// the smallest subnormal), subnormal results rounded once from `y`.
pub fn exp(x: f32) -> f32 {
    let negative = x.to_bits() & SIGN != 0;
    let hx = abs_bits(x);
    if hx >= 0x42b1_7218 {
        // |x| >= 88.7228..., or not finite.
        if hx > INF {
            return nan();
        }
        if hx == INF {
            return if negative { 0.0 } else { x };
        }
        if x > O_THRESHOLD {
            return f32::from_bits(INF);
        }
        if x < U_THRESHOLD {
            return 0.0;
        }
    }
    let mut xr = x;
    let mut hi = 0.0f32;
    let mut lo = 0.0f32;
    let mut k: i32 = 0;
    if hx > 0x3eb1_7218 {
        // |x| > ln2 / 2.
        if hx < 0x3f85_1592 {
            // |x| < 1.5 ln2: k = ±1 without a multiplication.
            if negative {
                hi = x + LN2HI;
                lo = NEG_LN2LO;
                k = -1;
            } else {
                hi = x - LN2HI;
                lo = LN2LO;
                k = 1;
            }
        } else {
            // k = round(x / ln2), half away from zero: adding ±0.5 and
            // truncating (float-to-int conversion truncates everywhere).
            let half = if negative { -0.5f32 } else { 0.5f32 };
            let kf = INVLN2 * x + half;
            k = kf as i32;
            let fk = k as f32;
            // LN2HI has 15 significant bits and |k| <= 150, so fk * LN2HI
            // is exact.
            hi = x - fk * LN2HI;
            lo = fk * LN2LO;
        }
        xr = hi - lo;
    } else if hx < 0x3900_0000 {
        // |x| < 2^-14: e^x rounds to 1 + x.
        return 1.0 + x;
    }
    let t = xr * xr;
    // 2^k, or 2^(k+100) when 2^k is not a normal number; the result is then
    // scaled by 2^-100 in a second, rounding multiplication.
    let twopk = if k >= -125 {
        f32::from_bits((0x3f80_0000 + (k << 23)) as u32)
    } else {
        f32::from_bits((0x3f80_0000 + ((k + 100) << 23)) as u32)
    };
    let c = xr - t * (EXP_P1 + t * EXP_P2);
    if k == 0 {
        return 1.0 - (div(xr * c, c - 2.0) - xr);
    }
    let y = 1.0 - ((lo - div(xr * c, 2.0 - c)) - hi);
    if k >= -125 {
        if k == 128 {
            // 2^128 is not a float: scale in two exact steps.
            return y * 2.0 * TWO_P127;
        }
        return y * twopk;
    }
    // y * 2^(k+100) is exact (a normal number); the multiplication by
    // 2^-100 rounds it once to the subnormal result.
    y * twopk * TWO_M100
}

const LN2_HI: f32 = f32::from_bits(0x3f31_7180); // 6.9313812256e-01
const LN2_LO: f32 = f32::from_bits(0x3717_f7d1); // 9.0580006145e-06
const TWO25: f32 = f32::from_bits(0x4c00_0000); // 2^25
const THIRD: f32 = f32::from_bits(0x3eaa_aaab); // (float)0.33333333333333333
                                                // |(log(1+s)-log(1-s))/s - Lg(s)| < 2^-34.24 on the reduced range.
const LG1: f32 = f32::from_bits(0x3f2a_aaaa); // 0xaaaaaa.0p-24
const LG2: f32 = f32::from_bits(0x3ecc_ce13); // 0xccce13.0p-25
const LG3: f32 = f32::from_bits(0x3e91_e9ee); // 0x91e9ee.0p-25
const LG4: f32 = f32::from_bits(0x3e78_9e26); // 0xf89e26.0p-26

/// `ln x`. `x = 2^k (1 + f)` with `1 + f` in `[sqrt(2)/2, sqrt(2))`, then
/// `ln(1 + f) = 2s + s R(s^2)` with `s = f / (2 + f)` (a short series when
/// `|f| < 2^-9`), plus `k ln2` in two parts. log(±0) = -inf, log(x < 0) =
/// NaN, log(+inf) = +inf, log(1) = +0; subnormal inputs are scaled by 2^25
/// first.
pub fn log(x: f32) -> f32 {
    let mut x = x;
    let mut ix = x.to_bits() as i32;
    let mut k: i32 = 0;
    if ix < 0x0080_0000 {
        // x < 2^-126, or x negative (sign bit set: ix < 0).
        if ix & 0x7fff_ffff == 0 {
            return f32::from_bits(SIGN | INF);
        }
        if ix < 0 {
            return nan();
        }
        k -= 25;
        x *= TWO25;
        ix = x.to_bits() as i32;
    }
    if ix >= 0x7f80_0000 {
        return if ix == 0x7f80_0000 { x } else { nan() };
    }
    k += (ix >> 23) - 127;
    ix &= 0x007f_ffff;
    // Whether the significand is above sqrt(2): if so, halve it (and add 1
    // to k) so that 1 + f lies in [sqrt(2)/2, sqrt(2)).
    let i = (ix + (0x95f64 << 3)) & 0x0080_0000;
    x = f32::from_bits((ix | (i ^ 0x3f80_0000)) as u32);
    k += i >> 23;
    let f = x - 1.0;
    if (0x007f_ffff & (0x8000 + ix)) < 0xc000 {
        // -2^-9 <= f < 2^-9.
        if f == 0.0 {
            if k == 0 {
                return 0.0;
            }
            let dk = k as f32;
            return dk * LN2_HI + dk * LN2_LO;
        }
        let r = f * f * (0.5 - THIRD * f);
        if k == 0 {
            return f - r;
        }
        let dk = k as f32;
        return dk * LN2_HI - ((r - dk * LN2_LO) - f);
    }
    let s = div(f, 2.0 + f);
    let dk = k as f32;
    let z = s * s;
    let mut i = ix - (0x6147a << 3);
    let w = z * z;
    let j = (0x6b851 << 3) - ix;
    let t1 = w * (LG2 + w * LG4);
    let t2 = z * (LG1 + w * LG3);
    i |= j;
    let r = t2 + t1;
    if i > 0 {
        let hfsq = 0.5 * f * f;
        if k == 0 {
            return f - (hfsq - s * (hfsq + r));
        }
        return dk * LN2_HI - ((hfsq - (s * (hfsq + r) + dk * LN2_LO)) - f);
    }
    if k == 0 {
        return f - s * (f - r);
    }
    dk * LN2_HI - ((s * (f - r) - dk * LN2_LO) - f)
}

// ---------------------------------------------------------------------------
// tanh, sigmoid, gelu.
// ---------------------------------------------------------------------------

// tanh(x) = x + x z P(z), z = x^2, on |x| < 0.55: a minimax fit of the
// relative error (2^-29.8 before rounding the coefficients), made for this
// library with mpmath (Lawson's iteration on 600 Chebyshev nodes).
const TANH_P0: f32 = f32::from_bits(0xbeaa_aaa5); // -0.33333316
const TANH_P1: f32 = f32::from_bits(0x3e08_8693); // 0.13332586
const TANH_P2: f32 = f32::from_bits(0xbd5c_943b); // -0.053852301
const TANH_P3: f32 = f32::from_bits(0x3cac_9e73); // 0.021071648
const TANH_P4: f32 = f32::from_bits(0xbbcd_97bf); // -0.0062741931

/// `tanh(x)`, odd by construction (computed on `|x|`, then the sign of `x`
/// is put back on the bits):
/// - `|x| < 2^-12`: `x` (the correctly rounded result; keeps ±0 and
///   subnormals),
/// - `|x| < 0.55`: `a + a (z P(z))` with `a = |x|`, `z = a a`,
/// - `|x| < 10`: `1 - 2 / (exp(a + a) + 1)`,
/// - otherwise 1 (tanh rounds to 1 from 9.0109 on).
pub fn tanh(x: f32) -> f32 {
    let ax = abs_bits(x);
    if ax > INF {
        return nan();
    }
    if ax < 0x3980_0000 {
        return x;
    }
    let a = f32::from_bits(ax);
    let t = if ax < 0x3f0c_cccd {
        let z = a * a;
        let p = TANH_P0 + z * (TANH_P1 + z * (TANH_P2 + z * (TANH_P3 + z * TANH_P4)));
        let zp = z * p;
        a + a * zp
    } else if ax < 0x4120_0000 {
        let e = exp(a + a);
        1.0 - div(2.0, e + 1.0)
    } else {
        1.0
    };
    f32::from_bits(t.to_bits() | (x.to_bits() & SIGN))
}

// Error-free transformations (add, subtract and multiply only, no FMA), for
// the double-float (hi, lo) arithmetic of sigmoid and gelu.

/// `(s, e)` with `s = a + b` rounded and `s + e = a + b` exactly (Knuth's
/// TwoSum), for any finite `a`, `b`.
#[inline]
fn two_sum(a: f32, b: f32) -> (f32, f32) {
    let s = a + b;
    let bb = s - a;
    let e = (a - (s - bb)) + (b - bb);
    (s, e)
}

/// TwoSum when the exponent of `a` is at least that of `b` (Dekker's
/// Fast2Sum): `s + e = a + b` exactly.
#[inline]
fn fast_two_sum(a: f32, b: f32) -> (f32, f32) {
    let s = a + b;
    let e = b - (s - a);
    (s, e)
}

const SPLIT: f32 = f32::from_bits(0x4580_0800); // 4097 = 2^12 + 1

/// Veltkamp's splitting: `a = h + l` exactly, each with at most 12
/// significant bits.
#[inline]
fn split(a: f32) -> (f32, f32) {
    let c = SPLIT * a;
    let h = c - (c - a);
    (h, a - h)
}

/// `(p, e)` with `p = a * b` rounded and `p + e = a * b` exactly (Dekker's
/// TwoProduct), when no product underflows or overflows.
#[inline]
fn two_prod(a: f32, b: f32) -> (f32, f32) {
    let p = a * b;
    let (ah, al) = split(a);
    let (bh, bl) = split(b);
    let e = (((ah * bh - p) + ah * bl) + al * bh) + al * bl;
    (p, e)
}

// e^r = 1 + r + r^2/2 + r^3 E(r) on |r| <= ln2 / 2, E the Taylor polynomial
// 1/3! + r/4! + ... + r^6/9! (truncation error below 2^-37), coefficients
// 1/n! rounded to binary32.
const EXPD_C3: f32 = f32::from_bits(0x3e2a_aaab); // 1/3!
const EXPD_C4: f32 = f32::from_bits(0x3d2a_aaab); // 1/4!
const EXPD_C5: f32 = f32::from_bits(0x3c08_8889); // 1/5!
const EXPD_C6: f32 = f32::from_bits(0x3ab6_0b61); // 1/6!
const EXPD_C7: f32 = f32::from_bits(0x3950_0d01); // 1/7!
const EXPD_C8: f32 = f32::from_bits(0x37d0_0d01); // 1/8!
const EXPD_C9: f32 = f32::from_bits(0x3638_ef1d); // 1/9!

/// `e^(xh + xl)` as `(yh + yl) 2^k`, with a relative error of about 2^-31,
/// for `-120 <= xh <= 0` and `|xl| <= 2^-16`. `yh` is in `[0.7, 1.42]`.
/// Reduction as in [`exp`] but carried in double-float:
/// `k = trunc(xh * INVLN2 - 0.5)`, `r = (xh - k LN2HI) + (xl - k LN2LO)`
/// (the first difference is exact), then `e^r = 1 + r + r^2/2 + r^3 E(r)`
/// with `1 + r + r^2/2` summed without rounding.
fn exp_parts(xh: f32, xl: f32) -> (f32, f32, i32) {
    let kf = INVLN2 * xh - 0.5;
    let k = kf as i32;
    let fk = k as f32;
    let hi = xh - fk * LN2HI;
    let w = xl - fk * LN2LO;
    let (rh, rl) = two_sum(hi, w);
    let (sh, sl) = two_prod(rh, rh);
    let h2 = 0.5 * sh;
    let h2l = 0.5 * sl;
    let p = EXPD_C3
        + rh * (EXPD_C4
            + rh * (EXPD_C5 + rh * (EXPD_C6 + rh * (EXPD_C7 + rh * (EXPD_C8 + rh * EXPD_C9)))));
    let c3 = (sh * rh) * p;
    let (ah, al) = fast_two_sum(1.0, rh);
    let (bh, bl) = fast_two_sum(ah, h2);
    let low = (((al + bl) + h2l) + c3) + rl * bh;
    let (yh, yl) = fast_two_sum(bh, low);
    (yh, yl, k)
}

/// `y * 2^k`, rounded once, for `-180 <= k <= 0`.
#[inline]
fn scale_pow2(y: f32, k: i32) -> f32 {
    if k >= -125 {
        y * f32::from_bits((0x3f80_0000 + (k << 23)) as u32)
    } else {
        // y * 2^(k+100) is exact; the multiplication by 2^-100 rounds.
        y * f32::from_bits((0x3f80_0000 + ((k + 100) << 23)) as u32) * TWO_M100
    }
}

/// `sigmoid(vh + vl)` as `(q + c) 2^k` (`|c|` far below `q`, relative error
/// about 2^-30), for finite `vh`, `vl` with `|vl| <= 2^-16` (or `vh`
/// below -120). With `n = -|v|` (a sign flip of both parts) and
/// `e = e^n = (yh + yl) 2^k` from [`exp_parts`]:
/// `d = 1 + e` in double-float (`e` dropped when k < -60), `inv = 1 / dh`,
/// numerator `(1, 0)` and k = 0 for v > 0, else `(yh, yl)` and k;
/// `q = num_h * inv`, residual
/// `r = (((num_h - ph) - pl) + num_l) - q * dl` with `(ph, pl)` the exact
/// product `q * dh`, and `c = r * inv`.
fn sigmoid_parts(vh: f32, vl: f32) -> (f32, f32, i32) {
    let positive = vh > 0.0;
    let (nh, nl) = if positive {
        (neg(vh), neg(vl))
    } else {
        (vh, vl)
    };
    if nh < -120.0 {
        // e^-|v| < 2^-173: sigmoid is 1 (v > 0), or 0 for every use here.
        return if positive {
            (1.0, 0.0, 0)
        } else {
            (0.0, 0.0, 0)
        };
    }
    let (yh, yl, k) = exp_parts(nh, nl);
    let mut dh = 1.0f32;
    let mut dl = 0.0f32;
    if k >= -60 {
        let tk = f32::from_bits((0x3f80_0000 + (k << 23)) as u32);
        let eh = yh * tk;
        let el = yl * tk;
        let (h, l) = fast_two_sum(1.0, eh);
        dh = h;
        dl = l + el;
    }
    let inv = div(1.0, dh);
    let (num_h, num_l, kk) = if positive { (1.0, 0.0, 0) } else { (yh, yl, k) };
    let q = num_h * inv;
    let (ph, pl) = two_prod(q, dh);
    let r = (((num_h - ph) - pl) + num_l) - q * dl;
    (q, r * inv, kk)
}

/// `1 / (1 + e^-x)`: `(q + c) 2^k` from [`sigmoid_parts`] with `vh = x`,
/// `vl = 0`, the sum rounded, then scaled by `2^k` with one more rounding
/// (which matters only for subnormal results). NaN -> NaN, ±0 -> 0.5,
/// +inf -> 1, -inf -> +0.
pub fn sigmoid(x: f32) -> f32 {
    if abs_bits(x) > INF {
        return nan();
    }
    let (q, c, k) = sigmoid_parts(x, 0.0);
    scale_pow2(q + c, k)
}

const GELU_K: f32 = f32::from_bits(0x3d37_2713); // 0.044715, high part
const GELU_KL: f32 = f32::from_bits(0x30d4_801f); // 0.044715 - GELU_K
const GELU_K3: f32 = f32::from_bits(0x3e09_5d4f); // 0.134145 = 3 * 0.044715
const GELU_S: f32 = f32::from_bits(0x3fcc_422a); // 2 * sqrt(2 / pi), high part
const GELU_SL: f32 = f32::from_bits(0xb342_bc9b); // 2 sqrt(2 / pi) - GELU_S

/// GELU, tanh form: `0.5 x (1 + tanh(u))` with
/// `u = sqrt(2/pi) (x + 0.044715 x^3)`, evaluated as `x * sigmoid(2u)`
/// (the same function, without the cancellation of `1 + tanh(u)` for
/// negative x), with `v = 2u` in double-float: the constants are
/// `(GELU_K, GELU_KL)` and `(GELU_S, GELU_SL)`,
/// `(x2h, x2l) = x * x`, `(x3h, x3l) = x2h * x` exactly, `x3l += x2l * x`;
/// `(th, tl) = GELU_K * x3h` exactly, `tl += GELU_K * x3l + GELU_KL * x3h`;
/// `(ih, il) = x + th` exactly, `il += tl`;
/// `(vh, vl) = GELU_S * ih` exactly, `vl += GELU_S * il + GELU_SL * ih`,
/// renormalised. Then `(q, c, k) = sigmoid_parts(vh, vl)`,
/// `(ph, pl) = x * q` exactly, result `(ph + (pl + x * c)) 2^k`.
/// `x <= -16` gives -0 (the formula's own value there, and its limit at
/// -inf), and so does `vh < -120`; `x >= 16` gives x (likewise);
/// `|x| < 2^-30` gives `x * 0.5` (within 0.02 ULP of the exact value; keeps
/// ±0).
pub fn gelu(x: f32) -> f32 {
    let ax = abs_bits(x);
    if ax > INF {
        return nan();
    }
    if x <= -16.0 {
        return -0.0;
    }
    if x >= 16.0 {
        return x;
    }
    if ax < 0x3080_0000 {
        return x * 0.5;
    }
    let (x2h, x2l) = two_prod(x, x);
    let (x3h, x3e) = two_prod(x2h, x);
    let x3l = x3e + x2l * x;
    let (th, te) = two_prod(GELU_K, x3h);
    let tl = te + (GELU_K * x3l + GELU_KL * x3h);
    let (ih, ie) = two_sum(x, th);
    let il = ie + tl;
    let (vh0, ve) = two_prod(GELU_S, ih);
    let vl0 = ve + (GELU_S * il + GELU_SL * ih);
    let (vh, vl) = fast_two_sum(vh0, vl0);
    if vh < -120.0 {
        // |gelu(x)| < 2^-165 (x > -16): -0, which the scaled product below
        // would turn into +0.
        return -0.0;
    }
    let (q, c, k) = sigmoid_parts(vh, vl);
    let (ph, pl) = two_prod(x, q);
    let t = pl + x * c;
    scale_pow2(ph + t, k)
}

/// d/dx of [`gelu`]: with `s = sigmoid(v)`,
/// `s + x s (1 - s) dv/dx`, `dv/dx = 2 sqrt(2/pi) (1 + 3 * 0.044715 x^2)`.
/// Evaluated in binary32 (not in double-float like [`gelu`]) as
/// `v = GELU_S * (x + (GELU_K * (x * x)) * x)`,
/// `e = exp(-|v|)`, `d = 1 + e`, `big = 1 / d`, `small = e / d`,
/// `(s, 1 - s) = v > 0 ? (big, small) : (small, big)`,
/// `dv = GELU_S * (1 + GELU_K3 * (x * x))`,
/// result `s + ((x * dv) * (1 - s)) * s`.
/// `1 - s` is computed from `e` like `s`, never by subtraction, which would
/// lose it entirely where s rounds to 1. `|x| >= 16` gives 1 (x > 0) or +0
/// (x < 0), the formula's own values there, so that ±inf give them rather
/// than inf * 0.
pub fn gelu_grad(x: f32) -> f32 {
    if abs_bits(x) > INF {
        return nan();
    }
    if abs_bits(x) >= 0x4180_0000 {
        return if x > 0.0 { 1.0 } else { 0.0 };
    }
    let x2 = x * x;
    let inner = x + (GELU_K * x2) * x;
    let v = GELU_S * inner;
    let e = exp(f32::from_bits(v.to_bits() | SIGN));
    let d = 1.0 + e;
    let big = div(1.0, d);
    let small = div(e, d);
    let (s, one_minus_s) = if v > 0.0 { (big, small) } else { (small, big) };
    let dv = GELU_S * (1.0 + GELU_K3 * x2);
    s + ((x * dv) * one_minus_s) * s
}

// ---------------------------------------------------------------------------
// sin and cos of 2 pi u, Philox, and the random-number transforms.
// ---------------------------------------------------------------------------

// sin(2 pi r) = r S1 + r Q(z), z = r^2, |r| <= 1/8: S1 is 2 pi rounded to
// binary32 and Q's constant term carries the rest of 2 pi. cos(2 pi r) =
// 1 + z C(z). Minimax fits of the relative error (sin 2^-37.7, cos 2^-33.9
// before rounding the coefficients), made with mpmath like tanh's.
const SIN_S1: f32 = f32::from_bits(0x40c9_0fdb); // 6.2831855
const SIN_Q0: f32 = f32::from_bits(0xb43b_c508); // -1.7487412e-7
const SIN_Q1: f32 = f32::from_bits(0xc225_5de7); // -41.341702
const SIN_Q2: f32 = f32::from_bits(0x42a3_35dd); // 81.605202
const SIN_Q3: f32 = f32::from_bits(0xc299_6543); // -76.697777
const SIN_Q4: f32 = f32::from_bits(0x4225_e12b); // 41.469891
const COS_C0: f32 = f32::from_bits(0xc19d_e9e6); // -19.739208
const COS_C1: f32 = f32::from_bits(0x4281_e0ef); // 64.939323
const COS_C2: f32 = f32::from_bits(0xc2aa_e2f0); // -85.443237
const COS_C3: f32 = f32::from_bits(0x426c_eab8); // 59.229218

/// `(sin 2πu, cos 2πu)` for `u` in `[0, 1)`, the only inputs it is defined
/// for: outside it (NaN, infinities, |u| >= 2^31 / 4) GLSL's float-to-int
/// conversion below is undefined, so the results are unspecified and may
/// differ from the GLSL's. `normal_from_bits` only passes multiples of
/// 2^-24 in `[0, 1)`. The reduction is exact: `q` is the nearest integer to
/// `4u` (a half rounds down), `r = u - q/4` in `[-1/8, 1/8]` is computed
/// without rounding (Sterbenz), and the quadrant `q mod 4` swaps and negates
/// the results of the polynomials in `r`.
pub fn sincos_2pi(u: f32) -> (f32, f32) {
    let u4 = u * 4.0;
    let mut q = u4 as i32;
    let frac = u4 - q as f32;
    if frac > 0.5 {
        q += 1;
    }
    let r = u - q as f32 * 0.25;
    let z = r * r;
    let p = SIN_Q0 + z * (SIN_Q1 + z * (SIN_Q2 + z * (SIN_Q3 + z * SIN_Q4)));
    let s = r * SIN_S1 + r * p;
    let c = 1.0 + z * (COS_C0 + z * (COS_C1 + z * (COS_C2 + z * COS_C3)));
    match q & 3 {
        0 => (s, c),
        1 => (c, neg(s)),
        2 => (neg(s), neg(c)),
        _ => (neg(c), s),
    }
}

const PHILOX_M0: u32 = 0xD251_1F53;
const PHILOX_M1: u32 = 0xCD9E_8D57;
const PHILOX_W0: u32 = 0x9E37_79B9;
const PHILOX_W1: u32 = 0xBB67_AE85;

/// High and low 32 bits of `a * b` (GLSL: umulExtended).
#[inline]
fn mulhilo(a: u32, b: u32) -> (u32, u32) {
    let p = u64::from(a) * u64::from(b);
    ((p >> 32) as u32, p as u32)
}

/// Philox4x32-10 (Salmon, Moraes, Dror, Shaw, "Parallel random numbers: as
/// easy as 1, 2, 3", SC 2011; the Random123 `philox4x32` with 10 rounds):
/// a counter-based generator, so the numbers for element `i` depend on
/// `(counter, key)` alone, never on scheduling.
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(PHILOX_W0);
            k[1] = k[1].wrapping_add(PHILOX_W1);
        }
        let (hi0, lo0) = mulhilo(PHILOX_M0, c[0]);
        let (hi1, lo1) = mulhilo(PHILOX_M1, c[2]);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

const TWO_M24: f32 = f32::from_bits(0x3380_0000);

/// A uniform float in `[0, 1)` from 32 random bits: the top 24 bits times
/// 2^-24 (exact: every value is a multiple of 2^-24).
pub fn uniform_from_bits(x: u32) -> f32 {
    (x >> 8) as f32 * TWO_M24
}

/// A standard normal sample from 64 random bits (Box–Muller, cosine half):
/// `u1 = ((x0 >> 8) + 1) 2^-24` in `(0, 1]` (never 0, so the log is
/// finite), `u2 = (x1 >> 8) 2^-24` in `[0, 1)`,
/// result `sqrt(log(u1) * -2) * cos(2π u2)` with [`log`], [`sqrt`] and
/// [`sincos_2pi`]. |result| <= 5.7683 (u1 = 2^-24).
pub fn normal_from_bits(x0: u32, x1: u32) -> f32 {
    let u1 = ((x0 >> 8) + 1) as f32 * TWO_M24;
    let u2 = (x1 >> 8) as f32 * TWO_M24;
    let r = sqrt(log(u1) * -2.0);
    let (_, c) = sincos_2pi(u2);
    r * c
}

// erf: two ranges, coefficients fitted for this function (weighted least
// squares in f64 on Chebyshev nodes, then rounded to binary32; the fit is
// in docs/float-model.md, "Math functions").
/// `erf(x) = x + x A(x^2)` on `|x| < 0.875`: `A(z) ~ erf(x)/x - 1`.
const ERF_A0: f32 = f32::from_bits(0x3e03_75d4);
const ERF_A1: f32 = f32::from_bits(0xbec0_93a3);
const ERF_A2: f32 = f32::from_bits(0x3de7_178e);
const ERF_A3: f32 = f32::from_bits(0xbcdc_1608);
const ERF_A4: f32 = f32::from_bits(0x3bab_2512);
const ERF_A5: f32 = f32::from_bits(0xba5f_4aff);
const ERF_A6: f32 = f32::from_bits(0x38f2_9098);
const ERF_A7: f32 = f32::from_bits(0xb733_c307);
/// `erf(x) = 1 - exp(-x^2) B(x - 1.5)` on `0.875 <= |x| < 4`:
/// `B(t) ~ erfc(x) exp(x^2)`.
const ERF_B0: f32 = f32::from_bits(0x3ea4_a6d8);
const ERF_B1: f32 = f32::from_bits(0xbe27_8cc3);
const ERF_B2: f32 = f32::from_bits(0x3d9b_f500);
const ERF_B3: f32 = f32::from_bits(0xbd06_e348);
const ERF_B4: f32 = f32::from_bits(0x3c5b_32ad);
const ERF_B5: f32 = f32::from_bits(0xbba8_7488);
const ERF_B6: f32 = f32::from_bits(0x3af6_6b66);
const ERF_B7: f32 = f32::from_bits(0xba30_ab7f);
const ERF_B8: f32 = f32::from_bits(0x3979_849a);
const ERF_B9: f32 = f32::from_bits(0xb88b_fa06);
const ERF_B10: f32 = f32::from_bits(0x371a_8062);
const ERF_B_CENTRE: f32 = 1.5;

/// The error function, within 2 ULP (measured: docs/float-model.md).
/// On `a = |x|`, the sign put back on the bits at the end:
/// - NaN: the canonical NaN;
/// - `a < 0.875`: `a + a A(a a)` (A by Horner), which keeps ±0 and
///   subnormals (`A(0)` is `2/sqrt(pi) - 1`);
/// - `a < 4`: `1 - exp(-(a a)) B(a - 1.5)` (B by Horner);
/// - otherwise (and ±inf) 1: erf rounds to 1 from 3.9165 on.
pub fn erf(x: f32) -> f32 {
    let ax = abs_bits(x);
    if ax > INF {
        return nan();
    }
    let a = f32::from_bits(ax);
    let r = if ax < 0x3f60_0000 {
        let z = a * a;
        let p = ERF_A0
            + z * (ERF_A1
                + z * (ERF_A2
                    + z * (ERF_A3 + z * (ERF_A4 + z * (ERF_A5 + z * (ERF_A6 + z * (ERF_A7)))))));
        a + a * p
    } else if ax < 0x4080_0000 {
        let t = a - ERF_B_CENTRE;
        let q = ERF_B0
            + t * (ERF_B1
                + t * (ERF_B2
                    + t * (ERF_B3
                        + t * (ERF_B4
                            + t * (ERF_B5
                                + t * (ERF_B6
                                    + t * (ERF_B7
                                        + t * (ERF_B8 + t * (ERF_B9 + t * (ERF_B10))))))))));
        let e = exp(neg(a * a));
        1.0 - e * q
    } else {
        1.0
    };
    f32::from_bits(r.to_bits() | (x.to_bits() & SIGN))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `m * 2^p`, exact for `m < 2^24` (the C sources' hexadecimal floats).
    fn hexf(m: u32, p: i32) -> f32 {
        m as f32 * 2f32.powi(p)
    }

    #[test]
    // The decimal literals are the sources' text, digit for digit.
    #[allow(clippy::excessive_precision)]
    fn constants_are_the_published_ones() {
        // FreeBSD e_logf.c / k_logf.h give these as hexadecimal floats.
        assert_eq!(LG1, hexf(0xaaaaaa, -24));
        assert_eq!(LG2, hexf(0xccce13, -25));
        assert_eq!(LG3, hexf(0x91e9ee, -25));
        assert_eq!(LG4, hexf(0xf89e26, -26));
        // e_expf.c gives both forms.
        assert_eq!(EXP_P1, hexf(0xaaaa8f, -26));
        assert_eq!(EXP_P1, 1.666_662_544e-1);
        assert_eq!(EXP_P2, -hexf(0xb55215, -32));
        assert_eq!(EXP_P2, -2.766_733_290_6e-3);
        // The decimal forms of the sources, read by Rust's correctly
        // rounding parser.
        assert_eq!(LN2HI, 6.931_457_519_5e-1);
        assert_eq!(LN2LO, 1.428_606_765_3e-6);
        assert_eq!(NEG_LN2LO, -LN2LO);
        assert_eq!(INVLN2, 1.442_695_021_6);
        assert_eq!(O_THRESHOLD, 8.872_167_968_8e1);
        assert_eq!(U_THRESHOLD, -1.039_720_840_5e2);
        assert_eq!(LN2_HI, 6.931_381_225_6e-1);
        assert_eq!(LN2_LO, 9.058_000_614_5e-6);
        assert_eq!(THIRD, 0.333_333_333_333_333_33);
        assert_eq!(TWO25, hexf(1, 25));
        assert_eq!(TWO_M100, hexf(1, -100));
        assert_eq!(TWO_P127, hexf(1, 127));
        assert_eq!(TWO_M24, hexf(1, -24));
        // GELU's constants, correctly rounded (f64 only here, in a test).
        assert_eq!(GELU_K, 0.044_715);
        assert_eq!(GELU_K3, 0.134_145);
        assert_eq!(GELU_S, (2.0 * (2.0 / std::f64::consts::PI).sqrt()) as f32);
        assert_eq!(SIN_S1, std::f32::consts::TAU);
        // The low parts: each high + low pair carries its constant to about
        // 2^-48 relative, far below f64's own precision of the products.
        let k = f64::from(GELU_K) + f64::from(GELU_KL);
        assert!((k - 0.044_715).abs() < 0.044_715 * 2f64.powi(-45));
        let s = 2.0 * (2.0 / std::f64::consts::PI).sqrt();
        let s2 = f64::from(GELU_S) + f64::from(GELU_SL);
        assert!((s2 - s).abs() < s * 2f64.powi(-45));
        assert_eq!(SPLIT, 4097.0);
        // 1/n!, correctly rounded.
        let mut fact = 2.0f64;
        for (n, c) in [
            EXPD_C3, EXPD_C4, EXPD_C5, EXPD_C6, EXPD_C7, EXPD_C8, EXPD_C9,
        ]
        .into_iter()
        .enumerate()
        {
            fact *= (n + 3) as f64;
            assert_eq!(c, (1.0 / fact) as f32, "1/{}!", n + 3);
        }
    }

    #[test]
    fn reduction_products_are_exact() {
        // `fk * LN2HI` is exact for every k the reductions produce (exp:
        // -150..=128; exp_parts, for sigmoid and gelu: -173..=0).
        for k in -175..=128 {
            let p = k as f32 * LN2HI;
            assert_eq!(f64::from(p), f64::from(k) * f64::from(LN2HI), "k = {k}");
        }
    }

    /// Every `#define LS_NAME uintBitsToFloat(0x...u)` and `const uint
    /// LS_NAME = 0x...u;` in math.glsl has the bits of the Rust constant
    /// NAME, and every Rust constant has its GLSL twin.
    #[test]
    fn glsl_constants_match() {
        let rust: &[(&str, u32)] = &[
            ("LN2HI", LN2HI.to_bits()),
            ("LN2LO", LN2LO.to_bits()),
            ("NEG_LN2LO", NEG_LN2LO.to_bits()),
            ("INVLN2", INVLN2.to_bits()),
            ("EXP_P1", EXP_P1.to_bits()),
            ("EXP_P2", EXP_P2.to_bits()),
            ("O_THRESHOLD", O_THRESHOLD.to_bits()),
            ("U_THRESHOLD", U_THRESHOLD.to_bits()),
            ("TWO_M100", TWO_M100.to_bits()),
            ("TWO_P127", TWO_P127.to_bits()),
            ("LN2_HI", LN2_HI.to_bits()),
            ("LN2_LO", LN2_LO.to_bits()),
            ("TWO25", TWO25.to_bits()),
            ("THIRD", THIRD.to_bits()),
            ("LG1", LG1.to_bits()),
            ("LG2", LG2.to_bits()),
            ("LG3", LG3.to_bits()),
            ("LG4", LG4.to_bits()),
            ("TANH_P0", TANH_P0.to_bits()),
            ("TANH_P1", TANH_P1.to_bits()),
            ("TANH_P2", TANH_P2.to_bits()),
            ("TANH_P3", TANH_P3.to_bits()),
            ("TANH_P4", TANH_P4.to_bits()),
            ("SPLIT", SPLIT.to_bits()),
            ("EXPD_C3", EXPD_C3.to_bits()),
            ("EXPD_C4", EXPD_C4.to_bits()),
            ("EXPD_C5", EXPD_C5.to_bits()),
            ("EXPD_C6", EXPD_C6.to_bits()),
            ("EXPD_C7", EXPD_C7.to_bits()),
            ("EXPD_C8", EXPD_C8.to_bits()),
            ("EXPD_C9", EXPD_C9.to_bits()),
            ("GELU_K", GELU_K.to_bits()),
            ("GELU_KL", GELU_KL.to_bits()),
            ("GELU_K3", GELU_K3.to_bits()),
            ("GELU_S", GELU_S.to_bits()),
            ("GELU_SL", GELU_SL.to_bits()),
            ("SIN_S1", SIN_S1.to_bits()),
            ("SIN_Q0", SIN_Q0.to_bits()),
            ("SIN_Q1", SIN_Q1.to_bits()),
            ("SIN_Q2", SIN_Q2.to_bits()),
            ("SIN_Q3", SIN_Q3.to_bits()),
            ("SIN_Q4", SIN_Q4.to_bits()),
            ("COS_C0", COS_C0.to_bits()),
            ("COS_C1", COS_C1.to_bits()),
            ("COS_C2", COS_C2.to_bits()),
            ("COS_C3", COS_C3.to_bits()),
            ("TWO_M24", TWO_M24.to_bits()),
            ("ERF_A0", ERF_A0.to_bits()),
            ("ERF_A1", ERF_A1.to_bits()),
            ("ERF_A2", ERF_A2.to_bits()),
            ("ERF_A3", ERF_A3.to_bits()),
            ("ERF_A4", ERF_A4.to_bits()),
            ("ERF_A5", ERF_A5.to_bits()),
            ("ERF_A6", ERF_A6.to_bits()),
            ("ERF_A7", ERF_A7.to_bits()),
            ("ERF_B0", ERF_B0.to_bits()),
            ("ERF_B1", ERF_B1.to_bits()),
            ("ERF_B2", ERF_B2.to_bits()),
            ("ERF_B3", ERF_B3.to_bits()),
            ("ERF_B4", ERF_B4.to_bits()),
            ("ERF_B5", ERF_B5.to_bits()),
            ("ERF_B6", ERF_B6.to_bits()),
            ("ERF_B7", ERF_B7.to_bits()),
            ("ERF_B8", ERF_B8.to_bits()),
            ("ERF_B9", ERF_B9.to_bits()),
            ("ERF_B10", ERF_B10.to_bits()),
            ("SIGN", SIGN),
            ("ABS", ABS),
            ("INF", INF),
            ("FRAC", FRAC),
            ("HIDDEN", HIDDEN),
            ("PHILOX_M0", PHILOX_M0),
            ("PHILOX_M1", PHILOX_M1),
            ("PHILOX_W0", PHILOX_W0),
            ("PHILOX_W1", PHILOX_W1),
        ];
        let mut glsl = Vec::new();
        for line in include_str!("math.glsl").lines() {
            let parsed = if let Some(rest) = line.strip_prefix("#define LS_") {
                rest.split_once(" uintBitsToFloat(0x")
                    .map(|(name, v)| (name, v.trim_end_matches("u)")))
            } else if let Some(rest) = line.strip_prefix("const uint LS_") {
                rest.split_once(" = 0x")
                    .map(|(name, v)| (name, v.trim_end_matches("u;")))
            } else {
                None
            };
            if let Some((name, hex)) = parsed {
                glsl.push((name.to_string(), u32::from_str_radix(hex, 16).unwrap()));
            }
        }
        assert_eq!(glsl.len(), rust.len(), "GLSL constants: {glsl:?}");
        for (name, bits) in &glsl {
            let twin = rust.iter().find(|(n, _)| n == name);
            assert_eq!(twin.map(|t| t.1), Some(*bits), "LS_{name}");
        }
    }
}
