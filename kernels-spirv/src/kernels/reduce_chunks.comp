#version 450
// First pass of sum_rows / sum_cols: the tensor is viewed as
// [outer, len, inner] and reduced along len. Output P is [outer, nc, inner]
// with nc = ceil(len / CHUNK):
//   P[o, c, i] = fold over l in [c*CHUNK, min(len, (c+1)*CHUNK)) ascending of
//                acc = acc + X[o, l, i], acc starting at +0.0.
// reduce_tree.comp then combines the chunks with the fixed pairwise tree.
// CHUNK is part of the op's definition (docs/float-model.md), not a tuning
// knob: changing it changes the bits. CPU reference: reduce.rs.
#extension GL_GOOGLE_include_directive : require
#include "float_model.glsl"

#define CHUNK 64u

layout(local_size_x = 256, local_size_y = 1, local_size_z = 1) in;

layout(std430, set = 0, binding = 0) readonly buffer X_ { float x[]; };
layout(std430, set = 0, binding = 1) writeonly buffer P_ { float p[]; };

layout(push_constant) uniform Params {
    uint outer;
    uint len;
    uint inner;
    uint nc;
} pc;

void main() {
    uint total = pc.outer * pc.nc * pc.inner;
    uint stride = gl_NumWorkGroups.x * 256u;
    for (uint t = gl_GlobalInvocationID.x; t < total; t += stride) {
        // Output element t = (o, c, i) in row-major order.
        uint i = t % pc.inner;
        uint oc = t / pc.inner;
        uint c = oc % pc.nc;
        uint o = oc / pc.nc;
        uint l0 = c * CHUNK;
        uint l1 = min(pc.len, l0 + CHUNK);
        uint base = o * pc.len * pc.inner + i;
        precise float acc = 0.0;
        for (uint l = l0; l < l1; l++) {
            acc = acc + x[base + l * pc.inner];
        }
        p[t] = canon(acc);
    }
}
