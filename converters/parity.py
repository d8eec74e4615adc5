"""Comparing a PyTorch and a Keras ConvNeXt on the same inputs, stage by stage and block by
block (trace; converters.verify builds its verdict on it).

A comparison on freshly initialised models proves little: with the default layer scale of 1e-6
every block adds almost nothing, so a broken block goes unseen. `randomize_` gives every
parameter a value that matters before weights are converted and compared.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
import torch
from torch import nn

from convnext_tf.model import mean as keras_mean


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


def trace(model, x, call, pool) -> dict:
    """Every named intermediate output of a ConvNeXt of either framework, in the order they are
    computed, under the names of the PyTorch modules that produce them: `downsample_layers.0`
    (the stem), `stages.0.0`, `stages.0.1`, ... (after each block), then `norm` (pooled and
    normalised; `norm_pre` before pooling instead with a "norm_first" head), `pre_logits` (an
    "mlp" head's hidden layer) and `head` (logits) for a classifier, or `norm0`.. for a
    detection backbone;
    an isotropic model has `stem` and `blocks.0`... The first name at which two implementations
    differ says where one of them goes wrong.

    `call(layer, x)` runs one layer (Keras: with training=False), `pool(x)` is the global
    average pool in the framework's layout; the tensors come back as the framework made them,
    so that this also runs inside a tf.function (convnext export)."""
    points = {}
    if hasattr(model, "blocks"):  # isotropic
        x = points["stem"] = call(model.stem, x)
        for j, block in enumerate(layers_of(model.blocks)):
            x = points[f"blocks.{j}"] = call(block, x)
    else:
        for i in range(4):
            x = points[f"downsample_layers.{i}"] = call(model.downsample_layers[i], x)
            for j, block in enumerate(layers_of(model.stages[i])):
                x = points[f"stages.{i}.{j}"] = call(block, x)
            if is_backbone(model) and i in model.out_indices:
                points[f"norm{i}"] = call(getattr(model, f"norm{i}"), x)
    if not is_backbone(model):
        if has_weights(getattr(model, "norm_pre", None)):  # the "norm_first" head
            x = points["norm_pre"] = call(model.norm_pre, x)
        x = pool(x)
        if has_weights(model.norm):
            x = points["norm"] = call(model.norm, x)
        if has_weights(getattr(model, "pre_logits", None)):  # the "mlp" head's hidden layer
            x = points["pre_logits"] = call(model.pre_logits, x)
        if has_head(model):
            points["head"] = call(model.head, x)
    return points


def has_head(model) -> bool:
    """A classifier head rather than the identity of a model built with num_classes=0."""
    return has_weights(model.head)


def has_weights(layer) -> bool:
    """Whether a layer of either framework (or None) holds weights: not an Identity."""
    if layer is None:
        return False
    return bool(
        layer.weights if isinstance(layer, keras.layers.Layer) else list(layer.parameters())
    )


def layers_of(sequential) -> list:
    """The blocks of a stage: a torch nn.Sequential iterates over them, a keras.Sequential
    lists them in .layers."""
    return list(sequential.layers if isinstance(sequential, keras.Sequential) else sequential)


def torch_trace(model: nn.Module, images: np.ndarray) -> dict[str, np.ndarray]:
    """trace() of a PyTorch ConvNeXt in inference mode on `images` (N, C, H, W) cast to the
    model's dtype, as numpy arrays."""
    model.eval()
    dtype = next(model.parameters()).dtype
    with torch.no_grad():
        points = trace(
            model, torch.from_numpy(images).to(dtype), lambda f, x: f(x), lambda x: x.mean([-2, -1])
        )
    return {name: value.numpy() for name, value in points.items()}


def keras_trace(model: keras.Model, images) -> dict:
    """trace() of a Keras ConvNeXt in inference mode on `images` (N, H, W, C); tensors."""
    return trace(
        model,
        images,
        lambda f, x: f(x, training=False),
        lambda x: keras_mean(x, axis=(1, 2)),
    )


def is_backbone(model) -> bool:
    """A detection backbone (either framework): stage outputs only, no logits."""
    return hasattr(model, "out_indices")


def differences(reference: dict, other: dict) -> dict[str, Difference]:
    """Difference.between for every output of `reference`."""
    return {name: Difference.between(name, reference[name], other[name]) for name in reference}
