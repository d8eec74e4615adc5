"""Strict, name-based conversion between PyTorch and Keras ConvNeXt weights."""

import os


def _import_tensorflow_quietly() -> None:
    """Import TensorFlow with its C++ start-up notices (oneDNN, CPU features) silenced: they go
    straight to file descriptor 2, ignore TF_CPP_MIN_LOG_LEVEL in TF 2.21, and would bury the
    command line's one-line errors. Import errors still raise as usual."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


_import_tensorflow_quietly()

from converters.checkpoint import ConversionError, StateDict, load_state_dict  # noqa: E402
from converters.convert import (  # noqa: E402
    ConversionReport,
    infer_config,
    keras_to_torch,
    keras_variables,
    torch_to_keras,
)

__all__ = [
    "ConversionError",
    "ConversionReport",
    "StateDict",
    "infer_config",
    "keras_to_torch",
    "keras_variables",
    "load_state_dict",
    "torch_to_keras",
]
