//! The op set and its shape rules.

use std::collections::BTreeMap;

use lockstep_kernels::reference::matmul::Transpose;
use lockstep_limits::{MAX_PERMUTE_RANK, MAX_RANK, MAX_TENSOR_ELEMENTS};
use lockstep_tensor::shape_string as show;

/// Every op name `lockstep run` and programs accept.
pub const OP_NAMES: &[&str] = &[
    "matmul",
    "matmul_tn",
    "matmul_nt",
    "add",
    "sub",
    "mul",
    "div",
    "scale",
    "affine",
    "axpby",
    "relu",
    "relu_backward",
    "exp",
    "log",
    "sqrt",
    "tanh",
    "tanh_backward",
    "sigmoid",
    "gelu",
    "gelu_backward",
    "erf",
    "where",
    "sum_rows",
    "sum_cols",
    "softmax_rows",
    "log_softmax_rows",
    "layernorm_rows",
    "layernorm_backward",
    "layernorm_backward_gamma",
    "cross_entropy",
    "cross_entropy_backward",
    "argmax_rows",
    "bias_add",
    "transpose",
    "set_element",
    "sgd_update",
    "adam_update",
    "rand_uniform",
    "rand_normal",
    "zeros",
    "full",
    "reshape",
    "concat_rows",
    "concat_cols",
    "slice_rows",
    "slice_cols",
    "gather_rows",
    "max_rows",
    "mean_rows",
    "greater",
    "less",
    "equal",
    "permute",
];

/// Where a generator op's numbers come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RandSpec {
    pub shape: Vec<usize>,
    pub seed: u64,
    pub stream: u32,
    pub offset: u64,
}

/// One operation with its attributes. Definitions: docs/float-model.md.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// `matmul` (A m×k · B k×n), `matmul_tn` (Aᵀ·B, A stored k×m),
    /// `matmul_nt` (A·Bᵀ, B stored n×k).
    Matmul(Transpose),
    Add,
    Sub,
    Mul,
    /// Correctly rounded division.
    Div,
    /// `x * alpha`.
    Scale {
        alpha: f32,
    },
    /// `x * alpha + beta`.
    Affine {
        alpha: f32,
        beta: f32,
    },
    /// `alpha * x + beta * y`.
    Axpby {
        alpha: f32,
        beta: f32,
    },
    Relu,
    /// Inputs: upstream gradient `dy`, forward input `x`.
    ReluBackward,
    Exp,
    Log,
    Sqrt,
    Tanh,
    /// Inputs: upstream gradient `dy`, forward output `y = tanh(x)`.
    TanhBackward,
    Sigmoid,
    /// GELU, tanh form.
    Gelu,
    /// Inputs: upstream gradient `dy`, forward input `x`.
    GeluBackward,
    /// The error function (software, within 2 ULP).
    Erf,
    /// Inputs c, x, y of one shape: `c ≠ ±0 ? x : y` element by element.
    Where,
    /// m×n → m.
    SumRows,
    /// m×n → n.
    SumCols,
    SoftmaxRows,
    LogSoftmaxRows,
    /// Inputs x (m×n), gamma (n), beta (n).
    LayernormRows {
        eps: f32,
    },
    /// Inputs dy, x (m×n), gamma (n) → dx.
    LayernormBackward {
        eps: f32,
    },
    /// Inputs dy, x (m×n) → dgamma (n). (dbeta is `sum_cols(dy)`.)
    LayernormBackwardGamma {
        eps: f32,
    },
    /// Inputs logits (m×n), labels (m, integer class ids) → mean loss.
    CrossEntropy,
    /// Inputs logits, labels → d(mean loss)/d(logits).
    CrossEntropyBackward,
    /// m×n → m: index of each row's first maximum.
    ArgmaxRows,
    /// Inputs x (m×n), b (n).
    BiasAdd,
    Transpose,
    /// Inputs dst, value (one element), index (one element).
    SetElement,
    /// Inputs w, g: `w - lr * g`.
    SgdUpdate {
        lr: f32,
    },
    /// Inputs w, m, v (updated moments), c1, c2 (bias corrections).
    AdamUpdate {
        lr: f32,
        eps: f32,
    },
    RandUniform(RandSpec),
    RandNormal(RandSpec),
    /// A tensor of `shape`, every element +0.0.
    Zeros(Vec<usize>),
    /// A tensor of `shape`, every element `value` (NaN canonical).
    Full {
        shape: Vec<usize>,
        value: f32,
    },
    /// The same elements in the same order under another shape.
    Reshape(Vec<usize>),
    /// (p×n, q×n) → (p+q)×n: the first operand's rows, then the second's.
    ConcatRows,
    /// (m×p, m×q) → m×(p+q): each row of the first, then of the second.
    ConcatCols,
    /// Rows `start .. start+len` of a matrix.
    SliceRows {
        start: usize,
        len: usize,
    },
    /// Columns `start .. start+len` of a matrix.
    SliceCols {
        start: usize,
        len: usize,
    },
    /// (table v×n, index k) → k×n: row `index[r]`, NaN for a bad index.
    GatherRows,
    /// The maximum of each row: the value at `argmax_rows`.
    MaxRows,
    /// `sum_rows(x) / n` for each row, divided as `div` divides.
    MeanRows,
    /// 1.0 where `x > y`, else 0.0 (NaN compares false).
    Greater,
    /// 1.0 where `x < y`, else 0.0.
    Less,
    /// 1.0 where `x == y` (-0 equals +0), else 0.0.
    Equal,
    /// The axes reordered: output axis k is input axis `perm[k]` (rank ≤ 4).
    Permute(Vec<usize>),
}

