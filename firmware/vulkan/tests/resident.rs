//! Resident execution on Vulkan: the same outputs and the same trace (every
//! leaf, the root) as per-op execution and the CPU reference, with only
//! inputs uploaded, only declared outputs (and one 32-byte digest per op)
//! downloaded, and one fence wait per batch; trace leaves hashed on the
//! device by `sha256_npy` equal the host's SHA-256 of the same `.npy`
//! bytes.
//!
//! Needs a Vulkan device (lavapipe in CI); LOCKSTEP_SKIP_VULKAN_TESTS=1
//! skips it on machines without Mesa, as in the other tests here.

use std::collections::BTreeMap;
use std::time::Instant;

use lockstep_backend::{Backend, CpuBackend, Resident};
use lockstep_program::{
    execute, validate, ExecError, ExecOptions, ExecReport, Program, ValidateOptions,
    ValidatedProgram,
};
use lockstep_tensor::{Fill, Tensor};
use lockstep_vulkan::VulkanBackend;

mod common;
use common::vulkan;

fn program(doc: serde_json::Value) -> ValidatedProgram {
    let p = Program::from_json(doc.to_string().as_bytes()).expect("test program decodes");
    validate(&p, &ValidateOptions::default()).expect("test program validates")
}

fn run(
    backend: &mut dyn Backend,
    v: &ValidatedProgram,
    inputs: &BTreeMap<String, Tensor>,
    per_op: bool,
) -> ExecReport {
    let options = ExecOptions {
        per_op,
        ..ExecOptions::default()
    };
    execute(v, backend, inputs.clone(), options)
        .unwrap_or_else(|e| panic!("{} failed: {e}", backend.fingerprint().name))
}

/// Resident, per-op and CPU runs agree on every output bit and every trace
/// leaf; returns the resident report.
fn assert_all_agree(
    vk: &mut VulkanBackend,
    what: &str,
    v: &ValidatedProgram,
    inputs: &BTreeMap<String, Tensor>,
) -> ExecReport {
    let cpu = run(&mut CpuBackend::new(), v, inputs, false);
    assert!(!cpu.resident, "the CPU reference has no resident mode");
    let per_op = run(vk, v, inputs, true);
    assert!(!per_op.resident);
    let resident = run(vk, v, inputs, false);
    assert!(resident.resident, "{what}: Vulkan runs resident by default");
    for (name, want) in &cpu.outputs {
        for (mode, got) in [("resident", &resident), ("per-op", &per_op)] {
            if let Some((i, g, w)) = got.outputs[name].first_bit_mismatch(want) {
                panic!(
                    "{what}: {mode} output {name} element {i} is {g:#010x}, the CPU's {w:#010x}"
                );
            }
        }
    }
    let (want, got) = (cpu.trace.unwrap(), resident.trace.clone().unwrap());
    assert_eq!(got.ops.len(), want.ops.len(), "{what}: leaves");
    for (g, w) in got.ops.iter().zip(&want.ops) {
        assert_eq!(g, w, "{what}: leaf {} differs", w.index);
    }
    assert_eq!(got.root, want.root, "{what}: trace root");
    assert_eq!(per_op.trace.unwrap().root, want.root, "{what}: per-op root");
    assert_eq!(resident.op_count, cpu.op_count);
    assert_eq!(
        resident.peak_bytes, cpu.peak_bytes,
        "{what}: live-tensor peak"
    );
    assert_eq!(
        resident.peak_bytes,
        v.peak_bytes(),
        "{what}: validated peak"
    );
    resident
}

fn tensor(shape: &[usize], seed: u64) -> Tensor {
    Tensor::filled(shape.to_vec(), seed, Fill::Uniform).unwrap()
}

