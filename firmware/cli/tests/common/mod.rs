//! What the `lockstep` binary's test suites share: running it and reading
//! its outcome, and the one-line failure every bad input must give.
#![allow(dead_code)] // each suite uses its own part

use std::path::Path;
use std::process::Command;

pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `lockstep ARGS` to completion.
pub fn lockstep(args: &[&str]) -> Outcome {
    let out = Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .args(args)
        .output()
        .expect("spawn lockstep");
    Outcome {
        // A signal (no exit code) must fail every assertion on the code.
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Asserts a failure with `code` and exactly one `lockstep: ` line on
/// stderr holding every needle.
pub fn assert_fails(out: &Outcome, code: i32, needles: &[&str]) {
    let err = &out.stderr;
    assert_eq!(out.code, code, "exit code; stderr: {err}");
    assert_eq!(err.lines().count(), 1, "stderr must be one line: {err:?}");
    assert!(
        err.starts_with("lockstep: ") && err.ends_with('\n'),
        "stderr: {err:?}"
    );
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}: {err:?}");
    }
}

/// A temporary path as an argument (they are UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}
