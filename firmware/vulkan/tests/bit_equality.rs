//! Every kernel on Vulkan (lavapipe in CI) against the CPU reference, bit
//! for bit, over many shapes and over inputs full of ±0, subnormals, ±inf,
//! NaN and values that overflow or underflow when combined.
//!
//! These tests need a Vulkan device. Where there is none they fail, unless
//! LOCKSTEP_SKIP_VULKAN_TESTS=1 says to skip them (for machines without
//! Mesa; CI never sets it).

use lockstep_backend::{Backend, BackendError, CpuBackend, Op};
use lockstep_tensor::{Fill, Tensor};
use lockstep_vulkan::{MatmulKernels, VulkanBackend};

mod common;
use common::vulkan;

fn op(name: &str) -> Op {
    let attrs: &[(&str, &str)] = match name {
        "scale" => &[("alpha", "-0.75")],
        "affine" | "axpby" => &[("alpha", "-0.75"), ("beta", "1.5e-3")],
        "sgd_update" => &[("lr", "0.01")],
        "adam_update" => &[("lr", "1e-3"), ("eps", "1e-8")],
        "layernorm_rows" | "layernorm_backward" | "layernorm_backward_gamma" => &[("eps", "1e-5")],
        _ => &[],
    };
    let attrs = attrs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Op::parse(name, &attrs).unwrap()
}

/// Runs `op` on given tensors on both backends and demands identical bits.
fn assert_same_on(vk: &mut VulkanBackend, op: &Op, inputs: &[Tensor], what: &str) {
    let refs: Vec<&Tensor> = inputs.iter().collect();
    let want = CpuBackend::new().run(op, &refs).unwrap();
    let got = vk.run(op, &refs).unwrap();
    assert_eq!(got.shape(), want.shape(), "{} {what}", op.name());
    if let Some((i, g, w)) = got.first_bit_mismatch(&want) {
        panic!(
            "{} {what}: element {i} is {g:#010x} on Vulkan, {w:#010x} on the CPU reference",
            op.name()
        );
    }
}

const FILLS: [Fill; 3] = [
    Fill::Uniform,
    Fill::Edgy { edge_per_mille: 20 },
    Fill::Edgy {
        edge_per_mille: 400,
    },
];

/// Runs `op` on both backends and demands identical bits.
fn assert_same(vk: &mut VulkanBackend, op: &Op, shapes: &[Vec<usize>], seed: u64, fill: Fill) {
    let inputs: Vec<Tensor> = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| {
            Tensor::filled(
                s.clone(),
                seed.wrapping_mul(31).wrapping_add(i as u64),
                fill,
            )
            .unwrap()
        })
        .collect();
    let refs: Vec<&Tensor> = inputs.iter().collect();
    let want = CpuBackend::new().run(op, &refs).unwrap();
    let got = vk.run(op, &refs).unwrap();
    assert_eq!(got.shape(), want.shape());
    if let Some((i, g, w)) = got.first_bit_mismatch(&want) {
        panic!(
            "{} on {:?} (seed {seed}, {fill:?}): element {i} is {g:#010x} on Vulkan, {w:#010x} on the CPU reference",
            op.name(),
            shapes
        );
    }
}

fn matmul_shapes(name: &str, m: usize, k: usize, n: usize) -> Vec<Vec<usize>> {
    match name {
        "matmul" => vec![vec![m, k], vec![k, n]],
        "matmul_tn" => vec![vec![k, m], vec![k, n]],
        _ => vec![vec![m, k], vec![n, k]],
    }
}

const MATMUL_DIMS: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (1, 7, 1),
    (3, 5, 7),
    (17, 1, 29),
    (16, 16, 256),
    (33, 65, 257),
    (97, 131, 61),
    (256, 64, 300),
    (5, 1000, 3),
];

