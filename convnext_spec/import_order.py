"""TensorFlow and triton in one process: triton must come first.

The torch that the package index serves (2.14.1, a CUDA build) brings `triton`, which dies with
a segmentation fault when it is imported after TensorFlow (`python -c "import tensorflow,
triton"` alone crashes; the other order works). torch imports triton lazily, the first time
anything touches torch._dynamo: building a model is enough. Users have that torch beside
tensorflow-cpu, so the packages that bring TensorFlow into a process with torch import this
module first (`from convnext_spec import import_order`), which imports triton, or marks it
absent when TensorFlow came first. Stdlib only: it imports no framework itself.
"""

from __future__ import annotations

import importlib.util
import sys
import warnings


def import_triton_before_tensorflow() -> None:
    """Import triton now if it is installed and TensorFlow is not yet imported (0.4 s). When
    TensorFlow came first, importing triton would crash the process: it is marked absent
    instead (torch then runs as it does without triton: no GPU torch.compile in this process),
    with a warning that says how to keep it."""
    if "triton" in sys.modules or not installed("triton"):
        return
    if "tensorflow" in sys.modules:
        sys.modules["triton"] = None  # `import triton` raises ImportError: torch copes
        warnings.warn(
            "TensorFlow was imported before triton, and triton crashes the process when "
            "imported after it: triton is disabled in this process (import torch._dynamo or "
            "triton before TensorFlow to keep it)",
            RuntimeWarning,
            stacklevel=2,
        )
        return
    try:
        import triton  # noqa: F401
    except Exception:  # a broken triton: torch copes with its absence as it does elsewhere
        pass


def installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a half-installed package
        return False


import_triton_before_tensorflow()  # on first import: see the module docstring
