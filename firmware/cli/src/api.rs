//! The in-memory face of the `lockstep` command: programs, tensors and
//! receipts as values, nothing read from or written to files, nothing
//! printed. The Python package (`python/`) is a thin layer over it.
//!
//! Architecture invariant: every function here is the same code path as
//! the command that does the same thing (`exec`, `import`, `submit exec`,
//! `verify-receipt`, `devices --json`), so a failure here carries the same
//! one-line message and the same [`Failure`] kind (bad input or machine
//! problem) as the command's exit code 2 or 1.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use lockstep_identity::NodeId;
use lockstep_program::{validate, ExecOptions, Program, ValidateOptions};
use lockstep_protocol::Receipt;
use lockstep_tensor::{shape_string, Tensor};

use crate::failure::Failure;
use crate::Target;

/// A program from its file bytes: JSON when the first non-blank byte is
/// `{`, postcard otherwise; `shown` names it in errors.
pub fn program_from_bytes(bytes: &[u8], shown: &str) -> Result<Program, Failure> {
    if bytes.len() > lockstep_limits::MAX_PROGRAM_BYTES {
        return Err(Failure::Input(format!(
            "{shown}: {}",
            lockstep_program::DecodeError::TooLarge { size: bytes.len() }
        )));
    }
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    let program = if first == Some(&b'{') {
        Program::from_json(bytes)
    } else {
        Program::from_postcard(bytes)
    };
    program.map_err(|e| Failure::Input(format!("{shown}: {e}")))
}

/// A program as canonical JSON text (what `lockstep import --out` writes).
pub fn program_to_json(program: &Program) -> String {
    let mut json = program.to_json_pretty();
    json.push('\n');
    json
}

/// An imported ONNX model: the program and its weights, which are the
/// program's inputs after the graph's own.
pub struct Imported {
    pub program: Program,
    pub weights: BTreeMap<String, Tensor>,
    /// (ONNX name, program name) for graph inputs and outputs renamed.
    pub renamed: Vec<(String, String)>,
}

/// `lockstep import` without the files: `bytes` is a serialised ONNX model.
pub fn import_onnx(bytes: &[u8], shown: &str) -> Result<Imported, Failure> {
    let imported =
        lockstep_onnx::import(bytes).map_err(|e| Failure::Input(format!("{shown}: {e}")))?;
    Ok(Imported {
        program: imported.program,
        weights: imported.constants.into_iter().collect(),
        renamed: imported.renamed,
    })
}

/// What [`run`] returns.
pub struct Ran {
    pub outputs: BTreeMap<String, Tensor>,
    /// The document `lockstep exec` writes as trace.json; `None` untraced.
    pub trace: Option<serde_json::Value>,
}

/// `lockstep exec` in memory: validates `program`, checks `inputs` against
/// its declared inputs (every one given, no others, shapes equal), and
/// only then opens `target` and runs it.
pub fn run(
    program: &Program,
    inputs: BTreeMap<String, Tensor>,
    target: &Target,
    trace: bool,
) -> Result<Ran, Failure> {
    let shown = "the program";
    let validated = crate::exec::validated(
        program,
        lockstep_limits::DEFAULT_PROGRAM_MEMORY_BYTES,
        shown,
    )?;
    check_inputs(&validated, &inputs)?;
    let mut backend = crate::commands::open_backend(target)?;
    let bundle_id = if trace {
        Some(crate::commands::bundle_id(target)?)
    } else {
        None
    };
    let options = ExecOptions {
        trace,
        ..ExecOptions::default()
    };
    let report = crate::exec::execute_mapped(&validated, backend.as_mut(), inputs, options)?;
    let trace = match (&report.trace, &bundle_id) {
        (Some(t), Some(id)) => Some(crate::exec::trace_document(
            &validated,
            t,
            &report.outputs,
            id,
            backend.as_ref(),
        )),
        _ => None,
    };
    Ok(Ran {
        outputs: report.outputs,
        trace,
    })
}

