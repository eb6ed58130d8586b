"""Test models for `lockstep import`, built with the onnx package's helper
API and run with onnxruntime, the independent reference.

    python models.py OUT_DIR

writes, for each model NAME: NAME.onnx, NAME.input.<input>.npy for each
graph input and NAME.ort.<output>.npy for each graph output (onnxruntime's
answer). The `classifier` model's weights are trained here with numpy on a
synthetic dataset; its held-out set is classifier.input.x.npy with labels
in classifier.labels.npy, and classifier.numpy_accuracy.txt holds the
accuracy numpy's own forward pass reaches on it.

Nothing here is random without a seed, so every run writes the same files.
"""

import pathlib
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def as_init(v):
    """float32, except masks, which stay bool."""
    a = np.asarray(v)
    return a if a.dtype == bool else a.astype(np.float32)


def model(name, nodes, inputs, outputs, inits, opset=OPSET):
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
        [numpy_helper.from_array(as_init(v), k) for k, v in inits.items()],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def weights(rng, *shape, scale=None):
    scale = scale if scale is not None else 1.0 / np.sqrt(shape[0])
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def mlp_gemm(rng):
    """What torch.onnx.export writes for Linear-ReLU-Linear: Gemm with
    transB=1 and PyTorch's names."""
    nodes = [
        helper.make_node("Gemm", ["input", "fc1.weight", "fc1.bias"], ["/fc1/Gemm_output_0"],
                         name="/fc1/Gemm", alpha=1.0, beta=1.0, transB=1),
        helper.make_node("Relu", ["/fc1/Gemm_output_0"], ["/relu/Relu_output_0"], name="/relu/Relu"),
        helper.make_node("Gemm", ["/relu/Relu_output_0", "fc2.weight", "fc2.bias"], ["output"],
                         name="/fc2/Gemm", alpha=1.0, beta=1.0, transB=1),
    ]
    inits = {
        "fc1.weight": weights(rng, 32, 16),
        "fc1.bias": weights(rng, 32, scale=0.1),
        "fc2.weight": weights(rng, 4, 32),
        "fc2.bias": weights(rng, 4, scale=0.1),
    }
    return model("mlp_gemm", nodes, [("input", [8, 16])], [("output", [8, 4])], inits), {
        "input": rng.standard_normal((8, 16)).astype(np.float32)
    }


def mlp_matmul(rng):
    """MatMul + broadcast Add, tanh, sigmoid, softmax and log-softmax, a
    scaled Gemm with a full C and transA."""
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Add", ["h", "b1"], ["hb"]),
        helper.make_node("Tanh", ["hb"], ["t"]),
        helper.make_node("Gemm", ["t", "w2", "c2"], ["z"], alpha=0.5, beta=2.0),
        helper.make_node("Sigmoid", ["z"], ["s"]),
        helper.make_node("Softmax", ["z"], ["probs"], axis=-1),
        helper.make_node("LogSoftmax", ["z"], ["logp"], axis=1),
        helper.make_node("Transpose", ["t"], ["tt"], perm=[1, 0]),
        helper.make_node("Gemm", ["tt", "w3"], ["y3"], transA=1),
        helper.make_node("Sub", ["y3", "k"], ["d"]),
        helper.make_node("Mul", ["d", "d"], ["sq"]),
        helper.make_node("Add", ["sq", "one"], ["sq1"]),
        helper.make_node("Sqrt", ["sq1"], ["r"]),
        helper.make_node("Log", ["r"], ["lr"]),
        helper.make_node("Exp", ["lr"], ["er"]),
        helper.make_node("Div", ["er", "sq1"], ["q"]),
    ]
    inits = {
        "w1": weights(rng, 12, 24),
        "b1": weights(rng, 24, scale=0.1),
        "w2": weights(rng, 24, 6),
        "c2": weights(rng, 5, 6, scale=0.1),
        "w3": weights(rng, 24, 3),
        "k": np.float32(0.25),
        "one": np.float32(1.0),
    }
    outs = [("s", [5, 6]), ("probs", [5, 6]), ("logp", [5, 6]), ("q", [5, 3])]
    return model("mlp_matmul", nodes, [("x", [5, 12])], outs, inits), {
        "x": rng.standard_normal((5, 12)).astype(np.float32)
    }


