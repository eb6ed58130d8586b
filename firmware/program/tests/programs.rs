//! Programs run end to end on the CPU reference: results against the ops
//! applied by hand, the trace against an independent recomputation, and
//! liveness (the measured peak equals the validated one).

mod common;

use std::collections::BTreeMap;

use common::{gradient_descent, inputs, tensor, valid};
use lockstep_backend::{Backend, CpuBackend, Op};
use lockstep_program::trace::{self, Hash};
use lockstep_program::{execute, ExecOptions, Step, ValidatedProgram};
use lockstep_tensor::Tensor;
use serde_json::json;

fn run(p: &ValidatedProgram, ins: BTreeMap<String, Tensor>) -> lockstep_program::ExecReport {
    let mut cpu = CpuBackend::new();
    let report = execute(p, &mut cpu, ins, ExecOptions::default()).expect("program runs");
    assert_eq!(
        report.peak_bytes,
        p.peak_bytes(),
        "measured peak = validated peak"
    );
    assert_eq!(report.op_count, p.op_count());
    report
}

/// The program's ops applied one by one through the backend, in execution
/// order, with the leaves hashed on the side: an independent replay.
fn replay(
    steps: &[Step],
    env: &mut BTreeMap<String, Tensor>,
    cpu: &mut CpuBackend,
    leaves: &mut Vec<Hash>,
) {
    for step in steps {
        match step {
            Step::Op(s) => {
                let op = Op::parse(&s.op, &s.attrs).unwrap();
                let ins: Vec<&Tensor> = s.inputs.iter().map(|n| &env[n]).collect();
                let out = cpu.run(&op, &ins).unwrap();
                leaves.push(out.sha256());
                env.insert(s.output.clone(), out);
            }
            Step::Repeat(r) => {
                for _ in 0..r.times {
                    replay(&r.body, env, cpu, leaves);
                }
            }
        }
    }
}

fn check_against_replay(p: &ValidatedProgram, ins: &BTreeMap<String, Tensor>) {
    let report = run(p, ins.clone());
    let mut env = ins.clone();
    let mut leaves = Vec::new();
    replay(
        &p.program().body,
        &mut env,
        &mut CpuBackend::new(),
        &mut leaves,
    );
    let trace = report.trace.as_ref().expect("trace is on by default");
    assert_eq!(trace.leaves(), leaves);
    assert_eq!(trace.root, trace::root(&leaves));
    for (i, e) in trace.ops.iter().enumerate() {
        assert_eq!(e.index, i as u64);
    }
    for (name, t) in &report.outputs {
        assert!(t.bit_eq(&env[name]), "output {name}");
    }
    assert_eq!(report.outputs.len(), p.outputs().len());
}

#[test]
fn gradient_descent_loop() {
    let (m, k, steps) = (16, 4, 50);
    let p = valid(gradient_descent(m, k, steps));
    assert_eq!(p.op_count(), 5 * steps as u64 + 1);
    let x = tensor(&[m, k], 1);
    // y = x · w_true, so the loop should move w towards w_true.
    let w_true = Tensor::new(vec![k, 1], vec![0.5, -0.25, 0.75, 0.125]).unwrap();
    let y = CpuBackend::new()
        .run(
            &Op::parse("matmul", &BTreeMap::new()).unwrap(),
            &[&x, &w_true],
        )
        .unwrap();
    let w0 = Tensor::zeros(vec![k, 1]).unwrap();
    let ins = inputs(&[("x", &x), ("y", &y), ("w", &w0)]);
    check_against_replay(&p, &ins);

    let report = run(&p, ins.clone());
    let w = &report.outputs["w"];
    let dist = |a: &Tensor| -> f32 {
        a.data()
            .iter()
            .zip(w_true.data())
            .map(|(p, q)| (p - q) * (p - q))
            .sum()
    };
    assert!(
        dist(w) < dist(&w0) * 0.1,
        "gradient descent converges: {} -> {}",
        dist(&w0),
        dist(w)
    );

    // The same program on the same backend twice: the same root, bit for bit.
    let again = run(&p, ins);
    assert_eq!(
        again.trace.as_ref().unwrap().root,
        report.trace.as_ref().unwrap().root
    );
    assert!(again.outputs["w"].bit_eq(w));
    // Paths: iteration after iteration of the loop body, then op 1.
    let trace = report.trace.unwrap();
    let paths: Vec<String> = trace.ops.iter().map(|e| e.path.to_string()).collect();
    assert_eq!(&paths[..6], ["0.0", "0.1", "0.2", "0.3", "0.4", "0.0"]);
    assert_eq!(paths.last().unwrap(), "1");
    assert_eq!(trace.ops[2].op, "matmul_tn");
}