#[test]
fn matmul_family_is_bit_identical() {
    let Some(mut vk) = vulkan() else { return };
    for name in ["matmul", "matmul_tn", "matmul_nt"] {
        for (seed, &(m, k, n)) in MATMUL_DIMS.iter().enumerate() {
            for fill in FILLS {
                assert_same(
                    &mut vk,
                    &op(name),
                    &matmul_shapes(name, m, k, n),
                    seed as u64,
                    fill,
                );
            }
        }
    }
}

#[test]
fn elementwise_ops_are_bit_identical() {
    let Some(mut vk) = vulkan() else { return };
    let shapes: &[&[usize]] = &[&[1], &[7], &[255], &[257], &[3, 5, 7], &[100, 1000], &[]];
    for name in ["add", "sub", "mul", "scale", "relu", "relu_backward"] {
        let o = op(name);
        for (seed, s) in shapes.iter().enumerate() {
            for fill in FILLS {
                let operands = vec![s.to_vec(); o.arity()];
                assert_same(&mut vk, &o, &operands, seed as u64, fill);
            }
        }
    }
}

#[test]
fn sums_are_bit_identical() {
    let Some(mut vk) = vulkan() else { return };
    let shapes: &[[usize; 2]] = &[
        [1, 1],
        [1, 64],
        [3, 65],
        [7, 1000],
        [1, 70_001],
        [70_001, 3],
        [129, 257],
        [2, 65 * 16 * 16 + 5],
    ];
    for name in ["sum_rows", "sum_cols"] {
        for (seed, s) in shapes.iter().enumerate() {
            for fill in FILLS {
                assert_same(&mut vk, &op(name), &[s.to_vec()], seed as u64, fill);
            }
        }
    }
}

#[test]
fn empty_operands_follow_the_definition() {
    let Some(mut vk) = vulkan() else { return };
    // k = 0: every output is the empty fold, +0.0; m = 0: nothing to compute.
    assert_same(
        &mut vk,
        &op("matmul"),
        &[vec![4, 0], vec![0, 3]],
        1,
        Fill::Uniform,
    );
    assert_same(
        &mut vk,
        &op("matmul"),
        &[vec![0, 5], vec![5, 3]],
        1,
        Fill::Uniform,
    );
    assert_same(&mut vk, &op("sum_rows"), &[vec![3, 0]], 1, Fill::Uniform);
    assert_same(&mut vk, &op("sum_cols"), &[vec![0, 3]], 1, Fill::Uniform);
    assert_same(&mut vk, &op("add"), &[vec![0], vec![0]], 1, Fill::Uniform);
}

#[test]
fn split_dispatches_give_the_same_bits() {
    let Some(mut vk) = vulkan() else { return };
    // A device that allows only a few workgroups per dimension: every kernel
    // must grid-stride over the rest and produce the same bits.
    vk.set_max_workgroups([2, 3, 1]);
    for (seed, name) in ["matmul", "matmul_tn", "matmul_nt"].iter().enumerate() {
        assert_same(
            &mut vk,
            &op(name),
            &matmul_shapes(name, 70, 9, 600),
            seed as u64,
            Fill::Edgy { edge_per_mille: 20 },
        );
    }
    assert_same(
        &mut vk,
        &op("add"),
        &[vec![5000], vec![5000]],
        4,
        Fill::Edgy {
            edge_per_mille: 100,
        },
    );
    assert_same(
        &mut vk,
        &op("sum_rows"),
        &[vec![9, 20_000]],
        5,
        Fill::Uniform,
    );
    assert_same(
        &mut vk,
        &op("sum_cols"),
        &[vec![20_000, 9]],
        6,
        Fill::Uniform,
    );
}

