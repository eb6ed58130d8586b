//! End-to-end tests of `lockstep exec`: CPU and Vulkan give the same output
//! bytes and the same trace root; bad programs and inputs exit 2 with one
//! line that names the step or the file.
//!
//! Set LOCKSTEP_SKIP_VULKAN_TESTS=1 to skip the parts that need a Vulkan
//! device; otherwise they always run (lavapipe is enough).

use std::fs;
use std::path::{Path, PathBuf};

use lockstep_program::{trace, Program};
use serde_json::{json, Value};
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

    fn program(&self, name: &str, doc: &Value) -> PathBuf {
        self.write(name, serde_json::to_string_pretty(doc).unwrap().as_bytes())
    }

    /// A tensor from `lockstep random`.
    fn random(&self, name: &str, shape: &str, seed: u64, fill: &str) -> PathBuf {
        let p = self.path(name);
        let seed = seed.to_string();
        let out = lockstep(&[
            "random",
            "--shape",
            shape,
            "--seed",
            &seed,
            "--fill",
            fill,
            "--out",
            s(&p),
        ]);
        assert_eq!(out.code, 0, "random: {}", out.stderr);
        p
    }
}

/// Gradient descent on a linear model, then a ReLU layer on the side: every
/// existing op in one program, with a repeat loop.
fn training_program() -> Value {
    json!({
        "version": 1,
        "inputs": [
            {"name": "x", "shape": [32, 8]},
            {"name": "y", "shape": [32, 1]},
            {"name": "w", "shape": [8, 1]}
        ],
        "outputs": ["w", "stats", "colsum", "gram"],
        "body": [
            {"repeat": 20, "body": [
                {"op": "matmul", "inputs": ["x", "w"], "output": "pred"},
                {"op": "sub", "inputs": ["pred", "y"], "output": "r"},
                {"op": "matmul_tn", "inputs": ["x", "r"], "output": "g"},
                {"op": "scale", "inputs": ["g"], "output": "step", "attrs": {"alpha": 0.01}},
                {"op": "sub", "inputs": ["w", "step"], "output": "w"}
            ]},
            {"op": "relu", "inputs": ["x"], "output": "h"},
            {"op": "mul", "inputs": ["h", "x"], "output": "hx"},
            {"op": "add", "inputs": ["hx", "h"], "output": "hh"},
            {"op": "relu_backward", "inputs": ["hh", "x"], "output": "dh"},
            {"op": "sum_rows", "inputs": ["dh"], "output": "stats"},
            {"op": "sum_cols", "inputs": ["dh"], "output": "colsum"},
            {"op": "matmul_nt", "inputs": ["dh", "dh"], "output": "gram"}
        ]
    })
}

struct Setup {
    dir: Scratch,
    program: PathBuf,
    inputs: Vec<String>,
}

fn setup(fill: &str) -> Setup {
    let dir = Scratch::new();
    let program = dir.program("train.json", &training_program());
    let x = dir.random("x.npy", "32,8", 1, fill);
    let y = dir.random("y.npy", "32,1", 2, fill);
    let w = dir.random("w.npy", "8,1", 3, fill);
    let inputs = vec![
        format!("x={}", s(&x)),
        format!("y={}", s(&y)),
        format!("w={}", s(&w)),
    ];
    Setup {
        dir,
        program,
        inputs,
    }
}

fn exec_args<'a>(program: &'a Path, inputs: &'a [String], out: &'a Path) -> Vec<&'a str> {
    let mut args = vec!["exec", s(program), "--out-dir", s(out)];
    for i in inputs {
        args.extend(["--input", i.as_str()]);
    }
    args
}

fn read_trace(dir: &Path) -> Value {
    serde_json::from_slice(&fs::read(dir.join("trace.json")).expect("trace.json")).unwrap()
}

