//! Cross-implementation tests: the same kernels on SwiftShader (Google's
//! Vulkan on the Subzero JIT, whose SPIR-V compiler shares nothing with
//! Mesa's), on lavapipe, and on the CPU reference, bit for bit.
//!
//! SwiftShader does not advertise RoundingModeRTE and flushes subnormals,
//! so it is opened with `VulkanBackend::new_cross_implementation_test` (the
//! test-only portable bundle). Everything here stays in the normal range,
//! where the float model and a flushing device agree; the CPU reference run
//! under a flushing host float environment (`host_float`) is what decides
//! that a generated program stays there. Cases that depend on subnormals
//! are hwtests/tests/cross_implementation.rs's.
//!
//! The tests run when SwiftShader's ICD is present: `make test` fetches it
//! into target/swiftshader and passes its path in LOCKSTEP_SWIFTSHADER_ICD.
//! Without it they say so on stderr and pass.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use lockstep_backend::{Backend, CpuBackend, Op};
use lockstep_kernels::{Bundle, BundleKind, Variant};
use lockstep_program::{execute, validate, ExecOptions, Program, ValidateOptions};
use lockstep_tensor::{Fill, Tensor};
use lockstep_vulkan::host_float::{self, FloatEnv};
use lockstep_vulkan::{Instance, MatmulKernels, VulkanBackend, CROSS_IMPLEMENTATION_TEST_BACKEND};

#[derive(Clone, Copy)]
struct Devices {
    swiftshader: usize,
    lavapipe: usize,
}

fn swiftshader_icd() -> PathBuf {
    std::env::var_os("LOCKSTEP_SWIFTSHADER_ICD")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/swiftshader/usr/lib/chromium/vk_swiftshader_icd.json")
        })
}

/// Both devices in one loader: lavapipe's ICD and SwiftShader's, set once
/// before any instance of this test binary exists.
fn devices() -> Option<Devices> {
    static DEVICES: OnceLock<Option<Devices>> = OnceLock::new();
    *DEVICES.get_or_init(|| {
        if std::env::var("LOCKSTEP_SKIP_VULKAN_TESTS").as_deref() == Ok("1") {
            eprintln!("LOCKSTEP_SKIP_VULKAN_TESTS=1: skipping the cross-implementation tests");
            return None;
        }
        let icd = swiftshader_icd();
        if !icd.exists() {
            eprintln!(
                "SKIPPED: no SwiftShader ICD at {} (make test fetches it: make swiftshader)",
                icd.display()
            );
            return None;
        }
        let lavapipe = std::fs::read_dir("/usr/share/vulkan/icd.d")
            .expect("/usr/share/vulkan/icd.d: install mesa-vulkan-drivers")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.to_string_lossy().contains("lvp_icd"))
            .expect("lavapipe's ICD: install mesa-vulkan-drivers");
        std::env::set_var(
            "VK_ICD_FILENAMES",
            format!("{}:{}", lavapipe.display(), icd.display()),
        );
        let list = Instance::new().unwrap().devices().unwrap();
        let find = |what: &str| {
            list.iter()
                .find(|d| d.name.contains(what))
                .unwrap_or_else(|| panic!("no {what} device among {list:?}"))
                .index
        };
        Some(Devices {
            swiftshader: find("SwiftShader"),
            lavapipe: find("llvmpipe"),
        })
    })
}

fn swiftshader(d: Devices) -> VulkanBackend {
    VulkanBackend::new_cross_implementation_test(Some(d.swiftshader)).unwrap()
}

fn lavapipe(d: Devices) -> VulkanBackend {
    VulkanBackend::new(Bundle::embedded().unwrap(), Some(d.lavapipe)).unwrap()
}

