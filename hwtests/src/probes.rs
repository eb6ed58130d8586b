//! Float-model probes: each record goes through one probe kernel of the
//! bundle and must give the IEEE-754 binary32 answer written below.
//!
//! The expected words were computed by an oracle independent of both the
//! kernels and the CPU reference: exact rational arithmetic on the decoded
//! operands, then one round-to-nearest-even to binary32
//! (`hwtests/probe_oracle.py`, which prints `CASES`). They are data, not
//! derived from the backend under test, so the CPU reference is checked by
//! them too.

use lockstep_backend::{Backend, BackendError};
use lockstep_kernels::reference::probe;

use crate::diagnosis::{self, Failure, Property};
pub use crate::probe_cases::CASES;
use crate::report::{Check, Mismatch};

/// One probe record and its known answer.
#[derive(Debug, Clone, Copy)]
pub struct ProbeCase {
    pub probe: &'static str,
    /// What the record checks, for the report.
    pub what: &'static str,
    pub input: [u32; 3],
    pub expected: &'static [u32],
}

/// Runs every probe kernel once over all of its records and compares.
pub fn run(
    backend: &mut dyn Backend,
    progress: &mut dyn FnMut(&str),
) -> Result<Check, BackendError> {
    run_diagnosed(backend, progress).map(|(check, _)| check)
}

/// [`run`], with every failing record put down to a property (also listed
/// in the check).
pub fn run_diagnosed(
    backend: &mut dyn Backend,
    progress: &mut dyn FnMut(&str),
) -> Result<(Check, Vec<(Property, Failure)>), BackendError> {
    let mut failures = Vec::new();
    let mut first = None;
    let mut failed = 0u64;
    for kernel in probe::PROBES {
        progress(kernel.name);
        let cases: Vec<&ProbeCase> = CASES.iter().filter(|c| c.probe == kernel.name).collect();
        let input: Vec<u32> = cases.iter().flat_map(|c| c.input).collect();
        let got = backend.run_probe(*kernel, &input)?;
        for (i, case) in cases.iter().enumerate() {
            let got = got
                .get(i * kernel.out_words..(i + 1) * kernel.out_words)
                .unwrap_or(&[]);
            if got != case.expected {
                failed += 1;
                let property = diagnosis::probe(*kernel, &case.input, case.expected, got);
                failures.push((
                    property,
                    Failure {
                        kernel: kernel.name.to_string(),
                        case: format!("{} (record {i})", case.what),
                        property: property.as_str().to_string(),
                        detail: format!(
                            "input {} expected {} got {}",
                            words(&case.input),
                            words(case.expected),
                            words(got)
                        ),
                    },
                ));
                first.get_or_insert_with(|| Mismatch {
                    kernel: kernel.name.to_string(),
                    case: format!("{} (record {i}: {})", case.what, words(&case.input)),
                    expected: words(case.expected),
                    got: words(got),
                });
            }
        }
    }
    let listed = failures.iter().map(|(_, f)| f.clone()).collect();
    Ok((
        Check::new("probes", CASES.len() as u64, failed, first).with_failures(listed),
        failures,
    ))
}

fn words(w: &[u32]) -> String {
    w.iter()
        .map(|x| format!("{x:#010x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use lockstep_kernels::reference::probe::IN_WORDS;

    #[test]
    fn every_probe_kernel_has_cases_of_its_width() {
        for kernel in probe::PROBES {
            let cases: Vec<_> = CASES.iter().filter(|c| c.probe == kernel.name).collect();
            assert!(!cases.is_empty(), "{} has no cases", kernel.name);
            for c in cases {
                assert_eq!(c.expected.len(), kernel.out_words, "{}", c.what);
            }
        }
        assert!(CASES
            .iter()
            .all(|c| probe::find(c.probe).is_some() && c.input.len() == IN_WORDS));
    }

    #[test]
    fn the_reference_twin_gives_the_oracle_answers() {
        // Twin and oracle are independent; this is where they must agree.
        for c in CASES {
            let got = probe::run(probe::find(c.probe).unwrap(), &c.input);
            assert_eq!(got, c.expected, "{}: {}", c.probe, c.what);
        }
    }

    #[test]
    fn a_wrong_answer_is_reported_with_its_record() {
        struct Flush(lockstep_backend::CpuBackend);
        impl Backend for Flush {
            fn fingerprint(&self) -> &lockstep_backend::DeviceFingerprint {
                self.0.fingerprint()
            }
            fn run(
                &mut self,
                op: &lockstep_backend::Op,
                inputs: &[&lockstep_tensor::Tensor],
            ) -> Result<lockstep_tensor::Tensor, BackendError> {
                self.0.run(op, inputs)
            }
            // A device that flushes subnormal results to zero.
            fn run_probe(
                &mut self,
                kernel: probe::ProbeKernel,
                input: &[u32],
            ) -> Result<Vec<u32>, BackendError> {
                let out = self.0.run_probe(kernel, input)?;
                Ok(out
                    .into_iter()
                    .map(|w| {
                        if w & 0x7F80_0000 == 0 {
                            w & 0x8000_0000
                        } else {
                            w
                        }
                    })
                    .collect())
            }
        }
        let mut b = Flush(lockstep_backend::CpuBackend::new());
        let check = run(&mut b, &mut |_| {}).unwrap();
        assert!(!check.passed);
        let m = check.first_mismatch.unwrap();
        assert_eq!(m.kernel, "probe_add");
        assert!(m.case.contains("subnormal"), "{}", m.case);
    }
}
