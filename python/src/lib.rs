//! `lockstep._native`: the native half of the `lockstep` Python package.
//! Every function is a thin wrapper over `lockstep_cli::api`, the code the
//! `lockstep` command runs, so both fail with the same one-line messages:
//! the command's exit 2 (bad input) is [`InputError`] here, its exit 1 (a
//! machine problem) is [`MachineError`]. The pure-Python half
//! (`python/lockstep/__init__.py`) turns numpy arrays into the buffers
//! this module reads and the bytearrays it returns back into arrays.
//!
//! Tensors cross without intermediate formats: an input is read straight
//! from the array's buffer into the executor's tensor (one copy, because
//! the executor owns its inputs), an output is written once into a
//! `bytearray` that numpy then views without copying.

// PyO3's safe API is enough: buffers are read with `PyBuffer::to_vec`
// and outputs written through `PyByteArray::new_with`.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use lockstep_cli::failure::Failure;
use lockstep_cli::{api, BackendKind, Target};
use lockstep_tensor::Tensor;
use pyo3::buffer::PyBuffer;
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyTuple};

create_exception!(
    _native,
    LockstepError,
    PyException,
    "Any Lockstep failure; the message is the command's one line."
);
create_exception!(
    _native,
    InputError,
    LockstepError,
    "Bad input: what `lockstep` exits 2 for (a malformed program or model, \
     a wrong dtype, shape or name, a receipt that does not verify)."
);
create_exception!(
    _native,
    MachineError,
    LockstepError,
    "A machine problem: what `lockstep` exits 1 for (no Vulkan device, a \
     node that cannot be reached, a device lost)."
);

fn raise(f: Failure) -> PyErr {
    match f {
        Failure::Input(m) => InputError::new_err(m.replace('\n', " ")),
        Failure::Runtime(m) => MachineError::new_err(m.replace('\n', " ")),
    }
}

fn input(m: String) -> PyErr {
    InputError::new_err(m)
}

/// A validated-on-use Lockstep program, with the weights an ONNX import
/// ships beside it (empty for a program file).
#[pyclass(module = "lockstep._native", frozen)]
struct Program {
    program: lockstep_program::Program,
    weights: BTreeMap<String, Tensor>,
    renamed: Vec<(String, String)>,
}

#[pymethods]
impl Program {
    /// The program as JSON text (what `lockstep import --out` writes).
    #[getter]
    fn json(&self) -> String {
        api::program_to_json(&self.program)
    }

    /// Hex SHA-256 of the program's canonical postcard bytes: the
    /// receipt's `program_sha256`.
    #[getter]
    fn sha256(&self) -> String {
        self.program.sha256_hex()
    }

    /// The declared inputs the caller gives, as (name, shape): the
    /// program's inputs less the weights it carries.
    #[getter]
    fn inputs(&self) -> Vec<(String, Vec<u64>)> {
        self.program
            .inputs
            .iter()
            .filter(|d| !self.weights.contains_key(&d.name))
            .map(|d| (d.name.clone(), d.shape.clone()))
            .collect()
    }

    #[getter]
    fn outputs(&self) -> Vec<String> {
        self.program.outputs.clone()
    }

    /// Names of the weights carried with the program.
    #[getter]
    fn weights(&self) -> Vec<String> {
        self.weights.keys().cloned().collect()
    }

    /// (ONNX name, program name) of graph inputs and outputs renamed.
    #[getter]
    fn renamed(&self) -> Vec<(String, String)> {
        self.renamed.clone()
    }

    /// The weights as {name: (shape, bytearray of little-endian float32)}.
    fn weight_buffers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        tensors_out(py, &self.weights)
    }
}

/// A program from a file's bytes: JSON or postcard.
#[pyfunction]
fn load_program(bytes: &[u8], shown: &str) -> PyResult<Program> {
    Ok(Program {
        program: api::program_from_bytes(bytes, shown).map_err(raise)?,
        weights: BTreeMap::new(),
        renamed: Vec::new(),
    })
}

/// An ONNX model's bytes into a program and its weights.
#[pyfunction]
fn import_onnx(py: Python<'_>, bytes: &[u8], shown: &str) -> PyResult<Program> {
    let imported = py
        .detach(|| api::import_onnx(bytes, shown))
        .map_err(raise)?;
    Ok(Program {
        program: imported.program,
        weights: imported.weights,
        renamed: imported.renamed,
    })
}

/// Reads each value of `inputs` (a float32, C-contiguous buffer) into a
/// tensor of the buffer's shape, then adds `weights`; `what` ("input" or
/// "output") names the values in errors.
fn tensors_in(
    py: Python<'_>,
    inputs: &Bound<'_, PyDict>,
    weights: &BTreeMap<String, Tensor>,
    what: &str,
) -> PyResult<BTreeMap<String, Tensor>> {
    let mut tensors = BTreeMap::new();
    for (key, value) in inputs.iter() {
        let name: String = key
            .extract()
            .map_err(|_| input(format!("{what} names must be str")))?;
        if weights.contains_key(&name) {
            return Err(input(format!(
                "input '{name}' is one of the model's weights, which the program carries"
            )));
        }
        let buffer = PyBuffer::<f32>::get(&value).map_err(|e| {
            input(format!(
                "{what} '{name}': not a float32 buffer ({e}); give a numpy.float32 array"
            ))
        })?;
        if !buffer.is_c_contiguous() {
            return Err(input(format!(
                "{what} '{name}': not C-contiguous; give numpy.ascontiguousarray(x)"
            )));
        }
        let shape = buffer.shape().to_vec();
        let data = buffer.to_vec(py)?;
        let tensor =
            Tensor::new(shape, data).map_err(|e| input(format!("{what} '{name}': {e}")))?;
        tensors.insert(name, tensor);
    }
    for (name, w) in weights {
        tensors.insert(name.clone(), w.clone());
    }
    Ok(tensors)
}

