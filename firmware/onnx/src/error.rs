//! Why a model cannot be imported. Every message is one line that says what
//! is at fault and, where there is one, what to do instead.

/// Why an ONNX model is not a Lockstep program. The kinds keep a broken
/// file apart from a valid model that uses something unsupported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// The file is over `MAX_ONNX_MODEL_BYTES`.
    #[error(
        "the model is {size} bytes; the bound is {} (1 GiB)",
        lockstep_limits::MAX_ONNX_MODEL_BYTES
    )]
    TooLarge { size: usize },
    /// Not a protobuf `ModelProto` (truncated, corrupt, or another file).
    #[error("not an ONNX model (truncated or corrupt): {0}")]
    Corrupt(String),
    /// A valid protobuf that breaks ONNX's own rules (a missing graph, a
    /// name used before it is defined, data that does not fit its shape).
    #[error("not a valid ONNX model: {0}")]
    Invalid(String),
    /// The model needs an operator set this importer does not cover.
    #[error("{0}")]
    Opset(String),
    /// A graph input or output Lockstep cannot take (dtype, dynamic shape).
    #[error("{kind} '{name}': {why}")]
    Interface {
        kind: &'static str,
        name: String,
        why: String,
    },
    /// An initialiser or `Constant` Lockstep cannot hold.
    #[error("initializer '{name}': {why}")]
    Initializer { name: String, why: String },
    /// A node whose op, attribute, dtype or shape is not supported.
    #[error("node '{node}' ({op}): {why}")]
    Unsupported {
        node: String,
        op: String,
        why: String,
    },
}
