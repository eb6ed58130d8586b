#version 450
// matmul_tiled family: the same ops as matmul.comp (matmul, matmul_tn,
// matmul_nt; same definition, same bits), organised for GPUs, where staging
// operands in shared memory is what makes a matmul fast. The backend loads
// these on GPU devices and matmul.comp on CPU devices (lavapipe), where
// shared memory and barriers cost more than they save (docs/benchmarks.md).
// CI tests both families bit for bit against the CPU reference on lavapipe.
//
// Definition (docs/float-model.md): C[i,j] = fold over p = 0..k-1 ascending of
// acc = acc + A[i,p] * B[p,j], acc starting at +0.0; the product and the sum
// are each rounded once (NoContraction). CPU reference: matmul.rs.
//
// Tiling: a workgroup of 16x16 invocations computes a 64x64 tile of C, each
// invocation a 4x4 block in registers (rows ty + 16r, columns tx + 16c), from
// 16-deep slices of A and B staged in shared memory. Tiling changes where the
// operands come from, never the order in which one output accumulates them.
// Zero padding past k adds products 0*0 = +0.0, which leaves every
// accumulator unchanged: an accumulator that starts at +0.0 can never become
// -0.0 under round-to-nearest-even, and x + (+0.0) == x for every other x.
#extension GL_GOOGLE_include_directive : require
#include "float_model.glsl"

#ifndef TRANS_A
#define TRANS_A 0
#endif
#ifndef TRANS_B
#define TRANS_B 0
#endif

// Keep TILE in step with MATMUL_TILED_TILE in firmware/vulkan/src/plan.rs.
#define TILE 64
#define BK 16
#define WG 16
#define RB 4

layout(local_size_x = WG, local_size_y = WG, local_size_z = 1) in;

layout(std430, set = 0, binding = 0) readonly buffer A_ { float a[]; };
layout(std430, set = 0, binding = 1) readonly buffer B_ { float b[]; };
layout(std430, set = 0, binding = 2) writeonly buffer C_ { float c[]; };

layout(push_constant) uniform Params {
    uint m;
    uint n;
    uint k;
} pc;

shared float As[BK][TILE];
shared float Bs[BK][TILE];

float load_a(uint i, uint p) {
    if (i >= pc.m || p >= pc.k) {
        return 0.0;
    }
#if TRANS_A
    return a[p * pc.m + i];
#else
    return a[i * pc.k + p];
#endif
}

float load_b(uint p, uint j) {
    if (p >= pc.k || j >= pc.n) {
        return 0.0;
    }
#if TRANS_B
    return b[j * pc.k + p];
#else
    return b[p * pc.n + j];
#endif
}

void main() {
    uint tx = gl_LocalInvocationID.x;
    uint ty = gl_LocalInvocationID.y;
    uint lid = ty * WG + tx;
    uint tiles_x = (pc.n + TILE - 1) / TILE;
    uint tiles_y = (pc.m + TILE - 1) / TILE;

    // Grid-stride over tiles: a dispatch clamped to the device's workgroup
    // count limits still covers every tile, each computed the same way.
    for (uint tile_y = gl_WorkGroupID.y; tile_y < tiles_y; tile_y += gl_NumWorkGroups.y) {
        for (uint tile_x = gl_WorkGroupID.x; tile_x < tiles_x; tile_x += gl_NumWorkGroups.x) {
            uint row0 = tile_y * TILE;
            uint col0 = tile_x * TILE;
            precise float acc[RB][RB];
            for (uint r = 0; r < RB; r++) {
                for (uint q = 0; q < RB; q++) {
                    acc[r][q] = 0.0;
                }
            }
            for (uint p0 = 0; p0 < pc.k; p0 += BK) {
                // 256 invocations stage BK x TILE = 1024 values of each operand.
                for (uint e = lid; e < BK * TILE; e += WG * WG) {
                    uint kk = e / TILE;
                    uint t = e % TILE;
                    As[kk][t] = load_a(row0 + t, p0 + kk);
                    Bs[kk][t] = load_b(p0 + kk, col0 + t);
                }
                barrier();
                for (uint kk = 0; kk < BK; kk++) {
                    float av[RB];
                    float bv[RB];
                    for (uint r = 0; r < RB; r++) {
                        av[r] = As[kk][ty + WG * r];
                    }
                    for (uint q = 0; q < RB; q++) {
                        bv[q] = Bs[kk][tx + WG * q];
                    }
                    for (uint r = 0; r < RB; r++) {
                        for (uint q = 0; q < RB; q++) {
                            precise float prod = av[r] * bv[q];
                            acc[r][q] = acc[r][q] + prod;
                        }
                    }
                }
                barrier();
            }
            for (uint r = 0; r < RB; r++) {
                uint i = row0 + ty + WG * r;
                for (uint q = 0; q < RB; q++) {
                    uint j = col0 + tx + WG * q;
                    if (i < pc.m && j < pc.n) {
                        c[i * pc.n + j] = canon(acc[r][q]);
                    }
                }
            }
        }
    }
}
