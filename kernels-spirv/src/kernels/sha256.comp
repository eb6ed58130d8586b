#version 450
// sha256_npy: the SHA-256 digest of one tensor's canonical .npy bytes, for
// the trace's Merkle leaves (CPU reference: sha256.rs, line for line).
//
// npy.rs pads the header to a multiple of 64 bytes, so the host compresses
// the header blocks itself and passes the resulting state (the "midstate")
// as push constants; this kernel continues over the tensor's data words and
// finalises. The data are f32 bit patterns stored little-endian, while
// SHA-256 reads big-endian words, so each data word is byte-swapped.
//
// Integer operations only: no float arithmetic at all. float_model.glsl is
// still included because every binary of the bundle must declare the
// float-controls execution modes of its variant (spirv.rs checks them).
//
// Two kernels from this source (manifest "defines"):
// - sha256_npy (no define): one invocation hashes one message in place,
//   dispatched 1x1x1; a long message over several dispatches, each
//   compressing at most BLOCKS_PER_DISPATCH (sha256.rs) whole data blocks,
//   from the host's midstate (the first) or from the state the previous one
//   left in the message's digest slot; the last one pads and finalises.
//   That bounds one dispatch's time (a discrete GPU's watchdog) and one
//   loop's iterations (lavapipe's limit, below).
// - sha256_npy_many (MANY): the messages of a table, one invocation each,
//   8 to a workgroup, over an arena buffer the host copied them into (each
//   at most BLOCKS_PER_DISPATCH blocks): a message's hash is sequential, so
//   the parallelism is across messages. The host sorts the table by length,
//   so the invocations of a workgroup run equal loops side by side. With
//   `advance` set it only adds `advance` to the counter.
// A digest's slot is the counter's value plus the message's place `rel`
// (its place in the batch, or in a repeat body: a replayed body ends with
// an advance by its digest count), so digests land in execution order
// whichever invocation computes them; the host zeroes the counter at the
// start of each batch. Barriers order every dispatch, and no atomics are
// needed.
#extension GL_GOOGLE_include_directive : require
#include "float_model.glsl"

#ifdef MANY
layout(local_size_x = 8, local_size_y = 1, local_size_z = 1) in;
#else
layout(local_size_x = 1, local_size_y = 1, local_size_z = 1) in;
#endif

// The data as raw 32-bit words: one tensor (sha256_npy; with data_words = 0
// it may be a 4-byte dummy buffer, which is then never read), or the arena
// of copied tensors (sha256_npy_many).
layout(std430, set = 0, binding = 0) readonly buffer Data_ { uint data[]; };
// Final state words H0..H7 of each message at digests[slot * 8 + 0..8].
layout(std430, set = 0, binding = 1) buffer Digests_ { uint digests[]; };
layout(std430, set = 0, binding = 2) buffer Counter_ { uint next; };

#ifdef MANY
// 12 words per message: arena offset (words), data words, header bytes,
// rel, then the 8 words of the midstate (sha256.rs, `Message::to_words`).
layout(std430, set = 0, binding = 3) readonly buffer Table_ { uint table[]; };

layout(push_constant) uniform Params {
    // The table's messages first .. first + count.
    uint first;
    uint count;
    // Nonzero: add it to the counter and hash nothing.
    uint advance;
} pc;
#else
layout(push_constant) uniform Params {
    // The SHA-256 state after the header blocks (compressed on the host).
    uint state[8];
    // Header length in bytes, a multiple of 64; only used for the length
    // in the padding.
    uint header_bytes;
    // Number of data words (may be 0).
    uint data_words;
    // The whole data blocks this dispatch compresses: from first_block, at
    // most `blocks` of them (fewer at the end of the data).
    uint first_block;
    uint blocks;
    // 1 for the message's last dispatch: the tail, padding and digest.
    uint last;
    // The digest's place after the counter's value.
    uint rel;
} pc;
#endif

