//! The lowering on models built here from the generated protobuf types:
//! which Lockstep ops each ONNX form becomes, that the result runs on the
//! CPU reference with the values the ONNX definition gives, and that
//! everything unsupported or broken is one typed error naming the node.
//! Models from the `onnx` package, checked against onnxruntime, are in
//! `firmware/cli/tests/onnx_import.rs`.

use std::collections::BTreeMap;

use lockstep_backend::CpuBackend;
use lockstep_onnx::proto::attribute_proto::AttributeType;
use lockstep_onnx::proto::tensor_proto::DataType;
use lockstep_onnx::proto::tensor_shape_proto::{dimension, Dimension};
use lockstep_onnx::proto::{
    type_proto, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};
use lockstep_onnx::{import, lower, ImportError, Imported};
use lockstep_program::{execute, validate, ExecOptions, Step, ValidateOptions};
use lockstep_tensor::Tensor;
use proptest::prelude::*;
use prost::Message;

fn info(name: &str, dtype: DataType, dims: &[Option<i64>]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Some(n) => dimension::Value::DimValue(*n),
                None => dimension::Value::DimParam("batch".into()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(dtype as i32),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn input(name: &str, dims: &[i64]) -> ValueInfoProto {
    let dims: Vec<Option<i64>> = dims.iter().map(|&d| Some(d)).collect();
    info(name, DataType::Float, &dims)
}

fn floats(name: &str, dims: &[i64], data: Vec<f32>) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(DataType::Float as i32),
        raw_data: Some(data.iter().flat_map(|f| f.to_le_bytes()).collect()),
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], outputs: &[&str], attrs: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        op_type: Some(op.into()),
        name: Some(format!("the_{}", op.to_ascii_lowercase())),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute: attrs,
        ..Default::default()
    }
}

fn int_attr(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        i: Some(v),
        r#type: Some(AttributeType::Int as i32),
        ..Default::default()
    }
}

fn float_attr(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        f: Some(v),
        r#type: Some(AttributeType::Float as i32),
        ..Default::default()
    }
}

fn string_attr(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        s: Some(v.as_bytes().to_vec()),
        r#type: Some(AttributeType::String as i32),
        ..Default::default()
    }
}