def encoder_block(rng, n=16, d=32):
    """One single-head encoder block on a [tokens, d] matrix: attention with
    scaled scores and softmax, residual, LayerNormalization, a GELU (tanh
    form, opset 20) feed-forward, residual, LayerNormalization."""
    nodes = [
        helper.make_node("MatMul", ["x", "wq"], ["q"]),
        helper.make_node("MatMul", ["x", "wk"], ["k"]),
        helper.make_node("MatMul", ["x", "wv"], ["v"]),
        helper.make_node("Transpose", ["k"], ["kt"]),
        helper.make_node("MatMul", ["q", "kt"], ["scores"]),
        helper.make_node("Div", ["scores", "sqrt_d"], ["scaled"]),
        helper.make_node("Softmax", ["scaled"], ["attn"], axis=-1),
        helper.make_node("MatMul", ["attn", "v"], ["ctx"]),
        helper.make_node("MatMul", ["ctx", "wo"], ["proj"]),
        helper.make_node("Add", ["x", "proj"], ["res1"]),
        helper.make_node("LayerNormalization", ["res1", "ln1.weight", "ln1.bias"], ["h1"],
                         axis=-1, epsilon=1e-5),
        helper.make_node("Gemm", ["h1", "up.weight", "up.bias"], ["up"], transB=1),
        helper.make_node("Gelu", ["up"], ["act"], approximate="tanh"),
        helper.make_node("Gemm", ["act", "down.weight", "down.bias"], ["down"], transB=1),
        helper.make_node("Add", ["h1", "down"], ["res2"]),
        helper.make_node("LayerNormalization", ["res2", "ln2.weight"], ["y"], axis=-1, epsilon=1e-5),
        helper.make_node("Identity", ["attn"], ["attention"]),
    ]
    inits = {
        "wq": weights(rng, d, d), "wk": weights(rng, d, d), "wv": weights(rng, d, d),
        "wo": weights(rng, d, d),
        "sqrt_d": np.float32(np.sqrt(d)),
        "ln1.weight": 1.0 + weights(rng, d, scale=0.1), "ln1.bias": weights(rng, d, scale=0.1),
        "up.weight": weights(rng, 4 * d, d), "up.bias": weights(rng, 4 * d, scale=0.1),
        "down.weight": weights(rng, d, 4 * d), "down.bias": weights(rng, d, scale=0.1),
        "ln2.weight": 1.0 + weights(rng, d, scale=0.1),
    }
    return model("encoder_block", nodes, [("x", [n, d])], [("y", [n, d]), ("attention", [n, n])], inits, opset=20), {
        "x": rng.standard_normal((n, d)).astype(np.float32)
    }


def causal_attention(rng, n=12, d=16):
    """Single-head causal self-attention as PyTorch's masked_fill exports
    it: Where(lower-triangular bool mask, scores, -inf), then softmax."""
    nodes = [
        helper.make_node("MatMul", ["x", "wq"], ["q"]),
        helper.make_node("MatMul", ["x", "wk"], ["k"]),
        helper.make_node("MatMul", ["x", "wv"], ["v"]),
        helper.make_node("Transpose", ["k"], ["kt"], perm=[1, 0]),
        helper.make_node("MatMul", ["q", "kt"], ["scores"]),
        helper.make_node("Mul", ["scores", "scale"], ["scaled"]),
        helper.make_node("Where", ["mask", "scaled", "neg_inf"], ["masked"], name="/attn/Where"),
        helper.make_node("Softmax", ["masked"], ["attn"], axis=-1),
        helper.make_node("MatMul", ["attn", "v"], ["y"]),
    ]
    inits = {"wq": weights(rng, d, d), "wk": weights(rng, d, d), "wv": weights(rng, d, d),
             "scale": np.float32(1.0 / np.sqrt(d)), "neg_inf": np.float32(-np.inf),
             "mask": np.tril(np.ones((n, n), dtype=bool))}
    m = model("causal_attention", nodes, [("x", [n, d])], [("y", [n, d]), ("attn", [n, n])], inits)
    return m, {"x": rng.standard_normal((n, d)).astype(np.float32)}


def gelu_exact(rng, n=8, d=24):
    """Exact GELU both ways: the Div/Erf/Add/Mul/Mul pattern PyTorch
    exports below opset 20, and the Gelu op (approximate="none")."""
    nodes = [
        helper.make_node("Div", ["x", "sqrt2"], ["xs"], name="/act/Div"),
        helper.make_node("Erf", ["xs"], ["e"], name="/act/Erf"),
        helper.make_node("Add", ["e", "one"], ["e1"], name="/act/Add"),
        helper.make_node("Mul", ["x", "e1"], ["xe"], name="/act/Mul"),
        helper.make_node("Mul", ["xe", "half"], ["pattern"], name="/act/Mul_1"),
        helper.make_node("Gelu", ["x"], ["op"], name="/act2/Gelu"),
        helper.make_node("Erf", ["x"], ["erf"], name="/erf/Erf"),
    ]
    inits = {"sqrt2": np.float32(1.4142135381698608), "one": np.float32(1.0), "half": np.float32(0.5)}
    x = (rng.standard_normal((n, d)) * 2.5).astype(np.float32)
    outs = [("pattern", [n, d]), ("op", [n, d]), ("erf", [n, d])]
    return model("gelu_exact", nodes, [("x", [n, d])], outs, inits, opset=20), {"x": x}


