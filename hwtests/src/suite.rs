//! The whole suite on one backend: probes, conformance, stability, limits
//! and performance, into one [`Report`].

use std::time::{Instant, SystemTime};

use lockstep_backend::{Backend, Op};
use lockstep_kernels::reference::matmul::Transpose;
use lockstep_protocol::rfc3339;
use lockstep_tensor::{Fill, Tensor};

use crate::conformance::{self, Golden};
use crate::diagnosis::{self, Failure, Property};
use crate::report::{
    Check, DeviceIdentity, LimitRecord, Mismatch, Performance, Report, REPORT_FORMAT, SUITE_VERSION,
};
use crate::stability::{self, LoadFactory};
use lockstep_kernels::reference::probe::PROBES;

/// How a run goes.
pub struct SuiteOptions {
    /// The bundle the backend runs (the CPU reference is its twin).
    pub bundle_id: String,
    /// Repetitions of the stability job, alone and under load (at most
    /// `MAX_STABILITY_REPEATS`).
    pub repeats: u32,
    /// A second backend on the same device, for the load.
    pub load: Option<LoadFactory>,
    /// The node the report is for (its id): the node that runs the suite
    /// in the remote form, `--node-key` in the local one. A report without
    /// one is installed by no node.
    pub node: Option<String>,
    /// Days the report is valid after the run (clamped to 1 to
    /// `MAX_CERTIFICATION_VALIDITY_DAYS`).
    pub valid_days: u32,
    pub golden: Golden,
}

/// Default repetitions of the stability job.
pub const DEFAULT_REPEATS: u32 = 3;

/// Side of the square matmul whose GFLOP/s the report gives.
const PERF_MATMUL: usize = 512;

/// Where the suite is, for a progress display.
pub struct Progress<'a> {
    pub done: usize,
    pub total: usize,
    pub check: &'a str,
    pub what: &'a str,
}

/// Runs everything. Backend failures do not abort: they fail the check
/// they happen in, so a report always comes back.
pub fn run(
    backend: &mut dyn Backend,
    options: &SuiteOptions,
    progress: &mut dyn FnMut(&Progress),
) -> Report {
    let started = SystemTime::now();
    let clock = Instant::now();
    let repeats = options
        .repeats
        .clamp(1, lockstep_limits::MAX_STABILITY_REPEATS);
    let total =
        PROBES.len() + conformance::progress_steps() + stability::progress_steps(repeats) + 2;
    let mut done = 0;
    let mut step = |check: &str, what: &str| {
        done += 1;
        progress(&Progress {
            done,
            total,
            check,
            what,
        });
    };

    let mut checks = Vec::new();
    let mut diagnosed = Vec::new();
    if let Some(why) = backend.non_conforming() {
        checks.push(Check::new(
            "conforming_device",
            1,
            1,
            Some(Mismatch {
                kernel: "device".into(),
                case: "how the device was opened".into(),
                expected: "opened with every float control the float model needs".into(),
                got: why.to_string(),
            }),
        ));
    }
    match crate::probes::run_diagnosed(backend, &mut |w| step("probes", w)) {
        Ok((check, failures)) => {
            checks.push(check);
            diagnosed.extend(failures);
        }
        Err(e) => checks.push(failed_check("probes", "probe kernels", e.to_string())),
    }

    let (mut mlp_wall, mut mlp_steps) = (0.0f64, 0u64);
    match conformance::compute(backend, &mut |w| step("conformance", w)) {
        Ok(outcome) => {
            let check = conformance::compare(&outcome.hashes, &options.golden);
            let failures = diagnose_conformance(backend, &outcome.hashes, &options.golden);
            let listed = failures.iter().map(|(_, f)| f.clone()).collect();
            checks.push(check.with_failures(listed));
            diagnosed.extend(failures);
            mlp_wall = outcome.mlp_wall.as_secs_f64();
            mlp_steps = outcome.mlp_steps;
        }
        Err(e) => checks.push(failed_check("conformance", "a case", e.to_string())),
    }

    checks.push(stability::run(
        backend,
        repeats,
        options.load.as_ref(),
        &mut |w| step("stability", w),
    ));

    step("limits", "device limits");
    let limits: Vec<LimitRecord> = backend
        .device_limits()
        .into_iter()
        .map(|l| LimitRecord {
            name: l.name,
            needed: l.needed,
            device: l.device,
        })
        .collect();
    let short: Vec<&LimitRecord> = limits.iter().filter(|l| l.device < l.needed).collect();
    checks.push(Check::new(
        "limits",
        limits.len() as u64,
        short.len() as u64,
        short.first().map(|l| Mismatch {
            kernel: "device".into(),
            case: l.name.clone(),
            expected: format!(">= {}", l.needed),
            got: l.device.to_string(),
        }),
    ));

    step(
        "performance",
        &format!("matmul {PERF_MATMUL}x{PERF_MATMUL}x{PERF_MATMUL}"),
    );
    let gflops =
        matmul_gflops(backend).map_or_else(|e| format!("error: {e}"), |g| format!("{g:.2}"));
    let performance = Performance {
        matmul_gflops: gflops,
        matmul_shape: format!("{PERF_MATMUL}x{PERF_MATMUL}x{PERF_MATMUL}"),
        mlp_steps_per_s: if mlp_wall > 0.0 {
            format!("{:.1}", mlp_steps as f64 / mlp_wall)
        } else {
            "n/a".into()
        },
        device_memory_bytes: backend.device_memory_bytes(),
        peak_device_bytes: backend.peak_device_bytes(),
        suite_seconds: format!("{:.1}", clock.elapsed().as_secs_f64()),
    };
    let passed = checks.iter().all(|c| c.passed);
    let finished = SystemTime::now();
    let valid_days = options
        .valid_days
        .clamp(1, lockstep_limits::MAX_CERTIFICATION_VALIDITY_DAYS);
    // Second precision, as the report writes it, so expiry minus finish is
    // exactly the validity asked for.
    let finished_s = finished
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Report {
        format: REPORT_FORMAT,
        suite_version: SUITE_VERSION.to_string(),
        bundle_id: options.bundle_id.clone(),
        device: DeviceIdentity::of(backend.fingerprint()),
        node: options.node.clone(),
        checks,
        limits,
        performance,
        passed,
        diagnosis: crate::diagnosis::count(&diagnosed),
        non_conforming: backend.non_conforming().map(str::to_string),
        started_at: rfc3339(started),
        finished_at: crate::report::format_rfc3339(finished_s),
        expires_at: crate::report::format_rfc3339(finished_s + u64::from(valid_days) * 86_400),
    }
}

