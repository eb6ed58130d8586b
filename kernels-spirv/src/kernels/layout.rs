//! CPU reference of layout.comp.

use super::{canon, CANONICAL_NAN_BITS};

/// `x[i,j] + b[j]` over an m×n matrix.
pub fn bias_add(x: &[f32], b: &[f32]) -> Vec<f32> {
    let n = b.len();
    x.iter()
        .enumerate()
        .map(|(t, &v)| canon(v + b[t % n]))
        .collect()
}

/// n×m transpose of an m×n matrix.
pub fn transpose(x: &[f32], m: usize, n: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; m * n];
    for (t, o) in out.iter_mut().enumerate() {
        let (j, i) = (t / m, t % m);
        *o = canon(x[i * n + j]);
    }
    out
}

/// `dst` with element `index` replaced by `value`, when `index` is an
/// integer in `[0, len)`; otherwise `dst` unchanged.
pub fn set_element(dst: &[f32], value: f32, index: f32) -> Vec<f32> {
    let len = dst.len();
    let target = if index >= 0.0 && index < len as f32 && (index as u32) as f32 == index {
        index as usize
    } else {
        len
    };
    dst.iter()
        .enumerate()
        .map(|(t, &v)| canon(if t == target { value } else { v }))
        .collect()
}

/// `a` (m×p) and `b` (m×q) side by side: m×(p+q), each row `a`'s then
/// `b`'s. With m = 1 it is the concatenation of the flat arrays, which is
/// how rows are stacked.
pub fn concat(a: &[f32], b: &[f32], m: usize, p: usize, q: usize) -> Vec<f32> {
    debug_assert_eq!(a.len(), m * p);
    debug_assert_eq!(b.len(), m * q);
    let w = p + q;
    (0..m * w)
        .map(|t| {
            let (r, c) = (t / w, t % w);
            canon(if c < p {
                a[r * p + c]
            } else {
                b[r * q + c - p]
            })
        })
        .collect()
}

/// m×n elements of `x`: `out[r,c] = x[r·stride + offset + c]`.
pub fn slice(x: &[f32], m: usize, n: usize, stride: usize, offset: usize) -> Vec<f32> {
    (0..m * n)
        .map(|t| canon(x[(t / n) * stride + offset + t % n]))
        .collect()
}

/// Row `index[r]` of the v×n `table` for each r, when the index is an
/// integer in `[0, v)`; a row of canonical NaN otherwise.
pub fn gather_rows(table: &[f32], index: &[f32], v: usize, n: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(index.len() * n);
    for &fi in index {
        let valid = fi >= 0.0 && fi < v as f32 && (fi as u32) as f32 == fi;
        if valid {
            let row = fi as usize * n;
            out.extend(table[row..row + n].iter().map(|&x| canon(x)));
        } else {
            out.extend(std::iter::repeat_n(f32::from_bits(CANONICAL_NAN_BITS), n));
        }
    }
    out
}

/// `len` copies of `value`.
pub fn fill(len: usize, value: f32) -> Vec<f32> {
    vec![canon(value); len]
}

/// `x` (C order, `dims`) with its axes reordered: output axis `k` is
/// input axis `perm[k]`. Rank at most 4, as the kernel takes it.
pub fn permute(x: &[f32], dims: &[usize], perm: &[usize]) -> Vec<f32> {
    let (out_dims, strides) = permute_plan(dims, perm);
    let len: usize = out_dims.iter().product();
    (0..len)
        .map(|t| {
            let i3 = t % out_dims[3];
            let r = t / out_dims[3];
            let i2 = r % out_dims[2];
            let r = r / out_dims[2];
            let i1 = r % out_dims[1];
            let i0 = r / out_dims[1];
            canon(x[i0 * strides[0] + i1 * strides[1] + i2 * strides[2] + i3 * strides[3]])
        })
        .collect()
}

/// The kernel's push constants for `permute`: the output's dims and, per
/// output axis, the input stride it reads, both padded to rank 4 in front.
pub fn permute_plan(dims: &[usize], perm: &[usize]) -> ([usize; 4], [usize; 4]) {
    assert!(dims.len() <= 4 && perm.len() == dims.len());
    let rank = dims.len();
    let mut in_strides = vec![1usize; rank];
    for k in (0..rank.saturating_sub(1)).rev() {
        in_strides[k] = in_strides[k + 1] * dims[k + 1];
    }
    let (mut out_dims, mut strides) = ([1usize; 4], [0usize; 4]);
    for (k, &p) in perm.iter().enumerate() {
        out_dims[4 - rank + k] = dims[p];
        strides[4 - rank + k] = in_strides[p];
    }
    (out_dims, strides)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concat_joins_rows_side_by_side_and_flat_arrays_end_to_end() {
        let a = [1.0, 2.0, 3.0, 4.0];
        let b = [5.0, 6.0];
        assert_eq!(concat(&a, &b, 2, 2, 1), [1.0, 2.0, 5.0, 3.0, 4.0, 6.0]);
        assert_eq!(concat(&a, &b, 1, 4, 2), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    }

    #[test]
    fn slice_takes_a_block_and_canonicalises_nans() {
        let x = [
            0.0,
            1.0,
            2.0,
            3.0,
            4.0,
            5.0,
            f32::from_bits(0x7fc0_0001),
            7.0,
            8.0,
        ];
        assert_eq!(slice(&x, 2, 2, 3, 4), [4.0, 5.0, 7.0, 8.0]);
        assert_eq!(slice(&x, 1, 1, 3, 6)[0].to_bits(), CANONICAL_NAN_BITS);
    }

    #[test]
    fn gather_gives_nan_rows_for_every_kind_of_bad_index() {
        let table = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let index = [2.0, 0.0, -1.0, 3.0, 0.5, f32::NAN, f32::INFINITY, -0.0];
        let out = gather_rows(&table, &index, 3, 2);
        assert_eq!(&out[..4], &[5.0, 6.0, 1.0, 2.0]);
        for bad in out[4..14].iter() {
            assert_eq!(bad.to_bits(), CANONICAL_NAN_BITS);
        }
        // -0.0 is the integer 0.
        assert_eq!(&out[14..], &[1.0, 2.0]);
        assert!(gather_rows(&[], &[0.0], 0, 2).iter().all(|v| v.is_nan()));
    }

    #[test]
    fn permute_reorders_axes_like_numpy_transpose() {
        // 2x3x4 with values 0..24, perm (1, 2, 0): out[j,k,i] = x[i,j,k].
        let x: Vec<f32> = (0..24).map(|v| v as f32).collect();
        let out = permute(&x, &[2, 3, 4], &[1, 2, 0]);
        for i in 0..2 {
            for j in 0..3 {
                for k in 0..4 {
                    assert_eq!(out[(j * 4 + k) * 2 + i], x[(i * 3 + j) * 4 + k]);
                }
            }
        }
        assert_eq!(permute(&x, &[24], &[0]), x);
        assert_eq!(permute(&x, &[4, 6], &[1, 0]), transpose(&x, 4, 6));
    }

    #[test]
    fn fill_keeps_signed_zero_and_subnormals() {
        assert_eq!(fill(2, -0.0)[1].to_bits(), 0x8000_0000);
        assert_eq!(fill(1, f32::from_bits(1))[0].to_bits(), 1);
        assert_eq!(
            fill(1, f32::from_bits(0xffc0_1234))[0].to_bits(),
            CANONICAL_NAN_BITS
        );
    }
}
