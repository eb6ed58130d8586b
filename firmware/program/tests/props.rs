//! Property tests: the decoders never panic, whatever they are fed; random
//! programs either fail validation with a one-line error or run, with the
//! measured peak equal to the validated one and outputs equal to a replay.

mod common;

use std::collections::BTreeMap;

use lockstep_backend::{Backend, CpuBackend, Op};
use lockstep_program::{
    execute, validate, ExecOptions, OpStep, Program, RepeatStep, Step, TensorDecl, ValidateOptions,
};
use lockstep_tensor::Tensor;
use proptest::prelude::*;

/// JSON-shaped noise: pieces of the program syntax in random order.
fn json_noise() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        "\"version\"",
        "\"inputs\"",
        "\"outputs\"",
        "\"body\"",
        "\"op\"",
        "\"repeat\"",
        "\"attrs\"",
        "\"output\"",
        "\"name\"",
        "\"shape\"",
        "1",
        "0",
        "-1",
        "4294967296",
        "1e999",
        "0.5",
        "\"x\"",
        "\"relu\"",
        "true",
        "null",
        " ",
    ]);
    prop::collection::vec(pieces, 0..60).prop_map(|v| v.concat())
}

const NAMES: [&str; 5] = ["a", "b", "c", "d", "e"];
const UNARY: [&str; 4] = ["relu", "scale", "sum_rows", "sum_cols"];
const BINARY: [&str; 7] = [
    "add",
    "sub",
    "mul",
    "matmul",
    "matmul_tn",
    "matmul_nt",
    "relu_backward",
];

fn op_step() -> impl Strategy<Value = Step> {
    (
        any::<bool>(),
        0..UNARY.len().max(BINARY.len()),
        0..NAMES.len(),
        0..NAMES.len(),
        0..NAMES.len(),
        0..8u8,
    )
        .prop_map(|(binary, op, x, y, out, noise)| {
            let name = if binary {
                BINARY[op % BINARY.len()]
            } else {
                UNARY[op % UNARY.len()]
            };
            let mut inputs = vec![NAMES[x].to_string()];
            // Usually the right arity, sometimes not.
            if binary != (noise == 0) {
                inputs.push(NAMES[y].to_string());
            }
            let mut attrs = BTreeMap::new();
            if name == "scale" && noise != 1 {
                attrs.insert("alpha".to_string(), "0.5".to_string());
            }
            Step::Op(OpStep {
                op: name.to_string(),
                inputs,
                output: NAMES[out].to_string(),
                attrs,
            })
        })
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let step = op_step().prop_recursive(3, 24, 4, |inner| {
        (0u32..4, prop::collection::vec(inner, 0..4))
            .prop_map(|(times, body)| Step::Repeat(RepeatStep { times, body }))
    });
    prop::collection::vec(step, 1..8)
}

/// Makes most random programs valid, so they get past validation and run:
/// undefined reads become reads of `a`, ops whose shapes do not fit become
/// `relu` of their first input, empty or zero repeats get an op and a count,
/// and an op in a repeat body that would change the shape of a tensor from
/// before the body writes a fresh name instead.
fn repair(
    steps: &mut [Step],
    shapes: &mut BTreeMap<String, Vec<usize>>,
    before: &mut Vec<BTreeMap<String, Vec<usize>>>,
    fresh: &mut usize,
) {
    for step in steps {
        match step {
            Step::Op(s) => {
                for name in &mut s.inputs {
                    if !shapes.contains_key(name.as_str()) {
                        *name = "a".to_string();
                    }
                }
                let fits = Op::parse(&s.op, &s.attrs).ok().and_then(|op| {
                    let ins: Vec<&[usize]> =
                        s.inputs.iter().map(|n| shapes[n].as_slice()).collect();
                    op.output_shape(&ins).ok()
                });
                let shape = fits.unwrap_or_else(|| {
                    s.op = "relu".into();
                    s.inputs.truncate(1);
                    s.attrs.clear();
                    shapes[&s.inputs[0]].clone()
                });
                if before
                    .iter()
                    .any(|b| b.get(&s.output).is_some_and(|old| *old != shape))
                {
                    *fresh += 1;
                    s.output = format!("f{fresh}");
                }
                shapes.insert(s.output.clone(), shape);
            }
            Step::Repeat(r) => {
                r.times = r.times.max(1);
                if r.body.is_empty() {
                    r.body.push(Step::Op(OpStep {
                        op: "relu".into(),
                        inputs: vec!["a".into()],
                        output: "e".into(),
                        attrs: BTreeMap::new(),
                    }));
                }
                before.push(shapes.clone());
                repair(&mut r.body, shapes, before, fresh);
                before.pop();
            }
        }
    }
}

