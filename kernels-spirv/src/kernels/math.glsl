// Lockstep deterministic math: division, square root, exp, log, tanh,
// sigmoid, gelu and its gradient, sin/cos of 2*pi*u, Philox4x32-10 and the
// random-number transforms, written only with operations whose results the
// float model pins (docs/float-model.md, "Math functions"): binary32 add,
// subtract and multiply, every one `precise` (NoContraction), comparisons,
// float <-> int conversions, bit casts, and integer operations. No `/`, no
// GLSL.std.450 float function (abs, floor, min, max, sqrt, exp, ... all differ
// between devices), no findMSB (a GLSL.std.450 function too).
//
// CPU twin: math.rs, operation for operation; change both together. Rules
// that keep them twins: every float operation is assigned to a `precise`
// variable (an operation inside a function argument or a return expression
// would not be decorated NoContraction); negation and absolute value are bit
// operations (a driver may compile -x as 0 - x, which turns -0 into +0).
//
// Include after float_model.glsl.

#ifndef LOCKSTEP_MATH_GLSL
#define LOCKSTEP_MATH_GLSL

const uint LS_SIGN = 0x80000000u;
const uint LS_ABS = 0x7FFFFFFFu;
const uint LS_INF = 0x7F800000u;
const uint LS_FRAC = 0x007FFFFFu;
const uint LS_HIDDEN = 0x00800000u;

float ls_nan() {
    return uintBitsToFloat(CANONICAL_NAN_BITS);
}

float ls_neg(float x) {
    return uintBitsToFloat(floatBitsToUint(x) ^ LS_SIGN);
}

uint ls_abs_bits(float x) {
    return floatBitsToUint(x) & LS_ABS;
}

// ---------------------------------------------------------------------------
// Correctly rounded division and square root, in 32-bit integer arithmetic.
// ---------------------------------------------------------------------------

// How far a nonzero significand m < 2^24 must be shifted left to put its
// leading one at bit 23 (binary search: findMSB is not allowed).
uint ls_norm_shift(uint m) {
    uint s = 0u;
    if (m < (1u << 8)) {
        m <<= 16;
        s += 16u;
    }
    if (m < (1u << 16)) {
        m <<= 8;
        s += 8u;
    }
    if (m < (1u << 20)) {
        m <<= 4;
        s += 4u;
    }
    if (m < (1u << 22)) {
        m <<= 2;
        s += 2u;
    }
    if (m < (1u << 23)) {
        s += 1u;
    }
    return s;
}

// |x| = m * 2^(e - 150) with m in [2^23, 2^24), for the bits of a finite,
// nonzero |x|; subnormals are normalised (their e becomes <= 0).
void ls_unpack(uint abs_bits, out uint m, out int e) {
    e = int(abs_bits >> 23);
    m = abs_bits & LS_FRAC;
    if (e == 0) {
        uint s = ls_norm_shift(m);
        m <<= s;
        e = 1 - int(s);
    } else {
        m |= LS_HIDDEN;
    }
}

// Rounds sig * 2^(e - 152) to nearest even and applies sign; sig in
// [2^25, 2^26) (24 significand bits + 2), sticky: anything nonzero below.
// Subnormal results are shifted to their final position first and rounded
// once there (no double rounding).
float ls_round_pack(uint sign, int e, uint sig, bool sticky) {
    if (e >= 255) {
        return uintBitsToFloat(sign | LS_INF);
    }
    uint shift = e >= 1 ? 2u : uint(min(3 - e, 27));
    uint m = sig >> shift;
    uint half_ = 1u << (shift - 1u);
    bool below = (sig & (half_ - 1u)) != 0u || sticky;
    bool round_up = (sig & half_) != 0u && (below || (m & 1u) != 0u);
    uint exponent = e >= 1 ? uint(e - 1) << 23 : 0u;
    // m keeps the hidden bit: a carry out of the significand bumps the
    // exponent (to infinity from e = 254, or from subnormal to normal).
    return uintBitsToFloat(sign | (exponent + m + uint(round_up)));
}