#[test]
fn swiftshader_is_refused_for_real_and_opens_only_as_a_labelled_test() {
    let Some(d) = devices() else { return };
    let refused = VulkanBackend::new(Bundle::embedded().unwrap(), Some(d.swiftshader))
        .err()
        .expect("SwiftShader must be refused as a conforming device");
    assert!(refused.to_string().contains("RoundingModeRTE"), "{refused}");
    // The portable bundle never opens a device for real.
    let wrong = VulkanBackend::new(Bundle::embedded_portable().unwrap(), Some(d.lavapipe))
        .err()
        .expect("the portable bundle is refused by VulkanBackend::new");
    assert!(
        wrong.to_string().contains("cross-implementation"),
        "{wrong}"
    );

    let ss = swiftshader(d);
    assert_eq!(ss.variant(), Variant::Portable);
    assert_eq!(ss.bundle().kind(), BundleKind::Portable);
    assert_eq!(ss.fingerprint().backend, CROSS_IMPLEMENTATION_TEST_BACKEND);
    let why = ss.non_conforming().expect("labelled non-conforming");
    assert!(
        why.contains("NON-CONFORMING") && why.contains("RoundingModeRTE"),
        "{why}"
    );
    assert!(!why.contains('\n'));
    // lavapipe opened for real says nothing of the kind.
    let lvp = lavapipe(d);
    assert_eq!(lvp.fingerprint().backend, "vulkan");
    assert!(lvp.non_conforming().is_none());
}

#[test]
fn the_portable_bundle_gives_the_same_bits_on_lavapipe() {
    let Some(d) = devices() else { return };
    // lavapipe advertises RTE, but the test-only mode always loads the
    // portable binaries: they must be as exact there as on SwiftShader.
    let mut lvp = VulkanBackend::new_cross_implementation_test(Some(d.lavapipe)).unwrap();
    assert_eq!(lvp.variant(), Variant::Portable);
    assert!(lvp
        .non_conforming()
        .unwrap()
        .contains("DenormPreserve not advertised"));
    let program = Program::from_json(include_bytes!("../../../examples/attention.json")).unwrap();
    let cpu = run_program(&mut CpuBackend::new(), &program);
    assert_same_run(
        "attention",
        &cpu,
        &run_program(&mut lvp, &program),
        "lavapipe (portable)",
    );
    for (seed, name) in ["gelu", "exp", "softmax_rows", "layernorm_rows"]
        .iter()
        .enumerate()
    {
        let o = Op::parse(name, &BTreeMap::new()).unwrap();
        let shapes: Vec<Vec<usize>> = match *name {
            "layernorm_rows" => vec![vec![33, 70], vec![70], vec![70]],
            _ => vec![vec![33, 70]],
        };
        let inputs: Vec<Tensor> = shapes
            .into_iter()
            .map(|s| {
                Tensor::filled(
                    s,
                    seed as u64,
                    Fill::Edgy {
                        edge_per_mille: 100,
                    },
                )
                .unwrap()
            })
            .collect();
        let refs: Vec<&Tensor> = inputs.iter().collect();
        let want = CpuBackend::new().run(&o, &refs).unwrap();
        let got = lvp.run(&o, &refs).unwrap();
        assert!(
            got.bit_eq(&want),
            "{name} with edge values on lavapipe (portable)"
        );
    }
}

/// Runs a program with tracing: (outputs, trace root).
fn run_program(
    backend: &mut dyn Backend,
    program: &Program,
) -> (BTreeMap<String, Tensor>, [u8; 32]) {
    let v = validate(program, &ValidateOptions::default()).unwrap();
    let report = execute(&v, backend, BTreeMap::new(), ExecOptions::default())
        .unwrap_or_else(|e| panic!("{} failed: {e}", backend.fingerprint().name));
    (report.outputs, report.trace.unwrap().root)
}

