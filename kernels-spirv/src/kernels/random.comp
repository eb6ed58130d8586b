#version 450
// Counter-based random numbers (Philox4x32-10), the same on every device.
// Element i of the output:
//   rand_uniform: block = offset + i/4, lane = i%4;
//                 y = uniform_from_bits(philox(ctr(block), key)[lane])
//   rand_normal:  block = offset + i/2, lanes 2*(i%2) and 2*(i%2)+1;
//                 y = normal_from_bits(x[a], x[b])
// with ctr(block) = (block lo, block hi, stream, 0) and key = (seed lo,
// seed hi). CPU reference: random.rs; the functions are in math.glsl.
#extension GL_GOOGLE_include_directive : require
#include "float_model.glsl"
#include "math.glsl"

#define OP_UNIFORM 1
#define OP_NORMAL 2

layout(local_size_x = 256, local_size_y = 1, local_size_z = 1) in;

layout(std430, set = 0, binding = 0) writeonly buffer Out_ { float outv[]; };

layout(push_constant) uniform Params {
    uint len;
    uint seed_lo;
    uint seed_hi;
    uint stream;
    uint offset_lo;
    uint offset_hi;
} pc;

#if OP == OP_UNIFORM
#define PER_BLOCK 4u
#else
#define PER_BLOCK 2u
#endif

void main() {
    uint stride = gl_NumWorkGroups.x * 256u;
    for (uint i = gl_GlobalInvocationID.x; i < pc.len; i += stride) {
        // 64-bit block = offset + i / PER_BLOCK, in two 32-bit halves.
        uint add = i / PER_BLOCK;
        uint lo = pc.offset_lo + add;
        uint hi = pc.offset_hi + (lo < add ? 1u : 0u);
        uvec4 r = philox4x32_10(uvec4(lo, hi, pc.stream, 0u), uvec2(pc.seed_lo, pc.seed_hi));
        uint lane = i % PER_BLOCK;
#if OP == OP_UNIFORM
        outv[i] = canon(ls_uniform_from_bits(r[lane]));
#else
        outv[i] = canon(lane == 0u ? ls_normal_from_bits(r.x, r.y) : ls_normal_from_bits(r.z, r.w));
#endif
    }
}
