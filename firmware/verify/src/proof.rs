//! One trace leaf with its RFC 6962 audit path: what a node hands out as
//! evidence, checked against the trace root its receipt signs.

use lockstep_program::trace::{self, Hash};

/// Leaf `index` of a trace of `size` leaves: the op's output SHA-256 and the
/// sibling hashes from the leaf up to the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafProof {
    pub index: u64,
    pub size: u64,
    pub leaf: Hash,
    pub path: Vec<Hash>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("the proof is for leaf {got} of {got_size}; leaf {want} of {want_size} was asked for")]
    WrongLeaf {
        got: u64,
        got_size: u64,
        want: u64,
        want_size: u64,
    },
    #[error("the audit path of leaf {index} does not lead to the signed trace root (tampered or from another job)")]
    Mismatch { index: u64 },
}

impl LeafProof {
    /// The proof for leaf `index` of `leaves` (a party that has the whole
    /// trace, e.g. a local re-execution).
    pub fn from_leaves(leaves: &[Hash], index: u64) -> Option<LeafProof> {
        let path = trace::prove(leaves, usize::try_from(index).ok()?)?;
        Some(LeafProof {
            index,
            size: leaves.len() as u64,
            leaf: leaves[index as usize],
            path,
        })
    }

    /// Checks that this is leaf `index` of a `size`-leaf trace with `root`.
    pub fn verify(&self, root: &Hash, size: u64, index: u64) -> Result<(), ProofError> {
        if self.index != index || self.size != size {
            return Err(ProofError::WrongLeaf {
                got: self.index,
                got_size: self.size,
                want: index,
                want_size: size,
            });
        }
        if !trace::verify(root, size, index, &self.leaf, &self.path) {
            return Err(ProofError::Mismatch { index });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n).map(|i| [i as u8; 32]).collect()
    }

    #[test]
    fn honest_proofs_verify_and_tampered_ones_do_not() {
        let l = leaves(13);
        let root = trace::root(&l);
        for i in 0..13 {
            let p = LeafProof::from_leaves(&l, i).unwrap();
            p.verify(&root, 13, i).unwrap();
            let mut bad = p.clone();
            bad.leaf[0] ^= 1;
            assert_eq!(
                bad.verify(&root, 13, i),
                Err(ProofError::Mismatch { index: i })
            );
            if !p.path.is_empty() {
                let mut bad = p.clone();
                bad.path[0][31] ^= 0x80;
                assert!(bad.verify(&root, 13, i).is_err());
                let mut short = p.clone();
                short.path.pop();
                assert!(short.verify(&root, 13, i).is_err());
            }
            let mut extra = p.clone();
            extra.path.push([0; 32]);
            assert!(extra.verify(&root, 13, i).is_err());
            assert!(p.verify(&root, 13, (i + 1) % 13).is_err());
            assert!(p.verify(&root, 14, i).is_err());
        }
    }
}