/// Why an op cannot run on the given inputs. `input` indexes the operand at
/// fault so a caller can name its file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    #[error("unknown op '{0}'; known ops: {ops}", ops = OP_NAMES.join(", "))]
    Unknown(String),
    #[error("{op} takes {expected} input(s), got {got}")]
    Arity {
        op: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("{op}: {detail}")]
    Shape {
        op: &'static str,
        input: usize,
        detail: String,
    },
    #[error("{op}: attribute {detail}")]
    Attr { op: &'static str, detail: String },
}

/// Reads typed attributes and remembers which keys were used.
struct Attrs<'a> {
    op: &'static str,
    map: &'a BTreeMap<String, String>,
    used: Vec<&'static str>,
}

impl<'a> Attrs<'a> {
    fn raw(&mut self, key: &'static str) -> Option<&'a str> {
        self.used.push(key);
        let map: &'a BTreeMap<String, String> = self.map;
        map.get(key).map(String::as_str)
    }

    fn err(&self, detail: String) -> OpError {
        OpError::Attr {
            op: self.op,
            detail,
        }
    }

    fn f32(&mut self, key: &'static str, default: Option<f32>) -> Result<f32, OpError> {
        match (self.raw(key), default) {
            (Some(text), _) => parse_f32(text).ok_or_else(|| {
                self.err(format!(
                    "{key}={text:?} is not a float (write 0.5, -1e-3, inf, nan or bits as 0x3f000000)"
                ))
            }),
            (None, Some(d)) => Ok(d),
            (None, None) => Err(self.err(format!("{key} is required: --attr {key}=VALUE"))),
        }
    }

    fn u64(&mut self, key: &'static str, default: Option<u64>) -> Result<u64, OpError> {
        match (self.raw(key), default) {
            (Some(text), _) => text
                .trim()
                .parse()
                .map_err(|_| self.err(format!("{key}={text:?} is not a non-negative integer"))),
            (None, Some(d)) => Ok(d),
            (None, None) => Err(self.err(format!("{key} is required: --attr {key}=VALUE"))),
        }
    }

    fn usize(&mut self, key: &'static str) -> Result<usize, OpError> {
        let v = self.u64(key, None)?;
        usize::try_from(v)
            .ok()
            .filter(|&v| v <= MAX_TENSOR_ELEMENTS)
            .ok_or_else(|| self.err(format!("{key}={v} is over the tensor bound")))
    }

    fn shape(&mut self, key: &'static str) -> Result<Vec<usize>, OpError> {
        let text = self
            .raw(key)
            .ok_or_else(|| self.err(format!("{key} is required, e.g. --attr {key}=256,128")))?;
        let dims: Option<Vec<usize>> = if text.trim().is_empty() {
            Some(Vec::new())
        } else {
            text.split(',').map(|d| d.trim().parse().ok()).collect()
        };
        match dims {
            Some(d) if d.len() <= MAX_RANK => Ok(d),
            _ => Err(self.err(format!(
                "{key}={text:?} is not a shape (comma-separated sizes, at most {MAX_RANK})"
            ))),
        }
    }

    fn rand(&mut self) -> Result<RandSpec, OpError> {
        Ok(RandSpec {
            shape: self.shape("shape")?,
            seed: self.u64("seed", None)?,
            stream: u32::try_from(self.u64("stream", Some(0))?)
                .map_err(|_| self.err("stream must fit in 32 bits".into()))?,
            offset: self.u64("offset", Some(0))?,
        })
    }
}

impl Op {
    /// Parses an op name and its `key=value` attributes.
    pub fn parse(name: &str, attrs: &BTreeMap<String, String>) -> Result<Op, OpError> {
        let static_name = OP_NAMES
            .iter()
            .find(|n| **n == name)
            .ok_or_else(|| OpError::Unknown(name.to_string()))?;
        let mut a = Attrs {
            op: static_name,
            map: attrs,
            used: Vec::new(),
        };
        let op = match name {
            "matmul" => Op::Matmul(Transpose::None),
            "matmul_tn" => Op::Matmul(Transpose::A),
            "matmul_nt" => Op::Matmul(Transpose::B),
            "add" => Op::Add,
            "sub" => Op::Sub,
            "mul" => Op::Mul,
            "div" => Op::Div,
            "scale" => Op::Scale {
                alpha: a.f32("alpha", None)?,
            },
            "affine" => Op::Affine {
                alpha: a.f32("alpha", None)?,
                beta: a.f32("beta", None)?,
            },
            "axpby" => Op::Axpby {
                alpha: a.f32("alpha", None)?,
                beta: a.f32("beta", None)?,
            },
            "relu" => Op::Relu,
            "relu_backward" => Op::ReluBackward,
            "exp" => Op::Exp,
            "log" => Op::Log,
            "sqrt" => Op::Sqrt,
            "tanh" => Op::Tanh,
            "tanh_backward" => Op::TanhBackward,
            "sigmoid" => Op::Sigmoid,
            "erf" => Op::Erf,
            "where" => Op::Where,
            "gelu" => Op::Gelu,
            "gelu_backward" => Op::GeluBackward,
            "sum_rows" => Op::SumRows,
            "sum_cols" => Op::SumCols,
            "softmax_rows" => Op::SoftmaxRows,
            "log_softmax_rows" => Op::LogSoftmaxRows,
            "layernorm_rows" => Op::LayernormRows {
                eps: a.f32("eps", Some(1e-5))?,
            },
            "layernorm_backward" => Op::LayernormBackward {
                eps: a.f32("eps", Some(1e-5))?,
            },
            "layernorm_backward_gamma" => Op::LayernormBackwardGamma {
                eps: a.f32("eps", Some(1e-5))?,
            },
            "cross_entropy" => Op::CrossEntropy,
            "cross_entropy_backward" => Op::CrossEntropyBackward,
            "argmax_rows" => Op::ArgmaxRows,
            "bias_add" => Op::BiasAdd,
            "transpose" => Op::Transpose,
            "set_element" => Op::SetElement,
            "sgd_update" => Op::SgdUpdate {
                lr: a.f32("lr", None)?,
            },
            "adam_update" => Op::AdamUpdate {
                lr: a.f32("lr", None)?,
                eps: a.f32("eps", Some(1e-8))?,
            },
            "rand_uniform" => Op::RandUniform(a.rand()?),
            "rand_normal" => Op::RandNormal(a.rand()?),
            "zeros" => Op::Zeros(a.shape("shape")?),
            "full" => Op::Full {
                shape: a.shape("shape")?,
                value: a.f32("value", None)?,
            },
            "reshape" => Op::Reshape(a.shape("shape")?),
            "concat_rows" => Op::ConcatRows,
            "concat_cols" => Op::ConcatCols,
            "slice_rows" => Op::SliceRows {
                start: a.usize("start")?,
                len: a.usize("len")?,
            },
            "slice_cols" => Op::SliceCols {
                start: a.usize("start")?,
                len: a.usize("len")?,
            },
            "gather_rows" => Op::GatherRows,
            "max_rows" => Op::MaxRows,
            "mean_rows" => Op::MeanRows,
            "greater" => Op::Greater,
            "less" => Op::Less,
            "equal" => Op::Equal,
            "permute" => Op::Permute(a.shape("perm")?),
            _ => return Err(OpError::Unknown(name.to_string())),
        };
        if let Some(k) = attrs.keys().find(|k| !a.used.contains(&k.as_str())) {
            let allowed = if a.used.is_empty() {
                "it takes none".to_string()
            } else {
                format!("it takes {}", a.used.join(", "))
            };
            return Err(OpError::Attr {
                op: static_name,
                detail: format!("'{k}' is not an attribute of {static_name}: {allowed}"),
            });
        }
        Ok(op)
    }

