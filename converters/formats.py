"""The key layouts ConvNeXt checkpoints come in, and how each maps onto the official one.

Reading renames a foreign layout into the official one (the names convnext_torch uses, which
converters.mapping maps onto Keras); writing renames the other way. Each layout is one table of
(official, foreign) key templates: {i}, {j}, {k} stand for indices and {p} for weight or bias.
The first template that matches a whole key wins. A key no template matches is never guessed
at: it is reported by name.

Beside the names, two shapes differ: timm's small variants (atto..nano, built with
conv_mlp=True) keep the MLP as 1x1 convolutions, (out, in, 1, 1) instead of (out, in); and timm
keeps ConvNeXt V2's GRN parameters as (C,) instead of (1, 1, 1, C).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np

# official                            timm
TIMM: tuple[tuple[str, str], ...] = (
    ("downsample_layers.0.0.{p}",       "stem.0.{p}"),
    ("downsample_layers.0.1.{p}",       "stem.1.{p}"),
    ("downsample_layers.{i}.{k}.{p}",   "stages.{i}.downsample.{k}.{p}"),
    ("stages.{i}.{j}.dwconv.{p}",       "stages.{i}.blocks.{j}.conv_dw.{p}"),
    ("stages.{i}.{j}.norm.{p}",         "stages.{i}.blocks.{j}.norm.{p}"),
    ("stages.{i}.{j}.pwconv1.{p}",      "stages.{i}.blocks.{j}.mlp.fc1.{p}"),
    ("stages.{i}.{j}.pwconv2.{p}",      "stages.{i}.blocks.{j}.mlp.fc2.{p}"),
    ("stages.{i}.{j}.gamma",            "stages.{i}.blocks.{j}.gamma"),
    ("stages.{i}.{j}.grn.gamma",        "stages.{i}.blocks.{j}.mlp.grn.weight"),  # V2, (4C,)
    ("stages.{i}.{j}.grn.beta",         "stages.{i}.blocks.{j}.mlp.grn.bias"),
    ("norm.{p}",                        "head.norm.{p}"),
    ("head.{p}",                        "head.fc.{p}"),
)  # fmt: skip

# official                        Hugging Face transformers (ConvNextForImageClassification)
HF: tuple[tuple[str, str], ...] = (
    ("downsample_layers.0.0.{p}",    "convnext.embeddings.patch_embeddings.{p}"),
    ("downsample_layers.0.1.{p}",    "convnext.embeddings.layernorm.{p}"),
    ("downsample_layers.{i}.{k}.{p}", "convnext.encoder.stages.{i}.downsampling_layer.{k}.{p}"),
    ("stages.{i}.{j}.dwconv.{p}",    "convnext.encoder.stages.{i}.layers.{j}.dwconv.{p}"),
    ("stages.{i}.{j}.norm.{p}",      "convnext.encoder.stages.{i}.layers.{j}.layernorm.{p}"),
    ("stages.{i}.{j}.pwconv1.{p}",   "convnext.encoder.stages.{i}.layers.{j}.pwconv1.{p}"),
    ("stages.{i}.{j}.pwconv2.{p}",   "convnext.encoder.stages.{i}.layers.{j}.pwconv2.{p}"),
    ("stages.{i}.{j}.gamma",         "convnext.encoder.stages.{i}.layers.{j}.layer_scale_parameter"),  # noqa: E501
    ("stages.{i}.{j}.grn.gamma",     "convnext.encoder.stages.{i}.layers.{j}.grn.weight"),
    ("stages.{i}.{j}.grn.beta",      "convnext.encoder.stages.{i}.layers.{j}.grn.bias"),
    ("norm.{p}",                     "convnext.layernorm.{p}"),
    ("head.{p}",                     "classifier.{p}"),
)  # fmt: skip

# ConvNextV2ForImageClassification: the same names under "convnextv2." instead of "convnext."
HF_V2 = tuple((official, hf.replace("convnext.", "convnextv2.", 1)) for official, hf in HF)

LAYOUTS = {"official": (), "timm": TIMM, "hf": HF + HF_V2}

# Keys that tell the layouts apart (checked in this order).
SIGNATURES = (
    ("hf", "convnext.embeddings.patch_embeddings.weight"),
    ("hf", "convnextv2.embeddings.patch_embeddings.weight"),
    ("hf", "embeddings.patch_embeddings.weight"),  # ConvNextModel: no "convnext." prefix
    ("timm", "stem.0.weight"),
    ("official", "downsample_layers.0.0.weight"),
    ("official", "stem.weight"),  # the isotropic models (official layout only)
)

# timm builds these variants with conv_mlp=True: 1x1-conv MLP weights of shape (out, in, 1, 1).
TIMM_CONV_MLP_VARIANTS = tuple(
    f"{family}_{size}"
    for family in ("convnext", "convnextv2")
    for size in ("atto", "femto", "pico", "nano")
)
MLP_WEIGHT = re.compile(r"stages\.\d+\.\d+\.pwconv[12]\.weight")
GRN_PARAMETER = re.compile(r"stages\.\d+\.\d+\.grn\.(gamma|beta)")  # (1, 1, 1, C); timm: (C,)

_PLACEHOLDER = {
    "i": r"(?P<i>\d+)",
    "j": r"(?P<j>\d+)",
    "k": r"(?P<k>\d+)",
    "p": r"(?P<p>weight|bias)",
}


def _compile(template: str) -> re.Pattern:
    parts = re.split(r"\{(\w)\}", template)  # literal, name, literal, name, ...
    pattern = "".join(
        _PLACEHOLDER[part] if n % 2 else re.escape(part) for n, part in enumerate(parts)
    )
    return re.compile(pattern)


def rename(key: str, rules: Iterable[tuple[str, str]], reverse: bool = False) -> str | None:
    """`key` in the other layout: foreign -> official, or official -> foreign with `reverse`.
    None when no rule matches."""
    for official, foreign in rules:
        source, target = (official, foreign) if reverse else (foreign, official)
        match = _compile(source).fullmatch(key)
        if match:
            return target.format(**match.groupdict())
    return None


def detect(keys: Iterable[str]) -> str | None:
    """The layout whose signature key is present, or None."""
    keys = set(keys)
    for layout, signature in SIGNATURES:
        if signature in keys:
            return layout
    if any(k.startswith(("downsample_layers.", "stages.", "blocks.")) for k in keys):
        return "official"  # the signature itself is missing: let strict accounting name it
    return None


def to_official(
    tensors: dict[str, np.ndarray], layout: str
) -> tuple[dict[str, np.ndarray], list[str], list[str]]:
    """Rename a foreign state_dict into the official layout. Returns the renamed tensors, the
    keys no rule matched (the caller refuses them), and notes on value changes made."""
    rules = LAYOUTS[layout]
    if not rules:
        return dict(tensors), [], []
    renamed, unmatched, notes = {}, [], []
    for key, value in tensors.items():
        name = key
        if layout == "hf" and not key.startswith(("convnext.", "convnextv2.", "classifier.")):
            name = f"convnext.{key}"  # ConvNextModel (no classifier) saves without the prefix
        official = rename(name, rules)
        if official is None:
            unmatched.append(key)
            continue
        if MLP_WEIGHT.fullmatch(official) and value.ndim == 4 and value.shape[2:] == (1, 1):
            value = value.reshape(value.shape[:2])  # 1x1 conv (out, in, 1, 1) -> (out, in)
            if not notes:
                notes.append("1x1-conv MLP weights (out, in, 1, 1) read as Linear (out, in)")
        if GRN_PARAMETER.fullmatch(official) and value.ndim == 1:
            value = value.reshape(1, 1, 1, -1)  # timm's (C,) -> (1, 1, 1, C)
        renamed[official] = value
    return renamed, unmatched, notes


def from_official(
    tensors: dict[str, np.ndarray], layout: str, conv_mlp: bool = False
) -> dict[str, np.ndarray]:
    """Rename an official state_dict into `layout`; `conv_mlp` writes timm's 1x1-conv MLP
    weights (out, in, 1, 1). Raises ConversionError for a key the layout has no name for
    (timm and Hugging Face have no isotropic ConvNeXt)."""
    rules = LAYOUTS[layout]
    out = {}
    for key, value in tensors.items():
        target = rename(key, rules, reverse=True) if rules else key
        if target is None:
            from converters.checkpoint import ConversionError

            raise ConversionError(f"the {layout} layout has no name for {key}")
        if conv_mlp and MLP_WEIGHT.fullmatch(key):
            value = value.reshape((*value.shape, 1, 1))  # (out, in) -> (out, in, 1, 1)
        if layout == "timm" and GRN_PARAMETER.fullmatch(key):
            value = value.reshape(-1)  # (1, 1, 1, C) -> timm's (C,)
        out[target] = value
    return out
