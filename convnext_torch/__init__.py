"""ConvNeXt in PyTorch, mirrored line for line by `convnext_tf`."""

from convnext_torch.model import (
    FAMILY_DEFAULTS,
    GRN,
    ISOTROPIC_VARIANTS,
    VARIANTS,
    Block,
    ConvNeXt,
    ConvNeXtIsotropic,
    DropPath,
    LayerNorm,
    create_model,
    drop_path,
)

__all__ = [
    "VARIANTS",
    "Block",
    "ConvNeXt",
    "ConvNeXtIsotropic",
    "DropPath",
    "FAMILY_DEFAULTS",
    "GRN",
    "ISOTROPIC_VARIANTS",
    "LayerNorm",
    "create_model",
    "drop_path",
]
