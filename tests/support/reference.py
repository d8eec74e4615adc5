"""ConvNeXt's forward pass in plain numpy, written from the paper and the official code, reading
an official-layout state_dict. It shares no code with either package: it anchors what parity
between the two frameworks cannot check, because a mistake made in both would cancel (the order
of operations, eps, exact GELU, GRN, the residual, pooling before the final LayerNorm).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

erf = np.vectorize(math.erf)


def gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def normalise(x: np.ndarray, s: dict, key: str, norm: str, eps: float) -> np.ndarray:
    """The norm with weights `key`.weight (and .bias) over the last axis. layernorm: centred,
    biased variance (timm and the official code); rmsnorm: the mean square, no centring;
    simplenorm: x itself not centred, over the unbiased (C - 1) variance (timm's, torch.var)."""
    weight = s[f"{key}.weight"]
    mean = x.mean(-1, keepdims=True)
    if norm == "layernorm":
        return (x - mean) / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + eps) * weight + s[
            f"{key}.bias"
        ]
    if norm == "rmsnorm":
        return x / np.sqrt((x**2).mean(-1, keepdims=True) + eps) * weight
    assert norm == "simplenorm", norm
    var = ((x - mean) ** 2).sum(-1, keepdims=True) / (x.shape[-1] - 1)
    return x / np.sqrt(var + eps) * weight


def conv3x3_stride2(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """3x3 conv, stride 2, zero padding 1, NHWC (timm's overlapping stems). weight:
    (out, in, 3, 3), cross-correlation. Output size ceil(H / 2)."""
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    windows = sliding_window_view(padded, (3, 3), axis=(1, 2))[:, ::2, ::2]  # (N, H', W', C, 3, 3)
    return np.einsum("nyxcpq,ocpq->nyxo", windows, weight) + bias


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


def block(x: np.ndarray, s: dict[str, np.ndarray], p: str, norm: str, eps: float) -> np.ndarray:
    """One residual block, `p` the key prefix (stages.i.j or blocks.j), NHWC."""
    y = depthwise_conv7(x, s[f"{p}.dwconv.weight"], s[f"{p}.dwconv.bias"])
    y = normalise(y, s, f"{p}.norm", norm, eps)
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


def stem(x: np.ndarray, s: dict[str, np.ndarray], norm: str, eps: float) -> np.ndarray:
    """The 4x4/4 patch conv, or timm's overlapping stem: 3x3/2 convs at downsample_layers.0.0
    and .1 (or .2, with a GELU between them at .1); then the norm, NHWC."""
    d = "downsample_layers.0"
    if s[f"{d}.0.weight"].shape[-1] == 4:  # patchify: conv, norm
        x = patch_conv(x, s[f"{d}.0.weight"], s[f"{d}.0.bias"])
        return normalise(x, s, f"{d}.1", norm, eps)
    x = conv3x3_stride2(x, s[f"{d}.0.weight"], s[f"{d}.0.bias"])
    second = 1 if f"{d}.1.weight" in s and s[f"{d}.1.weight"].ndim == 4 else 2
    if second == 2:  # nothing at .1: a GELU
        x = gelu(x)
    x = conv3x3_stride2(x, s[f"{d}.{second}.weight"], s[f"{d}.{second}.bias"])
    return normalise(x, s, f"{d}.{second + 1}", norm, eps)


def forward(
    state: dict[str, np.ndarray], images: np.ndarray, norm: str = "layernorm", eps: float = 1e-6
) -> dict[str, np.ndarray]:
    """Stage outputs (N, C, H, W) and logits of `images` (N, C, H, W), in float64. `norm` and
    `eps` are the model's (no tensor shows them)."""
    s = {k: np.asarray(v, dtype=np.float64) for k, v in state.items()}
    x = images.astype(np.float64).transpose(0, 2, 3, 1)  # NHWC throughout
    outputs = {}
    if "stem.weight" in s:  # isotropic: 16x16/16 conv, no norm, one stage of blocks
        x = patch_conv(x, s["stem.weight"], s["stem.bias"])
        j = 0
        while f"blocks.{j}.dwconv.weight" in s:
            x = block(x, s, f"blocks.{j}", norm, eps)
            j += 1
        outputs["stage 1"] = x.transpose(0, 3, 1, 2)
    for i in range(4 if "stem.weight" not in s else 0):
        if i == 0:
            x = stem(x, s, norm, eps)
        else:  # norm, then 2x2/2 conv
            d = f"downsample_layers.{i}"
            x = normalise(x, s, f"{d}.0", norm, eps)
            x = patch_conv(x, s[f"{d}.1.weight"], s[f"{d}.1.bias"])
        j = 0
        while f"stages.{i}.{j}.dwconv.weight" in s:
            x = block(x, s, f"stages.{i}.{j}", norm, eps)
            j += 1
        outputs[f"stage {i + 1}"] = x.transpose(0, 3, 1, 2)
    if "norm.weight" not in s and "norm_pre.weight" not in s:  # a detection backbone
        return outputs
    if "norm_pre.weight" in s:  # timm's head_norm_first: normalise, then pool
        features = normalise(x, s, "norm_pre", norm, eps).mean(axis=(1, 2))
    else:  # global average pool first, then the final norm
        features = normalise(x.mean(axis=(1, 2)), s, "norm", norm, eps)
    if "pre_logits.0.weight" in s:  # timm's MLP head: Linear, GELU, then the classifier
        features = gelu(features @ s["pre_logits.0.weight"].T + s["pre_logits.0.bias"])
    if "head.weight" not in s:  # the pooled features, as num_classes=0 gives
        outputs["logits"] = features
    else:
        outputs["logits"] = features @ s["head.weight"].T + s.get("head.bias", 0.0)
    return outputs