// a / b, correctly rounded for every input; NaN results are canonical.
float ls_div(float a, float b) {
    uint ua = floatBitsToUint(a);
    uint ub = floatBitsToUint(b);
    uint sign = (ua ^ ub) & LS_SIGN;
    uint aa = ua & LS_ABS;
    uint ab = ub & LS_ABS;
    if (aa > LS_INF || ab > LS_INF) {
        return ls_nan();
    }
    if (aa == LS_INF) {
        return ab == LS_INF ? ls_nan() : uintBitsToFloat(sign | LS_INF);
    }
    if (ab == LS_INF) {
        return uintBitsToFloat(sign);
    }
    if (ab == 0u) {
        return aa == 0u ? ls_nan() : uintBitsToFloat(sign | LS_INF);
    }
    if (aa == 0u) {
        return uintBitsToFloat(sign);
    }
    uint ma, mb;
    int ea, eb;
    ls_unpack(aa, ma, ea);
    ls_unpack(ab, mb, eb);
    // Significand quotient in [1, 2): double ma when ma < mb.
    int e = ea - eb + 127;
    uint r = ma;
    if (ma < mb) {
        r = ma << 1;
        e -= 1;
    }
    // Restoring long division: 26 quotient bits; r < 2 * mb < 2^25.
    uint q = 0u;
    for (int n = 0; n < 26; n++) {
        q <<= 1;
        if (r >= mb) {
            r -= mb;
            q |= 1u;
        }
        r <<= 1;
    }
    return ls_round_pack(sign, e, q, r != 0u);
}

// sqrt(x), correctly rounded for every input (sqrt(-0) = -0, x < 0 -> NaN);
// NaN results are canonical.
float ls_sqrt(float x) {
    uint u = floatBitsToUint(x);
    if ((u & LS_ABS) == 0u) {
        return x;
    }
    if ((u & LS_ABS) > LS_INF || (u & LS_SIGN) != 0u) {
        return ls_nan();
    }
    if (u == LS_INF) {
        return x;
    }
    uint m;
    int e;
    ls_unpack(u, m, e);
    // Even power of two, significand in [2^24, 2^26).
    int ex = e - 150;
    uint m2;
    int ex2;
    if ((ex & 1) != 0) {
        m2 = m << 1;
        ex2 = ex - 1;
    } else {
        m2 = m << 2;
        ex2 = ex - 2;
    }
    // Digit-by-digit root of m2 * 2^26: two radicand bits per step.
    uint root = 0u;
    uint rem = 0u;
    for (uint i = 0u; i < 26u; i++) {
        uint pair = i < 13u ? (m2 >> (24u - 2u * i)) & 3u : 0u;
        rem = (rem << 2) | pair;
        uint trial = (root << 2) | 1u;
        root <<= 1;
        if (rem >= trial) {
            rem -= trial;
            root |= 1u;
        }
    }
    int e_out = 152 + ((ex2 - 26) >> 1);
    return ls_round_pack(0u, e_out, root, rem != 0u);
}

// ---------------------------------------------------------------------------
// exp and log: FreeBSD's e_expf.c and e_logf.c with ls_div for `/`.
// ---------------------------------------------------------------------------

// Float constants are macros over their bit patterns: glslang 12 does not
// accept uintBitsToFloat() in a const initializer, and decimal literals would
// depend on its float parsing. math.rs's glsl_constants_match test checks
// that every one has the bits of its Rust twin.
#define LS_LN2HI uintBitsToFloat(0x3f317200u)
#define LS_LN2LO uintBitsToFloat(0x35bfbe8eu)
#define LS_NEG_LN2LO uintBitsToFloat(0xb5bfbe8eu)
#define LS_INVLN2 uintBitsToFloat(0x3fb8aa3bu)
#define LS_EXP_P1 uintBitsToFloat(0x3e2aaa8fu)
#define LS_EXP_P2 uintBitsToFloat(0xbb355215u)
#define LS_O_THRESHOLD uintBitsToFloat(0x42b17180u)
#define LS_U_THRESHOLD uintBitsToFloat(0xc2cff1b5u)
#define LS_TWO_M100 uintBitsToFloat(0x0d800000u)
#define LS_TWO_P127 uintBitsToFloat(0x7f000000u)

