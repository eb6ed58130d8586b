//! `ExecOptions::fault`: with the test-only `fault-injection` feature it
//! corrupts exactly the chosen op's output (committed to the trace and used
//! downstream); without it, it changes nothing.

use lockstep_backend::CpuBackend;
use lockstep_program::fault::Fault;
use lockstep_program::{execute, validate, ExecOptions, Program, Trace};

fn run(fault: Option<Fault>) -> Trace {
    let p = Program::from_json(
        br#"{"version":1,"inputs":[],"outputs":["y"],
            "body":[{"op":"rand_normal","output":"y","attrs":{"shape":[8],"seed":1}},
                    {"repeat":6,"body":[{"op":"scale","inputs":["y"],"output":"y","attrs":{"alpha":"1.5"}}]}]}"#,
    )
    .unwrap();
    let v = validate(&p, &Default::default()).unwrap();
    let options = ExecOptions {
        fault,
        ..ExecOptions::default()
    };
    execute(&v, &mut CpuBackend::new(), Default::default(), options)
        .unwrap()
        .trace
        .unwrap()
}

#[test]
fn a_fault_changes_what_the_feature_says_it_does() {
    let clean = run(None);
    let faulty = run(Some(Fault::parse("op=3,bit=5").unwrap()));
    let differs: Vec<bool> = clean
        .ops
        .iter()
        .zip(&faulty.ops)
        .map(|(a, b)| a.output_sha256 != b.output_sha256)
        .collect();
    if lockstep_program::FAULT_INJECTION {
        // Op 3 is corrupted, and scale carries the corruption downstream.
        assert_eq!(differs, [false, false, false, true, true, true, true]);
    } else {
        assert!(differs.iter().all(|d| !d));
        assert_eq!(clean.root, faulty.root);
    }
}
