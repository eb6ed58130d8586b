#version 450
// Row-wise kernels over an m x n matrix, one invocation per row, every
// reduction a sequential fold over the row in ascending column order (the
// definitions, with their exact operation order, are in
// docs/float-model.md). One binary per OP; CPU reference: rows.rs.
//
// One invocation per row keeps each reduction order trivially fixed; rows
// in the models Lockstep runs are hundreds to a few thousand wide.
#extension GL_GOOGLE_include_directive : require
#include "float_model.glsl"
#include "math.glsl"

#define OP_SOFTMAX 1
#define OP_LOG_SOFTMAX 2
#define OP_LAYERNORM 3
#define OP_LAYERNORM_BACKWARD 4
#define OP_LAYERNORM_DY_XHAT 5
#define OP_CROSS_ENTROPY_ROWS 6
#define OP_CROSS_ENTROPY_BACKWARD 7
#define OP_ARGMAX 8
#define OP_MAX_ROWS 9

layout(local_size_x = 64, local_size_y = 1, local_size_z = 1) in;

layout(std430, set = 0, binding = 0) readonly buffer X_ { float x[]; };
#if OP == OP_SOFTMAX || OP == OP_LOG_SOFTMAX || OP == OP_ARGMAX || OP == OP_MAX_ROWS
layout(std430, set = 0, binding = 1) writeonly buffer Out_ { float outv[]; };
#elif OP == OP_LAYERNORM
layout(std430, set = 0, binding = 1) readonly buffer G_ { float gamma[]; };
layout(std430, set = 0, binding = 2) readonly buffer B_ { float beta[]; };
layout(std430, set = 0, binding = 3) writeonly buffer Out_ { float outv[]; };
#elif OP == OP_LAYERNORM_BACKWARD
// x is dy here; xin the forward input.
layout(std430, set = 0, binding = 1) readonly buffer Xin_ { float xin[]; };
layout(std430, set = 0, binding = 2) readonly buffer G_ { float gamma[]; };
layout(std430, set = 0, binding = 3) writeonly buffer Out_ { float outv[]; };
#elif OP == OP_LAYERNORM_DY_XHAT
layout(std430, set = 0, binding = 1) readonly buffer Xin_ { float xin[]; };
layout(std430, set = 0, binding = 2) writeonly buffer Out_ { float outv[]; };
#else
// Cross entropy: x are the logits, labels one float class id per row.
layout(std430, set = 0, binding = 1) readonly buffer L_ { float labels[]; };
layout(std430, set = 0, binding = 2) writeonly buffer Out_ { float outv[]; };
#endif

layout(push_constant) uniform Params {
    uint m;
    uint n;
    uint eps_bits;
} pc;

#define NAN uintBitsToFloat(CANONICAL_NAN_BITS)

// Row maximum: starts at the first element, replaced only by a strictly
// greater one (a NaN never replaces it; a NaN first element stays).
float row_max(uint base) {
    float mx = x[base];
    for (uint j = 1; j < pc.n; j++) {
        float v = x[base + j];
        if (v > mx) {
            mx = v;
        }
    }
    return mx;
}

// sum_j exp(x_j - mx), ascending from +0.0.
float row_exp_sum(uint base, float mx) {
    precise float s = 0.0;
    for (uint j = 0; j < pc.n; j++) {
        precise float d = x[base + j] - mx;
        s = s + ls_exp(d);
    }
    return s;
}

// A label is valid when it is an integer in [0, n); returns n otherwise.
uint label_index(float l) {
    if (!(l >= 0.0) || !(l < float(pc.n))) {
        return pc.n;
    }
    uint k = uint(l);
    return float(k) == l ? k : pc.n;
}

#if OP == OP_LAYERNORM || OP == OP_LAYERNORM_BACKWARD || OP == OP_LAYERNORM_DY_XHAT
// Mean and reciprocal standard deviation of row `base` of `src`:
// mean = fold(x) / n; var = fold((x - mean)^2) / n; rstd = 1 / sqrt(var + eps).
#if OP == OP_LAYERNORM
#define SRC x
#else
#define SRC xin
#endif
void row_stats(uint base, out float mean, out float rstd) {
    float nf = float(pc.n);
    precise float s = 0.0;
    for (uint j = 0; j < pc.n; j++) {
        s = s + SRC[base + j];
    }
    mean = ls_div(s, nf);
    precise float q = 0.0;
    for (uint j = 0; j < pc.n; j++) {
        precise float d = SRC[base + j] - mean;
        precise float dd = d * d;
        q = q + dd;
    }
    float var = ls_div(q, nf);
    precise float ve = var + uintBitsToFloat(pc.eps_bits);
    rstd = ls_div(1.0, ls_sqrt(ve));
}
#endif

