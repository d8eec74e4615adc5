"""Helpers of the parity tests and benchmarks: every parameter of a model randomised (so that a
broken weight shows), both frameworks' named outputs on the same images, and their differences."""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
import torch
from torch import nn

from converters.deploy.trace import is_backbone


def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Set every parameter to a random, non-degenerate value, in place: kernels with std
    1/sqrt(fan_in) (no symmetry, so a kh/kw swap changes the output), LayerNorm scales in
    [0.5, 1.5], biases and GRN shifts with std 0.2, layer scales and GRN scales of either sign
    with magnitude in [0.25, 1] (GRN starts at zero, where it is the identity)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():

            def uniform(low: float, high: float, p=p) -> torch.Tensor:
                return low + (high - low) * torch.rand(p.shape, generator=generator, dtype=p.dtype)

            if name.endswith("gamma"):  # layer scale, GRN scale
                sign = torch.randint(0, 2, p.shape, generator=generator).to(p.dtype) * 2 - 1
                p.copy_(sign * uniform(0.25, 1.0))
            elif name.endswith("beta"):  # GRN shift
                p.copy_(0.2 * torch.randn(p.shape, generator=generator, dtype=p.dtype))
            elif p.ndim == 1 and name.endswith("weight"):  # LayerNorm scale
                p.copy_(uniform(0.5, 1.5))
            elif p.ndim == 1:  # biases
                p.copy_(0.2 * torch.randn(p.shape, generator=generator, dtype=p.dtype))
            else:  # conv and linear weights, fan_in = everything but the output axis
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype) / fan_in**0.5)
    return model


@dataclass
class Difference:
    """How far two arrays are apart: the largest absolute difference, and that divided by
    the largest absolute value of the reference (PyTorch)."""

    name: str
    max_abs: float
    max_rel: float

    @classmethod
    def between(cls, name: str, reference: np.ndarray, other: np.ndarray) -> Difference:
        if reference.shape != other.shape:
            raise ValueError(f"{name}: shapes differ: {reference.shape} vs {other.shape}")
        max_abs = float(np.max(np.abs(reference - other)))
        scale = float(np.max(np.abs(reference)))
        return cls(name, max_abs, max_abs / scale if scale else max_abs)


def torch_outputs(model: nn.Module, images: np.ndarray) -> dict[str, np.ndarray]:
    """A PyTorch ConvNeXt's stage outputs ("stage 1".."stage 4", (N, C, H, W)) and, unless it is
    a detection backbone, its "logits" (pooled features without a head), in inference mode, on
    `images` (N, C, H, W) cast to the model's dtype."""
    model.eval()
    dtype = next(model.parameters()).dtype
    with torch.no_grad():
        x = torch.from_numpy(images).to(dtype)
        outputs = {f"stage {i}": s.numpy() for i, s in enumerate(model.forward_stages(x), 1)}
        if not is_backbone(model):  # a backbone's outputs are its (normalised) stages
            outputs["logits"] = model(x).numpy()
    return outputs


def keras_outputs(model: keras.Model, images: np.ndarray) -> dict[str, np.ndarray]:
    """The same for a Keras ConvNeXt, on the same (N, C, H, W) `images`, transposed on the way
    in and out so that both frameworks' outputs compare element for element."""
    x = images.transpose(0, 2, 3, 1).astype(model.compute_dtype)  # (N, C, H, W) -> (N, H, W, C)
    stages = model.forward_stages(x, training=False)
    outputs = {
        f"stage {i}": keras.ops.convert_to_numpy(s).transpose(0, 3, 1, 2)  # -> (N, C, H, W)
        for i, s in enumerate(stages, 1)
    }
    if not is_backbone(model):
        outputs["logits"] = keras.ops.convert_to_numpy(model(x, training=False))
    return outputs


def differences(reference: dict, other: dict) -> dict[str, Difference]:
    """Difference.between for every output of `reference`."""
    return {name: Difference.between(name, reference[name], other[name]) for name in reference}
