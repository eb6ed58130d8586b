//! Every validation error, with the step it names.

mod common;

use std::collections::BTreeMap;

use common::{invalid, program};
use lockstep_limits::{MAX_PROGRAM_NESTING, MAX_PROGRAM_OPS, MAX_REPEAT};
use lockstep_program::{
    validate, OpStep, Program, ProgramError, RepeatStep, Step, StepProblem, ValidateOptions,
};
use serde_json::{json, Value};

/// A program with inputs `a` (3x4) and `b` (4x5) around `body`.
fn with_body(outputs: Value, body: Value) -> Value {
    json!({
        "version": 1,
        "inputs": [{"name": "a", "shape": [3, 4]}, {"name": "b", "shape": [4, 5]}],
        "outputs": outputs,
        "body": body
    })
}

/// Asserts the error is about step `path` running `op` and its message
/// holds every needle.
fn at(e: &ProgramError, path: &str, op: &str, needles: &[&str]) {
    let msg = e.to_string();
    let site = e.site().unwrap_or_else(|| panic!("no site in {msg}"));
    assert_eq!(site.path.to_string(), path, "{msg}");
    assert_eq!(site.op, op, "{msg}");
    assert!(
        msg.starts_with(&format!("op {path} ({op}): ")),
        "message must start with the site: {msg}"
    );
    for n in needles {
        assert!(msg.contains(n), "{msg:?} lacks {n:?}");
    }
    assert!(!msg.contains('\n'), "one line: {msg}");
}

#[test]
fn unknown_op_and_bad_attributes() {
    let e = invalid(with_body(
        json!(["c"]),
        json!([{"op": "relu", "inputs": ["a"], "output": "c"}, {"op": "conv", "inputs": ["a"], "output": "d"}]),
    ));
    at(&e, "1", "conv", &["unknown op 'conv'", "known ops"]);
    let e = invalid(with_body(
        json!(["c"]),
        json!([{"op": "scale", "inputs": ["a"], "output": "c", "attrs": {"alpha": "two"}}]),
    ));
    at(
        &e,
        "0",
        "scale",
        &["attribute alpha=\"two\" is not a float"],
    );
    let e = invalid(with_body(
        json!(["c"]),
        json!([{"op": "relu", "inputs": ["a"], "output": "c", "attrs": {"alpha": 1}}]),
    ));
    at(&e, "0", "relu", &["'alpha' is not an attribute of relu"]);
}

#[test]
fn wrong_arity() {
    let e = invalid(with_body(
        json!(["c"]),
        json!([{"repeat": 2, "body": [
            {"op": "relu", "inputs": ["a"], "output": "c"},
            {"op": "add", "inputs": ["c"], "output": "c"}
        ]}]),
    ));
    at(&e, "0.1", "add", &["takes 2 input(s), got 1"]);
}

#[test]
fn shapes_that_do_not_fit() {
    let e = invalid(with_body(
        json!(["c"]),
        json!([
            {"op": "relu", "inputs": ["a"], "output": "c"},
            {"repeat": 3, "body": [
                {"op": "relu", "inputs": ["a"], "output": "d"},
                {"op": "relu", "inputs": ["b"], "output": "e"},
                {"op": "matmul", "inputs": ["b", "a"], "output": "c"}
            ]}
        ]),
    ));
    at(&e, "1.2", "matmul", &["shapes 4x5 and 3x4 do not fit"]);
    assert!(matches!(
        e,
        ProgramError::Step {
            problem: StepProblem::Op(_),
            ..
        }
    ));
}

#[test]
fn undeclared_tensors_and_cycles() {
    let e = invalid(with_body(
        json!(["c"]),
        json!([{"op": "add", "inputs": ["a", "q"], "output": "c"}]),
    ));
    at(&e, "0", "add", &["'q'", "undeclared"]);
    let e = invalid(with_body(
        json!(["c"]),
        json!([{"op": "add", "inputs": ["a", "c"], "output": "c"}]),
    ));
    at(&e, "0", "add", &["'c'", "cycle"]);
    // Read in the loop before the loop defines it: undefined on the first
    // iteration, whatever later ones would see.
    let e = invalid(with_body(
        json!(["d"]),
        json!([{"repeat": 2, "body": [
            {"op": "relu", "inputs": ["d"], "output": "e"},
            {"op": "relu", "inputs": ["a"], "output": "d"}
        ]}]),
    ));
    at(&e, "0.0", "relu", &["'d'", "undeclared"]);
}

