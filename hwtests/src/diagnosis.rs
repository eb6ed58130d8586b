//! Diagnosis: why a device fails, by float-model property, so that a
//! vendor reads a cause rather than a hash.
//!
//! Every failing probe record and conformance case is put down to one
//! property by asking which model of a non-conforming device reproduces
//! the device's exact bits. The models are the CPU reference itself, run
//! with the host's float environment set like such a device
//! (`lockstep_vulkan::host_float`: subnormal inputs read as zero, subnormal
//! results flushed, another rounding direction), and, for the multiply-add
//! probe, the fused result. What no model reproduces is classified from
//! element-wise evidence (every differing element has a subnormal operand,
//! or a subnormal expected value that came out as zero), then from the
//! differing words (signed zero, inf/NaN), or left unknown. The models are
//! a diagnosis, not a reference: the compiler of the CPU reference assumes
//! IEEE-754 defaults, so a model can miss; the verdict never depends on
//! them, only on the oracle answers and golden hashes.

use std::collections::BTreeMap;

use lockstep_backend::{Backend, CpuBackend};
use lockstep_kernels::reference::probe::ProbeKernel;
use lockstep_tensor::Tensor;
use lockstep_vulkan::host_float::{self, FloatEnv, Rounding};
use serde::{Deserialize, Serialize};

use crate::cases::Case;

/// A float-model property a failure is put down to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Property {
    /// Subnormal operands read as zero (DAZ).
    SubnormalInputFlushed,
    /// Subnormal results flushed to zero (FTZ).
    SubnormalOutputFlushed,
    /// Both: only a model flushing inputs and outputs gives these bits.
    SubnormalInputAndOutputFlushed,
    /// Another rounding direction than nearest-even.
    Rounding,
    /// `a*b+c` computed with one rounding (fused).
    Contraction,
    /// A zero of the wrong sign.
    SignedZero,
    /// Infinities or NaNs not as IEEE-754 says.
    InfNan,
    /// None of the above reproduces the device's bits.
    Unknown,
}

impl Property {
    pub const ALL: [Property; 8] = [
        Property::SubnormalInputFlushed,
        Property::SubnormalOutputFlushed,
        Property::SubnormalInputAndOutputFlushed,
        Property::Rounding,
        Property::Contraction,
        Property::SignedZero,
        Property::InfNan,
        Property::Unknown,
    ];

    /// The name a report uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Property::SubnormalInputFlushed => "subnormal_input_flushed",
            Property::SubnormalOutputFlushed => "subnormal_output_flushed",
            Property::SubnormalInputAndOutputFlushed => "subnormal_input_and_output_flushed",
            Property::Rounding => "rounding",
            Property::Contraction => "contraction",
            Property::SignedZero => "signed_zero",
            Property::InfNan => "inf_nan",
            Property::Unknown => "unknown",
        }
    }

    /// What it means, for a vendor.
    pub fn meaning(self) -> &'static str {
        match self {
            Property::SubnormalInputFlushed => {
                "subnormal operands are read as zero (denormals-are-zero); the float model keeps them"
            }
            Property::SubnormalOutputFlushed => {
                "subnormal results are flushed to zero; the float model keeps them (gradual underflow)"
            }
            Property::SubnormalInputAndOutputFlushed => {
                "subnormals are flushed both as operands and as results; the float model keeps them"
            }
            Property::Rounding => {
                "results are rounded toward zero, up or down; the float model rounds to nearest, ties to even (RoundingModeRTE)"
            }
            Property::Contraction => {
                "a*b+c is fused into one rounding despite NoContraction; the float model rounds the product and the sum separately"
            }
            Property::SignedZero => {
                "a zero has the wrong sign; the float model keeps signed zeros (SignedZeroInfNanPreserve)"
            }
            Property::InfNan => {
                "infinities or NaNs differ from IEEE-754; the float model keeps them (SignedZeroInfNanPreserve)"
            }
            Property::Unknown => "no model of a known deviation reproduces the device's bits",
        }
    }

    pub fn is_subnormal(self) -> bool {
        matches!(
            self,
            Property::SubnormalInputFlushed
                | Property::SubnormalOutputFlushed
                | Property::SubnormalInputAndOutputFlushed
        )
    }
}

