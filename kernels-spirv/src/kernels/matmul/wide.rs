//! The blocked matmul for 8-lane vectors (x86-64 with AVX2), chosen at run
//! time by [`super::matmul`] when the CPU has them.
//!
//! Same blocking and the same per-element order as the 4-lane path in
//! `matmul.rs` (every `C[i,j]` starts at `+0.0` and takes its products one
//! by one in ascending `p`, each rounded, then each sum), so the bits are
//! the same; only the tile is wider:
//!
//! - a 6×16 tile of C is 12 registers of 8 accumulators, leaving 4 of the
//!   16 for a row of B (2) and a broadcast value of A;
//! - packed A holds each value once (`vbroadcastss` loads it into all
//!   lanes for free), packed B holds rows of 16 columns on 64-byte
//!   boundaries, one cache line per row.
//!
//! Why the CPU's FMA does not change the bits: the code multiplies and adds
//! separately, and Rust never contracts the two into a fused multiply-add,
//! with or without the `fma` target feature (float contraction is not a
//! Rust semantic).
//!
//! The functions here are `#[inline(always)]` so that they are compiled
//! inside the AVX2 context `pulp` opens (`V3::vectorize`); outside it they
//! would be plain SSE2 code.

use super::canon;
use super::Transpose;

/// Rows of A in one register tile.
pub(super) const MR: usize = 6;
/// Columns of C in one register tile and one packed strip of B.
pub(super) const NR: usize = 16;
/// Values of `p` in one block: a strip of B (`KC`×`NR`, 16 KiB) stays in
/// the 32 KiB L1 while every panel of A passes over it.
pub(super) const KC: usize = 256;
/// Rows of A packed at once: `MC`×`KC` values, 72 KiB, in L2. A multiple
/// of `MR`.
pub(super) const MC: usize = 72;

/// One row of a packed B strip: 16 columns, one cache line.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(64))]
pub(super) struct Row([f32; NR]);

/// B as strips of `NR` columns: strip `s`, row `p` holds `b(p, s*NR + jj)`
/// at index `s*k + p`, lane `jj`, zero past column `n`.
pub(super) fn pack_b(b: &[f32], k: usize, n: usize, t: Transpose) -> Vec<Row> {
    let strips = n.div_ceil(NR);
    let mut bp = vec![Row::default(); strips * k];
    for (s, strip) in bp.chunks_exact_mut(k).enumerate() {
        let j0 = s * NR;
        let nc = NR.min(n - j0);
        for (p, row) in strip.iter_mut().enumerate() {
            for (jj, lane) in row.0[..nc].iter_mut().enumerate() {
                *lane = match t {
                    Transpose::B => b[(j0 + jj) * k + p],
                    _ => b[p * n + j0 + jj],
                };
            }
        }
    }
    bp
}

/// Rows `row0..row0 + c_rows.len()/n` of C, written into `c_rows`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) fn band(
    a: &[f32],
    bp: &[Row],
    m: usize,
    k: usize,
    n: usize,
    t: Transpose,
    row0: usize,
    c_rows: &mut [f32],
) {
    let rows = c_rows.len() / n;
    let strips = n.div_ceil(NR);
    let mut ap = vec![[0.0f32; MR]; MC.div_ceil(MR) * KC.min(k)];
    for pc in (0..k).step_by(KC) {
        let kc = KC.min(k - pc);
        for ic in (0..rows).step_by(MC) {
            let mc = MC.min(rows - ic);
            let panels = mc.div_ceil(MR);
            let ap = &mut ap[..panels * kc];
            pack_a(a, m, k, t, row0 + ic, mc, pc, kc, ap);
            for s in 0..strips {
                let j0 = s * NR;
                let nc = NR.min(n - j0);
                let b_strip = &bp[s * k + pc..s * k + pc + kc];
                for (q, a_panel) in ap.chunks_exact(kc).enumerate() {
                    let i0 = ic + q * MR;
                    let mr = MR.min(rows - i0);
                    let mut acc = [[0.0f32; NR]; MR];
                    if pc > 0 {
                        for (r, acc_row) in acc.iter_mut().enumerate().take(mr) {
                            let at = (i0 + r) * n + j0;
                            acc_row[..nc].copy_from_slice(&c_rows[at..at + nc]);
                        }
                    }
                    kernel(a_panel, b_strip, &mut acc);
                    for (r, acc_row) in acc.iter().enumerate().take(mr) {
                        let at = (i0 + r) * n + j0;
                        c_rows[at..at + nc].copy_from_slice(&acc_row[..nc]);
                    }
                }
            }
        }
    }
    for v in c_rows.iter_mut() {
        *v = canon(*v);
    }
}

/// Rows `i0..i0 + mc`, columns `pc..pc + kc` of the logical A, as panels of
/// `MR` rows: panel `q` holds `a(i0 + q*MR + r, pc + p)` at `[q*kc + p][r]`,
/// zero past row `i0 + mc`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn pack_a(
    a: &[f32],
    m: usize,
    k: usize,
    t: Transpose,
    i0: usize,
    mc: usize,
    pc: usize,
    kc: usize,
    ap: &mut [[f32; MR]],
) {
    for (q, panel) in ap.chunks_exact_mut(kc).enumerate() {
        for r in 0..MR {
            let i = i0 + q * MR + r;
            if q * MR + r >= mc {
                for col in panel.iter_mut() {
                    col[r] = 0.0;
                }
                continue;
            }
            match t {
                Transpose::A => {
                    for (p, col) in panel.iter_mut().enumerate() {
                        col[r] = a[(pc + p) * m + i];
                    }
                }
                _ => {
                    let row = &a[i * k + pc..i * k + pc + kc];
                    for (col, &v) in panel.iter_mut().zip(row) {
                        col[r] = v;
                    }
                }
            }
        }
    }
}

/// One `MR`×`NR` tile: for each `p` in order, `acc[r][j] += a[r] * b[j]`,
/// the product rounded, then the sum.
#[inline(always)]
fn kernel(a_panel: &[[f32; MR]], b_strip: &[Row], acc: &mut [[f32; NR]; MR]) {
    let mut c = *acc;
    for (a, b) in a_panel.iter().zip(b_strip) {
        for (c_row, &ar) in c.iter_mut().zip(a) {
            for (cj, &bj) in c_row.iter_mut().zip(&b.0) {
                let prod = ar * bj;
                *cj += prod;
            }
        }
    }
    *acc = c;
}