#[test]
fn outputs_and_inputs() {
    let e = invalid(with_body(
        json!(["c", "z"]),
        json!([{"op": "relu", "inputs": ["a"], "output": "c"}]),
    ));
    assert_eq!(
        e.to_string(),
        "output 'z': never produced: no input or step defines it"
    );
    let e = invalid(with_body(
        json!(["c", "c"]),
        json!([{"op": "relu", "inputs": ["a"], "output": "c"}]),
    ));
    assert_eq!(e.to_string(), "output 'c': declared twice");
    let e = invalid(json!({
        "version": 1,
        "inputs": [{"name": "a", "shape": [2]}, {"name": "a", "shape": [3]}],
        "outputs": ["a"],
        "body": []
    }));
    assert_eq!(e.to_string(), "input 'a': declared twice");
    let e = invalid(json!({
        "version": 1,
        "inputs": [{"name": "a", "shape": [1u64 << 40, 1u64 << 40]}],
        "outputs": ["a"],
        "body": []
    }));
    assert!(e.to_string().contains("exceeds"), "{e}");
    let e = invalid(json!({"version": 2, "inputs": [], "outputs": [], "body": []}));
    assert!(e.to_string().contains("version 2"), "{e}");
}

#[test]
fn names_must_be_plain() {
    let e = invalid(with_body(
        json!(["c"]),
        json!([{"op": "relu", "inputs": ["a"], "output": "../c"}]),
    ));
    at(&e, "0", "relu", &["'../c' is not a valid tensor name"]);
    let e = invalid(json!({
        "version": 1,
        "inputs": [{"name": "a/b", "shape": [2]}],
        "outputs": [],
        "body": []
    }));
    assert!(
        e.to_string()
            .starts_with("input 'a/b': not a valid tensor name"),
        "{e}"
    );
}

#[test]
fn repeat_counts() {
    let body = json!([{"op": "relu", "inputs": ["a"], "output": "c"}]);
    let e = invalid(with_body(
        json!(["a"]),
        json!([{"op": "relu", "inputs": ["a"], "output": "c"}, {"repeat": 0, "body": body}]),
    ));
    at(&e, "1", "repeat", &["repeat count 0"]);
    let e = invalid(with_body(
        json!(["a"]),
        json!([{"repeat": MAX_REPEAT + 1, "body": body}]),
    ));
    at(
        &e,
        "0",
        "repeat",
        &[&format!("repeat count {}", MAX_REPEAT + 1)],
    );
    let e = invalid(with_body(json!(["a"]), json!([{"repeat": 2, "body": []}])));
    at(&e, "0", "repeat", &["empty"]);
}

#[test]
fn nesting_is_bounded() {
    let relu = Step::Op(OpStep {
        op: "relu".into(),
        inputs: vec!["a".into()],
        output: "c".into(),
        attrs: BTreeMap::new(),
    });
    let nest = |depth: usize| {
        let mut body = vec![relu.clone()];
        for _ in 0..depth {
            body = vec![Step::Repeat(RepeatStep { times: 1, body })];
        }
        let mut p = program(with_body(json!(["c"]), json!([])));
        p.body = body;
        p
    };
    let ok = nest(MAX_PROGRAM_NESTING);
    assert!(validate(&ok, &ValidateOptions::default()).is_ok());
    let e = validate(&nest(MAX_PROGRAM_NESTING + 1), &ValidateOptions::default()).unwrap_err();
    let path = ["0"; MAX_PROGRAM_NESTING + 1].join(".");
    at(&e, &path, "repeat", &["nested deeper than"]);
}

