//! `lockstep import` against a reference no one here wrote: models built
//! with the `onnx` package's helper API and run by onnxruntime
//! (`tests/onnx/models.py`), imported, run on the CPU reference and on
//! Vulkan. Lockstep's two runs must agree bit for bit (outputs and trace
//! root); onnxruntime's answers only within [`ATOL`] + [`RTOL`]·|ref|,
//! since onnxruntime fuses, reorders and uses FMA (docs/onnx.md).
//!
//! The Python side needs onnx, onnxruntime and numpy: `make test` makes
//! the virtual environment and sets LOCKSTEP_ONNX_PYTHON. Without it the
//! tests look for target/onnx-venv and say SKIPPED if there is none.
//! LOCKSTEP_SKIP_VULKAN_TESTS=1 skips the Vulkan runs.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use lockstep_tensor::{npy, Tensor};
use tempfile::TempDir;

mod common;
use common::{assert_fails, lockstep, s};

/// Tolerance against onnxruntime: |lockstep − ort| ≤ ATOL + RTOL·|ort|.
const ATOL: f32 = 1e-5;
const RTOL: f32 = 1e-4;

fn python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("LOCKSTEP_ONNX_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let default = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/onnx-venv/bin/python");
    if default.exists() {
        return Some(default);
    }
    eprintln!(
        "SKIPPED: no Python with onnx and onnxruntime (make test sets LOCKSTEP_ONNX_PYTHON; \
         or make onnx-venv)"
    );
    None
}

/// Writes the models and onnxruntime's answers into a new directory.
fn models() -> Option<TempDir> {
    let python = python()?;
    let dir = TempDir::new().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/onnx/models.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(dir.path())
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", python.display()));
    assert!(
        out.status.success(),
        "models.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{}", String::from_utf8_lossy(&out.stdout).trim());
    Some(dir)
}

fn vulkan_enabled() -> bool {
    !std::env::var("LOCKSTEP_SKIP_VULKAN_TESTS").is_ok_and(|v| v == "1")
}

fn read(path: &Path) -> Tensor {
    npy::read_file(path).unwrap_or_else(|e| panic!("{e}"))
}