float ls_exp(float x) {
    bool negative = (floatBitsToUint(x) & LS_SIGN) != 0u;
    uint hx = ls_abs_bits(x);
    if (hx >= 0x42b17218u) {
        if (hx > LS_INF) {
            return ls_nan();
        }
        if (hx == LS_INF) {
            return negative ? 0.0 : x;
        }
        if (x > LS_O_THRESHOLD) {
            return uintBitsToFloat(LS_INF);
        }
        if (x < LS_U_THRESHOLD) {
            return 0.0;
        }
    }
    precise float xr = x;
    precise float hi = 0.0;
    precise float lo = 0.0;
    int k = 0;
    if (hx > 0x3eb17218u) {
        if (hx < 0x3f851592u) {
            if (negative) {
                hi = x + LS_LN2HI;
                lo = LS_NEG_LN2LO;
                k = -1;
            } else {
                hi = x - LS_LN2HI;
                lo = LS_LN2LO;
                k = 1;
            }
        } else {
            float half_ = negative ? -0.5 : 0.5;
            precise float kf = LS_INVLN2 * x + half_;
            k = int(kf);
            float fk = float(k);
            hi = x - fk * LS_LN2HI;
            lo = fk * LS_LN2LO;
        }
        xr = hi - lo;
    } else if (hx < 0x39000000u) {
        precise float r = 1.0 + x;
        return r;
    }
    precise float t = xr * xr;
    float twopk = k >= -125 ? uintBitsToFloat(uint(0x3f800000 + (k << 23)))
                            : uintBitsToFloat(uint(0x3f800000 + ((k + 100) << 23)));
    precise float c = xr - t * (LS_EXP_P1 + t * LS_EXP_P2);
    precise float xc = xr * c;
    if (k == 0) {
        precise float den0 = c - 2.0;
        precise float r0 = 1.0 - (ls_div(xc, den0) - xr);
        return r0;
    }
    precise float den = 2.0 - c;
    precise float y = 1.0 - ((lo - ls_div(xc, den)) - hi);
    if (k >= -125) {
        if (k == 128) {
            precise float r1 = y * 2.0 * LS_TWO_P127;
            return r1;
        }
        precise float r2 = y * twopk;
        return r2;
    }
    precise float r3 = y * twopk * LS_TWO_M100;
    return r3;
}

#define LS_LN2_HI uintBitsToFloat(0x3f317180u)
#define LS_LN2_LO uintBitsToFloat(0x3717f7d1u)
#define LS_TWO25 uintBitsToFloat(0x4c000000u)
#define LS_THIRD uintBitsToFloat(0x3eaaaaabu)
#define LS_LG1 uintBitsToFloat(0x3f2aaaaau)
#define LS_LG2 uintBitsToFloat(0x3eccce13u)
#define LS_LG3 uintBitsToFloat(0x3e91e9eeu)
#define LS_LG4 uintBitsToFloat(0x3e789e26u)