#[test]
fn device_hashes_equal_the_hosts_on_many_lengths_and_shapes() {
    let Some(mut vk) = vulkan() else { return };
    let mut shapes: Vec<Vec<usize>> = vec![vec![0], vec![3, 0], vec![0, 0, 0, 0]];
    // Around the block boundaries (16 words a block; the padding takes a
    // second block when 14 or 15 words of the last one are used).
    for n in (0..=40).chain([
        47, 48, 49, 1000, 1000, 4096, 4112, 4113, 9200, 16385, 70000, 262_159, 262_160, 1_100_000,
    ]) {
        shapes.push(vec![n]);
    }
    shapes.push(vec![7, 13]);
    shapes.push(vec![2, 3, 5, 7]);
    // A first dimension with many digits grows the header's padding.
    shapes.push(vec![123_456, 1]);
    let tensors: Vec<Tensor> = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| tensor(s, i as u64))
        .collect();
    let r: &mut dyn Resident = &mut vk;
    r.begin_session(tensors.len()).unwrap();
    for t in &tensors {
        let h = r.upload(t).unwrap();
        r.record_hash(h).unwrap();
    }
    let digests = r.flush().unwrap();
    r.end_session();
    assert_eq!(digests.len(), tensors.len());
    for (t, d) in tensors.iter().zip(&digests) {
        assert_eq!(
            hex(d),
            hex(&t.sha256()),
            "SHA-256 of a {} tensor's .npy bytes",
            t.shape_string()
        );
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn examples_agree_and_move_only_inputs_outputs_and_digests() {
    let Some(mut vk) = vulkan() else { return };
    let examples: [(&str, &[u8]); 2] = [
        (
            "mlp-train",
            include_bytes!("../../../examples/mlp-train.json"),
        ),
        (
            "attention",
            include_bytes!("../../../examples/attention.json"),
        ),
    ];
    for (name, json) in examples {
        let p = Program::from_json(json).unwrap();
        let v = validate(&p, &ValidateOptions::default()).unwrap();
        let before = vk.counters();
        let report = assert_all_agree(&mut vk, name, &v, &BTreeMap::new());
        let _ = before;
        let t = report.transfers;
        let out_bytes: u64 = report.outputs.values().map(|t| t.len() as u64 * 4).sum();
        assert_eq!(t.bytes_to_device, 0, "{name}: it has no inputs: {t:?}");
        assert_eq!(
            t.bytes_from_device,
            out_bytes + 32 * report.op_count,
            "{name}: outputs and one digest per op: {t:?}"
        );
        assert_eq!(t.submits, t.fence_waits, "{t:?}");
        // One batch per RESIDENT_BATCH_OPS ops at most, plus the outputs'
        // downloads (one per output here: they are below a staging chunk).
        let batches = report
            .op_count
            .div_ceil(lockstep_limits::RESIDENT_BATCH_OPS as u64);
        assert!(
            t.fence_waits <= 2 * batches + report.outputs.len() as u64 + 2,
            "{name}: {} fence waits for {} ops",
            t.fence_waits,
            report.op_count
        );
        eprintln!(
            "{name}: {} ops, {} fence waits, {} bytes back",
            report.op_count, t.fence_waits, t.bytes_from_device
        );
    }
}

#[test]
fn carried_tensors_nested_repeats_and_empty_operands_agree() {
    let Some(mut vk) = vulkan() else { return };
    // Gradient descent: `w` is carried (rewritten every iteration), `g` is
    // made in the body and used after it, `x` and `y` are read every
    // iteration; the outer repeat's body holds an op and a repeat, so it is
    // walked per iteration and the inner one recorded per entry.
    let v = program(serde_json::json!({
        "version": 1,
        "inputs": [
            {"name": "x", "shape": [9, 5]},
            {"name": "y", "shape": [9, 1]},
            {"name": "w", "shape": [5, 1]},
            {"name": "e", "shape": [4, 0]}
        ],
        "outputs": ["w", "loss_grad", "z", "s"],
        "body": [
            {"repeat": 3, "body": [
                {"op": "scale", "inputs": ["w"], "output": "w", "attrs": {"alpha": 0.5}},
                {"repeat": 4, "body": [
                    {"op": "matmul", "inputs": ["x", "w"], "output": "pred"},
                    {"op": "sub", "inputs": ["pred", "y"], "output": "r"},
                    {"op": "matmul_tn", "inputs": ["x", "r"], "output": "g"},
                    {"op": "scale", "inputs": ["g"], "output": "step", "attrs": {"alpha": 0.05}},
                    {"op": "sub", "inputs": ["w", "step"], "output": "w"}
                ]}
            ]},
            {"op": "sum_cols", "inputs": ["g"], "output": "loss_grad"},
            // k = 0: an all-zero output without a kernel.
            {"op": "transpose", "inputs": ["e"], "output": "et"},
            {"op": "matmul", "inputs": ["e", "et"], "output": "z"},
            {"op": "sum_rows", "inputs": ["e"], "output": "s"}
        ]
    }));
    let inputs: BTreeMap<String, Tensor> = [
        ("x", tensor(&[9, 5], 1)),
        ("y", tensor(&[9, 1], 2)),
        ("w", tensor(&[5, 1], 3)),
        ("e", tensor(&[4, 0], 4)),
    ]
    .into_iter()
    .map(|(n, t)| (n.to_string(), t))
    .collect();
    let report = assert_all_agree(&mut vk, "gradient descent", &v, &inputs);
    let in_bytes: u64 = inputs.values().map(|t| t.len() as u64 * 4).sum();
    assert_eq!(
        report.transfers.bytes_to_device, in_bytes,
        "only the inputs go up"
    );
}

#[test]
fn random_programs_agree_resident_and_per_op() {
    let Some(mut vk) = vulkan() else { return };
    let ops = ["add", "sub", "mul", "tanh", "relu", "scale"];
    for seed in 0..12u64 {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = |n: u64| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s % n
        };
        let (m, n) = (1 + next(17) as usize, 1 + next(40) as usize);
        let mut body = Vec::new();
        for _ in 0..(1 + next(8)) {
            let op = ops[next(ops.len() as u64) as usize];
            let (ins, attrs) = match op {
                "add" | "sub" | "mul" => (vec!["a", "b"], serde_json::json!({})),
                "scale" => (vec!["a"], serde_json::json!({"alpha": 0.75})),
                _ => (vec!["a"], serde_json::json!({})),
            };
            let out = if next(2) == 0 { "a" } else { "b" };
            body.push(serde_json::json!({"op": op, "inputs": ins, "output": out, "attrs": attrs}));
            body.push(serde_json::json!({"op": "tanh", "inputs": [out], "output": out}));
        }
        let times = 1 + next(5);
        let v = program(serde_json::json!({
            "version": 1,
            "inputs": [{"name": "a", "shape": [m, n]}, {"name": "b", "shape": [m, n]}],
            "outputs": ["a", "b"],
            "body": [{"repeat": times, "body": body}, {"op": "add", "inputs": ["a", "b"], "output": "c"},
                     {"op": "mul", "inputs": ["c", "a"], "output": "a"}]
        }));
        let inputs: BTreeMap<String, Tensor> = [
            ("a", tensor(&[m, n], seed)),
            ("b", tensor(&[m, n], seed + 100)),
        ]
        .into_iter()
        .map(|(k, t)| (k.to_string(), t))
        .collect();
        assert_all_agree(&mut vk, &format!("seed {seed}"), &v, &inputs);
    }
}