#[test]
fn cpu_and_vulkan_agree_on_outputs_and_trace() {
    for fill in ["uniform", "edgy"] {
        let t = setup(fill);
        let mut runs = Vec::new();
        let mut backends = vec!["cpu"];
        if vulkan_enabled("exec cpu/vulkan") {
            backends.push("vulkan");
        }
        for backend in &backends {
            let out = t.dir.path(&format!("out-{backend}"));
            let mut args = exec_args(&t.program, &t.inputs, &out);
            args.extend(["--backend", backend]);
            let o = lockstep(&args);
            assert_eq!(o.code, 0, "{backend}: {}", o.stderr);
            assert!(o.stdout.contains("107 executed"), "{}", o.stdout);
            let tr = read_trace(&out);
            assert_eq!(tr["backend"], *backend);
            assert!(
                o.stdout.contains(tr["root"].as_str().unwrap()),
                "{}",
                o.stdout
            );
            runs.push((out, tr));
        }
        let (cpu_dir, cpu) = &runs[0];
        // The trace is internally consistent: its leaves give its root, the
        // outputs are the files written, the program hash is the program's.
        let leaves: Vec<[u8; 32]> = cpu["ops"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                hex::decode(e["output_sha256"].as_str().unwrap())
                    .unwrap()
                    .try_into()
                    .unwrap()
            })
            .collect();
        assert_eq!(leaves.len(), 107);
        assert_eq!(cpu["leaf_count"], 107);
        assert_eq!(cpu["root"], hex::encode(trace::root(&leaves)));
        assert_eq!(cpu["ops"][0]["path"], "0.0");
        assert_eq!(cpu["ops"][5]["path"], "0.0");
        assert_eq!(cpu["ops"][106]["path"], "7");
        assert_eq!(cpu["ops"][106]["op"], "matmul_nt");
        assert_eq!(cpu["ops"][106]["index"], 106);
        let program = Program::from_json(&fs::read(&t.program).unwrap()).unwrap();
        assert_eq!(cpu["program_sha256"], program.sha256_hex());
        assert_eq!(cpu["bundle_id"].as_str().unwrap().len(), 64);
        for name in ["w", "stats", "colsum", "gram"] {
            let bytes = fs::read(cpu_dir.join(format!("{name}.npy"))).unwrap();
            let digest = lockstep_tensor::npy::decode(&bytes).unwrap().sha256_hex();
            assert_eq!(cpu["outputs"][name], digest);
        }
        let keys: Vec<&String> = cpu.as_object().unwrap().keys().collect();
        for k in [
            "backend",
            "bundle_id",
            "device",
            "leaf_count",
            "ops",
            "program_sha256",
            "root",
        ] {
            assert!(keys.iter().any(|x| *x == k), "trace.json lacks {k}");
        }
        for (dir, tr) in &runs[1..] {
            assert_eq!(tr["root"], cpu["root"], "{fill}: roots differ");
            assert_eq!(tr["ops"], cpu["ops"]);
            for name in ["w", "stats", "colsum", "gram"] {
                let a = fs::read(cpu_dir.join(format!("{name}.npy"))).unwrap();
                let b = fs::read(dir.join(format!("{name}.npy"))).unwrap();
                assert!(a == b, "{fill}: {name}.npy differs between cpu and vulkan");
            }
            assert_ne!(tr["device"]["name"], cpu["device"]["name"]);
        }
    }
}

