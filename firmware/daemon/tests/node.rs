//! A real `lockstepd` on loopback, driven by the real `lockstep` client:
//! identity, status, jobs with verified receipts (also by the stock
//! minisign tool), refusals, and a daemon that keeps serving.
//!
//! The client binary is taken from the same target directory as the daemon
//! (`cargo test --workspace` builds both).

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::{lockstep_bin, Node};

fn vulkan_enabled() -> bool {
    std::env::var("LOCKSTEP_SKIP_VULKAN_TESTS").as_deref() != Ok("1")
}

fn start(state: &Path, backend: &str) -> Node {
    common::start(state, backend, &[])
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn lockstep(args: &[&str]) -> Out {
    let o = Command::new(lockstep_bin()).args(args).output().unwrap();
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `lockstep submit … exec PROGRAM --out-dir OUT` against `node`, writing
/// the receipt to `receipt`.
fn submit_exec(node: &common::Node, program: &Path, receipt: &Path, out: &Path) -> Out {
    lockstep(&[
        "submit",
        "--node",
        &node.addr,
        "--node-key",
        &node.key,
        "--receipt",
        s(receipt),
        "exec",
        s(program),
        "--out-dir",
        s(out),
    ])
}

/// `PROGRAM` run locally on the CPU reference into `out`: its trace.json.
fn local_trace(program: &Path, out: &Path) -> serde_json::Value {
    let o = lockstep(&[
        "exec",
        s(program),
        "--out-dir",
        s(out),
        "--backend",
        "cpu",
        "-q",
    ]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    serde_json::from_slice(&std::fs::read(out.join("trace.json")).unwrap()).unwrap()
}

/// A Linear-ReLU-Linear model as PyTorch exports it (Gemm, transB=1),
/// serialised with the generated ONNX types.
fn linear_relu_linear_onnx() -> Vec<u8> {
    use lockstep_onnx::proto::attribute_proto::AttributeType;
    use lockstep_onnx::proto::tensor_proto::DataType;
    use lockstep_onnx::proto::tensor_shape_proto::{dimension, Dimension};
    use lockstep_onnx::proto::*;
    use prost::Message as _;
    let info = |name: &str, dims: &[i64]| ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(DataType::Float as i32),
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| Dimension {
                            value: Some(dimension::Value::DimValue(d)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    };
    let weight = |name: &str, dims: &[i64], seed: u32| {
        let count: i64 = dims.iter().product();
        TensorProto {
            name: Some(name.into()),
            dims: dims.to_vec(),
            data_type: Some(DataType::Float as i32),
            float_data: (0..count as u32)
                .map(|i| ((i * 37 + seed) % 17) as f32 / 8.0 - 1.0)
                .collect(),
            ..Default::default()
        }
    };
    let gemm = |inputs: [&str; 3], output: &str| NodeProto {
        op_type: Some("Gemm".into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        attribute: vec![AttributeProto {
            name: Some("transB".into()),
            i: Some(1),
            r#type: Some(AttributeType::Int as i32),
            ..Default::default()
        }],
        ..Default::default()
    };
    let relu = NodeProto {
        op_type: Some("Relu".into()),
        input: vec!["h".into()],
        output: vec!["a".into()],
        ..Default::default()
    };
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        graph: Some(GraphProto {
            name: Some("mlp".into()),
            node: vec![
                gemm(["input", "fc1.weight", "fc1.bias"], "h"),
                relu,
                gemm(["a", "fc2.weight", "fc2.bias"], "output"),
            ],
            input: vec![info("input", &[4, 8])],
            output: vec![info("output", &[4, 3])],
            initializer: vec![
                weight("fc1.weight", &[16, 8], 1),
                weight("fc1.bias", &[16], 2),
                weight("fc2.weight", &[3, 16], 3),
                weight("fc2.bias", &[3], 4),
            ],
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

/// The README's path from an ONNX model: import, submit to a node with the
/// weights as inputs (`--inputs-dir`), the node's bits equal the local CPU
/// reference's, and `lockstep verify` re-executes the receipt.
#[test]
fn an_imported_onnx_model_runs_on_a_node_and_its_receipt_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("model.onnx"), linear_relu_linear_onnx()).unwrap();
    let program = d.join("model.json");
    let weights = d.join("model.weights");
    let o = lockstep(&["import", s(&d.join("model.onnx")), "--out", s(&program)]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let x = lockstep_tensor::Tensor::new(
        vec![4, 8],
        (0..32).map(|i| (i as f32 - 15.5) / 4.0).collect(),
    )
    .unwrap();
    let x_path = d.join("x.npy");
    lockstep_tensor::npy::write_file(&x_path, &x).unwrap();
    let input = format!("input={}", s(&x_path));

    let backend = if vulkan_enabled() { "vulkan" } else { "cpu" };
    let node = start(&d.join("state"), backend);
    let receipt = d.join("r.json");
    let remote = d.join("remote");
    let o = lockstep(&[
        "submit",
        "--node",
        &node.addr,
        "--node-key",
        &node.key,
        "--receipt",
        s(&receipt),
        "exec",
        s(&program),
        "--inputs-dir",
        s(&weights),
        "--input",
        &input,
        "--out-dir",
        s(&remote),
    ]);
    assert_eq!(o.code, 0, "{}", o.stderr);

    let local = d.join("local");
    let o = lockstep(&[
        "exec",
        s(&program),
        "--inputs-dir",
        s(&weights),
        "--input",
        &input,
        "--out-dir",
        s(&local),
        "--backend",
        "cpu",
        "-q",
    ]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(
        std::fs::read(remote.join("output.npy")).unwrap(),
        std::fs::read(local.join("output.npy")).unwrap(),
        "the node's output differs from the local CPU reference"
    );
    let verify = || {
        lockstep(&[
            "verify",
            "--receipt",
            s(&receipt),
            "--node-key",
            &node.key,
            "--program",
            s(&program),
            "--inputs-dir",
            s(&weights),
            "--input",
            &input,
            "--backend",
            "cpu",
        ])
    };
    let v = verify();
    assert_eq!(v.code, 0, "{}\n{}", v.stdout, v.stderr);
    // Different weights are a different job: the receipt's input hashes
    // bind them, so verification fails.
    let w = weights.join("fc2.bias.npy");
    lockstep_tensor::npy::write_file(&w, &lockstep_tensor::Tensor::zeros(vec![3]).unwrap())
        .unwrap();
    let v = verify();
    assert_ne!(v.code, 0, "{}", v.stdout);
}

#[test]
fn a_job_round_trip_gives_local_bits_and_a_verifiable_receipt() {
    let dir = tempfile::tempdir().unwrap();
    let backend = if vulkan_enabled() { "vulkan" } else { "cpu" };
    let node = start(&dir.path().join("state"), backend);

    // The node id the daemon announces is the one `lockstep identity` reads.
    let id = lockstep(&["identity", "--state", s(&dir.path().join("state"))]);
    assert!(id.stdout.contains(&node.key), "{}", id.stdout);

    let status = lockstep(&["status", "--node", &node.addr, "--node-key", &node.key]);
    assert_eq!(status.code, 0, "{}", status.stderr);
    assert!(
        status.stdout.contains("queue    0 of 8"),
        "{}",
        status.stdout
    );
    assert!(
        status.stdout.contains("key      file\n"),
        "{}",
        status.stdout
    );

    let program = examples().join("attention.json");
    let receipt = dir.path().join("r.json");
    let remote = dir.path().join("remote");
    let o = submit_exec(&node, &program, &receipt, &remote);
    assert_eq!(o.code, 0, "{}", o.stderr);

    // The same program locally on the CPU reference: the same bits.
    let local = dir.path().join("local");
    let trace = local_trace(&program, &local);
    for name in ["y", "attn"] {
        let a = std::fs::read(remote.join(format!("{name}.npy"))).unwrap();
        let b = std::fs::read(local.join(format!("{name}.npy"))).unwrap();
        assert!(
            a == b,
            "{name} differs between the node and local execution"
        );
    }
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&receipt).unwrap()).unwrap();
    assert_eq!(r["trace_root"], trace["root"]);
    assert_eq!(r["node"], node.key.as_str());
    assert_eq!(r["format"], 5);
    assert_eq!(r["device"]["index"], 0);
    assert_eq!(r["device"]["uuid"].as_str().map(str::len), Some(32));
    assert_eq!(r["key_protection"], "file");
    assert!(
        r["chain_address"].as_str().is_some_and(|a| a.len() == 42),
        "{r}"
    );

    // The stock minisign tool verifies the receipt; so does the client.
    let m = Command::new("minisign")
        .arg("-Vm")
        .arg(&receipt)
        .args(["-P", &node.key])
        .output()
        .expect("the minisign tool (make test installs it)");
    assert!(m.status.success(), "{}", String::from_utf8_lossy(&m.stderr));
    let y = remote.join("y.npy");
    let v = lockstep(&[
        "verify-receipt",
        s(&receipt),
        "--node-key",
        &node.key,
        "--outputs",
        s(&y),
    ]);
    assert_eq!(v.code, 0, "{}", v.stderr);
    assert!(v.stdout.contains("key protection: file"), "{}", v.stdout);
    assert!(
        v.stdout.contains("(EIP-712 signature verified)"),
        "{}",
        v.stdout
    );
    // A receipt edited after signing is refused.
    let text = std::fs::read_to_string(&receipt).unwrap();
    std::fs::write(
        &receipt,
        text.replace("\"certified\":false", "\"certified\":true"),
    )
    .unwrap();
    let v = lockstep(&["verify-receipt", s(&receipt), "--node-key", &node.key]);
    assert_eq!(v.code, 2, "{}", v.stdout);
}

#[test]
fn single_ops_and_bad_jobs_and_the_node_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(&dir.path().join("state"), "cpu");
    let a = dir.path().join("a.npy");
    let b = dir.path().join("b.npy");
    for (p, shape, seed) in [(&a, "5,7", "1"), (&b, "7,3", "2")] {
        let o = lockstep(&["random", "--shape", shape, "--seed", seed, "--out", s(p)]);
        assert_eq!(o.code, 0);
    }
    let out = dir.path().join("c.npy");
    let receipt = dir.path().join("r.json");
    let o = lockstep(&[
        "submit",
        "--node",
        &node.addr,
        "--node-key",
        &node.key,
        "--receipt",
        s(&receipt),
        "run",
        "matmul",
        s(&a),
        s(&b),
        "--out",
        s(&out),
    ]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let local = dir.path().join("local.npy");
    let o = lockstep(&[
        "run",
        "matmul",
        s(&a),
        s(&b),
        "--out",
        s(&local),
        "--backend",
        "cpu",
        "-q",
    ]);
    assert_eq!(o.code, 0);
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&local).unwrap());

    // The wrong pinned key: refused, naming both keys.
    let other = dir.path().join("other");
    drop(lockstep_identity::DeviceKey::load_or_create(&other).unwrap());
    let other_key = lockstep_identity::DeviceKey::load(&other)
        .unwrap()
        .node_id()
        .to_base64();
    let o = lockstep(&["status", "--node", &node.addr, "--node-key", &other_key]);
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains(&node.key) && o.stderr.contains(&other_key),
        "{}",
        o.stderr
    );

    // A program the node refuses (shapes do not fit): exit 2, one line.
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"version":1,"inputs":[{"name":"x","shape":[2,3]}],"outputs":["y"],
            "body":[{"op":"matmul","inputs":["x","x"],"output":"y"}]}"#,
    )
    .unwrap();
    let x = dir.path().join("x.npy");
    lockstep(&["random", "--shape", "2,3", "--out", s(&x)]);
    let o = lockstep(&[
        "submit",
        "--node",
        &node.addr,
        "--node-key",
        &node.key,
        "--receipt",
        s(&receipt),
        "exec",
        s(&bad),
        "--input",
        &format!("x={}", s(&x)),
        "--out-dir",
        s(&dir.path().join("o")),
    ]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stderr.contains("op 0"), "{}", o.stderr);

    // Still serving, and counting.
    let status = lockstep(&["status", "--node", &node.addr, "--node-key", &node.key]);
    assert_eq!(status.code, 0, "{}", status.stderr);
    assert!(
        status.stdout.contains("jobs     1 done"),
        "{}",
        status.stdout
    );
}

#[test]
fn the_identity_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let first = start(&state, "cpu").key.clone();
    let second = start(&state, "cpu").key.clone();
    assert_eq!(first, second);
}

