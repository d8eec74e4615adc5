"""ConvNeXt in Keras 3, mirrored line for line by `convnext_torch`."""

import os

# Keras 3 picks its backend at first import; this package is written for TensorFlow.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from convnext_tf.model import (  # noqa: E402
    FAMILY_DEFAULTS,
    GELU,
    GRN,
    ISOTROPIC_VARIANTS,
    VARIANTS,
    Block,
    ConvNeXt,
    ConvNeXtBackbone,
    ConvNeXtIsotropic,
    DropPath,
    LayerNorm,
    create_backbone,
    create_model,
    default_float,
    drop_path,
)

__all__ = [
    "GELU",
    "VARIANTS",
    "Block",
    "ConvNeXt",
    "ConvNeXtBackbone",
    "ConvNeXtIsotropic",
    "DropPath",
    "FAMILY_DEFAULTS",
    "GRN",
    "ISOTROPIC_VARIANTS",
    "LayerNorm",
    "create_backbone",
    "create_model",
    "default_float",
    "drop_path",
]
