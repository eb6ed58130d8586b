//! Each supported ONNX op onto Lockstep ops: the `Lowering` methods that
//! `lower_node` dispatches to. Each checks its node's shapes and
//! attributes itself and says why it refuses one, in words the error
//! prefixes with the node's name and op.

use crate::attrs::{attr_f, attr_i, attr_ints, attrs_known, input, output};
use crate::constant::{self, Constant, Data};
use crate::lower::{Lowering, Value, Why};
use crate::proto::NodeProto;
use crate::shapes::{
    axis_index, broadcast, check_expansion, derived, expand_const, float_text, is_row, reshape_to,
    shape_of, transpose_const,
};

impl Lowering {
    pub(crate) fn unary(&mut self, node: &NodeProto, kernel: &str) -> Result<(), Why> {
        let v = self.value(input(node, 0)?)?;
        let (x, shape) = self.tensor(&v)?;
        self.emit_value(kernel, vec![x], output(node, 0)?, shape, &[])
    }

    /// Gelu with approximate="none", in the order of ONNX's function body
    /// for it: `0.5 * x * (1 + erf(x / sqrt(2)))`, each step an op.
    pub(crate) fn exact_gelu(&mut self, node: &NodeProto) -> Result<(), Why> {
        let v = self.value(input(node, 0)?)?;
        let (x, shape) = self.tensor(&v)?;
        let out = output(node, 0)?;
        let step = |l: &mut Self, what: &str| l.names.assign(&format!("{out}.{what}"));
        let scaled = step(self, "x_sqrt1_2");
        // x / sqrt(2) as x * (1/sqrt(2)) would round differently; ONNX's
        // body divides, and so does this (by a shipped constant).
        let sqrt2 = self.ship_filled(&format!("{out}.sqrt2"), &shape, std::f32::consts::SQRT_2)?;
        self.emit("div", vec![x.clone(), sqrt2], scaled.clone(), &[]);
        let e = step(self, "erf");
        self.emit("erf", vec![scaled], e.clone(), &[]);
        let e1 = step(self, "erf_plus_1");
        self.emit(
            "affine",
            vec![e],
            e1.clone(),
            &[("alpha", "1".into()), ("beta", "1".into())],
        );
        let half_x = step(self, "half_x");
        self.emit("scale", vec![x], half_x.clone(), &[("alpha", "0.5".into())]);
        self.emit_value("mul", vec![half_x, e1], out, shape, &[])
    }

    /// A tensor of `shape` with every element `value`, made by a `full`
    /// step of the program (nothing shipped as a weight).
    pub(crate) fn ship_filled(
        &mut self,
        onnx: &str,
        shape: &[usize],
        value: f32,
    ) -> Result<String, Why> {
        check_expansion(onnx, shape)?;
        let name = self.names.assign(onnx);
        let dims = shape
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(",");
        self.emit(
            "full",
            Vec::new(),
            name.clone(),
            &[("shape", dims), ("value", float_text(value))],
        );
        Ok(name)
    }

    pub(crate) fn binary(&mut self, node: &NodeProto, kernel: &str) -> Result<(), Why> {
        let a = self.value(input(node, 0)?)?;
        let b = self.value(input(node, 1)?)?;
        let out = output(node, 0)?;
        let (sa, sb) = (shape_of(&a), shape_of(&b));
        if sa == sb {
            let (x, _) = self.tensor(&a)?;
            let (y, _) = self.tensor(&b)?;
            return self.emit_value(kernel, vec![x, y], out, sa, &[]);
        }
        let full = broadcast(&sa, &sb)
            .ok_or_else(|| format!("shapes {sa:?} and {sb:?} do not broadcast"))?;
        // x + b with b along the last axis of a tensor of rank > 2: the
        // same bias_add on its rows.
        if kernel == "add" && full.len() > 2 {
            let last = full[full.len() - 1];
            for (big, small) in [(&a, &b), (&b, &a)] {
                if shape_of(big) == full && is_row(&shape_of(small), last) {
                    let small = self.as_row(small, last)?;
                    let (x, m, n) = self.last_axis_rows(big, out)?;
                    let (bias, _) = self.tensor(&small)?;
                    return self.emit_on_rows(
                        "bias_add",
                        vec![x, bias],
                        vec![m, n],
                        full,
                        out,
                        &[],
                    );
                }
            }
        }
        // x + b with b along the last axis of a matrix: bias_add.
        if kernel == "add" && full.len() == 2 {
            for (big, small) in [(&a, &b), (&b, &a)] {
                if shape_of(big) == full && is_row(&shape_of(small), full[1]) {
                    let small = self.as_row(small, full[1])?;
                    let (x, _) = self.tensor(big)?;
                    let (bias, _) = self.tensor(&small)?;
                    // Addition is commutative in IEEE arithmetic, so the
                    // operand order ONNX gives does not matter here.
                    return self.emit_value("bias_add", vec![x, bias], out, full, &[]);
                }
            }
        }
        // Otherwise only a constant may be broadcast: it is repeated at
        // import time, which is data movement, not arithmetic.
        let a = self.expand(&a, &full)?;
        let b = self.expand(&b, &full)?;
        let (x, _) = self.tensor(&a)?;
        let (y, _) = self.tensor(&b)?;
        self.emit_value(kernel, vec![x, y], out, full, &[])
    }