// SHA-256 round constants (FIPS 180-4, 4.2.2).
const uint K[64] = uint[64](
    0x428a2f98u, 0x71374491u, 0xb5c0fbcfu, 0xe9b5dba5u, 0x3956c25bu, 0x59f111f1u, 0x923f82a4u, 0xab1c5ed5u,
    0xd807aa98u, 0x12835b01u, 0x243185beu, 0x550c7dc3u, 0x72be5d74u, 0x80deb1feu, 0x9bdc06a7u, 0xc19bf174u,
    0xe49b69c1u, 0xefbe4786u, 0x0fc19dc6u, 0x240ca1ccu, 0x2de92c6fu, 0x4a7484aau, 0x5cb0a9dcu, 0x76f988dau,
    0x983e5152u, 0xa831c66du, 0xb00327c8u, 0xbf597fc7u, 0xc6e00bf3u, 0xd5a79147u, 0x06ca6351u, 0x14292967u,
    0x27b70a85u, 0x2e1b2138u, 0x4d2c6dfcu, 0x53380d13u, 0x650a7354u, 0x766a0abbu, 0x81c2c92eu, 0x92722c85u,
    0xa2bfe8a1u, 0xa81a664bu, 0xc24b8b70u, 0xc76c51a3u, 0xd192e819u, 0xd6990624u, 0xf40e3585u, 0x106aa070u,
    0x19a4c116u, 0x1e376c08u, 0x2748774cu, 0x34b0bcb5u, 0x391c0cb3u, 0x4ed8aa4au, 0x5b9cca4fu, 0x682e6ff3u,
    0x748f82eeu, 0x78a5636fu, 0x84c87814u, 0x8cc70208u, 0x90befffau, 0xa4506cebu, 0xbef9a3f7u, 0xc67178f2u
);

// Rotate right by n, 0 < n < 32 (a shift by 32 would be undefined).
uint rotr(uint x, uint n) {
    return (x >> n) | (x << (32u - n));
}

// Little-endian word to big-endian word: GLSL 450 has no byte swap.
uint bswap(uint x) {
    return (x << 24u) | ((x & 0x0000FF00u) << 8u) | ((x >> 8u) & 0x0000FF00u) | (x >> 24u);
}

// The functions of FIPS 180-4, 4.1.2.
uint big_sigma0(uint x) { return rotr(x, 2u) ^ rotr(x, 13u) ^ rotr(x, 22u); }
uint big_sigma1(uint x) { return rotr(x, 6u) ^ rotr(x, 11u) ^ rotr(x, 25u); }
uint small_sigma0(uint x) { return rotr(x, 7u) ^ rotr(x, 18u) ^ (x >> 3u); }
uint small_sigma1(uint x) { return rotr(x, 17u) ^ rotr(x, 19u) ^ (x >> 10u); }

// Loops are unrolled by the preprocessor, per block: lavapipe (llvmpipe's
// gallivm, LP_MAX_TGSI_LOOP_ITERATIONS) silently leaves a loop after 65535
// iterations, counting nested loops together (measured on Mesa 22.3.6: a
// 65536-iteration loop stops after 65535). With the 16 + 48 + 64 iterations
// of compress() as loops, lavapipe's digests went wrong from about 570 data
// blocks (36 KiB) on. Unrolled, each data block costs one iteration of the
// block loop in main, and lavapipe is right up to 65535 whole data blocks
// (65535 * 16 + 15 words, just under 4 MiB) per message; from 65536 blocks
// on it hashes as if the loop stopped after 65535 (measured), which is one
// more reason a long message is split over dispatches of at most
// BLOCKS_PER_DISPATCH blocks. Other devices have no such limit.
#define COPY(t) w[t] = block[t];
#define COPY4(t) COPY(t) COPY(t + 1) COPY(t + 2) COPY(t + 3)
#define SCHEDULE(t) w[t] = w[t - 16] + small_sigma0(w[t - 15]) + w[t - 7] + small_sigma1(w[t - 2]);
#define SCHEDULE4(t) SCHEDULE(t) SCHEDULE(t + 1) SCHEDULE(t + 2) SCHEDULE(t + 3)
#define SCHEDULE16(t) SCHEDULE4(t) SCHEDULE4(t + 4) SCHEDULE4(t + 8) SCHEDULE4(t + 12)
#define ROUND(t) {                                                   \
        uint t1 = hh + big_sigma1(e) + ((e & f) ^ (~e & g)) + K[t] + w[t]; \
        uint t2 = big_sigma0(a) + ((a & b) ^ (a & c) ^ (b & c));         \
        hh = g;                                                          \
        g = f;                                                           \
        f = e;                                                           \
        e = d + t1;                                                      \
        d = c;                                                           \
        c = b;                                                           \
        b = a;                                                           \
        a = t1 + t2;                                                     \
    }
#define ROUND4(t) ROUND(t) ROUND(t + 1) ROUND(t + 2) ROUND(t + 3)
#define ROUND16(t) ROUND4(t) ROUND4(t + 4) ROUND4(t + 8) ROUND4(t + 12)