/// The load test: 8 clients × 50 jobs, mixed small and medium, against one
/// node. Every job is answered exactly once (a result whose receipt the
/// client verified, or an explicit "busy"), and every result equals local
/// CPU execution bit for bit.
#[test]
fn eight_clients_fifty_jobs_each() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(&dir.path().join("state"), "cpu");
    let small = dir.path().join("small.npy");
    let medium = dir.path().join("medium.npy");
    lockstep(&[
        "random",
        "--shape",
        "16,16",
        "--seed",
        "3",
        "--out",
        s(&small),
    ]);
    lockstep(&[
        "random",
        "--shape",
        "256,256",
        "--seed",
        "4",
        "--out",
        s(&medium),
    ]);
    let expected = |input: &Path, op: &str| {
        let out = dir.path().join(format!(
            "local-{op}-{}.npy",
            input.file_stem().unwrap().to_str().unwrap()
        ));
        let o = lockstep(&[
            "run",
            op,
            s(input),
            "--out",
            s(&out),
            "--backend",
            "cpu",
            "-q",
        ]);
        assert_eq!(o.code, 0, "{}", o.stderr);
        std::fs::read(out).unwrap()
    };
    let want_small = expected(&small, "relu");
    let want_medium = expected(&medium, "softmax_rows");
    let answered = std::sync::atomic::AtomicUsize::new(0);
    let busy = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for client in 0..8 {
            let (node, dir) = (&node, dir.path());
            let (small, medium, want_small, want_medium) =
                (&small, &medium, &want_small, &want_medium);
            let (answered, busy) = (&answered, &busy);
            scope.spawn(move || {
                for job in 0..50 {
                    let (input, op, want) = if job % 5 == 4 {
                        (medium, "softmax_rows", want_medium)
                    } else {
                        (small, "relu", want_small)
                    };
                    let out = dir.join(format!("out-{client}-{job}.npy"));
                    let receipt = dir.join(format!("r-{client}-{job}.json"));
                    let o = lockstep(&[
                        "submit",
                        "--node",
                        &node.addr,
                        "--node-key",
                        &node.key,
                        "--receipt",
                        s(&receipt),
                        "run",
                        op,
                        s(input),
                        "--out",
                        s(&out),
                    ]);
                    answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if o.code != 0 {
                        // A full queue is a legitimate, explicit answer.
                        assert!(o.stderr.contains("busy"), "{}", o.stderr);
                        busy.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        continue;
                    }
                    assert_eq!(
                        &std::fs::read(&out).unwrap(),
                        want,
                        "client {client} job {job}"
                    );
                    assert!(o.stdout.contains("signature verified"), "{}", o.stdout);
                }
            });
        }
    });
    assert_eq!(answered.into_inner(), 400);
    let busy = busy.into_inner();
    let status = lockstep(&["status", "--node", &node.addr, "--node-key", &node.key]);
    assert!(
        status
            .stdout
            .contains(&format!("jobs     {} done, 0 failed", 400 - busy)),
        "{}",
        status.stdout
    );
}

