"""What the entry points (the command line, the demo, the tests, the benchmarks) do first."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

# Set by quiet_native_notices, which only the entry points call: the native libraries'
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


def quiet_native_notices() -> None:
    """Called by an entry point, once, before any framework loads: the native libraries'
    start-up notices (TensorFlow's oneDNN and CPU-feature lines, LiteRT's INFO lines) are
    silenced from then on, wherever TensorFlow is first imported (import_tensorflow). They
    go straight to file descriptor 2, ignore TF_CPP_MIN_LOG_LEVEL in TF 2.21, and would bury
    the command line's one-line errors. A library import never does this: a Python user's
    process keeps TensorFlow's usual output."""
    global _silenced
    _silenced = True
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def import_tensorflow() -> None:
    """Import TensorFlow where a job first needs it (a SavedModel or a Keras file to open),
    silenced when an entry point asked for quiet; a no-op once it is imported. Jobs that
    never need it (verify of a .tflite file, which LiteRT runs alone) never pay its seconds
    of start-up. Import errors raise as usual."""
    with native_notices_silenced():
        import tensorflow

        if _silenced:  # its Python warnings (tf.function retracing, when keras.applications
            # models run eagerly at several sizes) are advice for model authors, not users
            tensorflow.get_logger().setLevel("ERROR")


def import_tensorflow_quietly() -> None:
    """quiet_native_notices, then TensorFlow imported at once: for entry points whose every
    job needs it (the demo, the tests, the benchmarks)."""
    quiet_native_notices()
    import_tensorflow()
