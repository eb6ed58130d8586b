//! The trace commitment: an RFC 6962 (Certificate Transparency) Merkle tree
//! over one 32-byte leaf per executed op.
//!
//! A leaf is the SHA-256 of the op's output tensor's canonical `.npy` bytes
//! ([`lockstep_tensor::Tensor::sha256`]). Hashing follows RFC 6962 §2.1
//! (RFC 9162 §2.1.1) exactly:
//!
//! - leaf hash: `SHA-256(0x00 || leaf)`
//! - node hash: `SHA-256(0x01 || left || right)`
//! - a tree of `n > 1` leaves splits at `k`, the largest power of two
//!   smaller than `n`: the root is `node(MTH(D[0..k]), MTH(D[k..n]))`
//! - the empty tree's root is `SHA-256("")`
//!
//! [`MerkleBuilder`] computes the root incrementally with O(log n) memory;
//! [`prove`] and [`verify`] give and check RFC 6962 audit paths, so a single
//! op's output can be proved against a published root.

use sha2::{Digest, Sha256};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// `SHA-256(0x00 || data)`: the hash of a leaf holding `data` (for traces,
/// `data` is the 32-byte output digest).
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(data);
    h.finalize().into()
}

/// `SHA-256(0x01 || left || right)`: the hash of an interior node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of the empty tree: `SHA-256("")`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// Builds the root one leaf at a time, keeping only the roots of the
/// complete subtrees (one per set bit of the leaf count).
#[derive(Debug, Clone, Default)]
pub struct MerkleBuilder {
    /// Roots of complete subtrees, left to right, with their heights; the
    /// heights strictly decrease.
    stack: Vec<(Hash, u32)>,
    len: u64,
}

impl MerkleBuilder {
    pub fn new() -> MerkleBuilder {
        MerkleBuilder::default()
    }

    /// Appends a leaf (its data, hashed here with the 0x00 prefix).
    pub fn push(&mut self, leaf: &[u8]) {
        self.push_leaf_hash(leaf_hash(leaf));
    }

    /// Appends a leaf whose leaf hash is already computed.
    pub fn push_leaf_hash(&mut self, hash: Hash) {
        let mut node = (hash, 0u32);
        // Merge equal-height subtrees: the same carries as adding 1 to len.
        while let Some(&(left, height)) = self.stack.last() {
            if height != node.1 {
                break;
            }
            self.stack.pop();
            node = (node_hash(&left, &node.0), height + 1);
        }
        self.stack.push(node);
        self.len += 1;
    }

    /// Leaves appended so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The root of the leaves so far. With `n = 2^a + 2^b + …` (a > b > …)
    /// the RFC split puts the complete 2^a subtree on the left and the rest
    /// on the right, recursively, so the root folds the stack from the right.
    pub fn root(&self) -> Hash {
        let mut iter = self.stack.iter().rev();
        let Some(&(mut acc, _)) = iter.next() else {
            return empty_root();
        };
        for (left, _) in iter {
            acc = node_hash(left, &acc);
        }
        acc
    }
}

/// The root over `leaves` (leaf data, each 32 bytes).
pub fn root(leaves: &[Hash]) -> Hash {
    let mut b = MerkleBuilder::new();
    for leaf in leaves {
        b.push(leaf);
    }
    b.root()
}

