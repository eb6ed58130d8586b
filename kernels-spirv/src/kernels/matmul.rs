//! CPU reference of matmul.comp: `matmul`, `matmul_tn` (Aᵀ·B) and
//! `matmul_nt` (A·Bᵀ).
//!
//! `C[i,j]` = fold over `p = 0..k` ascending of `acc = acc + A[i,p] * B[p,j]`,
//! `acc` starting at `+0.0`, each product and each sum rounded once, NaN
//! results canonical.
//!
//! [`matmul`] is blocked for speed (see "Blocking" below); every `C[i,j]`
//! still starts at `+0.0` and sees its products one by one in ascending `p`,
//! so the bits are those of the plain loops (`matmul_simple`, kept for the
//! tests that hold the two equal bit for bit).
//!
//! # Blocking
//!
//! - B is packed once into strips of `NR` columns (`[p][NR]`, zero-padded
//!   past `n`), whatever its layout.
//! - Each worker owns a band of rows of C. For each block of `KC` values of
//!   `p`, ascending, and each block of `MC` rows, it packs that piece of A
//!   into panels of `MR` rows (`[p][MR]`, zero-padded past the band), then
//!   runs the micro-kernel on every `MR`×`NR` tile: the tile's partial sums
//!   (C itself, or `+0.0` in the first `p` block) are loaded into a local
//!   array, the block's products are added one `p` at a time, and the tile
//!   is stored back. Storing and reloading an f32 is exact, so the chain of
//!   roundings is the unblocked one.
//! - Padding rows and columns are computed and thrown away; they never
//!   touch a real element.
//! - The micro-kernel is `acc[r][j] = acc[r][j] + a[r] * b[j]` on fixed-size
//!   arrays, which the compiler vectorizes; Rust never contracts a separate
//!   multiply and add into a fused multiply-add.
//! - Two widths share this plan: 4 lanes (SSE2, every x86-64: 6×8 tiles,
//!   below) and 8 lanes (AVX2, 6×16 tiles, [`wide`]), picked at run time by
//!   [`Lanes::widest`] through `pulp`'s feature detection, so the binary
//!   still runs on any x86-64 and no `unsafe` is written here. Both are held
//!   bit-equal to the plain loops by the tests.

use super::canon;

mod wide;

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

/// Rows of A in one register tile of the 4-lane path. The build targets
/// plain x86-64 (SSE2, 16 registers of 4 f32): a 6×8 tile is 12 registers of accumulators,
/// leaving room for a row of B and a value of A without spilling.
const MR: usize = 6;
/// Columns of C in one register tile (and one packed strip of B).
const NR: usize = 8;
/// Values of `p` in one block: one packed strip of B (`KC`×`NR`, 8 KiB)
/// stays in L1 while every panel of A passes over it.
const KC: usize = 256;
/// Rows of A packed at once: `MC`×`KC` values in four lanes each, 288 KiB,
/// in L2. A multiple of `MR`.
const MC: usize = 72;
/// `Quad`s in one row of a B strip.
const NV: usize = NR / 4;

/// Four f32 on a 16-byte boundary: one SIMD register's worth, so the
/// micro-kernel's loads need no realignment. Packed A holds each value
/// repeated four times (ready to multiply a row of B lane by lane); packed B
/// holds four consecutive columns.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(16))]
struct Quad([f32; 4]);

/// C (m×n) for the given operand layouts. Rows of C are split across
/// `threads` workers; rows are independent, so the split cannot change bits.
/// On x86-64 CPUs with AVX2 the 8-lane blocking in [`wide`] runs, elsewhere
/// the 4-lane one below: the same bits either way (tested).
pub fn matmul(
    a: &[f32],
    b: &[f32],
    m: usize,
    k: usize,
    n: usize,
    t: Transpose,
    threads: usize,
) -> Vec<f32> {
    matmul_on(Lanes::widest(), a, b, m, k, n, t, threads)
}