#[test]
fn postcard_program_and_no_trace() {
    let t = setup("uniform");
    let json_out = t.dir.path("json");
    let o = lockstep(
        &[
            &exec_args(&t.program, &t.inputs, &json_out)[..],
            &["--backend", "cpu", "-q"],
        ]
        .concat(),
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(o.stdout, "", "-q prints nothing");
    // The same program as postcard bytes: the same hash and root.
    let program = Program::from_json(&fs::read(&t.program).unwrap()).unwrap();
    let wire = t.dir.write("train.bin", &program.to_postcard());
    let bin_out = t.dir.path("bin");
    let o = lockstep(
        &[
            &exec_args(&wire, &t.inputs, &bin_out)[..],
            &["--backend", "cpu"],
        ]
        .concat(),
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(read_trace(&bin_out), read_trace(&json_out));
    // --no-trace: the same outputs, no trace.json (a stale one is removed).
    let o = lockstep(
        &[
            &exec_args(&t.program, &t.inputs, &bin_out)[..],
            &["--backend", "cpu", "--no-trace"],
        ]
        .concat(),
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("trace   off"), "{}", o.stdout);
    assert!(!bin_out.join("trace.json").exists());
    assert_eq!(
        fs::read(bin_out.join("w.npy")).unwrap(),
        fs::read(json_out.join("w.npy")).unwrap()
    );
}

/// Runs exec on every backend (the checks come before a device is opened,
/// so both must say the same), expecting exit 2 and no output directory.
fn expect_exec_error(program: &Path, inputs: &[String], extra: &[&str], needles: &[&str]) {
    let dir = Scratch::new();
    let out = dir.path("out");
    let mut backends = vec!["cpu"];
    if vulkan_enabled("exec errors") {
        backends.push("vulkan");
    }
    let mut messages = Vec::new();
    for backend in backends {
        let mut args = exec_args(program, inputs, &out);
        args.extend(["--backend", backend]);
        args.extend(extra);
        let o = lockstep(&args);
        assert_fails(&o, 2, needles);
        assert!(!out.exists(), "a refused program must not write anything");
        messages.push(o.stderr);
    }
    messages.dedup();
    assert_eq!(messages.len(), 1, "backends disagree: {messages:?}");
}

#[test]
fn program_errors_name_the_step() {
    let t = setup("uniform");
    let mut doc = training_program();
    // matmul_tn(x, r) -> matmul(x, r): 32x8 · 32x1 does not fit.
    doc["body"][0]["body"][2]["op"] = json!("matmul");
    let bad = t.dir.program("bad.json", &doc);
    expect_exec_error(
        &bad,
        &t.inputs,
        &[],
        &["bad.json: op 0.2 (matmul): shapes 32x8 and 32x1 do not fit"],
    );

    let mut doc = training_program();
    doc["body"][3]["inputs"] = json!(["hx", "nowhere"]);
    let bad = t.dir.program("undeclared.json", &doc);
    expect_exec_error(
        &bad,
        &t.inputs,
        &[],
        &["op 3 (add)", "'nowhere'", "undeclared"],
    );

    let mut doc = training_program();
    doc["body"][0]["repeat"] = json!(0);
    let bad = t.dir.program("zero.json", &doc);
    expect_exec_error(&bad, &t.inputs, &[], &["op 0 (repeat): repeat count 0"]);

    let mut doc = training_program();
    doc["outputs"] = json!(["w", "ghost"]);
    let bad = t.dir.program("ghost.json", &doc);
    expect_exec_error(&bad, &t.inputs, &[], &["output 'ghost': never produced"]);

    let mut doc = training_program();
    doc["body"][0]["body"][1]["op"] = json!("subtract");
    let bad = t.dir.program("unknown.json", &doc);
    expect_exec_error(&bad, &t.inputs, &[], &["op 0.1 (subtract): unknown op"]);

    expect_exec_error(
        &t.program,
        &t.inputs,
        &["--memory-limit", "1200"],
        &[
            "train.json: op 0.0 (matmul): live tensors would take",
            "--memory-limit",
        ],
    );

    let garbage = t.dir.write("garbage.json", b"{\"version\": 1, \"body\": [");
    expect_exec_error(
        &garbage,
        &t.inputs,
        &[],
        &["garbage.json: not a program in JSON form"],
    );
    let garbage = t.dir.write("garbage.bin", &[1, 2, 3, 0xff]);
    expect_exec_error(
        &garbage,
        &t.inputs,
        &[],
        &["garbage.bin: not a program in postcard form"],
    );
}

#[test]
fn input_errors_name_the_input_or_file() {
    let t = setup("uniform");
    expect_exec_error(
        &t.program,
        &t.inputs[..2],
        &[],
        &["train.json: input 'w' (8x1) is declared but no --input w="],
    );
    let mut extra = t.inputs.clone();
    extra.push(t.inputs[0].replacen("x=", "z=", 1));
    expect_exec_error(
        &t.program,
        &extra,
        &[],
        &["--input z=", "declares no input 'z' (its inputs: x, y, w)"],
    );
    let mut twice = t.inputs.clone();
    twice.push(t.inputs[0].clone());
    expect_exec_error(&t.program, &twice, &[], &["--input x is given twice"]);
    let mut swapped = t.inputs.clone();
    swapped[1] = t.inputs[0].replacen("x=", "y=", 1);
    expect_exec_error(
        &t.program,
        &swapped,
        &[],
        &["x.npy: shape 32x8 differs from the shape 32x1", "input 'y'"],
    );
    let not_npy = t.dir.write("table.npy", b"a,b\n1,2\n");
    let mut bad = t.inputs.clone();
    bad[2] = format!("w={}", s(&not_npy));
    expect_exec_error(&t.program, &bad, &[], &["table.npy: not a .npy file"]);
    let mut no_eq = t.inputs.clone();
    no_eq[0] = "x.npy".into();
    expect_exec_error(&t.program, &no_eq, &[], &["is not NAME=FILE.npy"]);
}

#[test]
fn run_takes_zero_inputs_to_the_op_arity_check() {
    // INPUT.npy is optional for `run` (generator ops take none); an op that
    // needs inputs still says how many.
    let dir = Scratch::new();
    let out = dir.path("o.npy");
    let o = lockstep(&["run", "add", "--out", s(&out), "--backend", "cpu"]);
    assert_fails(&o, 2, &["add takes 2 input(s), got 0"]);
}

/// The `ops` line's count, the `moved` line, and the `--profile` table's
/// rows as (op, count), from `lockstep exec` output.
struct Printed {
    ops: u64,
    moved: String,
    rows: Vec<(String, u64)>,
    rest: Option<String>,
}

fn parse_exec_output(stdout: &str) -> Printed {
    let lines: Vec<&str> = stdout.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("ops "))
        .unwrap_or_else(|| panic!("no ops line: {stdout}"));
    let ops = lines[at]
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let moved = lines[at + 1].to_string();
    assert!(moved.starts_with("moved   "), "moved follows ops: {stdout}");
    let mut rows = Vec::new();
    let mut rest = None;
    if let Some(h) = lines.iter().position(|l| {
        l.split_whitespace().collect::<Vec<_>>()
            == [
                "op", "count", "total", "ms", "mean", "ms", "max", "ms", "share",
            ]
    }) {
        assert!(lines[h - 1].starts_with("profile "), "{stdout}");
        for l in &lines[h + 1..] {
            if l.starts_with('(') {
                rest = Some(l.to_string());
                break;
            }
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 6, "{l:?}");
            assert!(f[5].ends_with('%'), "{l:?}");
            rows.push((f[0].to_string(), f[1].parse().unwrap()));
        }
    }
    Printed {
        ops,
        moved,
        rows,
        rest,
    }
}

