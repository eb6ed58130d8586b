//! The shipped example programs: each runs on the CPU reference and on
//! Vulkan (lavapipe in CI) with bit-identical outputs and trace roots, and
//! the MLP actually learns.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn exec(example: &str, backend: &str, out: &Path) {
    let o = Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .arg("exec")
        .arg(root().join("examples").join(example))
        .arg("--out-dir")
        .arg(out)
        .args(["--backend", backend, "-q"])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{example} on {backend}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn trace_root(dir: &Path) -> String {
    let text = std::fs::read(dir.join("trace.json")).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&text).unwrap();
    v["root"].as_str().unwrap().to_string()
}

fn vulkan_skipped() -> bool {
    let skip = std::env::var("LOCKSTEP_SKIP_VULKAN_TESTS").as_deref() == Ok("1");
    if skip {
        eprintln!("LOCKSTEP_SKIP_VULKAN_TESTS=1: skipping the Vulkan half");
    }
    skip
}

fn both_backends_agree(example: &str, outputs: &[&str]) -> PathBuf {
    let dir = tempfile::tempdir().unwrap().keep();
    exec(example, "cpu", &dir.join("cpu"));
    if !vulkan_skipped() {
        exec(example, "vulkan", &dir.join("vulkan"));
        for name in outputs {
            let file = format!("{name}.npy");
            let cpu = std::fs::read(dir.join("cpu").join(&file)).unwrap();
            let vk = std::fs::read(dir.join("vulkan").join(&file)).unwrap();
            assert!(
                cpu == vk,
                "{example}: output {name} differs between cpu and vulkan"
            );
        }
        assert_eq!(
            trace_root(&dir.join("cpu")),
            trace_root(&dir.join("vulkan")),
            "{example}: trace roots differ"
        );
    }
    dir
}

#[test]
fn mlp_training_is_bit_identical_and_learns() {
    let dir = both_backends_agree("mlp-train.json", &["losses", "w1", "b1", "w2", "b2"]);
    let losses = lockstep_tensor::npy::read_file(&dir.join("cpu/losses.npy")).unwrap();
    let l = losses.data();
    assert!(l.len() >= 50, "at least 50 steps");
    assert!(l.iter().all(|v| v.is_finite() && *v > 0.0), "losses {l:?}");
    assert!(
        l[l.len() - 1] < l[0] / 2.0,
        "final loss {} is not below half of the first {}",
        l[l.len() - 1],
        l[0]
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn attention_block_is_bit_identical() {
    let dir = both_backends_agree("attention.json", &["y", "attn"]);
    let attn = lockstep_tensor::npy::read_file(&dir.join("cpu/attn.npy")).unwrap();
    // Rows of the attention matrix are distributions.
    for row in attn.data().chunks(attn.shape()[1]) {
        let s: f32 = row.iter().sum();
        assert!((s - 1.0).abs() < 1e-5, "row sums to {s}");
    }
    std::fs::remove_dir_all(dir).ok();
}