fn model(
    nodes: Vec<NodeProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: &[&str],
    inits: Vec<TensorProto>,
    opset: i64,
) -> ModelProto {
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(opset),
        }],
        graph: Some(GraphProto {
            name: Some("g".into()),
            node: nodes,
            input: inputs,
            output: outputs.iter().map(|o| input(o, &[])).collect(),
            initializer: inits,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn ops(body: &[Step]) -> Vec<String> {
    body.iter()
        .map(|s| match s {
            Step::Op(op) => op.op.clone(),
            Step::Repeat(_) => "repeat".into(),
        })
        .collect()
}

/// Runs an import on the CPU reference; `given` are the graph inputs.
fn run(imported: &Imported, given: &[(&str, Tensor)]) -> BTreeMap<String, Tensor> {
    let program = validate(&imported.program, &ValidateOptions::default()).unwrap();
    let mut inputs: BTreeMap<String, Tensor> = imported.constants.iter().cloned().collect();
    for (name, t) in given {
        inputs.insert(name.to_string(), t.clone());
    }
    let mut backend = CpuBackend::new();
    let report = execute(&program, &mut backend, inputs, ExecOptions::default()).unwrap();
    report.outputs.into_iter().collect()
}

/// PyTorch's Linear: Gemm(transB=1) with a bias row.
fn linear_model() -> ModelProto {
    model(
        vec![
            node(
                "Gemm",
                &["onnx::input", "w", "b"],
                &["h"],
                vec![int_attr("transB", 1)],
            ),
            node("Relu", &["h"], &["y"], vec![]),
        ],
        vec![input("onnx::input", &[2, 3])],
        &["y"],
        vec![
            floats("w", &[2, 3], vec![1.0, 0.5, -1.0, 2.0, 0.0, 0.25]),
            floats("b", &[2], vec![2.0, 0.25]),
        ],
        17,
    )
}

#[test]
fn a_linear_layer_is_matmul_nt_and_bias_add_with_onnx_values() {
    let imported = import(&linear_model().encode_to_vec()).unwrap();
    assert_eq!(
        ops(&imported.program.body),
        ["matmul_nt", "bias_add", "relu"]
    );
    assert_eq!(
        imported.renamed,
        [("onnx::input".to_string(), "onnx__input".to_string())]
    );
    assert_eq!(imported.program.outputs, ["y"]);
    let names: Vec<&str> = imported.constants.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["w", "b"]);
    let x = Tensor::new(vec![2, 3], vec![1.0, 2.0, 3.0, -1.0, 0.0, 4.0]).unwrap();
    let out = run(&imported, &[("onnx__input", x)]);
    // relu(x · wᵀ + b): row 0 [-1 + 2, 2.75 + 0.25], row 1 [-5 + 2, -1 + 0.25].
    let y = &out["y"];
    assert_eq!(y.shape(), [2, 2]);
    for (got, want) in y.data().iter().zip([1.0f32, 3.0, 0.0, 0.0]) {
        assert_eq!(got.to_bits(), want.to_bits());
    }
}

#[test]
fn scaled_gemm_full_c_broadcast_constants_and_aliases() {
    let m = model(
        vec![
            node(
                "Gemm",
                &["x", "w", "c"],
                &["g"],
                vec![float_attr("alpha", 0.5), float_attr("beta", 2.0)],
            ),
            node("Sub", &["g", "k"], &["d"], vec![]),
            node("Identity", &["d"], &["i"], vec![]),
            node("Identity", &["x"], &["xo"], vec![]),
        ],
        vec![input("x", &[2, 2])],
        &["i", "xo"],
        vec![
            floats("w", &[2, 2], vec![1.0, 2.0, 3.0, 4.0]),
            floats("c", &[2, 2], vec![1.0, 1.0, 1.0, 1.0]),
            floats("k", &[], vec![0.25]),
        ],
        17,
    );
    let imported = lower(&m).unwrap();
    assert_eq!(
        ops(&imported.program.body),
        ["matmul", "scale", "scale", "add", "sub", "scale", "scale"]
    );
    let x = Tensor::new(vec![2, 2], vec![1.0, 0.0, 0.0, 1.0]).unwrap();
    let out = run(&imported, &[("x", x.clone())]);
    // 0.5 * (x · w) + 2 * c - 0.25 with x = I.
    let want = [
        0.5f32 + 2.0 - 0.25,
        1.0 + 2.0 - 0.25,
        1.5 + 2.0 - 0.25,
        2.0 + 2.0 - 0.25,
    ];
    assert_eq!(out["i"].data(), want);
    assert!(out["xo"].bit_eq(&x));
    // The scalar k was repeated to [2, 2] at import time.
    let k = imported
        .constants
        .iter()
        .find(|(n, _)| n.starts_with("k."))
        .unwrap();
    assert_eq!(k.1.shape(), [2, 2]);
}

#[test]
fn layernorm_softmax_transpose_and_constant_reshapes() {
    let shape = TensorProto {
        name: Some("shape".into()),
        dims: vec![1],
        data_type: Some(DataType::Int64 as i32),
        int64_data: vec![-1],
        ..Default::default()
    };
    let m = model(
        vec![
            node("Reshape", &["gamma2d", "shape"], &["gamma"], vec![]),
            node(
                "LayerNormalization",
                &["x", "gamma"],
                &["n"],
                vec![float_attr("epsilon", 1e-3)],
            ),
            node("Transpose", &["n"], &["t"], vec![]),
            node("Softmax", &["t"], &["y"], vec![int_attr("axis", 1)]),
        ],
        vec![input("x", &[2, 3])],
        &["y"],
        vec![floats("gamma2d", &[1, 3], vec![1.0, 2.0, 3.0]), shape],
        17,
    );
    let imported = lower(&m).unwrap();
    assert_eq!(
        ops(&imported.program.body),
        ["layernorm_rows", "transpose", "softmax_rows"]
    );
    // No B: a zero bias is shipped; gamma was reshaped to [3].
    let shapes: Vec<Vec<usize>> = imported
        .constants
        .iter()
        .map(|(_, t)| t.shape().to_vec())
        .collect();
    assert_eq!(shapes, [vec![3], vec![3]]);
    let x = Tensor::new(vec![2, 3], vec![1.0, 2.0, 3.0, 0.0, 0.0, 6.0]).unwrap();
    let y = &run(&imported, &[("x", x)])["y"];
    assert_eq!(y.shape(), [3, 2]);
    for row in y.data().chunks(2) {
        let sum: f32 = row.iter().sum();
        assert!((sum - 1.0).abs() < 1e-6, "{row:?}");
    }
}

#[test]
fn exact_gelu_is_onnx_function_body_op_by_op() {
    let m = model(
        vec![
            node("Gelu", &["x"], &["y"], vec![]),
            node("Erf", &["x"], &["e"], vec![]),
        ],
        vec![input("x", &[1, 3])],
        &["y", "e"],
        vec![],
        20,
    );
    let imported = lower(&m).unwrap();
    assert_eq!(
        ops(&imported.program.body),
        ["full", "div", "erf", "affine", "scale", "mul", "erf"]
    );
    let x = Tensor::new(vec![1, 3], vec![-1.0, 0.0, 2.0]).unwrap();
    let out = run(&imported, &[("x", x)]);
    let e = lockstep_kernels::reference::math::erf;
    let div = lockstep_kernels::reference::math::div;
    for (i, &x) in [-1.0f32, 0.0, 2.0].iter().enumerate() {
        let want = (x * 0.5) * (e(div(x, std::f32::consts::SQRT_2)) + 1.0);
        assert_eq!(out["y"].data()[i].to_bits(), want.to_bits(), "gelu({x})");
        assert_eq!(out["e"].data()[i].to_bits(), e(x).to_bits(), "erf({x})");
    }
}

fn why(m: &ModelProto) -> String {
    lower(m).unwrap_err().to_string()
}

#[test]
fn unsupported_things_name_the_node_the_op_and_why() {
    let one = |n: NodeProto| model(vec![n], vec![input("x", &[2, 3])], &["y"], vec![], 17);
    assert_eq!(
        why(&one(node("Cos", &["x"], &["y"], vec![])))
            .split(" (supported")
            .next()
            .unwrap(),
        "node 'the_cos' (Cos): op not supported by lockstep import"
    );
    let mut gelu = node(
        "Gelu",
        &["x"],
        &["y"],
        vec![string_attr("approximate", "fast")],
    );
    gelu.name = None;
    assert_eq!(
        why(&model(
            vec![gelu],
            vec![input("x", &[2, 3])],
            &["y"],
            vec![],
            20
        )),
        "node '#0 -> y' (Gelu): approximate='fast' is not an ONNX Gelu form"
    );
    assert!(
        why(&one(node("Relu", &["x"], &["y"], vec![int_attr("odd", 1)])))
            .contains("attribute 'odd' is not supported")
    );
    assert!(why(&one(node(
        "Softmax",
        &["x"],
        &["y"],
        vec![int_attr("axis", 0)]
    )))
    .contains("only the last axis"));
    assert!(why(&one(node("Relu", &["nowhere"], &["y"], vec![])))
        .contains("reads 'nowhere', which no input"));
    let mut custom = node("Relu", &["x"], &["y"], vec![]);
    custom.domain = Some("com.microsoft".into());
    assert!(why(&one(custom)).contains("domain 'com.microsoft'"));
    let mismatched = model(
        vec![node("MatMul", &["a", "b"], &["y"], vec![])],
        vec![input("a", &[2, 2, 3]), input("b", &[3, 3, 2])],
        &["y"],
        vec![],
        17,
    );
    assert!(why(&mismatched).contains("batch dims must be equal"));
    let computed_broadcast = model(
        vec![node("Mul", &["a", "b"], &["y"], vec![])],
        vec![input("a", &[2, 3]), input("b", &[3])],
        &["y"],
        vec![],
        17,
    );
    assert!(why(&computed_broadcast).contains("broadcasting a computed tensor"));
}

#[test]
fn interfaces_opsets_and_initializers_are_checked() {
    let relu = || vec![node("Relu", &["x"], &["y"], vec![])];
    let dynamic = model(
        relu(),
        vec![info("x", DataType::Float, &[None, Some(3)])],
        &["y"],
        vec![],
        17,
    );
    assert_eq!(
        why(&dynamic),
        "input 'x': dynamic dimension 'batch': export with fixed shapes (no dynamic_axes)"
    );
    let ints = model(
        relu(),
        vec![info("x", DataType::Int64, &[Some(3)])],
        &["y"],
        vec![],
        17,
    );
    assert!(why(&ints).contains("int64 graph input, which only Gather may read"));
    let doubles = model(
        relu(),
        vec![info("x", DataType::Double, &[Some(3)])],
        &["y"],
        vec![],
        17,
    );
    assert!(why(&doubles).contains("dtype DOUBLE is not supported"));
    let old = model(relu(), vec![input("x", &[3])], &["y"], vec![], 11);
    assert!(
        matches!(lower(&old), Err(ImportError::Opset(_))),
        "{}",
        why(&old)
    );
    let mut bad = floats("w", &[4], vec![1.0]);
    bad.raw_data = Some(vec![0; 5]);
    let broken = model(relu(), vec![input("x", &[3])], &["y"], vec![bad], 17);
    assert!(why(&broken).starts_with("initializer 'w': raw_data is 5 bytes"));
    let mut none = linear_model();
    none.graph = None;
    assert_eq!(why(&none), "not a valid ONNX model: the model has no graph");
}

#[test]
fn truncated_and_empty_files_are_corrupt_not_panics() {
    let bytes = linear_model().encode_to_vec();
    assert!(matches!(import(&[]), Err(ImportError::Corrupt(_))));
    for cut in 1..bytes.len() {
        // Any prefix is either refused or, where the cut falls between
        // fields, a smaller valid message that the lowering refuses.
        assert!(import(&bytes[..cut]).is_err(), "prefix of {cut} bytes");
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = import(&bytes);
    }

    #[test]
    fn flipped_bytes_of_a_model_never_panic(at in any::<prop::sample::Index>(), bit in 0u8..8) {
        let mut bytes = linear_model().encode_to_vec();
        let i = at.index(bytes.len());
        bytes[i] ^= 1 << bit;
        let _ = import(&bytes);
    }
}

#[test]
fn a_batched_matmul_is_each_batch_s_matmul_bit_for_bit() {
    let batched = model(
        vec![node("MatMul", &["a", "b"], &["y"], vec![])],
        vec![input("a", &[2, 2, 3]), input("b", &[2, 3, 2])],
        &["y"],
        vec![],
        17,
    );
    let imported = lower(&batched).unwrap();
    let a: Vec<f32> = (0..12).map(|i| (i as f32 - 5.5) / 3.0).collect();
    let b: Vec<f32> = (0..12).map(|i| (i as f32 * 0.7 - 2.0) / 7.0).collect();
    let out = run(
        &imported,
        &[
            ("a", Tensor::new(vec![2, 2, 3], a.clone()).unwrap()),
            ("b", Tensor::new(vec![2, 3, 2], b.clone()).unwrap()),
        ],
    );
    assert_eq!(out["y"].shape(), [2, 2, 2]);
    for batch in 0..2 {
        let want = lockstep_kernels::reference::matmul::matmul(
            &a[batch * 6..batch * 6 + 6],
            &b[batch * 6..batch * 6 + 6],
            2,
            3,
            2,
            lockstep_kernels::reference::matmul::Transpose::None,
            1,
        );
        for (i, w) in want.iter().enumerate() {
            assert_eq!(out["y"].data()[batch * 4 + i].to_bits(), w.to_bits());
        }
    }
}