#[test]
fn total_op_count_is_bounded() {
    // MAX_PROGRAM_OPS executions of the first op fit; the second goes over.
    let reps = u32::try_from(MAX_PROGRAM_OPS / 4).unwrap();
    let e = invalid(with_body(
        json!(["c"]),
        json!([{"repeat": 4, "body": [{"repeat": reps, "body": [
            {"op": "relu", "inputs": ["a"], "output": "c"},
            {"op": "relu", "inputs": ["c"], "output": "c"}
        ]}]}]),
    ));
    at(
        &e,
        "0.0.1",
        "relu",
        &[
            &format!("more than {MAX_PROGRAM_OPS} ops"),
            &format!("runs {} times", MAX_PROGRAM_OPS),
        ],
    );
    let ok = program(with_body(
        json!(["c"]),
        json!([{"repeat": 4, "body": [{"repeat": reps, "body": [
            {"op": "relu", "inputs": ["a"], "output": "c"}
        ]}]}]),
    ));
    let v = validate(&ok, &ValidateOptions::default()).unwrap();
    assert_eq!(v.op_count(), MAX_PROGRAM_OPS);
}

#[test]
fn repeat_bodies_keep_carried_shapes() {
    let e = invalid(with_body(
        json!(["c"]),
        json!([
            {"op": "matmul", "inputs": ["a", "b"], "output": "c"},
            {"repeat": 5, "body": [
                {"op": "relu", "inputs": ["c"], "output": "d"},
                {"op": "sum_rows", "inputs": ["d"], "output": "c"}
            ]}
        ]),
    ));
    at(
        &e,
        "1.1",
        "sum_rows",
        &["'c' from 3x5 to 3", "exists before repeat block 1"],
    );
    // A tensor that only lives inside the body may change shape freely,
    // and so may a carried one that is put back before the body ends.
    let ok = program(with_body(
        json!(["c"]),
        json!([
            {"op": "matmul", "inputs": ["a", "b"], "output": "c"},
            {"repeat": 5, "body": [
                {"op": "relu", "inputs": ["c"], "output": "t"},
                {"op": "sum_rows", "inputs": ["t"], "output": "t"},
                {"op": "sum_cols", "inputs": ["c"], "output": "c"},
                {"op": "matmul", "inputs": ["a", "b"], "output": "c"}
            ]}
        ]),
    ));
    assert!(validate(&ok, &ValidateOptions::default()).is_ok());
}

#[test]
fn memory_limit_names_the_op() {
    let doc = with_body(
        json!(["e"]),
        json!([
            {"op": "relu", "inputs": ["a"], "output": "c"},
            {"op": "matmul", "inputs": ["a", "b"], "output": "d"},
            {"op": "matmul_nt", "inputs": ["d", "d"], "output": "e"}
        ]),
    );
    let p = program(doc);
    let v = validate(&p, &ValidateOptions::default()).unwrap();
    // a and b (48 + 80), then d (60) with a and b; a, b die; e (36) with d.
    assert_eq!(v.peak_bytes(), 48 + 80 + 60);
    let tight = ValidateOptions {
        memory_limit: v.peak_bytes(),
    };
    assert!(validate(&p, &tight).is_ok());
    let e = validate(
        &p,
        &ValidateOptions {
            memory_limit: v.peak_bytes() - 1,
        },
    )
    .unwrap_err();
    at(
        &e,
        "1",
        "matmul",
        &["188 bytes", "memory limit of 187 bytes"],
    );
    let e = validate(&p, &ValidateOptions { memory_limit: 100 }).unwrap_err();
    assert_eq!(
        e.to_string(),
        "the live inputs take 128 bytes, over the memory limit of 100 bytes"
    );
}

#[test]
fn errors_compare_structurally() {
    let p: Program = program(with_body(json!(["c"]), json!([{"repeat": 0, "body": []}])));
    let e = validate(&p, &ValidateOptions::default()).unwrap_err();
    assert!(matches!(
        e,
        ProgramError::Step {
            problem: StepProblem::RepeatCount(0),
            ..
        }
    ));
}