    pub fn name(&self) -> &'static str {
        match self {
            Op::Matmul(Transpose::None) => "matmul",
            Op::Matmul(Transpose::A) => "matmul_tn",
            Op::Matmul(Transpose::B) => "matmul_nt",
            Op::Add => "add",
            Op::Sub => "sub",
            Op::Mul => "mul",
            Op::Div => "div",
            Op::Scale { .. } => "scale",
            Op::Affine { .. } => "affine",
            Op::Axpby { .. } => "axpby",
            Op::Relu => "relu",
            Op::ReluBackward => "relu_backward",
            Op::Exp => "exp",
            Op::Log => "log",
            Op::Sqrt => "sqrt",
            Op::Tanh => "tanh",
            Op::TanhBackward => "tanh_backward",
            Op::Sigmoid => "sigmoid",
            Op::Erf => "erf",
            Op::Where => "where",
            Op::Gelu => "gelu",
            Op::GeluBackward => "gelu_backward",
            Op::SumRows => "sum_rows",
            Op::SumCols => "sum_cols",
            Op::SoftmaxRows => "softmax_rows",
            Op::LogSoftmaxRows => "log_softmax_rows",
            Op::LayernormRows { .. } => "layernorm_rows",
            Op::LayernormBackward { .. } => "layernorm_backward",
            Op::LayernormBackwardGamma { .. } => "layernorm_backward_gamma",
            Op::CrossEntropy => "cross_entropy",
            Op::CrossEntropyBackward => "cross_entropy_backward",
            Op::ArgmaxRows => "argmax_rows",
            Op::BiasAdd => "bias_add",
            Op::Transpose => "transpose",
            Op::SetElement => "set_element",
            Op::SgdUpdate { .. } => "sgd_update",
            Op::AdamUpdate { .. } => "adam_update",
            Op::RandUniform(_) => "rand_uniform",
            Op::RandNormal(_) => "rand_normal",
            Op::Zeros(_) => "zeros",
            Op::Full { .. } => "full",
            Op::Reshape(_) => "reshape",
            Op::ConcatRows => "concat_rows",
            Op::ConcatCols => "concat_cols",
            Op::SliceRows { .. } => "slice_rows",
            Op::SliceCols { .. } => "slice_cols",
            Op::GatherRows => "gather_rows",
            Op::MaxRows => "max_rows",
            Op::MeanRows => "mean_rows",
            Op::Greater => "greater",
            Op::Less => "less",
            Op::Equal => "equal",
            Op::Permute(_) => "permute",
        }
    }