/// Imports `name`, runs it on every backend, returns the run directories
/// (CPU first).
fn import_and_run(dir: &Path, name: &str, inputs: &[&str]) -> Vec<PathBuf> {
    let program = dir.join(format!("{name}.json"));
    let out = lockstep(&[
        "import",
        s(&dir.join(format!("{name}.onnx"))),
        "--out",
        s(&program),
    ]);
    assert_eq!(out.code, 0, "import {name}: {}", out.stderr);
    assert!(
        out.stdout.contains("run      lockstep exec"),
        "{}",
        out.stdout
    );
    let mut backends = vec!["cpu"];
    if vulkan_enabled() {
        backends.push("vulkan");
    }
    let mut runs = Vec::new();
    for backend in backends {
        let run = dir.join(format!("{name}.{backend}"));
        let weights = dir.join(format!("{name}.weights"));
        let mut args = vec![
            "exec".to_string(),
            s(&program).to_string(),
            "--inputs-dir".into(),
            s(&weights).to_string(),
            "--out-dir".into(),
            s(&run).to_string(),
            "--backend".into(),
            backend.into(),
            "-q".into(),
        ];
        for input in inputs {
            args.push("--input".into());
            let file = dir.join(format!("{name}.input.{input}.npy"));
            args.push(format!("{input}={}", s(&file)));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = lockstep(&args);
        assert_eq!(out.code, 0, "exec {name} on {backend}: {}", out.stderr);
        runs.push(run);
    }
    runs
}

/// Checks the backends' bits agree and onnxruntime is within tolerance;
/// returns the largest absolute and relative differences to onnxruntime.
fn check(dir: &Path, name: &str, runs: &[PathBuf], outputs: &[&str]) -> (f32, f32) {
    let root = |run: &Path| {
        let trace = fs::read_to_string(run.join("trace.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&trace).unwrap();
        v["root"].as_str().unwrap().to_string()
    };
    for run in &runs[1..] {
        assert_eq!(root(&runs[0]), root(run), "{name}: trace roots differ");
    }
    let (mut abs_max, mut rel_max) = (0f32, 0f32);
    for output in outputs {
        let cpu = read(&runs[0].join(format!("{output}.npy")));
        for run in &runs[1..] {
            let other = read(&run.join(format!("{output}.npy")));
            assert!(
                cpu.bit_eq(&other),
                "{name}.{output}: {} differs from the CPU reference at {:?}",
                run.display(),
                cpu.first_bit_mismatch(&other)
            );
        }
        let ort = read(&dir.join(format!("{name}.ort.{output}.npy")));
        assert_eq!(cpu.shape(), ort.shape(), "{name}.{output}: shape");
        for (i, (&a, &b)) in cpu.data().iter().zip(ort.data()).enumerate() {
            let diff = (a - b).abs();
            assert!(
                diff <= ATOL + RTOL * b.abs(),
                "{name}.{output}[{i}]: lockstep {a:e}, onnxruntime {b:e}"
            );
            abs_max = abs_max.max(diff);
            if b != 0.0 {
                rel_max = rel_max.max(diff / b.abs());
            }
        }
    }
    eprintln!("{name}: max |diff| to onnxruntime {abs_max:e}, max relative {rel_max:e}");
    (abs_max, rel_max)
}

#[test]
fn models_agree_with_onnxruntime_and_bit_for_bit_across_backends() {
    let Some(dir) = models() else { return };
    let dir = dir.path();
    let cases: &[(&str, &[&str], &[&str])] = &[
        ("mlp_gemm", &["input"], &["output"]),
        ("mlp_matmul", &["x"], &["s", "probs", "logp", "q"]),
        ("encoder_block", &["x"], &["y", "attention"]),
        ("gelu_exact", &["x"], &["pattern", "op", "erf"]),
        ("causal_attention", &["x"], &["y", "attn"]),
        ("decoder_block", &["x"], &["y"]),
        ("embedding_ops", &["ids"], &["mx", "means", "flat"]),
        ("runtime_mask", &["x", "y"], &["relu", "min", "same"]),
        ("mha_block", &["x"], &["y"]),
        ("gpt2_block", &["x"], &["y"]),
    ];
    for (name, inputs, outputs) in cases {
        let runs = import_and_run(dir, name, inputs);
        check(dir, name, &runs, outputs);
    }
}

#[test]
fn a_model_trained_with_numpy_keeps_its_accuracy() {
    let Some(dir) = models() else { return };
    let dir = dir.path();
    let runs = import_and_run(dir, "classifier", &["x"]);
    check(dir, "classifier", &runs, &["logits"]);
    let logits = read(&runs[0].join("logits.npy"));
    let ort = read(&dir.join("classifier.ort.logits.npy"));
    let labels = read(&dir.join("classifier.labels.npy"));
    let argmax =
        |row: &[f32]| (0..row.len()).fold(0, |best, j| if row[j] > row[best] { j } else { best });
    let n = labels.len();
    let mut right = 0;
    for i in 0..n {
        let ours = argmax(&logits.data()[i * 3..i * 3 + 3]);
        let theirs = argmax(&ort.data()[i * 3..i * 3 + 3]);
        assert_eq!(
            ours, theirs,
            "held-out point {i}: lockstep and onnxruntime disagree"
        );
        right += usize::from(ours as f32 == labels.data()[i]);
    }
    let accuracy = right as f64 / n as f64;
    let numpy: f64 = fs::read_to_string(dir.join("classifier.numpy_accuracy.txt"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    eprintln!("classifier: held-out accuracy {accuracy} on {n} points (numpy's float64 forward pass: {numpy})");
    assert!(accuracy >= 0.9, "accuracy {accuracy}");
    assert!(
        (accuracy - numpy).abs() <= 1.0 / n as f64,
        "{accuracy} against numpy's {numpy}"
    );
}

#[test]
fn unsupported_truncated_and_corrupt_models_are_one_line_and_exit_2() {
    let Some(dir) = models() else { return };
    let dir = dir.path();
    let out = dir.join("out.json");
    let import = |model: &Path| lockstep(&["import", s(model), "--out", s(&out)]);
    assert_fails(
        &import(&dir.join("refused_op.onnx")),
        2,
        &["node '/act/Cos' (Cos)", "not supported"],
    );
    assert_fails(
        &import(&dir.join("refused_ids.onnx")),
        2,
        &["node '/ids/Add' (Add)", "int64 graph input", "only Gather"],
    );
    assert_fails(
        &import(&dir.join("refused_dynamic.onnx")),
        2,
        &["input 'x'", "dynamic dimension 'batch'"],
    );
    let whole = fs::read(dir.join("mlp_gemm.onnx")).unwrap();
    for cut in [1, whole.len() / 3, whole.len() - 1] {
        let truncated = dir.join(format!("truncated-{cut}.onnx"));
        fs::write(&truncated, &whole[..cut]).unwrap();
        let o = import(&truncated);
        assert_eq!(o.code, 2, "cut at {cut}: {}", o.stderr);
        assert_eq!(o.stderr.lines().count(), 1, "{}", o.stderr);
    }
    let text = dir.join("text.onnx");
    fs::write(&text, "this is not a model\n").unwrap();
    assert_fails(&import(&text), 2, &["text.onnx"]);
    assert_fails(
        &import(&dir.join("missing.onnx")),
        2,
        &["missing.onnx", "cannot read"],
    );
    assert!(!out.exists(), "no program is written for a refused model");
}
