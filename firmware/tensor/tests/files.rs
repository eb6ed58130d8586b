//! `.npy` files on disk: atomic writes, and errors that name the file.

use std::fs;
use std::path::Path;

use lockstep_tensor::npy::{self, NpyError, NpyFileCause};
use lockstep_tensor::Tensor;

fn raw_npy(dict: &str, data: &[u8]) -> Vec<u8> {
    let header = format!("{dict}\n");
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn write_then_read_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.npy");
    let t = Tensor::new(vec![2, 3], vec![1.5, -0.0, f32::NAN, 4.0, 5.0, 6.0]).unwrap();
    npy::write_file(&path, &t).unwrap();
    assert_eq!(fs::read(&path).unwrap(), npy::encode(&t));
    assert!(npy::read_file(&path).unwrap().bit_eq(&t));

    // Overwriting replaces the file and leaves no temporary behind.
    let u = Tensor::zeros(vec![]).unwrap();
    npy::write_file(&path, &u).unwrap();
    assert!(npy::read_file(&path).unwrap().bit_eq(&u));
    assert_eq!(names(dir.path()), ["x.npy"]);
}

#[test]
fn errors_are_one_line_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.npy");
    let f8 = "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }";
    fs::write(&path, raw_npy(f8, &[0; 16])).unwrap();
    let msg = npy::read_file(&path).unwrap_err().to_string();
    assert_eq!(
        msg,
        format!(
            "{}: dtype is '<f8' (float64); Lockstep tensors are float32: \
             convert with arr.astype('<f4')",
            path.display()
        )
    );

    let missing = npy::read_file(&dir.path().join("nope.npy")).unwrap_err();
    assert!(matches!(missing.cause, NpyFileCause::Read(_)));
    assert!(missing.to_string().contains("nope.npy: cannot read"));

    let t = Tensor::zeros(vec![1]).unwrap();
    let err = npy::write_file(&dir.path().join("no/such/dir/b.npy"), &t).unwrap_err();
    assert!(err.to_string().contains("b.npy: cannot write"), "{err}");
    for e in [msg, err.to_string()] {
        assert!(!e.contains('\n'), "{e}");
    }
}

#[test]
fn size_is_checked_before_reading_data() {
    let dir = tempfile::tempdir().unwrap();
    // Claims 4 GiB of data but holds none: must fail fast, not allocate.
    let path = dir.path().join("huge.npy");
    let huge = "{'descr': '<f4', 'fortran_order': False, 'shape': (1073741824,), }";
    fs::write(&path, raw_npy(huge, &[])).unwrap();
    let err = npy::read_file(&path).unwrap_err();
    assert!(matches!(
        err.cause,
        NpyFileCause::Format(NpyError::Truncated { expected, .. }) if expected > 1 << 32
    ));

    let path = dir.path().join("long.npy");
    let two = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }";
    fs::write(&path, raw_npy(two, &[0; 9])).unwrap();
    let err = npy::read_file(&path).unwrap_err();
    assert!(matches!(
        err.cause,
        NpyFileCause::Format(NpyError::TrailingData { extra: 1 })
    ));

    let path = dir.path().join("short.npy");
    fs::write(&path, b"\x93NUMPY\x01\x00\x40").unwrap();
    let err = npy::read_file(&path).unwrap_err();
    assert!(matches!(
        err.cause,
        NpyFileCause::Format(NpyError::Truncated {
            expected: 10,
            found: 9
        })
    ));
}
