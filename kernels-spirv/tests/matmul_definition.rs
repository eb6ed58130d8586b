//! matmul against an independent statement of its definition: plain
//! sequential loops written here, not shared with the reference, over random
//! shapes and edge-value inputs (proptest).

use lockstep_kernels::reference::matmul::{matmul, Transpose};
use lockstep_kernels::reference::CANONICAL_NAN_BITS;
use proptest::prelude::*;

/// C[i][j] = (((+0 + A[i][0]*B[0][j]) + A[i][1]*B[1][j]) + ...), NaN made
/// canonical. `a(i, p)` and `b(p, j)` read the logical operands.
fn by_definition(
    m: usize,
    k: usize,
    n: usize,
    a: impl Fn(usize, usize) -> f32,
    b: impl Fn(usize, usize) -> f32,
) -> Vec<u32> {
    let mut out = Vec::with_capacity(m * n);
    for i in 0..m {
        for j in 0..n {
            let mut acc: f32 = 0.0;
            for p in 0..k {
                let product: f32 = a(i, p) * b(p, j);
                acc += product;
            }
            out.push(if acc.is_nan() {
                CANONICAL_NAN_BITS
            } else {
                acc.to_bits()
            });
        }
    }
    out
}

fn value() -> impl Strategy<Value = f32> {
    prop_oneof![
        8 => -1.0e3f32..1.0e3f32,
        1 => any::<u32>().prop_map(f32::from_bits),
        1 => prop::sample::select(vec![0.0f32, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN,
            f32::MIN_POSITIVE, -f32::MIN_POSITIVE, 1.0e-45, f32::MAX, -f32::MAX, 3.0e38]),
    ]
}

fn case() -> impl Strategy<Value = (usize, usize, usize, Vec<f32>, Vec<f32>)> {
    (0usize..9, 0usize..9, 0usize..9).prop_flat_map(|(m, k, n)| {
        (
            Just(m),
            Just(k),
            Just(n),
            prop::collection::vec(value(), m * k),
            prop::collection::vec(value(), k * n),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn matmul_matches_its_definition((m, k, n, a, b) in case()) {
        let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
        let want = by_definition(m, k, n, |i, p| a[i * k + p], |p, j| b[p * n + j]);
        prop_assert_eq!(bits(matmul(&a, &b, m, k, n, Transpose::None, 3)), want);

        // The same logical product through the transposed layouts.
        let mut at = vec![0.0f32; k * m];
        for i in 0..m { for p in 0..k { at[p * m + i] = a[i * k + p]; } }
        let mut bt = vec![0.0f32; n * k];
        for p in 0..k { for j in 0..n { bt[j * k + p] = b[p * n + j]; } }
        let want_tn = by_definition(m, k, n, |i, p| at[p * m + i], |p, j| b[p * n + j]);
        prop_assert_eq!(bits(matmul(&at, &b, m, k, n, Transpose::A, 2)), want_tn);
        let want_nt = by_definition(m, k, n, |i, p| a[i * k + p], |p, j| bt[j * k + p]);
        prop_assert_eq!(bits(matmul(&a, &bt, m, k, n, Transpose::B, 1)), want_nt);
    }
}

#[test]
fn products_are_not_fused() {
    // 1 + 2^-12, squared, minus 1: a fused multiply-add keeps 2^-24, which
    // separate rounding of the product loses.
    let x = 1.0 + f32::EPSILON * 2048.0;
    let a = [x, -1.0];
    let b = [x, 1.0];
    let c = matmul(&a, &b, 1, 2, 1, Transpose::None, 1);
    let product = x * x;
    assert_eq!(c[0].to_bits(), (product + -1.0f32).to_bits());
    assert_ne!(c[0].to_bits(), x.mul_add(x, -1.0).to_bits());
}
