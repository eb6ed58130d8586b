//! Property tests: the codec round-trips every bit pattern, and the decoder
//! never panics whatever it is fed.

use lockstep_tensor::{npy, Tensor};
use proptest::prelude::*;

fn tensor() -> impl Strategy<Value = Tensor> {
    prop::collection::vec(0usize..6, 0..=4).prop_flat_map(|shape| {
        let n: usize = shape.iter().product();
        prop::collection::vec(any::<u32>(), n).prop_map(move |bits| {
            let data = bits.into_iter().map(f32::from_bits).collect();
            Tensor::new(shape.clone(), data).unwrap()
        })
    })
}

/// Header-shaped noise, so the parser sees near misses rather than only
/// bytes it rejects at the first character.
fn header_noise() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "{",
        "}",
        "(",
        ")",
        "[",
        "]",
        ",",
        ":",
        " ",
        "\n",
        "'",
        "\"",
        "0",
        "7",
        "99999999999999999999",
        "True",
        "False",
        "None",
        "L",
        "'descr'",
        "'<f4'",
        "'>f4'",
        "'fortran_order'",
        "'shape'",
    ]);
    prop::collection::vec(pieces, 0..40).prop_map(|p| p.concat())
}

proptest! {
    #[test]
    fn decode_inverts_encode(t in tensor()) {
        let bytes = npy::encode(&t);
        prop_assert_eq!(bytes.len() % 64, (t.len() * 4) % 64);
        let back = npy::decode(&bytes).unwrap();
        prop_assert!(t.bit_eq(&back), "mismatch {:?}", t.first_bit_mismatch(&back));
        prop_assert_eq!(t.sha256(), back.sha256());
    }

    #[test]
    fn decode_survives_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = npy::decode(&bytes);
        let mut with_magic = b"\x93NUMPY\x01\x00".to_vec();
        with_magic.extend_from_slice(&bytes);
        let _ = npy::decode(&with_magic);
    }

    #[test]
    fn decode_survives_mutated_files(
        t in tensor(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut bytes = npy::encode(&t);
        for (at, byte) in edits {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len()));
        }
        let _ = npy::decode(&bytes);
    }

    #[test]
    fn decode_survives_header_noise(header in header_noise(), v in 1u8..=3) {
        let mut bytes = b"\x93NUMPY".to_vec();
        bytes.extend_from_slice(&[v, 0]);
        if v == 1 {
            bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        } else {
            bytes.extend_from_slice(&(header.len() as u32).to_le_bytes());
        }
        bytes.extend_from_slice(header.as_bytes());
        let _ = npy::decode(&bytes);
    }
}
