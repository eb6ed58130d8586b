//! End-to-end tests of the `lockstep` binary: exit codes, one-line error
//! messages that name the offending file, and CPU/Vulkan agreement.
//!
//! Set LOCKSTEP_SKIP_VULKAN_TESTS=1 to skip the parts that need a Vulkan
//! device; otherwise they always run (lavapipe is enough).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

mod common;
use common::{assert_fails, lockstep, s};

fn vulkan_enabled(test: &str) -> bool {
    let skip = std::env::var("LOCKSTEP_SKIP_VULKAN_TESTS").is_ok_and(|v| v == "1");
    if skip {
        eprintln!("{test}: LOCKSTEP_SKIP_VULKAN_TESTS=1, skipping the Vulkan part");
    }
    !skip
}

/// Backends to exercise input errors on: both fail before a device is opened.
fn backends() -> Vec<&'static str> {
    if vulkan_enabled("input errors") {
        vec!["cpu", "vulkan"]
    } else {
        vec!["cpu"]
    }
}

/// `.npy` bytes with the given header dict, padded as NumPy pads it.
fn npy_raw(dict: &str, data: &[u8]) -> Vec<u8> {
    // Magic, version and length take 10 bytes; the data starts 64-aligned.
    let pad = (64 - (10 + dict.len() + 1) % 64) % 64;
    let header = format!("{dict}{}\n", " ".repeat(pad));
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

fn npy(descr: &str, fortran: bool, shape: &str, data: &[u8]) -> Vec<u8> {
    let order = if fortran { "True" } else { "False" };
    npy_raw(
        &format!("{{'descr': '{descr}', 'fortran_order': {order}, 'shape': {shape}, }}"),
        data,
    )
}

fn f32_bytes(n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| (i as f32 * 0.5).to_le_bytes())
        .collect()
}

/// Scratch directory with helpers to place files in it.
struct Scratch(TempDir);

impl Scratch {
    fn new() -> Scratch {
        Scratch(tempfile::tempdir().expect("tempdir"))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.path(name);
        fs::write(&p, bytes).expect("write scratch file");
        p
    }

    /// A valid float32 matrix, written by hand.
    fn matrix(&self, name: &str, rows: usize, cols: usize) -> PathBuf {
        let shape = format!("({rows}, {cols})");
        self.write(name, &npy("<f4", false, &shape, &f32_bytes(rows * cols)))
    }

    /// A tensor from `lockstep random --fill edgy`.
    fn random(&self, name: &str, shape: &[usize], seed: u64) -> PathBuf {
        let p = self.path(name);
        let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
        let seed = seed.to_string();
        let out = lockstep(&[
            "random",
            "--shape",
            &dims.join(","),
            "--seed",
            &seed,
            "--fill",
            "edgy",
            "--out",
            s(&p),
        ]);
        assert_eq!(out.code, 0, "random: {}", out.stderr);
        p
    }
}

/// Runs `op` with these extra args on every backend; each must fail with
/// exit 2 and the same message, which is returned.
fn expect_input_error(op: &str, inputs: &[&Path], extra: &[&str], needles: &[&str]) -> String {
    let dir = Scratch::new();
    let out_path = dir.path("out.npy");
    let mut messages = Vec::new();
    for backend in backends() {
        let mut args = vec!["run", op];
        args.extend(inputs.iter().map(|p| s(p)));
        args.extend(["--out", s(&out_path), "--backend", backend]);
        args.extend(extra);
        let out = lockstep(&args);
        assert_fails(&out, 2, needles);
        assert!(!out_path.exists(), "a failed run must not write its output");
        messages.push(out.stderr);
    }
    messages.dedup();
    assert_eq!(messages.len(), 1, "backends disagree: {messages:?}");
    messages.remove(0)
}

/// `add good.npy BAD` where BAD holds `bytes`: exit 2, naming BAD only.
fn expect_bad_file(name: &str, bytes: &[u8], needles: &[&str]) {
    let dir = Scratch::new();
    let good = dir.matrix("good.npy", 2, 2);
    let bad = dir.write(name, bytes);
    let mut all = vec![s(&bad)];
    all.extend(needles);
    let msg = expect_input_error("add", &[&good, &bad], &[], &all);
    assert!(!msg.contains("good.npy"), "names the wrong file: {msg}");
}

