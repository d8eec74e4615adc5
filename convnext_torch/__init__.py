"""ConvNeXt in PyTorch, mirrored by `convnext_tf`: same classes, names and order."""

# triton (beside torch from the package index) crashes when imported after TensorFlow
from convnext_spec import import_order  # noqa: F401  (imports triton, if installed, first)
from convnext_spec.spec import (
    FAMILY_DEFAULTS,
    ISOTROPIC_VARIANTS,
    VARIANTS,
    ModelSpec,
)
from convnext_torch.model import (
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
