"""Strict, name-based conversion between PyTorch and Keras ConvNeXt weights.

This `__init__` imports nothing: `convnext_spec.spec` and `converters.mapping` stay free of
PyTorch and TensorFlow, and the model packages import `convnext_spec.spec`. The names below are
loaded on first use (PEP 562), so `from converters import torch_to_keras` still works.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "ConversionError": "converters.errors",
    "ModelSpec": "convnext_spec.spec",
    "StateDict": "converters.checkpoint",
    "load_state_dict": "converters.checkpoint",
    "ConversionReport": "converters.convert",
    "infer_spec": "converters.convert",
    "resolve_spec": "converters.convert",
    "keras_to_torch": "converters.convert",
    "keras_variables": "converters.convert",
    "torch_to_keras": "converters.convert",
    "load_torch_model": "converters.convert",
    "convert_file": "converters.pipeline",
    "ConversionResult": "converters.pipeline",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'converters' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
