"""Where the time of `convnext convert CHECKPOINT OUT.weights.h5` goes, step by step.

    .venv/bin/python benchmarks/profile_conversion.py CHECKPOINT OUT.weights.h5

Runs the steps convert_file runs, in one fresh process, and prints each one's seconds and the
peak RSS after it. `make bench` writes the checkpoint it converts (convnext_xlarge) and runs
this on it; the README quotes the result to say where the gap to the floor comes from.
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    src, dst = Path(sys.argv[1]), Path(sys.argv[2])
    steps: list[tuple[str, float, float]] = []
    start = time.perf_counter()

    def step(what: str) -> None:
        nonlocal start
        now = time.perf_counter()
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        steps.append((what, now - start, peak_mb))
        start = now

    from converters.startup import import_tensorflow_quietly

    import_tensorflow_quietly()
    step("import tensorflow (Keras' backend)")
    import torch  # noqa: F401

    step("import torch (reads .pth)")
    import keras

    import convnext_tf
    from converters.files.writers import write_keras
    from converters.weights.convert import keras_model_from_state
    from converters.weights.identify import model_spec, read_state

    step("import the rest")
    state = read_state(src)
    state, spec = model_spec(state, None, None)
    step("read and check the checkpoint")
    model, _ = keras_model_from_state(state, spec)
    step("build the Keras model from it")
    write_keras(model, dst, force=True)
    step("write it (model.save_weights)")
    with keras.StatelessScope(initialize_variables=False):  # no variable gets a value
        convnext_tf.create_model(spec)
    step("(again: the Keras build alone, no values)")
    for what, seconds, peak_mb in steps:
        print(f"{what:<42} {seconds:6.2f} s   peak RSS {peak_mb:6.0f} MB")


if __name__ == "__main__":
    main()
