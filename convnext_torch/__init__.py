"""ConvNeXt in PyTorch, mirrored line for line by `convnext_tf`."""

from convnext_torch.model import (
    FAMILY_DEFAULTS,
    GRN,
    VARIANTS,
    Block,
    ConvNeXt,
    DropPath,
    LayerNorm,
    create_model,
    drop_path,
)

__all__ = [
    "VARIANTS",
    "Block",
    "ConvNeXt",
    "DropPath",
    "FAMILY_DEFAULTS",
    "GRN",
    "LayerNorm",
    "create_model",
    "drop_path",
]
