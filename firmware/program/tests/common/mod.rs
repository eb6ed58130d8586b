//! Helpers shared by the program tests.

#![allow(dead_code)]

use std::collections::BTreeMap;

use lockstep_program::{validate, Program, ProgramError, ValidateOptions, ValidatedProgram};
use lockstep_tensor::{Fill, Tensor};

/// A program from a `serde_json::json!` value, through the JSON decoder.
pub fn program(doc: serde_json::Value) -> Program {
    Program::from_json(doc.to_string().as_bytes()).expect("test program decodes")
}

pub fn valid(doc: serde_json::Value) -> ValidatedProgram {
    validate(&program(doc), &ValidateOptions::default()).expect("test program validates")
}

pub fn invalid(doc: serde_json::Value) -> ProgramError {
    match validate(&program(doc), &ValidateOptions::default()) {
        Ok(_) => panic!("the program should not validate"),
        Err(e) => e,
    }
}

pub fn tensor(shape: &[usize], seed: u64) -> Tensor {
    Tensor::filled(shape.to_vec(), seed, Fill::Uniform).expect("small test tensor")
}

pub fn inputs(list: &[(&str, &Tensor)]) -> BTreeMap<String, Tensor> {
    list.iter()
        .map(|(n, t)| (n.to_string(), (*t).clone()))
        .collect()
}

/// A tiny linear regression by gradient descent: `steps` iterations of
/// `w -= lr * Xᵀ (X w - y)`, written with matmul, sub, matmul_tn and scale.
pub fn gradient_descent(m: usize, k: usize, steps: u32) -> serde_json::Value {
    serde_json::json!({
        "version": 1,
        "inputs": [
            {"name": "x", "shape": [m, k]},
            {"name": "y", "shape": [m, 1]},
            {"name": "w", "shape": [k, 1]}
        ],
        "outputs": ["w", "loss_grad"],
        "body": [
            {"repeat": steps, "body": [
                {"op": "matmul", "inputs": ["x", "w"], "output": "pred"},
                {"op": "sub", "inputs": ["pred", "y"], "output": "r"},
                {"op": "matmul_tn", "inputs": ["x", "r"], "output": "g"},
                {"op": "scale", "inputs": ["g"], "output": "step", "attrs": {"alpha": 0.05}},
                {"op": "sub", "inputs": ["w", "step"], "output": "w"}
            ]},
            {"op": "sum_cols", "inputs": ["g"], "output": "loss_grad"}
        ]
    })
}
