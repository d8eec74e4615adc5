"""Shared by the tests: model specs, inputs, forward passes in both frameworks (and one
adapter per framework for the tests written once for both), tolerances."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from unittest import mock

import keras
import numpy as np
import torch

import convnext_tf
import convnext_torch
from converters.names import layouts
from converters.names.mapping import to_torch
from converters.weights.convert import keras_variables, torch_to_keras
from convnext_spec.spec import ModelSpec, variant_names
from tests.support.parity import Difference, differences, keras_outputs, randomize_, torch_outputs

# Parameter counts with 1000 classes: the paper's Table 11 for tiny..xlarge, timm's (1.0.31,
# counted with `sum(p.numel() for p in timm.create_model(name).parameters())`) for the others.
PARAMETERS = {
    "convnext_zepto_rms": 2_155_656,
    "convnext_zepto_rms_ols": 2_164_232,
    "convnext_atto": 3_695_520,
    "convnext_atto_ols": 3_702_912,
    "convnext_atto_rms": 3_693_040,
    "convnext_femto": 5_217_784,
    "convnext_femto_ols": 5_226_520,
    "convnext_pico": 9_045_672,
    "convnext_pico_ols": 9_061_928,
    "convnext_nano": 15_593_560,
    "convnext_nano_ols": 15_649_560,
    "convnext_tiny": 28_589_128,
    "convnext_tiny_hnf": 28_589_128,
    "convnext_small": 50_223_688,
    "convnext_base": 88_591_464,
    "convnext_large": 197_767_336,
    "convnext_large_mlp": 200_128_168,
    "convnext_xlarge": 350_196_968,
    "convnext_xxlarge": 846_471_016,
    # ConvNeXt V2 paper, Table 1/8: 3.7M, 5.2M, 9.1M, 15.6M, 28.6M, 89M, 198M, 660M
    "convnextv2_atto": 3_708_400,
    "convnextv2_femto": 5_233_240,
    "convnextv2_pico": 9_066_280,
    "convnextv2_nano": 15_623_800,
    "convnextv2_tiny": 28_635_496,
    "convnextv2_base": 88_717_800,
    "convnextv2_large": 197_956_840,
    "convnextv2_huge": 660_289_640,
    # isotropic, the paper's Table 3 (22M, 87M, 306M); large with layer scale
    "convnext_isotropic_small": 22_308_712,
    "convnext_isotropic_base": 87_083_752,
    "convnext_isotropic_large": 305_942_504,
}
ALL_VARIANTS = variant_names()

# The structural cases, each on a spec small enough to build in milliseconds: every code path
# of the three model classes (layer scale on and off, GRN, no head, other input channels,
# backbone outputs, the isotropic stem), checked by the default tier. `make test-all` runs the
# same checks on every named variant.
TINY_SPECS: dict[str, ModelSpec] = {
    "v1": ModelSpec(depths=(1, 1, 2, 1), dims=(8, 16, 24, 32), num_classes=5),
    "v1_no_layer_scale": ModelSpec(
        depths=(2, 1, 1, 1), dims=(8, 16, 24, 32), num_classes=5, layer_scale_init_value=0.0
    ),
    "v1_no_head_1_channel": ModelSpec(
        depths=(1, 1, 1, 2), dims=(8, 12, 16, 24), num_classes=0, in_chans=1
    ),
    "v2": ModelSpec(
        depths=(1, 2, 1, 1),
        dims=(8, 16, 24, 32),
        num_classes=5,
        use_grn=True,
        layer_scale_init_value=0.0,
    ),
    "v2_with_layer_scale": ModelSpec(
        depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), num_classes=3, use_grn=True
    ),
    "backbone": ModelSpec(
        kind="backbone", depths=(1, 1, 2, 1), dims=(8, 16, 24, 32), num_classes=0,
        out_indices=(0, 2, 3),
    ),
    "v2_backbone": ModelSpec(
        kind="backbone", depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), num_classes=0,
        use_grn=True, layer_scale_init_value=0.0, out_indices=(1, 3),
    ),
    # timm's originals: every norm, stem and head form (convnext_spec.spec.VARIANT_OPTIONS)
    "timm_rmsnorm_tiered_stem_norm_first": ModelSpec(
        depths=(1, 1, 2, 1), dims=(16, 16, 24, 32), num_classes=5, norm="rmsnorm",
        stem="overlap_tiered", head="norm_first",
    ),
    "timm_simplenorm_act_stem_mlp_head": ModelSpec(
        depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), num_classes=5, norm="simplenorm",
        stem="overlap_act", head="mlp", head_hidden_size=12, norm_eps=1e-5,
    ),
    "timm_overlap_stem_no_head_bias": ModelSpec(
        depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), num_classes=6, stem="overlap",
        head_bias=False,
    ),
    "timm_backbone": ModelSpec(
        kind="backbone", depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), num_classes=0,
        out_indices=(0, 3), norm="simplenorm", stem="overlap_act",
    ),
    "isotropic": ModelSpec(
        kind="isotropic", depths=(2,), dims=(24,), num_classes=5, layer_scale_init_value=0.0
    ),
    "isotropic_with_layer_scale": ModelSpec(
        kind="isotropic", depths=(3,), dims=(16,), num_classes=4
    ),
}  # fmt: skip

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


def assert_same_logits(torch_model: torch.nn.Module, keras_model) -> None:
    """float32 logits within 1e-4 on two 61x127 images: for tests of files and commands,
    whose subject is that the right weights arrived (parity itself: test_parity.py)."""
    x = np.random.default_rng(1).standard_normal((2, 3, 61, 127)).astype(np.float32)
    np.testing.assert_allclose(
        keras_outputs(keras_model, x)["logits"],
        torch_outputs(torch_model, x)["logits"],
        rtol=1e-4,
        atol=1e-4,
    )


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


def random_torch_model(variant: str | ModelSpec, seed: int = 0, **overrides) -> torch.nn.Module:
    """A PyTorch model whose every parameter matters (see tests.support.parity.randomize_).
    Built on the meta device first: its own initialisation would be overwritten anyway, and
    skipping it saves most of the build time of the large variants."""
    with torch.device("meta"):
        model = convnext_torch.create_model(variant, **overrides)
    return randomize_(model.to_empty(device="cpu"), seed=seed)


def write_layout(
    official: dict[str, np.ndarray], layout: str, conv_mlp: bool = False
) -> dict[str, np.ndarray]:
    """An official state_dict renamed into `layout`; `conv_mlp` writes timm's 1x1-conv MLP
    weights, as timm has them for atto..nano (the spec of any of those asks for that form)."""
    spec = ModelSpec(depths=(2, 2, 6, 2), dims=(40, 80, 160, 320)) if conv_mlp else None
    tensors, _ = layouts.from_official(official, layout, spec)
    return tensors


@contextlib.contextmanager
def keras_shapes_only() -> Iterator[None]:
    """Build Keras models whose variables have shapes and no values: nothing is allocated, so
    every named variant (660M parameters for V2 huge) costs only its layers. A StatelessScope
    that does not initialise on exit; the deferred variables are then dropped from Keras'
    global list, which the next scope would otherwise initialise."""
    from keras.src.backend.common import global_state

    try:
        with keras.StatelessScope(initialize_variables=False):
            yield
    finally:
        global_state.set_global_attribute("uninitialized_variables", [])


@contextlib.contextmanager
def without_random_init() -> Iterator[None]:
    """Build Keras models with zero kernels instead of truncated-normal ones: for models whose
    every weight is assigned right after (strictly, so none can stay zero unnoticed) or only
    counted. Drawing the random kernels is most of the build time of the large variants."""
    with mock.patch.object(convnext_tf.model, "trunc_normal", lambda std=0.02: "zeros"):
        yield


def converted_keras_model(
    torch_model: torch.nn.Module, variant: str | ModelSpec, dtype: str, **overrides
):
    """A fresh Keras model of `dtype` holding the PyTorch model's weights."""
    with without_random_init():
        keras_model = convnext_tf.create_model(variant, dtype=dtype, **overrides)
    torch_to_keras(torch_model.state_dict(), keras_model)
    return keras_model


