//! Deterministic test and demo data: the same `(shape, seed, fill)` gives the
//! same tensor on every machine, so test cases, golden hashes and demo inputs
//! can be named by their seed instead of committed as files.
//!
//! This is not the ML random generator (that is a counter-based kernel op);
//! it is a host-side SplitMix64 stream.

use crate::{Tensor, TensorError};

/// What values to draw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fill {
    /// Uniform in [-1, 1) on a 2^-24 grid: realistic activations.
    Uniform,
    /// Mostly values of random sign and exponent in [2^-20, 2^20); with
    /// probability `edge_per_mille`/1000 an edge value: ±0, subnormals (the
    /// smallest, the largest, random ones), the smallest normal, the largest
    /// finite, values near overflow and underflow, ±inf, NaNs of assorted
    /// signs and payloads.
    Edgy { edge_per_mille: u32 },
}

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and fully specified.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0); the tiny modulo bias is irrelevant here.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

const EDGES: &[u32] = &[
    0x0000_0000, // +0
    0x8000_0000, // -0
    0x0000_0001, // smallest subnormal
    0x8000_0001,
    0x007F_FFFF, // largest subnormal
    0x807F_FFFF,
    0x0080_0000, // smallest normal
    0x8080_0000,
    0x7F7F_FFFF, // largest finite
    0xFF7F_FFFF,
    0x7F80_0000, // +inf
    0xFF80_0000, // -inf
    0x7FC0_0000, // canonical NaN
    0xFFC0_0000, // x86's default NaN
    0x7F80_0001, // signalling NaN
    0x7FFF_FFFF, // NaN with a full payload
    0x3F80_0000, // 1
    0xBF80_0000, // -1
];

impl Fill {
    fn draw(self, rng: &mut SplitMix64) -> f32 {
        match self {
            Fill::Uniform => {
                // 24 random bits onto [-1, 1): exact in binary32.
                let v = (rng.next_u64() >> 40) as i32 - (1 << 23);
                v as f32 * (1.0 / (1u32 << 23) as f32)
            }
            Fill::Edgy { edge_per_mille } => {
                let r = rng.next_u64();
                let sign = ((r >> 63) as u32) << 31;
                if (r % 1000) < edge_per_mille as u64 {
                    let pick = (r >> 10) % 5;
                    let bits = match pick {
                        // A listed edge value.
                        0 | 1 => EDGES[((r >> 20) % EDGES.len() as u64) as usize],
                        // A random subnormal.
                        2 => sign | ((r >> 20) as u32 & 0x007F_FFFF).max(1),
                        // Near overflow: products of two of these overflow.
                        3 => {
                            sign | ((250 + ((r >> 20) % 4) as u32) << 23)
                                | ((r >> 24) as u32 & 0x007F_FFFF)
                        }
                        // Near underflow: products land among the subnormals.
                        _ => {
                            sign | ((1 + ((r >> 20) % 40) as u32) << 23)
                                | ((r >> 24) as u32 & 0x007F_FFFF)
                        }
                    };
                    f32::from_bits(bits)
                } else {
                    let exponent = 127 - 20 + ((r >> 8) % 40) as u32;
                    f32::from_bits(sign | (exponent << 23) | ((r >> 32) as u32 & 0x007F_FFFF))
                }
            }
        }
    }
}

impl Tensor {
    /// A tensor of `shape` filled deterministically from `seed`.
    pub fn filled(shape: Vec<usize>, seed: u64, fill: Fill) -> Result<Tensor, TensorError> {
        let mut t = Tensor::zeros(shape)?;
        let mut rng = SplitMix64::new(seed);
        for v in t.data_mut() {
            *v = fill.draw(&mut rng);
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_bits_other_seed_other_bits() {
        let a = Tensor::filled(
            vec![7, 9],
            42,
            Fill::Edgy {
                edge_per_mille: 200,
            },
        )
        .unwrap();
        let b = Tensor::filled(
            vec![7, 9],
            42,
            Fill::Edgy {
                edge_per_mille: 200,
            },
        )
        .unwrap();
        let c = Tensor::filled(
            vec![7, 9],
            43,
            Fill::Edgy {
                edge_per_mille: 200,
            },
        )
        .unwrap();
        assert!(a.bit_eq(&b));
        assert!(!a.bit_eq(&c));
    }

    #[test]
    fn edgy_covers_every_class() {
        let t = Tensor::filled(
            vec![20_000],
            1,
            Fill::Edgy {
                edge_per_mille: 500,
            },
        )
        .unwrap();
        let has = |f: fn(f32) -> bool| t.data().iter().any(|&x| f(x));
        assert!(has(|x| x == 0.0 && x.is_sign_negative()));
        assert!(has(|x| x == 0.0 && x.is_sign_positive()));
        assert!(has(|x| x.is_subnormal()));
        assert!(has(|x| x == f32::INFINITY));
        assert!(has(|x| x == f32::NEG_INFINITY));
        assert!(has(|x| x.is_nan()));
        assert!(has(|x| x.abs() > 1e37 && x.is_finite()));
    }

    #[test]
    fn uniform_stays_in_range() {
        let t = Tensor::filled(vec![10_000], 5, Fill::Uniform).unwrap();
        assert!(t.data().iter().all(|&x| (-1.0..1.0).contains(&x)));
    }
}
