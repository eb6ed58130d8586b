"""The `lockstep` package end to end: run on the CPU reference and on
Vulkan (lavapipe), bit for bit; ONNX models against onnxruntime; submit to
a real node and verify the receipt; refusals as one-line exceptions."""

import json
import subprocess

import numpy as np
import onnxruntime as ort
import pytest

import lockstep
import models  # firmware/cli/tests/onnx/models.py (conftest puts it on the path)

MLP = {
    "version": 1,
    "inputs": [{"name": "x", "shape": [4, 8]}, {"name": "w", "shape": [8, 3]}],
    "outputs": ["y"],
    "body": [
        {"op": "matmul", "inputs": ["x", "w"], "output": "h"},
        {"op": "tanh", "inputs": ["h"], "output": "y"},
    ],
}


def rng():
    return np.random.default_rng(20261203)


def mlp_inputs():
    r = rng()
    return {
        "x": r.standard_normal((4, 8)).astype(np.float32),
        "w": r.standard_normal((8, 3)).astype(np.float32),
    }


def ort_outputs(model, inputs):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, inputs)))


def onnx_program(tmp_path, build):
    m, inputs = build(rng())
    path = tmp_path / f"{m.graph.name}.onnx"
    path.write_bytes(m.SerializeToString())
    return m, path, inputs


def test_cpu_and_vulkan_give_the_same_bits_and_trace_root():
    inputs = mlp_inputs()
    cpu, cpu_trace = lockstep.run(MLP, inputs, backend="cpu")
    gpu, gpu_trace = lockstep.run(MLP, inputs, backend="vulkan")
    assert cpu["y"].dtype == np.float32 and cpu["y"].shape == (4, 3)
    assert cpu["y"].tobytes() == gpu["y"].tobytes()
    assert cpu_trace["root"] == gpu_trace["root"]
    assert (cpu_trace["backend"], gpu_trace["backend"]) == ("cpu", "vulkan")
    assert cpu_trace["leaf_count"] == 2
    # Close to numpy (tanh and matmul are not numpy's bits, but near them).
    np.testing.assert_allclose(cpu["y"], np.tanh(inputs["x"] @ inputs["w"]), rtol=1e-5, atol=1e-6)


def test_untraced_runs_return_no_trace_and_the_same_bits():
    inputs = mlp_inputs()
    traced, _ = lockstep.run(MLP, inputs, backend="cpu")
    untraced, trace = lockstep.run(MLP, inputs, backend="cpu", trace=False)
    assert trace is None
    assert traced["y"].tobytes() == untraced["y"].tobytes()


def test_outputs_are_writable_views_of_the_runtime_buffer_not_copies():
    out, _ = lockstep.run(MLP, mlp_inputs(), backend="cpu")
    y = out["y"]
    assert y.flags.writeable and y.flags.c_contiguous
    owner = y
    while isinstance(owner, np.ndarray):
        owner = owner.base
    if isinstance(owner, memoryview):
        owner = owner.obj
    assert isinstance(owner, bytearray)
    y[0, 0] = 7.0  # the caller owns it


@pytest.mark.parametrize("build", [models.mlp_gemm, models.encoder_block, models.causal_attention, models.decoder_block,
     models.embedding_ops, models.runtime_mask, models.mha_block,
     models.gpt2_block])
def test_onnx_models_agree_with_onnxruntime_and_are_bit_identical_across_backends(tmp_path, build):
    m, path, inputs = onnx_program(tmp_path, build)
    program = lockstep.import_onnx(path)
    assert [name for name, _ in program.inputs] == list(inputs)
    # int64 indices (token ids) go in as float32 holding the integers.
    ours = {k: v.astype(np.float32) for k, v in inputs.items()}
    cpu, cpu_trace = lockstep.run(program, ours, backend="cpu")
    gpu, gpu_trace = lockstep.run(str(path), ours, backend="vulkan")
    expected = ort_outputs(m, inputs)
    assert set(cpu) == set(expected)
    for name, ref in expected.items():
        assert cpu[name].tobytes() == gpu[name].tobytes(), name
        np.testing.assert_allclose(cpu[name], ref, rtol=1e-4, atol=1e-5)
    assert cpu_trace["root"] == gpu_trace["root"]
    assert cpu_trace["program_sha256"] == program.sha256


def test_the_numpy_trained_classifier_keeps_its_accuracy():
    m, inputs, labels, accuracy = models.classifier(rng())
    program = lockstep.import_onnx(m.SerializeToString())
    out, _ = lockstep.run(program, {"x": inputs["x"].astype(np.float32)}, backend="cpu")
    ours = float((out["logits"].argmax(axis=1) == labels).mean())
    assert ours == pytest.approx(accuracy)
    assert ours > 0.9


