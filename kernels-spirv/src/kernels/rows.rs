//! CPU reference of rows.comp: row-wise ops over an m×n matrix, every
//! reduction a sequential fold in ascending column order.

use super::{canon, math, CANONICAL_NAN_BITS};

const NAN: f32 = f32::from_bits(CANONICAL_NAN_BITS);

/// Starts at the first element, replaced only by a strictly greater one.
fn row_max(row: &[f32]) -> f32 {
    let mut mx = row[0];
    for &v in &row[1..] {
        if v > mx {
            mx = v;
        }
    }
    mx
}

fn row_exp_sum(row: &[f32], mx: f32) -> f32 {
    let mut s = 0.0f32;
    for &v in row {
        s += math::exp(v - mx);
    }
    s
}

/// `Some(k)` when `l` is an integer class id in `[0, n)`.
// The negated comparisons are deliberate: they are true for NaN, which is
// not a class id (and they mirror rows.comp exactly).
#[allow(clippy::neg_cmp_op_on_partial_ord)]
fn label_index(l: f32, n: usize) -> Option<usize> {
    if !(l >= 0.0) || !(l < n as f32) {
        return None;
    }
    let k = l as u32;
    (k as f32 == l).then_some(k as usize)
}

/// Mean and 1/sqrt(var + eps) of a row, as rows.comp's `row_stats`.
fn row_stats(row: &[f32], eps: f32) -> (f32, f32) {
    let nf = row.len() as f32;
    let mut s = 0.0f32;
    for &v in row {
        s += v;
    }
    let mean = math::div(s, nf);
    let mut q = 0.0f32;
    for &v in row {
        let d = v - mean;
        q += d * d;
    }
    let var = math::div(q, nf);
    let rstd = math::div(1.0, math::sqrt(var + eps));
    (mean, rstd)
}

fn rows_map(x: &[f32], n: usize, mut f: impl FnMut(usize, &[f32], &mut [f32])) -> Vec<f32> {
    let mut out = vec![0.0f32; x.len()];
    if n == 0 {
        return out;
    }
    for (i, (row, o)) in x.chunks(n).zip(out.chunks_mut(n)).enumerate() {
        f(i, row, o);
    }
    out
}

pub fn softmax_rows(x: &[f32], n: usize) -> Vec<f32> {
    rows_map(x, n, |_, row, out| {
        let mx = row_max(row);
        let s = row_exp_sum(row, mx);
        for (o, &v) in out.iter_mut().zip(row) {
            *o = canon(math::div(math::exp(v - mx), s));
        }
    })
}

pub fn log_softmax_rows(x: &[f32], n: usize) -> Vec<f32> {
    rows_map(x, n, |_, row, out| {
        let mx = row_max(row);
        let ls = math::log(row_exp_sum(row, mx));
        for (o, &v) in out.iter_mut().zip(row) {
            *o = canon((v - mx) - ls);
        }
    })
}

pub fn layernorm_rows(x: &[f32], gamma: &[f32], beta: &[f32], n: usize, eps: f32) -> Vec<f32> {
    rows_map(x, n, |_, row, out| {
        let (mean, rstd) = row_stats(row, eps);
        for j in 0..n {
            let xh = (row[j] - mean) * rstd;
            out[j] = canon(xh * gamma[j] + beta[j]);
        }
    })
}

/// dx of layernorm_rows, given the upstream gradient `dy` and forward input `x`.
pub fn layernorm_backward(dy: &[f32], x: &[f32], gamma: &[f32], n: usize, eps: f32) -> Vec<f32> {
    rows_map(dy, n, |i, dyr, out| {
        let xr = &x[i * n..(i + 1) * n];
        let (mean, rstd) = row_stats(xr, eps);
        let nf = n as f32;
        let mut sg = 0.0f32;
        let mut sgx = 0.0f32;
        for j in 0..n {
            let xh = (xr[j] - mean) * rstd;
            let g = dyr[j] * gamma[j];
            sg += g;
            sgx += g * xh;
        }
        let mg = math::div(sg, nf);
        let mgx = math::div(sgx, nf);
        for j in 0..n {
            let xh = (xr[j] - mean) * rstd;
            let g = dyr[j] * gamma[j];
            out[j] = canon(rstd * ((g - mg) - xh * mgx));
        }
    })
}

/// `dy * xhat` element-wise, the summand of layernorm's gamma gradient.
pub fn layernorm_dy_xhat(dy: &[f32], x: &[f32], n: usize, eps: f32) -> Vec<f32> {
    rows_map(dy, n, |i, dyr, out| {
        let xr = &x[i * n..(i + 1) * n];
        let (mean, rstd) = row_stats(xr, eps);
        for j in 0..n {
            out[j] = canon(dyr[j] * ((xr[j] - mean) * rstd));
        }
    })
}

/// Per-row loss `log(sum exp(x - max)) - (x[label] - max)`; NaN for an
/// invalid label.
pub fn cross_entropy_rows(x: &[f32], labels: &[f32], n: usize) -> Vec<f32> {
    (0..labels.len())
        .map(|i| {
            let Some(k) = label_index(labels[i], n) else {
                return NAN;
            };
            let row = &x[i * n..(i + 1) * n];
            let mx = row_max(row);
            let ls = math::log(row_exp_sum(row, mx));
            canon(ls - (row[k] - mx))
        })
        .collect()
}

/// `(softmax(x) - onehot(label)) / m`; a row with an invalid label is NaN.
pub fn cross_entropy_backward(x: &[f32], labels: &[f32], n: usize) -> Vec<f32> {
    let mf = labels.len() as f32;
    rows_map(x, n, |i, row, out| {
        let Some(k) = label_index(labels[i], n) else {
            out.fill(NAN);
            return;
        };
        let mx = row_max(row);
        let s = row_exp_sum(row, mx);
        for (j, o) in out.iter_mut().enumerate() {
            let p = math::div(math::exp(row[j] - mx), s);
            let g = if j == k { p - 1.0 } else { p };
            *o = canon(math::div(g, mf));
        }
    })
}

/// The maximum of each row of an m×n matrix (n ≥ 1): the first element,
/// replaced only by a strictly greater one, so a NaN never replaces it and
/// a NaN first element stays (canonical). The value at `argmax_rows`.
pub fn max_rows(x: &[f32], m: usize, n: usize) -> Vec<f32> {
    (0..m)
        .map(|i| {
            let row = &x[i * n..(i + 1) * n];
            let mut mx = row[0];
            for &v in &row[1..] {
                if v > mx {
                    mx = v;
                }
            }
            canon(mx)
        })
        .collect()
}

/// Index of the first maximum of each row (a strictly greater value
/// replaces it; NaN never does), as a float.
pub fn argmax_rows(x: &[f32], m: usize, n: usize) -> Vec<f32> {
    (0..m)
        .map(|i| {
            let row = &x[i * n..(i + 1) * n];
            let mut best = 0;
            for j in 1..n {
                if row[j] > row[best] {
                    best = j;
                }
            }
            best as f32
        })
        .collect()
}