float ls_log(float x_in) {
    precise float x = x_in;
    int ix = floatBitsToInt(x);
    int k = 0;
    if (ix < 0x00800000) {
        if ((ix & 0x7fffffff) == 0) {
            return uintBitsToFloat(LS_SIGN | LS_INF);
        }
        if (ix < 0) {
            return ls_nan();
        }
        k -= 25;
        x = x * LS_TWO25;
        ix = floatBitsToInt(x);
    }
    if (ix >= 0x7f800000) {
        return ix == 0x7f800000 ? x : ls_nan();
    }
    k += (ix >> 23) - 127;
    ix &= 0x007fffff;
    int i = (ix + (0x95f64 << 3)) & 0x00800000;
    x = intBitsToFloat(ix | (i ^ 0x3f800000));
    k += i >> 23;
    precise float f = x - 1.0;
    if ((0x007fffff & (0x8000 + ix)) < 0xc000) {
        if (f == 0.0) {
            if (k == 0) {
                return 0.0;
            }
            float dk0 = float(k);
            precise float r0 = dk0 * LS_LN2_HI + dk0 * LS_LN2_LO;
            return r0;
        }
        precise float r = f * f * (0.5 - LS_THIRD * f);
        if (k == 0) {
            precise float r1 = f - r;
            return r1;
        }
        float dk1 = float(k);
        precise float r2 = dk1 * LS_LN2_HI - ((r - dk1 * LS_LN2_LO) - f);
        return r2;
    }
    precise float den = 2.0 + f;
    float s = ls_div(f, den);
    float dk = float(k);
    precise float z = s * s;
    int i2 = ix - (0x6147a << 3);
    precise float w = z * z;
    int j = (0x6b851 << 3) - ix;
    precise float t1 = w * (LS_LG2 + w * LS_LG4);
    precise float t2 = z * (LS_LG1 + w * LS_LG3);
    i2 |= j;
    precise float r = t2 + t1;
    if (i2 > 0) {
        precise float hfsq = 0.5 * f * f;
        if (k == 0) {
            precise float r3 = f - (hfsq - s * (hfsq + r));
            return r3;
        }
        precise float r4 = dk * LS_LN2_HI - ((hfsq - (s * (hfsq + r) + dk * LS_LN2_LO)) - f);
        return r4;
    }
    if (k == 0) {
        precise float r5 = f - s * (f - r);
        return r5;
    }
    precise float r6 = dk * LS_LN2_HI - ((s * (f - r) - dk * LS_LN2_LO) - f);
    return r6;
}

// ---------------------------------------------------------------------------
// tanh, sigmoid, gelu.
// ---------------------------------------------------------------------------

#define LS_TANH_P0 uintBitsToFloat(0xbeaaaaa5u)
#define LS_TANH_P1 uintBitsToFloat(0x3e088693u)
#define LS_TANH_P2 uintBitsToFloat(0xbd5c943bu)
#define LS_TANH_P3 uintBitsToFloat(0x3cac9e73u)
#define LS_TANH_P4 uintBitsToFloat(0xbbcd97bfu)

float ls_tanh(float x) {
    uint ax = ls_abs_bits(x);
    if (ax > LS_INF) {
        return ls_nan();
    }
    if (ax < 0x39800000u) {
        return x;
    }
    float a = uintBitsToFloat(ax);
    precise float t;
    if (ax < 0x3f0ccccdu) {
        precise float z = a * a;
        precise float p = LS_TANH_P0 + z * (LS_TANH_P1 + z * (LS_TANH_P2 + z * (LS_TANH_P3 + z * LS_TANH_P4)));
        precise float zp = z * p;
        t = a + a * zp;
    } else if (ax < 0x41200000u) {
        precise float a2 = a + a;
        precise float e1 = ls_exp(a2) + 1.0;
        t = 1.0 - ls_div(2.0, e1);
    } else {
        t = 1.0;
    }
    return uintBitsToFloat(floatBitsToUint(t) | (floatBitsToUint(x) & LS_SIGN));
}

// Error-free transformations (add, subtract and multiply only, no FMA), for
// the double-float (hi, lo) arithmetic of sigmoid and gelu. Results go out
// through `out` parameters, from `precise` locals.

// s = a + b rounded, s + e = a + b exactly (TwoSum).
void ls_two_sum(float a, float b, out float s, out float e) {
    precise float s_ = a + b;
    precise float bb = s_ - a;
    precise float e_ = (a - (s_ - bb)) + (b - bb);
    s = s_;
    e = e_;
}

