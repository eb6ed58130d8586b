//! The op set and its shape rules.

use std::collections::BTreeMap;

use lockstep_kernels::reference::matmul::Transpose;
use lockstep_limits::MAX_TENSOR_ELEMENTS;
use lockstep_tensor::shape_string as show;

/// Every op name `lockstep run` accepts.
pub const OP_NAMES: &[&str] = &[
    "matmul",
    "matmul_tn",
    "matmul_nt",
    "add",
    "sub",
    "mul",
    "scale",
    "relu",
    "relu_backward",
    "sum_rows",
    "sum_cols",
];

/// One operation with its attributes. Definitions: docs/float-model.md.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Op {
    /// `matmul` (A m×k · B k×n), `matmul_tn` (Aᵀ·B, A stored k×m),
    /// `matmul_nt` (A·Bᵀ, B stored n×k).
    Matmul(Transpose),
    Add,
    Sub,
    Mul,
    /// `x * alpha`; attribute `alpha`.
    Scale {
        alpha: f32,
    },
    Relu,
    /// Inputs: upstream gradient `dy`, forward input `x` (same shape).
    ReluBackward,
    /// m×n → m: the sum of each row.
    SumRows,
    /// m×n → n: the sum of each column.
    SumCols,
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

impl Op {
    /// Parses an op name and its `key=value` attributes.
    pub fn parse(name: &str, attrs: &BTreeMap<String, String>) -> Result<Op, OpError> {
        let op = match name {
            "matmul" => Op::Matmul(Transpose::None),
            "matmul_tn" => Op::Matmul(Transpose::A),
            "matmul_nt" => Op::Matmul(Transpose::B),
            "add" => Op::Add,
            "sub" => Op::Sub,
            "mul" => Op::Mul,
            "scale" => {
                let text = attrs.get("alpha").ok_or_else(|| OpError::Attr {
                    op: "scale",
                    detail: "alpha is required: --attr alpha=VALUE".into(),
                })?;
                Op::Scale {
                    alpha: parse_f32(text).ok_or_else(|| OpError::Attr {
                        op: "scale",
                        detail: format!(
                            "alpha={text:?} is not a float (write 0.5, -1e-3, inf, nan or bits as 0x3f000000)"
                        ),
                    })?,
                }
            }
            "relu" => Op::Relu,
            "relu_backward" => Op::ReluBackward,
            "sum_rows" => Op::SumRows,
            "sum_cols" => Op::SumCols,
            other => return Err(OpError::Unknown(other.to_string())),
        };
        let allowed: &[&str] = if matches!(op, Op::Scale { .. }) {
            &["alpha"]
        } else {
            &[]
        };
        if let Some(k) = attrs.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(OpError::Attr {
                op: op.name(),
                detail: format!("'{k}' is not an attribute of {}", op.name()),
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
            Op::Scale { .. } => "scale",
            Op::Relu => "relu",
            Op::ReluBackward => "relu_backward",
            Op::SumRows => "sum_rows",
            Op::SumCols => "sum_cols",
        }
    }

    pub fn arity(&self) -> usize {
        match self {
            Op::Scale { .. } | Op::Relu | Op::SumRows | Op::SumCols => 1,
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
            Op::Add | Op::Sub | Op::Mul | Op::ReluBackward => {
                if shapes[0] != shapes[1] {
                    return Err(shape_err(
                        1,
                        format!(
                            "shapes {} and {} differ; element-wise ops need equal shapes (no broadcasting)",
                            show(shapes[0]),
                            show(shapes[1])
                        ),
                    ));
                }
                Ok(shapes[0].to_vec())
            }
            Op::Scale { .. } | Op::Relu => Ok(shapes[0].to_vec()),
            Op::SumRows => Ok(vec![matrix(0)?.0]),
            Op::SumCols => Ok(vec![matrix(0)?.1]),
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
        let mut attrs = BTreeMap::new();
        for name in OP_NAMES {
            attrs.clear();
            if *name == "scale" {
                attrs.insert("alpha".into(), "1".into());
            }
            assert_eq!(Op::parse(name, &attrs).unwrap().name(), *name);
        }
    }
}
