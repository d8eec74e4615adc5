"""Comparing a PyTorch and a Keras ConvNeXt on the same inputs, stage by stage and block by
block (trace; converters.deploy.verify builds its verdict on it).

A comparison on freshly initialised models proves little: with the default layer scale of 1e-6
every block adds almost nothing, so a broken block goes unseen. `randomize_` gives every
parameter a value that matters before weights are converted and compared.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


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
    return bool(list(layer.parameters()) if isinstance(layer, nn.Module) else layer.weights)


def layers_of(sequential) -> list:
    """The blocks of a stage: a torch nn.Sequential iterates over them, a keras.Sequential
    lists them in .layers."""
    return list(sequential if isinstance(sequential, nn.Module) else sequential.layers)


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


def keras_trace(model, images) -> dict:
    """trace() of a Keras ConvNeXt (a convnext_tf model) in inference mode on `images`
    (N, H, W, C); tensors. Keras is imported by whoever built the model: this module needs
    only PyTorch, so that verify of a .tflite file loads no TensorFlow."""
    from convnext_tf.model import mean as keras_mean

    return trace(
        model,
        images,
        lambda f, x: f(x, training=False),
        lambda x: keras_mean(x, axis=(1, 2)),
    )


def is_backbone(model) -> bool:
    """A detection backbone (either framework): stage outputs only, no logits."""
    return hasattr(model, "out_indices")
