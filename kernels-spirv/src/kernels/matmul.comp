#version 450
// matmul family: C (m x n) = op(A) * op(B), where op is identity or transpose
// as selected by TRANS_A / TRANS_B at build time (see manifest.json).
//   matmul     : A m x k, B k x n
//   matmul_tn  : A k x m (C = A^T B)
//   matmul_nt  : B n x k (C = A B^T)
// Definition (docs/float-model.md): C[i,j] = fold over p = 0..k-1 ascending of
// acc = acc + A[i,p] * B[p,j], acc starting at +0.0; the product and the sum
// are each rounded once (NoContraction). CPU reference: matmul.rs.
//
// Blocking: a workgroup of WG invocations computes a TM x TN tile of C
// (TN = WG * CN). Every invocation of the workgroup shares the same TM rows,
// so each A element is one workgroup-uniform load, and each invocation holds
// a TM x CN block of accumulators in registers (columns lid + WG*q), so each
// B element it loads feeds TM products. The tile shape decides only which
// invocation computes an output, never the order of its k loop.
//
// Operands are read straight from the storage buffers: on lavapipe a
// shared-memory staged variant of this kernel measured 2.9 GFLOP/s against
// 12.4 for this one at 1024^3 (docs/benchmarks.md).
//
// Edge tiles clamp their row and column indices into range instead of
// branching: the clamped lanes compute a duplicate of a real output that is
// never stored, and every stored output reads exactly its own operands.
#extension GL_GOOGLE_include_directive : require
#include "float_model.glsl"

#ifndef TRANS_A
#define TRANS_A 0
#endif
#ifndef TRANS_B
#define TRANS_B 0
#endif

// Keep TM and TN in step with MATMUL_TILE_M / MATMUL_TILE_N in
// firmware/vulkan/src/plan.rs, and WG with workgroup_size in manifest.json.
#define WG 32
#define TM 16
#define CN 8
#define TN (WG * CN)

layout(local_size_x = WG, local_size_y = 1, local_size_z = 1) in;

layout(std430, set = 0, binding = 0) readonly buffer A_ { float a[]; };
layout(std430, set = 0, binding = 1) readonly buffer B_ { float b[]; };
layout(std430, set = 0, binding = 2) writeonly buffer C_ { float c[]; };

layout(push_constant) uniform Params {
    uint m;
    uint n;
    uint k;
} pc;

float load_a(uint i, uint p) {
#if TRANS_A
    return a[p * pc.m + i];
#else
    return a[i * pc.k + p];
#endif
}

float load_b(uint p, uint j) {
#if TRANS_B
    return b[j * pc.k + p];
#else
    return b[p * pc.n + j];
#endif
}

void main() {
    uint lid = gl_LocalInvocationID.x;
    uint tiles_x = (pc.n + TN - 1) / TN;
    uint tiles_y = (pc.m + TM - 1) / TM;

    // Grid-stride over tiles: a dispatch clamped to the device's workgroup
    // count limits still covers every tile, each computed the same way.
    for (uint tile_y = gl_WorkGroupID.y; tile_y < tiles_y; tile_y += gl_NumWorkGroups.y) {
        for (uint tile_x = gl_WorkGroupID.x; tile_x < tiles_x; tile_x += gl_NumWorkGroups.x) {
            uint row0 = tile_y * TM;
            uint col0 = tile_x * TN;
            precise float acc[TM][CN];
            for (uint r = 0; r < TM; r++) {
                for (uint q = 0; q < CN; q++) {
                    acc[r][q] = 0.0;
                }
            }
            for (uint p = 0; p < pc.k; p++) {
                float bv[CN];
                for (uint q = 0; q < CN; q++) {
                    bv[q] = load_b(p, min(col0 + lid + WG * q, pc.n - 1));
                }
                for (uint r = 0; r < TM; r++) {
                    float av = load_a(min(row0 + r, pc.m - 1), p);
                    for (uint q = 0; q < CN; q++) {
                        precise float prod = av * bv[q];
                        acc[r][q] = acc[r][q] + prod;
                    }
                }
            }
            for (uint r = 0; r < TM; r++) {
                uint i = row0 + r;
                for (uint q = 0; q < CN; q++) {
                    uint j = col0 + lid + WG * q;
                    if (i < pc.m && j < pc.n) {
                        c[i * pc.n + j] = canon(acc[r][q]);
                    }
                }
            }
        }
    }
}
