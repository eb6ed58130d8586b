//! ONNX models into Lockstep programs (`lockstep import`).
//!
//! [`decode`] reads a `ModelProto` with the types prost generates from the
//! official `onnx.proto` (vendored in `proto/`, ONNX 1.23.0), within
//! [`MAX_ONNX_MODEL_BYTES`]. [`lower`] turns its graph into a [`Program`]:
//! every node becomes Lockstep ops whose float semantics are the float
//! model's (docs/float-model.md), and the graph's initialisers become
//! [`Imported::constants`], shipped as program inputs (one `.npy` each).
//! The graph's inputs and outputs keep their names where Lockstep's tensor
//! names allow them ([`Imported::renamed`] lists the others).
//!
//! Anything outside what is supported (docs/onnx.md) is one
//! [`ImportError`] naming the node, its op and why: never a partial
//! program, never a panic.
//!
//! **Architecture Invariant:** this crate knows nothing of devices, files or
//! the network: bytes in, a program and tensors out. Only it knows protobuf.

#![forbid(unsafe_code)]

mod attrs;
mod constant;
mod error;
mod lower;
mod movement;
mod names;
mod ops;
mod shapes;

/// The ONNX message types, generated at build time from `proto/onnx.proto`.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

use lockstep_limits::MAX_ONNX_MODEL_BYTES;
use lockstep_program::Program;
use lockstep_tensor::Tensor;
use prost::Message;

pub use error::ImportError;
pub use lower::{lower, OPSET_MAX, OPSET_MIN, SUPPORTED_OPS};

/// What an ONNX model becomes.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The program. Its inputs are the graph's inputs, then the constants.
    pub program: Program,
    /// The initialisers (and `Constant` nodes) the program reads, by their
    /// program input names, in the order the program declares them.
    pub constants: Vec<(String, Tensor)>,
    /// Graph inputs and outputs whose ONNX names are not valid Lockstep
    /// tensor names: (ONNX name, program name).
    pub renamed: Vec<(String, String)>,
    /// Nodes in the graph.
    pub nodes: usize,
}

/// Decodes a serialised `ModelProto`. A file that is too large, truncated
/// or not protobuf is an error, never a panic.
pub fn decode(bytes: &[u8]) -> Result<proto::ModelProto, ImportError> {
    if bytes.len() > MAX_ONNX_MODEL_BYTES {
        return Err(ImportError::TooLarge { size: bytes.len() });
    }
    if bytes.is_empty() {
        return Err(ImportError::Corrupt("the file is empty".into()));
    }
    proto::ModelProto::decode(bytes).map_err(|e| ImportError::Corrupt(e.to_string()))
}

/// [`decode`] then [`lower`].
pub fn import(bytes: &[u8]) -> Result<Imported, ImportError> {
    lower(&decode(bytes)?)
}