    pub fn arity(&self) -> usize {
        match self {
            Op::RandUniform(_) | Op::RandNormal(_) | Op::Zeros(_) | Op::Full { .. } => 0,
            Op::Scale { .. }
            | Op::Affine { .. }
            | Op::Relu
            | Op::Exp
            | Op::Log
            | Op::Sqrt
            | Op::Tanh
            | Op::Sigmoid
            | Op::Erf
            | Op::Gelu
            | Op::SumRows
            | Op::SumCols
            | Op::SoftmaxRows
            | Op::LogSoftmaxRows
            | Op::ArgmaxRows
            | Op::Transpose
            | Op::Reshape(_)
            | Op::SliceRows { .. }
            | Op::SliceCols { .. }
            | Op::MaxRows
            | Op::MeanRows
            | Op::Permute(_) => 1,
            Op::LayernormRows { .. }
            | Op::LayernormBackward { .. }
            | Op::SetElement
            | Op::Where => 3,
            Op::AdamUpdate { .. } => 5,
            _ => 2,
        }
    }

    /// The output shape, or why the inputs do not fit. An output over the
    /// tensor bound is refused here, before any backend allocates it (a
    /// 2^20×1 · 1×2^20 matmul would otherwise ask for 4 TiB).
    pub fn output_shape(&self, shapes: &[&[usize]]) -> Result<Vec<usize>, OpError> {
        let shape = self.unbounded_output_shape(shapes)?;
        let elements = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
        match elements {
            Some(n) if n <= MAX_TENSOR_ELEMENTS => Ok(shape),
            _ => Err(OpError::Shape {
                op: self.name(),
                input: 0,
                detail: format!(
                    "the output would be {}, over the bound of {MAX_TENSOR_ELEMENTS} elements",
                    show(&shape)
                ),
            }),
        }
    }

