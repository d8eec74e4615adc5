"""Strict, name-based conversion between PyTorch and Keras ConvNeXt weights, and the check
that a deployed model computes what its PyTorch original computes.

A thin door over four wings, whose imports run one way, down:

    cli.py (parses and prints) -> jobs/ (whole jobs: convert_file, verify_file, ...)
      -> deploy/  (trace, export, artifacts/, verify, result, report)
      -> weights/ (which model a checkpoint is; tensors onto models, strictly)
      -> files/   (bytes in and out: readers, writers, every guard once)
      -> names/   (the key tables: no framework)
      -> errors.py, startup.py

This `__init__` imports no framework: `converters.names` stays free of PyTorch and
TensorFlow. It imports triton first where it is installed (convnext_spec.import_order: triton
crashes when TensorFlow came before it, and the wings below bring both). The names below are
loaded on first use (PEP 562), so `from converters import torch_to_keras` still works and
costs nothing until it is used.
"""

from __future__ import annotations

import importlib

from convnext_spec import import_order  # noqa: F401  (imports triton, if installed, first)

_EXPORTS = {
    "ConversionError": "converters.errors",
    "ModelSpec": "convnext_spec.spec",
    "StateDict": "converters.files.checkpoint",
    "load_state_dict": "converters.files.checkpoint",
    "ConversionReport": "converters.weights.convert",
    "keras_to_torch": "converters.weights.convert",
    "keras_variables": "converters.weights.convert",
    "torch_to_keras": "converters.weights.convert",
    "load_torch_model": "converters.weights.accounting",
    "infer_spec": "converters.weights.identify",
    "resolve_spec": "converters.weights.identify",
    "ConversionResult": "converters.weights.targets",
    "convert_file": "converters.jobs",
    "verify_file": "converters.jobs",
    "export_file": "converters.jobs",
    "inspect_file": "converters.jobs",
    "Verification": "converters.deploy.result",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'converters' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