// TwoSum when the exponent of a is at least that of b (Fast2Sum).
void ls_fast_two_sum(float a, float b, out float s, out float e) {
    precise float s_ = a + b;
    precise float e_ = b - (s_ - a);
    s = s_;
    e = e_;
}

#define LS_SPLIT uintBitsToFloat(0x45800800u)

// Veltkamp's splitting: a = h + l exactly, 12 significant bits each.
void ls_split(float a, out float h, out float l) {
    precise float c = LS_SPLIT * a;
    precise float h_ = c - (c - a);
    precise float l_ = a - h_;
    h = h_;
    l = l_;
}

// p = a * b rounded, p + e = a * b exactly (Dekker's TwoProduct).
void ls_two_prod(float a, float b, out float p, out float e) {
    precise float p_ = a * b;
    float ah, al, bh, bl;
    ls_split(a, ah, al);
    ls_split(b, bh, bl);
    precise float e_ = (((ah * bh - p_) + ah * bl) + al * bh) + al * bl;
    p = p_;
    e = e_;
}

#define LS_EXPD_C3 uintBitsToFloat(0x3e2aaaabu)
#define LS_EXPD_C4 uintBitsToFloat(0x3d2aaaabu)
#define LS_EXPD_C5 uintBitsToFloat(0x3c088889u)
#define LS_EXPD_C6 uintBitsToFloat(0x3ab60b61u)
#define LS_EXPD_C7 uintBitsToFloat(0x39500d01u)
#define LS_EXPD_C8 uintBitsToFloat(0x37d00d01u)
#define LS_EXPD_C9 uintBitsToFloat(0x3638ef1du)

// e^(xh + xl) = (yh + yl) * 2^k, for -120 <= xh <= 0, |xl| <= 2^-16.
void ls_exp_parts(float xh, float xl, out float yh, out float yl, out int k) {
    precise float kf = LS_INVLN2 * xh - 0.5;
    int k_ = int(kf);
    float fk = float(k_);
    precise float hi = xh - fk * LS_LN2HI;
    precise float w = xl - fk * LS_LN2LO;
    float rh, rl;
    ls_two_sum(hi, w, rh, rl);
    float sh, sl;
    ls_two_prod(rh, rh, sh, sl);
    precise float h2 = 0.5 * sh;
    precise float h2l = 0.5 * sl;
    precise float p = LS_EXPD_C3
        + rh * (LS_EXPD_C4 + rh * (LS_EXPD_C5 + rh * (LS_EXPD_C6 + rh * (LS_EXPD_C7 + rh * (LS_EXPD_C8 + rh * LS_EXPD_C9)))));
    precise float c3 = (sh * rh) * p;
    float ah, al;
    ls_fast_two_sum(1.0, rh, ah, al);
    float bh, bl;
    ls_fast_two_sum(ah, h2, bh, bl);
    precise float low = (((al + bl) + h2l) + c3) + rl * bh;
    ls_fast_two_sum(bh, low, yh, yl);
    k = k_;
}

// y * 2^k, rounded once, for -180 <= k <= 0.
float ls_scale_pow2(float y, int k) {
    if (k >= -125) {
        precise float r = y * uintBitsToFloat(uint(0x3f800000 + (k << 23)));
        return r;
    }
    precise float r2 = y * uintBitsToFloat(uint(0x3f800000 + ((k + 100) << 23))) * LS_TWO_M100;
    return r2;
}

