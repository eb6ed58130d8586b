//! The suite on the CPU reference and on Vulkan (lavapipe in CI), the
//! golden hashes against the reference, and failures reported as such.
//! Vulkan tests fail without a device unless LOCKSTEP_SKIP_VULKAN_TESTS=1.

use lockstep_backend::{Backend, BackendError, CpuBackend, DeviceFingerprint, Op};
use lockstep_certify::conformance::{self, Golden};
use lockstep_certify::{run_suite, LoadFactory, SuiteOptions};
use lockstep_kernels::reference::probe::ProbeKernel;
use lockstep_kernels::Bundle;
use lockstep_tensor::Tensor;
use lockstep_vulkan::VulkanBackend;

fn options(load: Option<LoadFactory>) -> SuiteOptions {
    SuiteOptions {
        bundle_id: Bundle::embedded().unwrap().id_hex(),
        repeats: 2,
        load,
        node: None,
        valid_days: 1,
        golden: Golden::committed().unwrap(),
    }
}

fn vulkan_skipped() -> bool {
    let skip = std::env::var("LOCKSTEP_SKIP_VULKAN_TESTS").as_deref() == Ok("1");
    if skip {
        eprintln!("LOCKSTEP_SKIP_VULKAN_TESTS=1: skipping a Vulkan test");
    }
    skip
}

#[test]
fn committed_golden_hashes_are_the_cpu_reference() {
    // What CI checks: regenerating the golden file would change nothing.
    let outcome = conformance::compute(&mut CpuBackend::new(), &mut |_| {}).unwrap();
    let committed = Golden::committed().unwrap();
    assert_eq!(
        outcome.hashes, committed,
        "hwtests/golden.json differs from the CPU reference; if a kernel's definition changed on purpose, run `lockstep-certify golden --write` and bump SUITE_VERSION"
    );
}

#[test]
fn the_cpu_reference_passes_every_check() {
    let mut b = CpuBackend::new();
    let load: LoadFactory = Box::new(|| Ok(Box::new(CpuBackend::new()) as Box<dyn Backend>));
    let mut steps = Vec::new();
    let report = run_suite(&mut b, &options(Some(load)), &mut |p| {
        steps.push((p.done, p.total))
    });
    assert!(report.passed, "{}", report.summary());
    let names: Vec<&str> = report.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["probes", "conformance", "stability", "limits"]);
    assert_eq!(report.device.backend, "cpu");
    // Progress counts up to its total, one step at a time.
    assert!(steps.iter().enumerate().all(|(i, &(d, _))| d == i + 1));
    assert_eq!(steps.last().map(|&(d, t)| d == t), Some(true));
}

#[test]
fn vulkan_passes_every_check() {
    if vulkan_skipped() {
        return;
    }
    let bundle = Bundle::embedded().unwrap();
    let mut b = VulkanBackend::new(bundle.clone(), None).unwrap_or_else(|e| {
        panic!("no usable Vulkan device ({e}); install mesa-vulkan-drivers or set LOCKSTEP_SKIP_VULKAN_TESTS=1")
    });
    let load: LoadFactory = Box::new(move || {
        VulkanBackend::new(bundle.clone(), None).map(|b| Box::new(b) as Box<dyn Backend>)
    });
    let report = run_suite(&mut b, &options(Some(load)), &mut |_| {});
    assert!(report.passed, "{}", report.summary());
    assert_eq!(report.device.backend, "vulkan");
    assert!(report.limits.iter().all(|l| l.device >= l.needed));
    assert!(report.performance.device_memory_bytes.is_some());
}

#[test]
fn vulkan_runs_every_probe_kernel_like_the_reference() {
    if vulkan_skipped() {
        return;
    }
    let mut vk = VulkanBackend::new(Bundle::embedded().unwrap(), None).unwrap();
    let mut cpu = CpuBackend::new();
    // Many records, so the dispatch covers several workgroups.
    let input: Vec<u32> = (0..3 * 1000u32)
        .map(|i| i.wrapping_mul(0x9E37_79B9) ^ (i << 7))
        .collect();
    // Float to integer conversions are defined only in range: probe_convert
    // gets in-range floats as its b and c words.
    let in_range: Vec<u32> = input
        .iter()
        .enumerate()
        .map(|(i, &w)| match i % 3 {
            0 => w,
            1 => ((w >> 8) as f32).to_bits(),
            _ => ((w as i32 >> 9) as f32).to_bits(),
        })
        .collect();
    for kernel in lockstep_kernels::reference::probe::PROBES {
        let input = if kernel.name == "probe_convert" {
            &in_range
        } else {
            &input
        };
        let a = vk.run_probe(*kernel, input).unwrap();
        let b = cpu.run_probe(*kernel, input).unwrap();
        assert_eq!(a.len(), 1000 * kernel.out_words);
        assert!(
            a == b,
            "{} differs between lavapipe and the reference",
            kernel.name
        );
    }
}

/// A backend that gets one op wrong: the report must name it.
struct WrongGelu(CpuBackend);

impl Backend for WrongGelu {
    fn fingerprint(&self) -> &DeviceFingerprint {
        self.0.fingerprint()
    }
    fn run(&mut self, op: &Op, inputs: &[&Tensor]) -> Result<Tensor, BackendError> {
        let mut out = self.0.run(op, inputs)?;
        if matches!(op, Op::Gelu) {
            if let Some(v) = out.data_mut().first_mut() {
                *v = f32::from_bits(v.to_bits() ^ 1);
            }
        }
        Ok(out)
    }
    fn run_probe(&mut self, kernel: ProbeKernel, input: &[u32]) -> Result<Vec<u32>, BackendError> {
        self.0.run_probe(kernel, input)
    }
}

#[test]
fn a_wrong_kernel_fails_conformance_with_its_first_mismatch() {
    let mut b = WrongGelu(CpuBackend::new());
    let report = run_suite(&mut b, &options(None), &mut |_| {});
    assert!(!report.passed);
    let c = report
        .checks
        .iter()
        .find(|c| c.name == "conformance")
        .unwrap();
    assert!(!c.passed);
    let m = c.first_mismatch.as_ref().unwrap();
    assert_eq!(m.kernel, "gelu");
    assert!(m.case.starts_with("gelu/0"), "{}", m.case);
    let golden = Golden::committed().unwrap();
    assert_eq!(&m.expected, &golden.cases["gelu/0"]);
    assert_ne!(m.expected, m.got);
    // Both examples use gelu, so their trace roots differ too.
    assert!(c.failed > 5);
    assert!(report.summary().contains("FAIL  conformance"));
}

#[test]
fn a_backend_without_probes_fails_the_probe_check() {
    struct NoProbes(CpuBackend);
    impl Backend for NoProbes {
        fn fingerprint(&self) -> &DeviceFingerprint {
            self.0.fingerprint()
        }
        fn run(&mut self, op: &Op, inputs: &[&Tensor]) -> Result<Tensor, BackendError> {
            self.0.run(op, inputs)
        }
    }
    let report = run_suite(
        &mut NoProbes(CpuBackend::new()),
        &options(None),
        &mut |_| {},
    );
    assert!(!report.passed);
    assert!(!report.checks[0].passed);
    assert!(report.checks[1].passed, "conformance is unaffected");
}