/// {name: (shape, bytearray)}: each tensor's data written once, as
/// little-endian float32, into a bytearray numpy can view in place.
fn tensors_out<'py>(
    py: Python<'py>,
    tensors: &BTreeMap<String, Tensor>,
) -> PyResult<Bound<'py, PyDict>> {
    let out = PyDict::new(py);
    for (name, t) in tensors {
        let data = t.data();
        let bytes = PyByteArray::new_with(py, std::mem::size_of_val(data), |buf| {
            for (chunk, v) in buf.chunks_exact_mut(4).zip(data) {
                chunk.copy_from_slice(&v.to_le_bytes());
            }
            Ok(())
        })?;
        let shape = PyTuple::new(py, t.shape())?;
        out.set_item(name, (shape, bytes))?;
    }
    Ok(out)
}

fn target(backend: &str, device: Option<usize>) -> PyResult<Target> {
    let kind = match backend {
        "vulkan" => BackendKind::Vulkan,
        "cpu" => BackendKind::Cpu,
        other => {
            return Err(input(format!(
                "backend {other:?}: give \"vulkan\" or \"cpu\""
            )))
        }
    };
    Ok(Target::new(kind, device))
}

/// Runs `program` on `backend` ("vulkan" or "cpu"); returns the outputs
/// and, traced, the trace document as JSON text.
#[pyfunction]
#[pyo3(signature = (program, inputs, backend, device=None, trace=true))]
fn run<'py>(
    py: Python<'py>,
    program: &Program,
    inputs: &Bound<'py, PyDict>,
    backend: &str,
    device: Option<usize>,
    trace: bool,
) -> PyResult<(Bound<'py, PyDict>, Option<String>)> {
    let target = target(backend, device)?;
    let tensors = tensors_in(py, inputs, &program.weights, "input")?;
    let ran = py
        .detach(|| api::run(&program.program, tensors, &target, trace))
        .map_err(raise)?;
    let trace = ran
        .trace
        .map(|doc| serde_json::to_string(&doc))
        .transpose()
        .map_err(|e| MachineError::new_err(format!("the trace: {e}")))?;
    Ok((tensors_out(py, &ran.outputs)?, trace))
}

/// Runs `program` on the node at `addr` that must be `node_key`; returns
/// the outputs and the receipt (JSON bytes, minisign signature, EIP-712
/// chain signature), all checked.
#[pyfunction]
#[pyo3(signature = (addr, node_key, program, inputs, device=None))]
fn submit<'py>(
    py: Python<'py>,
    addr: &str,
    node_key: &str,
    program: &Program,
    inputs: &Bound<'py, PyDict>,
    device: Option<&str>,
) -> PyResult<(Bound<'py, PyDict>, Bound<'py, PyBytes>, String, String)> {
    let addr = addr.parse().map_err(|e| {
        input(format!(
            "node address {addr:?}: {e} (give HOST:PORT, e.g. 127.0.0.1:7400)"
        ))
    })?;
    let tensors = tensors_in(py, inputs, &program.weights, "input")?;
    let done = py
        .detach(|| api::submit(addr, node_key, &program.program, tensors, device))
        .map_err(raise)?;
    Ok((
        tensors_out(py, &done.outputs)?,
        PyBytes::new(py, &done.receipt_json),
        done.signature,
        done.chain_signature,
    ))
}

/// Verifies a receipt under `node_key` and checks `outputs` against it;
/// returns the receipt's fields as JSON text.
#[pyfunction]
#[pyo3(signature = (receipt_json, signature, chain_signature, node_key, outputs))]
fn verify_receipt(
    py: Python<'_>,
    receipt_json: &[u8],
    signature: &str,
    chain_signature: Option<&str>,
    node_key: &str,
    outputs: &Bound<'_, PyDict>,
) -> PyResult<String> {
    let outputs = tensors_in(py, outputs, &BTreeMap::new(), "output")?;
    let receipt = py
        .detach(|| {
            api::verify_receipt(receipt_json, signature, chain_signature, node_key, &outputs)
        })
        .map_err(raise)?;
    serde_json::to_string(&receipt).map_err(|e| MachineError::new_err(format!("the receipt: {e}")))
}

/// The Vulkan devices, as `lockstep devices --json` lists them (JSON text).
#[pyfunction]
fn devices(py: Python<'_>) -> PyResult<String> {
    let list = py.detach(api::devices).map_err(raise)?;
    serde_json::to_string(&list).map_err(|e| MachineError::new_err(format!("devices: {e}")))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("LockstepError", py.get_type::<LockstepError>())?;
    m.add("InputError", py.get_type::<InputError>())?;
    m.add("MachineError", py.get_type::<MachineError>())?;
    m.add_class::<Program>()?;
    m.add_function(wrap_pyfunction!(load_program, m)?)?;
    m.add_function(wrap_pyfunction!(import_onnx, m)?)?;
    m.add_function(wrap_pyfunction!(run, m)?)?;
    m.add_function(wrap_pyfunction!(submit, m)?)?;
    m.add_function(wrap_pyfunction!(verify_receipt, m)?)?;
    m.add_function(wrap_pyfunction!(devices, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