// sigmoid(vh + vl) = (q + c) * 2^k; see math.rs.
void ls_sigmoid_parts(float vh, float vl, out float q, out float c, out int k) {
    bool positive = vh > 0.0;
    float nh = positive ? ls_neg(vh) : vh;
    float nl = positive ? ls_neg(vl) : vl;
    if (nh < -120.0) {
        q = positive ? 1.0 : 0.0;
        c = 0.0;
        k = 0;
        return;
    }
    float yh, yl;
    int ke;
    ls_exp_parts(nh, nl, yh, yl, ke);
    float dh = 1.0;
    float dl = 0.0;
    if (ke >= -60) {
        float tk = uintBitsToFloat(uint(0x3f800000 + (ke << 23)));
        precise float eh = yh * tk;
        precise float el = yl * tk;
        float h, l;
        ls_fast_two_sum(1.0, eh, h, l);
        precise float dl_ = l + el;
        dh = h;
        dl = dl_;
    }
    float inv = ls_div(1.0, dh);
    float num_h = positive ? 1.0 : yh;
    float num_l = positive ? 0.0 : yl;
    precise float q_ = num_h * inv;
    float ph, pl;
    ls_two_prod(q_, dh, ph, pl);
    precise float r = (((num_h - ph) - pl) + num_l) - q_ * dl;
    precise float c_ = r * inv;
    q = q_;
    c = c_;
    k = positive ? 0 : ke;
}

float ls_sigmoid(float x) {
    if (ls_abs_bits(x) > LS_INF) {
        return ls_nan();
    }
    float q, c;
    int k;
    ls_sigmoid_parts(x, 0.0, q, c, k);
    precise float s = q + c;
    return ls_scale_pow2(s, k);
}

#define LS_GELU_K uintBitsToFloat(0x3d372713u)
#define LS_GELU_KL uintBitsToFloat(0x30d4801fu)
#define LS_GELU_K3 uintBitsToFloat(0x3e095d4fu)
#define LS_GELU_S uintBitsToFloat(0x3fcc422au)
#define LS_GELU_SL uintBitsToFloat(0xb342bc9bu)

float ls_gelu(float x) {
    uint ax = ls_abs_bits(x);
    if (ax > LS_INF) {
        return ls_nan();
    }
    if (x <= -16.0) {
        return uintBitsToFloat(LS_SIGN);
    }
    if (x >= 16.0) {
        return x;
    }
    if (ax < 0x30800000u) {
        precise float half_x = x * 0.5;
        return half_x;
    }
    float x2h, x2l;
    ls_two_prod(x, x, x2h, x2l);
    float x3h, x3e;
    ls_two_prod(x2h, x, x3h, x3e);
    precise float x3l = x3e + x2l * x;
    float th, te;
    ls_two_prod(LS_GELU_K, x3h, th, te);
    precise float tl = te + (LS_GELU_K * x3l + LS_GELU_KL * x3h);
    float ih, ie;
    ls_two_sum(x, th, ih, ie);
    precise float il = ie + tl;
    float vh0, ve;
    ls_two_prod(LS_GELU_S, ih, vh0, ve);
    precise float vl0 = ve + (LS_GELU_S * il + LS_GELU_SL * ih);
    float vh, vl;
    ls_fast_two_sum(vh0, vl0, vh, vl);
    if (vh < -120.0) {
        return uintBitsToFloat(LS_SIGN);
    }
    float q, c;
    int k;
    ls_sigmoid_parts(vh, vl, q, c, k);
    float ph, pl;
    ls_two_prod(x, q, ph, pl);
    precise float t = pl + x * c;
    precise float g = ph + t;
    return ls_scale_pow2(g, k);
}

float ls_gelu_grad(float x) {
    if (ls_abs_bits(x) > LS_INF) {
        return ls_nan();
    }
    if (ls_abs_bits(x) >= 0x41800000u) {
        return x > 0.0 ? 1.0 : 0.0;
    }
    precise float x2 = x * x;
    precise float inner = x + (LS_GELU_K * x2) * x;
    precise float v = LS_GELU_S * inner;
    float e = ls_exp(uintBitsToFloat(floatBitsToUint(v) | LS_SIGN));
    precise float d = 1.0 + e;
    float big = ls_div(1.0, d);
    float small = ls_div(e, d);
    float s = v > 0.0 ? big : small;
    float one_minus_s = v > 0.0 ? small : big;
    precise float dv = LS_GELU_S * (1.0 + LS_GELU_K3 * x2);
    precise float r = s + ((x * dv) * one_minus_s) * s;
    return r;
}