// One compression of a 64-byte block (16 big-endian words) into h
// (FIPS 180-4, 6.2.2). Additions are mod 2^32, which is what uint does.
void compress(inout uint h[8], uint block[16]) {
    // The message schedule: w[0..16] the block, then w[16..64].
    uint w[64];
    COPY4(0) COPY4(4) COPY4(8) COPY4(12)
    SCHEDULE16(16) SCHEDULE16(32) SCHEDULE16(48)
    uint a = h[0];
    uint b = h[1];
    uint c = h[2];
    uint d = h[3];
    uint e = h[4];
    uint f = h[5];
    uint g = h[6];
    uint hh = h[7];
    // The 64 rounds t = 0..63.
    ROUND16(0) ROUND16(16) ROUND16(32) ROUND16(48)
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
    h[5] += f;
    h[6] += g;
    h[7] += hh;
}

// block[i] = bswap(data[base + i]) for i = 0..15, unrolled (see above).
#define LOAD(i) block[i] = bswap(data[base + i]);
#define LOAD4(i) LOAD(i) LOAD(i + 1) LOAD(i + 2) LOAD(i + 3)

// Compresses whole data blocks first .. end of the message at word `off`.
void whole_blocks(inout uint h[8], uint off, uint first, uint end) {
    uint block[16];
    for (uint blk = first; blk < end; blk++) {
        uint base = off + blk * 16u;
        LOAD4(0) LOAD4(4) LOAD4(8) LOAD4(12)
        compress(h, block);
    }
}

// The tail and padding of a message of data_words words at word `off`,
// after a header of header_bytes bytes.
void finish(inout uint h[8], uint off, uint data_words, uint header_bytes) {
    uint block[16];
    uint full = data_words / 16u;
    // The message length in bits, header_bytes + 4 * data_words bytes times
    // 8, as a 64-bit number in two words (no Int64 capability): it passes
    // 2^32 bits from 512 MiB on. header_bytes < 2^32 here, so its high word
    // is 0 (the CPU twin also takes a high word).
    uint bytes_lo = header_bytes + (data_words << 2u);
    uint carry = bytes_lo < header_bytes ? 1u : 0u;
    uint bytes_hi = (data_words >> 30u) + carry;
    uint bits_hi = (bytes_hi << 3u) | (bytes_lo >> 29u);
    uint bits_lo = bytes_lo << 3u;

    // The last, partial block (the loops from here on run 48 iterations in
    // all): the rem < 16 remaining data words (read only where i < rem, so
    // an empty Data buffer is never touched), the 1 bit right after them
    // (data are whole words, so that is the word 0x80000000), zeros, and the
    // length in words 14 and 15.
    uint rem = data_words - full * 16u;
    for (uint i = 0u; i < 16u; i++) {
        block[i] = 0u;
        if (i < rem) {
            block[i] = bswap(data[off + full * 16u + i]);
        }
    }
    block[rem] = 0x80000000u;
    if (rem >= 14u) {
        // No room left for the two length words: they go in a block of
        // their own.
        compress(h, block);
        for (uint i = 0u; i < 16u; i++) {
            block[i] = 0u;
        }
    }
    block[14] = bits_hi;
    block[15] = bits_lo;
    compress(h, block);
}

#ifdef MANY
void main() {
    uint i = gl_GlobalInvocationID.x;
    if (pc.advance != 0u) {
        if (i == 0u) {
            next += pc.advance;
        }
        return;
    }
    if (i >= pc.count) {
        return;
    }
    uint e = (pc.first + i) * 12u;
    uint off = table[e];
    uint data_words = table[e + 1u];
    uint header_bytes = table[e + 2u];
    uint slot = next + table[e + 3u];
    uint h[8];
    for (uint k = 0u; k < 8u; k++) {
        h[k] = table[e + 4u + k];
    }
    whole_blocks(h, off, 0u, data_words / 16u);
    finish(h, off, data_words, header_bytes);
    for (uint k = 0u; k < 8u; k++) {
        digests[slot * 8u + k] = h[k];
    }
}
#else
void main() {
    uint slot = next + pc.rel;
    uint h[8];
    for (uint i = 0u; i < 8u; i++) {
        h[i] = pc.first_block == 0u ? pc.state[i] : digests[slot * 8u + i];
    }
    // This dispatch's whole 16-word blocks of data.
    uint full = pc.data_words / 16u;
    whole_blocks(h, 0u, pc.first_block, min(pc.first_block + pc.blocks, full));
    if (pc.last != 0u) {
        finish(h, 0u, pc.data_words, pc.header_bytes);
    }
    // The final digest, or the state the next dispatch continues from.
    for (uint i = 0u; i < 8u; i++) {
        digests[slot * 8u + i] = h[i];
    }
}
#endif
