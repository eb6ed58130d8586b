//! The certification suite against a second Vulkan implementation:
//! SwiftShader (Subzero), which flushes subnormals and does not advertise
//! RoundingModeRTE. It is opened only in the test-only cross-implementation
//! mode, and:
//!
//! - every conformance case whose result does not change when subnormals
//!   are flushed (its inputs and intermediates stay in the normal range)
//!   gives the golden hash, and so do both example programs;
//! - every case that depends on subnormals differs from its golden hash,
//!   which proves the suite sees a flushing device;
//! - `lockstep-certify --cross-implementation-test` says NOT CERTIFIED,
//!   lists every failure, and puts each one down to flushed subnormals and
//!   nothing else.
//!
//! They run when SwiftShader's ICD is present (`make test` fetches it into
//! target/swiftshader and passes LOCKSTEP_SWIFTSHADER_ICD); otherwise they
//! say so on stderr and pass.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use lockstep_backend::{Backend, CpuBackend};
use lockstep_certify::cases::cases;
use lockstep_certify::conformance::{run_example, EXAMPLES};
use lockstep_certify::diagnosis::Property;
use lockstep_certify::{Golden, Report};
use lockstep_identity::SigningKey;
use lockstep_tensor::Tensor;
use lockstep_vulkan::host_float::{self, FloatEnv};
use lockstep_vulkan::VulkanBackend;

fn swiftshader_icd() -> Option<PathBuf> {
    if std::env::var("LOCKSTEP_SKIP_VULKAN_TESTS").as_deref() == Ok("1") {
        eprintln!("LOCKSTEP_SKIP_VULKAN_TESTS=1: skipping the SwiftShader tests");
        return None;
    }
    let icd = std::env::var_os("LOCKSTEP_SWIFTSHADER_ICD")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../target/swiftshader/usr/lib/chromium/vk_swiftshader_icd.json")
        });
    if icd.exists() {
        Some(icd)
    } else {
        eprintln!(
            "SKIPPED: no SwiftShader ICD at {} (make test fetches it: make swiftshader)",
            icd.display()
        );
        None
    }
}

/// SwiftShader as the only device of this test binary's loader.
fn swiftshader() -> Option<VulkanBackend> {
    static ICD: OnceLock<Option<PathBuf>> = OnceLock::new();
    let icd = ICD.get_or_init(|| {
        let icd = swiftshader_icd()?;
        std::env::set_var("VK_ICD_FILENAMES", &icd);
        Some(icd)
    });
    icd.as_ref()?;
    Some(VulkanBackend::new_cross_implementation_test(None).unwrap())
}

fn run_case(backend: &mut dyn Backend, op: &lockstep_backend::Op, inputs: &[Tensor]) -> String {
    let refs: Vec<&Tensor> = inputs.iter().collect();
    backend.run(op, &refs).unwrap().sha256_hex()
}

#[test]
fn normal_range_cases_match_and_subnormal_cases_differ() {
    let Some(mut ss) = swiftshader() else { return };
    if !host_float::supported() {
        eprintln!("SKIPPED: this host cannot model a flushing device");
        return;
    }
    let golden = Golden::committed().unwrap();
    let (mut normal, mut subnormal) = (Vec::new(), Vec::new());
    for case in cases() {
        let op = case.parse_op().unwrap();
        let inputs: Vec<Tensor> = case.inputs.iter().map(|i| i.make().unwrap()).collect();
        let want = &golden.cases[&case.id];
        assert_eq!(&run_case(&mut CpuBackend::new(), &op, &inputs), want);
        let flushed = host_float::with_env(FloatEnv::FLUSH_BOTH, || {
            run_case(&mut CpuBackend::new(), &op, &inputs)
        })
        .unwrap();
        let got = run_case(&mut ss, &op, &inputs);
        if &flushed == want {
            assert_eq!(
                &got,
                want,
                "{}: stays in the normal range, yet SwiftShader differs from the CPU reference",
                case.describe()
            );
            normal.push(case.id);
        } else {
            assert_ne!(
                &got,
                want,
                "{}: depends on subnormals, yet SwiftShader (which flushes them) gives the golden hash",
                case.describe()
            );
            subnormal.push(case.id);
        }
    }
    eprintln!(
        "SwiftShader: {} normal-range cases bit-identical, {} subnormal-dependent cases differ: {}",
        normal.len(),
        subnormal.len(),
        subnormal.join(" ")
    );
    assert!(
        normal.len() >= 150,
        "only {} normal-range cases",
        normal.len()
    );
    assert!(
        subnormal.len() >= 20,
        "only {} subnormal cases",
        subnormal.len()
    );
    for (name, json) in EXAMPLES {
        let (root, _, _) = run_example(&mut ss, name, json).unwrap();
        assert_eq!(
            root, golden.examples[*name],
            "example {name} on SwiftShader"
        );
    }
}

