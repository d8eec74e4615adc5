"""Shared by the tests: inputs, forward passes in both frameworks, tolerances."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from unittest import mock

import numpy as np
import torch

import convnext_tf
import convnext_torch
from converters import torch_to_keras
from converters.parity import Difference, randomize_

# 61 -> 15 -> 7 -> 3 -> 1 and 127 -> 31 -> 15 -> 7 -> 3: a remainder at the stem and an odd
# size at every downsample, so a padding="same" conv anywhere changes the result.
ODD_SIZE = (61, 127)
BATCH = 2

# float64 agreement expected between the frameworks, relative to the largest value.
RTOL_FLOAT64 = 1e-12
# float32: the gap between the frameworks may be at most this multiple of PyTorch's own
# float32-vs-float64 error.
FLOAT32_GAP_FACTOR = 6.0  # measured worst case 3.3 (README); real bugs give 100x and more


def images(height: int, width: int, batch: int = BATCH, seed: int = 0) -> np.ndarray:
    """Non-constant float64 inputs, (N, 3, H, W): LayerNorm maps a constant image to zeros."""
    return np.random.default_rng(seed).standard_normal((batch, 3, height, width))


def torch_outputs(model: torch.nn.Module, x: np.ndarray) -> dict[str, np.ndarray]:
    """Stage outputs and logits, (N, C, H, W) and (N, K), in the model's dtype."""
    model.eval()
    dtype = next(model.parameters()).dtype
    with torch.no_grad():
        xt = torch.from_numpy(x).to(dtype)
        outputs = {f"stage {i}": s.numpy() for i, s in enumerate(model.forward_stages(xt), 1)}
        outputs["logits"] = model(xt).numpy()
    return outputs


def keras_outputs(model, x: np.ndarray) -> dict[str, np.ndarray]:
    """Stage outputs and logits, transposed back to (N, C, H, W) for comparison."""
    xk = x.transpose(0, 2, 3, 1).astype(model.compute_dtype)  # (N, C, H, W) -> (N, H, W, C)
    stages = model.forward_stages(xk, training=False)
    outputs = {f"stage {i}": np.asarray(s).transpose(0, 3, 1, 2) for i, s in enumerate(stages, 1)}
    outputs["logits"] = np.asarray(model(xk, training=False))
    return outputs


def differences(reference: dict, other: dict) -> dict[str, Difference]:
    return {name: Difference.between(name, reference[name], other[name]) for name in reference}


def assert_float64_parity(torch_out: dict, keras_out: dict, rtol: float = RTOL_FLOAT64) -> None:
    for name, diff in differences(torch_out, keras_out).items():
        assert diff.max_rel <= rtol, (
            f"{name}: float64 PyTorch and Keras differ by {diff.max_rel:.3e} (relative), "
            f"{diff.max_abs:.3e} (absolute); allowed {rtol:.0e}"
        )


def assert_float32_parity(pt32: dict, tf32: dict, pt64: dict) -> dict:
    """The float32 gap between the frameworks is at most FLOAT32_GAP_FACTOR times PyTorch's own
    float32 rounding error (PyTorch float32 against PyTorch float64, which the float64 test
    ties to Keras). Keras' own float32 error is not used as the yardstick: a broken Keras
    weight would inflate it and excuse itself. Returns (gap, own error) per output."""
    numbers = {}
    for name in pt64:
        gap = Difference.between(name, pt32[name], tf32[name]).max_abs
        own = Difference.between(name, pt64[name], pt32[name]).max_abs
        assert gap <= FLOAT32_GAP_FACTOR * own, (
            f"{name}: float32 frameworks differ by {gap:.3e}, more than {FLOAT32_GAP_FACTOR} "
            f"times PyTorch's own float32 error {own:.3e}"
        )
        numbers[name] = (gap, own)
    return numbers


def random_torch_model(variant: str, seed: int = 0, **overrides) -> torch.nn.Module:
    """A PyTorch model whose every parameter matters (see converters.parity.randomize_).
    Built on the meta device first: its own initialisation would be overwritten anyway, and
    skipping it saves most of the build time of the large variants."""
    with torch.device("meta"):
        model = convnext_torch.create_model(variant, **overrides)
    return randomize_(model.to_empty(device="cpu"), seed=seed)


@contextlib.contextmanager
def without_random_init() -> Iterator[None]:
    """Build Keras models with zero kernels instead of truncated-normal ones: for models whose
    every weight is assigned right after (strictly, so none can stay zero unnoticed) or only
    counted. Drawing the random kernels is most of the build time of the large variants."""
    with mock.patch.object(convnext_tf.model, "trunc_normal", lambda std=0.02: "zeros"):
        yield


def converted_keras_model(torch_model: torch.nn.Module, variant: str, dtype: str, **overrides):
    """A fresh Keras model of `dtype` holding the PyTorch model's weights."""
    with without_random_init():
        keras_model = convnext_tf.create_model(variant, dtype=dtype, **overrides)
    torch_to_keras(torch_model.state_dict(), keras_model)
    return keras_model