#[test]
fn every_existing_op_in_one_program() {
    let p = valid(json!({
        "version": 1,
        "inputs": [{"name": "a", "shape": [3, 4]}, {"name": "b", "shape": [4, 5]}],
        "outputs": ["rows", "cols", "back", "nt", "prod"],
        "body": [
            {"op": "matmul", "inputs": ["a", "b"], "output": "c"},
            {"op": "relu", "inputs": ["c"], "output": "h"},
            {"op": "add", "inputs": ["h", "c"], "output": "s"},
            {"op": "mul", "inputs": ["s", "h"], "output": "prod"},
            {"op": "scale", "inputs": ["prod"], "output": "sc", "attrs": {"alpha": "0x3f000000"}},
            {"op": "relu_backward", "inputs": ["sc", "c"], "output": "back"},
            {"op": "sum_rows", "inputs": ["back"], "output": "rows"},
            {"op": "sum_cols", "inputs": ["back"], "output": "cols"},
            {"op": "matmul_tn", "inputs": ["a", "a"], "output": "ata"},
            {"op": "matmul_nt", "inputs": ["ata", "ata"], "output": "nt"}
        ]
    }));
    let (a, b) = (tensor(&[3, 4], 2), tensor(&[4, 5], 3));
    check_against_replay(&p, &inputs(&[("a", &a), ("b", &b)]));
    let shapes: Vec<(String, Vec<usize>)> = p
        .outputs()
        .iter()
        .map(|o| (o.name.clone(), o.shape.clone()))
        .collect();
    assert_eq!(shapes[0], ("rows".to_string(), vec![3]));
    assert_eq!(shapes[1], ("cols".to_string(), vec![5]));
    assert_eq!(shapes[3], ("nt".to_string(), vec![4, 4]));
}

#[test]
fn tensors_are_freed_after_their_last_use() {
    // A chain: each step's input dies as soon as the next exists.
    let p = valid(json!({
        "version": 1,
        "inputs": [{"name": "x", "shape": [1000]}],
        "outputs": ["d"],
        "body": [
            {"op": "relu", "inputs": ["x"], "output": "a"},
            {"op": "relu", "inputs": ["a"], "output": "b"},
            {"op": "relu", "inputs": ["b"], "output": "c"},
            {"op": "relu", "inputs": ["c"], "output": "d"}
        ]
    }));
    assert_eq!(p.peak_bytes(), 2 * 4000);
    let x = tensor(&[1000], 4);
    run(&p, inputs(&[("x", &x)]));

    // Keeping x to the end (it is an output) costs one more tensor.
    let p = valid(json!({
        "version": 1,
        "inputs": [{"name": "x", "shape": [1000]}],
        "outputs": ["d", "x"],
        "body": [
            {"op": "relu", "inputs": ["x"], "output": "a"},
            {"op": "relu", "inputs": ["a"], "output": "b"},
            {"op": "relu", "inputs": ["b"], "output": "d"}
        ]
    }));
    assert_eq!(p.peak_bytes(), 3 * 4000);
    let r = run(&p, inputs(&[("x", &x)]));
    assert!(r.outputs["x"].bit_eq(&x));
}

#[test]
fn loops_keep_what_the_next_iteration_reads() {
    // x is read in every iteration, so it lives through the loop; t is
    // rewritten each iteration before it is read.
    let p = valid(json!({
        "version": 1,
        "inputs": [{"name": "x", "shape": [100]}, {"name": "acc", "shape": [100]}],
        "outputs": ["acc"],
        "body": [
            {"repeat": 4, "body": [
                {"op": "relu", "inputs": ["x"], "output": "t"},
                {"op": "add", "inputs": ["acc", "t"], "output": "acc"}
            ]},
            {"op": "scale", "inputs": ["acc"], "output": "acc", "attrs": {"alpha": 2}}
        ]
    }));
    // x, acc, t and the new acc during the add.
    assert_eq!(p.peak_bytes(), 4 * 400);
    let (x, acc) = (tensor(&[100], 5), tensor(&[100], 6));
    check_against_replay(&p, &inputs(&[("x", &x), ("acc", &acc)]));

    // A tensor the loop defines and the code after it reads survives the
    // loop; nested loops; a dead input is dropped at once.
    let p = valid(json!({
        "version": 1,
        "inputs": [
            {"name": "x", "shape": [10, 10]},
            {"name": "unused", "shape": [1000]}
        ],
        "outputs": ["z"],
        "body": [
            {"repeat": 3, "body": [
                {"op": "matmul", "inputs": ["x", "x"], "output": "y"},
                {"repeat": 2, "body": [
                    {"op": "relu", "inputs": ["y"], "output": "y"},
                    {"op": "scale", "inputs": ["y"], "output": "y", "attrs": {"alpha": 0.5}}
                ]}
            ]},
            {"op": "sum_rows", "inputs": ["y"], "output": "z"}
        ]
    }));
    assert_eq!(p.op_count(), 3 * (1 + 2 * 2) + 1);
    assert_eq!(p.peak_bytes(), 3 * 400, "the unused input is not counted");
    let x = tensor(&[10, 10], 7);
    let unused = tensor(&[1000], 8);
    check_against_replay(&p, &inputs(&[("x", &x), ("unused", &unused)]));
}

