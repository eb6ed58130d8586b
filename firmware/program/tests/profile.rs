//! The executor's per-op profile and transfer counters, on the CPU
//! reference.

mod common;

use std::collections::BTreeMap;

use common::{gradient_descent, inputs, tensor, valid};
use lockstep_backend::{CpuBackend, TransferCounters};
use lockstep_program::{execute, ExecOptions, ExecReport};

fn run_gradient_descent(steps: u32, profile: bool) -> ExecReport {
    let p = valid(gradient_descent(8, 2, steps));
    let (x, y, w) = (tensor(&[8, 2], 1), tensor(&[8, 1], 2), tensor(&[2, 1], 3));
    execute(
        &p,
        &mut CpuBackend::new(),
        inputs(&[("x", &x), ("y", &y), ("w", &w)]),
        ExecOptions {
            profile,
            ..ExecOptions::default()
        },
    )
    .expect("program runs")
}

#[test]
fn profile_counts_every_execution_per_op_name() {
    let report = run_gradient_descent(5, true);
    let profile = report.profile.as_ref().expect("profile on");
    let counts: BTreeMap<&str, u64> = profile.iter().map(|r| (r.op.as_str(), r.count)).collect();
    // Five iterations of matmul, sub, matmul_tn, scale, sub; then sum_cols.
    let want: BTreeMap<&str, u64> = [
        ("matmul", 5),
        ("matmul_tn", 5),
        ("scale", 5),
        ("sub", 10),
        ("sum_cols", 1),
    ]
    .into_iter()
    .collect();
    assert_eq!(counts, want);

    // The same counts as the trace's executed ops, and their sum is the run's.
    let mut from_trace: BTreeMap<&str, u64> = BTreeMap::new();
    for e in &report.trace.as_ref().unwrap().ops {
        *from_trace.entry(e.op).or_default() += 1;
    }
    assert_eq!(counts, from_trace);
    assert_eq!(counts.values().sum::<u64>(), report.op_count);

    // Longest first; each row's max within its total; the total within the run.
    for pair in profile.windows(2) {
        assert!(pair[0].total >= pair[1].total, "{profile:?}");
    }
    for row in profile {
        assert!(row.max <= row.total, "{row:?}");
    }
    let timed: std::time::Duration = profile.iter().map(|r| r.total).sum();
    assert!(timed <= report.wall, "{timed:?} > {:?}", report.wall);
}

#[test]
fn profile_is_none_when_off() {
    let report = run_gradient_descent(3, false);
    assert!(report.profile.is_none());
    assert!(!ExecOptions::default().profile);
}

#[test]
fn the_cpu_reference_reports_no_transfers() {
    for profile in [false, true] {
        let report = run_gradient_descent(2, profile);
        assert_eq!(report.transfers, TransferCounters::default());
    }
}