#[test]
fn outputs_hold_only_canonical_nans() {
    let Some(mut vk) = vulkan() else { return };
    let a = Tensor::filled(
        vec![50, 50],
        9,
        Fill::Edgy {
            edge_per_mille: 500,
        },
    )
    .unwrap();
    for name in ["matmul", "add", "mul", "relu", "sum_rows"] {
        let o = op(name);
        let inputs: Vec<&Tensor> = vec![&a; o.arity()];
        let out = vk.run(&o, &inputs).unwrap();
        let nans: Vec<u32> = out
            .to_bits()
            .into_iter()
            .filter(|b| (b & 0x7FFF_FFFF) > 0x7F80_0000)
            .collect();
        assert!(
            !nans.is_empty(),
            "{name}: the edge-heavy input should produce NaNs"
        );
        assert!(
            nans.iter().all(|&b| b == 0x7FC0_0000),
            "{name}: a non-canonical NaN escaped"
        );
    }
}

#[test]
fn subnormal_results_are_preserved() {
    let Some(mut vk) = vulkan() else { return };
    vk.set_matmul_kernels(MatmulKernels::Tiled);
    // 2^-70 * 2^-70 = 2^-140, a subnormal; a device that flushes gives 0.
    let tiny = f32::from_bits((127 - 70) << 23);
    let a = Tensor::new(vec![1, 1], vec![tiny]).unwrap();
    let out = vk.run(&op("mul"), &[&a, &a]).unwrap();
    assert_eq!(out.data()[0].to_bits(), 1 << (149 - 140));
    let out = vk.run(&op("matmul"), &[&a, &a]).unwrap();
    assert_eq!(out.data()[0].to_bits(), 1 << (149 - 140));
}

#[test]
fn bad_shapes_are_refused_before_any_work() {
    let Some(mut vk) = vulkan() else { return };
    let a = Tensor::zeros(vec![3, 4]).unwrap();
    let b = Tensor::zeros(vec![5, 2]).unwrap();
    let err = vk.run(&op("matmul"), &[&a, &b]).unwrap_err();
    assert!(err.is_input_error(), "{err}");
}

#[test]
fn random_ops_on_random_shapes_are_bit_identical() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    let Some(vk) = vulkan() else { return };
    let vk = std::cell::RefCell::new(vk);
    // Ops whose operands are any same-shaped matrices (or a matmul's).
    let names = [
        "matmul",
        "matmul_tn",
        "matmul_nt",
        "add",
        "sub",
        "mul",
        "div",
        "scale",
        "affine",
        "axpby",
        "relu",
        "relu_backward",
        "exp",
        "log",
        "sqrt",
        "tanh",
        "tanh_backward",
        "sigmoid",
        "gelu",
        "gelu_backward",
        "erf",
        "where",
        "greater",
        "less",
        "equal",
        "sum_rows",
        "sum_cols",
        "softmax_rows",
        "log_softmax_rows",
        "argmax_rows",
        "transpose",
        "sgd_update",
    ];
    let mut runner = TestRunner::new(Config::with_cases(48));
    let strategy = (
        0..names.len(),
        1usize..90,
        1usize..90,
        1usize..90,
        any::<u64>(),
        0u32..500,
    );
    runner
        .run(&strategy, |(which, m, k, n, seed, edges)| {
            let name = names[which];
            let o = op(name);
            let shapes = match name {
                "matmul" | "matmul_tn" | "matmul_nt" => matmul_shapes(name, m, k, n),
                "sum_rows" | "sum_cols" => vec![vec![m, k * 7]],
                _ => vec![vec![m, n]; o.arity()],
            };
            assert_same(
                &mut vk.borrow_mut(),
                &o,
                &shapes,
                seed,
                Fill::Edgy {
                    edge_per_mille: edges,
                },
            );
            Ok(())
        })
        .unwrap();
}

const UNARY_MATH: &[&str] = &[
    "exp", "log", "sqrt", "tanh", "sigmoid", "gelu", "erf", "affine",
];
const BINARY_MATH: &[&str] = &[
    "div",
    "axpby",
    "sgd_update",
    "tanh_backward",
    "gelu_backward",
];