/// Every declared input given, no others, each of its declared shape.
fn check_inputs(
    program: &lockstep_program::ValidatedProgram,
    inputs: &BTreeMap<String, Tensor>,
) -> Result<(), Failure> {
    for name in inputs.keys() {
        if !program.inputs().iter().any(|d| &d.name == name) {
            let declared: Vec<&str> = program.inputs().iter().map(|d| d.name.as_str()).collect();
            return Err(Failure::Input(format!(
                "input '{name}': the program declares no such input (its inputs: {})",
                if declared.is_empty() {
                    "none".to_string()
                } else {
                    declared.join(", ")
                }
            )));
        }
    }
    for decl in program.inputs() {
        match inputs.get(&decl.name) {
            None => {
                return Err(Failure::Input(format!(
                    "input '{}' ({}) is declared by the program but not given",
                    decl.name,
                    shape_string(&decl.shape)
                )))
            }
            Some(t) if t.shape() != decl.shape.as_slice() => {
                return Err(Failure::Input(format!(
                    "input '{}': shape {} differs from the declared shape {}",
                    decl.name,
                    t.shape_string(),
                    shape_string(&decl.shape)
                )))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// A job the node ran, its receipt checked: signed by the pinned node, by
/// its chain key, and naming the outputs that came back.
pub struct Submitted {
    pub outputs: BTreeMap<String, Tensor>,
    /// The receipt's exact signed bytes (JSON).
    pub receipt_json: Vec<u8>,
    /// Its minisign signature (the `.minisig` file's text).
    pub signature: String,
    /// Its chain key's EIP-712 signature (the `.eip712` file's line).
    pub chain_signature: String,
    pub receipt: Receipt,
}

/// `lockstep submit exec` in memory: runs `program` on the node at `addr`,
/// which must be `node_key`, optionally on device `on_device` (index or
/// UUID).
pub fn submit(
    addr: SocketAddr,
    node_key: &str,
    program: &Program,
    inputs: BTreeMap<String, Tensor>,
    on_device: Option<&str>,
) -> Result<Submitted, Failure> {
    let pinned = NodeId::parse(node_key).map_err(|e| Failure::Input(format!("node key: {e}")))?;
    let device = on_device
        .map(lockstep_protocol::DeviceSelector::parse)
        .transpose()
        .map_err(Failure::Input)?;
    let validated = validate(program, &ValidateOptions::default())
        .map_err(|e| Failure::Input(format!("the program: {e}")))?;
    check_inputs(&validated, &inputs)?;
    crate::submit::submit_job(
        addr,
        &pinned,
        program,
        inputs,
        &BTreeMap::new(),
        None,
        device,
    )
}

/// `lockstep verify-receipt` in memory: `receipt_json` and its minisign
/// `signature` must verify under `node_key`; a receipt with a chain
/// address needs `chain_signature`, which must recover to it; each of
/// `outputs` must hash to the receipt's output of the same name.
pub fn verify_receipt(
    receipt_json: &[u8],
    signature: &str,
    chain_signature: Option<&str>,
    node_key: &str,
    outputs: &BTreeMap<String, Tensor>,
) -> Result<Receipt, Failure> {
    let pinned = NodeId::parse(node_key).map_err(|e| Failure::Input(format!("node key: {e}")))?;
    let verified = crate::submit::verify_receipt_bytes(
        receipt_json,
        signature,
        || {
            chain_signature.map(str::to_string).ok_or_else(|| {
                Failure::Input(
                    "the receipt: it names a chain address, so its chain signature must be given"
                        .into(),
                )
            })
        },
        &pinned,
        "the receipt",
    )?;
    for (name, t) in outputs {
        match verified.receipt.outputs.get(name) {
            Some(h) if *h == t.sha256_hex() => {}
            Some(h) => {
                return Err(Failure::Input(format!(
                    "output '{name}': its SHA-256 {} is not the receipt's {h}",
                    t.sha256_hex()
                )))
            }
            None => {
                return Err(Failure::Input(format!(
                    "output '{name}': the receipt has no output of that name"
                )))
            }
        }
    }
    Ok(verified.receipt)
}

/// `lockstep devices --json`: one JSON object per Vulkan device.
pub fn devices() -> Result<Vec<serde_json::Value>, Failure> {
    crate::commands::device_list()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BackendKind;

    fn add_program() -> Program {
        program_from_bytes(
            br#"{"version":1,"inputs":[{"name":"a","shape":[2,2]},{"name":"b","shape":[2,2]}],
                "outputs":["c"],"body":[{"op":"add","inputs":["a","b"],"output":"c"}]}"#,
            "test",
        )
        .unwrap()
    }

    fn t(v: f32) -> Tensor {
        Tensor::new(vec![2, 2], vec![v; 4]).unwrap()
    }

    #[test]
    fn run_on_the_cpu_reference_gives_outputs_and_the_trace_document() {
        let inputs = BTreeMap::from([("a".to_string(), t(1.5)), ("b".to_string(), t(2.0))]);
        let ran = run(
            &add_program(),
            inputs,
            &Target::new(BackendKind::Cpu, None),
            true,
        )
        .unwrap();
        assert_eq!(ran.outputs["c"].data(), &[3.5; 4]);
        let trace = ran.trace.unwrap();
        assert_eq!(trace["leaf_count"], 1);
        assert_eq!(trace["outputs"]["c"], ran.outputs["c"].sha256_hex());
    }

    #[test]
    fn inputs_are_checked_before_anything_runs() {
        let target = Target::new(BackendKind::Cpu, None);
        let missing = BTreeMap::from([("a".to_string(), t(1.0))]);
        let Err(Failure::Input(m)) = run(&add_program(), missing, &target, false) else {
            panic!("a missing input must be bad input");
        };
        assert!(m.contains("input 'b' (2x2) is declared"), "{m}");
        let extra = BTreeMap::from([
            ("a".to_string(), t(1.0)),
            ("b".to_string(), t(1.0)),
            ("z".to_string(), t(1.0)),
        ]);
        let Err(Failure::Input(m)) = run(&add_program(), extra, &target, false) else {
            panic!("an undeclared input must be bad input");
        };
        assert!(
            m.contains("declares no such input (its inputs: a, b)"),
            "{m}"
        );
        let wrong = BTreeMap::from([
            ("a".to_string(), Tensor::new(vec![4], vec![0.0; 4]).unwrap()),
            ("b".to_string(), t(1.0)),
        ]);
        let Err(Failure::Input(m)) = run(&add_program(), wrong, &target, false) else {
            panic!("a wrong shape must be bad input");
        };
        assert!(m.contains("shape 4 differs"), "{m}");
    }

    #[test]
    fn programs_are_json_or_postcard_and_bad_bytes_are_bad_input() {
        let p = add_program();
        assert_eq!(program_from_bytes(&p.to_postcard(), "x").unwrap(), p);
        let Err(Failure::Input(m)) = program_from_bytes(b"{ not json", "model.json") else {
            panic!()
        };
        assert!(m.starts_with("model.json: "), "{m}");
    }
}