# --- one adapter per framework, for the tests written once for both --------------------------


def blocks_of(model) -> list:
    """The Block objects of a model, in order (ConvNeXt's stages, or the isotropic blocks)."""
    stages = model.stages if hasattr(model, "stages") else [model.blocks]
    return [block for stage in stages for block in getattr(stage, "layers", stage)]


def torch_weights(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {key: value.detach().numpy() for key, value in model.state_dict().items()}


def keras_weights(model) -> dict[str, np.ndarray]:
    """The Keras weights by PyTorch name, in PyTorch's axis order."""
    return {
        key: to_torch(key, keras.ops.convert_to_numpy(variable))
        for key, variable in keras_variables(model).items()
    }


def sum_of_squares(outputs, mean=lambda o: o.mean()) -> object:
    """A loss that every output and every parameter reaches, and that the axis order of the
    outputs does not change: the sum of each output's mean square."""
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    return sum(mean(o**2) for o in outputs)


def torch_gradients(model: torch.nn.Module, x: np.ndarray) -> dict[str, np.ndarray]:
    model.train()  # no drop path at rate 0: the same function as eval
    model.zero_grad()
    dtype = next(model.parameters()).dtype
    sum_of_squares(model(torch.from_numpy(x).to(dtype))).backward()
    return {
        key: (p.grad.numpy() if p.grad is not None else np.full(p.shape, np.nan))
        for key, p in model.named_parameters()
    }


def keras_gradients(model, x: np.ndarray) -> dict[str, np.ndarray]:
    import tensorflow as tf

    variables = keras_variables(model)
    xk = tf.constant(x.transpose(0, 2, 3, 1).astype(model.compute_dtype))  # NCHW -> NHWC
    with tf.GradientTape() as tape:
        loss = sum_of_squares(model(xk, training=True), mean=keras.ops.mean)
    grads = tape.gradient(loss, list(variables.values()))
    return {
        key: (to_torch(key, g.numpy()) if g is not None else np.full(v.shape, np.nan))
        for (key, v), g in zip(variables.items(), grads, strict=True)
    }


def torch_forward(model: torch.nn.Module, x: np.ndarray, training: bool = False) -> np.ndarray:
    """The model's output on NCHW `x`: logits (or pooled features), or a backbone's last map."""
    model.train(training)
    dtype = next(model.parameters()).dtype
    with torch.no_grad():
        y = model(torch.from_numpy(x).to(dtype))
    return (y[-1] if isinstance(y, list) else y).numpy()


def keras_forward(model, x: np.ndarray, training: bool = False) -> np.ndarray:
    y = model(x.transpose(0, 2, 3, 1).astype(model.compute_dtype), training=training)
    if isinstance(y, list):
        return np.asarray(y[-1]).transpose(0, 3, 1, 2)  # NHWC -> NCHW
    return np.asarray(y)


def torch_drop_path(rate: float) -> Callable[[np.ndarray, bool], np.ndarray]:
    layer = convnext_torch.DropPath(rate)

    def apply(x: np.ndarray, training: bool) -> np.ndarray:
        layer.train(training)
        return layer(torch.from_numpy(x)).numpy()

    return apply


def keras_drop_path(rate: float) -> Callable[[np.ndarray, bool], np.ndarray]:
    layer = convnext_tf.DropPath(rate)
    return lambda x, training: np.asarray(layer(x, training=training))


@dataclass(frozen=True)
class Framework:
    """What a test written once for both frameworks needs of each. Arrays go in and come out
    in PyTorch's layout (NCHW images, PyTorch-shaped weights under PyTorch names)."""

    name: str
    package: object  # convnext_torch or convnext_tf: create_model, Block, GRN, ...
    weights: Callable[[object], dict[str, np.ndarray]]
    forward: Callable[..., np.ndarray]  # (model, x, training=False)
    outputs: Callable[[object, np.ndarray], dict[str, np.ndarray]]  # stages and logits
    gradients: Callable[[object, np.ndarray], dict[str, np.ndarray]]
    drop_path: Callable[[float], Callable[[np.ndarray, bool], np.ndarray]]

    def create_model(self, name_or_spec, **overrides):
        return self.package.create_model(name_or_spec, **overrides)

    def __repr__(self) -> str:  # the test id
        return self.name


TORCH = Framework(
    "torch",
    convnext_torch,
    torch_weights,
    torch_forward,
    torch_outputs,
    torch_gradients,
    torch_drop_path,
)
KERAS = Framework(
    "keras",
    convnext_tf,
    keras_weights,
    keras_forward,
    keras_outputs,
    keras_gradients,
    keras_drop_path,
)
FRAMEWORKS = [TORCH, KERAS]


# --- the command line --------------------------------------------------------------------


def run(capsys, *argv) -> tuple[int, str, str]:
    """`convnext ARGV...` in this process: exit status, stdout, stderr."""
    from converters.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *fragments: str, status: int = 1) -> None:
    """One line on stderr naming the problem, and the exit status: 1 for a bad file, 2 for
    input that `convnext verify` cannot use."""
    assert code == status
    last = err.strip().splitlines()[-1]
    assert last.startswith("convnext: error: ")
    for fragment in fragments:
        assert fragment in last, (fragment, last)


class Exploit:
    """A pickle payload that would run a shell command when unpickled, if anything did."""

    def __reduce__(self):
        import os

        return (os.system, ("touch EXPLOITED",))