#[test]
fn a_passed_deadline_stops_a_resident_run_between_batches() {
    let Some(mut vk) = vulkan() else { return };
    let p = Program::from_json(include_bytes!("../../../examples/mlp-train.json")).unwrap();
    let v = validate(&p, &ValidateOptions::default()).unwrap();
    let options = ExecOptions {
        deadline: Some(Instant::now()),
        ..ExecOptions::default()
    };
    match execute(&v, &mut vk, BTreeMap::new(), options) {
        Err(ExecError::Deadline { done, .. }) => assert_eq!(done, 0),
        other => panic!(
            "expected a deadline stop, got {:?}",
            other.map(|r| r.op_count)
        ),
    }
    // The backend serves the next run.
    let report = run(&mut vk, &v, &BTreeMap::new(), false);
    assert!(report.resident);
}

#[test]
fn the_mlps_device_memory_stays_near_its_live_tensor_peak() {
    let Some(mut vk) = vulkan() else { return };
    let p = Program::from_json(include_bytes!("../../../examples/mlp-train.json")).unwrap();
    let v = validate(&p, &ValidateOptions::default()).unwrap();
    // The fixed part: the two staging buffers, opened with the backend.
    let fixed = vk.peak_device_bytes().unwrap();
    let report = run(&mut vk, &v, &BTreeMap::new(), false);
    let peak = vk.peak_device_bytes().unwrap();
    // Fixed too: the digests and counter, the hash arena and its table.
    let batch = lockstep_limits::RESIDENT_BATCH_OPS as u64;
    let digests = 32 * batch + 4 + lockstep_limits::RESIDENT_HASH_ARENA_BYTES + 48 * batch;
    eprintln!(
        "mlp: device peak {} bytes = staging {} + digests, arena and table {} + {} for tensors; validated live peak {}",
        peak,
        fixed,
        digests,
        peak - fixed - digests,
        v.peak_bytes()
    );
    assert!(report.resident);
    assert!(
        peak - fixed - digests <= v.peak_bytes() + v.peak_bytes() / 4,
        "tensors took {} bytes on the device for a live peak of {}",
        peak - fixed - digests,
        v.peak_bytes()
    );
}
