//! scrypt (RFC 7914) by hand, without RFC 7914's `N < 2^(16 r)` check:
//! the Web3 Secret Storage Definition's own test vector (N = 2^18, r = 1)
//! breaks it, as do keystores written by geth, which never enforced it.
//! The `scrypt` crate enforces it, so keystores use this one; the tests
//! check both agree wherever the crate accepts the parameters.
//!
//! The caller bounds N, r and p (see [`crate::keystore::check_kdf`]).

use hmac::Hmac;
use sha2::Sha256;
use zeroize::Zeroizing;

/// The working memory could not be allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OutOfMemory;

fn salsa20_8(block: &mut [u32; 16]) {
    let mut x = *block;
    for _ in 0..4 {
        macro_rules! quarter {
            ($a:expr, $b:expr, $c:expr, $d:expr) => {
                x[$b] ^= x[$a].wrapping_add(x[$d]).rotate_left(7);
                x[$c] ^= x[$b].wrapping_add(x[$a]).rotate_left(9);
                x[$d] ^= x[$c].wrapping_add(x[$b]).rotate_left(13);
                x[$a] ^= x[$d].wrapping_add(x[$c]).rotate_left(18);
            };
        }
        // Columns, then rows.
        quarter!(0, 4, 8, 12);
        quarter!(5, 9, 13, 1);
        quarter!(10, 14, 2, 6);
        quarter!(15, 3, 7, 11);
        quarter!(0, 1, 2, 3);
        quarter!(5, 6, 7, 4);
        quarter!(10, 11, 8, 9);
        quarter!(15, 12, 13, 14);
    }
    for (b, x) in block.iter_mut().zip(x) {
        *b = b.wrapping_add(x);
    }
}

/// BlockMix over `input` (2r 64-byte blocks as words) into `output`.
fn block_mix(input: &[u32], output: &mut [u32], r: usize) {
    let mut x: [u32; 16] = input[(2 * r - 1) * 16..].try_into().expect("a block");
    for i in 0..2 * r {
        for (x, b) in x.iter_mut().zip(&input[i * 16..(i + 1) * 16]) {
            *x ^= b;
        }
        salsa20_8(&mut x);
        // Even blocks to the first half, odd ones to the second.
        let at = (i / 2 + (i % 2) * r) * 16;
        output[at..at + 16].copy_from_slice(&x);
    }
}

fn ro_mix(block: &mut [u32], log_n: u8, r: usize, v: &mut [u32]) {
    let words = 32 * r;
    let n = 1usize << log_n;
    let mut x = block.to_vec();
    let mut y = vec![0u32; words];
    for i in 0..n {
        v[i * words..(i + 1) * words].copy_from_slice(&x);
        block_mix(&x, &mut y, r);
        std::mem::swap(&mut x, &mut y);
    }
    for _ in 0..n {
        let j = (x[(2 * r - 1) * 16] as usize) & (n - 1);
        for (x, v) in x.iter_mut().zip(&v[j * words..(j + 1) * words]) {
            *x ^= v;
        }
        block_mix(&x, &mut y, r);
        std::mem::swap(&mut x, &mut y);
    }
    block.copy_from_slice(&x);
}

/// scrypt(password, salt, N = 2^log_n, r, p) into `output`.
pub(crate) fn scrypt(
    password: &[u8],
    salt: &[u8],
    log_n: u8,
    r: u32,
    p: u32,
    output: &mut [u8],
) -> Result<(), OutOfMemory> {
    let r = r as usize;
    let p = p as usize;
    let block_bytes = 128 * r;
    let mut b = Zeroizing::new(vec![0u8; block_bytes * p]);
    pbkdf2::pbkdf2::<Hmac<Sha256>>(password, salt, 1, &mut b).map_err(|_| OutOfMemory)?;
    let words = (1usize << log_n).checked_mul(32 * r).ok_or(OutOfMemory)?;
    let mut v: Vec<u32> = Vec::new();
    v.try_reserve_exact(words).map_err(|_| OutOfMemory)?;
    v.resize(words, 0);
    let mut v = Zeroizing::new(v);
    let mut block = Zeroizing::new(vec![0u32; 32 * r]);
    for chunk in b.chunks_exact_mut(block_bytes) {
        for (w, bytes) in block.iter_mut().zip(chunk.chunks_exact(4)) {
            *w = u32::from_le_bytes(bytes.try_into().expect("4 bytes"));
        }
        ro_mix(&mut block, log_n, r, &mut v);
        for (w, bytes) in block.iter().zip(chunk.chunks_exact_mut(4)) {
            bytes.copy_from_slice(&w.to_le_bytes());
        }
    }
    pbkdf2::pbkdf2::<Hmac<Sha256>>(password, &b, 1, output).map_err(|_| OutOfMemory)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rfc7914_vectors() {
        let mut out = [0u8; 64];
        scrypt(b"", b"", 4, 1, 1, &mut out).unwrap();
        assert_eq!(hex::encode(out), "77d6576238657b203b19ca42c18a0497f16b4844e3074ae8dfdffa3fede21442fcd0069ded0948f8326a753a0fc81f17e8d3e0fb2e0d3628cf35e20c38d18906");
        scrypt(b"password", b"NaCl", 10, 8, 16, &mut out).unwrap();
        assert_eq!(hex::encode(out), "fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b3731622eaf30d92e22a3886ff109279d9830dac727afb94a83ee6d8360cbdfa2cc0640");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        #[test]
        fn agrees_with_the_scrypt_crate(
            password in proptest::collection::vec(any::<u8>(), 0..20),
            salt in proptest::collection::vec(any::<u8>(), 0..20),
            log_n in 1u8..8,
            r in 1u32..4,
            p in 1u32..3,
        ) {
            let mut ours = [0u8; 32];
            scrypt(&password, &salt, log_n, r, p, &mut ours).unwrap();
            let params = ::scrypt::Params::new(log_n, r, p, 32).unwrap();
            let mut theirs = [0u8; 32];
            ::scrypt::scrypt(&password, &salt, &params, &mut theirs).unwrap();
            prop_assert_eq!(ours, theirs);
        }
    }
}