/// One failing probe record or case, with the property it is put down to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Failure {
    pub kernel: String,
    pub case: String,
    pub property: String,
    /// Expected and obtained words, or where a tensor first differs.
    pub detail: String,
}

/// How many failures a property explains, and what it means.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PropertyCount {
    pub property: String,
    pub count: u64,
    pub meaning: String,
}

/// Counts by property, in [`Property::ALL`] order, leaving out zeros.
pub fn count(failures: &[(Property, Failure)]) -> Vec<PropertyCount> {
    let mut by: BTreeMap<Property, u64> = BTreeMap::new();
    for (p, _) in failures {
        *by.entry(*p).or_default() += 1;
    }
    Property::ALL
        .iter()
        .filter_map(|p| {
            by.get(p).map(|&count| PropertyCount {
                property: p.as_str().to_string(),
                count,
                meaning: p.meaning().to_string(),
            })
        })
        .collect()
}

const FLUSH_IN: FloatEnv = FloatEnv {
    flush_inputs: true,
    flush_outputs: false,
    rounding: Rounding::NearestEven,
};
const FLUSH_OUT: FloatEnv = FloatEnv {
    flush_inputs: false,
    flush_outputs: true,
    rounding: Rounding::NearestEven,
};

/// The models tried, in order, with the property each one stands for.
const MODELS: [(FloatEnv, Property); 6] = [
    (FLUSH_OUT, Property::SubnormalOutputFlushed),
    (FLUSH_IN, Property::SubnormalInputFlushed),
    (
        FloatEnv::FLUSH_BOTH,
        Property::SubnormalInputAndOutputFlushed,
    ),
    (
        FloatEnv {
            rounding: Rounding::TowardZero,
            ..FloatEnv::IEEE
        },
        Property::Rounding,
    ),
    (
        FloatEnv {
            rounding: Rounding::Down,
            ..FloatEnv::IEEE
        },
        Property::Rounding,
    ),
    (
        FloatEnv {
            rounding: Rounding::Up,
            ..FloatEnv::IEEE
        },
        Property::Rounding,
    ),
];

fn is_subnormal(w: u32) -> bool {
    w & 0x7F80_0000 == 0 && w & 0x007F_FFFF != 0
}

/// Element-wise evidence, where each output element comes from the input
/// elements at the same index: every differing element has a subnormal
/// operand there, or a subnormal expected value that came out as zero.
///
/// The host-environment models can miss what this catches: the compiler of
/// the CPU reference assumes IEEE-754 defaults and may turn an integer test
/// of the bits (`bits & 0x7fffffff == 0`) into a float comparison, which a
/// flushing environment then answers differently from the device's integer
/// instruction.
fn elementwise_evidence(inputs: &[&[u32]], expected: &[u32], got: &[u32]) -> Option<Property> {
    if expected.len() != got.len() || inputs.iter().any(|i| i.len() != expected.len()) {
        return None;
    }
    let (mut input, mut output, mut any) = (false, false, false);
    for (i, (&e, &g)) in expected.iter().zip(got).enumerate() {
        if e == g {
            continue;
        }
        any = true;
        let flushed_in = inputs.iter().any(|x| is_subnormal(x[i]));
        let flushed_out = is_subnormal(e) && g & 0x7FFF_FFFF == 0;
        if !flushed_in && !flushed_out {
            return None;
        }
        input |= flushed_in;
        output |= flushed_out && !flushed_in;
    }
    match (any, input, output) {
        (false, _, _) => None,
        (true, true, true) => Some(Property::SubnormalInputAndOutputFlushed),
        (true, true, false) => Some(Property::SubnormalInputFlushed),
        (true, false, _) => Some(Property::SubnormalOutputFlushed),
    }
}