/// How wide the vectors of [`matmul`]'s micro-kernel are on this CPU.
#[derive(Debug, Clone, Copy)]
pub enum Lanes {
    /// 4 lanes: SSE2, every x86-64 (and any other target).
    Four,
    /// 8 lanes: x86-64 with AVX2 (and FMA, which is never used).
    #[cfg(target_arch = "x86_64")]
    Eight(pulp::x86::V3),
}

impl Lanes {
    /// The widest this CPU runs.
    pub fn widest() -> Lanes {
        #[cfg(target_arch = "x86_64")]
        if let Some(v3) = pulp::x86::V3::try_new() {
            return Lanes::Eight(v3);
        }
        Lanes::Four
    }

    /// The number of f32 lanes, for reports.
    pub fn count(self) -> usize {
        match self {
            Lanes::Four => 4,
            #[cfg(target_arch = "x86_64")]
            Lanes::Eight(_) => 8,
        }
    }
}

/// [`matmul`] on the given vector width.
#[allow(clippy::too_many_arguments)]
fn matmul_on(
    lanes: Lanes,
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
    // k = 0: every element is the initial +0.0, already canonical.
    if m == 0 || n == 0 || k == 0 {
        return c;
    }
    let threads = threads.clamp(1, m);
    // Bands of whole tiles where possible, so only the last band has a
    // partial tile (both widths use 6-row tiles).
    const { assert!(MR == wide::MR) };
    let rows_per = m.div_ceil(threads).next_multiple_of(MR);
    match lanes {
        Lanes::Four => {
            let bp = pack_b(b, k, n, t);
            std::thread::scope(|s| {
                for (chunk, c_rows) in c.chunks_mut(rows_per * n).enumerate() {
                    let bp = &bp;
                    s.spawn(move || band(a, bp, m, k, n, t, chunk * rows_per, c_rows));
                }
            });
        }
        #[cfg(target_arch = "x86_64")]
        Lanes::Eight(v3) => {
            let bp = wide::pack_b(b, k, n, t);
            std::thread::scope(|s| {
                for (chunk, c_rows) in c.chunks_mut(rows_per * n).enumerate() {
                    let bp = &bp;
                    // Each worker enters the AVX2 context itself: a thread's
                    // body is its own function, compiled for plain x86-64.
                    s.spawn(move || {
                        v3.vectorize(|| wide::band(a, bp, m, k, n, t, chunk * rows_per, c_rows))
                    });
                }
            });
        }
    }
    c
}