// ---------------------------------------------------------------------------
// sin and cos of 2 pi u, Philox, and the random-number transforms.
// ---------------------------------------------------------------------------

#define LS_SIN_S1 uintBitsToFloat(0x40c90fdbu)
#define LS_SIN_Q0 uintBitsToFloat(0xb43bc508u)
#define LS_SIN_Q1 uintBitsToFloat(0xc2255de7u)
#define LS_SIN_Q2 uintBitsToFloat(0x42a335ddu)
#define LS_SIN_Q3 uintBitsToFloat(0xc2996543u)
#define LS_SIN_Q4 uintBitsToFloat(0x4225e12bu)
#define LS_COS_C0 uintBitsToFloat(0xc19de9e6u)
#define LS_COS_C1 uintBitsToFloat(0x4281e0efu)
#define LS_COS_C2 uintBitsToFloat(0xc2aae2f0u)
#define LS_COS_C3 uintBitsToFloat(0x426ceab8u)

// (sin 2 pi u, cos 2 pi u) for u in [0, 1), the only inputs it is defined
// for (int() of an out-of-range float is undefined): exact reduction to
// r = u - q/4 in [-1/8, 1/8], polynomials in r, quadrant q mod 4.
void ls_sincos_2pi(float u, out float s_out, out float c_out) {
    precise float u4 = u * 4.0;
    int q = int(u4);
    precise float frac = u4 - float(q);
    if (frac > 0.5) {
        q += 1;
    }
    precise float r = u - float(q) * 0.25;
    precise float z = r * r;
    precise float p = LS_SIN_Q0 + z * (LS_SIN_Q1 + z * (LS_SIN_Q2 + z * (LS_SIN_Q3 + z * LS_SIN_Q4)));
    precise float s = r * LS_SIN_S1 + r * p;
    precise float c = 1.0 + z * (LS_COS_C0 + z * (LS_COS_C1 + z * (LS_COS_C2 + z * LS_COS_C3)));
    int quadrant = q & 3;
    if (quadrant == 0) {
        s_out = s;
        c_out = c;
    } else if (quadrant == 1) {
        s_out = c;
        c_out = ls_neg(s);
    } else if (quadrant == 2) {
        s_out = ls_neg(s);
        c_out = ls_neg(c);
    } else {
        s_out = ls_neg(c);
        c_out = s;
    }
}

const uint LS_PHILOX_M0 = 0xD2511F53u;
const uint LS_PHILOX_M1 = 0xCD9E8D57u;
const uint LS_PHILOX_W0 = 0x9E3779B9u;
const uint LS_PHILOX_W1 = 0xBB67AE85u;

// Philox4x32-10 (Salmon et al., SC 2011; Random123's philox4x32, 10 rounds).
uvec4 philox4x32_10(uvec4 ctr, uvec2 key) {
    uvec4 c = ctr;
    uvec2 k = key;
    for (int n = 0; n < 10; n++) {
        if (n > 0) {
            k.x += LS_PHILOX_W0;
            k.y += LS_PHILOX_W1;
        }
        uint hi0, lo0, hi1, lo1;
        umulExtended(LS_PHILOX_M0, c.x, hi0, lo0);
        umulExtended(LS_PHILOX_M1, c.z, hi1, lo1);
        c = uvec4(hi1 ^ c.y ^ k.x, lo1, hi0 ^ c.w ^ k.y, lo0);
    }
    return c;
}

#define LS_TWO_M24 uintBitsToFloat(0x33800000u)

