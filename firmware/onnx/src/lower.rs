//! An ONNX graph onto Lockstep ops (docs/onnx.md has the table).
//!
//! The lowering never computes a float: every float operation of the model
//! becomes a Lockstep op, so its bits are the float model's. What it does
//! at import time is move data: it reads constants, reshapes and transposes
//! them, and repeats a broadcast constant to the shape it is used at.

use std::collections::{BTreeMap, HashMap};

use lockstep_limits::MAX_ONNX_NODES;
use lockstep_program::{
    validate, OpStep, Program, Step, TensorDecl, ValidateOptions, PROGRAM_VERSION,
};
use lockstep_tensor::Tensor;

use crate::attrs::{attr_i, attr_s, attrs_known, input, output};
use crate::constant::{self, Constant, Data};
use crate::names::Names;
use crate::proto::tensor_proto::DataType;
use crate::proto::tensor_shape_proto::dimension;
use crate::proto::{type_proto, ModelProto, NodeProto, ValueInfoProto};
use crate::{ImportError, Imported};

/// Oldest default-domain opset read: from 13 on, Softmax works on one axis
/// and Squeeze, Unsqueeze and Reshape take their axes and shapes as inputs.
pub const OPSET_MIN: i64 = 13;
/// Newest default-domain opset read (ONNX 1.18 to 1.23).
pub const OPSET_MAX: i64 = 23;

/// The ONNX ops [`lower`] takes (each within the limits docs/onnx.md gives).
pub const SUPPORTED_OPS: &[&str] = &[
    "Add",
    "Cast",
    "Concat",
    "Constant",
    "Div",
    "Equal",
    "Erf",
    "Exp",
    "Flatten",
    "Gather",
    "Gelu",
    "Gemm",
    "Greater",
    "Identity",
    "LayerNormalization",
    "Less",
    "Log",
    "LogSoftmax",
    "MatMul",
    "Mul",
    "Pow",
    "ReduceMax",
    "ReduceMean",
    "Relu",
    "Reshape",
    "Sigmoid",
    "Slice",
    "Softmax",
    "Split",
    "Sqrt",
    "Squeeze",
    "Sub",
    "Tanh",
    "Transpose",
    "Unsqueeze",
    "Where",
];

/// An ONNX value during lowering.
#[derive(Debug, Clone)]
pub(crate) enum Value {
    /// A tensor of the program (an input or an op's output).
    Tensor { name: String, shape: Vec<usize> },
    /// Data known at import time; it becomes a program input when an op
    /// reads it as a tensor.
    Const { onnx: String, c: Constant },
}

/// Lowers a decoded model. The program it returns passes
/// `lockstep_program::validate`.
pub fn lower(model: &ModelProto) -> Result<Imported, ImportError> {
    check_opset(model)?;
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| ImportError::Invalid("the model has no graph".into()))?;
    if graph.node.len() > MAX_ONNX_NODES {
        return Err(ImportError::Invalid(format!(
            "the graph has {} nodes; the bound is {MAX_ONNX_NODES}",
            graph.node.len()
        )));
    }
    if !graph.sparse_initializer.is_empty() {
        return Err(ImportError::Initializer {
            name: graph.sparse_initializer[0]
                .values
                .as_ref()
                .map(|v| v.name().to_string())
                .unwrap_or_default(),
            why: "sparse initializers are not supported".into(),
        });
    }
    let mut l = Lowering::default();
    for init in &graph.initializer {
        let c = constant::read(init).map_err(|why| ImportError::Initializer {
            name: init.name().to_string(),
            why,
        })?;
        l.values.insert(
            init.name().to_string(),
            Value::Const {
                onnx: init.name().to_string(),
                c,
            },
        );
    }
    // Graph inputs first, so they keep their names; an input with an
    // initialiser of the same name is a constant with a default (ONNX IR 3).
    for input in &graph.input {
        if l.values.contains_key(input.name()) {
            continue;
        }
        let (shape, int64) = interface_shape(input, "input")?;
        let name = l.names.assign(input.name());
        if int64 {
            l.index_inputs.insert(name.clone());
        }
        if name != input.name() {
            l.renamed.push((input.name().to_string(), name.clone()));
        }
        l.inputs.push(TensorDecl {
            name: name.clone(),
            shape: shape.iter().map(|&d| d as u64).collect(),
        });
        l.values
            .insert(input.name().to_string(), Value::Tensor { name, shape });
    }
    for output in &graph.output {
        check_output(output)?;
        if l.outputs.contains_key(output.name()) {
            return Err(ImportError::Invalid(format!(
                "output '{}' is listed twice",
                output.name()
            )));
        }
        let name = l.names.assign(output.name());
        if name != output.name() {
            l.renamed.push((output.name().to_string(), name.clone()));
        }
        l.outputs.insert(output.name().to_string(), name);
    }
    for (index, node) in graph.node.iter().enumerate() {
        l.node = index;
        l.lower_node(node).map_err(|why| ImportError::Unsupported {
            node: label(node, index),
            op: node.op_type().to_string(),
            why,
        })?;
    }
    let mut outputs = Vec::new();
    for output in &graph.output {
        outputs.push(
            l.finish_output(output.name())
                .map_err(|why| ImportError::Interface {
                    kind: "output",
                    name: output.name().to_string(),
                    why,
                })?,
        );
    }
    let mut inputs = std::mem::take(&mut l.inputs);
    inputs.extend(l.constant_decls.iter().cloned());
    let program = Program {
        version: PROGRAM_VERSION,
        inputs,
        outputs,
        body: std::mem::take(&mut l.body),
    };
    let options = ValidateOptions {
        memory_limit: u64::MAX,
    };
    if let Err(e) = validate(&program, &options) {
        // The lowering checks shapes itself; this names the node if a rule
        // of Lockstep's ops was still missed.
        let node = e
            .site()
            .and_then(|s| s.path.indices().first().copied())
            .and_then(|step| l.step_nodes.get(step).copied());
        return Err(match node {
            Some(i) => ImportError::Unsupported {
                node: label(&graph.node[i], i),
                op: graph.node[i].op_type().to_string(),
                why: e.to_string(),
            },
            None => ImportError::Invalid(e.to_string()),
        });
    }
    Ok(Imported {
        program,
        constants: l.constants,
        renamed: l.renamed,
        nodes: graph.node.len(),
    })
}