/// B as strips of `NR` columns: strip `s` holds `b(p, s*NR + jj)` at lane
/// `jj % 4` of `s*k*NV + p*NV + jj/4`, zero past column `n`.
fn pack_b(b: &[f32], k: usize, n: usize, t: Transpose) -> Vec<Quad> {
    let strips = n.div_ceil(NR);
    let mut bp = vec![Quad::default(); strips * k * NV];
    for (s, strip) in bp.chunks_exact_mut(k * NV).enumerate() {
        let j0 = s * NR;
        let nc = NR.min(n - j0);
        for (p, row) in strip.chunks_exact_mut(NV).enumerate() {
            for jj in 0..nc {
                row[jj / 4].0[jj % 4] = match t {
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
fn band(
    a: &[f32],
    bp: &[Quad],
    m: usize,
    k: usize,
    n: usize,
    t: Transpose,
    row0: usize,
    c_rows: &mut [f32],
) {
    let rows = c_rows.len() / n;
    let strips = n.div_ceil(NR);
    let mut ap = vec![Quad::default(); MC.next_multiple_of(MR) * KC.min(k)];
    for pc in (0..k).step_by(KC) {
        let kc = KC.min(k - pc);
        for ic in (0..rows).step_by(MC) {
            let mc = MC.min(rows - ic);
            let panels = mc.div_ceil(MR);
            pack_a(
                a,
                m,
                k,
                t,
                row0 + ic,
                mc,
                pc,
                kc,
                &mut ap[..panels * MR * kc],
            );
            for s in 0..strips {
                let j0 = s * NR;
                let nc = NR.min(n - j0);
                let b_strip = &bp[(s * k + pc) * NV..(s * k + pc + kc) * NV];
                for (q, a_panel) in ap[..panels * MR * kc].chunks_exact(MR * kc).enumerate() {
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
/// `MR` rows: panel `q` holds `a(i0 + q*MR + r, pc + p)`, in all four lanes,
/// at `q*kc*MR + p*MR + r`, zero past row `i0 + mc`.
#[allow(clippy::too_many_arguments)]
fn pack_a(
    a: &[f32],
    m: usize,
    k: usize,
    t: Transpose,
    i0: usize,
    mc: usize,
    pc: usize,
    kc: usize,
    ap: &mut [Quad],
) {
    for (q, panel) in ap.chunks_exact_mut(MR * kc).enumerate() {
        for r in 0..MR {
            let i = i0 + q * MR + r;
            if q * MR + r >= mc {
                for p in 0..kc {
                    panel[p * MR + r] = Quad::default();
                }
                continue;
            }
            match t {
                Transpose::A => {
                    for p in 0..kc {
                        panel[p * MR + r] = Quad([a[(pc + p) * m + i]; 4]);
                    }
                }
                _ => {
                    let row = &a[i * k + pc..i * k + pc + kc];
                    for (p, &v) in row.iter().enumerate() {
                        panel[p * MR + r] = Quad([v; 4]);
                    }
                }
            }
        }
    }
}

/// One `MR`×`NR` tile: for each `p` in order, `acc[r][j] += a[r] * b[j]`,
/// the product rounded, then the sum.
#[inline(always)]
fn kernel(a_panel: &[Quad], b_strip: &[Quad], acc: &mut [[f32; NR]; MR]) {
    let mut c = *acc;
    let (a_rows, _) = a_panel.as_chunks::<MR>();
    let (b_rows, _) = b_strip.as_chunks::<NV>();
    for (a, b) in a_rows.iter().zip(b_rows) {
        for r in 0..MR {
            for v in 0..NV {
                for l in 0..4 {
                    let prod = a[r].0[l] * b[v].0[l];
                    c[r][v * 4 + l] += prod;
                }
            }
        }
    }
    *acc = c;
}

/// The plain `i, p, j` loops the blocked [`matmul`] replaced: the inner loop
/// streams rows of B. Kept as the tests' yardstick.
#[cfg(test)]
fn matmul_simple(
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Edge values: NaNs with payloads and signs (quiet and signalling),
    /// ±inf, subnormals, ±0, extremes; plus small integers, whose sums cancel
    /// to exact zeros (the sign of a zero sum depends on the +0.0 start).
    fn value() -> impl Strategy<Value = f32> {
        let edges: Vec<f32> = [
            0x7FC0_0000u32, // canonical NaN
            0x7FC0_1234,    // quiet NaN, payload
            0xFFC0_0001,    // negative quiet NaN
            0x7F80_0001,    // signalling NaN
            0xFF80_4321,    // negative signalling NaN
            0x7F80_0000,    // +inf
            0xFF80_0000,    // -inf
            0x0000_0001,    // smallest subnormal
            0x8000_0001,    // its negative
            0x007F_FFFF,    // largest subnormal
            0x807F_FFFF,    // its negative
            0x0080_0000,    // smallest normal
            0x0000_0000,    // +0
            0x8000_0000,    // -0
            0x7F7F_FFFF,    // max
            0xFF7F_FFFF,    // -max
            0x3F80_0001,    // 1 + ulp
        ]
        .into_iter()
        .map(f32::from_bits)
        .collect();
        prop_oneof![
            6 => -1.0e3f32..1.0e3f32,
            2 => (-2i8..=2).prop_map(f32::from),
            1 => any::<u32>().prop_map(f32::from_bits),
            1 => prop::sample::select(edges),
        ]
    }

    /// Mostly small sizes (0, 1, and non-multiples of MR and NR), sometimes
    /// past MC rows, KC values of p, or several strips of columns.
    fn dim(big: usize) -> impl Strategy<Value = usize> {
        prop_oneof![4 => 0usize..=19, 1 => 20usize..=big]
    }

    fn case() -> impl Strategy<Value = (usize, usize, usize, Vec<f32>, Vec<f32>, usize)> {
        (
            dim(MC + 2 * MR + 3),
            dim(2 * KC + 9),
            dim(3 * wide::NR + 5),
            prop::sample::select(vec![1usize, 2, 3, 5, 8]),
        )
            .prop_flat_map(|(m, k, n, threads)| {
                (
                    Just(m),
                    Just(k),
                    Just(n),
                    prop::collection::vec(value(), m * k),
                    prop::collection::vec(value(), k * n),
                    Just(threads),
                )
            })
    }

    /// Every width this CPU runs: the 4-lane path always, the 8-lane one
    /// where the CPU has AVX2 (CI's and the development VM's do; the test
    /// says so when it cannot cover it).
    fn widths() -> Vec<Lanes> {
        let widest = Lanes::widest();
        if widest.count() == 4 {
            eprintln!("matmul: this CPU has no AVX2, only the 4-lane path is tested");
            vec![Lanes::Four]
        } else {
            vec![Lanes::Four, widest]
        }
    }

    fn bits(v: Vec<f32>) -> Vec<u32> {
        v.into_iter().map(f32::to_bits).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// The blocked matmul and the plain loops agree bit for bit, for
        /// every layout (the same buffers read as A·B, AᵀB and ABᵀ with the
        /// matching shapes) and thread count.
        #[test]
        fn blocked_matches_simple((m, k, n, a, b, threads) in case()) {
            for t in [Transpose::None, Transpose::A, Transpose::B] {
                let want = bits(matmul_simple(&a, &b, m, k, n, t, threads));
                for lanes in widths() {
                    prop_assert_eq!(
                        &bits(matmul_on(lanes, &a, &b, m, k, n, t, threads)),
                        &want,
                        "{:?} {:?} m={} k={} n={} threads={}", lanes, t, m, k, n, threads
                    );
                }
            }
        }
    }

    #[test]
    fn edges_of_every_block() {
        // Deterministic sizes straddling each block size, values a cheap
        // hash of the index with NaN, inf, -0 and subnormals mixed in.
        let val = |i: usize| match i % 37 {
            0 => f32::from_bits(0x7F80_0001),
            1 => f32::INFINITY,
            2 => -0.0,
            3 => f32::from_bits(0x8000_0003),
            _ => ((i * 7919) % 201) as f32 / 16.0 - 6.0,
        };
        for (m, k, n) in [
            (MC, KC, NR),
            (MC + 1, KC + 1, NR + 1),
            (MC - 1, KC - 1, NR - 1),
            (2 * MC + MR - 1, 2 * KC + 1, 4 * NR + 3),
            (1, 3 * KC, 1),
            (MR + 1, 1, 2 * NR),
            (MR + 1, 2 * KC + 3, 16 * NR + 3),
            (wide::MC + 1, wide::KC + 1, wide::NR + 1),
            (wide::MC - 1, wide::KC - 1, wide::NR - 1),
            (2 * wide::MC + 5, 2 * wide::KC + 1, 3 * wide::NR + 7),
        ] {
            let a: Vec<f32> = (0..m * k).map(val).collect();
            let b: Vec<f32> = (0..k * n).map(|i| val(i + 11)).collect();
            for t in [Transpose::None, Transpose::A, Transpose::B] {
                for threads in [1, 2, 7] {
                    let want = bits(matmul_simple(&a, &b, m, k, n, t, threads));
                    for lanes in widths() {
                        assert_eq!(
                            bits(matmul_on(lanes, &a, &b, m, k, n, t, threads)),
                            want,
                            "{lanes:?} {t:?} m={m} k={k} n={n} threads={threads}"
                        );
                    }
                }
            }
        }
    }
}
