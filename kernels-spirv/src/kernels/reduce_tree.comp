#version 450
// One level group of the fixed pairwise tree that combines reduce_chunks'
// partial sums. The input is viewed as [outer, len, inner]; the output is
// [outer, ceil(len / FAN), inner], each element the tree sum of one aligned
// block of FAN consecutive inputs along len:
//   for w = 1, 2, 4, .. FAN/2: for each i multiple of 2w with i + w < cnt:
//       v[i] = v[i] + v[i + w]
// i.e. adjacent pairs level by level, an odd last element carried up
// unchanged. Because blocks are aligned to powers of two, running this pass
// until one element is left computes exactly the tree over all of len, for
// any FAN; FAN only decides how many passes it takes. CPU reference: reduce.rs.
#extension GL_GOOGLE_include_directive : require
#include "float_model.glsl"

#define FAN 16u

layout(local_size_x = 256, local_size_y = 1, local_size_z = 1) in;

layout(std430, set = 0, binding = 0) readonly buffer X_ { float x[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Out_ { float outv[]; };

layout(push_constant) uniform Params {
    uint outer;
    uint len;
    uint inner;
    uint out_len;
} pc;

void main() {
    uint total = pc.outer * pc.out_len * pc.inner;
    uint stride = gl_NumWorkGroups.x * 256u;
    for (uint t = gl_GlobalInvocationID.x; t < total; t += stride) {
        uint i = t % pc.inner;
        uint ob = t / pc.inner;
        uint blk = ob % pc.out_len;
        uint o = ob / pc.out_len;
        uint l0 = blk * FAN;
        uint cnt = min(FAN, pc.len - l0);
        uint base = o * pc.len * pc.inner + i;
        float v[FAN];
        for (uint e = 0; e < FAN; e++) {
            v[e] = 0.0;
            if (e < cnt) {
                v[e] = x[base + (l0 + e) * pc.inner];
            }
        }
        for (uint w = 1; w < FAN; w *= 2u) {
            for (uint e = 0; e + w < cnt; e += 2u * w) {
                precise float s = v[e] + v[e + w];
                v[e] = s;
            }
        }
        outv[t] = canon(v[0]);
    }
}
