"""The description of a ConvNeXt, framework-free: what both model packages and the converter share.

`spec` holds `ModelSpec` and the variant tables (the papers', timm's, V2's); `recipe` the training
settings both frameworks' training steps read. Importing this package loads neither PyTorch nor
TensorFlow, like transformers' `ConvNextConfig` or timm's `model_args`.
"""

from convnext_spec.recipe import OptimizerSettings
from convnext_spec.spec import (
    FAMILY_DEFAULTS,
    ISOTROPIC_VARIANTS,
    VARIANTS,
    ModelSpec,
    SpecError,
    parameter_count,
    resolve,
    spec_from_name,
)

__all__ = [
    "FAMILY_DEFAULTS",
    "ISOTROPIC_VARIANTS",
    "VARIANTS",
    "ModelSpec",
    "OptimizerSettings",
    "SpecError",
    "parameter_count",
    "resolve",
    "spec_from_name",
]
