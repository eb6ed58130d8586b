#version 450
// Kernels that move or broadcast values (one binary per OP; CPU reference:
// layout.rs):
//   bias_add    (x m x n, b n)      -> x[i,j] + b[j]
//   transpose   (x m x n)           -> n x m, exact copy
//   set_element (dst, value, index) -> dst with element index replaced by
//                                      value when index is an integer in
//                                      [0, len); dst unchanged otherwise
//   concat      (a m x p, b m x q)  -> m x (p+q): a's row, then b's
//   slice       (x)                 -> m x n: out[r,c] = x[r*a + b + c]
//   gather_rows (table v x n, index k) -> k x n: row index[r] of the table
//                                      when it is an integer in [0, v);
//                                      a row of canonical NaN otherwise
//   fill        ()                  -> m x n copies of the value a (bits)
//   permute     (x, rank <= 4)      -> x with its axes reordered: output
//                                      element (i0,i1,i2,i3) of dims d is
//                                      x[i0*s0 + i1*s1 + i2*s2 + i3*s3]
// Every value is copied through canon(): data movement never changes a
// number, only a NaN's payload to the canonical one.
#extension GL_GOOGLE_include_directive : require
#include "float_model.glsl"

#define OP_BIAS_ADD 1
#define OP_TRANSPOSE 2
#define OP_SET_ELEMENT 3
#define OP_CONCAT 4
#define OP_SLICE 5
#define OP_GATHER_ROWS 6
#define OP_FILL 7
#define OP_PERMUTE 8

layout(local_size_x = 256, local_size_y = 1, local_size_z = 1) in;

#if OP == OP_FILL
layout(std430, set = 0, binding = 0) writeonly buffer Out_ { float outv[]; };
#else
layout(std430, set = 0, binding = 0) readonly buffer X_ { float x[]; };
#endif
#if OP == OP_FILL
#elif OP == OP_CONCAT
layout(std430, set = 0, binding = 1) readonly buffer Y_ { float y[]; };
layout(std430, set = 0, binding = 2) writeonly buffer Out_ { float outv[]; };
#elif OP == OP_SLICE || OP == OP_PERMUTE
layout(std430, set = 0, binding = 1) writeonly buffer Out_ { float outv[]; };
#elif OP == OP_GATHER_ROWS
layout(std430, set = 0, binding = 1) readonly buffer I_ { float index[]; };
layout(std430, set = 0, binding = 2) writeonly buffer Out_ { float outv[]; };
#elif OP == OP_BIAS_ADD
layout(std430, set = 0, binding = 1) readonly buffer B_ { float b[]; };
layout(std430, set = 0, binding = 2) writeonly buffer Out_ { float outv[]; };
#elif OP == OP_TRANSPOSE
layout(std430, set = 0, binding = 1) writeonly buffer Out_ { float outv[]; };
#else
layout(std430, set = 0, binding = 1) readonly buffer V_ { float value[]; };
layout(std430, set = 0, binding = 2) readonly buffer I_ { float index[]; };
layout(std430, set = 0, binding = 3) writeonly buffer Out_ { float outv[]; };
#endif

#if OP <= OP_SET_ELEMENT
layout(push_constant) uniform Params {
    uint m;
    uint n;
} pc;
#elif OP == OP_PERMUTE
// The output's dims (leading ones 1 for rank < 4) and, for each output
// axis, the stride of the input axis it reads.
layout(push_constant) uniform Params {
    uint d0;
    uint d1;
    uint d2;
    uint d3;
    uint s0;
    uint s1;
    uint s2;
    uint s3;
} pc;
#else
layout(push_constant) uniform Params {
    uint m;
    uint n;
    uint a;
    uint b;
} pc;
#endif

void main() {
#if OP == OP_CONCAT
    uint len = pc.m * (pc.n + pc.a);
#elif OP == OP_PERMUTE
    uint len = pc.d0 * pc.d1 * pc.d2 * pc.d3;
#else
    uint len = pc.m * pc.n;
#endif
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
#elif OP == OP_SET_ELEMENT
        outv[t] = canon(t == target ? value[0] : x[t]);
#elif OP == OP_CONCAT
        // n = p (a's columns), a = q (b's columns).
        uint w = pc.n + pc.a;
        uint r = t / w;
        uint c = t % w;
        outv[t] = canon(c < pc.n ? x[r * pc.n + c] : y[r * pc.a + (c - pc.n)]);
#elif OP == OP_SLICE
        // a = x's row stride, b = the offset of the first element.
        uint r = t / pc.n;
        uint c = t % pc.n;
        outv[t] = canon(x[r * pc.a + pc.b + c]);
#elif OP == OP_GATHER_ROWS
        // m = rows out (indices), n = row width, a = the table's rows.
        uint r = t / pc.n;
        uint c = t % pc.n;
        float fi = index[r];
        if (fi >= 0.0 && fi < float(pc.a) && float(uint(fi)) == fi) {
            outv[t] = canon(x[uint(fi) * pc.n + c]);
        } else {
            outv[t] = uintBitsToFloat(CANONICAL_NAN_BITS);
        }
#elif OP == OP_FILL
        outv[t] = canon(uintBitsToFloat(pc.a));
#elif OP == OP_PERMUTE
        uint i3 = t % pc.d3;
        uint r = t / pc.d3;
        uint i2 = r % pc.d2;
        r = r / pc.d2;
        uint i1 = r % pc.d1;
        uint i0 = r / pc.d1;
        outv[t] = canon(x[i0 * pc.s0 + i1 * pc.s1 + i2 * pc.s2 + i3 * pc.s3]);
#else
#error "unknown OP"
#endif
    }
}