fn assert_same_run(
    what: &str,
    want: &(BTreeMap<String, Tensor>, [u8; 32]),
    got: &(BTreeMap<String, Tensor>, [u8; 32]),
    device: &str,
) {
    for (name, t) in &want.0 {
        if let Some((i, g, w)) = got.0[name].first_bit_mismatch(t) {
            panic!("{what}: output {name} element {i} is {g:#010x} on {device}, {w:#010x} on the CPU reference");
        }
    }
    assert_eq!(
        hex(&got.1),
        hex(&want.1),
        "{what}: trace root on {device} differs from the CPU reference's"
    );
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn example_programs_give_the_same_outputs_and_trace_roots() {
    let Some(d) = devices() else { return };
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
    let (mut ss, mut lvp) = (swiftshader(d), lavapipe(d));
    for (name, json) in examples {
        let program = Program::from_json(json).unwrap();
        let cpu = run_program(&mut CpuBackend::new(), &program);
        let t = std::time::Instant::now();
        let on_ss = run_program(&mut ss, &program);
        eprintln!("{name} on SwiftShader: {:.2} s", t.elapsed().as_secs_f64());
        assert_same_run(name, &cpu, &on_ss, "SwiftShader");
        assert_same_run(name, &cpu, &run_program(&mut lvp, &program), "lavapipe");
    }
}

/// A small deterministic generator (SplitMix64), so a failing seed can be
/// replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
}

/// Steps of a generated program. Each keeps `h` (m×n) and, between them,
/// they use every op of the op set at least once.
const STEPS: usize = 11;

fn op(name: &str, inputs: &[&str], output: &str, attrs: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"op": name, "inputs": inputs, "output": output, "attrs": attrs})
}