    fn unbounded_output_shape(&self, shapes: &[&[usize]]) -> Result<Vec<usize>, OpError> {
        let op = self.name();
        if shapes.len() != self.arity() {
            return Err(OpError::Arity {
                op,
                expected: self.arity(),
                got: shapes.len(),
            });
        }
        let shape_err = |input: usize, detail: String| OpError::Shape { op, input, detail };
        let matrix = |i: usize| -> Result<(usize, usize), OpError> {
            match shapes[i] {
                [r, c] => Ok((*r, *c)),
                s => Err(shape_err(
                    i,
                    format!(
                        "operand {} has shape {}; it must be a matrix (2 dimensions)",
                        i + 1,
                        show(s)
                    ),
                )),
            }
        };
        let same = |i: usize, j: usize| -> Result<(), OpError> {
            if shapes[i] == shapes[j] {
                return Ok(());
            }
            Err(shape_err(
                j,
                format!(
                    "operands {} and {} have shapes {} and {}, which differ; this op needs equal shapes (no broadcasting)",
                    i + 1,
                    j + 1,
                    show(shapes[i]),
                    show(shapes[j])
                ),
            ))
        };
        let vector = |i: usize, len: usize| -> Result<(), OpError> {
            if shapes[i] == [len] {
                return Ok(());
            }
            Err(shape_err(
                i,
                format!(
                    "operand {} has shape {}; it must be a vector of length {len}",
                    i + 1,
                    show(shapes[i])
                ),
            ))
        };
        let scalar = |i: usize| -> Result<(), OpError> {
            if shapes[i].iter().product::<usize>() == 1 {
                return Ok(());
            }
            Err(shape_err(
                i,
                format!(
                    "operand {} has shape {}; it must hold exactly one element",
                    i + 1,
                    show(shapes[i])
                ),
            ))
        };
        match self {
            Op::Matmul(t) => {
                let (a0, a1) = matrix(0)?;
                let (b0, b1) = matrix(1)?;
                let (m, ka, kb, n) = match t {
                    Transpose::None => (a0, a1, b0, b1),
                    Transpose::A => (a1, a0, b0, b1),
                    Transpose::B => (a0, a1, b1, b0),
                };
                if ka != kb {
                    return Err(shape_err(
                        1,
                        format!(
                            "shapes {} and {} do not fit: the inner dimensions are {ka} and {kb}",
                            show(shapes[0]),
                            show(shapes[1])
                        ),
                    ));
                }
                Ok(vec![m, n])
            }
            Op::Add
            | Op::Sub
            | Op::Mul
            | Op::Div
            | Op::Axpby { .. }
            | Op::ReluBackward
            | Op::TanhBackward
            | Op::GeluBackward
            | Op::SgdUpdate { .. }
            | Op::Greater
            | Op::Less
            | Op::Equal => {
                same(0, 1)?;
                Ok(shapes[0].to_vec())
            }
            Op::Where => {
                same(0, 1)?;
                same(0, 2)?;
                Ok(shapes[0].to_vec())
            }
            Op::Scale { .. }
            | Op::Affine { .. }
            | Op::Relu
            | Op::Exp
            | Op::Log
            | Op::Sqrt
            | Op::Tanh
            | Op::Sigmoid
            | Op::Erf
            | Op::Gelu => Ok(shapes[0].to_vec()),
            Op::SumRows | Op::ArgmaxRows => Ok(vec![matrix(0)?.0]),
            Op::SumCols => Ok(vec![matrix(0)?.1]),
            Op::SoftmaxRows | Op::LogSoftmaxRows => {
                matrix(0)?;
                Ok(shapes[0].to_vec())
            }
            Op::LayernormRows { .. } => {
                let (_, n) = matrix(0)?;
                vector(1, n)?;
                vector(2, n)?;
                Ok(shapes[0].to_vec())
            }
            Op::LayernormBackward { .. } => {
                let (_, n) = matrix(0)?;
                same(0, 1)?;
                vector(2, n)?;
                Ok(shapes[0].to_vec())
            }
            Op::LayernormBackwardGamma { .. } => {
                let (_, n) = matrix(0)?;
                same(0, 1)?;
                Ok(vec![n])
            }
            Op::CrossEntropy | Op::CrossEntropyBackward => {
                let (m, _) = matrix(0)?;
                vector(1, m)?;
                if m == 0 && matches!(self, Op::CrossEntropy) {
                    return Err(shape_err(
                        0,
                        "the mean over zero rows is undefined; give at least one row".into(),
                    ));
                }
                Ok(if matches!(self, Op::CrossEntropy) {
                    Vec::new()
                } else {
                    shapes[0].to_vec()
                })
            }
            Op::BiasAdd => {
                let (_, n) = matrix(0)?;
                vector(1, n)?;
                Ok(shapes[0].to_vec())
            }
            Op::Transpose => {
                let (m, n) = matrix(0)?;
                Ok(vec![n, m])
            }
            Op::SetElement => {
                scalar(1)?;
                scalar(2)?;
                Ok(shapes[0].to_vec())
            }
            Op::AdamUpdate { .. } => {
                same(0, 1)?;
                same(0, 2)?;
                scalar(3)?;
                scalar(4)?;
                Ok(shapes[0].to_vec())
            }
            Op::RandUniform(spec) | Op::RandNormal(spec) => Ok(spec.shape.clone()),
            Op::Zeros(shape) | Op::Full { shape, .. } => Ok(shape.clone()),
            Op::Reshape(shape) => {
                let count = |s: &[usize]| s.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
                if count(shape) != count(shapes[0]) {
                    return Err(shape_err(
                        0,
                        format!(
                            "operand 1 has shape {}, whose elements do not fill shape {}",
                            show(shapes[0]),
                            show(shape)
                        ),
                    ));
                }
                Ok(shape.clone())
            }
            Op::ConcatRows => {
                let (p, n) = matrix(0)?;
                let (q, n1) = matrix(1)?;
                if n != n1 {
                    return Err(shape_err(
                        1,
                        format!(
                            "shapes {} and {} do not stack: their rows are {n} and {n1} wide",
                            show(shapes[0]),
                            show(shapes[1])
                        ),
                    ));
                }
                Ok(vec![p + q, n])
            }
            Op::ConcatCols => {
                let (m, p) = matrix(0)?;
                let (m1, q) = matrix(1)?;
                if m != m1 {
                    return Err(shape_err(
                        1,
                        format!(
                            "shapes {} and {} do not join side by side: they have {m} and {m1} rows",
                            show(shapes[0]),
                            show(shapes[1])
                        ),
                    ));
                }
                Ok(vec![m, p + q])
            }
            Op::SliceRows { start, len } | Op::SliceCols { start, len } => {
                let (m, n) = matrix(0)?;
                let (axis, size) = if matches!(self, Op::SliceRows { .. }) {
                    ("rows", m)
                } else {
                    ("columns", n)
                };
                if start.checked_add(*len).is_none_or(|end| end > size) {
                    return Err(shape_err(
                        0,
                        format!(
                            "{axis} {start}..{} are not within the {size} {axis} of shape {}",
                            start.saturating_add(*len),
                            show(shapes[0])
                        ),
                    ));
                }
                Ok(if axis == "rows" {
                    vec![*len, n]
                } else {
                    vec![m, *len]
                })
            }
            Op::GatherRows => {
                let (_, n) = matrix(0)?;
                match shapes[1] {
                    [k] => Ok(vec![*k, n]),
                    s => Err(shape_err(
                        1,
                        format!(
                            "operand 2 has shape {}; the indices must be a vector",
                            show(s)
                        ),
                    )),
                }
            }
            Op::Permute(perm) => {
                let dims = shapes[0];
                let mut seen = [false; MAX_PERMUTE_RANK];
                let valid = perm.len() == dims.len()
                    && dims.len() <= MAX_PERMUTE_RANK
                    && perm
                        .iter()
                        .all(|&p| p < dims.len() && !std::mem::replace(&mut seen[p], true));
                if !valid {
                    return Err(shape_err(
                        0,
                        format!(
                            "perm {perm:?} is not a reordering of the {} axes of shape {} (rank at most {MAX_PERMUTE_RANK})",
                            dims.len(),
                            show(dims)
                        ),
                    ));
                }
                Ok(perm.iter().map(|&p| dims[p]).collect())
            }
            Op::MaxRows | Op::MeanRows => {
                let (m, n) = matrix(0)?;
                if n == 0 {
                    return Err(shape_err(
                        0,
                        format!(
                            "{} of rows of zero elements is undefined; give at least one column",
                            if matches!(self, Op::MaxRows) {
                                "the maximum"
                            } else {
                                "the mean"
                            }
                        ),
                    ));
                }
                Ok(vec![m])
            }
        }
    }