#[test]
fn sigterm_stops_the_node_cleanly_and_it_comes_back_as_itself() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut node = start(&state, "cpu");
    let key = node.key.clone();
    let pid = node.child.id().to_string();
    let kill = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(kill.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(s) = node.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "lockstepd did not stop on SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status:?}");
    assert_eq!(start(&state, "cpu").key, key);
}

/// A lockstepd built without this crate's `fault-injection` feature (a
/// plain `cargo build`/`cargo test`, release or not, whatever other crates
/// turn on in lockstep-program) refuses the test-only flags outright.
#[cfg(not(feature = "fault-injection"))]
#[test]
fn a_build_without_the_test_feature_refuses_fault_injection() {
    let dir = tempfile::tempdir().unwrap();
    for flags in [
        &["--inject-fault", "op=0"][..],
        &["--inject-worker-panic"][..],
        &["--inject-self-test-fault"][..],
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_lockstepd"))
            .args([
                "--file-key",
                "--listen",
                "127.0.0.1:0",
                "--backend",
                "cpu",
                "--state",
            ])
            .arg(dir.path().join("s"))
            .args(flags)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{flags:?}: {err}");
        assert!(err.contains("needs a test build"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}

/// A panic in the GPU worker fails the running job with a typed Internal
/// error, then ends the process non-zero (so systemd's Restart=on-failure
/// brings the node back), instead of leaving a node whose jobs all time
/// out.
#[cfg(feature = "fault-injection")]
#[test]
fn a_worker_panic_fails_the_job_and_ends_the_process_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = common::start(
        &dir.path().join("state"),
        "cpu",
        &["--inject-worker-panic", "--job-timeout-s", "120"],
    );
    let started = std::time::Instant::now();
    let o = lockstep(&[
        "submit",
        "--node",
        &node.addr,
        "--node-key",
        &node.key,
        "--receipt",
        s(&dir.path().join("r.json")),
        "exec",
        s(&examples().join("attention.json")),
        "--out-dir",
        s(&dir.path().join("out")),
    ]);
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("GPU worker failed"), "{}", o.stderr);
    assert!(o.stderr.contains("resubmit"), "{}", o.stderr);
    // Long before the job time limit.
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(s) = node.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "lockstepd kept running after its worker panicked"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(1), "exit status {status:?}");
}

