//! Shapes and constants at import time: NumPy broadcasting, ONNX's
//! Reshape rules, and the data movement the importer does on constants
//! (repeat, transpose). No float arithmetic happens here.

use lockstep_limits::MAX_ONNX_EXPANDED_ELEMENTS;

use crate::constant::{Constant, Data};
use crate::lower::{Value, Why};

pub(crate) fn shape_of(v: &Value) -> Vec<usize> {
    match v {
        Value::Tensor { shape, .. } => shape.clone(),
        Value::Const { c, .. } => c.shape.clone(),
    }
}

/// Whether `shape` is a row of `n` values: [n], [1, n], [1, 1, n], ...,
/// or a single value.
pub(crate) fn is_row(shape: &[usize], n: usize) -> bool {
    let count: usize = shape.iter().product();
    count == 1 || (shape.last() == Some(&n) && count == n)
}

/// NumPy's broadcast of two shapes.
pub(crate) fn broadcast(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let at = |s: &[usize], i: usize| {
        let pad = rank - s.len();
        if i < pad {
            1
        } else {
            s[i - pad]
        }
    };
    (0..rank)
        .map(|i| match (at(a, i), at(b, i)) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}

/// Whether repeating a constant to `full` stays within
/// `MAX_ONNX_EXPANDED_ELEMENTS` (a small model must not make the importer
/// allocate gigabytes).
pub(crate) fn check_expansion(onnx: &str, full: &[usize]) -> Result<(), Why> {
    let count = full.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    match count {
        Some(n) if n <= MAX_ONNX_EXPANDED_ELEMENTS => Ok(()),
        _ => Err(format!(
            "broadcasting '{onnx}' to {full:?} is over {MAX_ONNX_EXPANDED_ELEMENTS} elements"
        )),
    }
}

/// `c` repeated to `full` (which `c.shape` broadcasts to: the caller
/// checked, and that `full` is within the expansion bound).
pub(crate) fn expand_const(c: &Constant, full: &[usize]) -> Constant {
    let rank = full.len();
    assert!(
        c.shape.len() <= rank,
        "{:?} does not broadcast to {full:?}",
        c.shape
    );
    let pad = rank - c.shape.len();
    let src: Vec<usize> = std::iter::repeat_n(1, pad)
        .chain(c.shape.iter().copied())
        .collect();
    // Row-major strides of the source, 0 along broadcast axes.
    let mut strides = vec![0usize; rank];
    let mut s = 1;
    for i in (0..rank).rev() {
        strides[i] = if src[i] == 1 { 0 } else { s };
        s *= src[i];
    }
    let count: usize = full.iter().product();
    let index = |flat: usize| {
        let mut rem = flat;
        let mut at = 0;
        for i in (0..rank).rev() {
            at += (rem % full[i]) * strides[i];
            rem /= full[i];
        }
        at
    };
    let data = match &c.data {
        Data::F32(v) => Data::F32((0..count).map(|f| v[index(f)]).collect()),
        Data::I64(v) => Data::I64((0..count).map(|f| v[index(f)]).collect()),
    };
    Constant {
        shape: full.to_vec(),
        data,
    }
}

pub(crate) fn transpose_const(c: &Constant) -> Option<Constant> {
    let [r, k] = c.shape[..] else { return None };
    let Data::F32(v) = &c.data else { return None };
    let data = (0..k)
        .flat_map(|j| (0..r).map(move |i| v[i * k + j]))
        .collect();
    Some(Constant {
        shape: vec![k, r],
        data: Data::F32(data),
    })
}

/// The ONNX name of a constant derived from `onnx` at `shape`.
pub(crate) fn derived(onnx: &str, shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("{onnx}.{}", dims.join("x"))
}

/// ONNX's Reshape: `0` copies the input's dimension (unless allowzero),
/// one `-1` is inferred.
pub(crate) fn reshape_to(
    from: &[usize],
    spec: &[i64],
    allow_zero: bool,
) -> Result<Vec<usize>, Why> {
    let count: usize = from.iter().product();
    let mut out = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, &d) in spec.iter().enumerate() {
        match d {
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            0 if !allow_zero => out.push(*from.get(i).ok_or("a 0 past the input's rank")?),
            d if d >= 0 => out.push(d as usize),
            _ => return Err(format!("shape {spec:?} is not a Reshape target")),
        }
    }
    if let Some(i) = infer {
        let known: usize = out.iter().product();
        if known == 0 || !count.is_multiple_of(known) {
            return Err(format!("cannot reshape {from:?} to {spec:?}"));
        }
        out[i] = count / known;
    }
    Ok(out)
}

pub(crate) fn axis_index(axis: i64, rank: usize) -> Result<usize, Why> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if !(0..r).contains(&a) {
        return Err(format!("axis {axis} is out of range for rank {rank}"));
    }
    Ok(a as usize)
}

/// An f32 attribute value as program text that parses back to the same
/// bits (Rust's shortest round-trip form).
pub(crate) fn float_text(f: f32) -> String {
    format!("{f}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_follows_numpy() {
        assert_eq!(broadcast(&[4, 3], &[3]), Some(vec![4, 3]));
        assert_eq!(broadcast(&[4, 1], &[1, 3]), Some(vec![4, 3]));
        assert_eq!(broadcast(&[], &[2, 2]), Some(vec![2, 2]));
        assert_eq!(broadcast(&[4, 2], &[3]), None);
    }

    #[test]
    fn constants_expand_and_transpose_by_moving_data_only() {
        let c = Constant {
            shape: vec![2, 1],
            data: Data::F32(vec![1.0, 2.0]),
        };
        let e = expand_const(&c, &[2, 3]);
        assert_eq!(e.data, Data::F32(vec![1.0, 1.0, 1.0, 2.0, 2.0, 2.0]));
        let t = transpose_const(&e).unwrap();
        assert_eq!(t.shape, vec![3, 2]);
        assert_eq!(t.data, Data::F32(vec![1.0, 2.0, 1.0, 2.0, 1.0, 2.0]));
    }

    #[test]
    fn reshape_targets_follow_onnx() {
        assert_eq!(
            reshape_to(&[2, 3, 4], &[0, -1], false).unwrap(),
            vec![2, 12]
        );
        assert_eq!(reshape_to(&[2, 3, 4], &[-1], false).unwrap(), vec![24]);
        assert_eq!(reshape_to(&[2, 0], &[0, 5], true).unwrap(), vec![0, 5]);
        assert!(reshape_to(&[2, 3], &[-1, -1], false).is_err());
        assert!(reshape_to(&[2, 3], &[4, -1], false).is_err());
    }

    #[test]
    fn attribute_floats_print_back_to_the_same_bits() {
        for f in [1e-5f32, 0.125, 1.0 / 3.0, f32::MIN_POSITIVE, 1e-45] {
            assert_eq!(float_text(f).parse::<f32>().unwrap().to_bits(), f.to_bits());
        }
    }
}
