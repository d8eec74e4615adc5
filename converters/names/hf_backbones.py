"""transformers' backbones of ConvNeXt: `ConvNextBackbone`, `ConvNextV2Backbone` (also under
`backbone.` in `UperNetForSemanticSegmentation`, beside `decode_head.*` / `auxiliary_head.*`)
and `DINOv3ConvNextBackbone`, read as the hf record of converters.names.layouts reads their
models.

ConvNextBackbone (models/convnext/modeling_convnext.py; V2 the same) is ConvNextModel's
`embeddings` and `encoder` without the final `layernorm`, plus a channels-first LayerNorm
(eps 1e-6) for each stage named in `out_features`: `hidden_states_norms.{stage name}`. Its
stage names are `stem, stage1, ..., stage4` over the encoder's hidden states (the embeddings'
output, then each stage's), so `stage{n}` is the output of stage n - 1: ConvNeXtBackbone's
`norm{n-1}`. A `stem` norm (ConvNeXtBackbone has no stem output) is named, not guessed.

DINOv3ConvNextBackbone (models/dinov3_convnext/modeling_dinov3_convnext.py) is
DINOv3ConvNextModel's `stages` without its final `layer_norm`, and adds no norm: its feature
maps are the raw stage outputs, which ConvNeXt's `forward_stages` returns. Pure: no framework
imported.
"""

from __future__ import annotations

import re

import numpy as np

# official                  transformers, after stage_norm_key: the stage's 0-based index
NORMS: tuple[tuple[str, str], ...] = (
    ("norm{i}.{p}",          "convnext.hidden_states_norms.{i}.{p}"),
)  # fmt: skip

STAGE_NAME = re.compile(r"hidden_states_norms\.stage([1-9])\.(.+)")
STAGE_NORM = re.compile(r"norm\d\.(weight|bias)")


def stage_norm_key(key: str) -> str:
    """`hidden_states_norms.stage{n}.*` as the rule table spells it, `...norms.{n - 1}.*`;
    any other key unchanged (a stem norm then matches no rule, and is reported)."""
    match = STAGE_NAME.fullmatch(key)
    if match is None:
        return key
    return f"convnext.hidden_states_norms.{int(match.group(1)) - 1}.{match.group(2)}"


def unit_final_norm(tensors: dict[str, np.ndarray], skipped: dict, read_from: dict) -> list[str]:
    """A DINOv3 trunk (its keys named `stages.0.downsample_layers.*`) with no norm after its
    stages, neither a final norm nor per-stage ones, and no head (DINOv3ConvNextBackbone): the
    classifier form without a head, its final norm added as weight 1, bias 0. Its stage
    outputs (`forward_stages`) are then exactly the backbone's feature maps; the pooled output
    passes a LayerNorm the file does not hold, and is said. A ConvNextModel file without its
    `layernorm` is not completed: strict accounting names what it lacks."""
    stem = read_from.get("downsample_layers.0.0.weight", "").removeprefix("model.")
    if not stem.startswith("stages.0.downsample_layers."):  # not DINOv3's naming
        return []
    has_norm = any(
        key.startswith(("norm.", "head.")) or STAGE_NORM.fullmatch(key) for key in tensors
    )
    last = tensors.get("downsample_layers.3.1.bias")
    if has_norm or last is None:
        return []
    tensors["norm.weight"] = np.ones(last.shape, last.dtype)
    tensors["norm.bias"] = np.zeros(last.shape, last.dtype)
    return [
        "no norm after the stages (DINOv3ConvNextBackbone keeps none): norm.weight 1 and "
        "norm.bias 0 added; its feature maps are forward_stages(x), and model(x) passes a "
        "LayerNorm the file does not hold"
    ]