#[test]
fn profile_prints_the_top_ops_and_moved_counts_transfers() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/mlp-train.json");
    let dir = Scratch::new();
    let out = dir.path("out");
    let o = lockstep(&[
        "exec",
        s(&example),
        "--out-dir",
        s(&out),
        "--backend",
        "cpu",
        "--profile",
    ]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let p = parse_exec_output(&o.stdout);
    assert_eq!(
        p.moved, "moved   0 B to the device, 0 B back; 0 submits, 0 fence waits (op by op)",
        "the CPU reference moves nothing"
    );
    assert!(p.rows.len() <= 15, "{}", o.stdout);
    assert!(p.rows.iter().any(|(op, _)| op == "matmul"), "{}", o.stdout);
    // The shown counts and the rest line's add up to the ops line.
    let mut counted: u64 = p.rows.iter().map(|(_, c)| c).sum();
    if let Some(rest) = &p.rest {
        assert_eq!(p.rows.len(), 15, "{}", o.stdout);
        // "(N more ops: X ms in M executions)"
        let m: u64 = rest
            .trim_end_matches(" executions)")
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap_or_else(|_| panic!("{rest:?}"));
        assert!(
            rest.starts_with('(') && rest.contains(" more ops: "),
            "{rest:?}"
        );
        counted += m;
    }
    assert_eq!(counted, p.ops, "{}", o.stdout);

    // Without --profile: the moved line, no table.
    let o = lockstep(&[
        "exec",
        s(&example),
        "--out-dir",
        s(&out),
        "--backend",
        "cpu",
    ]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let plain = parse_exec_output(&o.stdout);
    assert!(
        plain.rows.is_empty() && plain.rest.is_none(),
        "{}",
        o.stdout
    );
    assert!(!o.stdout.contains("profile "), "{}", o.stdout);

    // On Vulkan, op by op: every op stages its inputs and output and
    // submits; resident (the default): a submit per batch of ops.
    if vulkan_enabled("profile_prints_the_top_ops_and_moved_counts_transfers") {
        let counts = |extra: &[&str]| {
            let mut args = vec!["exec", s(&example), "--out-dir", s(&out)];
            args.extend_from_slice(extra);
            let o = lockstep(&args);
            assert_eq!(o.code, 0, "{}", o.stderr);
            let v = parse_exec_output(&o.stdout);
            // moved X U to the device, Y U back; S submits, W fence waits (MODE)
            let (counts, mode) = v.moved.split_once(" (").unwrap();
            let f: Vec<&str> = counts.split_whitespace().collect();
            let submits: u64 = f[f.len() - 5].parse().unwrap();
            let waits: u64 = f[f.len() - 3].parse().unwrap();
            assert_eq!(submits, waits, "{}", v.moved);
            (v.ops, submits, mode.to_string(), v.moved)
        };
        let (ops, submits, mode, moved) = counts(&["--per-op"]);
        assert!(submits >= ops, "{moved}");
        assert_eq!(mode, "op by op)", "{moved}");
        assert!(!moved.starts_with("moved   0 B"), "{moved}");
        let (ops, submits, mode, moved) = counts(&[]);
        assert!(mode.starts_with("resident"), "{moved}");
        assert!(
            submits * 20 <= ops,
            "{submits} submits for {ops} ops: {moved}"
        );
    }
}
