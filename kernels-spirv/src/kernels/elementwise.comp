#version 450
// Element-wise kernels, one binary per OP (see manifest.json). Definitions
// in docs/float-model.md; CPU reference: elementwise.rs. One rounding per
// operation, NoContraction, NaN outputs canonical.
#extension GL_GOOGLE_include_directive : require
#include "float_model.glsl"

#define OP_ADD 1
#define OP_SUB 2
#define OP_MUL 3
#define OP_SCALE 4
#define OP_RELU 5
#define OP_RELU_BACKWARD 6
#define OP_AFFINE 7
#define OP_AXPBY 8
#define OP_SGD_UPDATE 9
#define OP_TANH_BACKWARD 10
// Ops from here on use the software math library.
#define OP_DIV 11
#define OP_DIV_SCALAR 12
#define OP_EXP 13
#define OP_LOG 14
#define OP_TANH 15
#define OP_SIGMOID 16
#define OP_GELU 17
#define OP_SQRT 18
#define OP_GELU_BACKWARD 19
#define OP_ERF 20
// Three operands: condition, then, else.
#define OP_WHERE 21
// Comparisons: 1.0 where true, 0.0 where false (NaN compares false).
#define OP_GREATER 22
#define OP_LESS 23
#define OP_EQUAL 24

#if OP >= OP_DIV
#include "math.glsl"
#endif

#if OP == OP_WHERE
#define TERNARY 1
#else
#define TERNARY 0
#endif

#if OP == OP_ADD || OP == OP_SUB || OP == OP_MUL || OP == OP_RELU_BACKWARD || OP == OP_AXPBY \
    || OP == OP_SGD_UPDATE || OP == OP_TANH_BACKWARD || OP == OP_DIV || OP == OP_GELU_BACKWARD \
    || OP == OP_GREATER || OP == OP_LESS || OP == OP_EQUAL
#define BINARY 1
#else
#define BINARY 0
#endif

layout(local_size_x = 256, local_size_y = 1, local_size_z = 1) in;

layout(std430, set = 0, binding = 0) readonly buffer X_ { float x[]; };
#if TERNARY
layout(std430, set = 0, binding = 1) readonly buffer Y_ { float y[]; };
layout(std430, set = 0, binding = 2) readonly buffer Z_ { float z[]; };
layout(std430, set = 0, binding = 3) writeonly buffer Out_ { float outv[]; };
#elif BINARY
layout(std430, set = 0, binding = 1) readonly buffer Y_ { float y[]; };
layout(std430, set = 0, binding = 2) writeonly buffer Out_ { float outv[]; };
#else
layout(std430, set = 0, binding = 1) writeonly buffer Out_ { float outv[]; };
#endif

layout(push_constant) uniform Params {
    uint len;
    // Scalar attributes, passed as bits so no conversion can touch them.
    uint alpha_bits;
    uint beta_bits;
} pc;

#if OP == OP_GREATER || OP == OP_LESS || OP == OP_EQUAL
// Comparisons on bits, so a device that flushes subnormals compares them
// as the model says: the magnitude bits, negated for a negative sign, as a
// signed integer orders every non-NaN float, with -0 and +0 both 0.
bool cmp_nan(uint b) {
    return (b & 0x7FFFFFFFu) > 0x7F800000u;
}
int cmp_key(uint b) {
    int mag = int(b & 0x7FFFFFFFu);
    return (b >> 31) != 0u ? -mag : mag;
}
#endif

float apply(uint i) {
    float xv = x[i];
    float alpha = uintBitsToFloat(pc.alpha_bits);
    float beta = uintBitsToFloat(pc.beta_bits);
#if OP == OP_ADD
    precise float r = xv + y[i];
#elif OP == OP_SUB
    precise float r = xv - y[i];
#elif OP == OP_MUL
    precise float r = xv * y[i];
#elif OP == OP_SCALE
    precise float r = xv * alpha;
#elif OP == OP_RELU
    float r = (is_nan(xv) || xv > 0.0) ? xv : 0.0;
#elif OP == OP_RELU_BACKWARD
    float yv = y[i];
    float r = is_nan(yv) ? yv : (yv > 0.0 ? xv : 0.0);
#elif OP == OP_AFFINE
    precise float r = xv * alpha + beta;
#elif OP == OP_AXPBY
    precise float ax = alpha * xv;
    precise float by = beta * y[i];
    precise float r = ax + by;
#elif OP == OP_SGD_UPDATE
    precise float step = alpha * y[i];
    precise float r = xv - step;
#elif OP == OP_TANH_BACKWARD
    // x = upstream gradient, y = tanh output.
    float yv = y[i];
    precise float yy = yv * yv;
    precise float d = 1.0 - yy;
    precise float r = xv * d;
#elif OP == OP_DIV
    float r = ls_div(xv, y[i]);
#elif OP == OP_DIV_SCALAR
    float r = ls_div(xv, alpha);
#elif OP == OP_EXP
    float r = ls_exp(xv);
#elif OP == OP_LOG
    float r = ls_log(xv);
#elif OP == OP_TANH
    float r = ls_tanh(xv);
#elif OP == OP_SIGMOID
    float r = ls_sigmoid(xv);
#elif OP == OP_GELU
    float r = ls_gelu(xv);
#elif OP == OP_SQRT
    float r = ls_sqrt(xv);
#elif OP == OP_ERF
    float r = ls_erf(xv);
#elif OP == OP_WHERE
    // The condition is tested on its bits: anything but ±0 (NaN and
    // subnormals included) picks y, whatever the device does with floats.
    float r = (floatBitsToUint(xv) & 0x7FFFFFFFu) != 0u ? y[i] : z[i];
#elif OP == OP_GREATER || OP == OP_LESS || OP == OP_EQUAL
    uint xb = floatBitsToUint(xv);
    uint yb = floatBitsToUint(y[i]);
    bool t = false;
    if (!cmp_nan(xb) && !cmp_nan(yb)) {
#if OP == OP_GREATER
        t = cmp_key(xb) > cmp_key(yb);
#elif OP == OP_LESS
        t = cmp_key(xb) < cmp_key(yb);
#else
        t = cmp_key(xb) == cmp_key(yb);
#endif
    }
    float r = t ? 1.0 : 0.0;
#elif OP == OP_GELU_BACKWARD
    // x = upstream gradient, y = forward input.
    float g = ls_gelu_grad(y[i]);
    precise float r = xv * g;
#else
#error "unknown OP"
#endif
    return canon(r);
}

void main() {
    uint stride = gl_NumWorkGroups.x * 256u;
    for (uint i = gl_GlobalInvocationID.x; i < pc.len; i += stride) {
        outv[i] = apply(i);
    }
}
