"""OpenMMLab's ConvNeXt: mmpretrain (and mmcls 0.x before it), and the mmdetection 3.x /
mmsegmentation 1.x model zoos, whose configs build it as `type='mmpretrain.ConvNeXt'`.

mmpretrain/models/backbones/convnext.py keeps the official `downsample_layers` and `stages`,
and names a block's layers `depthwise_conv`, `norm`, `pointwise_conv1`, `pointwise_conv2`,
`gamma` (C,) and V2's `grn.gamma` / `grn.beta` (4C,) (models/utils/norm.py). With
`linear_pw_conv=False` the pointwise layers are 1x1 convs, (out, in, 1, 1). Each stage in
`out_indices` gets its own LayerNorm `norm{i}`, applied

- after global average pooling with `gap_before_final_norm=True`, mmpretrain's default, and
  `out_indices=-1` (stage 3): the image classifier, whose `norm3` is the official final
  `norm`, and whose LinearClsHead `head.fc` is the official `head`;
- to each stage's map with `gap_before_final_norm=False` (mmdetection, mmsegmentation): the
  detection backbone, whose `norm{i}` are ConvNeXtBackbone's `norm{i}`.

mmengine saves either as `{"meta": ..., "state_dict": ...}` with the ConvNeXt under `backbone.`
(files.checkpoint.take_backbone removes it, and keeps a classifier's `head.*`). Pure: no
framework imported.
"""

from __future__ import annotations

import re

import numpy as np

# official                          mmpretrain
MMPRETRAIN: tuple[tuple[str, str], ...] = (
    ("downsample_layers.{i}.{k}.{p}",  "downsample_layers.{i}.{k}.{p}"),  # 0: the stem
    ("stages.{i}.{j}.dwconv.{p}",      "stages.{i}.{j}.depthwise_conv.{p}"),
    ("stages.{i}.{j}.norm.{p}",        "stages.{i}.{j}.norm.{p}"),
    ("stages.{i}.{j}.pwconv1.{p}",     "stages.{i}.{j}.pointwise_conv1.{p}"),  # Linear or
    ("stages.{i}.{j}.pwconv2.{p}",     "stages.{i}.{j}.pointwise_conv2.{p}"),  # 1x1 conv
    ("stages.{i}.{j}.gamma",           "stages.{i}.{j}.gamma"),
    ("stages.{i}.{j}.grn.gamma",       "stages.{i}.{j}.grn.gamma"),  # V2, (4C,)
    ("stages.{i}.{j}.grn.beta",        "stages.{i}.{j}.grn.beta"),
    ("norm{i}.{p}",                    "norm{i}.{p}"),  # per stage in out_indices
    ("head.{p}",                       "head.fc.{p}"),  # ImageClassifier's LinearClsHead
)  # fmt: skip

SIGNATURES = ("stages.0.0.depthwise_conv.weight",)  # the official names have dwconv

STAGE_NORM = re.compile(r"norm(\d)\.(weight|bias)")
LAST_STAGE = 3


def pooled_final_norm(tensors: dict[str, np.ndarray], skipped: dict, read_from: dict) -> list[str]:
    """mmpretrain's classifier form: the last stage's norm alone (out_indices=-1), applied after
    global average pooling (gap_before_final_norm=True, the default), is the official final
    norm. Any other set of norm{i} is a detection backbone's, read as ConvNeXtBackbone's.

    Without a head the keys alone do not say whether a lone norm3 came after pooling (the
    default, and every mmpretrain classifier) or on the map (gap_before_final_norm=False with
    out_indices (3,), which the mmdetection / mmsegmentation configs do not use): mmpretrain's
    default is read, and said."""
    norms = {int(m.group(1)) for key in tensors if (m := STAGE_NORM.fullmatch(key))}
    if norms != {LAST_STAGE} or "norm.weight" in tensors or "norm.bias" in tensors:
        return []
    for p in ("weight", "bias"):
        if f"norm{LAST_STAGE}.{p}" in tensors:
            tensors[f"norm.{p}"] = tensors.pop(f"norm{LAST_STAGE}.{p}")
    if "head.weight" in tensors:
        return [
            "norm3 applies after global average pooling (mmpretrain's classifier): the final norm"
        ]
    return [
        "norm3 alone and no head: read as mmpretrain's default backbone (out_indices -1, "
        "gap_before_final_norm: norm3 after pooling, the final norm); the model outputs the "
        "pooled features"
    ]
