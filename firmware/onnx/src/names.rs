//! ONNX value names to Lockstep tensor names. ONNX allows any string
//! (PyTorch writes `onnx::Gemm_0` and `/fc1/Gemm_output_0`); Lockstep's
//! names become file names, so they are short and plain
//! (`lockstep_program::check_name`).

use std::collections::BTreeSet;

use lockstep_program::check_name;

/// Longest name this module makes, leaving room for a `_N` suffix inside
/// `MAX_TENSOR_NAME_BYTES`.
const STEM_BYTES_MAX: usize = 56;

/// The program names handed out so far; each is unique.
#[derive(Debug, Default)]
pub(crate) struct Names {
    taken: BTreeSet<String>,
}

impl Names {
    /// A program name for `onnx_name`: the name itself where it is a valid
    /// Lockstep name not yet taken, else a plain form of it made unique.
    pub(crate) fn assign(&mut self, onnx_name: &str) -> String {
        if check_name(onnx_name).is_ok() && !self.taken.contains(onnx_name) {
            self.taken.insert(onnx_name.to_string());
            return onnx_name.to_string();
        }
        let stem = plain(onnx_name);
        let mut name = stem.clone();
        let mut n = 2u64;
        // Bounded: each turn tries a new suffix and `taken` is finite.
        while self.taken.contains(&name) {
            name = format!("{stem}_{n}");
            n += 1;
        }
        debug_assert!(check_name(&name).is_ok(), "{name}");
        self.taken.insert(name.clone());
        name
    }
}

/// `raw` with every byte Lockstep does not allow replaced by `_`, never
/// starting with `.` or `-`, never empty, at most [`STEM_BYTES_MAX`] bytes.
fn plain(raw: &str) -> String {
    let mut out: String = raw
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.') {
                b as char
            } else {
                '_'
            }
        })
        .take(STEM_BYTES_MAX)
        .collect();
    if out.is_empty() || out.starts_with(['.', '-']) {
        out.insert(0, 't');
        out.truncate(STEM_BYTES_MAX);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names_are_kept_and_others_made_plain_and_unique() {
        let mut names = Names::default();
        assert_eq!(names.assign("input"), "input");
        assert_eq!(names.assign("input"), "input_2");
        assert_eq!(names.assign("onnx::Gemm_0"), "onnx__Gemm_0");
        assert_eq!(names.assign("/fc1/Gemm_output_0"), "_fc1_Gemm_output_0");
        assert_eq!(names.assign(""), "t");
        assert_eq!(names.assign(".hidden"), "t.hidden");
        assert_eq!(names.assign("-x"), "t-x");
        let long = "é".repeat(100);
        let a = names.assign(&long);
        let b = names.assign(&long);
        assert_ne!(a, b);
        for n in [a, b] {
            assert!(check_name(&n).is_ok(), "{n}");
        }
    }
}