#[test]
fn certifying_swiftshader_fails_and_puts_every_failure_down_to_flushed_subnormals() {
    let Some(icd) = swiftshader_icd() else { return };
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate();
    key.write_file(&dir.path().join("c.key"), None).unwrap();
    let out = dir.path().join("REPORT.json");
    let o = Command::new(env!("CARGO_BIN_EXE_lockstep-certify"))
        .args([
            "--cross-implementation-test",
            "--repeats",
            "1",
            "-q",
            "--key",
        ])
        .arg(dir.path().join("c.key"))
        .arg("--out")
        .arg(&out)
        .env("VK_ICD_FILENAMES", &icd)
        .env_remove("LOCKSTEP_KEY_PASSWORD")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(stdout.contains("NOT CERTIFIED"), "{stdout}");
    assert!(
        stdout.contains("diagnosis (failures by float-model property)"),
        "{stdout}"
    );

    let report = Report::parse(&std::fs::read(&out).unwrap()).unwrap();
    assert!(!report.passed);
    assert!(report
        .non_conforming
        .as_deref()
        .unwrap()
        .contains("NON-CONFORMING"));
    assert_eq!(report.device.backend, "vulkan-cross-implementation-test");
    assert!(report.device.name.contains("SwiftShader"));
    // The portable bundle ran, and the report certifies nothing.
    assert_ne!(
        report.bundle_id,
        lockstep_kernels::Bundle::embedded().unwrap().id_hex()
    );
    // Even for the node, device and bundle it names, at any time.
    let node = report.node.clone().unwrap_or_default();
    let now = lockstep_certify::report::parse_rfc3339(&report.finished_at).unwrap();
    assert!(matches!(
        report.certifies(&node, &report.device, &report.bundle_id, now),
        Err(lockstep_certify::report::NotCertified::NonConforming)
    ));

    let check = |name: &str| report.checks.iter().find(|c| c.name == name).unwrap();
    // Every failure is listed (there are fewer than the listing bound) and
    // put down to flushed subnormals.
    let mut listed = 0;
    for name in ["probes", "conformance"] {
        let c = check(name);
        assert!(!c.passed, "{name} must fail on a flushing device");
        assert_eq!(
            c.failures.len() as u64,
            c.failed,
            "{name}: every failure listed"
        );
        for f in &c.failures {
            assert!(
                f.property.starts_with("subnormal_"),
                "{name}: {} {} put down to {}: {}",
                f.kernel,
                f.case,
                f.property,
                f.detail
            );
        }
        listed += c.failed;
    }
    // The examples stay in the normal range: not among the failures.
    assert!(check("conformance")
        .failures
        .iter()
        .all(|f| !f.case.starts_with("example")));
    assert!(check("stability").passed);
    // The only limit it falls short of is RTE.
    let limits = check("limits");
    assert_eq!(limits.failed, 1);
    assert!(limits
        .first_mismatch
        .as_ref()
        .unwrap()
        .case
        .contains("RoundingModeRTE"));
    assert!(!check("conforming_device").passed);

    // The diagnosis counts them all, by subnormal properties only.
    let total: u64 = report.diagnosis.iter().map(|d| d.count).sum();
    assert_eq!(total, listed);
    let subnormal: Vec<&str> = Property::ALL
        .iter()
        .filter(|p| p.is_subnormal())
        .map(|p| p.as_str())
        .collect();
    for d in &report.diagnosis {
        assert!(subnormal.contains(&d.property.as_str()), "{d:?}");
    }
    eprintln!("{stdout}");
}