#[test]
fn float64_is_refused() {
    let bytes = npy("<f8", false, "(2, 2)", &[0; 32]);
    expect_bad_file("f64.npy", &bytes, &["'<f8'", "float64"]);
}

#[test]
fn fortran_order_is_refused() {
    let bytes = npy("<f4", true, "(2, 2)", &f32_bytes(4));
    expect_bad_file("fortran.npy", &bytes, &["Fortran order"]);
}

#[test]
fn malformed_headers_are_refused() {
    let garbage = npy_raw("garbage, not a dict", &f32_bytes(4));
    expect_bad_file("garbage.npy", &garbage, &["malformed .npy header"]);
    let list = npy_raw("[2, 2]", &f32_bytes(4));
    expect_bad_file("list.npy", &list, &["malformed .npy header"]);
}

#[test]
fn text_file_is_not_npy() {
    expect_bad_file("table.npy", b"a,b\n1,2\n3,4\n", &["not a .npy file"]);
}

#[test]
fn truncated_data_is_refused() {
    let bytes = npy("<f4", false, "(2, 2)", &f32_bytes(4)[..10]);
    expect_bad_file("short.npy", &bytes, &["cut short"]);
}

#[test]
fn trailing_data_is_refused() {
    let mut data = f32_bytes(4);
    data.extend_from_slice(&[0xAB; 4]);
    let bytes = npy("<f4", false, "(2, 2)", &data);
    expect_bad_file("long.npy", &bytes, &["4 unexpected bytes"]);
}

#[test]
fn big_endian_is_refused() {
    let bytes = npy(">f4", false, "(2, 2)", &f32_bytes(4));
    expect_bad_file("be.npy", &bytes, &["'>f4'", "big-endian"]);
}

#[test]
fn shape_errors_name_the_operand_at_fault() {
    let dir = Scratch::new();
    let (a34, b52) = (dir.matrix("lhs.npy", 3, 4), dir.matrix("rhs.npy", 5, 2));
    let needles = [s(&b52), "3x4", "5x2", "inner dimensions"];
    expect_input_error("matmul", &[&a34, &b52], &[], &needles);

    let a23 = dir.matrix("a23.npy", 2, 3);
    let needles = [s(&a23), "2x2", "2x3", "differ"];
    expect_input_error("add", &[&dir.matrix("a22.npy", 2, 2), &a23], &[], &needles);

    let vector = dir.write("vec.npy", &npy("<f4", false, "(4,)", &f32_bytes(4)));
    let needles = [s(&vector), "matrix"];
    expect_input_error(
        "matmul",
        &[&vector, &dir.matrix("m42.npy", 4, 2)],
        &[],
        &needles,
    );
    expect_input_error("matmul", &[&a34, &vector], &[], &needles);
}

#[test]
fn unknown_op_lists_the_known_ones() {
    let dir = Scratch::new();
    let a = dir.matrix("a.npy", 2, 2);
    let needles = ["frobnicate", "matmul_tn", "relu_backward", "sum_cols"];
    expect_input_error("frobnicate", &[&a], &[], &needles);
}

#[test]
fn wrong_number_of_inputs() {
    let dir = Scratch::new();
    let a = dir.matrix("a.npy", 2, 2);
    expect_input_error("matmul", &[&a], &[], &["matmul takes 2 input(s), got 1"]);
    expect_input_error("relu", &[&a, &a], &[], &["relu takes 1 input(s), got 2"]);
}

#[test]
fn missing_input_is_named() {
    let dir = Scratch::new();
    let (a, missing) = (dir.matrix("a.npy", 2, 2), dir.path("absent.npy"));
    expect_input_error("add", &[&a, &missing], &[], &[s(&missing), "cannot read"]);
}

#[test]
fn scale_needs_a_float_alpha() {
    let dir = Scratch::new();
    let a = dir.matrix("a.npy", 2, 2);
    expect_input_error("scale", &[&a], &[], &["scale", "alpha is required"]);
    let bad = ["--attr", "alpha=abc"];
    expect_input_error("scale", &[&a], &bad, &["\"abc\" is not a float"]);
    let stray = ["--attr", "beta=1"];
    expect_input_error(
        "relu",
        &[&a],
        &stray,
        &["'beta' is not an attribute of relu"],
    );
}