fn check_opset(model: &ModelProto) -> Result<(), ImportError> {
    let default = model
        .opset_import
        .iter()
        .find(|o| matches!(o.domain(), "" | "ai.onnx"))
        .ok_or_else(|| {
            ImportError::Opset("the model imports no default-domain (ai.onnx) opset".into())
        })?;
    let v = default.version();
    if !(OPSET_MIN..=OPSET_MAX).contains(&v) {
        return Err(ImportError::Opset(format!(
            "the model uses opset {v}; lockstep import reads opsets {OPSET_MIN} to {OPSET_MAX} \
             (export with torch.onnx.export(..., opset_version=17))"
        )));
    }
    Ok(())
}

/// How errors name a node: its name, or its index and first output.
fn label(node: &NodeProto, index: usize) -> String {
    if !node.name().is_empty() {
        return node.name().to_string();
    }
    match node.output.first() {
        Some(out) => format!("#{index} -> {out}"),
        None => format!("#{index}"),
    }
}

fn elem_type(v: &ValueInfoProto) -> Option<(i32, Option<&crate::proto::TensorShapeProto>)> {
    match v.r#type.as_ref()?.value.as_ref()? {
        type_proto::Value::TensorType(t) => Some((t.elem_type(), t.shape.as_ref())),
        _ => None,
    }
}

/// A graph input's static shape and whether it is int64 (indices, given
/// to the program as float32 holding the integers), or why it is refused.
fn interface_shape(
    v: &ValueInfoProto,
    kind: &'static str,
) -> Result<(Vec<usize>, bool), ImportError> {
    let err = |why: String| ImportError::Interface {
        kind,
        name: v.name().to_string(),
        why,
    };
    let (dtype, shape) = elem_type(v).ok_or_else(|| err("it is not a tensor".into()))?;
    let int64 = dtype == DataType::Int64 as i32;
    if dtype != DataType::Float as i32 && !int64 {
        return Err(err(format!(
            "dtype {} is not supported (float32, or int64 indices)",
            DataType::try_from(dtype)
                .map(|d| d.as_str_name())
                .unwrap_or("unknown")
        )));
    }
    let shape = shape.ok_or_else(|| err("it has no shape".into()))?;
    let mut dims = Vec::new();
    for d in &shape.dim {
        match &d.value {
            Some(dimension::Value::DimValue(n)) => dims.push(*n),
            Some(dimension::Value::DimParam(p)) => {
                return Err(err(format!(
                    "dynamic dimension '{p}': export with fixed shapes (no dynamic_axes)"
                )))
            }
            None => {
                return Err(err(
                    "a dimension without a value: export with fixed shapes".into()
                ))
            }
        }
    }
    constant::dims(&dims).map_err(err).map(|d| (d, int64))
}

fn check_output(v: &ValueInfoProto) -> Result<(), ImportError> {
    match elem_type(v) {
        Some((dtype, _)) if dtype != DataType::Float as i32 && dtype != 0 => {
            Err(ImportError::Interface {
                kind: "output",
                name: v.name().to_string(),
                why: format!(
                    "dtype {} is not supported (float32 only)",
                    DataType::try_from(dtype)
                        .map(|d| d.as_str_name())
                        .unwrap_or("unknown")
                ),
            })
        }
        _ => Ok(()),
    }
}

