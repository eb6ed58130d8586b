//! The quick self-test a new kernel bundle must pass before the node serves
//! with it: a few fixed ops on the new backend, compared bit for bit with
//! the CPU reference. It catches a bundle that verifies (hashes, float
//! model) but computes something else on this device.

use std::collections::BTreeMap;

use lockstep_backend::{Backend, CpuBackend, Op};
use lockstep_tensor::{Fill, Tensor};

/// Runs the fixed ops; the number of ops that matched bit for bit, or an
/// error naming the first op that differs.
pub fn run(backend: &mut dyn Backend) -> Result<usize, String> {
    let mut reference = CpuBackend::new();
    let t = |shape: Vec<usize>, seed| {
        Tensor::filled(shape, seed, Fill::Uniform).expect("small fixed shapes")
    };
    let a = t(vec![17, 33], 1);
    let b = t(vec![33, 9], 2);
    let c = t(vec![17, 33], 3);
    let cases: [(&str, Vec<&Tensor>); 3] = [
        ("matmul", vec![&a, &b]),
        ("add", vec![&a, &c]),
        ("gelu", vec![&a]),
    ];
    let count = cases.len();
    for (name, inputs) in cases {
        let op = Op::parse(name, &BTreeMap::new()).map_err(|e| e.to_string())?;
        let want = reference.run(&op, &inputs).map_err(|e| e.to_string())?;
        let got = backend
            .run(&op, &inputs)
            .map_err(|e| format!("self-test op {name} failed on the new bundle: {e}"))?;
        if got.shape() != want.shape() || got.to_bits() != want.to_bits() {
            return Err(format!(
                "self-test op {name} differs from the CPU reference on the new bundle"
            ));
        }
    }
    Ok(count)
}

/// Test builds only (`lockstepd --inject-self-test-fault`): a backend that
/// flips one bit of every matmul output, so that the start-up self-test's
/// failure path can be exercised on a real process.
pub struct OneBitOff<'a>(pub &'a mut dyn Backend);

impl Backend for OneBitOff<'_> {
    fn fingerprint(&self) -> &lockstep_backend::DeviceFingerprint {
        self.0.fingerprint()
    }

    fn run(
        &mut self,
        op: &Op,
        inputs: &[&Tensor],
    ) -> Result<Tensor, lockstep_backend::BackendError> {
        let mut t = self.0.run(op, inputs)?;
        if op.name() == "matmul" {
            if let Some(v) = t.data_mut().first_mut() {
                *v = f32::from_bits(v.to_bits() ^ 1);
            }
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_passes_its_own_self_test() {
        run(&mut CpuBackend::new()).unwrap();
    }

    /// A backend that is right except for one bit of one op's output.
    struct OffByOneBit {
        inner: CpuBackend,
        op: &'static str,
    }

    impl Backend for OffByOneBit {
        fn fingerprint(&self) -> &lockstep_backend::DeviceFingerprint {
            self.inner.fingerprint()
        }

        fn run(
            &mut self,
            op: &Op,
            inputs: &[&Tensor],
        ) -> Result<Tensor, lockstep_backend::BackendError> {
            let mut t = self.inner.run(op, inputs)?;
            if op.name() == self.op {
                let v = &mut t.data_mut()[3];
                *v = f32::from_bits(v.to_bits() ^ 1);
            }
            Ok(t)
        }
    }

    #[test]
    fn a_single_wrong_bit_fails_the_self_test_and_names_the_op() {
        for op in ["matmul", "add", "gelu"] {
            let err = run(&mut OffByOneBit {
                inner: CpuBackend::new(),
                op,
            })
            .unwrap_err();
            assert!(err.contains(op), "{err}");
        }
    }
}
