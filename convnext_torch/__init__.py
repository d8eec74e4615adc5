"""ConvNeXt in PyTorch, mirrored line for line by `convnext_tf`."""

from convnext_torch.model import (
    FAMILY_DEFAULTS,
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
    drop_path,
)

__all__ = [
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
    "drop_path",
]
