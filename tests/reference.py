"""ConvNeXt's forward pass in plain numpy, written from the paper and the official code, reading
an official-layout state_dict. It shares no code with either package: it anchors what parity
between the two frameworks cannot check, because a mistake made in both would cancel (the order
of operations, eps, exact GELU, GRN, the residual, pooling before the final LayerNorm).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

EPS = 1e-6  # every LayerNorm in ConvNeXt
erf = np.vectorize(math.erf)


def gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Over the last axis, with the biased variance."""
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + EPS) * weight + bias


def patch_conv(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Conv with kernel size == stride k and no padding on NHWC input: cut the image into k x k
    patches (dropping the remainder, as a floor) and project each. weight: (out, in, k, k)."""
    k = weight.shape[-1]
    n, h, w, c = x.shape
    patches = x[:, : h // k * k, : w // k * k].reshape(n, h // k, k, w // k, k, c)
    return np.einsum("nypxqc,ocpq->nyxo", patches, weight) + bias


def depthwise_conv7(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """7x7 depthwise conv, zero padding 3, NHWC. weight: (C, 1, 7, 7), cross-correlation."""
    padded = np.pad(x, ((0, 0), (3, 3), (3, 3), (0, 0)))
    windows = sliding_window_view(padded, (7, 7), axis=(1, 2))  # (N, H, W, C, 7, 7)
    return np.einsum("nyxcpq,cpq->nyxc", windows, weight[:, 0]) + bias


def block(x: np.ndarray, s: dict[str, np.ndarray], p: str) -> np.ndarray:
    """One residual block, `p` the key prefix (stages.i.j or blocks.j), NHWC."""
    y = depthwise_conv7(x, s[f"{p}.dwconv.weight"], s[f"{p}.dwconv.bias"])
    y = layer_norm(y, s[f"{p}.norm.weight"], s[f"{p}.norm.bias"])
    y = y @ s[f"{p}.pwconv1.weight"].T + s[f"{p}.pwconv1.bias"]
    y = gelu(y)
    if f"{p}.grn.gamma" in s:  # ConvNeXt V2: global response normalization
        norms = np.sqrt((y**2).sum(axis=(1, 2), keepdims=True))  # L2 over (H, W)
        scaled = y * norms / (norms.mean(-1, keepdims=True) + 1e-6)
        y = s[f"{p}.grn.gamma"] * scaled + s[f"{p}.grn.beta"] + y
    y = y @ s[f"{p}.pwconv2.weight"].T + s[f"{p}.pwconv2.bias"]
    if f"{p}.gamma" in s:
        y = s[f"{p}.gamma"] * y
    return x + y  # residual around the whole block


def forward(state: dict[str, np.ndarray], images: np.ndarray) -> dict[str, np.ndarray]:
    """Stage outputs (N, C, H, W) and logits of `images` (N, C, H, W), in float64."""
    s = {k: np.asarray(v, dtype=np.float64) for k, v in state.items()}
    x = images.astype(np.float64).transpose(0, 2, 3, 1)  # NHWC throughout
    outputs = {}
    if "stem.weight" in s:  # isotropic: 16x16/16 conv, no norm, one stage of blocks
        x = patch_conv(x, s["stem.weight"], s["stem.bias"])
        j = 0
        while f"blocks.{j}.dwconv.weight" in s:
            x = block(x, s, f"blocks.{j}")
            j += 1
        outputs["stage 1"] = x.transpose(0, 3, 1, 2)
    for i in range(4 if "stem.weight" not in s else 0):
        if i == 0:  # stem: 4x4/4 conv, then LayerNorm
            x = patch_conv(x, s["downsample_layers.0.0.weight"], s["downsample_layers.0.0.bias"])
            x = layer_norm(x, s["downsample_layers.0.1.weight"], s["downsample_layers.0.1.bias"])
        else:  # LayerNorm, then 2x2/2 conv
            d = f"downsample_layers.{i}"
            x = layer_norm(x, s[f"{d}.0.weight"], s[f"{d}.0.bias"])
            x = patch_conv(x, s[f"{d}.1.weight"], s[f"{d}.1.bias"])
        j = 0
        while f"stages.{i}.{j}.dwconv.weight" in s:
            x = block(x, s, f"stages.{i}.{j}")
            j += 1
        outputs[f"stage {i + 1}"] = x.transpose(0, 3, 1, 2)
    if "norm.weight" not in s:  # a detection backbone stops at the stages
        return outputs
    pooled = x.mean(axis=(1, 2))  # global average pool first, then the final LayerNorm
    features = layer_norm(pooled, s["norm.weight"], s["norm.bias"])
    has_head = "head.weight" in s  # without: the pooled features, as num_classes=0 gives
    outputs["logits"] = features @ s["head.weight"].T + s["head.bias"] if has_head else features
    return outputs