#[test]
fn math_ops_are_bit_identical() {
    let Some(mut vk) = vulkan() else { return };
    // Wide exponents and edge values: every class of input the functions
    // handle (subnormals, overflow and underflow thresholds, NaN, ±inf).
    for (seed, name) in UNARY_MATH.iter().chain(BINARY_MATH).enumerate() {
        let o = op(name);
        for fill in FILLS {
            assert_same(&mut vk, &o, &vec![vec![3001]; o.arity()], seed as u64, fill);
        }
        // Every input in a dense sweep of the interesting range.
        let sweep: Vec<f32> = (0..20_000)
            .map(|i| (i as f32 - 10_000.0) * 0.0125)
            .collect();
        let t = Tensor::new(vec![sweep.len()], sweep).unwrap();
        assert_same_on(
            &mut vk,
            &o,
            &vec![t; o.arity()],
            "on a sweep of [-125, 125)",
        );
    }
}

fn labels(m: usize, n: usize, seed: u64) -> Tensor {
    let mut rng = lockstep_tensor::SplitMix64::new(seed);
    let data = (0..m).map(|_| rng.below(n as u64) as f32).collect();
    Tensor::new(vec![m], data).unwrap()
}

#[test]
fn row_ops_are_bit_identical() {
    let Some(mut vk) = vulkan() else { return };
    for (seed, &(m, n)) in [(1usize, 1usize), (3, 10), (65, 33), (7, 300), (130, 5)]
        .iter()
        .enumerate()
    {
        let seed = seed as u64;
        for fill in FILLS {
            let x = Tensor::filled(vec![m, n], seed, fill).unwrap();
            let dy = Tensor::filled(vec![m, n], seed + 100, fill).unwrap();
            let gamma = Tensor::filled(vec![n], seed + 200, Fill::Uniform).unwrap();
            let beta = Tensor::filled(vec![n], seed + 300, Fill::Uniform).unwrap();
            let what = format!("on {m}x{n}, {fill:?}");
            for name in ["softmax_rows", "log_softmax_rows", "argmax_rows"] {
                assert_same_on(&mut vk, &op(name), std::slice::from_ref(&x), &what);
            }
            assert_same_on(
                &mut vk,
                &op("layernorm_rows"),
                &[x.clone(), gamma.clone(), beta.clone()],
                &what,
            );
            assert_same_on(
                &mut vk,
                &op("layernorm_backward"),
                &[dy.clone(), x.clone(), gamma.clone()],
                &what,
            );
            assert_same_on(
                &mut vk,
                &op("layernorm_backward_gamma"),
                &[dy.clone(), x.clone()],
                &what,
            );
            let l = labels(m, n, seed);
            assert_same_on(
                &mut vk,
                &op("cross_entropy"),
                &[x.clone(), l.clone()],
                &what,
            );
            assert_same_on(
                &mut vk,
                &op("cross_entropy_backward"),
                &[x.clone(), l],
                &what,
            );
        }
    }
    // Labels that are not class ids give NaN rows on both backends.
    let x = Tensor::filled(vec![4, 3], 1, Fill::Uniform).unwrap();
    let bad = Tensor::new(vec![4], vec![0.0, 2.5, -1.0, 3.0]).unwrap();
    assert_same_on(
        &mut vk,
        &op("cross_entropy_backward"),
        &[x.clone(), bad.clone()],
        "with bad labels",
    );
    assert_same_on(&mut vk, &op("cross_entropy"), &[x, bad], "with bad labels");
}

