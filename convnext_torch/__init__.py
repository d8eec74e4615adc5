"""ConvNeXt in PyTorch, mirrored line for line by `convnext_tf`."""

from convnext_torch.model import (
    VARIANTS,
    Block,
    ConvNeXt,
    DropPath,
    LayerNorm,
    create_model,
    drop_path,
)

__all__ = ["VARIANTS", "Block", "ConvNeXt", "DropPath", "LayerNorm", "create_model", "drop_path"]
