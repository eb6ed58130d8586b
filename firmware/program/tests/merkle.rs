//! The trace's Merkle tree against a straightforward recursive statement of
//! RFC 6962 §2.1, and tampering with proofs.

use lockstep_program::trace::{self, Hash, MerkleBuilder};
use proptest::prelude::*;
use sha2::{Digest, Sha256};

fn sha(parts: &[&[u8]]) -> Hash {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

fn k_of(n: usize) -> usize {
    (0..)
        .map(|e| 1usize << e)
        .take_while(|&k| k < n)
        .last()
        .unwrap()
}

/// MTH(D[n]) exactly as RFC 6962 §2.1 states it.
fn mth(d: &[Hash]) -> Hash {
    match d.len() {
        0 => sha(&[]),
        1 => sha(&[&[0], &d[0]]),
        n => {
            let k = k_of(n);
            sha(&[&[1], &mth(&d[..k]), &mth(&d[k..])])
        }
    }
}

/// PATH(m, D[n]) exactly as RFC 6962 §2.1.1 states it.
fn path(m: usize, d: &[Hash]) -> Vec<Hash> {
    let n = d.len();
    if n == 1 {
        return vec![];
    }
    let k = k_of(n);
    if m < k {
        let mut p = path(m, &d[..k]);
        p.push(mth(&d[k..]));
        p
    } else {
        let mut p = path(m - k, &d[k..]);
        p.push(mth(&d[..k]));
        p
    }
}

fn leaves(n: usize) -> Vec<Hash> {
    (0..n as u32).map(|i| sha(&[&i.to_le_bytes()])).collect()
}

#[test]
fn roots_and_paths_match_the_rfc_for_small_trees() {
    for n in 0..=70 {
        let d = leaves(n);
        let expected = mth(&d);
        assert_eq!(trace::root(&d), expected, "root, n = {n}");
        let mut b = MerkleBuilder::new();
        for (i, leaf) in d.iter().enumerate() {
            // Every prefix's root is right too, not only the last.
            assert_eq!(b.root(), mth(&d[..i]), "prefix {i}");
            b.push(leaf);
        }
        assert_eq!(b.len(), n as u64);
        assert_eq!(b.root(), expected);
        for m in 0..n {
            let p = trace::prove(&d, m).unwrap();
            assert_eq!(p, path(m, &d), "path {m} of {n}");
            assert!(trace::verify(&expected, n as u64, m as u64, &d[m], &p));
        }
        assert!(trace::prove(&d, n).is_none());
    }
}

#[test]
fn tampering_is_rejected() {
    for n in 1..=33 {
        let d = leaves(n);
        let root = trace::root(&d);
        let size = n as u64;
        for m in 0..n {
            let proof = trace::prove(&d, m).unwrap();
            let idx = m as u64;
            assert!(trace::verify(&root, size, idx, &d[m], &proof));
            // A flipped bit anywhere in the proof.
            for i in 0..proof.len() {
                for bit in [0usize, 77, 255] {
                    let mut bad = proof.clone();
                    bad[i][bit / 8] ^= 1 << (bit % 8);
                    assert!(!trace::verify(&root, size, idx, &d[m], &bad));
                }
            }
            // A flipped bit in the leaf or the root.
            let mut leaf = d[m];
            leaf[31] ^= 0x80;
            assert!(!trace::verify(&root, size, idx, &leaf, &proof));
            let mut r = root;
            r[0] ^= 1;
            assert!(!trace::verify(&r, size, idx, &d[m], &proof));
            // Another index, or one past the end.
            for other in 0..=n as u64 {
                if other != idx {
                    assert!(
                        !trace::verify(&root, size, other, &d[m], &proof),
                        "{m} as {other} of {n}"
                    );
                }
            }
            // A proof one element short or long.
            if !proof.is_empty() {
                assert!(!trace::verify(
                    &root,
                    size,
                    idx,
                    &d[m],
                    &proof[..proof.len() - 1]
                ));
            }
            let mut long = proof.clone();
            long.push(root);
            assert!(!trace::verify(&root, size, idx, &d[m], &long));
            // The leaf hash in place of the leaf (no second preimage via the
            // domain separation).
            assert!(!trace::verify(
                &root,
                size,
                idx,
                &trace::leaf_hash(&d[m]),
                &proof
            ));
        }
    }
}

#[test]
fn interior_nodes_are_not_leaves() {
    // A two-leaf tree's root is not the leaf hash of the two leaves joined:
    // leaves and nodes hash under different prefixes.
    let d = leaves(2);
    let mut joined = Vec::new();
    joined.extend_from_slice(&d[0]);
    joined.extend_from_slice(&d[1]);
    assert_ne!(trace::root(&d), trace::leaf_hash(&joined));
    assert_eq!(
        trace::root(&d),
        trace::node_hash(&trace::leaf_hash(&d[0]), &trace::leaf_hash(&d[1]))
    );
}

proptest! {
    #[test]
    fn random_sizes(n in 1usize..600, pick in any::<usize>()) {
        let d = leaves(n);
        let root = trace::root(&d);
        prop_assert_eq!(root, mth(&d));
        let m = pick % n;
        let p = trace::prove(&d, m).unwrap();
        prop_assert!(p.len() <= 10);
        prop_assert!(trace::verify(&root, n as u64, m as u64, &d[m], &p));
    }
}