#[test]
fn device_does_not_apply_to_cpu() {
    let dir = Scratch::new();
    let a = dir.matrix("a.npy", 2, 2);
    let out = dir.path("out.npy");
    let args = [
        "run",
        "relu",
        s(&a),
        "--out",
        s(&out),
        "--backend",
        "cpu",
        "--device",
        "0",
    ];
    assert_fails(&lockstep(&args), 2, &["--device", "--backend cpu"]);
}

#[test]
fn output_in_missing_directory_fails() {
    let dir = Scratch::new();
    let a = dir.matrix("a.npy", 2, 2);
    let out = dir.path("no/such/dir/out.npy");
    let run = |backend| lockstep(&["run", "relu", s(&a), "--out", s(&out), "--backend", backend]);
    let mut outs = vec![run("cpu")];
    if vulkan_enabled("output_in_missing_directory_fails") {
        outs.push(run("vulkan"));
    }
    for o in outs {
        assert_ne!(o.code, 0);
        assert_fails(&o, o.code, &["out.npy"]);
    }
}

#[test]
fn tampered_bundle_is_refused() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../kernels-spirv/src/kernels");
    let dir = Scratch::new();
    let bundle = dir.path("bundle");
    fs::create_dir(&bundle).unwrap();
    for entry in fs::read_dir(&src).expect("kernel bundle dir") {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            fs::copy(entry.path(), bundle.join(entry.file_name())).unwrap();
        }
    }
    // The untouched copy loads.
    let ok = lockstep(&["kernels", "--bundle", s(&bundle)]);
    assert_eq!(ok.code, 0, "{}", ok.stderr);

    let spv = bundle.join("matmul.spv");
    let mut bytes = fs::read(&spv).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    fs::write(&spv, &bytes).unwrap();

    let needles = ["matmul.spv", "SHA-256"];
    assert_fails(&lockstep(&["kernels", "--bundle", s(&bundle)]), 1, &needles);
    let (a, b) = (dir.matrix("a.npy", 2, 2), dir.matrix("b.npy", 2, 2));
    let out = dir.path("c.npy");
    let mut backends = vec!["cpu"];
    if vulkan_enabled("tampered_bundle_is_refused") {
        backends.push("vulkan");
    }
    for backend in backends {
        let args = [
            "run",
            "matmul",
            s(&a),
            s(&b),
            "--out",
            s(&out),
            "--bundle",
            s(&bundle),
        ];
        let mut args = args.to_vec();
        args.extend(["--backend", backend]);
        assert_fails(&lockstep(&args), 1, &needles);
        assert!(!out.exists());
    }
}