fn step(kind: usize, rng: &mut Rng) -> Vec<serde_json::Value> {
    let a = |rng: &mut Rng| (rng.range(1, 15) as f64) / 16.0;
    let none = serde_json::json!({});
    match kind {
        // Element-wise activations.
        0 => vec![
            op("gelu", &["h"], "g", none.clone()),
            op("sigmoid", &["g"], "s", none.clone()),
            op("relu", &["h"], "r", none.clone()),
            op("relu_backward", &["s", "h"], "rb", none.clone()),
            op("tanh", &["rb"], "t", none.clone()),
            op("erf", &["t"], "t", none.clone()),
            op("where", &["rb", "t", "g"], "t", none.clone()),
            op("greater", &["t", "g"], "gt", none.clone()),
            op("less", &["t", "rb"], "lt", none.clone()),
            op("equal", &["rb", "r"], "eq", none.clone()),
            op("where", &["gt", "t", "g"], "t", none.clone()),
            op("where", &["lt", "t", "rb"], "t", none.clone()),
            op("where", &["eq", "t", "h"], "t", none.clone()),
            op("tanh_backward", &["g", "t"], "tb", none.clone()),
            op("gelu_backward", &["tb", "h"], "h", none),
        ],
        // Arithmetic against a fresh random matrix.
        1 => vec![
            op(
                "rand_uniform",
                &[],
                "u",
                serde_json::json!({"shape": ["m", "n"], "seed": rng.below(1000), "stream": 1}),
            ),
            op(
                "affine",
                &["u"],
                "den",
                serde_json::json!({"alpha": 1.0, "beta": 1.0}),
            ),
            op("div", &["h", "den"], "q", none.clone()),
            op("mul", &["q", "u"], "p", none.clone()),
            op("add", &["p", "h"], "s", none.clone()),
            op("sub", &["s", "u"], "d", none.clone()),
            op("scale", &["d"], "h", serde_json::json!({"alpha": a(rng)})),
        ],
        // exp, log, sqrt on positive values.
        2 => vec![
            op("mul", &["h", "h"], "sq", none.clone()),
            op(
                "affine",
                &["sq"],
                "pos",
                serde_json::json!({"alpha": 0.5, "beta": 0.25}),
            ),
            op("sqrt", &["pos"], "rt", none.clone()),
            op("log", &["rt"], "lg", none.clone()),
            op("exp", &["lg"], "ex", none.clone()),
            op(
                "axpby",
                &["ex", "h"],
                "h",
                serde_json::json!({"alpha": a(rng), "beta": 0.5}),
            ),
        ],
        // The matmul family with square weights.
        3 => vec![
            op(
                "rand_normal",
                &[],
                "w",
                serde_json::json!({"shape": ["n", "n"], "seed": rng.below(1000), "stream": 2}),
            ),
            op("scale", &["w"], "w", serde_json::json!({"alpha": 0.125})),
            op("matmul", &["h", "w"], "hw", none.clone()),
            op("matmul_nt", &["hw", "w"], "hwt", none.clone()),
            op("matmul_tn", &["h", "h"], "g", none.clone()),
            op("scale", &["g"], "g", serde_json::json!({"alpha": 0.0625})),
            op("matmul", &["hwt", "g"], "h", none),
        ],
        // Sums and broadcasting.
        4 => vec![
            op("sum_cols", &["h"], "c", none.clone()),
            op("scale", &["c"], "c", serde_json::json!({"alpha": 0.03125})),
            op("bias_add", &["h", "c"], "hb", none.clone()),
            op("sum_rows", &["hb"], "r", none.clone()),
            op("transpose", &["hb"], "ht", none.clone()),
            op("transpose", &["ht"], "h", none.clone()),
            // Data movement: h's columns twice, the second copy sliced
            // back out; rows stacked and the first m taken; a reshape
            // there and back; rows of hᵀ gathered by argmax; row max and
            // mean added back along the columns; a fill, and zeros.
            op("concat_cols", &["h", "h"], "hh", none.clone()),
            op(
                "slice_cols",
                &["hh"],
                "h2",
                serde_json::json!({"start": "n", "len": "n"}),
            ),
            op("concat_rows", &["h2", "hb"], "hv", none.clone()),
            op(
                "slice_rows",
                &["hv"],
                "h",
                serde_json::json!({"start": 0, "len": "m"}),
            ),
            op(
                "reshape",
                &["h"],
                "flat",
                serde_json::json!({"shape": ["n", "m"]}),
            ),
            op(
                "reshape",
                &["flat"],
                "h",
                serde_json::json!({"shape": ["m", "n"]}),
            ),
            op("argmax_rows", &["h"], "am", none.clone()),
            op("transpose", &["h"], "tt", none.clone()),
            op("gather_rows", &["tt", "am"], "g", none.clone()),
            op("max_rows", &["g"], "gm", none.clone()),
            op("max_rows", &["h"], "mx", none.clone()),
            op("mean_rows", &["h"], "mean", none.clone()),
            op("add", &["mx", "mean"], "s", none.clone()),
            op("sub", &["s", "gm"], "s", none.clone()),
            op("bias_add", &["tt", "s"], "tt", none.clone()),
            op("transpose", &["tt"], "h", none.clone()),
            op(
                "reshape",
                &["h"],
                "h3",
                serde_json::json!({"shape": ["m", 1, "n"]}),
            ),
            op(
                "permute",
                &["h3"],
                "p3",
                serde_json::json!({"perm": [2, 0, 1]}),
            ),
            op(
                "reshape",
                &["p3"],
                "pt",
                serde_json::json!({"shape": ["n", "m"]}),
            ),
            op("transpose", &["pt"], "h", none.clone()),
            op("zeros", &[], "z", serde_json::json!({"shape": ["m", "n"]})),
            op(
                "full",
                &[],
                "f",
                serde_json::json!({"shape": ["m", "n"], "value": 0.25}),
            ),
            op(
                "axpby",
                &["h", "f"],
                "h",
                serde_json::json!({"alpha": 0.5, "beta": 1.0}),
            ),
            op("add", &["h", "z"], "h", none),
        ],
        // Row ops.
        5 => vec![
            op("softmax_rows", &["h"], "sm", none.clone()),
            op("log_softmax_rows", &["h"], "ls", none.clone()),
            op("add", &["sm", "ls"], "h", none),
        ],
        // Layer norm forward and backward.
        6 => vec![
            op(
                "rand_normal",
                &[],
                "gamma",
                serde_json::json!({"shape": ["n"], "seed": rng.below(1000), "stream": 3}),
            ),
            op(
                "rand_normal",
                &[],
                "beta",
                serde_json::json!({"shape": ["n"], "seed": rng.below(1000), "stream": 4}),
            ),
            op(
                "layernorm_rows",
                &["h", "gamma", "beta"],
                "y",
                serde_json::json!({"eps": 1e-5}),
            ),
            op(
                "layernorm_backward",
                &["y", "h", "gamma"],
                "dx",
                serde_json::json!({"eps": 1e-5}),
            ),
            op(
                "layernorm_backward_gamma",
                &["y", "h"],
                "dg",
                serde_json::json!({"eps": 1e-5}),
            ),
            op("bias_add", &["dx", "dg"], "h", none),
        ],
        // Losses, argmax as labels, set_element.
        7 => vec![
            op(
                "rand_uniform",
                &[],
                "z",
                serde_json::json!({"shape": ["m", "n"], "seed": rng.below(1000), "stream": 5}),
            ),
            op("argmax_rows", &["z"], "labels", none.clone()),
            op("cross_entropy", &["h", "labels"], "loss", none.clone()),
            op(
                "cross_entropy_backward",
                &["h", "labels"],
                "gr",
                none.clone(),
            ),
            op(
                "rand_uniform",
                &[],
                "idx",
                serde_json::json!({"shape": [1], "seed": rng.below(1000), "stream": 6}),
            ),
            op("scale", &["idx"], "idx", serde_json::json!({"alpha": 4.0})),
            op("argmax_rows", &["gr"], "am", none.clone()),
            op("set_element", &["am", "loss", "idx"], "am", none.clone()),
            op("sum_cols", &["gr"], "gc", none.clone()),
            op("bias_add", &["h", "gc"], "h", none),
        ],
        // Optimisers.
        8 => vec![
            op(
                "rand_normal",
                &[],
                "gw",
                serde_json::json!({"shape": ["m", "n"], "seed": rng.below(1000), "stream": 7}),
            ),
            op(
                "sgd_update",
                &["h", "gw"],
                "w1",
                serde_json::json!({"lr": 0.01}),
            ),
            op("mul", &["gw", "gw"], "v", none.clone()),
            op(
                "rand_uniform",
                &[],
                "c",
                serde_json::json!({"shape": [1], "seed": rng.below(1000), "stream": 8}),
            ),
            op(
                "affine",
                &["c"],
                "c1",
                serde_json::json!({"alpha": 0.5, "beta": 0.25}),
            ),
            op(
                "affine",
                &["c"],
                "c2",
                serde_json::json!({"alpha": 0.25, "beta": 0.5}),
            ),
            op(
                "adam_update",
                &["w1", "gw", "v", "c1", "c2"],
                "h",
                serde_json::json!({"lr": 0.001, "eps": 1e-8}),
            ),
        ],
        // Keep values bounded.
        9 => vec![op("tanh", &["h"], "h", none)],
        _ => vec![op(
            "scale",
            &["h"],
            "h",
            serde_json::json!({"alpha": a(rng) * 2.0}),
        )],
    }
}