/// A backend that fails the start-up self-test: lockstepd exits 1 with
/// one line naming the op, never listens, and writes no ready file (the
/// image's boot-health check then does not bless the boot).
#[cfg(feature = "fault-injection")]
#[test]
fn a_failed_start_up_self_test_exits_1_without_a_ready_file() {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    std::fs::write(&ready, "serving old; self-test passed\n").unwrap();
    let o = lockstepd(
        &[
            "--file-key",
            "--uncertified",
            "--listen",
            "127.0.0.1:0",
            "--backend",
            "cpu",
            "--state",
            s(&dir.path().join("state")),
            "--ready-file",
            s(&ready),
            "--inject-self-test-fault",
        ],
        &[],
    );
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(!o.stdout.contains("listening"), "{}", o.stdout);
    let last = o.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("lockstepd: the start-up self-test of the backend failed")
            && last.contains("matmul"),
        "{}",
        o.stderr
    );
    assert!(
        !ready.exists(),
        "a stale ready file vouches for a failed start"
    );
}

fn lockstepd(args: &[&str], env: &[(&str, &Path)]) -> Out {
    let o = Command::new(env!("CARGO_BIN_EXE_lockstepd"))
        .args(args)
        .env_remove("CREDENTIALS_DIRECTORY")
        .envs(env.iter().map(|(k, v)| (*k, *v)))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// Exactly one device key source, given on the command line; a missing or
/// malformed sealed credential is a one-line startup error naming it.
#[test]
fn the_device_key_source_is_explicit_and_its_errors_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let base = [
        "--listen",
        "127.0.0.1:0",
        "--backend",
        "cpu",
        "--state",
        s(&state),
    ];
    let one_line = |o: &Out, what: &str| {
        assert_eq!(o.code, 2, "{what}: {}", o.stderr);
        assert_eq!(o.stderr.lines().count(), 1, "{what}: {}", o.stderr);
        assert!(o.stderr.contains(what), "{what}: {}", o.stderr);
    };
    one_line(&lockstepd(&base, &[]), "no device key source");
    let o = lockstepd(&base, &[]);
    assert!(o.stderr.contains("--sealed-identity") && o.stderr.contains("--file-key"));
    let mut both = base.to_vec();
    both.extend(["--file-key", "--sealed-identity", "x"]);
    one_line(&lockstepd(&both, &[]), "both given");
    assert!(!state.join("device.key").exists());

    let mut sealed = base.to_vec();
    sealed.extend(["--sealed-identity", "lockstep-identity"]);
    one_line(&lockstepd(&sealed, &[]), "CREDENTIALS_DIRECTORY");
    let creds = dir.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    let env = [("CREDENTIALS_DIRECTORY", creds.as_path())];
    let o = lockstepd(&sealed, &env);
    one_line(&o, "cannot read it");
    assert!(
        o.stderr.contains(s(&creds.join("lockstep-identity"))),
        "{}",
        o.stderr
    );
    std::fs::write(creds.join("lockstep-identity"), "{\"format\":\"other\"}").unwrap();
    let o = lockstepd(&sealed, &env);
    one_line(&o, "not usable");
    assert!(
        o.stderr.contains(s(&creds.join("lockstep-identity"))),
        "{}",
        o.stderr
    );
    assert!(!state.join("device.key").exists());
}