#[test]
fn layout_and_optimizer_ops_are_bit_identical() {
    let Some(mut vk) = vulkan() else { return };
    for (seed, &(m, n)) in [(1usize, 1usize), (3, 10), (65, 33), (300, 7)]
        .iter()
        .enumerate()
    {
        let seed = seed as u64;
        let fill = Fill::Edgy { edge_per_mille: 50 };
        let x = Tensor::filled(vec![m, n], seed, fill).unwrap();
        let b = Tensor::filled(vec![n], seed + 1, fill).unwrap();
        let what = format!("on {m}x{n}");
        assert_same_on(&mut vk, &op("bias_add"), &[x.clone(), b], &what);
        assert_same_on(&mut vk, &op("transpose"), std::slice::from_ref(&x), &what);
        let value = Tensor::new(vec![], vec![42.5]).unwrap();
        for index in [0.0, (m * n - 1) as f32, 1.5, -1.0, (m * n) as f32, f32::NAN] {
            let idx = Tensor::new(vec![1], vec![index]).unwrap();
            assert_same_on(
                &mut vk,
                &op("set_element"),
                &[x.clone(), value.clone(), idx],
                &what,
            );
        }
        let w = Tensor::filled(vec![m, n], seed + 2, Fill::Uniform).unwrap();
        let g = Tensor::filled(vec![m, n], seed + 3, Fill::Uniform).unwrap();
        let v = Tensor::filled(vec![m, n], seed + 4, Fill::Uniform).unwrap();
        let v = CpuBackend::new().run(&op("mul"), &[&v, &v]).unwrap();
        let c1 = Tensor::new(vec![], vec![0.1]).unwrap();
        let c2 = Tensor::new(vec![1], vec![0.001]).unwrap();
        assert_same_on(
            &mut vk,
            &op("adam_update"),
            &[w, g.clone(), v, c1, c2],
            &what,
        );
    }
}

#[test]
fn random_ops_are_bit_identical() {
    let Some(mut vk) = vulkan() else { return };
    for name in ["rand_uniform", "rand_normal"] {
        for (shape, seed, stream, offset) in [
            ("1", 0u64, 0u32, 0u64),
            ("7,13", 42, 3, 5),
            ("100000", u64::MAX, 7, u64::MAX - 10),
        ] {
            let attrs = [
                ("shape", shape.to_string()),
                ("seed", seed.to_string()),
                ("stream", stream.to_string()),
                ("offset", offset.to_string()),
            ];
            let attrs = attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect();
            let o = Op::parse(name, &attrs).unwrap();
            assert_same_on(&mut vk, &o, &[], &format!("shape {shape} seed {seed}"));
        }
    }
}

/// lavapipe leaves a loop after 65535 iterations and returns wrong bits:
/// the backend refuses such an op there, with a typed limit, and runs the
/// longest one under the bound bit-identically.
#[test]
fn lavapipe_refuses_loops_it_would_cut_short() {
    let Some(mut vk) = vulkan() else { return };
    if vk.device_info().driver_id != 13 {
        eprintln!("not lavapipe: no loop limit to test");
        return;
    }
    type Shapes = Vec<Vec<usize>>;
    let cases: [(&str, Shapes, Shapes); 2] = [
        (
            "matmul",
            vec![vec![1, 65535], vec![65535, 1]],
            vec![vec![1, 65536], vec![65536, 1]],
        ),
        ("softmax_rows", vec![vec![2, 16383]], vec![vec![2, 16384]]),
    ];
    for (name, fits, too_long) in cases {
        assert_same(&mut vk, &op(name), &fits, 7, Fill::Uniform);
        let inputs: Vec<Tensor> = too_long
            .iter()
            .enumerate()
            .map(|(i, s)| Tensor::filled(s.clone(), i as u64, Fill::Uniform).unwrap())
            .collect();
        let refs: Vec<&Tensor> = inputs.iter().collect();
        match vk.run(&op(name), &refs) {
            Err(BackendError::UnsupportedLimit { needed, limit, .. }) => {
                assert!(
                    needed > limit && limit == 65535,
                    "{name}: {needed} > {limit}"
                )
            }
            other => panic!(
                "{name}: expected a loop-limit refusal, got {:?}",
                other.map(|t| t.shape_string())
            ),
        }
    }
}

/// `op` with attributes given as text.
fn op_with(name: &str, attrs: &[(&str, String)]) -> Op {
    let attrs = attrs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    Op::parse(name, &attrs).unwrap()
}