/// A random program: random m, n, a random order of steps (every kind at
/// least once, plus random extra depth) inside a repeat block of a random
/// count, starting from a random seed.
fn random_program(seed: u64) -> (Program, String) {
    let mut rng = Rng(seed);
    let (m, n) = (rng.range(1, 24) as usize, rng.range(1, 80) as usize);
    let mut kinds: Vec<usize> = (0..STEPS).collect();
    for _ in 0..rng.below(4) {
        kinds.push(rng.below(STEPS as u64) as usize);
    }
    for i in (1..kinds.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        kinds.swap(i, j);
    }
    let times = rng.range(1, 3);
    let mut body = Vec::new();
    for k in &kinds {
        body.extend(step(*k, &mut rng));
        // Bounded between steps, so that products of steps do not grow
        // towards overflow or the subnormal range.
        body.push(op("tanh", &["h"], "h", serde_json::json!({})));
    }
    let text = serde_json::json!({
        "version": 1,
        "inputs": [],
        "outputs": ["h"],
        "body": [
            op("rand_normal", &[], "h", serde_json::json!({"shape": ["m", "n"], "seed": seed, "stream": 0})),
            {"repeat": times, "body": body},
        ],
    })
    .to_string()
    .replace("\"m\"", &m.to_string())
    .replace("\"n\"", &n.to_string());
    let what = format!("seed {seed}: {m}x{n}, steps {kinds:?}, repeat {times}");
    (Program::from_json(text.as_bytes()).unwrap(), what)
}