    /// A value that is a row of `n` ([n], [1, n], ...) as shape [n]: a
    /// computed tensor must already be [n]; a constant is reshaped.
    pub(crate) fn as_row(&self, v: &Value, n: usize) -> Result<Value, Why> {
        match v {
            v if shape_of(v) == [n] => Ok(v.clone()),
            Value::Tensor { shape, .. } => Err(format!(
                "broadcasting a computed tensor of shape {shape:?} is not supported yet"
            )),
            Value::Const { onnx, c } => {
                let mut c = c.clone();
                if c.len() == 1 && n != 1 {
                    check_expansion(onnx, &[n])?;
                    c.data = match &c.data {
                        Data::F32(v) => Data::F32(vec![v[0]; n]),
                        Data::I64(v) => Data::I64(vec![v[0]; n]),
                    };
                }
                c.shape = vec![n];
                Ok(Value::Const {
                    onnx: derived(onnx, &c.shape),
                    c,
                })
            }
        }
    }

    /// `v` at shape `full`: unchanged if it has it; a constant repeated.
    pub(crate) fn expand(&self, v: &Value, full: &[usize]) -> Result<Value, Why> {
        match v {
            v if shape_of(v) == full => Ok(v.clone()),
            Value::Tensor { shape, .. } => Err(format!(
                "broadcasting a computed tensor of shape {shape:?} to {full:?} is not supported \
                 yet (only constants, and a row added to a matrix)"
            )),
            Value::Const { onnx, c } => {
                if broadcast(&c.shape, full).as_deref() != Some(full) {
                    return Err(format!(
                        "'{onnx}' of shape {:?} does not broadcast to {full:?}",
                        c.shape
                    ));
                }
                check_expansion(onnx, full)?;
                Ok(Value::Const {
                    onnx: derived(onnx, full),
                    c: expand_const(c, full),
                })
            }
        }
    }

    /// Where(condition, X, Y). The condition must be a constant mask (a
    /// bool initializer, read as 1.0 and 0.0) or a float32 tensor; any
    /// operand that is a constant is broadcast at import time.
    pub(crate) fn select(&mut self, node: &NodeProto) -> Result<(), Why> {
        let c = self.value(input(node, 0)?)?;
        let x = self.value(input(node, 1)?)?;
        let y = self.value(input(node, 2)?)?;
        let (sc, sx, sy) = (shape_of(&c), shape_of(&x), shape_of(&y));
        let full = broadcast(&sc, &sx)
            .and_then(|s| broadcast(&s, &sy))
            .ok_or_else(|| format!("shapes {sc:?}, {sx:?} and {sy:?} do not broadcast"))?;
        let c = self.expand(&c, &full)?;
        let x = self.expand(&x, &full)?;
        let y = self.expand(&y, &full)?;
        let (c, _) = self.tensor(&c)?;
        let (x, _) = self.tensor(&x)?;
        let (y, _) = self.tensor(&y)?;
        self.emit_value("where", vec![c, x, y], output(node, 0)?, full, &[])
    }

