"""The parity checks can fail: one broken weight in an otherwise exact conversion is caught,
at the stage where it sits. And why the weights are randomised: with the default layer scale
of 1e-6 the same broken weight goes unseen."""

import numpy as np
import pytest

import convnext_tf
import convnext_torch
from converters import keras_variables, torch_to_keras
from convnext_spec.spec import ModelSpec
from tests.support.helpers import (
    ODD_SIZE,
    assert_float32_parity,
    assert_float64_parity,
    converted_keras_model,
    differences,
    images,
    keras_outputs,
    random_torch_model,
    torch_outputs,
)

VARIANT = "convnext_atto"  # for the demonstration on a real variant, below
# The broken-weight checks run on a narrow model with the same structure as atto's stages
# (stage 3 has a fourth block, stages.2.3): the subject is the check, not the width.
SPEC = ModelSpec(depths=(2, 2, 4, 2), dims=(16, 32, 48, 64), num_classes=10)


@pytest.fixture(scope="module")
def float64_model_pair():
    torch_model = random_torch_model(SPEC, seed=3).double()
    keras_model = converted_keras_model(torch_model, SPEC, "float64")
    x = images(*ODD_SIZE, seed=3)
    expected = torch_outputs(torch_model, x)
    assert_float64_parity(expected, keras_outputs(keras_model, x))  # intact
    return expected, keras_model, x


@pytest.fixture
def float64_pair(float64_model_pair):
    """The converted pair, each test's broken weight put back after it."""
    expected, keras_model, x = float64_model_pair
    saved = {key: v.numpy().copy() for key, v in keras_variables(keras_model).items()}
    yield expected, keras_model, x
    for key, variable in keras_variables(keras_model).items():
        variable.assign(saved[key])


def break_weight(keras_model, key: str, how) -> None:
    variable = keras_variables(keras_model)[key]
    variable.assign(how(variable.numpy()))


def perturb_one_value(value: np.ndarray) -> np.ndarray:
    value = value.copy()
    value.flat[value.size // 3] += 1e-3  # weights here are ~0.05-0.3
    return value


def swap_kh_kw(kernel: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(kernel.swapaxes(0, 1))  # (kh, kw, ...) -> (kw, kh, ...): same shape


@pytest.mark.parametrize(
    "key, how, first_stage",
    [
        ("stages.2.3.pwconv2.weight", perturb_one_value, "stage 3"),
        ("stages.1.0.dwconv.weight", swap_kh_kw, "stage 2"),
        ("downsample_layers.0.0.weight", swap_kh_kw, "stage 1"),
        ("downsample_layers.3.0.bias", perturb_one_value, "stage 4"),
        ("stages.0.1.gamma", perturb_one_value, "stage 1"),
        ("head.weight", perturb_one_value, "logits"),
    ],
)
def test_float64_parity_catches_one_broken_weight(float64_pair, key, how, first_stage):
    expected, keras_model, x = float64_pair
    assert_float64_parity(expected, keras_outputs(keras_model, x))  # intact before
    break_weight(keras_model, key, how)
    with pytest.raises(AssertionError, match=f"^{first_stage}: float64"):
        assert_float64_parity(expected, keras_outputs(keras_model, x))


def test_float32_parity_catches_one_broken_weight():
    torch_model = random_torch_model(SPEC, seed=4).double()
    x = images(*ODD_SIZE, seed=4)
    pt64 = torch_outputs(torch_model, x)
    torch_model.float()
    keras_model = converted_keras_model(torch_model, SPEC, "float32")
    pt32 = torch_outputs(torch_model, x)
    assert_float32_parity(pt32, keras_outputs(keras_model, x), pt64)  # intact

    break_weight(keras_model, "stages.2.3.pwconv2.weight", perturb_one_value)
    with pytest.raises(AssertionError, match="^stage 3: float32"):
        assert_float32_parity(pt32, keras_outputs(keras_model, x), pt64)


def test_default_init_hides_a_broken_block_which_is_why_weights_are_randomised():
    x = images(*ODD_SIZE, seed=5).astype(np.float32)
    broken_block = "stages.2.3.pwconv2.weight"

    def logits_gap(torch_model) -> float:
        keras_model = convnext_tf.create_model(VARIANT)
        torch_to_keras(torch_model.state_dict(), keras_model)
        break_weight(keras_model, broken_block, lambda w: -3 * w)  # the block is plainly wrong
        diff = differences(torch_outputs(torch_model, x), keras_outputs(keras_model, x))
        return diff["logits"].max_rel

    fresh = convnext_torch.create_model(VARIANT)  # layer scale 1e-6: blocks add ~nothing
    assert logits_gap(fresh) < 1e-5  # a float32 "parity" check would pass
    assert logits_gap(random_torch_model(VARIANT, seed=5)) > 1e-2  # randomised: plainly caught