#[test]
fn data_movement_fills_and_row_reductions_are_bit_identical() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    let Some(vk) = vulkan() else { return };
    let vk = std::cell::RefCell::new(vk);
    let mut runner = TestRunner::new(Config::with_cases(64));
    let strategy = (0usize..11, 0usize..40, 1usize..40, 0usize..40, any::<u64>());
    runner
        .run(&strategy, |(which, m, n, k, seed)| {
            let fill = Fill::Edgy {
                edge_per_mille: 200,
            };
            let t = |shape: Vec<usize>, i: u64| {
                Tensor::filled(shape, seed.wrapping_add(i), fill).unwrap()
            };
            let start = |size: usize| if size == 0 { 0 } else { seed as usize % size };
            let (o, inputs) = match which {
                0 => (op("concat_rows"), vec![t(vec![m, n], 0), t(vec![k, n], 1)]),
                1 => (op("concat_cols"), vec![t(vec![m, n], 0), t(vec![m, k], 1)]),
                2 => {
                    let s = start(m);
                    let len = (m - s).min(k);
                    let o = op_with(
                        "slice_rows",
                        &[("start", s.to_string()), ("len", len.to_string())],
                    );
                    (o, vec![t(vec![m, n], 0)])
                }
                3 => {
                    let s = start(n);
                    let len = (n - s).min(k.max(1));
                    let o = op_with(
                        "slice_cols",
                        &[("start", s.to_string()), ("len", len.to_string())],
                    );
                    (o, vec![t(vec![m, n], 0)])
                }
                4 => {
                    // Valid rows, and -1, v, 0.5, NaN and ±inf among them.
                    let bad = [-1.0, m as f32, 0.5, f32::NAN, f32::INFINITY, -0.0];
                    let index: Vec<f32> = (0..k)
                        .map(|i| {
                            let r = seed.wrapping_mul(2654435761).wrapping_add(i as u64 * 40503);
                            if r % 5 == 0 {
                                bad[(r / 5) as usize % bad.len()]
                            } else {
                                (r % (m.max(1) as u64)) as f32
                            }
                        })
                        .collect();
                    (
                        op("gather_rows"),
                        vec![t(vec![m, n], 0), Tensor::new(vec![k], index).unwrap()],
                    )
                }
                5 => (op("max_rows"), vec![t(vec![m, n], 0)]),
                6 => (op("mean_rows"), vec![t(vec![m, n * 37], 0)]),
                7 => {
                    let o = op_with("reshape", &[("shape", format!("{n},{m}"))]);
                    (o, vec![t(vec![m, n], 0)])
                }
                8 => (op_with("zeros", &[("shape", format!("{m},{n}"))]), vec![]),
                10 => {
                    // Rank 1 to 4, every permutation of it by the seed.
                    let dims = [m % 7 + 1, n % 5 + 1, k % 4 + 1, 3];
                    let rank = 1 + (seed % 4) as usize;
                    let mut perm: Vec<usize> = (0..rank).collect();
                    let mut r = seed / 4;
                    for i in (1..rank).rev() {
                        perm.swap(i, (r % (i as u64 + 1)) as usize);
                        r /= i as u64 + 1;
                    }
                    let text = perm
                        .iter()
                        .map(usize::to_string)
                        .collect::<Vec<_>>()
                        .join(",");
                    (
                        op_with("permute", &[("perm", text)]),
                        vec![t(dims[..rank].to_vec(), 0)],
                    )
                }
                _ => {
                    let value = f32::from_bits(seed as u32);
                    let o = op_with(
                        "full",
                        &[
                            ("shape", format!("{m},{n}")),
                            ("value", format!("{:#010x}", value.to_bits())),
                        ],
                    );
                    (o, vec![])
                }
            };
            assert_same_on(
                &mut vk.borrow_mut(),
                &o,
                &inputs,
                &format!("case {which} m {m} n {n} k {k}"),
            );
            Ok(())
        })
        .unwrap();
}
