#version 450
// adam_update (w, m, v, c1, c2; lr, eps), element-wise over w, with m and v
// the already-updated moments and c1 = 1 - beta1^t, c2 = 1 - beta2^t the
// bias corrections, computed by the program itself (scalar tensors):
//   w' = w - lr * ((m / c1) / (sqrt(v / c2) + eps))
// CPU reference: elementwise.rs (adam_update).
#extension GL_GOOGLE_include_directive : require
#include "float_model.glsl"
#include "math.glsl"

layout(local_size_x = 256, local_size_y = 1, local_size_z = 1) in;

layout(std430, set = 0, binding = 0) readonly buffer W_ { float w[]; };
layout(std430, set = 0, binding = 1) readonly buffer M_ { float mom[]; };
layout(std430, set = 0, binding = 2) readonly buffer V_ { float vel[]; };
layout(std430, set = 0, binding = 3) readonly buffer C1_ { float c1[]; };
layout(std430, set = 0, binding = 4) readonly buffer C2_ { float c2[]; };
layout(std430, set = 0, binding = 5) writeonly buffer Out_ { float outv[]; };

layout(push_constant) uniform Params {
    uint len;
    uint lr_bits;
    uint eps_bits;
} pc;

void main() {
    float lr = uintBitsToFloat(pc.lr_bits);
    float eps = uintBitsToFloat(pc.eps_bits);
    float bc1 = c1[0];
    float bc2 = c2[0];
    uint stride = gl_NumWorkGroups.x * 256u;
    for (uint i = gl_GlobalInvocationID.x; i < pc.len; i += stride) {
        float mhat = ls_div(mom[i], bc1);
        float vhat = ls_div(vel[i], bc2);
        precise float den = ls_sqrt(vhat) + eps;
        float q = ls_div(mhat, den);
        precise float step = lr * q;
        precise float r = w[i] - step;
        outv[i] = canon(r);
    }
}
