"""What the entry points (the command line, the demo, the tests, the benchmarks) do first."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

# Set by import_tensorflow_quietly, which only the entry points call: the native libraries'
# notices (LiteRT's "INFO: Created TensorFlow Lite XNNPACK delegate") are silenced then,
# and a Python user's process keeps them.
_silenced = False


@contextlib.contextmanager
def native_notices_silenced() -> Iterator[None]:
    """File descriptor 2 on the null device for the block, when an entry point asked for
    quiet: C++ code writes its notices there directly, past Python's sys.stderr."""
    if not _silenced:
        yield
        return
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with its C++ start-up notices (oneDNN, CPU features) silenced: they go
    straight to file descriptor 2, ignore TF_CPP_MIN_LOG_LEVEL in TF 2.21, and would bury the
    command line's one-line errors. Import errors still raise as usual. A library import never
    does this: a Python user's process keeps TensorFlow's usual output."""
    global _silenced
    _silenced = True
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with native_notices_silenced():
        import tensorflow

        # its Python warnings (tf.function retracing, when keras.applications models run
        # eagerly at several sizes) are advice for model authors, not for this tool's users
        tensorflow.get_logger().setLevel("ERROR")
