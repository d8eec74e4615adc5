"""Whole jobs, as the command line runs them, for Python users too.

    from converters import convert_file
    result = convert_file("convnext_tiny_1k_224_ema.pth", "tiny.keras")
    result = convert_file("timm.safetensors", "k.weights.h5", target="keras-applications")

Each function takes the command line's options as parameters (same names, without the
dashes), raises ConversionError with one line naming the problem, and reports what it does
through `log` (a function taking one line; the command line passes one that prints to stderr).

One module per job, each importing only what it runs: `convnext verify` of a .tflite file
loads PyTorch and LiteRT, not TensorFlow. The jobs are loaded on first use (PEP 562).
"""

from __future__ import annotations

import importlib

_JOBS = {
    "convert_file": "converters.jobs.convert",
    "verify_file": "converters.jobs.verify",
    "export_file": "converters.jobs.export",
    "inspect_file": "converters.jobs.inspect",
}

__all__ = sorted(_JOBS)


def __getattr__(name: str):
    if name not in _JOBS:
        raise AttributeError(f"module 'converters.jobs' has no attribute {name!r}")
    return getattr(importlib.import_module(_JOBS[name]), name)
