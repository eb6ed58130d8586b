//! Every kernel on Vulkan (lavapipe in CI) against the CPU reference, bit
//! for bit, over many shapes and over inputs full of ±0, subnormals, ±inf,
//! NaN and values that overflow or underflow when combined.
//!
//! These tests need a Vulkan device. Where there is none they fail, unless
//! LOCKSTEP_SKIP_VULKAN_TESTS=1 says to skip them (for machines without
//! Mesa; CI never sets it).

use std::collections::BTreeMap;

use lockstep_backend::{Backend, CpuBackend, Op};
use lockstep_kernels::Bundle;
use lockstep_tensor::{Fill, Tensor};
use lockstep_vulkan::{MatmulKernels, VulkanBackend};

fn vulkan() -> Option<VulkanBackend> {
    if std::env::var("LOCKSTEP_SKIP_VULKAN_TESTS").as_deref() == Ok("1") {
        eprintln!("LOCKSTEP_SKIP_VULKAN_TESTS=1: skipping a Vulkan test");
        return None;
    }
    let bundle = Bundle::embedded().expect("embedded bundle verifies");
    Some(VulkanBackend::new(bundle, None).unwrap_or_else(|e| {
        panic!("no usable Vulkan device ({e}); install mesa-vulkan-drivers or set LOCKSTEP_SKIP_VULKAN_TESTS=1")
    }))
}

fn op(name: &str) -> Op {
    let mut attrs = BTreeMap::new();
    if name == "scale" {
        attrs.insert("alpha".to_string(), "-0.75".to_string());
    }
    Op::parse(name, &attrs).unwrap()
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
    let names = lockstep_backend::OP_NAMES;
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
