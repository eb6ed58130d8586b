//! CPU reference of layout.comp.

use super::canon;

/// `x[i,j] + b[j]` over an m×n matrix.
pub fn bias_add(x: &[f32], b: &[f32]) -> Vec<f32> {
    let n = b.len();
    x.iter()
        .enumerate()
        .map(|(t, &v)| canon(v + b[t % n]))
        .collect()
}

/// n×m transpose of an m×n matrix.
pub fn transpose(x: &[f32], m: usize, n: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; m * n];
    for (t, o) in out.iter_mut().enumerate() {
        let (j, i) = (t / m, t % m);
        *o = canon(x[i * n + j]);
    }
    out
}

/// `dst` with element `index` replaced by `value`, when `index` is an
/// integer in `[0, len)`; otherwise `dst` unchanged.
pub fn set_element(dst: &[f32], value: f32, index: f32) -> Vec<f32> {
    let len = dst.len();
    let target = if index >= 0.0 && index < len as f32 && (index as u32) as f32 == index {
        index as usize
    } else {
        len
    };
    dst.iter()
        .enumerate()
        .map(|(t, &v)| canon(if t == target { value } else { v }))
        .collect()
}