#[derive(Default)]
pub(crate) struct Lowering {
    pub(crate) names: Names,
    /// Every ONNX value defined so far, by its ONNX name.
    pub(crate) values: HashMap<String, Value>,
    /// Graph outputs: ONNX name → program name, reserved up front.
    pub(crate) outputs: HashMap<String, String>,
    /// Program names of constants already made program inputs, by ONNX
    /// name (a constant read by many ops is shipped once).
    pub(crate) shipped: HashMap<String, String>,
    pub(crate) inputs: Vec<TensorDecl>,
    pub(crate) constant_decls: Vec<TensorDecl>,
    pub(crate) constants: Vec<(String, Tensor)>,
    pub(crate) renamed: Vec<(String, String)>,
    pub(crate) body: Vec<Step>,
    /// The node each body step came from.
    pub(crate) step_nodes: Vec<usize>,
    /// Program inputs that were int64 graph inputs: only Gather may read
    /// them (as indices), never arithmetic.
    pub(crate) index_inputs: std::collections::HashSet<String>,
    /// The node being lowered.
    pub(crate) node: usize,
}

/// Why a node cannot be lowered (the caller names the node).
pub(crate) type Why = String;

impl Lowering {
    fn lower_node(&mut self, node: &NodeProto) -> Result<(), Why> {
        if !matches!(node.domain(), "" | "ai.onnx") {
            return Err(format!(
                "domain '{}' is not supported (only the default ai.onnx ops)",
                node.domain()
            ));
        }
        let op = node.op_type();
        match op {
            "Relu" | "Sigmoid" | "Tanh" | "Exp" | "Log" | "Sqrt" | "Erf" => {
                attrs_known(node, &[])?;
                self.unary(node, &op.to_ascii_lowercase())
            }
            "Gelu" => {
                attrs_known(node, &["approximate"])?;
                match attr_s(node, "approximate")?.as_deref().unwrap_or("none") {
                    "tanh" => self.unary(node, "gelu"),
                    // The exact form as its definition: x * 0.5 * (1 + erf(x / sqrt 2)).
                    "none" => self.exact_gelu(node),
                    other => Err(format!("approximate='{other}' is not an ONNX Gelu form")),
                }
            }
            "Add" | "Sub" | "Mul" | "Div" => {
                attrs_known(node, &[])?;
                self.binary(node, &op.to_ascii_lowercase())
            }
            // A bool result is a float32 tensor of 1.0 and 0.0, which is
            // what `where` reads as true and false.
            "Greater" | "Less" | "Equal" => {
                attrs_known(node, &[])?;
                self.binary(node, &op.to_ascii_lowercase())
            }
            "MatMul" => {
                attrs_known(node, &[])?;
                self.matmul(node)
            }
            "Gemm" => {
                attrs_known(node, &["alpha", "beta", "transA", "transB"])?;
                self.gemm(node)
            }
            "Softmax" | "LogSoftmax" => {
                attrs_known(node, &["axis"])?;
                let kernel = if op == "Softmax" {
                    "softmax_rows"
                } else {
                    "log_softmax_rows"
                };
                self.rows(node, kernel)
            }
            "LayerNormalization" => {
                attrs_known(node, &["axis", "epsilon", "stash_type"])?;
                self.layernorm(node)
            }
            "Transpose" => {
                attrs_known(node, &["perm"])?;
                self.transpose(node)
            }
            "Identity" => {
                attrs_known(node, &[])?;
                let v = self.value(input(node, 0)?)?;
                self.define(output(node, 0)?, v)
            }
            "Cast" => {
                attrs_known(node, &["to", "saturate", "round_mode"])?;
                let to = attr_i(node, "to")?.ok_or("it has no 'to' attribute")?;
                let v = self.value(input(node, 0)?)?;
                match (
                    &v,
                    to == DataType::Float as i64,
                    to == DataType::Int64 as i64,
                ) {
                    (Value::Tensor { .. }, true, _) => self.define(output(node, 0)?, v),
                    (Value::Const { c, .. }, true, _) if matches!(c.data, Data::F32(_)) => {
                        self.define(output(node, 0)?, v)
                    }
                    (Value::Const { c, .. }, _, true) if matches!(c.data, Data::I64(_)) => {
                        self.define(output(node, 0)?, v)
                    }
                    _ => Err(
                        "only a cast of float32 to float32 (or int64 to int64) is supported".into(),
                    ),
                }
            }
            "Where" => {
                attrs_known(node, &[])?;
                self.select(node)
            }
            "Constant" => self.constant(node),
            "Concat" => {
                attrs_known(node, &["axis"])?;
                self.concat(node)
            }
            "Slice" => {
                attrs_known(node, &[])?;
                self.slice(node)
            }
            "Gather" => {
                attrs_known(node, &["axis"])?;
                self.gather(node)
            }
            "Split" => {
                attrs_known(node, &["axis", "num_outputs"])?;
                self.split(node)
            }
            "Pow" => {
                attrs_known(node, &[])?;
                self.pow(node)
            }
            "ReduceMean" | "ReduceMax" => {
                attrs_known(node, &["axes", "keepdims", "noop_with_empty_axes"])?;
                self.reduce_rows(node)
            }
            "Reshape" | "Flatten" | "Squeeze" | "Unsqueeze" => self.reshape(node),
            _ => Err(format!(
                "op not supported by lockstep import (supported: {})",
                SUPPORTED_OPS.join(", ")
            )),
        }
    }

