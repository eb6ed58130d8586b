"""The ONNX benchmarks of docs/benchmarks.md: an encoder block, a
single-head decoder block and a four-head GPT-2 block (128 tokens, width
256) from models.py, and onnxruntime's time for each on this machine.

    python bench.py OUT_DIR [RUNS]

writes OUT_DIR/NAME.onnx and its input (NAME.input.x.npy) for NAME in
encoder_block, decoder_block and gpt2_block, then prints onnxruntime's median run time
over RUNS runs (default 20), once with all cores and once with one thread. Time `lockstep import` and
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
    builds = (
        lambda rng: models.encoder_block(rng, n=128, d=256),
        lambda rng: models.decoder_block(rng, n=128, d=256),
        lambda rng: models.gpt2_block(rng, t=128, c=256, heads=4),
    )
    for build in builds:
        m, inputs = build(np.random.default_rng(1))
        name = m.graph.name
        onnx.save_model(m, out / f"{name}.onnx")
        np.save(out / f"{name}.input.x.npy", inputs["x"])
        for threads in (0, 1):
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            session = ort.InferenceSession(
                m.SerializeToString(), options, providers=["CPUExecutionProvider"]
            )
            label = "all cores" if threads == 0 else "1 thread"
            ms = median_ms(session, inputs, runs)
            print(f"{name}: onnxruntime {ort.__version__} ({label}): {ms:.2f} ms")


if __name__ == "__main__":
    main()
