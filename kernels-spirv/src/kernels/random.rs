//! CPU reference of random.comp: Philox4x32-10 streams keyed by
//! (seed, stream, offset).

use super::{canon, math};

/// Counter of the Philox block for output element `i`.
fn counter(offset: u64, i: usize, per_block: usize, stream: u32) -> [u32; 4] {
    let block = offset.wrapping_add((i / per_block) as u64);
    [block as u32, (block >> 32) as u32, stream, 0]
}

fn key(seed: u64) -> [u32; 2] {
    [seed as u32, (seed >> 32) as u32]
}

/// `len` uniform values in [0, 1).
pub fn rand_uniform(len: usize, seed: u64, stream: u32, offset: u64) -> Vec<f32> {
    (0..len)
        .map(|i| {
            let r = math::philox4x32_10(counter(offset, i, 4, stream), key(seed));
            canon(math::uniform_from_bits(r[i % 4]))
        })
        .collect()
}

/// `len` standard normal values (Box–Muller on two lanes of a block).
pub fn rand_normal(len: usize, seed: u64, stream: u32, offset: u64) -> Vec<f32> {
    (0..len)
        .map(|i| {
            let r = math::philox4x32_10(counter(offset, i, 2, stream), key(seed));
            let v = if i % 2 == 0 {
                math::normal_from_bits(r[0], r[1])
            } else {
                math::normal_from_bits(r[2], r[3])
            };
            canon(v)
        })
        .collect()
}