    pub(crate) fn value(&self, onnx: &str) -> Result<Value, Why> {
        self.values.get(onnx).cloned().ok_or_else(|| {
            format!("it reads '{onnx}', which no input, initializer or earlier node defines")
        })
    }

    pub(crate) fn define(&mut self, onnx: &str, v: Value) -> Result<(), Why> {
        if self.values.contains_key(onnx) {
            return Err(format!("'{onnx}' is defined twice"));
        }
        self.values.insert(onnx.to_string(), v);
        Ok(())
    }

    /// The program name an op writes the ONNX value `onnx` to.
    pub(crate) fn out_name(&mut self, onnx: &str) -> String {
        match self.outputs.get(onnx) {
            Some(name) => name.clone(),
            None => self.names.assign(onnx),
        }
    }

    pub(crate) fn emit(
        &mut self,
        op: &str,
        inputs: Vec<String>,
        output: String,
        attrs: &[(&str, String)],
    ) {
        self.body.push(Step::Op(OpStep {
            op: op.to_string(),
            inputs,
            output,
            attrs: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect::<BTreeMap<_, _>>(),
        }));
        self.step_nodes.push(self.node);
    }

    /// Emits `op` writing the ONNX value `onnx` with `shape`.
    pub(crate) fn emit_value(
        &mut self,
        op: &str,
        inputs: Vec<String>,
        onnx: &str,
        shape: Vec<usize>,
        attrs: &[(&str, String)],
    ) -> Result<(), Why> {
        let name = self.out_name(onnx);
        self.emit(op, inputs, name.clone(), attrs);
        self.define(onnx, Value::Tensor { name, shape })
    }

    /// `v` as a program tensor: a constant becomes a program input (once).
    pub(crate) fn tensor(&mut self, v: &Value) -> Result<(String, Vec<usize>), Why> {
        match v {
            Value::Tensor { name, shape } => {
                if self.index_inputs.contains(name) {
                    return Err(format!(
                        "'{name}' is an int64 graph input, which only Gather may read (as indices); \
                         Lockstep computes in float32 only"
                    ));
                }
                Ok((name.clone(), shape.clone()))
            }
            Value::Const { onnx, c } => {
                if let Some(name) = self.shipped.get(onnx) {
                    return Ok((name.clone(), c.shape.clone()));
                }
                let name = self.ship(onnx, c)?;
                self.shipped.insert(onnx.clone(), name.clone());
                Ok((name, c.shape.clone()))
            }
        }
    }

    /// A constant as a new program input named after `onnx`.
    pub(crate) fn ship(&mut self, onnx: &str, c: &Constant) -> Result<String, Why> {
        let Data::F32(data) = &c.data else {
            return Err(format!(
                "'{onnx}' is int64 data used as a tensor; Lockstep computes in float32 only"
            ));
        };
        let tensor = Tensor::new(c.shape.clone(), data.clone()).map_err(|e| e.to_string())?;
        let name = self.names.assign(onnx);
        self.constant_decls.push(TensorDecl {
            name: name.clone(),
            shape: c.shape.iter().map(|&d| d as u64).collect(),
        });
        self.constants.push((name.clone(), tensor));
        Ok(name)
    }

    /// The program name of graph output `onnx`, emitting a copy when the
    /// value is not an op output written under that name (an input, a
    /// constant or an alias made by Identity or Reshape).
    fn finish_output(&mut self, onnx: &str) -> Result<String, Why> {
        let want = self.outputs[onnx].clone();
        let v = self.value(onnx)?;
        if let Value::Tensor { name, .. } = &v {
            if *name == want {
                return Ok(want);
            }
        }
        let (x, _) = self.tensor(&v)?;
        // x ⊗ 1 is x, bit for bit (canonical NaN aside), in the float model.
        self.emit("scale", vec![x], want.clone(), &[("alpha", "1".into())]);
        Ok(want)
    }
}
