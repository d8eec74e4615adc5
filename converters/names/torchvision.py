"""torchvision's ConvNeXt (`torchvision.models.convnext_tiny` .. `convnext_large`): the paper's
model under the names of torchvision/models/convnext.py.

Its `features` is one nn.Sequential that interleaves two kinds of module: the stem at 0 (a
Conv2dNormActivation: conv, LayerNorm2d), stage i at 2i + 1 (CNBlocks), and the downsampling
before stage i at 2i (LayerNorm2d, conv), the official `downsample_layers.i` in the same
order. A CNBlock is `block` (Conv2d, Permute, LayerNorm, Linear, GELU, Linear, Permute: the
tensors at 0, 2, 3, 5) and `layer_scale` of shape (C, 1, 1); `classifier` is LayerNorm2d,
Flatten, Linear (tensors at 0 and 2). Every norm's eps is 1e-6 and GELU is exact, as in the
official model.

torchvision builds only that form: three input channels, LayerNorm, the 4 x 4 patch stem, a
classifier with a bias, a layer scale in every block. What it cannot hold is refused by name
on writing; a missing layer scale or classifier bias is written as ones or zeros (the same
function, said). Pure: no framework imported.
"""

from __future__ import annotations

import re

import numpy as np

from converters.errors import ConversionError
from convnext_spec.spec import ModelSpec, name_of

# official                           torchvision
TORCHVISION: tuple[tuple[str, str], ...] = (
    ("downsample_layers.{i}.{k}.{p}",   "features.{2i}.{k}.{p}"),  # 0 the stem: conv, norm
    ("stages.{i}.{j}.dwconv.{p}",       "features.{2i+1}.{j}.block.0.{p}"),
    ("stages.{i}.{j}.norm.{p}",         "features.{2i+1}.{j}.block.2.{p}"),
    ("stages.{i}.{j}.pwconv1.{p}",      "features.{2i+1}.{j}.block.3.{p}"),
    ("stages.{i}.{j}.pwconv2.{p}",      "features.{2i+1}.{j}.block.5.{p}"),
    ("stages.{i}.{j}.gamma",            "features.{2i+1}.{j}.layer_scale"),  # (C, 1, 1)
    ("norm.{p}",                        "classifier.0.{p}"),
    ("head.{p}",                        "classifier.2.{p}"),
)  # fmt: skip

SIGNATURES = ("features.1.0.block.0.weight",)  # stage 0's first dwconv: no other torchvision net

LAYER_SCALE = re.compile(r"stages\.\d+\.\d+\.gamma")

# The variants torchvision has a builder of the same name for (torchvision.models.convnext_tiny)
BUILDERS = ("convnext_tiny", "convnext_small", "convnext_base", "convnext_large")
# What torchvision's ConvNeXt class can be; anything else is refused by name.
REPRESENTABLE = {"norm": "layernorm", "norm_eps": 1e-6, "stem": "patchify", "head": "linear"}


def on_read(key: str, value: np.ndarray) -> tuple[np.ndarray, str | None]:
    if LAYER_SCALE.fullmatch(key) and value.ndim == 3 and value.shape[1:] == (1, 1):
        return value.reshape(-1), None  # (C, 1, 1) -> (C,)
    return value, None


def on_write(key: str, value: np.ndarray, spec: ModelSpec | None):
    if LAYER_SCALE.fullmatch(key):
        return value.reshape(-1, 1, 1), None  # (C,) -> (C, 1, 1)
    return value, None


def complete_on_write(tensors: dict[str, np.ndarray], spec: ModelSpec | None) -> list[str]:
    """torchvision's CNBlock always multiplies by a layer scale and its classifier always has a
    bias: a model without them is written with ones and zeros, which compute the same."""
    notes = []
    dwconvs = [k for k in tensors if re.fullmatch(r"features\.\d+\.\d+\.block\.0\.weight", k)]
    missing = [k for k in dwconvs if k.replace("block.0.weight", "layer_scale") not in tensors]
    for key in missing:
        channels = tensors[key].shape[0]
        tensors[key.replace("block.0.weight", "layer_scale")] = np.ones(
            (channels, 1, 1), tensors[key].dtype
        )
    if missing:
        notes.append(
            f"layer_scale added as ones in {len(missing)} blocks (torchvision's blocks always "
            "have one, this model none: the same function)"
        )
    weight = tensors.get("classifier.2.weight")
    if weight is not None and "classifier.2.bias" not in tensors:
        tensors["classifier.2.bias"] = np.zeros(weight.shape[0], weight.dtype)
        notes.append("classifier.2.bias added as zeros (torchvision's classifier has a bias)")
    return notes


def check_representable(spec: ModelSpec) -> None:
    """Raise ConversionError unless torchvision's ConvNeXt class can be this model."""
    if spec.kind != "classifier":
        what = "isotropic ConvNeXt" if spec.kind == "isotropic" else "detection backbone"
        raise ConversionError(f"torchvision has no {what}: `target` torchvision writes classifiers")
    if spec.use_grn:
        raise ConversionError(
            "torchvision's ConvNeXt is V1, this model has GRN (ConvNeXt V2): it cannot be "
            "written in the torchvision layout (`target` timm or hf can)"
        )
    for field, value in REPRESENTABLE.items():
        if getattr(spec, field) != value:
            raise ConversionError(
                f"torchvision's ConvNeXt has {field} {value}, this model {getattr(spec, field)}: "
                "it cannot be written in the torchvision layout (`target` timm can)"
            )
    if spec.in_chans != 3:
        raise ConversionError(
            f"torchvision's ConvNeXt stem takes 3 input channels, this model {spec.in_chans}: "
            "it cannot be written in the torchvision layout"
        )
    if not spec.num_classes:
        raise ConversionError(
            "torchvision's ConvNeXt always ends in a classifier, this model has none "
            "(num_classes 0): it cannot be written in the torchvision layout"
        )


def builder(spec: ModelSpec) -> str:
    """The torchvision call that builds the model a written file loads into."""
    name = name_of(spec)
    if name in BUILDERS:
        return f"torchvision.models.{name}(num_classes={spec.num_classes})"
    outs = [*spec.dims[1:], None]
    stages = ", ".join(
        f"CNBlockConfig({dim}, {out}, {depth})"
        for dim, out, depth in zip(spec.dims, outs, spec.depths, strict=True)
    )
    return f"torchvision.models.ConvNeXt([{stages}], num_classes={spec.num_classes})"
