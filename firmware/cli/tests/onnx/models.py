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


def embedding_ops(rng, v=10, n=6, d=8):
    """Token embeddings gathered by an int64 graph input, position
    embeddings gathered by constant indices, Concat of matrices and of
    vectors, Slice of columns and of rows (a negative end), ReduceMax with
    keepdims, ReduceMean without, and Reshape of a computed tensor."""
    ids_const = helper.make_tensor("positions", TensorProto.INT64, [n], list(range(n)))
    nodes = [
        helper.make_node("Gather", ["wte", "ids"], ["tok"], name="/wte/Gather", axis=0),
        helper.make_node("Gather", ["wpe", "positions"], ["pos"], name="/wpe/Gather"),
        helper.make_node("Add", ["tok", "pos"], ["h"]),
        helper.make_node("Concat", ["h", "pos"], ["hc"], axis=1),
        helper.make_node("Slice", ["hc", "s_starts", "s_ends", "s_axes"], ["hs"]),
        helper.make_node("Slice", ["hs", "r_starts", "r_ends", "r_axes"], ["hr"]),
        helper.make_node("ReduceMax", ["hr"], ["mx"], axes=[1], keepdims=1),
        helper.make_node("ReduceMean", ["hr"], ["mean"], axes=[-1], keepdims=0),
        helper.make_node("Concat", ["mean", "mean"], ["means"], axis=0),
        helper.make_node("Reshape", ["hr", "flat_shape"], ["flat"]),
    ]
    inits = {
        "wte": weights(rng, v, d, scale=1.0), "wpe": weights(rng, n, d, scale=0.1),
        "s_starts": np.array([2], np.int64), "s_ends": np.array([14], np.int64),
        "s_axes": np.array([1], np.int64),
        "r_starts": np.array([1], np.int64), "r_ends": np.array([-1], np.int64),
        "r_axes": np.array([0], np.int64),
        "flat_shape": np.array([2, -1], np.int64),
    }
    graph = helper.make_graph(
        nodes, "embedding_ops",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [n])],
        [helper.make_tensor_value_info("mx", TensorProto.FLOAT, [n - 2, 1]),
         helper.make_tensor_value_info("means", TensorProto.FLOAT, [2 * (n - 2)]),
         helper.make_tensor_value_info("flat", TensorProto.FLOAT, [2, (n - 2) * 12 // 2])],
        [numpy_helper.from_array(a if a.dtype == np.int64 else a.astype(np.float32), k)
         for k, a in inits.items()] + [ids_const],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m, {"ids": rng.integers(0, v, size=n).astype(np.int64)}


def mha_block(rng, t=8, c=16, heads=2):
    """Multi-head causal self-attention as PyTorch exports a GPT-2 block's
    first half on [batch 1, tokens, width]: LayerNormalization of a rank-3
    tensor, MatMuls with 2-D weights and rank-3 bias Adds, heads split by
    Reshape and rank-4 Transposes, batched MatMuls, a [1, 1, T, T] mask
    broadcast by Where, Softmax on rank 4, heads merged, residual."""
    d = c // heads
    nodes = [
        helper.make_node("LayerNormalization", ["x", "ln.weight", "ln.bias"], ["h"], axis=-1,
                         epsilon=1e-5),
    ]
    for name in ("q", "k", "v"):
        nodes += [
            helper.make_node("MatMul", ["h", f"{name}.weight"], [f"{name}0"]),
            helper.make_node("Add", [f"{name}0", f"{name}.bias"], [f"{name}1"]),
            helper.make_node("Reshape", [f"{name}1", "heads_shape"], [f"{name}2"]),
        ]
    nodes += [
        helper.make_node("Transpose", ["q2"], ["qh"], perm=[0, 2, 1, 3]),
        helper.make_node("Transpose", ["k2"], ["kh"], perm=[0, 2, 3, 1]),
        helper.make_node("Transpose", ["v2"], ["vh"], perm=[0, 2, 1, 3]),
        helper.make_node("MatMul", ["qh", "kh"], ["scores"]),
        helper.make_node("Mul", ["scores", "scale"], ["scaled"]),
        helper.make_node("Where", ["mask", "scaled", "neg_inf"], ["masked"]),
        helper.make_node("Softmax", ["masked"], ["probs"], axis=-1),
        helper.make_node("MatMul", ["probs", "vh"], ["ctx"]),
        helper.make_node("Transpose", ["ctx"], ["ctx_t"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["ctx_t", "merged_shape"], ["merged"]),
        helper.make_node("MatMul", ["merged", "proj.weight"], ["proj0"]),
        helper.make_node("Add", ["proj0", "proj.bias"], ["proj"]),
        helper.make_node("Add", ["x", "proj"], ["y"]),
    ]
    inits = {
        "ln.weight": 1.0 + weights(rng, c, scale=0.1), "ln.bias": weights(rng, c, scale=0.1),
        "q.weight": weights(rng, c, c), "q.bias": weights(rng, c, scale=0.1),
        "k.weight": weights(rng, c, c), "k.bias": weights(rng, c, scale=0.1),
        "v.weight": weights(rng, c, c), "v.bias": weights(rng, c, scale=0.1),
        "proj.weight": weights(rng, c, c), "proj.bias": weights(rng, c, scale=0.1),
        "scale": np.float32(1.0 / np.sqrt(d)), "neg_inf": np.float32(-np.inf),
        "mask": np.tril(np.ones((t, t), dtype=bool)).reshape(1, 1, t, t),
    }
    graph = helper.make_graph(
        nodes, "mha_block",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, t, c])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, t, c])],
        [numpy_helper.from_array(as_init(v), k) for k, v in inits.items()]
        + [numpy_helper.from_array(np.array([1, t, heads, d], np.int64), "heads_shape"),
           numpy_helper.from_array(np.array([1, t, c], np.int64), "merged_shape")],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m, {"x": rng.standard_normal((1, t, c)).astype(np.float32)}