def decoder_block(rng, n=16, d=32):
    """One GPT-2-style decoder block on a [tokens, d] matrix, as PyTorch
    exports it at opset 17: pre-LayerNormalization, single-head causal
    self-attention (Where with a lower-triangular mask, -inf elsewhere),
    residual, pre-LayerNormalization, an exact-GELU MLP (the Div/Erf/Add/
    Mul/Mul pattern, MatMul plus a broadcast bias Add), residual."""
    nodes = [
        helper.make_node("LayerNormalization", ["x", "ln_1.weight", "ln_1.bias"], ["h"],
                         name="/ln_1/LayerNormalization", axis=-1, epsilon=1e-5),
        helper.make_node("MatMul", ["h", "attn.q"], ["q"], name="/attn/q/MatMul"),
        helper.make_node("MatMul", ["h", "attn.k"], ["k"], name="/attn/k/MatMul"),
        helper.make_node("MatMul", ["h", "attn.v"], ["v"], name="/attn/v/MatMul"),
        helper.make_node("Transpose", ["k"], ["kt"], name="/attn/Transpose", perm=[1, 0]),
        helper.make_node("MatMul", ["q", "kt"], ["scores"], name="/attn/MatMul"),
        helper.make_node("Mul", ["scores", "scale"], ["scaled"], name="/attn/Mul"),
        helper.make_node("Where", ["mask", "scaled", "neg_inf"], ["masked"], name="/attn/Where"),
        helper.make_node("Softmax", ["masked"], ["probs"], name="/attn/Softmax", axis=-1),
        helper.make_node("MatMul", ["probs", "v"], ["ctx"], name="/attn/MatMul_1"),
        helper.make_node("Gemm", ["ctx", "attn.c_proj.weight", "attn.c_proj.bias"], ["proj"],
                         name="/attn/c_proj/Gemm", transB=1),
        helper.make_node("Add", ["x", "proj"], ["res1"], name="/Add"),
        helper.make_node("LayerNormalization", ["res1", "ln_2.weight", "ln_2.bias"], ["h2"],
                         name="/ln_2/LayerNormalization", axis=-1, epsilon=1e-5),
        helper.make_node("MatMul", ["h2", "mlp.c_fc.weight"], ["fc"], name="/mlp/c_fc/MatMul"),
        helper.make_node("Add", ["fc", "mlp.c_fc.bias"], ["fcb"], name="/mlp/c_fc/Add"),
        helper.make_node("Div", ["fcb", "sqrt2"], ["xs"], name="/mlp/act/Div"),
        helper.make_node("Erf", ["xs"], ["e"], name="/mlp/act/Erf"),
        helper.make_node("Add", ["e", "one"], ["e1"], name="/mlp/act/Add"),
        helper.make_node("Mul", ["fcb", "e1"], ["xe"], name="/mlp/act/Mul"),
        helper.make_node("Mul", ["xe", "half"], ["act"], name="/mlp/act/Mul_1"),
        helper.make_node("MatMul", ["act", "mlp.c_proj.weight"], ["down"], name="/mlp/c_proj/MatMul"),
        helper.make_node("Add", ["down", "mlp.c_proj.bias"], ["downb"], name="/mlp/c_proj/Add"),
        helper.make_node("Add", ["res1", "downb"], ["y"], name="/Add_1"),
    ]
    inits = {
        "ln_1.weight": 1.0 + weights(rng, d, scale=0.1), "ln_1.bias": weights(rng, d, scale=0.1),
        "attn.q": weights(rng, d, d), "attn.k": weights(rng, d, d), "attn.v": weights(rng, d, d),
        "scale": np.float32(1.0 / np.sqrt(d)), "neg_inf": np.float32(-np.inf),
        "mask": np.tril(np.ones((n, n), dtype=bool)),
        "attn.c_proj.weight": weights(rng, d, d), "attn.c_proj.bias": weights(rng, d, scale=0.1),
        "ln_2.weight": 1.0 + weights(rng, d, scale=0.1), "ln_2.bias": weights(rng, d, scale=0.1),
        "mlp.c_fc.weight": weights(rng, d, 4 * d), "mlp.c_fc.bias": weights(rng, 4 * d, scale=0.1),
        "sqrt2": np.float32(1.4142135381698608), "one": np.float32(1.0), "half": np.float32(0.5),
        "mlp.c_proj.weight": weights(rng, 4 * d, d), "mlp.c_proj.bias": weights(rng, d, scale=0.1),
    }
    m = model("decoder_block", nodes, [("x", [n, d])], [("y", [n, d])], inits)
    return m, {"x": rng.standard_normal((n, d)).astype(np.float32)}