#[test]
fn progress_and_no_trace() {
    let p = valid(gradient_descent(8, 2, 3));
    let x = tensor(&[8, 2], 1);
    let y = tensor(&[8, 1], 2);
    let w = tensor(&[2, 1], 3);
    let mut seen = Vec::new();
    let mut progress = |done: u64, total: u64| seen.push((done, total));
    let report = execute(
        &p,
        &mut CpuBackend::new(),
        inputs(&[("x", &x), ("y", &y), ("w", &w)]),
        ExecOptions {
            trace: false,
            progress: Some(&mut progress),
            deadline: None,
            ..ExecOptions::default()
        },
    )
    .unwrap();
    assert!(report.trace.is_none());
    let total = p.op_count();
    assert_eq!(seen, (1..=total).map(|d| (d, total)).collect::<Vec<_>>());
    // Tracing does not change results.
    let traced = run(&p, inputs(&[("x", &x), ("y", &y), ("w", &w)]));
    assert!(traced.outputs["w"].bit_eq(&report.outputs["w"]));
}

#[test]
fn inputs_must_match_the_declarations() {
    let p = valid(gradient_descent(8, 2, 1));
    let x = tensor(&[8, 2], 1);
    let y = tensor(&[8, 1], 2);
    let w = tensor(&[2, 1], 3);
    let mut cpu = CpuBackend::new();
    let err = |ins| {
        execute(&p, &mut CpuBackend::new(), ins, ExecOptions::default())
            .unwrap_err()
            .to_string()
    };
    let e = err(inputs(&[("x", &x), ("y", &y)]));
    assert!(e.contains("input 'w'") && e.contains("not given"), "{e}");
    let e = err(inputs(&[("x", &x), ("y", &y), ("w", &w), ("v", &w)]));
    assert!(e.contains("input 'v'") && e.contains("not declared"), "{e}");
    let e = err(inputs(&[("x", &x), ("y", &x), ("w", &w)]));
    assert!(e.contains("input 'y'") && e.contains("8x2"), "{e}");
    // The failures left nothing behind: the backend still runs the program.
    assert!(execute(
        &p,
        &mut cpu,
        inputs(&[("x", &x), ("y", &y), ("w", &w)]),
        ExecOptions::default()
    )
    .is_ok());
}

#[test]
fn inclusion_proofs_for_an_executed_op() {
    let p = valid(gradient_descent(8, 2, 4));
    let ins = inputs(&[
        ("x", &tensor(&[8, 2], 1)),
        ("y", &tensor(&[8, 1], 2)),
        ("w", &tensor(&[2, 1], 3)),
    ]);
    let t = run(&p, ins).trace.unwrap();
    let leaves = t.leaves();
    let n = leaves.len() as u64;
    for (i, leaf) in leaves.iter().enumerate() {
        let proof = trace::prove(&leaves, i).unwrap();
        assert!(trace::verify(&t.root, n, i as u64, leaf, &proof));
    }
}

#[test]
fn generator_ops_take_no_inputs() {
    // A program with no inputs at all: a generator op (arity 0) makes the
    // data; attributes written as JSON numbers and arrays.
    let p = valid(json!({
        "version": 1,
        "inputs": [],
        "outputs": ["y"],
        "body": [
            {"op": "rand_normal", "output": "x", "attrs": {"shape": [4, 3], "seed": 7}},
            {"repeat": 3, "body": [
                {"op": "relu", "inputs": ["x"], "output": "x"}
            ]},
            {"op": "sum_cols", "inputs": ["x"], "output": "y"}
        ]
    }));
    assert_eq!(p.ops()[0].output_shape, vec![4, 3]);
    assert_eq!(p.op_count(), 5);
    check_against_replay(&p, &BTreeMap::new());
    let a = run(&p, BTreeMap::new());
    let b = run(&p, BTreeMap::new());
    assert_eq!(a.trace.unwrap().root, b.trace.unwrap().root);
}

#[test]
fn a_passed_deadline_stops_the_run_between_ops() {
    let program = lockstep_program::Program::from_json(
        br#"{"version":1,"inputs":[],"outputs":["y"],
            "body":[{"op":"rand_normal","output":"y","attrs":{"shape":[4],"seed":1}},
                    {"repeat":10,"body":[{"op":"relu","inputs":["y"],"output":"y"}]}]}"#,
    )
    .unwrap();
    let v = lockstep_program::validate(&program, &Default::default()).unwrap();
    let options = ExecOptions {
        deadline: Some(std::time::Instant::now()),
        ..ExecOptions::default()
    };
    std::thread::sleep(std::time::Duration::from_millis(2));
    let err = execute(&v, &mut CpuBackend::new(), Default::default(), options).unwrap_err();
    assert!(
        matches!(err, lockstep_program::ExecError::Deadline { done: 0, .. }),
        "{err}"
    );
}
