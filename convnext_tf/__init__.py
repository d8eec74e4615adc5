"""ConvNeXt in Keras 3, mirrored by `convnext_torch`: same classes, names and order."""

import importlib.util
import os

# Keras 3 picks its backend at first import; this package is written for TensorFlow.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

# TensorFlow is an extra (its CPU and GPU wheels are two packages): say so in one line, not
# through Keras' traceback.
if importlib.util.find_spec("tensorflow") is None:
    raise ModuleNotFoundError(
        "convnext_tf needs TensorFlow, which is not installed: "
        "pip install 'convnext-parity[cpu]' (or '[gpu]' for CUDA), or install tensorflow yourself",
        name="tensorflow",
    )

# triton (beside torch from the package index) crashes when imported after TensorFlow
from convnext_spec import import_order  # noqa: F401  (imports triton, if installed, first)
from convnext_spec.spec import (
    FAMILY_DEFAULTS,
    ISOTROPIC_VARIANTS,
    VARIANTS,
    ModelSpec,
)
from convnext_tf.model import (
    GELU,
    GRN,
    Block,
    ConvNeXt,
    ConvNeXtBackbone,
    ConvNeXtIsotropic,
    DropPath,
    LayerNorm,
    create_backbone,
    create_model,
    drop_path,
)

__all__ = [
    "FAMILY_DEFAULTS",
    "GELU",
    "GRN",
    "ISOTROPIC_VARIANTS",
    "VARIANTS",
    "Block",
    "ConvNeXt",
    "ConvNeXtBackbone",
    "ConvNeXtIsotropic",
    "DropPath",
    "LayerNorm",
    "ModelSpec",
    "create_backbone",
    "create_model",
    "drop_path",
]