void row(uint i) {
    uint base = i * pc.n;
#if OP == OP_SOFTMAX
    float mx = row_max(base);
    float s = row_exp_sum(base, mx);
    for (uint j = 0; j < pc.n; j++) {
        precise float d = x[base + j] - mx;
        outv[base + j] = canon(ls_div(ls_exp(d), s));
    }
#elif OP == OP_LOG_SOFTMAX
    float mx = row_max(base);
    float ls = ls_log(row_exp_sum(base, mx));
    for (uint j = 0; j < pc.n; j++) {
        precise float d = x[base + j] - mx;
        precise float r = d - ls;
        outv[base + j] = canon(r);
    }
#elif OP == OP_LAYERNORM
    float mean;
    float rstd;
    row_stats(base, mean, rstd);
    for (uint j = 0; j < pc.n; j++) {
        precise float d = x[base + j] - mean;
        precise float xh = d * rstd;
        precise float r = xh * gamma[j] + beta[j];
        outv[base + j] = canon(r);
    }
#elif OP == OP_LAYERNORM_BACKWARD
    float mean;
    float rstd;
    row_stats(base, mean, rstd);
    float nf = float(pc.n);
    precise float sg = 0.0;
    precise float sgx = 0.0;
    for (uint j = 0; j < pc.n; j++) {
        precise float d = xin[base + j] - mean;
        precise float xh = d * rstd;
        precise float g = x[base + j] * gamma[j];
        sg = sg + g;
        precise float gx = g * xh;
        sgx = sgx + gx;
    }
    float mg = ls_div(sg, nf);
    float mgx = ls_div(sgx, nf);
    for (uint j = 0; j < pc.n; j++) {
        precise float d = xin[base + j] - mean;
        precise float xh = d * rstd;
        precise float g = x[base + j] * gamma[j];
        precise float a = g - mg;
        precise float b = xh * mgx;
        precise float c = a - b;
        precise float r = rstd * c;
        outv[base + j] = canon(r);
    }
#elif OP == OP_LAYERNORM_DY_XHAT
    float mean;
    float rstd;
    row_stats(base, mean, rstd);
    for (uint j = 0; j < pc.n; j++) {
        precise float d = xin[base + j] - mean;
        precise float xh = d * rstd;
        precise float r = x[base + j] * xh;
        outv[base + j] = canon(r);
    }
#elif OP == OP_CROSS_ENTROPY_ROWS
    uint k = label_index(labels[i]);
    if (k == pc.n || pc.n == 0u) {
        outv[i] = NAN;
        return;
    }
    float mx = row_max(base);
    float ls = ls_log(row_exp_sum(base, mx));
    precise float d = x[base + k] - mx;
    precise float r = ls - d;
    outv[i] = canon(r);
#elif OP == OP_CROSS_ENTROPY_BACKWARD
    uint k = label_index(labels[i]);
    if (k == pc.n) {
        for (uint j = 0; j < pc.n; j++) {
            outv[base + j] = NAN;
        }
        return;
    }
    float mf = float(pc.m);
    float mx = row_max(base);
    float s = row_exp_sum(base, mx);
    for (uint j = 0; j < pc.n; j++) {
        precise float d = x[base + j] - mx;
        float p = ls_div(ls_exp(d), s);
        precise float g = j == k ? p - 1.0 : p;
        outv[base + j] = canon(ls_div(g, mf));
    }
#elif OP == OP_ARGMAX
    uint best = 0u;
    for (uint j = 1; j < pc.n; j++) {
        if (x[base + j] > x[base + best]) {
            best = j;
        }
    }
    outv[i] = float(best);
#elif OP == OP_MAX_ROWS
    outv[i] = canon(row_max(base));
#else
#error "unknown OP"
#endif
}

void main() {
    uint stride = gl_NumWorkGroups.x * 64u;
    for (uint i = gl_GlobalInvocationID.x; i < pc.m; i += stride) {
        row(i);
    }
}
