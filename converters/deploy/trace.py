"""Comparing a PyTorch and a Keras ConvNeXt on the same inputs, stage by stage and block by
block (trace; converters.deploy.verify builds its verdict on it).

A comparison on freshly initialised models proves little: with the default layer scale of 1e-6
every block adds almost nothing, so a broken block goes unseen. `randomize_` gives every
parameter a value that matters before weights are converted and compared.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class Step:
    """One step of a ConvNeXt's forward pass: `layer` run on the running tensor (None: the
    global average pool), its output the trace point `name` (None: no point). A `side` step's
    output is kept beside the chain (a backbone's `norm{i}`) and is not the next input."""

    name: str | None
    layer: object | None
    side: bool = False


def forward_steps(model) -> list[Step]:
    """A ConvNeXt of either framework as the chain of steps its forward pass runs, in order:
    what trace() follows, and what convnext export converts piece by piece."""
    steps = []
    if hasattr(model, "blocks"):  # isotropic
        steps.append(Step("stem", model.stem))
        steps += [Step(f"blocks.{j}", block) for j, block in enumerate(layers_of(model.blocks))]
    else:
        for i in range(4):
            steps.append(Step(f"downsample_layers.{i}", model.downsample_layers[i]))
            for j, block in enumerate(layers_of(model.stages[i])):
                steps.append(Step(f"stages.{i}.{j}", block))
            if is_backbone(model) and i in model.out_indices:
                steps.append(Step(f"norm{i}", getattr(model, f"norm{i}"), side=True))
    if not is_backbone(model):
        if has_weights(getattr(model, "norm_pre", None)):  # the "norm_first" head
            steps.append(Step("norm_pre", model.norm_pre))
        steps.append(Step(None, None))
        if has_weights(model.norm):
            steps.append(Step("norm", model.norm))
        if has_weights(getattr(model, "pre_logits", None)):  # the "mlp" head's hidden layer
            steps.append(Step("pre_logits", model.pre_logits))
        if has_head(model):
            steps.append(Step("head", model.head))
    return steps


def run_steps(steps: list[Step], x, call, pool) -> dict:
    """The trace points of `steps` run from `x` (see trace)."""
    points = {}
    for step in steps:
        y = pool(x) if step.layer is None else call(step.layer, x)
        if step.name is not None:
            points[step.name] = y
        if not step.side:
            x = y
    return points


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
    return run_steps(forward_steps(model), x, call, pool)


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


def torch_trace(
    model: nn.Module, images: np.ndarray, dtype: torch.dtype | None = None
) -> dict[str, np.ndarray]:
    """trace() of a PyTorch ConvNeXt in inference mode on `images` (N, C, H, W) cast to the
    model's dtype, as numpy arrays.

    dtype: computed in this dtype rather than the model's, each step on a copy of its layer
    made as it runs and dropped after it: the same operations as a copy of the whole model,
    holding one step's copy at a time (verify's float64 noise floor of convnext_xlarge would
    otherwise hold a 2.7 GB copy beside the model)."""
    model.eval()
    own = next(model.parameters()).dtype
    if dtype is None or dtype == own:
        dtype, call = own, lambda f, x: f(x)
    else:
        call = lambda f, x: copy.deepcopy(f).to(dtype)(x)  # noqa: E731
    with torch.no_grad():
        points = trace(model, torch.from_numpy(images).to(dtype), call, lambda x: x.mean([-2, -1]))
    return {name: value.numpy() for name, value in points.items()}


def keras_trace(model, images) -> dict:
    """trace() of a Keras ConvNeXt (a convnext_tf model) in inference mode on `images`
    (N, H, W, C); tensors. Keras is imported by whoever built the model: this module needs
    only PyTorch, so that verify of a .tflite file loads no TensorFlow."""
    return keras_steps(forward_steps(model), images)


def keras_steps(steps: list[Step], x) -> dict:
    """run_steps() of a Keras ConvNeXt's steps in inference mode (NHWC)."""
    from convnext_tf.model import mean as keras_mean

    return run_steps(
        steps, x, lambda f, x: f(x, training=False), lambda x: keras_mean(x, axis=(1, 2))
    )


def is_backbone(model) -> bool:
    """A detection backbone (either framework): stage outputs only, no logits."""
    return hasattr(model, "out_indices")