    pub(crate) fn matmul(&mut self, node: &NodeProto) -> Result<(), Why> {
        let a = self.value(input(node, 0)?)?;
        let b = self.value(input(node, 1)?)?;
        let (sa, sb) = (shape_of(&a), shape_of(&b));
        if sa.len() > 2 || sb.len() > 2 {
            return self.batched_matmul(&a, &b, output(node, 0)?);
        }
        if sa.len() != 2 || sb.len() != 2 {
            return Err(format!(
                "shapes {sa:?} × {sb:?}: a vector operand is not supported"
            ));
        }
        if sa[1] != sb[0] {
            return Err(format!("shapes {sa:?} × {sb:?} do not multiply"));
        }
        let (x, _) = self.tensor(&a)?;
        let (y, _) = self.tensor(&b)?;
        self.emit_value(
            "matmul",
            vec![x, y],
            output(node, 0)?,
            vec![sa[0], sb[1]],
            &[],
        )
    }

    pub(crate) fn gemm(&mut self, node: &NodeProto) -> Result<(), Why> {
        let alpha = attr_f(node, "alpha")?.unwrap_or(1.0);
        let beta = attr_f(node, "beta")?.unwrap_or(1.0);
        let ta = attr_i(node, "transA")?.unwrap_or(0) != 0;
        let tb = attr_i(node, "transB")?.unwrap_or(0) != 0;
        let a = self.value(input(node, 0)?)?;
        let mut b = self.value(input(node, 1)?)?;
        let (sa, mut sb) = (shape_of(&a), shape_of(&b));
        if sa.len() != 2 || sb.len() != 2 {
            return Err(format!(
                "Gemm takes matrices; the shapes are {sa:?} and {sb:?}"
            ));
        }
        let kernel = match (ta, tb) {
            (false, false) => "matmul",
            (true, false) => "matmul_tn",
            (false, true) => "matmul_nt",
            (true, true) => {
                // A constant B is transposed here (data movement); then
                // this is matmul_tn.
                match &b {
                    Value::Const { onnx, c } => {
                        let t = transpose_const(c).ok_or("B is not a float32 matrix")?;
                        b = Value::Const {
                            onnx: format!("{onnx}.T"),
                            c: t,
                        };
                        sb = shape_of(&b);
                        "matmul_tn"
                    }
                    Value::Tensor { .. } => {
                        return Err("transA=1 with transB=1 on a computed B is not supported".into())
                    }
                }
            }
        };
        let (m, k) = if ta { (sa[1], sa[0]) } else { (sa[0], sa[1]) };
        let (kb, n) = if tb && kernel != "matmul_tn" {
            (sb[1], sb[0])
        } else {
            (sb[0], sb[1])
        };
        if k != kb {
            return Err(format!(
                "A {sa:?} (transA={}) and B {:?} (transB={}) do not multiply",
                ta as u8,
                shape_of(&self.value(input(node, 1)?)?),
                tb as u8
            ));
        }
        let out = output(node, 0)?;
        let c = match node.input.get(2).filter(|n| !n.is_empty()) {
            Some(name) => Some(self.value(name)?),
            None => None,
        };
        let (x, _) = self.tensor(&a)?;
        let (y, _) = self.tensor(&b)?;
        let scaled = alpha != 1.0;
        let last = c.is_none() && !scaled;
        let mm = if last {
            self.out_name(out)
        } else {
            self.names.assign(&format!("{out}.mm"))
        };
        self.emit(kernel, vec![x, y], mm.clone(), &[]);
        let mut acc = mm;
        if scaled {
            let name = if c.is_none() {
                self.out_name(out)
            } else {
                self.names.assign(&format!("{out}.alpha"))
            };
            self.emit(
                "scale",
                vec![acc],
                name.clone(),
                &[("alpha", float_text(alpha))],
            );
            acc = name;
        }
        if let Some(c) = c {
            let sc = shape_of(&c);
            let full = [m, n];
            let (c_name, row) = if is_row(&sc, n) && sc != full {
                let row = self.as_row(&c, n)?;
                (self.tensor(&row)?.0, true)
            } else {
                let c = self.expand(&c, &full)?;
                (self.tensor(&c)?.0, false)
            };
            let c_name = if beta != 1.0 {
                let name = self.names.assign(&format!("{out}.beta"));
                self.emit(
                    "scale",
                    vec![c_name],
                    name.clone(),
                    &[("alpha", float_text(beta))],
                );
                name
            } else {
                c_name
            };
            let name = self.out_name(out);
            let kernel = if row { "bias_add" } else { "add" };
            self.emit(kernel, vec![acc, c_name], name.clone(), &[]);
            acc = name;
        }
        self.define(
            out,
            Value::Tensor {
                name: acc,
                shape: vec![m, n],
            },
        )
    }

