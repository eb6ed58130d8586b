//! CPU reference of reduce_chunks.comp and reduce_tree.comp, and of the
//! `sum_rows` / `sum_cols` ops they compose.
//!
//! A reduction along an axis of length `len` is defined as:
//! 1. chunk sums: `ceil(len / CHUNK)` leaves, leaf `c` the ascending fold of
//!    elements `c*CHUNK .. min(len, (c+1)*CHUNK)` starting from `+0.0`;
//! 2. a pairwise tree over the leaves: adjacent pairs combined level by
//!    level, an odd last element carried up unchanged, until one is left.
//!
//! An empty axis sums to `+0.0`. `FAN` only says how many tree levels one
//! pass of reduce_tree computes; any power of two gives the same bits.

use super::canon;

/// Elements per leaf; part of the definition of the sum (docs/float-model.md).
pub const CHUNK: usize = 64;
/// Inputs combined per invocation of one reduce_tree pass (a power of two).
pub const FAN: usize = 16;

/// Mirrors reduce_chunks.comp on `x` viewed as `[outer, len, inner]`.
pub fn reduce_chunks(x: &[f32], outer: usize, len: usize, inner: usize) -> Vec<f32> {
    assert_eq!(x.len(), outer * len * inner);
    let nc = len.div_ceil(CHUNK);
    let mut p = vec![0.0f32; outer * nc * inner];
    for o in 0..outer {
        for c in 0..nc {
            for i in 0..inner {
                let mut acc = 0.0f32;
                for l in c * CHUNK..len.min((c + 1) * CHUNK) {
                    acc += x[(o * len + l) * inner + i];
                }
                p[(o * nc + c) * inner + i] = canon(acc);
            }
        }
    }
    p
}

/// Mirrors one reduce_tree.comp pass: `[outer, len, inner]` to
/// `[outer, ceil(len / FAN), inner]`.
pub fn reduce_tree(x: &[f32], outer: usize, len: usize, inner: usize) -> Vec<f32> {
    assert_eq!(x.len(), outer * len * inner);
    let out_len = len.div_ceil(FAN);
    let mut q = vec![0.0f32; outer * out_len * inner];
    let mut v = [0.0f32; FAN];
    for o in 0..outer {
        for blk in 0..out_len {
            for i in 0..inner {
                let l0 = blk * FAN;
                let cnt = FAN.min(len - l0);
                for (e, slot) in v.iter_mut().enumerate().take(cnt) {
                    *slot = x[(o * len + l0 + e) * inner + i];
                }
                let mut w = 1;
                while w < FAN {
                    let mut e = 0;
                    while e + w < cnt {
                        v[e] += v[e + w];
                        e += 2 * w;
                    }
                    w *= 2;
                }
                q[(o * out_len + blk) * inner + i] = canon(v[0]);
            }
        }
    }
    q
}

/// The whole reduction: `[outer, len, inner]` to `[outer, inner]`.
pub fn sum_axis(x: &[f32], outer: usize, len: usize, inner: usize) -> Vec<f32> {
    if len == 0 {
        return vec![0.0; outer * inner];
    }
    let mut p = reduce_chunks(x, outer, len, inner);
    let mut l = len.div_ceil(CHUNK);
    while l > 1 {
        p = reduce_tree(&p, outer, l, inner);
        l = l.div_ceil(FAN);
    }
    p
}

/// Sum of each row of an m×n matrix (length m).
pub fn sum_rows(x: &[f32], m: usize, n: usize) -> Vec<f32> {
    sum_axis(x, m, n, 1)
}

/// Sum of each column of an m×n matrix (length n).
pub fn sum_cols(x: &[f32], m: usize, n: usize) -> Vec<f32> {
    sum_axis(x, 1, m, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition written the slow, obvious way: leaves, then the tree
    /// level by level over the whole axis.
    fn sum_by_definition(xs: &[f32]) -> f32 {
        if xs.is_empty() {
            return 0.0;
        }
        let mut level: Vec<f32> = xs
            .chunks(CHUNK)
            .map(|c| c.iter().fold(0.0f32, |acc, &x| acc + x))
            .collect();
        while level.len() > 1 {
            level = level
                .chunks(2)
                .map(|p| if p.len() == 2 { p[0] + p[1] } else { p[0] })
                .collect();
        }
        canon(level[0])
    }

    #[test]
    fn multi_pass_tree_equals_the_single_tree() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        for len in [
            0usize,
            1,
            63,
            64,
            65,
            1000,
            1024,
            1025,
            4097,
            70_000,
            65 * 64 * 17,
        ] {
            let xs: Vec<f32> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    // Wide exponent range so that the order matters.
                    f32::from_bits(
                        ((seed >> 40) as u32 & 0x007F_FFFF)
                            | ((((seed >> 20) as u32 % 40) + 100) << 23),
                    ) * if seed & 1 == 0 { 1.0 } else { -1.0 }
                })
                .collect();
            let got = sum_rows(&xs, 1, len);
            assert_eq!(
                got[0].to_bits(),
                sum_by_definition(&xs).to_bits(),
                "len {len}"
            );
            let col = sum_cols(&xs, len, 1);
            assert_eq!(col[0].to_bits(), got[0].to_bits(), "len {len}");
        }
    }
}