/// Classifies words that differ from the expected ones by their values.
fn by_values(expected: &[u32], got: &[u32]) -> Property {
    let special = |w: u32| w & 0x7F80_0000 == 0x7F80_0000;
    let diffs: Vec<(u32, u32)> = expected
        .iter()
        .zip(got)
        .filter(|(e, g)| e != g)
        .map(|(&e, &g)| (e, g))
        .collect();
    if diffs.is_empty() || expected.len() != got.len() {
        return Property::Unknown;
    }
    if diffs
        .iter()
        .all(|&(e, g)| e & 0x7FFF_FFFF == 0 && g & 0x7FFF_FFFF == 0)
    {
        return Property::SignedZero;
    }
    if diffs.iter().any(|&(e, g)| special(e) || special(g)) {
        return Property::InfNan;
    }
    Property::Unknown
}

/// The property that explains a probe record's wrong answer.
pub fn probe(kernel: ProbeKernel, input: &[u32; 3], expected: &[u32], got: &[u32]) -> Property {
    for (env, property) in MODELS {
        let model = host_float::with_env(env, || {
            lockstep_kernels::reference::probe::run(kernel, input)
        });
        if model.as_deref() == Some(got) {
            return property;
        }
    }
    if kernel.name == "probe_mul_add" && got.len() == 1 {
        let [a, b, c] = input.map(|w| f64::from(f32::from_bits(w)));
        let fused = ((a * b) + c) as f32;
        let fused = if fused.is_nan() {
            0x7FC0_0000
        } else {
            fused.to_bits()
        };
        if got[0] == fused {
            return Property::Contraction;
        }
    }
    let operands: Vec<Vec<u32>> = input.iter().map(|&w| vec![w; expected.len()]).collect();
    let operands: Vec<&[u32]> = operands.iter().map(Vec::as_slice).collect();
    if let Some(p) = elementwise_evidence(&operands, expected, got) {
        return p;
    }
    by_values(expected, got)
}

/// Words of a tensor.
fn words(t: &Tensor) -> Vec<u32> {
    t.data().iter().map(|v| v.to_bits()).collect()
}

/// Where two tensors first differ, and in how many elements.
fn tensor_detail(want: &Tensor, got: &Tensor) -> String {
    if want.shape() != got.shape() {
        return format!(
            "shape {} expected {}",
            got.shape_string(),
            want.shape_string()
        );
    }
    let (w, g) = (words(want), words(got));
    let n = w.iter().zip(&g).filter(|(a, b)| a != b).count();
    match w.iter().zip(&g).position(|(a, b)| a != b) {
        Some(i) => format!(
            "{n} of {} elements differ; first at {i}: expected {:#010x} got {:#010x}",
            w.len(),
            w[i],
            g[i]
        ),
        None => "equal bits now: the device gave another answer the first time".into(),
    }
}

/// The property that explains a failing conformance case. It runs the case
/// again on `backend` for its output, and the models on the CPU reference.
pub fn case(backend: &mut dyn Backend, case: &Case) -> (Property, String) {
    let op = match case.parse_op() {
        Ok(op) => op,
        Err(e) => return (Property::Unknown, e.to_string()),
    };
    let inputs: Result<Vec<Tensor>, _> = case.inputs.iter().map(|i| i.make()).collect();
    let inputs = match inputs {
        Ok(i) => i,
        Err(e) => return (Property::Unknown, e.to_string()),
    };
    let refs: Vec<&Tensor> = inputs.iter().collect();
    let got = match backend.run(&op, &refs) {
        Ok(t) => t,
        Err(e) => return (Property::Unknown, format!("the device failed: {e}")),
    };
    let want = match CpuBackend::new().run(&op, &refs) {
        Ok(t) => t,
        Err(e) => return (Property::Unknown, format!("the reference failed: {e}")),
    };
    let detail = tensor_detail(&want, &got);
    for (env, property) in MODELS {
        let model = host_float::with_env(env, || CpuBackend::new().run(&op, &refs));
        if let Some(Ok(m)) = model {
            if m.bit_eq(&got) {
                return (property, detail);
            }
        }
    }
    if want.shape() != got.shape() {
        return (Property::Unknown, detail);
    }
    let operands: Vec<Vec<u32>> = inputs.iter().map(words).collect();
    let operands: Vec<&[u32]> = operands.iter().map(Vec::as_slice).collect();
    if let Some(p) = elementwise_evidence(&operands, &words(&want), &words(&got)) {
        return (p, detail);
    }
    (by_values(&words(&want), &words(&got)), detail)
}

