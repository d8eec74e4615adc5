"""Where the time of our Keras model's forward pass goes, beside profile_inference.py's PyTorch
profile (`make bench` quotes both).

    .venv/bin/python benchmarks/profile_keras.py

convnext_tiny at 224x224, 2 intra-op threads and 1 inter-op thread (so that the operators'
times add up to the pass), as tf.function runs it: the function's graph with its variables
frozen, run by a TensorFlow session with a full trace; the time of each operator type per
forward pass (TensorFlow's step stats), at batch 1 and 16.
"""

from __future__ import annotations

import os
import sys
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from profile_table import REPEATS, SIZE, THREADS, print_table  # noqa: E402
from tensorflow.python.framework.convert_to_constants import (  # noqa: E402
    convert_variables_to_constants_v2,
)

import convnext_tf  # noqa: E402


def profile(graph_def, batch: int) -> tuple[float, dict[str, float]]:
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(graph_def, name="")
    inputs = [op for op in graph.get_operations() if op.type == "Placeholder"][0].outputs[0]
    output = graph.get_operations()[-1].outputs[0]
    config = tf.compat.v1.ConfigProto(
        intra_op_parallelism_threads=THREADS, inter_op_parallelism_threads=1
    )
    x = np.random.default_rng(0).normal(size=(batch, SIZE, SIZE, 3)).astype(np.float32)
    with tf.compat.v1.Session(graph=graph, config=config) as session:
        session.run(output, {inputs: x})
        start = time.perf_counter()
        for _ in range(REPEATS[batch]):
            session.run(output, {inputs: x})
        wall = (time.perf_counter() - start) / REPEATS[batch] * 1000
        by_op: dict[str, float] = defaultdict(float)
        options = tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE)
        for _ in range(REPEATS[batch]):
            metadata = tf.compat.v1.RunMetadata()
            session.run(output, {inputs: x}, options=options, run_metadata=metadata)
            types = {op.name: op.type for op in graph.get_operations()}
            for device in metadata.step_stats.dev_stats:
                for node in device.node_stats:
                    name = node.node_name.split(":")[0]
                    by_op[types.get(name, name)] += node.all_end_rel_micros / 1000
    return wall, {name: ms / REPEATS[batch] for name, ms in by_op.items()}


def main() -> None:
    model = convnext_tf.create_model("convnext_tiny")
    spec = tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)
    function = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    graph_def = convert_variables_to_constants_v2(function).graph.as_graph_def()
    for batch in (1, 16):
        wall, by_op = profile(graph_def, batch)
        print_table(batch, wall, by_op, "time by operator type")


if __name__ == "__main__":
    main()
