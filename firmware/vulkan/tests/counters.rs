//! The Vulkan backend's transfer counters: every staged byte each way, every
//! submit and every fence wait, cumulative since the backend was created.
//!
//! Needs a Vulkan device (lavapipe in CI); LOCKSTEP_SKIP_VULKAN_TESTS=1
//! skips it on machines without Mesa, as in the other tests here.

use std::collections::BTreeMap;

use lockstep_backend::{Backend, CpuBackend, Op, TransferCounters};
use lockstep_tensor::{Fill, Tensor};

mod common;
use common::vulkan;

#[test]
fn counters_start_at_zero_and_count_each_ops_transfers() {
    let Some(mut vk) = vulkan() else { return };
    assert_eq!(vk.counters(), TransferCounters::default());
    let add = Op::parse("add", &BTreeMap::new()).unwrap();
    let a = Tensor::filled(vec![3, 5], 1, Fill::Uniform).unwrap();
    let b = Tensor::filled(vec![3, 5], 2, Fill::Uniform).unwrap();
    let in_bytes = (a.len() + b.len()) as u64 * 4;
    let out_bytes = a.len() as u64 * 4;

    let out = vk.run(&add, &[&a, &b]).unwrap();
    assert_eq!(out.len() as u64 * 4, out_bytes);
    let first = vk.counters();
    assert_eq!(first.bytes_to_device, in_bytes, "{first:?}");
    assert_eq!(first.bytes_from_device, out_bytes, "{first:?}");
    assert!(first.submits >= 1, "{first:?}");
    assert!(first.fence_waits >= 1, "{first:?}");
    // Every submit here is waited for before the next.
    assert_eq!(first.submits, first.fence_waits, "{first:?}");

    vk.run(&add, &[&a, &b]).unwrap();
    let second = vk.counters();
    assert_eq!(second.since(&first), first, "a second op costs the same");
    assert_eq!(
        second,
        TransferCounters {
            bytes_to_device: 2 * in_bytes,
            bytes_from_device: 2 * out_bytes,
            submits: 2 * first.submits,
            fence_waits: 2 * first.fence_waits,
        }
    );
}

#[test]
fn refused_shapes_move_nothing() {
    let Some(mut vk) = vulkan() else { return };
    let add = Op::parse("add", &BTreeMap::new()).unwrap();
    let a = Tensor::filled(vec![3, 5], 1, Fill::Uniform).unwrap();
    let b = Tensor::filled(vec![5, 3], 2, Fill::Uniform).unwrap();
    assert!(vk.run(&add, &[&a, &b]).is_err());
    assert_eq!(vk.counters(), TransferCounters::default());
}

#[test]
fn the_cpu_reference_moves_nothing() {
    let mut cpu = CpuBackend::new();
    let add = Op::parse("add", &BTreeMap::new()).unwrap();
    let a = Tensor::filled(vec![3, 5], 1, Fill::Uniform).unwrap();
    cpu.run(&add, &[&a, &a]).unwrap();
    assert_eq!(cpu.counters(), TransferCounters::default());
}