    pub(crate) fn rows(&mut self, node: &NodeProto, kernel: &str) -> Result<(), Why> {
        let v = self.value(input(node, 0)?)?;
        let shape = shape_of(&v);
        let axis = attr_i(node, "axis")?.unwrap_or(-1);
        let rank = shape.len();
        if rank == 0 || axis_index(axis, rank)? != rank - 1 {
            return Err(format!(
                "only the last axis is supported (shape {shape:?}, axis {axis})"
            ));
        }
        let out = output(node, 0)?;
        let (x, m, n) = self.last_axis_rows(&v, out)?;
        self.emit_on_rows(kernel, vec![x], vec![m, n], shape, out, &[])
    }

    pub(crate) fn layernorm(&mut self, node: &NodeProto) -> Result<(), Why> {
        let v = self.value(input(node, 0)?)?;
        let shape = shape_of(&v);
        let axis = attr_i(node, "axis")?.unwrap_or(-1);
        let rank = shape.len();
        if rank == 0 || axis_index(axis, rank)? != rank - 1 {
            return Err(format!(
                "only the last axis is supported (shape {shape:?}, axis {axis})"
            ));
        }
        if attr_i(node, "stash_type")?.unwrap_or(1) != 1 {
            return Err("only stash_type=1 (float32) is supported".into());
        }
        if node.output.iter().skip(1).any(|o| !o.is_empty()) {
            return Err("the Mean and InvStdDev outputs are not supported".into());
        }
        let eps = attr_f(node, "epsilon")?.unwrap_or(1e-5);
        let n = shape[rank - 1];
        let gamma = self.value(input(node, 1)?)?;
        if !is_row(&shape_of(&gamma), n) {
            return Err(format!(
                "Scale has shape {:?}; it must be [{n}]",
                shape_of(&gamma)
            ));
        }
        let gamma = self.as_row(&gamma, n)?;
        let beta = match node.input.get(2).filter(|s| !s.is_empty()) {
            Some(name) => {
                let b = self.value(name)?;
                if !is_row(&shape_of(&b), n) {
                    return Err(format!("B has shape {:?}; it must be [{n}]", shape_of(&b)));
                }
                self.as_row(&b, n)?
            }
            // No B: Lockstep adds +0.0, which changes no value except a
            // -0.0 result, which becomes +0.0 (docs/onnx.md).
            None => Value::Const {
                onnx: format!("{}.zero_bias", output(node, 0)?),
                c: Constant {
                    shape: vec![n],
                    data: Data::F32(vec![0.0; n]),
                },
            },
        };
        let out = output(node, 0)?;
        let (x, m, _) = self.last_axis_rows(&v, out)?;
        let (g, _) = self.tensor(&gamma)?;
        let (b, _) = self.tensor(&beta)?;
        self.emit_on_rows(
            "layernorm_rows",
            vec![x, g, b],
            vec![m, n],
            shape,
            out,
            &[("eps", float_text(eps))],
        )
    }

    pub(crate) fn transpose(&mut self, node: &NodeProto) -> Result<(), Why> {
        let v = self.value(input(node, 0)?)?;
        let shape = shape_of(&v);
        let rank = shape.len();
        let perm = match attr_ints(node, "perm")? {
            Some(p) => p,
            None => (0..rank as i64).rev().collect(),
        };
        if perm.len() != rank {
            return Err(format!("perm {perm:?} does not fit rank {rank}"));
        }
        if perm.iter().enumerate().all(|(i, &p)| p == i as i64) {
            return self.define(output(node, 0)?, v);
        }
        if rank != 2 {
            let perm: Vec<usize> = perm
                .iter()
                .map(|&p| axis_index(p, rank))
                .collect::<Result<_, _>>()?;
            if rank > lockstep_limits::MAX_PERMUTE_RANK {
                return Err(format!(
                    "transposes of rank {rank} are not supported (at most {})",
                    lockstep_limits::MAX_PERMUTE_RANK
                ));
            }
            let to: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
            let (x, _) = self.tensor(&v)?;
            let text = perm
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(",");
            return self.emit_value("permute", vec![x], output(node, 0)?, to, &[("perm", text)]);
        }
        if let Value::Const { onnx, c } = &v {
            if let Some(t) = transpose_const(c) {
                let onnx = format!("{onnx}.T");
                return self.define(output(node, 0)?, Value::Const { onnx, c: t });
            }
        }
        let (x, _) = self.tensor(&v)?;
        self.emit_value(
            "transpose",
            vec![x],
            output(node, 0)?,
            vec![shape[1], shape[0]],
            &[],
        )
    }

