"""Training parity: from the same weights and the same batch, one training step of
convnext_torch.train and of convnext_tf.train gives the same loss, the same gradient for every
parameter (matched through the converter's name table) and the same updated weights, for SGD
with momentum and for AdamW with the official recipe's weight decay exclusions.

Every weight is randomised (with ConvNeXt's own initialisation, layer scale 1e-6 hides most of
the network from the gradients), images are 61x67 (no multiple of 32), batch 4. Drop path is
off (drop_path_rate 0, the default): its masks are drawn by each framework's own generator, so
no two steps could agree with it on (test_drop_path_on_breaks_step_parity shows it).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import convnext_tf.train as keras_train
import convnext_torch.train as torch_train
from converters.weights.convert import keras_to_torch, keras_variables
from convnext_spec.recipe import OptimizerSettings, decays
from convnext_spec.spec import ModelSpec
from tests.support.helpers import converted_keras_model, random_torch_model

SPEC = ModelSpec(depths=(1, 1, 2, 1), dims=(8, 16, 24, 32), num_classes=5)
V2_SPEC = ModelSpec(depths=(1, 1, 2, 1), dims=(8, 16, 24, 32), num_classes=5, use_grn=True)
# In float64, every hyperparameter is a value float32 holds exactly: Keras keeps its learning
# rate in a float32 variable, and casts momentum and betas to the variable's dtype through a
# float32 tensor (0.9 -> 0.89999998, 2.6e-8 relative); PyTorch uses the Python floats as they
# are. Adam's epsilon is negligible (convnext_spec.recipe says why it must be).
OPTIMIZERS = {
    "sgd": OptimizerSettings("sgd", learning_rate=2**-7, momentum=0.875),
    "adamw": OptimizerSettings(
        "adamw",
        learning_rate=2**-10,
        weight_decay=2**-4,
        beta_1=0.875,
        beta_2=1 - 2**-10,
        epsilon=1e-30,
    ),
}
STEPS = 3  # momentum and Adam's moments only matter from the second step


def batch(dtype, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((4, 3, 61, 67)).astype(dtype)
    return images, rng.integers(0, SPEC.num_classes, 4)


def relative(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def twins(spec: ModelSpec, dtype: str, seed: int = 1, **overrides):
    torch_model = random_torch_model(spec, seed=seed, **overrides)
    torch_model = torch_model.double() if dtype == "float64" else torch_model.float()
    keras_model = converted_keras_model(torch_model, spec, dtype, **overrides)
    return torch_model, keras_model


def run_steps(spec: ModelSpec, dtype: str, settings: OptimizerSettings, steps: int = STEPS):
    """Both frameworks from the same weights through `steps` steps on the same batches:
    (loss pairs, gradient differences before the first step, weight differences after)."""
    torch_model, keras_model = twins(spec, dtype)
    torch_optimizer = torch_train.create_optimizer(torch_model, settings)
    keras_optimizer = keras_train.create_optimizer(keras_model, settings)
    images, labels = batch(dtype)
    x_torch, y_torch = torch.from_numpy(images), torch.from_numpy(labels)
    x_keras = images.transpose(0, 2, 3, 1)

    torch_grads = torch_train.gradients(torch_model, x_torch, y_torch)
    keras_grads = keras_train.gradients(keras_model, x_keras, labels)
    by_path = {v.path: name for name, v in keras_variables(keras_model).items()}
    converted = keras_to_torch_gradients(
        keras_model, {by_path[p]: g for p, g in keras_grads.items()}
    )
    grad_differences = {name: relative(converted[name], g) for name, g in torch_grads.items()}

    losses = []
    for step in range(steps):
        images, labels = batch(dtype, seed=step)
        losses.append(
            (
                torch_train.train_step(
                    torch_model, torch_optimizer, torch.from_numpy(images), torch.from_numpy(labels)
                ),
                keras_train.train_step(
                    keras_model, keras_optimizer, images.transpose(0, 2, 3, 1), labels
                ),
            )
        )
    after = keras_to_torch(keras_model)
    weight_differences = {
        name: relative(after[name].numpy(), p.detach().numpy())
        for name, p in torch_model.state_dict().items()
    }
    return losses, grad_differences, weight_differences


def keras_to_torch_gradients(keras_model, grads: dict) -> dict[str, np.ndarray]:
    """Keras gradients keyed by PyTorch name, in PyTorch's layout: the converter's own
    transposes, applied by writing them into a copy of the model's variables."""
    variables = keras_variables(keras_model)
    saved = {name: v.numpy() for name, v in variables.items()}
    try:
        for name, g in grads.items():
            variables[name].assign(np.asarray(g))
        return {name: t.numpy() for name, t in keras_to_torch(keras_model).items()}
    finally:
        for name, value in saved.items():
            variables[name].assign(value)


