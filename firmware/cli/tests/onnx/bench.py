"""The ONNX benchmark of docs/benchmarks.md: one encoder block (128 tokens,
width 256) from models.py, and onnxruntime's time for it on this machine.

    python bench.py OUT_DIR [RUNS]

writes OUT_DIR/encoder_block.onnx and its input (encoder_block.input.x.npy),
then prints onnxruntime's median run time over RUNS runs (default 20),
once with all cores and once with one thread. Time `lockstep import` and
`lockstep exec` on the same files for the other half of the comparison.
"""

import pathlib
import statistics
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort

import models


def median_ms(session, inputs, runs):
    session.run(None, inputs)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, inputs)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main():
    out = pathlib.Path(sys.argv[1])
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    out.mkdir(parents=True, exist_ok=True)
    m, inputs = models.encoder_block(np.random.default_rng(1), n=128, d=256)
    onnx.save_model(m, out / "encoder_block.onnx")
    np.save(out / "encoder_block.input.x.npy", inputs["x"])
    for threads in (0, 1):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(
            m.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        label = "all cores" if threads == 0 else "1 thread"
        print(f"onnxruntime {ort.__version__} ({label}): {median_ms(session, inputs, runs):.2f} ms")


if __name__ == "__main__":
    main()