/// The property that explains an example program's wrong trace root.
pub fn example(backend_root: &str, name: &str, json: &[u8]) -> Property {
    for (env, property) in MODELS {
        let model = host_float::with_env(env, || {
            crate::conformance::run_example(&mut CpuBackend::new(), name, json)
        });
        if let Some(Ok((root, _, _))) = model {
            if root == backend_root {
                return property;
            }
        }
    }
    Property::Unknown
}

#[cfg(test)]
mod tests {
    use super::*;
    use lockstep_kernels::reference::probe::{find, run};

    fn flush(w: u32) -> u32 {
        if w & 0x7F80_0000 == 0 {
            w & 0x8000_0000
        } else {
            w
        }
    }

    #[test]
    fn flushed_results_are_put_down_to_output_flushing() {
        if !host_float::supported() {
            return;
        }
        let k = find("probe_mul").unwrap();
        // smallest normal * 0.5 = a subnormal; a flushing device gives +0.
        let input = [0x0080_0000, 0x3f00_0000, 0];
        let expected = run(k, &input);
        let got: Vec<u32> = expected.iter().map(|&w| flush(w)).collect();
        assert_ne!(expected, got);
        assert_eq!(
            probe(k, &input, &expected, &got),
            Property::SubnormalOutputFlushed
        );
    }

    #[test]
    fn flushed_operands_are_put_down_to_input_flushing() {
        if !host_float::supported() {
            return;
        }
        let k = find("probe_add").unwrap();
        // subnormal + normal: a DAZ device ignores the subnormal.
        let input = [0x0000_0001, 0x0080_0000, 0];
        let expected = run(k, &input);
        let got = vec![0x0080_0000];
        assert_eq!(
            probe(k, &input, &expected, &got),
            Property::SubnormalInputFlushed
        );
    }

    #[test]
    fn rounding_contraction_signed_zero_and_nan_are_told_apart() {
        if !host_float::supported() {
            return;
        }
        let add = find("probe_add").unwrap();
        // 1 + 0.75 ulp: nearest gives 1 + ulp, toward zero gives 1.
        let input = [0x3f80_0000, 0x33c0_0000, 0];
        let expected = run(add, &input);
        assert_eq!(expected, vec![0x3f80_0001]);
        assert_eq!(
            probe(add, &input, &expected, &[0x3f80_0000]),
            Property::Rounding
        );

        let fma = find("probe_mul_add").unwrap();
        // (1 + 2^-12)^2 - 1 - 2^-11: the product rounds away 2^-24, fused keeps it.
        let a = 0x3f80_0800;
        let c = (-(1.0f32 + f32::from_bits(0x3a00_0000))).to_bits();
        let input = [a, a, c];
        let expected = run(fma, &input);
        let fused = ((1.0f64 + 2f64.powi(-12)).powi(2) - 1.0 - 2f64.powi(-11)) as f32;
        assert_ne!(expected, vec![fused.to_bits()]);
        assert_eq!(
            probe(fma, &input, &expected, &[fused.to_bits()]),
            Property::Contraction
        );

        assert_eq!(
            elementwise_evidence(&[&[1, 5]], &[7, 9], &[8, 9]),
            Some(Property::SubnormalInputFlushed)
        );
        assert_eq!(
            elementwise_evidence(&[&[0x3f80_0000]], &[0x0000_0100], &[0]),
            Some(Property::SubnormalOutputFlushed)
        );
        assert_eq!(
            elementwise_evidence(&[&[0x3f80_0000]], &[0x3f80_0000], &[0]),
            None
        );
        assert_eq!(by_values(&[0x8000_0000], &[0]), Property::SignedZero);
        assert_eq!(by_values(&[0x7FC0_0000], &[0]), Property::InfNan);
        assert_eq!(by_values(&[0x3f80_0000], &[0x4000_0000]), Property::Unknown);
    }
}