@pytest.mark.parametrize(
    "optimizer, spec",
    [
        pytest.param("sgd", SPEC, id="sgd-v1"),
        pytest.param("adamw", V2_SPEC, id="adamw-v2"),
        pytest.param("adamw", SPEC, id="adamw-v1", marks=pytest.mark.exhaustive),
        pytest.param("sgd", V2_SPEC, id="sgd-v2", marks=pytest.mark.exhaustive),
    ],
)
def test_float64_training_steps_agree_to_1e10(spec, optimizer):
    """Measured: losses within 3e-16, gradients 4e-15, weights after three steps 4e-16."""
    losses, grads, weights = run_steps(spec, "float64", OPTIMIZERS[optimizer])
    for torch_loss, keras_loss in losses:
        assert abs(torch_loss - keras_loss) <= 1e-10 * abs(torch_loss)
    assert max(grads.values()) <= 1e-10, max(grads, key=grads.get)
    assert max(weights.values()) <= 1e-10, max(weights, key=weights.get)


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_float32_training_steps_agree_to_the_noise_floor(optimizer):
    """float32: the frameworks' rounding differs (order of sums, oneDNN kernels), the float32
    noise floor: measured 1.4e-7 for losses, 1.8e-6 for gradients (relative to each tensor's
    largest value) and 1.8e-7 for weights after three steps; bounded at 1e-5, 1e-4, 1e-5."""
    losses, grads, weights = run_steps(SPEC, "float32", OPTIMIZERS[optimizer])
    for torch_loss, keras_loss in losses:
        assert abs(torch_loss - keras_loss) <= 1e-5 * abs(torch_loss)
    assert max(grads.values()) <= 1e-4, max(grads, key=grads.get)
    assert max(weights.values()) <= 1e-5, max(weights, key=weights.get)


def test_a_broken_optimizer_setting_is_seen():
    """The check can fail: Keras' own default epsilon (1e-7, where the parity setting is
    1e-12) moves the AdamW weights far beyond 1e-10."""
    settings = OPTIMIZERS["adamw"]
    torch_model, keras_model = twins(SPEC, "float64")
    torch_optimizer = torch_train.create_optimizer(torch_model, settings)
    keras_optimizer = keras_train.create_optimizer(
        keras_model, dataclasses.replace(settings, epsilon=1e-7)
    )
    images, labels = batch("float64")
    torch_train.train_step(
        torch_model, torch_optimizer, torch.from_numpy(images), torch.from_numpy(labels)
    )
    keras_train.train_step(keras_model, keras_optimizer, images.transpose(0, 2, 3, 1), labels)
    after = keras_to_torch(keras_model)
    worst = max(
        relative(after[name].numpy(), p.detach().numpy())
        for name, p in torch_model.state_dict().items()
    )
    assert worst > 1e-8


def test_drop_path_on_breaks_step_parity():
    """Why drop path is off: each framework draws its own masks, so with drop_path_rate > 0
    the same step gives different losses."""
    torch_model = random_torch_model(SPEC, seed=1, drop_path_rate=0.5).double()
    keras_model = converted_keras_model(torch_model, SPEC, "float64", drop_path_rate=0.5)
    images, labels = batch("float64")
    torch.manual_seed(0)
    torch_loss = torch_train.loss_of(
        torch_model, torch.from_numpy(images), torch.from_numpy(labels)
    )
    keras_loss = keras_train.loss_of(keras_model, images.transpose(0, 2, 3, 1), labels)
    assert abs(torch_loss.item() - float(keras_loss)) > 1e-6


def test_weight_decay_follows_the_official_recipe():
    """Kernels decay; norms, biases, layer scale and GRN's gamma/beta do not, in both."""
    torch_model, keras_model = twins(V2_SPEC, "float32")
    torch_decayed = {n for n, p in torch_model.named_parameters() if decays(n, p.ndim)}
    keras_decayed = {
        name for name, v in keras_variables(keras_model).items() if decays(v.path, len(v.shape))
    }
    assert torch_decayed == keras_decayed
    assert all(n.endswith("weight") for n in torch_decayed)
    assert "stages.0.0.pwconv1.weight" in torch_decayed
    assert not any(n.endswith(("gamma", "beta", "bias", "norm.weight")) for n in torch_decayed)
