#version 450
// Float-model probes for the certification suite (hwtests/): one binary per
// PROBE (see manifest.json), each one operation the kernels rely on, applied
// to records the suite chooses so that the IEEE-754 answer is known. CPU
// reference: probe.rs. A device that passes every kernel test but fails a
// probe would only be waiting for an input that shows it.
//
// Every probe reads records of 3 words (a, b, c) from `inw` and writes
// OUT_WORDS words per record to `outw`.
#extension GL_GOOGLE_include_directive : require
#include "float_model.glsl"

#define PROBE_ADD 1
#define PROBE_SUB 2
#define PROBE_MUL 3
#define PROBE_MUL_ADD 4
#define PROBE_COPY 5
#define PROBE_CANON 6
#define PROBE_COMPARE 7
#define PROBE_CONVERT 8
#define PROBE_INT 9

// Float loads and stores are part of what is probed (a device that flushes
// subnormals may do it on a float load), so float probes see float buffers.
#if PROBE <= PROBE_COMPARE
#define IN_FLOAT 1
#else
#define IN_FLOAT 0
#endif
#if PROBE <= PROBE_CANON
#define OUT_FLOAT 1
#else
#define OUT_FLOAT 0
#endif

#if PROBE == PROBE_CONVERT
#define OUT_WORDS 4u
#elif PROBE == PROBE_INT
#define OUT_WORDS 10u
#else
#define OUT_WORDS 1u
#endif

layout(local_size_x = 64, local_size_y = 1, local_size_z = 1) in;

#if IN_FLOAT
layout(std430, set = 0, binding = 0) readonly buffer In_ { float inw[]; };
#else
layout(std430, set = 0, binding = 0) readonly buffer In_ { uint inw[]; };
#endif
#if OUT_FLOAT
layout(std430, set = 0, binding = 1) writeonly buffer Out_ { float outw[]; };
#else
layout(std430, set = 0, binding = 1) writeonly buffer Out_ { uint outw[]; };
#endif

layout(push_constant) uniform Params {
    uint records;
} pc;

void probe(uint i) {
    uint o = i * OUT_WORDS;
#if IN_FLOAT
    float a = inw[3u * i];
    float b = inw[3u * i + 1u];
    float c = inw[3u * i + 2u];
#else
    uint a = inw[3u * i];
    uint b = inw[3u * i + 1u];
    uint c = inw[3u * i + 2u];
#endif
#if PROBE == PROBE_ADD
    precise float r = a + b;
    outw[o] = canon(r);
#elif PROBE == PROBE_SUB
    precise float r = a - b;
    outw[o] = canon(r);
#elif PROBE == PROBE_MUL
    precise float r = a * b;
    outw[o] = canon(r);
#elif PROBE == PROBE_MUL_ADD
    // Two roundings: a device that fuses this into an fma gives another
    // answer for the records the suite picks.
    precise float p = a * b;
    precise float r = p + c;
    outw[o] = canon(r);
#elif PROBE == PROBE_COPY
    // No arithmetic: the value goes through a float load and a float store.
    outw[o] = a;
#elif PROBE == PROBE_CANON
    outw[o] = canon(a);
#elif PROBE == PROBE_COMPARE
    uint f = 0u;
    f |= (a < b) ? 1u : 0u;
    f |= (a == b) ? 2u : 0u;
    f |= (a > b) ? 4u : 0u;
    f |= (a <= b) ? 8u : 0u;
    f |= (a >= b) ? 16u : 0u;
    f |= (a != b) ? 32u : 0u;
    f |= is_nan(a) ? 64u : 0u;
    f |= (a > 0.0) ? 128u : 0u;
    outw[o] = f;
#elif PROBE == PROBE_CONVERT
    // The conversions the kernels use: uint and int to float, and float to
    // uint and int (truncation toward zero), on values in range.
    outw[o] = floatBitsToUint(float(a));
    outw[o + 1u] = floatBitsToUint(float(int(a)));
    outw[o + 2u] = uint(uintBitsToFloat(b));
    outw[o + 3u] = uint(int(uintBitsToFloat(c)));
#elif PROBE == PROBE_INT
    uint s = b & 31u;
    outw[o] = a << s;
    outw[o + 1u] = a >> s;
    outw[o + 2u] = uint(int(a) >> int(s));
    outw[o + 3u] = a ^ c;
    outw[o + 4u] = a & c;
    outw[o + 5u] = a | c;
    outw[o + 6u] = ~a;
    outw[o + 7u] = a + c;
    uint hi;
    uint lo;
    umulExtended(a, c, hi, lo);
    outw[o + 8u] = hi;
    outw[o + 9u] = lo;
#else
#error "unknown PROBE"
#endif
}

void main() {
    uint stride = gl_NumWorkGroups.x * 64u;
    for (uint i = gl_GlobalInvocationID.x; i < pc.records; i += stride) {
        probe(i);
    }
}