    pub(crate) fn constant(&mut self, node: &NodeProto) -> Result<(), Why> {
        let out = output(node, 0)?;
        let attr = match node.attribute.as_slice() {
            [one] => one,
            _ => return Err("a Constant needs exactly one value attribute".into()),
        };
        let c = match attr.name() {
            "value" => {
                let t = attr.t.as_ref().ok_or("its 'value' holds no tensor")?;
                constant::read(t)?
            }
            "value_float" => Constant {
                shape: vec![],
                data: Data::F32(vec![attr.f()]),
            },
            "value_floats" => Constant {
                shape: vec![attr.floats.len()],
                data: Data::F32(attr.floats.clone()),
            },
            "value_int" => Constant {
                shape: vec![],
                data: Data::I64(vec![attr.i()]),
            },
            "value_ints" => Constant {
                shape: vec![attr.ints.len()],
                data: Data::I64(attr.ints.clone()),
            },
            other => return Err(format!("attribute '{other}' is not supported")),
        };
        self.define(
            out,
            Value::Const {
                onnx: out.to_string(),
                c,
            },
        )
    }

    pub(crate) fn reshape(&mut self, node: &NodeProto) -> Result<(), Why> {
        let op = node.op_type();
        let v = self.value(input(node, 0)?)?;
        let from = shape_of(&v);
        let count: usize = from.iter().product();
        let to: Vec<usize> = match op {
            "Flatten" => {
                attrs_known(node, &["axis"])?;
                let axis = axis_index(attr_i(node, "axis")?.unwrap_or(1), from.len() + 1)?;
                vec![from[..axis].iter().product(), from[axis..].iter().product()]
            }
            "Reshape" => {
                attrs_known(node, &["allowzero"])?;
                let allow_zero = attr_i(node, "allowzero")?.unwrap_or(0) != 0;
                let spec = self.ints(input(node, 1)?)?;
                reshape_to(&from, &spec, allow_zero)?
            }
            "Squeeze" => {
                attrs_known(node, &[])?;
                let axes = match node.input.get(1).filter(|s| !s.is_empty()) {
                    Some(name) => Some(self.ints(name)?),
                    None => None,
                };
                let mut drop = vec![false; from.len()];
                match axes {
                    Some(axes) => {
                        for a in axes {
                            let a = axis_index(a, from.len())?;
                            if from[a] != 1 {
                                return Err(format!("axis {a} of {from:?} is not 1"));
                            }
                            drop[a] = true;
                        }
                    }
                    None => drop.iter_mut().zip(&from).for_each(|(d, &n)| *d = n == 1),
                }
                from.iter()
                    .zip(&drop)
                    .filter(|(_, &d)| !d)
                    .map(|(&n, _)| n)
                    .collect()
            }
            _ => {
                attrs_known(node, &[])?;
                let axes = self.ints(input(node, 1)?)?;
                let rank = from.len() + axes.len();
                let mut ones = vec![false; rank];
                for a in axes {
                    let a = axis_index(a, rank)?;
                    if std::mem::replace(&mut ones[a], true) {
                        return Err(format!("axis {a} is given twice"));
                    }
                }
                let mut rest = from.iter();
                ones.iter()
                    .map(|&one| if one { 1 } else { *rest.next().unwrap_or(&1) })
                    .collect()
            }
        };
        if to.iter().product::<usize>() != count {
            return Err(format!("cannot reshape {from:?} to {to:?}"));
        }
        let out = output(node, 0)?;
        match v {
            Value::Const { onnx, mut c } => {
                c.shape = to;
                self.define(out, Value::Const { onnx, c })
            }
            Value::Tensor { .. } if to == from => self.define(out, v),
            Value::Tensor { .. } => {
                let (x, _) = self.tensor(&v)?;
                self.emit_reshape(x, &from, to, out)
            }
        }
    }

    /// An int64 constant's values (shapes and axes must be known at
    /// import time).
    pub(crate) fn ints(&self, onnx: &str) -> Result<Vec<i64>, Why> {
        match self.value(onnx)? {
            Value::Const {
                c: Constant {
                    data: Data::I64(v), ..
                },
                ..
            } => Ok(v),
            _ => Err(format!(
                "'{onnx}' must be an int64 constant (shapes are fixed at import)"
            )),
        }
    }
}