def test_submit_to_a_node_and_verify_its_receipt(node, tmp_path, lockstep_cli):
    m, path, inputs = onnx_program(tmp_path, models.encoder_block)
    program = lockstep.load(path)
    local, local_trace = lockstep.run(program, inputs, backend="cpu")
    remote, receipt = lockstep.Node(node.addr, node.key).submit(program, inputs)
    for name in local:
        assert remote[name].tobytes() == local[name].tobytes(), name
    assert receipt["node"] == node.key
    assert receipt["program_sha256"] == program.sha256
    assert receipt["trace_root"] == local_trace["root"]
    fields = lockstep.verify_receipt(receipt, node.key, remote)
    assert fields["job_id"] == receipt["job_id"]

    # The files the command reads: verify-receipt accepts what save wrote.
    saved = tmp_path / "receipt.json"
    receipt.save(saved)
    np.save(tmp_path / "out.npy", next(iter(remote.values())))
    done = subprocess.run(
        [lockstep_cli, "verify-receipt", str(saved), "--node-key", node.key],
        capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stderr
    assert lockstep.verify_receipt(saved, node.key)["job_id"] == receipt["job_id"]


def test_a_receipt_that_does_not_verify_is_refused(node, tmp_path):
    inputs = mlp_inputs()
    outputs, receipt = lockstep.Node(node.addr, node.key).submit(MLP, inputs)
    other = lockstep.Node(node.addr, node.key).submit(MLP, {**inputs, "x": inputs["x"] + 1})[0]
    with pytest.raises(lockstep.InputError, match="output 'y': its SHA-256 .* is not the receipt's"):
        lockstep.verify_receipt(receipt, node.key, other)
    forged = lockstep.Receipt(
        receipt.json.replace(b'"certified"', b'"certified" '), receipt.signature, receipt.chain_signature
    )
    with pytest.raises(lockstep.InputError, match="^the receipt: "):
        lockstep.verify_receipt(forged, node.key, outputs)
    wrong_key = "RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3"
    with pytest.raises(lockstep.InputError):
        lockstep.verify_receipt(receipt, wrong_key, outputs)
    no_chain = lockstep.Receipt(receipt.json, receipt.signature, None)
    with pytest.raises(lockstep.InputError, match="chain signature must be given"):
        lockstep.verify_receipt(no_chain, node.key)


def test_a_node_that_is_not_the_pinned_key_is_refused_as_a_machine_problem(node):
    other_key = "RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3"
    with pytest.raises(lockstep.MachineError):
        lockstep.Node(node.addr, other_key).submit(MLP, mlp_inputs())


@pytest.mark.parametrize(
    "inputs, message",
    [
        ({"x": np.zeros((4, 8)), "w": np.zeros((8, 3), np.float32)},
         "input 'x': dtype float64; Lockstep computes in float32 only"),
        ({"x": np.zeros((8, 4), np.float32).T, "w": np.zeros((8, 3), np.float32)},
         "input 'x': not C-contiguous"),
        ({"x": [[0.0] * 8] * 4, "w": np.zeros((8, 3), np.float32)},
         "input 'x': a list, not a numpy array"),
        ({"w": np.zeros((8, 3), np.float32)},
         r"input 'x' \(4x8\) is declared by the program but not given"),
        ({"x": np.zeros((4, 9), np.float32), "w": np.zeros((8, 3), np.float32)},
         "input 'x': shape 4x9 differs from the declared shape 4x8"),
        ({"x": np.zeros((4, 8), np.float32), "w": np.zeros((8, 3), np.float32),
          "z": np.zeros(1, np.float32)},
         "input 'z': the program declares no such input"),
    ],
)
def test_bad_inputs_are_one_line_input_errors(inputs, message):
    with pytest.raises(lockstep.InputError, match=message) as caught:
        lockstep.run(MLP, inputs, backend="cpu")
    assert "\n" not in str(caught.value)


def test_bad_programs_and_models_are_input_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": 1, "inputs": [')
    with pytest.raises(lockstep.InputError, match=f"^{bad}: "):
        lockstep.load(bad)
    with pytest.raises(lockstep.InputError, match="cannot read"):
        lockstep.load(tmp_path / "missing.onnx")
    truncated = tmp_path / "truncated.onnx"
    m, _ = models.mlp_gemm(rng())
    truncated.write_bytes(m.SerializeToString()[:100])
    with pytest.raises(lockstep.InputError, match=f"^{truncated}: "):
        lockstep.import_onnx(truncated)
    unknown = dict(MLP, body=[{"op": "frobnicate", "inputs": ["x"], "output": "y"}])
    with pytest.raises(lockstep.InputError, match="frobnicate"):
        lockstep.run(unknown, mlp_inputs(), backend="cpu")
    with pytest.raises(lockstep.InputError, match='backend "tpu"'):
        lockstep.run(MLP, mlp_inputs(), backend="tpu")
    with pytest.raises(lockstep.InputError, match="give a lockstep.Program"):
        lockstep.run(42, mlp_inputs())


def test_a_node_address_that_is_not_host_port_is_bad_input():
    with pytest.raises(lockstep.InputError, match="node address"):
        lockstep.Node("not an address", "RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3").submit(MLP, mlp_inputs())


def test_devices_lists_what_the_command_lists(lockstep_cli):
    listed = lockstep.devices()
    command = json.loads(
        subprocess.run([lockstep_cli, "devices", "--json"], capture_output=True, text=True, check=True).stdout
    )
    assert listed == command
    assert any(d["usable"] for d in listed)