/// The largest power of two smaller than `n` (`n >= 2`).
fn split(n: usize) -> usize {
    debug_assert!(n >= 2);
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

fn subtree_root(leaf_hashes: &[Hash]) -> Hash {
    let mut b = MerkleBuilder::new();
    for h in leaf_hashes {
        b.push_leaf_hash(*h);
    }
    b.root()
}

/// The RFC 6962 audit path (`PATH(m, D[n])`, §2.1.1) for the leaf at
/// `index`: sibling subtree roots from the leaf's level up to the root's
/// children. `None` when `index` is not a leaf.
pub fn prove(leaves: &[Hash], index: usize) -> Option<Vec<Hash>> {
    if index >= leaves.len() {
        return None;
    }
    let hashes: Vec<Hash> = leaves.iter().map(|l| leaf_hash(l)).collect();
    let mut path = Vec::new();
    // Walk down from the root, collecting siblings; the path lists them
    // bottom-up, so reverse at the end.
    let (mut lo, mut hi, mut m) = (0usize, hashes.len(), index);
    while hi - lo > 1 {
        let k = split(hi - lo);
        if m < k {
            path.push(subtree_root(&hashes[lo + k..hi]));
            hi = lo + k;
        } else {
            path.push(subtree_root(&hashes[lo..lo + k]));
            lo += k;
            m -= k;
        }
    }
    path.reverse();
    Some(path)
}

/// Checks that `leaf` (leaf data) is leaf `index` of a tree of `size`
/// leaves with root `root`, given its audit path: the algorithm of RFC 9162
/// §2.1.3.2.
pub fn verify(root: &Hash, size: u64, index: u64, leaf: &[u8], proof: &[Hash]) -> bool {
    if index >= size {
        return false;
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = leaf_hash(leaf);
    for p in proof {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    s == 0 && r == *root
}

#[cfg(test)]
mod tests {
    use super::*;

    /// MTH written straight from RFC 6962 §2.1, recursively.
    fn mth(leaves: &[&[u8]]) -> Hash {
        match leaves.len() {
            0 => Sha256::digest([]).into(),
            1 => {
                let mut v = vec![0u8];
                v.extend_from_slice(leaves[0]);
                Sha256::digest(&v).into()
            }
            n => {
                let mut k = 1;
                while k * 2 < n {
                    k *= 2;
                }
                let mut v = vec![1u8];
                v.extend_from_slice(&mth(&leaves[..k]));
                v.extend_from_slice(&mth(&leaves[k..]));
                Sha256::digest(&v).into()
            }
        }
    }

    fn hx(s: &str) -> Hash {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    /// The certificate-transparency reference vectors (leaf inputs of
    /// varying length, and the roots of their prefixes).
    const CT_LEAVES: [&[u8]; 8] = [
        b"",
        b"\x00",
        b"\x10",
        b"\x20\x21",
        b"\x30\x31",
        b"\x40\x41\x42\x43",
        b"\x50\x51\x52\x53\x54\x55\x56\x57",
        b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
    ];
    const CT_ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    #[test]
    fn reference_vectors() {
        for n in 0..=8 {
            let mut b = MerkleBuilder::new();
            for leaf in &CT_LEAVES[..n] {
                b.push(leaf);
            }
            assert_eq!(b.root(), hx(CT_ROOTS[n]), "size {n}");
            assert_eq!(mth(&CT_LEAVES[..n]), hx(CT_ROOTS[n]), "reference, size {n}");
        }
        // Audit paths from the same suite: leaf 0 and leaf 5 of 8.
        let root8 = hx(CT_ROOTS[8]);
        let p0 = [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ]
        .map(hx);
        assert!(verify(&root8, 8, 0, CT_LEAVES[0], &p0));
        let p5 = [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ]
        .map(hx);
        assert!(verify(&root8, 8, 5, CT_LEAVES[5], &p5));
        assert!(!verify(&root8, 8, 4, CT_LEAVES[5], &p5));
    }

    #[test]
    fn empty_and_single() {
        assert_eq!(root(&[]), hx(CT_ROOTS[0]));
        let leaf = [7u8; 32];
        assert_eq!(root(&[leaf]), leaf_hash(&leaf));
        assert_eq!(prove(&[leaf], 0), Some(vec![]));
        assert!(verify(&leaf_hash(&leaf), 1, 0, &leaf, &[]));
        assert_eq!(prove(&[leaf], 1), None);
        assert_eq!(prove(&[], 0), None);
        assert!(!verify(&empty_root(), 0, 0, &leaf, &[]));
    }
}
