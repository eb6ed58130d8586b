//! CPU reference of matmul.comp: `matmul`, `matmul_tn` (Aᵀ·B) and
//! `matmul_nt` (A·Bᵀ).
//!
//! `C[i,j]` = fold over `p = 0..k` ascending of `acc = acc + A[i,p] * B[p,j]`,
//! `acc` starting at `+0.0`, each product and each sum rounded once, NaN
//! results canonical. The loops run `i, p, j` so the inner loop streams rows
//! of B; every `C[i,j]` still sees its products in ascending `p`.

use super::canon;

/// Which operands are stored transposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transpose {
    /// A is m×k, B is k×n.
    None,
    /// A is stored k×m (C = AᵀB).
    A,
    /// B is stored n×k (C = ABᵀ).
    B,
}

/// C (m×n) for the given operand layouts. Rows of C are split across
/// `threads` workers; rows are independent, so the split cannot change bits.
pub fn matmul(
    a: &[f32],
    b: &[f32],
    m: usize,
    k: usize,
    n: usize,
    t: Transpose,
    threads: usize,
) -> Vec<f32> {
    assert_eq!(
        a.len(),
        m * k,
        "A has {} elements, expected {m}x{k}",
        a.len()
    );
    assert_eq!(
        b.len(),
        k * n,
        "B has {} elements, expected {k}x{n}",
        b.len()
    );
    let mut c = vec![0.0f32; m * n];
    if n == 0 {
        return c;
    }
    // B in k×n layout once, so the inner loop is contiguous for every form.
    let b_kn: std::borrow::Cow<[f32]> = match t {
        Transpose::B => {
            let mut bt = vec![0.0f32; k * n];
            for j in 0..n {
                for p in 0..k {
                    bt[p * n + j] = b[j * k + p];
                }
            }
            bt.into()
        }
        _ => b.into(),
    };
    let a_at = |i: usize, p: usize| match t {
        Transpose::A => a[p * m + i],
        _ => a[i * k + p],
    };
    let threads = threads.clamp(1, m.max(1));
    let rows_per = m.div_ceil(threads).max(1);
    std::thread::scope(|s| {
        for (chunk, c_rows) in c.chunks_mut(rows_per * n).enumerate() {
            let b_kn = &b_kn;
            let a_at = &a_at;
            s.spawn(move || {
                for (r, c_row) in c_rows.chunks_mut(n).enumerate() {
                    let i = chunk * rows_per + r;
                    // c_row starts at +0.0: the accumulator's initial value.
                    for p in 0..k {
                        let aip = a_at(i, p);
                        let b_row = &b_kn[p * n..(p + 1) * n];
                        for (acc, &bpj) in c_row.iter_mut().zip(b_row) {
                            let prod = aip * bpj;
                            *acc += prod;
                        }
                    }
                    for v in c_row.iter_mut() {
                        *v = canon(*v);
                    }
                }
            });
        }
    });
    c
}
