"""`make bench`: speed of the two implementations against peers, in the same run.

Measures inference latency (median of several runs, after warm-up) of ConvNeXt-T at 224x224:
  - convnext_torch (PyTorch eager, no_grad)
  - convnext_tf (Keras 3, called through a tf.function)
  - keras.applications.ConvNeXtTiny (the peer; weights=None, nothing downloaded; it builds the
    depthwise conv as a grouped Conv2D), also through a tf.function
and the time to convert a ConvNeXt-T state_dict into a built Keras model.
Results go to benchmarks/results.md (quoted in the README); ratios are against PyTorch.
"""

from __future__ import annotations

import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from converters.startup import import_tensorflow_quietly

import_tensorflow_quietly()

import keras
import numpy as np
import tensorflow as tf
import torch

import convnext_tf
import convnext_torch
from converters import torch_to_keras

RESULTS = Path(__file__).with_name("results.md")
VARIANT, SIZE, REPEATS = "convnext_tiny", 224, 7


def median_seconds(fn, repeats: int = REPEATS) -> float:
    fn()  # warm-up: traces tf.functions, allocates
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    threads = torch.get_num_threads()
    rows = []
    for batch in (1, 8):
        x = np.random.default_rng(0).standard_normal((batch, 3, SIZE, SIZE)).astype(np.float32)
        x_nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))  # (N, C, H, W) -> (N, H, W, C)

        torch_model = convnext_torch.create_model(VARIANT).eval()
        xt = torch.from_numpy(x)

        def run_torch(model=torch_model, xt=xt):
            with torch.no_grad():
                model(xt)

        ours = convnext_tf.create_model(VARIANT)
        ours_fn = tf.function(lambda v, m=ours: m(v, training=False))
        peer = keras.applications.ConvNeXtTiny(weights=None, include_preprocessing=False)
        peer_fn = tf.function(lambda v, m=peer: m(v, training=False))
        xk = tf.constant(x_nhwc)

        t_torch = median_seconds(run_torch)
        t_ours = median_seconds(lambda f=ours_fn, v=xk: f(v).numpy())
        t_peer = median_seconds(lambda f=peer_fn, v=xk: f(v).numpy())
        rows.append((batch, t_torch, t_ours, t_peer))
        print(
            f"batch {batch}: torch {t_torch * 1e3:.0f} ms, convnext_tf {t_ours * 1e3:.0f} ms, "
            f"keras.applications {t_peer * 1e3:.0f} ms",
            flush=True,
        )

    state = convnext_torch.create_model(VARIANT).state_dict()
    target = convnext_tf.create_model(VARIANT)
    t_convert = median_seconds(lambda: torch_to_keras(state, target), repeats=3)

    lines = [
        f"# Benchmarks ({VARIANT}, {SIZE}x{SIZE}, float32, inference)",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {threads} threads; "
        f"torch {torch.__version__}, tensorflow {tf.__version__}, keras {keras.__version__}. "
        f"Median of {REPEATS} runs after a warm-up. Written by `make bench`.",
        "",
        "| batch | PyTorch (eager) | convnext_tf (tf.function) | keras.applications "
        "ConvNeXtTiny (tf.function) | convnext_tf / PyTorch | keras.applications / PyTorch |",
        "|---|---|---|---|---|---|",
    ]
    for batch, t_torch, t_ours, t_peer in rows:
        lines.append(
            f"| {batch} | {t_torch * 1e3:.0f} ms | {t_ours * 1e3:.0f} ms | {t_peer * 1e3:.0f} ms "
            f"| {t_ours / t_torch:.2f}x | {t_peer / t_torch:.2f}x |"
        )
    lines += [
        "",
        f"Converting a {VARIANT} state_dict into a built Keras model: "
        f"{t_convert:.2f} s (median of 3).",
    ]
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