    /// `(m, k, n)` of a matmul-family op on checked shapes.
    pub fn matmul_dims(&self, shapes: &[&[usize]]) -> Result<(usize, usize, usize), OpError> {
        let out = self.output_shape(shapes)?;
        let k = match self {
            Op::Matmul(Transpose::A) => shapes[0][0],
            Op::Matmul(_) => shapes[0][1],
            _ => {
                return Err(OpError::Arity {
                    op: self.name(),
                    expected: 2,
                    got: shapes.len(),
                })
            }
        };
        Ok((out[0], k, out[1]))
    }

    /// Floating-point operations the op performs (for throughput figures).
    pub fn flops(&self, shapes: &[&[usize]]) -> u64 {
        let elems = |s: &[usize]| s.iter().product::<usize>() as u64;
        match (self, self.output_shape(shapes)) {
            (_, Err(_)) => 0,
            (Op::Matmul(_), Ok(out)) => {
                let k = self.matmul_dims(shapes).map_or(0, |d| d.1);
                2 * elems(&out) * k as u64
            }
            (Op::SumRows | Op::SumCols, Ok(_)) => elems(shapes[0]),
            (_, Ok(out)) => elems(&out),
        }
    }
}

/// Decimal (correctly rounded by Rust's parser), `inf`, `nan`, or exact bits
/// as `0x` followed by 8 hex digits.
fn parse_f32(text: &str) -> Option<f32> {
    let t = text.trim();
    if let Some(hex) = t.strip_prefix("0x") {
        if hex.len() == 8 {
            return u32::from_str_radix(hex, 16).ok().map(f32::from_bits);
        }
        return None;
    }
    t.parse::<f32>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_attrs() -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    #[test]
    fn matmul_shapes() {
        let mm = Op::parse("matmul", &no_attrs()).unwrap();
        assert_eq!(mm.output_shape(&[&[3, 4], &[4, 5]]).unwrap(), vec![3, 5]);
        assert!(matches!(
            mm.output_shape(&[&[3, 4], &[5, 4]]),
            Err(OpError::Shape { input: 1, .. })
        ));
        let tn = Op::parse("matmul_tn", &no_attrs()).unwrap();
        assert_eq!(tn.output_shape(&[&[4, 3], &[4, 5]]).unwrap(), vec![3, 5]);
        let nt = Op::parse("matmul_nt", &no_attrs()).unwrap();
        assert_eq!(nt.output_shape(&[&[3, 4], &[5, 4]]).unwrap(), vec![3, 5]);
        assert!(matches!(
            mm.output_shape(&[&[3], &[3, 1]]),
            Err(OpError::Shape { input: 0, .. })
        ));
        assert_eq!(mm.flops(&[&[2, 3], &[3, 4]]), 48);
        // Fine operands, an output far over the tensor bound.
        assert!(matches!(
            mm.output_shape(&[&[1 << 20, 1], &[1, 1 << 20]]),
            Err(OpError::Shape { .. })
        ));
    }

    #[test]
    fn attributes() {
        let mut attrs = BTreeMap::new();
        assert!(matches!(
            Op::parse("scale", &attrs),
            Err(OpError::Attr { .. })
        ));
        attrs.insert("alpha".to_string(), "0x3f000000".to_string());
        assert_eq!(
            Op::parse("scale", &attrs).unwrap(),
            Op::Scale { alpha: 0.5 }
        );
        attrs.insert("alpha".to_string(), "-2.5e-3".to_string());
        assert_eq!(
            Op::parse("scale", &attrs).unwrap(),
            Op::Scale { alpha: -2.5e-3 }
        );
        attrs.insert("alpha".to_string(), "two".to_string());
        assert!(Op::parse("scale", &attrs).is_err());
        assert!(matches!(
            Op::parse("add", &attrs),
            Err(OpError::Attr { .. })
        ));
        assert!(matches!(
            Op::parse("conv", &no_attrs()),
            Err(OpError::Unknown(_))
        ));
    }

    #[test]
    fn every_name_parses_to_itself() {
        for name in OP_NAMES {
            let keys: &[&str] = match *name {
                "scale" => &["alpha"],
                "affine" | "axpby" => &["alpha", "beta"],
                "sgd_update" | "adam_update" => &["lr"],
                "rand_uniform" | "rand_normal" => &["shape", "seed"],
                "zeros" | "reshape" => &["shape"],
                "full" => &["shape", "value"],
                "slice_rows" | "slice_cols" => &["start", "len"],
                "permute" => &["perm"],
                _ => &[],
            };
            let attrs = keys
                .iter()
                .map(|k| (k.to_string(), "1".to_string()))
                .collect();
            assert_eq!(Op::parse(name, &attrs).unwrap().name(), *name);
        }
    }
}