def gpt2_block(rng, t=8, c=16, heads=2):
    """A whole GPT-2 block as its PyTorch export has it on [1, T, C]:
    ln_1; c_attn as one MatMul to 3C and a Split into q, k and v; heads
    split by Reshape and Transpose; batched MatMuls; the causal mask by
    Where; Softmax; heads merged; c_proj; residual; ln_2; c_fc; GPT-2's
    tanh GELU written out with Pow(x, 3); c_proj; residual."""
    d = c // heads
    mm = lambda a, w, b, o: [helper.make_node("MatMul", [a, w], [o + "0"]),
                             helper.make_node("Add", [o + "0", b], [o])]
    nodes = [helper.make_node("LayerNormalization", ["x", "ln_1.weight", "ln_1.bias"], ["h"],
                              axis=-1, epsilon=1e-5)]
    nodes += mm("h", "c_attn.weight", "c_attn.bias", "qkv")
    nodes += [helper.make_node("Split", ["qkv", "split"], ["q", "k", "v"], axis=2)]
    for name in ("q", "k", "v"):
        nodes += [helper.make_node("Reshape", [name, "heads_shape"], [name + "2"])]
    nodes += [
        helper.make_node("Transpose", ["q2"], ["qh"], perm=[0, 2, 1, 3]),
        helper.make_node("Transpose", ["k2"], ["kh"], perm=[0, 2, 3, 1]),
        helper.make_node("Transpose", ["v2"], ["vh"], perm=[0, 2, 1, 3]),
        helper.make_node("MatMul", ["qh", "kh"], ["scores"]),
        helper.make_node("Div", ["scores", "sqrt_d"], ["scaled"]),
        helper.make_node("Where", ["mask", "scaled", "neg_inf"], ["masked"]),
        helper.make_node("Softmax", ["masked"], ["probs"], axis=-1),
        helper.make_node("MatMul", ["probs", "vh"], ["ctx"]),
        helper.make_node("Transpose", ["ctx"], ["ctx_t"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["ctx_t", "merged_shape"], ["merged"]),
    ]
    nodes += mm("merged", "attn.c_proj.weight", "attn.c_proj.bias", "a")
    nodes += [helper.make_node("Add", ["x", "a"], ["r1"]),
              helper.make_node("LayerNormalization", ["r1", "ln_2.weight", "ln_2.bias"], ["h2"],
                               axis=-1, epsilon=1e-5)]
    nodes += mm("h2", "c_fc.weight", "c_fc.bias", "f")
    nodes += [
        helper.make_node("Pow", ["f", "three"], ["f3"]),
        helper.make_node("Mul", ["f3", "k0044715"], ["f3k"]),
        helper.make_node("Add", ["f", "f3k"], ["inner"]),
        helper.make_node("Mul", ["inner", "sqrt_2_over_pi"], ["z"]),
        helper.make_node("Tanh", ["z"], ["th"]),
        helper.make_node("Add", ["th", "one"], ["th1"]),
        helper.make_node("Mul", ["f", "th1"], ["fth"]),
        helper.make_node("Mul", ["fth", "half"], ["act"]),
    ]
    nodes += mm("act", "mlp.c_proj.weight", "mlp.c_proj.bias", "m")
    nodes += [helper.make_node("Add", ["r1", "m"], ["y"])]
    inits = {
        "ln_1.weight": 1.0 + weights(rng, c, scale=0.1), "ln_1.bias": weights(rng, c, scale=0.1),
        "c_attn.weight": weights(rng, c, 3 * c), "c_attn.bias": weights(rng, 3 * c, scale=0.1),
        "attn.c_proj.weight": weights(rng, c, c), "attn.c_proj.bias": weights(rng, c, scale=0.1),
        "ln_2.weight": 1.0 + weights(rng, c, scale=0.1), "ln_2.bias": weights(rng, c, scale=0.1),
        "c_fc.weight": weights(rng, c, 4 * c), "c_fc.bias": weights(rng, 4 * c, scale=0.1),
        "mlp.c_proj.weight": weights(rng, 4 * c, c), "mlp.c_proj.bias": weights(rng, c, scale=0.1),
        "sqrt_d": np.float32(np.sqrt(d)), "neg_inf": np.float32(-np.inf),
        "mask": np.tril(np.ones((t, t), dtype=bool)).reshape(1, 1, t, t),
        "three": np.float32(3.0), "k0044715": np.float32(0.044715),
        "sqrt_2_over_pi": np.float32(np.sqrt(2.0 / np.pi)), "one": np.float32(1.0),
        "half": np.float32(0.5),
    }
    graph = helper.make_graph(
        nodes, "gpt2_block",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, t, c])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, t, c])],
        [numpy_helper.from_array(as_init(v), k) for k, v in inits.items()]
        + [numpy_helper.from_array(np.array([c, c, c], np.int64), "split"),
           numpy_helper.from_array(np.array([1, t, heads, d], np.int64), "heads_shape"),
           numpy_helper.from_array(np.array([1, t, c], np.int64), "merged_shape")],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m, {"x": rng.standard_normal((1, t, c)).astype(np.float32)}


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
    node or the input: an op it does not know, a dynamic batch size, and
    int64 token ids used as numbers rather than as Gather indices."""
    nodes = [helper.make_node("Cos", ["x"], ["y"], name="/act/Cos")]
    m = model("refused_op", nodes, [("x", [2, 3])], [("y", [2, 3])], {})
    onnx.save_model(m, out / "refused_op.onnx")
    nodes = [helper.make_node("Relu", ["x"], ["y"])]
    m = model("refused_dynamic", nodes, [("x", ["batch", 3])], [("y", ["batch", 3])], {})
    onnx.save_model(m, out / "refused_dynamic.onnx")
    nodes = [helper.make_node("Cast", ["ids"], ["f"], name="/ids/Cast", to=TensorProto.FLOAT),
             helper.make_node("Add", ["f", "f"], ["y"], name="/ids/Add")]
    graph = helper.make_graph(
        nodes, "refused_ids",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    m.ir_version = 8
    onnx.save_model(m, out / "refused_ids.onnx")


def runtime_mask(rng, n=7, d=9):
    """Masks computed at run time, as exported code compares tensors:
    Greater against a constant, Less and Equal between tensors, each
    feeding Where (ties, ±0 and an exact copy included)."""
    nodes = [
        helper.make_node("Greater", ["x", "zero"], ["pos"], name="/mask/Greater"),
        helper.make_node("Where", ["pos", "x", "zero"], ["relu"], name="/mask/Where"),
        helper.make_node("Less", ["x", "y"], ["lt"], name="/mask/Less"),
        helper.make_node("Where", ["lt", "x", "y"], ["min"], name="/mask/Where_1"),
        helper.make_node("Equal", ["xr", "y"], ["eq"], name="/mask/Equal"),
        helper.make_node("Where", ["eq", "one", "zero"], ["same"], name="/mask/Where_2"),
        helper.make_node("Relu", ["x"], ["xr"]),
    ]
    nodes = nodes[-1:] + nodes[:-1]
    x = rng.standard_normal((n, d)).astype(np.float32)
    y = np.where(rng.random((n, d)) < 0.3, np.maximum(x, 0), rng.standard_normal((n, d))).astype(np.float32)
    y[0, 0] = -0.0
    x[0, 0] = 0.0
    outs = [("relu", [n, d]), ("min", [n, d]), ("same", [n, d])]
    m = model("runtime_mask", nodes, [("x", [n, d]), ("y", [n, d])], outs,
              {"zero": np.float32(0), "one": np.float32(1)})
    return m, {"x": x, "y": y}


def save(out, name, m, inputs):
    onnx.save_model(m, out / f"{name}.onnx")
    for k, v in inputs.items():
        # Lockstep takes int64 indices as float32 holding the integers.
        np.save(out / f"{name}.input.{k}.npy", v.astype(np.float32))
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
    m, inputs = embedding_ops(rng)
    save(out, m.graph.name, m, inputs)
    m, inputs = runtime_mask(rng)
    save(out, m.graph.name, m, inputs)
    m, inputs = mha_block(rng)
    save(out, m.graph.name, m, inputs)
    m, inputs = gpt2_block(rng)
    save(out, m.graph.name, m, inputs)
    refused(out)
    print(f"onnx {onnx.__version__}, onnxruntime {ort.__version__}, numpy {np.__version__}")


if __name__ == "__main__":
    main()