fn programs() -> impl Strategy<Value = Program> {
    (
        steps(),
        prop::collection::vec(0..NAMES.len(), 0..3),
        prop::sample::select(vec![vec![4u64, 4], vec![4, 3]]),
        0..4u8,
    )
        .prop_map(|(mut body, outs, b_shape, raw)| {
            let mut outputs: Vec<String> = outs.into_iter().map(|i| NAMES[i].to_string()).collect();
            if raw != 0 {
                let mut shapes = BTreeMap::new();
                shapes.insert("a".to_string(), vec![4, 4]);
                shapes.insert(
                    "b".to_string(),
                    b_shape.iter().map(|&d| d as usize).collect(),
                );
                repair(&mut body, &mut shapes, &mut Vec::new(), &mut 0);
                outputs.retain(|o| shapes.contains_key(o));
                outputs.dedup();
            }
            (body, outputs, b_shape)
        })
        .prop_map(|(body, outputs, b_shape)| Program {
            version: 1,
            inputs: vec![
                TensorDecl {
                    name: "a".into(),
                    shape: vec![4, 4],
                },
                TensorDecl {
                    name: "b".into(),
                    shape: b_shape,
                },
            ],
            outputs,
            body,
        })
}

fn replay(steps: &[Step], env: &mut BTreeMap<String, Tensor>, cpu: &mut CpuBackend) {
    for step in steps {
        match step {
            Step::Op(s) => {
                let op = Op::parse(&s.op, &s.attrs).unwrap();
                let ins: Vec<&Tensor> = s.inputs.iter().map(|n| &env[n]).collect();
                let out = cpu.run(&op, &ins).unwrap();
                env.insert(s.output.clone(), out);
            }
            Step::Repeat(r) => {
                for _ in 0..r.times {
                    replay(&r.body, env, cpu);
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn postcard_decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(p) = Program::from_postcard(&bytes) {
            // Only canonical bytes are accepted.
            prop_assert_eq!(p.to_postcard(), bytes);
        }
    }

    #[test]
    fn json_decoder_never_panics(text in json_noise()) {
        if let Ok(p) = Program::from_json(text.as_bytes()) {
            prop_assert_eq!(Program::from_json(p.to_json_pretty().as_bytes()).unwrap(), p);
        }
    }

    #[test]
    fn mutated_encodings_never_panic(p in programs(), at in any::<usize>(), byte in any::<u8>()) {
        let mut wire = p.to_postcard();
        let i = at % wire.len();
        wire[i] = byte;
        let _ = Program::from_postcard(&wire);
        wire.truncate(i);
        let _ = Program::from_postcard(&wire);
        let mut text = p.to_json_pretty().into_bytes();
        let i = at % text.len();
        text[i] = byte;
        let _ = Program::from_json(&text);
    }

    #[test]
    fn random_programs_validate_or_run(p in programs()) {
        prop_assert_eq!(Program::from_postcard(&p.to_postcard()).unwrap(), p.clone());
        prop_assert_eq!(Program::from_json(p.to_json_pretty().as_bytes()).unwrap(), p.clone());
        let v = match validate(&p, &ValidateOptions::default()) {
            Ok(v) => v,
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(!msg.is_empty() && !msg.contains('\n'), "{}", msg);
                return Ok(());
            }
        };
        let a = common::tensor(&[4, 4], 1);
        let b_shape: Vec<usize> = p.inputs[1].shape.iter().map(|&d| d as usize).collect();
        let b = common::tensor(&b_shape, 2);
        let ins = common::inputs(&[("a", &a), ("b", &b)]);
        let report = execute(&v, &mut CpuBackend::new(), ins.clone(), ExecOptions::default())
            .unwrap();
        prop_assert_eq!(report.peak_bytes, v.peak_bytes());
        prop_assert_eq!(report.op_count, v.op_count());
        prop_assert_eq!(report.trace.as_ref().unwrap().ops.len() as u64, v.op_count());
        let mut env = ins;
        replay(&p.body, &mut env, &mut CpuBackend::new());
        for (name, t) in &report.outputs {
            prop_assert!(t.bit_eq(&env[name]), "output {}", name);
        }
        // A limit one byte under the peak is refused, at some op.
        if v.peak_bytes() > 0 {
            let tight = ValidateOptions { memory_limit: v.peak_bytes() - 1 };
            prop_assert!(validate(&p, &tight).is_err());
        }
    }
}
