//! Dispute bisection over two parties' traces, as a state machine: the
//! caller asks each party for the leaf [`Bisection::next`] names and feeds
//! both answers to [`Bisection::answer`], which checks each audit path
//! against that party's signed root.
//!
//! Rather than bisecting on "leaf k agrees" (which assumes that once two
//! traces differ they never agree again, false for e.g. a flipped bit that
//! a later `relu` clamps away), the search descends the RFC 6962 tree
//! itself. Invariant: the subtree over leaves `lo..hi` has different roots
//! for the two parties, and every leaf before `lo` agrees. Asking for leaf
//! `lo + k` (`k` the RFC split of the range) returns, inside its audit
//! path, the authenticated root of the left half `lo..lo+k`: if the halves'
//! roots differ the first difference is on the left, otherwise on the
//! right. After ⌈log₂ n⌉ rounds the range is one leaf, the first leaf at
//! which the traces differ, so every leaf the op there reads agrees; at
//! most one more round fetches that leaf if the last round did not.

use lockstep_program::trace::Hash;

use crate::proof::{LeafProof, ProofError};

/// One side of a dispute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Party {
    A,
    B,
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Ask both parties for leaf `index` with its audit path.
    Ask(u64),
    /// The first leaf whose output hashes differ, with both parties' proofs.
    Found {
        index: u64,
        a: LeafProof,
        b: LeafProof,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BisectError {
    #[error(
        "the two trace roots are equal: the parties agree on every op, there is nothing to dispute"
    )]
    NoDispute,
    #[error("the traces are empty")]
    Empty,
    #[error("party {party:?} gave a bad proof: {error}")]
    BadProof { party: Party, error: ProofError },
    #[error("an answer arrived after the search had finished")]
    Finished,
}

/// The search state.
#[derive(Debug, Clone)]
pub struct Bisection {
    size: u64,
    root_a: Hash,
    root_b: Hash,
    lo: u64,
    hi: u64,
    /// Levels descended so far: which audit-path entry holds the left half.
    depth: usize,
    rounds: u32,
    /// The proofs of the last leaf asked for.
    last: Option<(LeafProof, LeafProof)>,
}

/// The largest power of two smaller than `n` (`n >= 2`): RFC 6962's split.
fn split(n: u64) -> u64 {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

impl Bisection {
    /// A search over two traces of `size` leaves with the given roots.
    pub fn new(size: u64, root_a: Hash, root_b: Hash) -> Result<Bisection, BisectError> {
        if root_a == root_b {
            return Err(BisectError::NoDispute);
        }
        if size == 0 {
            return Err(BisectError::Empty);
        }
        Ok(Bisection {
            size,
            root_a,
            root_b,
            lo: 0,
            hi: size,
            depth: 0,
            rounds: 0,
            last: None,
        })
    }

    /// The leaf to ask for, or the result.
    pub fn next(&self) -> Step {
        if self.hi - self.lo > 1 {
            return Step::Ask(self.lo + split(self.hi - self.lo));
        }
        match &self.last {
            Some((a, b)) if a.index == self.lo => Step::Found {
                index: self.lo,
                a: a.clone(),
                b: b.clone(),
            },
            _ => Step::Ask(self.lo),
        }
    }

    /// Rounds so far (one request to each party per round).
    pub fn rounds(&self) -> u32 {
        self.rounds
    }

    /// The most rounds a search over `size` leaves takes: ⌈log₂ n⌉ + 1.
    pub fn max_rounds(size: u64) -> u32 {
        size.next_power_of_two().trailing_zeros() + 1
    }

    /// Takes both parties' answers to the last [`Step::Ask`].
    pub fn answer(&mut self, a: LeafProof, b: LeafProof) -> Result<(), BisectError> {
        let Step::Ask(index) = self.next() else {
            return Err(BisectError::Finished);
        };
        a.verify(&self.root_a, self.size, index)
            .map_err(|error| BisectError::BadProof {
                party: Party::A,
                error,
            })?;
        b.verify(&self.root_b, self.size, index)
            .map_err(|error| BisectError::BadProof {
                party: Party::B,
                error,
            })?;
        self.rounds += 1;
        if self.hi - self.lo > 1 {
            // Both paths were checked against trees of the same size at the
            // same index, so they have the same length and the entry for
            // this level is the same subtree, `lo..index`.
            let level = a.path.len() - 1 - self.depth;
            if a.path[level] != b.path[level] {
                self.hi = index;
            } else {
                self.lo = index;
            }
            self.depth += 1;
        }
        self.last = Some((a, b));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lockstep_program::trace;

    fn run(a: &[Hash], b: &[Hash]) -> (u64, u32) {
        let mut s = Bisection::new(a.len() as u64, trace::root(a), trace::root(b)).unwrap();
        loop {
            match s.next() {
                Step::Ask(k) => s
                    .answer(
                        LeafProof::from_leaves(a, k).unwrap(),
                        LeafProof::from_leaves(b, k).unwrap(),
                    )
                    .unwrap(),
                Step::Found {
                    index,
                    a: pa,
                    b: pb,
                } => {
                    assert_ne!(pa.leaf, pb.leaf);
                    return (index, s.rounds());
                }
            }
        }
    }

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| {
                [(i % 251) as u8, (i / 251) as u8, 1, 2]
                    .repeat(8)
                    .try_into()
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn finds_the_first_difference_in_bounded_rounds() {
        for n in 1..=40usize {
            for first in 0..n {
                let a = leaves(n);
                let mut b = a.clone();
                b[first][5] ^= 1;
                // A later difference too, and one that "heals" is irrelevant:
                // the first one is found.
                if first + 2 < n {
                    b[first + 2][6] ^= 1;
                }
                let (found, rounds) = run(&a, &b);
                assert_eq!(found, first as u64, "n={n}");
                assert!(
                    rounds <= Bisection::max_rounds(n as u64),
                    "n={n} rounds={rounds}"
                );
            }
        }
    }

    #[test]
    fn tampered_answers_are_rejected_and_name_the_party() {
        let a = leaves(9);
        let mut b = a.clone();
        b[4][0] ^= 1;
        let mut s = Bisection::new(9, trace::root(&a), trace::root(&b)).unwrap();
        let Step::Ask(k) = s.next() else { panic!() };
        let mut pb = LeafProof::from_leaves(&b, k).unwrap();
        pb.path[0][0] ^= 1;
        let err = s
            .answer(LeafProof::from_leaves(&a, k).unwrap(), pb)
            .unwrap_err();
        assert!(matches!(
            err,
            BisectError::BadProof {
                party: Party::B,
                ..
            }
        ));
        // A proof for another leaf is refused too.
        let err = s
            .answer(
                LeafProof::from_leaves(&a, (k + 1) % 9).unwrap(),
                LeafProof::from_leaves(&b, k).unwrap(),
            )
            .unwrap_err();
        assert!(matches!(
            err,
            BisectError::BadProof {
                party: Party::A,
                ..
            }
        ));
        assert_eq!(s.rounds(), 0);
    }

    #[test]
    fn equal_roots_are_no_dispute() {
        let a = leaves(3);
        let r = trace::root(&a);
        assert_eq!(Bisection::new(3, r, r).unwrap_err(), BisectError::NoDispute);
    }
}
