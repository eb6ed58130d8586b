//! `lockstep --cross-implementation-test` on SwiftShader: the run is
//! labelled non-conforming in everything it writes (stdout, stderr,
//! trace.json, with the portable bundle's id) and gives the same trace
//! root as the CPU reference. Runs when SwiftShader's ICD is present
//! (`make test` fetches it and sets LOCKSTEP_SWIFTSHADER_ICD).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn swiftshader_icd() -> Option<PathBuf> {
    if std::env::var("LOCKSTEP_SKIP_VULKAN_TESTS").as_deref() == Ok("1") {
        return None;
    }
    let icd = std::env::var_os("LOCKSTEP_SWIFTSHADER_ICD")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/swiftshader/usr/lib/chromium/vk_swiftshader_icd.json")
        });
    if icd.exists() {
        Some(icd)
    } else {
        eprintln!(
            "SKIPPED: no SwiftShader ICD at {} (make swiftshader)",
            icd.display()
        );
        None
    }
}

fn lockstep(icd: Option<&Path>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lockstep"));
    cmd.args(args);
    if let Some(icd) = icd {
        cmd.env("VK_ICD_FILENAMES", icd);
    }
    cmd.output().expect("spawn lockstep")
}

fn trace(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("trace.json")).unwrap()).unwrap()
}

#[test]
fn a_cross_implementation_run_says_so_everywhere_and_matches_the_reference() {
    let Some(icd) = swiftshader_icd() else { return };
    let dir = tempfile::tempdir().unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/attention.json");
    let example = example.to_str().unwrap();

    let devices = lockstep(Some(&icd), &["devices"]);
    let text = String::from_utf8_lossy(&devices.stdout);
    assert!(
        text.contains("SwiftShader") && text.contains("usable: no"),
        "{text}"
    );
    assert!(text.contains("cross-implementation tests only"), "{text}");

    // Refused as a conforming device, with the reason.
    let refused = lockstep(
        Some(&icd),
        &[
            "exec",
            example,
            "--out-dir",
            dir.path().join("r").to_str().unwrap(),
        ],
    );
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("RoundingModeRTE"));

    let ss = dir.path().join("ss");
    let o = lockstep(
        Some(&icd),
        &[
            "exec",
            example,
            "--cross-implementation-test",
            "--out-dir",
            ss.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{o:?}");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("NOTE    NON-CONFORMING"), "{stdout}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("NON-CONFORMING"));
    let t = trace(&ss);
    assert_eq!(t["backend"], "vulkan-cross-implementation-test");
    assert!(t["non_conforming"]
        .as_str()
        .unwrap()
        .contains("NON-CONFORMING"));
    let portable = lockstep_kernels::Bundle::embedded_portable()
        .unwrap()
        .id_hex();
    assert_eq!(t["bundle_id"], portable.as_str());

    let cpu = dir.path().join("cpu");
    let o = lockstep(
        None,
        &[
            "exec",
            example,
            "--backend",
            "cpu",
            "-q",
            "--out-dir",
            cpu.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{o:?}");
    let c = trace(&cpu);
    assert!(c.get("non_conforming").is_none());
    assert_eq!(t["root"], c["root"]);

    // Not with the CPU backend, nor with another bundle.
    let o = lockstep(
        None,
        &[
            "exec",
            example,
            "--backend",
            "cpu",
            "--cross-implementation-test",
            "--out-dir",
            cpu.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(2));
}