/// Runs one op on one backend; returns the output file's bytes and the
/// SHA-256 that `run` printed.
fn run_ok(
    dir: &Scratch,
    op: &str,
    inputs: &[&Path],
    attrs: &[&str],
    backend: &str,
) -> (Vec<u8>, String) {
    let out = dir.path(&format!("{op}-{backend}.npy"));
    let mut args = vec!["run", op];
    args.extend(inputs.iter().map(|p| s(p)));
    args.extend(["--out", s(&out), "--backend", backend]);
    args.extend(attrs);
    let o = lockstep(&args);
    let what = format!(
        "{op} on {backend}: stdout {:?}, stderr {:?}",
        o.stdout, o.stderr
    );
    assert_eq!((o.code, o.stderr.as_str()), (0, ""), "{what}");
    let device = format!("device  {backend}:");
    assert!(o.stdout.lines().any(|l| l.starts_with(&device)), "{what}");
    let sha = o.stdout.lines().find(|l| l.starts_with("sha256"));
    let hex = sha.and_then(|l| l.split_whitespace().nth(1)).unwrap_or("");
    assert!(is_sha256_hex(hex), "{what}");
    (fs::read(&out).expect("output written"), hex.to_string())
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Runs `op` on the CPU and, unless skipped, on Vulkan: both must succeed
/// and agree to the bit, in the file and in the printed hash.
fn assert_backends_agree(dir: &Scratch, op: &str, inputs: &[&Path], attrs: &[&str], case: &str) {
    let cpu = run_ok(dir, op, inputs, attrs, "cpu");
    if vulkan_enabled(&format!("{op} on {case}")) {
        let gpu = run_ok(dir, op, inputs, attrs, "vulkan");
        assert!(
            cpu.0 == gpu.0,
            "{op} on {case}: cpu and vulkan outputs differ"
        );
        assert_eq!(cpu.1, gpu.1, "{op} on {case}: printed hashes differ");
    }
}

const ALPHA: &[&str] = &["--attr", "alpha=0.75"];

#[test]
fn every_op_agrees_bit_for_bit_across_backends() {
    let dir = Scratch::new();
    // (m, k, n); primes leave every tile edge ragged.
    for (i, (m, k, n)) in [(37, 53, 29), (1, 1, 1), (64, 64, 64), (5, 131, 3)]
        .into_iter()
        .enumerate()
    {
        let case = format!("{m}x{k}x{n}");
        let seed = 10 * i as u64;
        let a = dir.random(&format!("a{i}.npy"), &[m, k], seed);
        let at = dir.random(&format!("at{i}.npy"), &[k, m], seed + 1);
        let b = dir.random(&format!("b{i}.npy"), &[k, n], seed + 2);
        let bt = dir.random(&format!("bt{i}.npy"), &[n, k], seed + 3);
        let x = dir.random(&format!("x{i}.npy"), &[m, k], seed + 4);
        let cases: [(&str, Vec<&Path>, &[&str]); 11] = [
            ("matmul", vec![&a, &b], &[]),
            ("matmul_tn", vec![&at, &b], &[]),
            ("matmul_nt", vec![&a, &bt], &[]),
            ("add", vec![&a, &x], &[]),
            ("sub", vec![&a, &x], &[]),
            ("mul", vec![&a, &x], &[]),
            ("scale", vec![&a], ALPHA),
            ("relu", vec![&a], &[]),
            ("relu_backward", vec![&a, &x], &[]),
            ("sum_rows", vec![&a], &[]),
            ("sum_cols", vec![&a], &[]),
        ];
        for (op, inputs, attrs) in &cases {
            assert_backends_agree(&dir, op, inputs, attrs, &case);
        }
    }
    // Element-wise ops take any rank: a long prime-length vector and a 3-D tensor.
    for (i, shape) in [vec![100_003], vec![3, 5, 7]].iter().enumerate() {
        let case = format!("{shape:?}");
        let x = dir.random(&format!("ex{i}.npy"), shape, 100 + i as u64);
        let y = dir.random(&format!("ey{i}.npy"), shape, 200 + i as u64);
        for op in ["add", "sub", "mul", "relu_backward"] {
            assert_backends_agree(&dir, op, &[&x, &y], &[], &case);
        }
        assert_backends_agree(&dir, "scale", &[&x], ALPHA, &case);
        assert_backends_agree(&dir, "relu", &[&x], &[], &case);
    }
}

#[test]
fn quiet_run_prints_nothing() {
    let dir = Scratch::new();
    let a = dir.random("a.npy", &[7, 3], 1);
    let out = dir.path("out.npy");
    let o = lockstep(&[
        "run",
        "relu",
        s(&a),
        "--out",
        s(&out),
        "--backend",
        "cpu",
        "-q",
    ]);
    assert_eq!((o.code, o.stdout.as_str(), o.stderr.as_str()), (0, "", ""));
    assert!(out.exists());
}

#[test]
fn devices_lists_float_controls() {
    if !vulkan_enabled("devices_lists_float_controls") {
        return;
    }
    let text = lockstep(&["devices"]);
    assert_eq!(text.code, 0, "{}", text.stderr);
    assert!(text.stdout.contains("RTE"), "{}", text.stdout);

    let json = lockstep(&["devices", "--json"]);
    assert_eq!(json.code, 0, "{}", json.stderr);
    let list: serde_json::Value = serde_json::from_str(&json.stdout).expect("devices --json");
    let list = list.as_array().expect("a JSON array");
    let has_float32 = |d: &serde_json::Value| {
        d["float32"].as_object().is_some_and(|f| {
            f.contains_key("rounding_mode_rte") && f.contains_key("denorm_preserve")
        })
    };
    assert!(list.iter().any(has_float32), "{}", json.stdout);
}

#[test]
fn kernels_json_names_bundle_and_matmul() {
    let o = lockstep(&["kernels", "--json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let doc: serde_json::Value = serde_json::from_str(&o.stdout).expect("kernels --json");
    let id = doc["bundle_id"].as_str().unwrap_or("");
    assert!(is_sha256_hex(id), "bundle_id {id:?}");
    let kernels = doc["kernels"].as_array().expect("kernels array");
    assert!(
        kernels.iter().any(|k| k["name"] == "matmul"),
        "{}",
        o.stdout
    );
}

#[test]
fn ml_ops_run_from_the_command_line_with_attributes() {
    let dir = Scratch::new();
    let logits = dir.random("logits.npy", &[6, 5], 3);
    let labels = dir.path("labels.npy");
    let t = lockstep_tensor::Tensor::new(vec![6], vec![0.0, 4.0, 2.0, 1.0, 3.0, 0.0]).unwrap();
    lockstep_tensor::npy::write_file(&labels, &t).unwrap();
    let gamma = dir.random("gamma.npy", &[5], 4);
    let beta = dir.random("beta.npy", &[5], 5);
    let cases: Vec<(&str, Vec<&str>, Vec<&str>)> = vec![
        (
            "rand_normal",
            vec![],
            vec![
                "--attr",
                "shape=3,4",
                "--attr",
                "seed=9",
                "--attr",
                "stream=2",
            ],
        ),
        (
            "rand_uniform",
            vec![],
            vec!["--attr", "shape=17", "--attr", "seed=1"],
        ),
        ("cross_entropy", vec![s(&logits), s(&labels)], vec![]),
        (
            "cross_entropy_backward",
            vec![s(&logits), s(&labels)],
            vec![],
        ),
        ("softmax_rows", vec![s(&logits)], vec![]),
        (
            "layernorm_rows",
            vec![s(&logits), s(&gamma), s(&beta)],
            vec!["--attr", "eps=1e-3"],
        ),
        ("bias_add", vec![s(&logits), s(&gamma)], vec![]),
        ("transpose", vec![s(&logits)], vec![]),
        ("gelu", vec![s(&logits)], vec![]),
        ("div", vec![s(&logits), s(&logits)], vec![]),
    ];
    let mut backends = vec!["cpu"];
    if vulkan_enabled("ml ops") {
        backends.push("vulkan");
    }
    for (op, inputs, attrs) in cases {
        let mut hashes = Vec::new();
        for backend in &backends {
            let out = dir.path(&format!("{op}-{backend}.npy"));
            let mut args = vec!["run", op];
            args.extend(&inputs);
            args.extend(["--out", s(&out), "--backend", backend]);
            args.extend(&attrs);
            let o = lockstep(&args);
            assert_eq!(o.code, 0, "{op} on {backend}: {}", o.stderr);
            hashes.push(std::fs::read(&out).unwrap());
        }
        assert!(
            hashes.windows(2).all(|w| w[0] == w[1]),
            "{op}: backends differ"
        );
    }
    // Attribute errors are input errors.
    let out = dir.path("x.npy");
    let o = lockstep(&[
        "run",
        "rand_normal",
        "--attr",
        "shape=3",
        "--out",
        s(&out),
        "--backend",
        "cpu",
    ]);
    assert_fails(&o, 2, &["seed"]);
    let o = lockstep(&[
        "run",
        "layernorm_rows",
        s(&logits),
        s(&gamma),
        s(&beta),
        "--attr",
        "eps=big",
        "--out",
        s(&out),
    ]);
    assert_fails(&o, 2, &["eps"]);
}

#[test]
fn identity_prints_the_node_key_and_never_creates_one() {
    let dir = Scratch::new();
    let state = dir.path("state");
    let o = lockstep(&["identity", "--state", s(&state)]);
    assert_fails(&o, 2, &["no device key"]);
    assert!(!state.exists(), "identity must not create a key");
    let (key, _) = lockstep_identity::DeviceKey::load_or_create(&state).unwrap();
    let o = lockstep(&["identity", "--state", s(&state)]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(o.stdout, key.node_id().to_public_key_file());
}

/// `lockstep show … | head -1`: the reader closes the pipe early; the
/// command ends quietly (as SIGPIPE would end a C tool), not in a panic.
#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let dir = TempDir::new().unwrap();
    let big = dir.path().join("big.npy");
    let made = lockstep(&[
        "random",
        "--shape",
        "200000",
        "--out",
        big.to_str().unwrap(),
    ]);
    assert_eq!(made.code, 0, "{}", made.stderr);
    let mut child = Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .args(["show", big.to_str().unwrap(), "--limit", "200000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // The reader is gone: the rest of the output meets a closed pipe.
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(first.starts_with("shape"), "{first}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(141), "{stderr}");
}
