"""What the entry points (the command line, the demo, the tests, the benchmarks) do first."""

from __future__ import annotations

import os


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with its C++ start-up notices (oneDNN, CPU features) silenced: they go
    straight to file descriptor 2, ignore TF_CPP_MIN_LOG_LEVEL in TF 2.21, and would bury the
    command line's one-line errors. Import errors still raise as usual. A library import never
    does this: a Python user's process keeps TensorFlow's usual output."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow

        # its Python warnings (tf.function retracing, when keras.applications models run
        # eagerly at several sizes) are advice for model authors, not for this tool's users
        tensorflow.get_logger().setLevel("ERROR")
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
