//! Data movement and row reductions: Reshape of computed tensors, Concat,
//! Slice, Gather, ReduceMean and ReduceMax onto `reshape`, `concat_rows`,
//! `concat_cols`, `slice_rows`, `slice_cols`, `gather_rows`, `mean_rows`
//! and `max_rows`. Vectors travel as 1×n matrices through the matrix ops.

use crate::attrs::{attr_i, attr_ints, input, output};
use crate::constant::{Constant, Data};
use crate::lower::{Lowering, Value, Why};
use crate::proto::NodeProto;
use crate::shapes::{axis_index, shape_of};

/// The most 2-D matmuls one batched MatMul may become (each is a slice of
/// either operand, a matmul and a stacking step).
pub(crate) const MATMUL_BATCH_MAX: usize = 256;

fn shape_text(shape: &[usize]) -> String {
    shape
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

impl Lowering {
    /// `v` (rank ≥ 1) as the matrix of its last axis: (name, m, n), where
    /// m is the product of the other dims (a reshape when rank ≠ 2).
    pub(crate) fn last_axis_rows(
        &mut self,
        v: &Value,
        out: &str,
    ) -> Result<(String, usize, usize), Why> {
        let (x, shape) = self.tensor(v)?;
        let (&n, lead) = shape
            .split_last()
            .ok_or("a scalar has no last axis to work along")?;
        let m: usize = lead.iter().product();
        let x = self.reshaped(x, &shape, &[m, n], out);
        Ok((x, m, n))
    }

    /// Emits `kernel` on the rows of `x` (m×n) writing ONNX value `out`
    /// of `shape` (the op's output, m×n or m, reshaped back to `shape`).
    pub(crate) fn emit_on_rows(
        &mut self,
        kernel: &str,
        inputs: Vec<String>,
        produced: Vec<usize>,
        shape: Vec<usize>,
        out: &str,
        attrs: &[(&str, String)],
    ) -> Result<(), Why> {
        if produced == shape {
            return self.emit_value(kernel, inputs, out, shape, attrs);
        }
        let name = self.step_name(out, "rows");
        self.emit(kernel, inputs, name.clone(), attrs);
        self.emit_reshape(name, &produced, shape, out)
    }

    /// MatMul of rank > 2: `[..., M, K] × [K, N]` as one matmul of the
    /// stacked rows; `[B..., M, K] × [B..., K, N]` (the same batch dims, or
    /// B's all 1) one matmul per batch, its rows sliced out and the
    /// results stacked. Every element is the same dot product in the same
    /// order as a 2-D matmul gives it.
    pub(crate) fn batched_matmul(&mut self, a: &Value, b: &Value, out: &str) -> Result<(), Why> {
        let (sa, sb) = (shape_of(a), shape_of(b));
        if sa.len() < 2 || sb.len() < 2 {
            return Err(format!(
                "shapes {sa:?} × {sb:?}: a vector operand is not supported"
            ));
        }
        let (m, k) = (sa[sa.len() - 2], sa[sa.len() - 1]);
        let (kb, n) = (sb[sb.len() - 2], sb[sb.len() - 1]);
        if k != kb {
            return Err(format!("shapes {sa:?} × {sb:?} do not multiply"));
        }
        let batch_a = &sa[..sa.len() - 2];
        let batch_b = &sb[..sb.len() - 2];
        let nb: usize = batch_a.iter().product();
        let mut to = batch_a.to_vec();
        to.extend([m, n]);
        let (x, _) = self.tensor(a)?;
        let (y, _) = self.tensor(b)?;
        if batch_b.iter().all(|&d| d == 1) && batch_b.len() <= batch_a.len() {
            let x = self.reshaped(x, &sa, &[nb * m, k], out);
            let y = self.reshaped(y, &sb, &[k, n], out);
            return self.emit_on_rows("matmul", vec![x, y], vec![nb * m, n], to, out, &[]);
        }
        if batch_a != batch_b {
            return Err(format!(
                "shapes {sa:?} × {sb:?}: batch dims must be equal (or B's all 1)"
            ));
        }
        if nb > MATMUL_BATCH_MAX {
            return Err(format!(
                "a batch of {nb} matmuls is over the bound of {MATMUL_BATCH_MAX}"
            ));
        }
        let x = self.reshaped(x, &sa, &[nb * m, k], out);
        let y = self.reshaped(y, &sb, &[nb * k, n], out);
        let mut stacked: Option<String> = None;
        for i in 0..nb {
            let xi = self.step_name(out, "a");
            self.emit(
                "slice_rows",
                vec![x.clone()],
                xi.clone(),
                &[("start", (i * m).to_string()), ("len", m.to_string())],
            );
            let yi = self.step_name(out, "b");
            self.emit(
                "slice_rows",
                vec![y.clone()],
                yi.clone(),
                &[("start", (i * k).to_string()), ("len", k.to_string())],
            );
            let ci = self.step_name(out, "mm");
            self.emit("matmul", vec![xi, yi], ci.clone(), &[]);
            stacked = Some(match stacked {
                None => ci,
                Some(acc) => {
                    let s = self.step_name(out, "stack");
                    self.emit("concat_rows", vec![acc, ci], s.clone(), &[]);
                    s
                }
            });
        }
        let c = stacked.ok_or("an empty batch")?;
        self.emit_reshape(c, &[nb * m, n], to, out)
    }

    /// Split along the last axis (any rank) or along axis 0 of a matrix,
    /// into the sizes the `split` input gives, or `num_outputs` equal
    /// parts (the last smaller when they do not divide evenly, as ONNX
    /// says), or as many equal parts as there are outputs.
    pub(crate) fn split(&mut self, node: &NodeProto) -> Result<(), Why> {
        let v = self.value(input(node, 0)?)?;
        let shape = shape_of(&v);
        let rank = shape.len();
        if rank == 0 {
            return Err("a scalar cannot be split".into());
        }
        let axis = axis_index(attr_i(node, "axis")?.unwrap_or(0), rank)?;
        let outs: Vec<&str> = node.output.iter().map(String::as_str).collect();
        let dim = shape[axis];
        let sizes: Vec<usize> = match node.input.get(1).filter(|s| !s.is_empty()) {
            Some(name) => self
                .ints(name)?
                .iter()
                .map(|&s| usize::try_from(s).map_err(|_| format!("split size {s} is negative")))
                .collect::<Result<_, _>>()?,
            None => {
                let parts = match attr_i(node, "num_outputs")? {
                    Some(p) => usize::try_from(p).map_err(|_| "num_outputs is negative")?,
                    None => outs.len(),
                };
                if parts == 0 {
                    return Err("it splits into no parts".into());
                }
                let each = dim.div_ceil(parts);
                (0..parts)
                    .map(|i| each.min(dim.saturating_sub(i * each)))
                    .collect()
            }
        };
        if sizes.len() != outs.len() || sizes.iter().sum::<usize>() != dim {
            return Err(format!(
                "sizes {sizes:?} do not split axis {axis} of {shape:?} into {} outputs",
                outs.len()
            ));
        }
        let last = axis == rank - 1;
        if !(last || (rank == 2 && axis == 0)) {
            return Err(format!(
                "only the last axis, or the rows of a matrix, are split (shape {shape:?}, axis {axis})"
            ));
        }
        let first = outs.first().copied().ok_or("it has no outputs")?;
        let (x, m, n) = if last {
            self.last_axis_rows(&v, first)?
        } else {
            let (x, _) = self.tensor(&v)?;
            (x, shape[0], shape[1])
        };
        let mut start = 0;
        for (out, &size) in outs.iter().zip(&sizes) {
            let mut to = shape.clone();
            to[axis] = size;
            let (kernel, produced) = if last {
                ("slice_cols", vec![m, size])
            } else {
                ("slice_rows", vec![size, n])
            };
            let attrs = [("start", start.to_string()), ("len", size.to_string())];
            self.emit_on_rows(kernel, vec![x.clone()], produced, to, out, &attrs)?;
            start += size;
        }
        Ok(())
    }

    /// Pow with a constant integer exponent 1 to 4, as products in a fixed
    /// order (x·x, (x·x)·x, (x·x)·(x·x)): each rounds, where a pow
    /// function would round once, so it stays within the tolerance of a
    /// correctly rounded pow, not bit for bit with one.
    pub(crate) fn pow(&mut self, node: &NodeProto) -> Result<(), Why> {
        let v = self.value(input(node, 0)?)?;
        let e = self.value(input(node, 1)?)?;
        let exponent = match &e {
            Value::Const { c, .. } => match (&c.data, c.shape.iter().product::<usize>()) {
                (Data::F32(d), 1) => Some(d[0]),
                (Data::I64(d), 1) => Some(d[0] as f32),
                _ => None,
            },
            Value::Tensor { .. } => None,
        };
        let p = match exponent {
            Some(p) if (1.0..=4.0).contains(&p) && p.fract() == 0.0 => p as u32,
            _ => return Err("only a constant integer exponent from 1 to 4 is supported".into()),
        };
        let out = output(node, 0)?;
        let (x, shape) = self.tensor(&v)?;
        if p == 1 {
            return self.define(out, Value::Tensor { name: x, shape });
        }
        if p == 2 {
            return self.emit_value("mul", vec![x.clone(), x], out, shape, &[]);
        }
        let sq = self.step_name(out, "sq");
        self.emit("mul", vec![x.clone(), x.clone()], sq.clone(), &[]);
        let other = if p == 3 { x } else { sq.clone() };
        self.emit_value("mul", vec![sq, other], out, shape, &[])
    }

    /// A fresh program name for a step of node output `out`.
    fn step_name(&mut self, out: &str, what: &str) -> String {
        self.names.assign(&format!("{out}.{what}"))
    }

    /// `x` reshaped to `to` under a fresh name (no step when it already is).
    fn reshaped(&mut self, x: String, from: &[usize], to: &[usize], out: &str) -> String {
        if from == to {
            return x;
        }
        let name = self.step_name(out, "reshape");
        self.emit(
            "reshape",
            vec![x],
            name.clone(),
            &[("shape", shape_text(to))],
        );
        name
    }

    /// Writes ONNX value `out` as `x` (of `shape`) reshaped to `to`.
    pub(crate) fn emit_reshape(
        &mut self,
        x: String,
        shape: &[usize],
        to: Vec<usize>,
        out: &str,
    ) -> Result<(), Why> {
        if shape == to.as_slice() {
            return self.define(out, Value::Tensor { name: x, shape: to });
        }
        let attr = shape_text(&to);
        self.emit_value("reshape", vec![x], out, to, &[("shape", attr)])
    }

    /// Concat of vectors (axis 0) or matrices (axis 0 or 1), folded
    /// left to right two at a time.
    pub(crate) fn concat(&mut self, node: &NodeProto) -> Result<(), Why> {
        let axis = attr_i(node, "axis")?.ok_or("it has no 'axis' attribute")?;
        let out = output(node, 0)?;
        let values = node
            .input
            .iter()
            .map(|n| self.value(n))
            .collect::<Result<Vec<_>, _>>()?;
        let first = values.first().ok_or("it has no inputs")?;
        let rank = shape_of(first).len();
        if !(rank == 1 || rank == 2) {
            return Err(format!(
                "only vectors and matrices are supported (rank {rank})"
            ));
        }
        let axis = axis_index(axis, rank)?;
        let cols = rank == 1 || axis == 1;
        let mut joined: Option<(String, Vec<usize>)> = None;
        let last = values.len() - 1;
        for (i, v) in values.iter().enumerate() {
            let (x, shape) = self.tensor(v)?;
            if shape.len() != rank {
                return Err(format!(
                    "input {i} has rank {}, input 0 rank {rank}",
                    shape.len()
                ));
            }
            let m = if rank == 1 { vec![1, shape[0]] } else { shape };
            let x = self.reshaped(x, if rank == 1 { &m[1..] } else { &m }, &m, out);
            joined = Some(match joined {
                None => (x, m),
                Some((a, sa)) => {
                    let (keep, grow) = if cols { (0, 1) } else { (1, 0) };
                    if sa[keep] != m[keep] {
                        return Err(format!(
                            "input {i} has shape {m:?}, which does not join {sa:?} along axis {axis}"
                        ));
                    }
                    let mut s = sa.clone();
                    s[grow] += m[grow];
                    let kernel = if cols { "concat_cols" } else { "concat_rows" };
                    if i == last && rank == 2 {
                        return self.emit_value(kernel, vec![a, x], out, s, &[]);
                    }
                    let name = self.step_name(out, "concat");
                    self.emit(kernel, vec![a, x], name.clone(), &[]);
                    (name, s)
                }
            });
        }
        let (x, s) = joined.ok_or("it has no inputs")?;
        let to = if rank == 1 { vec![s[1]] } else { s.clone() };
        self.emit_reshape(x, &s, to, out)
    }

    /// Slice with constant starts and ends, step 1, of a vector or matrix.
    pub(crate) fn slice(&mut self, node: &NodeProto) -> Result<(), Why> {
        let out = output(node, 0)?;
        let v = self.value(input(node, 0)?)?;
        let shape = shape_of(&v);
        let rank = shape.len();
        if !(rank == 1 || rank == 2) {
            return Err(format!(
                "only vectors and matrices are supported (shape {shape:?})"
            ));
        }
        let starts = self.ints(input(node, 1)?)?;
        let ends = self.ints(input(node, 2)?)?;
        let optional = |i: usize| node.input.get(i).filter(|s| !s.is_empty());
        let axes = match optional(3) {
            Some(name) => self.ints(name)?,
            None => (0..starts.len() as i64).collect(),
        };
        let steps = match optional(4) {
            Some(name) => self.ints(name)?,
            None => vec![1; starts.len()],
        };
        if starts.len() != ends.len() || axes.len() != starts.len() || steps.len() != starts.len() {
            return Err("starts, ends, axes and steps differ in length".into());
        }
        let (x, _) = self.tensor(&v)?;
        let m = if rank == 1 {
            vec![1, shape[0]]
        } else {
            shape.clone()
        };
        let mut x = self.reshaped(x, &shape, &m, out);
        let mut cur = m;
        let mut seen = [false; 2];
        for k in 0..starts.len() {
            if steps[k] != 1 {
                return Err(format!("step {} is not supported (only 1)", steps[k]));
            }
            let axis = axis_index(axes[k], rank)?;
            if std::mem::replace(&mut seen[axis], true) {
                return Err(format!("axis {axis} is sliced twice"));
            }
            // As a matrix: a vector's only axis is its columns.
            let along = if rank == 1 { 1 } else { axis };
            let dim = cur[along] as i64;
            // ONNX: negative counts from the end, then clamped to [0, dim].
            let clampi = |i: i64| (if i < 0 { i.saturating_add(dim) } else { i }).clamp(0, dim);
            let (start, end) = (clampi(starts[k]), clampi(ends[k]));
            let len = (end - start).max(0) as usize;
            let start = start as usize;
            if start == 0 && len == cur[along] {
                continue;
            }
            let kernel = if along == 0 {
                "slice_rows"
            } else {
                "slice_cols"
            };
            let name = self.step_name(out, "slice");
            self.emit(
                kernel,
                vec![x],
                name.clone(),
                &[("start", start.to_string()), ("len", len.to_string())],
            );
            x = name;
            cur[along] = len;
        }
        let to = if rank == 1 { vec![cur[1]] } else { cur.clone() };
        self.emit_reshape(x, &cur, to, out)
    }

    /// Gather along axis 0 of a matrix (an embedding table): indices are
    /// int64 constants (negative ones count from the end, as ONNX says)
    /// or an int64 graph input, given to the program as float32.
    pub(crate) fn gather(&mut self, node: &NodeProto) -> Result<(), Why> {
        let out = output(node, 0)?;
        let axis = attr_i(node, "axis")?.unwrap_or(0);
        let table = self.value(input(node, 0)?)?;
        let tshape = shape_of(&table);
        if tshape.len() != 2 {
            return Err(format!(
                "only rows of a matrix are gathered (data shape {tshape:?})"
            ));
        }
        if axis_index(axis, 2)? != 0 {
            return Err("only axis 0 (rows) is supported".into());
        }
        let (v, d) = (tshape[0], tshape[1]);
        let indices = self.value(input(node, 1)?)?;
        let ishape = shape_of(&indices);
        let k: usize = ishape.iter().product();
        let index = match &indices {
            Value::Const {
                onnx,
                c:
                    Constant {
                        data: Data::I64(ix),
                        ..
                    },
            } => {
                let mut f = Vec::with_capacity(ix.len());
                for &i in ix {
                    let j = if i < 0 { i + v as i64 } else { i };
                    if !(0..v as i64).contains(&j) {
                        return Err(format!("index {i} is outside the {v} rows of the data"));
                    }
                    f.push(j as f32);
                }
                let c = Constant {
                    shape: vec![k],
                    data: Data::F32(f),
                };
                self.ship(&format!("{onnx}.rows"), &c)?
            }
            // The one reader of an int64 graph input: read by name, not
            // through `tensor`, which refuses it to every other op.
            Value::Tensor { name, .. } if self.index_inputs.contains(name) => {
                self.reshaped(name.clone(), &ishape, &[k], out)
            }
            _ => return Err("the indices must be int64: a constant or a graph input".into()),
        };
        let (t, _) = self.tensor(&table)?;
        let mut to = ishape.clone();
        to.push(d);
        if to == [k, d] {
            return self.emit_value("gather_rows", vec![t, index], out, to, &[]);
        }
        let name = self.step_name(out, "gather");
        self.emit("gather_rows", vec![t, index], name.clone(), &[]);
        self.emit_reshape(name, &[k, d], to, out)
    }

    /// ReduceMean and ReduceMax over the last axis of a matrix.
    pub(crate) fn reduce_rows(&mut self, node: &NodeProto) -> Result<(), Why> {
        let out = output(node, 0)?;
        let v = self.value(input(node, 0)?)?;
        let shape = shape_of(&v);
        let axes = match (
            attr_ints(node, "axes")?,
            node.input.get(1).filter(|s| !s.is_empty()),
        ) {
            (Some(a), _) => a,
            (None, Some(name)) => self.ints(name)?,
            (None, None) => return Err("reducing over every axis is not supported".into()),
        };
        let rank = shape.len();
        if rank == 0 || axes.len() != 1 || axis_index(axes[0], rank)? != rank - 1 {
            return Err(format!(
                "only the last axis is supported (shape {shape:?}, axes {axes:?})"
            ));
        }
        let keep = attr_i(node, "keepdims")?.unwrap_or(1) != 0;
        let kernel = if node.op_type() == "ReduceMax" {
            "max_rows"
        } else {
            "mean_rows"
        };
        let (x, m, _) = self.last_axis_rows(&v, out)?;
        let mut to = shape[..rank - 1].to_vec();
        if keep {
            to.push(1);
        }
        self.emit_on_rows(kernel, vec![x], vec![m], to, out, &[])
    }
}