/// `lockstepd new-identity` writes the secret only into a pipe.
#[test]
fn new_identity_refuses_a_file_and_needs_operators() {
    let dir = tempfile::tempdir().unwrap();
    let provision = dir.path().join("provision.toml");
    let op = lockstep_identity::SigningKey::generate();
    std::fs::write(
        &provision,
        format!("trusted_operators = [\"{}\"]\n", op.public()),
    )
    .unwrap();
    let out = dir.path().join("identity.json");
    let o = Command::new(env!("CARGO_BIN_EXE_lockstepd"))
        .args(["new-identity", "--provision", s(&provision)])
        .stdout(std::fs::File::create(&out).unwrap())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("stdout is a regular file"), "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), b"");

    // Into a pipe: the JSON, and the node id on stderr.
    let o = lockstepd(&["new-identity", "--provision", s(&provision)], &[]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let id = o
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("lockstepd: new identity "))
        .unwrap_or_else(|| panic!("{}", o.stderr));
    let sealed = lockstep_identity::SealedIdentity::parse(o.stdout.as_bytes()).unwrap();
    assert_eq!(sealed.node_id().to_base64(), id);
    assert_eq!(sealed.operators(), std::slice::from_ref(op.public()));

    // No operators to seal: refused.
    std::fs::write(&provision, "").unwrap();
    let o = lockstepd(&["new-identity", "--provision", s(&provision)], &[]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stderr.contains("no trusted_operators"), "{}", o.stderr);
    assert!(o.stdout.is_empty());
}