// Uniform in [0, 1): the top 24 bits times 2^-24 (exact).
float ls_uniform_from_bits(uint x) {
    precise float r = float(x >> 8) * LS_TWO_M24;
    return r;
}

// Standard normal (Box-Muller, cosine half):
// sqrt(log(u1) * -2) * cos(2 pi u2), u1 = ((x0 >> 8) + 1) 2^-24 in (0, 1],
// u2 = (x1 >> 8) 2^-24 in [0, 1).
float ls_normal_from_bits(uint x0, uint x1) {
    precise float u1 = float((x0 >> 8) + 1u) * LS_TWO_M24;
    precise float u2 = float(x1 >> 8) * LS_TWO_M24;
    precise float l2 = ls_log(u1) * -2.0;
    float r = ls_sqrt(l2);
    float s, c;
    ls_sincos_2pi(u2, s, c);
    precise float n = r * c;
    return n;
}

// erf: the twin of math.rs `erf`, same ranges and coefficients.
#define LS_ERF_A0 uintBitsToFloat(0x3e0375d4u)
#define LS_ERF_A1 uintBitsToFloat(0xbec093a3u)
#define LS_ERF_A2 uintBitsToFloat(0x3de7178eu)
#define LS_ERF_A3 uintBitsToFloat(0xbcdc1608u)
#define LS_ERF_A4 uintBitsToFloat(0x3bab2512u)
#define LS_ERF_A5 uintBitsToFloat(0xba5f4affu)
#define LS_ERF_A6 uintBitsToFloat(0x38f29098u)
#define LS_ERF_A7 uintBitsToFloat(0xb733c307u)
#define LS_ERF_B0 uintBitsToFloat(0x3ea4a6d8u)
#define LS_ERF_B1 uintBitsToFloat(0xbe278cc3u)
#define LS_ERF_B2 uintBitsToFloat(0x3d9bf500u)
#define LS_ERF_B3 uintBitsToFloat(0xbd06e348u)
#define LS_ERF_B4 uintBitsToFloat(0x3c5b32adu)
#define LS_ERF_B5 uintBitsToFloat(0xbba87488u)
#define LS_ERF_B6 uintBitsToFloat(0x3af66b66u)
#define LS_ERF_B7 uintBitsToFloat(0xba30ab7fu)
#define LS_ERF_B8 uintBitsToFloat(0x3979849au)
#define LS_ERF_B9 uintBitsToFloat(0xb88bfa06u)
#define LS_ERF_B10 uintBitsToFloat(0x371a8062u)

float ls_erf(float x) {
    uint ax = ls_abs_bits(x);
    if (ax > LS_INF) {
        return ls_nan();
    }
    float a = uintBitsToFloat(ax);
    precise float r;
    if (ax < 0x3f600000u) {
        precise float z = a * a;
        precise float p = LS_ERF_A0 + z * (LS_ERF_A1 + z * (LS_ERF_A2 + z * (LS_ERF_A3 + z * (LS_ERF_A4 + z * (LS_ERF_A5 + z * (LS_ERF_A6 + z * (LS_ERF_A7)))))));
        r = a + a * p;
    } else if (ax < 0x40800000u) {
        precise float t = a - 1.5;
        precise float q = LS_ERF_B0 + t * (LS_ERF_B1 + t * (LS_ERF_B2 + t * (LS_ERF_B3 + t * (LS_ERF_B4 + t * (LS_ERF_B5 + t * (LS_ERF_B6 + t * (LS_ERF_B7 + t * (LS_ERF_B8 + t * (LS_ERF_B9 + t * (LS_ERF_B10))))))))));
        precise float aa = a * a;
        float e = ls_exp(ls_neg(aa));
        precise float eq = e * q;
        r = 1.0 - eq;
    } else {
        r = 1.0;
    }
    return uintBitsToFloat(floatBitsToUint(r) | (floatBitsToUint(x) & LS_SIGN));
}

#endif // LOCKSTEP_MATH_GLSL
