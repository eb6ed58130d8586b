//! Deliberate corruption of op outputs, so verification (re-execution, spot
//! checks, disputes) can be tested against a node that computes wrongly.
//! The executor applies a [`Fault`] only when built with the
//! `fault-injection` feature, which no release or image build enables;
//! without it the type exists (so callers compile either way) but does
//! nothing, and [`crate::FAULT_INJECTION`] is false.

use lockstep_tensor::Tensor;

/// Which op executions to corrupt, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    pub ops: FaultOps,
    /// Bit of the output's data to flip: element `bit / 32` (modulo the
    /// element count), bit `bit % 32` of its IEEE-754 pattern.
    pub bit: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOps {
    /// Only the op execution with this trace index.
    One(u64),
    /// Every op execution.
    All,
}

/// Why a `--inject-fault` spec does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("fault spec {spec:?}: {reason}; write op=K[,bit=B] or op=all[,bit=B]")]
pub struct FaultSpecError {
    pub spec: String,
    pub reason: String,
}

impl Fault {
    /// Parses `op=K[,bit=B]` or `op=all[,bit=B]`.
    pub fn parse(spec: &str) -> Result<Fault, FaultSpecError> {
        let fail = |reason: &str| FaultSpecError {
            spec: spec.to_string(),
            reason: reason.to_string(),
        };
        let (mut ops, mut bit) = (None, 0u64);
        for part in spec.split(',') {
            match part.trim().split_once('=') {
                Some(("op", "all")) => ops = Some(FaultOps::All),
                Some(("op", k)) => {
                    ops = Some(FaultOps::One(
                        k.parse().map_err(|_| fail("op is not a number"))?,
                    ))
                }
                Some(("bit", b)) => bit = b.parse().map_err(|_| fail("bit is not a number"))?,
                _ => return Err(fail("unknown part")),
            }
        }
        Ok(Fault {
            ops: ops.ok_or_else(|| fail("no op"))?,
            bit,
        })
    }

    /// Flips the chosen bit of `output` if op execution `index` is targeted.
    pub fn apply(&self, index: u64, output: &mut Tensor) {
        let hit = match self.ops {
            FaultOps::One(k) => k == index,
            FaultOps::All => true,
        };
        let data = output.data_mut();
        if !hit || data.is_empty() {
            return;
        }
        let element = (self.bit / 32) as usize % data.len();
        let mask = 1u32 << (self.bit % 32);
        data[element] = f32::from_bits(data[element].to_bits() ^ mask);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_bad_ones_are_refused() {
        assert_eq!(
            Fault::parse("op=7,bit=33").unwrap(),
            Fault {
                ops: FaultOps::One(7),
                bit: 33
            }
        );
        assert_eq!(Fault::parse("op=all").unwrap().ops, FaultOps::All);
        assert!(Fault::parse("bit=3").is_err());
        assert!(Fault::parse("op=x").is_err());
        assert!(Fault::parse("op=1,colour=red").is_err());
    }

    #[test]
    fn only_the_targeted_op_changes() {
        let t = Tensor::new(vec![2], vec![1.0, 2.0]).unwrap();
        let f = Fault::parse("op=3,bit=32").unwrap();
        let mut a = t.clone();
        f.apply(2, &mut a);
        assert!(a.bit_eq(&t));
        f.apply(3, &mut a);
        assert_eq!(a.data()[0], 1.0);
        assert_eq!(a.data()[1].to_bits(), 2.0f32.to_bits() ^ 1);
    }
}
