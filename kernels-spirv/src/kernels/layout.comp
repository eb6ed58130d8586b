#version 450
// Kernels that move or broadcast values (one binary per OP; CPU reference:
// layout.rs):
//   bias_add    (x m x n, b n)      -> x[i,j] + b[j]
//   transpose   (x m x n)           -> n x m, exact copy
//   set_element (dst, value, index) -> dst with element index replaced by
//                                      value when index is an integer in
//                                      [0, len); dst unchanged otherwise
#extension GL_GOOGLE_include_directive : require
#include "float_model.glsl"

#define OP_BIAS_ADD 1
#define OP_TRANSPOSE 2
#define OP_SET_ELEMENT 3

layout(local_size_x = 256, local_size_y = 1, local_size_z = 1) in;

layout(std430, set = 0, binding = 0) readonly buffer X_ { float x[]; };
#if OP == OP_BIAS_ADD
layout(std430, set = 0, binding = 1) readonly buffer B_ { float b[]; };
layout(std430, set = 0, binding = 2) writeonly buffer Out_ { float outv[]; };
#elif OP == OP_TRANSPOSE
layout(std430, set = 0, binding = 1) writeonly buffer Out_ { float outv[]; };
#else
layout(std430, set = 0, binding = 1) readonly buffer V_ { float value[]; };
layout(std430, set = 0, binding = 2) readonly buffer I_ { float index[]; };
layout(std430, set = 0, binding = 3) writeonly buffer Out_ { float outv[]; };
#endif

layout(push_constant) uniform Params {
    uint m;
    uint n;
} pc;

void main() {
    uint len = pc.m * pc.n;
    uint stride = gl_NumWorkGroups.x * 256u;
#if OP == OP_SET_ELEMENT
    float fi = index[0];
    uint target = len;
    if (fi >= 0.0 && fi < float(len) && float(uint(fi)) == fi) {
        target = uint(fi);
    }
#endif
    for (uint t = gl_GlobalInvocationID.x; t < len; t += stride) {
#if OP == OP_BIAS_ADD
        precise float r = x[t] + b[t % pc.n];
        outv[t] = canon(r);
#elif OP == OP_TRANSPOSE
        // Output element t = (j, i) of the n x m result.
        uint j = t / pc.m;
        uint i = t % pc.m;
        outv[t] = canon(x[i * pc.n + j]);
#else
        outv[t] = canon(t == target ? value[0] : x[t]);
#endif
    }
}