/// Every failing case and example, run again and put down to a property.
fn diagnose_conformance(
    backend: &mut dyn Backend,
    got: &Golden,
    golden: &Golden,
) -> Vec<(Property, Failure)> {
    let (cases, examples) = conformance::failing(got, golden);
    let mut out = Vec::new();
    for case in &cases {
        let (property, detail) = diagnosis::case(backend, case);
        out.push((
            property,
            Failure {
                kernel: case.op.to_string(),
                case: case.describe(),
                property: property.as_str().to_string(),
                detail,
            },
        ));
    }
    for (name, json) in examples {
        let root = got.examples.get(name).cloned().unwrap_or_default();
        let property = diagnosis::example(&root, name, json);
        out.push((
            property,
            Failure {
                kernel: name.to_string(),
                case: format!("example {name} (trace root)"),
                property: property.as_str().to_string(),
                detail: format!(
                    "trace root {} expected {}",
                    root,
                    golden.examples.get(name).map_or("(none)", |s| s.as_str())
                ),
            },
        ));
    }
    out
}

fn failed_check(name: &str, what: &str, error: String) -> Check {
    Check::new(
        name,
        1,
        1,
        Some(Mismatch {
            kernel: what.to_string(),
            case: "the run stopped".into(),
            expected: "a result".into(),
            got: error,
        }),
    )
}

/// Best of three host-to-host runs of a square matmul, in GFLOP/s.
fn matmul_gflops(backend: &mut dyn Backend) -> Result<f64, lockstep_backend::BackendError> {
    let shape = vec![PERF_MATMUL, PERF_MATMUL];
    let a = Tensor::filled(shape.clone(), 21, Fill::Uniform).expect("within the tensor bound");
    let b = Tensor::filled(shape, 22, Fill::Uniform).expect("within the tensor bound");
    let op = Op::Matmul(Transpose::None);
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let t = Instant::now();
        backend.run(&op, &[&a, &b])?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    let flops = 2.0 * (PERF_MATMUL as f64).powi(3);
    Ok(flops / best / 1e9)
}
