#version 450
// Element-wise kernels, one binary per OP (see manifest.json):
//   add: x + y   sub: x - y   mul: x * y   scale: x * alpha
//   relu: NaN -> NaN, x > 0 ? x : +0.0
//   relu_backward (x = dy, y = forward input): y NaN -> NaN, y > 0 ? dy : +0.0
// One rounding per operation, NoContraction, NaN outputs canonical.
// CPU reference: elementwise.rs.
#extension GL_GOOGLE_include_directive : require
#include "float_model.glsl"

#define OP_ADD 1
#define OP_SUB 2
#define OP_MUL 3
#define OP_SCALE 4
#define OP_RELU 5
#define OP_RELU_BACKWARD 6

#if OP == OP_ADD || OP == OP_SUB || OP == OP_MUL || OP == OP_RELU_BACKWARD
#define BINARY 1
#else
#define BINARY 0
#endif

layout(local_size_x = 256, local_size_y = 1, local_size_z = 1) in;

layout(std430, set = 0, binding = 0) readonly buffer X_ { float x[]; };
#if BINARY
layout(std430, set = 0, binding = 1) readonly buffer Y_ { float y[]; };
layout(std430, set = 0, binding = 2) writeonly buffer Out_ { float outv[]; };
#else
layout(std430, set = 0, binding = 1) writeonly buffer Out_ { float outv[]; };
#endif

layout(push_constant) uniform Params {
    uint len;
    // scale's factor, passed as bits so no conversion can touch it.
    uint alpha_bits;
} pc;

float apply(uint i) {
    float xv = x[i];
#if OP == OP_ADD
    precise float r = xv + y[i];
#elif OP == OP_SUB
    precise float r = xv - y[i];
#elif OP == OP_MUL
    precise float r = xv * y[i];
#elif OP == OP_SCALE
    precise float r = xv * uintBitsToFloat(pc.alpha_bits);
#elif OP == OP_RELU
    float r = is_nan(xv) ? xv : (xv > 0.0 ? xv : 0.0);
#elif OP == OP_RELU_BACKWARD
    float yv = y[i];
    float r = is_nan(yv) ? yv : (yv > 0.0 ? xv : 0.0);
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