/// A node on a sealed identity says so in its status and its receipts.
#[test]
fn a_sealed_node_states_its_key_protection() {
    let dir = tempfile::tempdir().unwrap();
    let provision = dir.path().join("provision.toml");
    let op = lockstep_identity::SigningKey::generate();
    std::fs::write(
        &provision,
        format!("trusted_operators = [\"{}\"]\n", op.public()),
    )
    .unwrap();
    let o = lockstepd(&["new-identity", "--provision", s(&provision)], &[]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let creds = dir.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(creds.join("lockstep-identity"), &o.stdout).unwrap();
    let node = common::start_with_env(
        &dir.path().join("state"),
        "cpu",
        &["--uncertified", "--sealed-identity", "lockstep-identity"],
        &[("CREDENTIALS_DIRECTORY", creds.as_os_str())],
    );
    assert!(o.stderr.contains(&node.key), "{}", o.stderr);
    let status = lockstep(&["status", "--node", &node.addr, "--node-key", &node.key]);
    assert_eq!(status.code, 0, "{}", status.stderr);
    assert!(
        status.stdout.contains("key      tpm-sealed\n"),
        "{}",
        status.stdout
    );
    let receipt = dir.path().join("r.json");
    let o = lockstep(&[
        "submit",
        "--node",
        &node.addr,
        "--node-key",
        &node.key,
        "--receipt",
        s(&receipt),
        "exec",
        s(&examples().join("attention.json")),
        "--out-dir",
        s(&dir.path().join("out")),
    ]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let v = lockstep(&["verify-receipt", s(&receipt), "--node-key", &node.key]);
    assert_eq!(v.code, 0, "{}", v.stderr);
    assert!(
        v.stdout.contains("key protection: tpm-sealed"),
        "{}",
        v.stdout
    );
    // The chain key is derived from the sealed device key: status names
    // its address, and the receipt's chain signature (R.json.eip712)
    // recovers to it.
    let chain = status
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("chain    "))
        .unwrap_or_else(|| panic!("no chain line: {}", status.stdout));
    assert!(chain.starts_with("0x") && chain.len() == 42, "{chain}");
    assert!(
        v.stdout.contains(&format!(
            "chain address: {chain} (EIP-712 signature verified)"
        )),
        "{}",
        v.stdout
    );
    assert!(dir.path().join("r.json.eip712").exists());
    assert!(!dir.path().join("state/device.key").exists());
}

/// A node that retains nothing runs jobs resident on its device (no observer
/// needs the intermediate tensors): its receipt commits to the same trace
/// root as the CPU reference's, repeat body replays included.
#[test]
fn a_node_without_retention_runs_resident_with_the_same_root() {
    if !vulkan_enabled() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let node = common::start(
        &dir.path().join("state"),
        "vulkan",
        &["--retention-bytes", "0"],
    );
    let program = examples().join("mlp-train.json");
    let receipt = dir.path().join("r.json");
    let o = submit_exec(&node, &program, &receipt, &dir.path().join("remote"));
    assert_eq!(o.code, 0, "{}", o.stderr);
    let trace = local_trace(&program, &dir.path().join("local"));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&receipt).unwrap()).unwrap();
    assert_eq!(r["trace_root"], trace["root"]);
}
