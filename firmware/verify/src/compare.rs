//! Full re-execution: a local run of the same program on the same inputs,
//! compared with what a node's receipt states.

use std::collections::{BTreeMap, BTreeSet};

use lockstep_program::trace::Hash;
use lockstep_protocol::Receipt;

/// The verdict of a re-execution, output by output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comparison {
    /// Output names whose hashes differ (or that only one side has).
    pub differing_outputs: Vec<String>,
    pub outputs_checked: usize,
    pub receipt_root: String,
    pub local_root: String,
}

impl Comparison {
    pub fn agrees(&self) -> bool {
        self.differing_outputs.is_empty() && self.receipt_root == self.local_root
    }
}

/// Why the receipt is not for the job that was re-executed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompareError {
    #[error("the receipt is for program {receipt}, not this one ({local}); give the program the node ran")]
    Program { receipt: String, local: String },
    #[error("input '{name}': the receipt's hash differs from the given file's; give the inputs the node ran on")]
    Input { name: String },
    #[error("the receipt names inputs {receipt:?}; the program was given {local:?}")]
    InputNames {
        receipt: Vec<String>,
        local: Vec<String>,
    },
}

/// Compares a local run (`program_sha256`, input and output hashes in hex,
/// trace root) with `receipt`. Different program or inputs is an error: the
/// runs are not of the same job, so no verdict on the node follows.
pub fn compare(
    receipt: &Receipt,
    program_sha256: &Hash,
    inputs: &BTreeMap<String, String>,
    outputs: &BTreeMap<String, String>,
    trace_root: &Hash,
) -> Result<Comparison, CompareError> {
    let local = hex::encode(program_sha256);
    if receipt.program_sha256 != local {
        return Err(CompareError::Program {
            receipt: receipt.program_sha256.clone(),
            local,
        });
    }
    if receipt.inputs.keys().ne(inputs.keys()) {
        return Err(CompareError::InputNames {
            receipt: receipt.inputs.keys().cloned().collect(),
            local: inputs.keys().cloned().collect(),
        });
    }
    if let Some(name) = inputs
        .iter()
        .find(|(n, h)| receipt.inputs.get(*n) != Some(*h))
        .map(|(n, _)| n)
    {
        return Err(CompareError::Input { name: name.clone() });
    }
    let names: BTreeSet<&String> = receipt.outputs.keys().chain(outputs.keys()).collect();
    let differing_outputs = names
        .iter()
        .filter(|n| receipt.outputs.get(**n) != outputs.get(**n))
        .map(|n| (*n).clone())
        .collect();
    Ok(Comparison {
        differing_outputs,
        outputs_checked: names.len(),
        receipt_root: receipt.trace_root.clone(),
        local_root: hex::encode(trace_root),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use lockstep_protocol::{DeviceRecord, RECEIPT_FORMAT};

    fn receipt() -> Receipt {
        Receipt {
            format: RECEIPT_FORMAT,
            node: "n".into(),
            job_id: "00".into(),
            bundle_id: "b".into(),
            device: DeviceRecord {
                backend: "cpu".into(),
                name: "cpu".into(),
                vendor_id: 0,
                device_id: 0,
                driver_id: 0,
                driver_version: 0,
                api_version: 0,
                uuid: Some("00".repeat(16)),
                index: Some(0),
            },
            program_sha256: hex::encode([1u8; 32]),
            inputs: BTreeMap::from([("x".into(), "aa".into())]),
            outputs: BTreeMap::from([("y".into(), "bb".into())]),
            trace_root: hex::encode([2u8; 32]),
            started_at: String::new(),
            finished_at: String::new(),
            certified: false,
            key_protection: Some(lockstep_protocol::KeyProtection::File),
            chain_address: Some("0x2c7536E3605D9C16a7a3D7b1898e529396a65c23".into()),
            submitter: None,
            references: Some(BTreeMap::new()),
        }
    }

    #[test]
    fn agreement_and_each_kind_of_difference() {
        let r = receipt();
        let inputs = BTreeMap::from([("x".to_string(), "aa".to_string())]);
        let outputs = BTreeMap::from([("y".to_string(), "bb".to_string())]);
        let c = compare(&r, &[1; 32], &inputs, &outputs, &[2; 32]).unwrap();
        assert!(c.agrees());
        let c = compare(&r, &[1; 32], &inputs, &outputs, &[3; 32]).unwrap();
        assert!(!c.agrees() && c.differing_outputs.is_empty());
        let other = BTreeMap::from([("y".to_string(), "cc".to_string())]);
        let c = compare(&r, &[1; 32], &inputs, &other, &[2; 32]).unwrap();
        assert_eq!(c.differing_outputs, vec!["y".to_string()]);
        assert!(matches!(
            compare(&r, &[9; 32], &inputs, &outputs, &[2; 32]),
            Err(CompareError::Program { .. })
        ));
        let wrong = BTreeMap::from([("x".to_string(), "ab".to_string())]);
        assert!(matches!(
            compare(&r, &[1; 32], &wrong, &outputs, &[2; 32]),
            Err(CompareError::Input { .. })
        ));
    }

    #[test]
    fn verdicts() {
        use crate::Verdict;
        assert_eq!(Verdict::judge("r", "x", "r"), Some(Verdict::AWrong));
        assert_eq!(Verdict::judge("r", "r", "x"), Some(Verdict::BWrong));
        assert_eq!(Verdict::judge("r", "x", "y"), Some(Verdict::BothWrong));
        assert_eq!(Verdict::judge("r", "r", "r"), None);
    }
}