def blobs(rng, per_class, centers):
    xs, ys = [], []
    for label, c in enumerate(centers):
        xs.append(rng.standard_normal((per_class, len(c))) * 0.9 + c)
        ys.append(np.full(per_class, label))
    x = np.concatenate(xs).astype(np.float32)
    y = np.concatenate(ys)
    order = rng.permutation(len(y))
    return x[order], y[order]


def classifier(rng):
    """A 2-layer MLP trained with numpy (full-batch gradient descent on
    softmax cross-entropy) on three Gaussian blobs in 4-D; evaluated on a
    held-out set of 240 points."""
    centers = [np.array(c, dtype=np.float64) for c in ([2, 0, 0, 1], [-1, 2, 0, -1], [0, -2, 2, 0])]
    x_train, y_train = blobs(rng, 200, centers)
    x_test, y_test = blobs(rng, 80, centers)
    w1 = rng.standard_normal((4, 16)) * 0.5
    b1 = np.zeros(16)
    w2 = rng.standard_normal((16, 3)) * 0.5
    b2 = np.zeros(3)
    onehot = np.eye(3)[y_train]
    for _ in range(300):
        h = np.maximum(x_train @ w1 + b1, 0)
        z = h @ w2 + b2
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        dz = (p - onehot) / len(y_train)
        dh = (dz @ w2.T) * (h > 0)
        w2 -= 0.5 * h.T @ dz
        b2 -= 0.5 * dz.sum(axis=0)
        w1 -= 0.5 * x_train.T @ dh
        b1 -= 0.5 * dh.sum(axis=0)
    h = np.maximum(x_test.astype(np.float64) @ w1 + b1, 0)
    accuracy = float(((h @ w2 + b2).argmax(axis=1) == y_test).mean())
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Add", ["h", "b1"], ["hb"]),
        helper.make_node("Relu", ["hb"], ["a"]),
        helper.make_node("MatMul", ["a", "w2"], ["z"]),
        helper.make_node("Add", ["z", "b2"], ["logits"]),
    ]
    inits = {"w1": w1, "b1": b1, "w2": w2, "b2": b2}
    m = model("classifier", nodes, [("x", list(x_test.shape))], [("logits", [len(y_test), 3])], inits)
    return m, {"x": x_test}, y_test, accuracy


def refused(out):
    """Models `lockstep import` must refuse, each with one line naming the
    node or the input: a comparison and Where, and a dynamic batch size."""
    nodes = [
        helper.make_node("Greater", ["x", "zero"], ["mask"], name="/mask/Greater"),
        helper.make_node("Where", ["mask", "x", "zero"], ["y"], name="/mask/Where"),
    ]
    m = model("refused_where", nodes, [("x", [2, 3])], [("y", [2, 3])], {"zero": np.float32(0)})
    onnx.save_model(m, out / "refused_where.onnx")
    nodes = [helper.make_node("Relu", ["x"], ["y"])]
    m = model("refused_dynamic", nodes, [("x", ["batch", 3])], [("y", ["batch", 3])], {})
    onnx.save_model(m, out / "refused_dynamic.onnx")


def save(out, name, m, inputs):
    onnx.save_model(m, out / f"{name}.onnx")
    for k, v in inputs.items():
        np.save(out / f"{name}.input.{k}.npy", v)
    session = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    for n, v in zip(names, session.run(None, inputs)):
        np.save(out / f"{name}.ort.{n}.npy", v.astype(np.float32))


def main():
    out = pathlib.Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20261203)
    for build in (mlp_gemm, mlp_matmul, encoder_block, gelu_exact, causal_attention):
        m, inputs = build(rng)
        save(out, m.graph.name, m, inputs)
    m, inputs, labels, accuracy = classifier(rng)
    save(out, "classifier", m, inputs)
    np.save(out / "classifier.labels.npy", labels.astype(np.float32))
    (out / "classifier.numpy_accuracy.txt").write_text(f"{accuracy}\n")
    # After the classifier, so that its weights and accuracy stay as they were.
    m, inputs = decoder_block(rng)
    save(out, m.graph.name, m, inputs)
    refused(out)
    print(f"onnx {onnx.__version__}, onnxruntime {ort.__version__}, numpy {np.__version__}")


if __name__ == "__main__":
    main()
