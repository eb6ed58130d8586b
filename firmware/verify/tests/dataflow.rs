//! The dataflow derived from a program's structure against the executor's
//! own trace: every leaf's op and path match, and re-running each leaf's op
//! on the tensors its sources name reproduces that leaf's hash.

use std::collections::BTreeMap;
use std::path::Path;

use lockstep_backend::{Backend, CpuBackend};
use lockstep_program::{execute, validate, ExecOptions, Program, TraceEntry};
use lockstep_tensor::{Fill, Tensor};
use lockstep_verify::{Dataflow, Source};

fn check(program: &Program, inputs: BTreeMap<String, Tensor>) {
    let v = validate(program, &Default::default()).unwrap();
    let flow = Dataflow::of(&v);
    assert_eq!(flow.len(), v.op_count());
    let mut outputs: Vec<Tensor> = Vec::new();
    let mut observe = |e: &TraceEntry, t: &Tensor| {
        assert_eq!(e.index as usize, outputs.len());
        outputs.push(t.clone());
    };
    let report = execute(
        &v,
        &mut CpuBackend::new(),
        inputs.clone(),
        ExecOptions {
            observer: Some(&mut observe),
            ..ExecOptions::default()
        },
    )
    .unwrap();
    let trace = report.trace.unwrap();
    let mut cpu = CpuBackend::new();
    for entry in &trace.ops {
        let leaf = flow.get(entry.index).unwrap();
        let vop = &v.ops()[leaf.op];
        assert_eq!(vop.path, entry.path);
        let operands: Vec<&Tensor> = leaf
            .inputs
            .iter()
            .map(|s| match s {
                Source::Input(n) => &inputs[n],
                Source::Leaf(j) => {
                    assert!(*j < entry.index);
                    &outputs[*j as usize]
                }
            })
            .collect();
        let out = cpu.run(&vop.op, &operands).unwrap();
        assert_eq!(out.sha256(), entry.output_sha256, "leaf {}", entry.index);
    }
}

#[test]
fn a_program_with_inputs_and_nested_repeats() {
    let p = Program::from_json(
        br#"{"version":1,"inputs":[{"name":"x","shape":[4,3]},{"name":"w","shape":[3,3]}],
            "outputs":["y","x"],
            "body":[{"op":"matmul","inputs":["x","w"],"output":"y"},
                    {"repeat":3,"body":[
                        {"op":"relu","inputs":["y"],"output":"y"},
                        {"repeat":2,"body":[{"op":"matmul","inputs":["y","w"],"output":"y"}]},
                        {"op":"add","inputs":["y","x"],"output":"y"}]}]}"#,
    )
    .unwrap();
    let inputs = BTreeMap::from([
        (
            "x".to_string(),
            Tensor::filled(vec![4, 3], 1, Fill::Uniform).unwrap(),
        ),
        (
            "w".to_string(),
            Tensor::filled(vec![3, 3], 2, Fill::Uniform).unwrap(),
        ),
    ]);
    check(&p, inputs);
}

#[test]
fn the_mlp_example() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/mlp-train.json");
    let p = Program::from_json(&std::fs::read(path).unwrap()).unwrap();
    check(&p, BTreeMap::new());
}