#[test]
fn random_programs_using_every_op_are_bit_identical() {
    let Some(d) = devices() else { return };
    if !host_float::supported() {
        eprintln!("SKIPPED: this host cannot model a flushing device");
        return;
    }
    // The generator must cover the op set.
    let mut used = std::collections::BTreeSet::new();
    for k in 0..STEPS {
        for o in step(k, &mut Rng(0)) {
            used.insert(o["op"].as_str().unwrap().to_string());
        }
    }
    used.insert("rand_normal".into());
    for name in lockstep_backend::OP_NAMES {
        assert!(used.contains(*name), "the generator never uses {name}");
    }

    let (mut ss, mut lvp) = (swiftshader(d), lavapipe(d));
    let (mut compared, mut subnormal) = (0, 0);
    for seed in 0..24u64 {
        let (program, what) = random_program(seed);
        let cpu = run_program(&mut CpuBackend::new(), &program);
        // A program whose result changes when the host flushes subnormals
        // leaves the normal range somewhere: not one of these tests.
        let flushed = host_float::with_env(FloatEnv::FLUSH_BOTH, || {
            run_program(&mut CpuBackend::new(), &program)
        })
        .unwrap();
        if flushed.1 != cpu.1 {
            subnormal += 1;
            continue;
        }
        assert_same_run(&what, &cpu, &run_program(&mut ss, &program), "SwiftShader");
        assert_same_run(&what, &cpu, &run_program(&mut lvp, &program), "lavapipe");
        compared += 1;
    }
    eprintln!("random programs: {compared} compared, {subnormal} left the normal range");
    assert!(
        compared >= 16,
        "only {compared} of 24 programs stayed in the normal range"
    );
}

fn matmul_inputs(name: &str, m: usize, k: usize, n: usize, seed: u64) -> Vec<Tensor> {
    let shapes = match name {
        "matmul" => [vec![m, k], vec![k, n]],
        "matmul_tn" => [vec![k, m], vec![k, n]],
        _ => [vec![m, k], vec![n, k]],
    };
    shapes
        .into_iter()
        .enumerate()
        .map(|(i, s)| Tensor::filled(s, seed * 7 + i as u64, Fill::Uniform).unwrap())
        .collect()
}

#[test]
fn both_matmul_families_with_clamped_dispatches_are_bit_identical() {
    let Some(d) = devices() else { return };
    let (mut ss, mut lvp) = (swiftshader(d), lavapipe(d));
    let dims: &[(usize, usize, usize)] = &[
        (1, 1, 1),
        (3, 5, 7),
        (17, 1, 29),
        (16, 16, 256),
        (33, 65, 257),
        (97, 131, 61),
        (5, 300, 3),
    ];
    for family in [MatmulKernels::Direct, MatmulKernels::Tiled] {
        for clamp in [None, Some([2, 3, 1])] {
            for be in [&mut ss, &mut lvp] {
                be.set_matmul_kernels(family);
                be.set_max_workgroups(clamp.unwrap_or([u32::MAX; 3]));
            }
            for name in ["matmul", "matmul_tn", "matmul_nt"] {
                let o = Op::parse(name, &BTreeMap::new()).unwrap();
                for (seed, &(m, k, n)) in dims.iter().enumerate() {
                    let inputs = matmul_inputs(name, m, k, n, seed as u64);
                    let refs: Vec<&Tensor> = inputs.iter().collect();
                    let want = CpuBackend::new().run(&o, &refs).unwrap();
                    for (device, be) in [("SwiftShader", &mut ss), ("lavapipe", &mut lvp)] {
                        let got = be.run(&o, &refs).unwrap();
                        if let Some((i, g, w)) = got.first_bit_mismatch(&want) {
                            panic!("{name} {m}x{k}x{n} ({family:?}, clamp {clamp:?}): element {i} is {g:#010x} on {device}, {w:#010x} on the CPU reference");
                        }
                    }
                }
            }
        }
    }
}
