"""Both models against an independent numpy forward pass (tests/reference.py): anchors the
architecture itself, which cross-framework parity cannot (a mistake in both would cancel)."""

import numpy as np
import pytest
import torch

import convnext_tf
import convnext_torch
from tests import reference
from tests.helpers import (
    ODD_SIZE,
    assert_float64_parity,
    converted_keras_model,
    images,
    keras_outputs,
    random_torch_model,
    torch_outputs,
)


@pytest.mark.parametrize(
    "variant, overrides",
    [
        ("convnext_atto", {}),
        ("convnext_atto", {"layer_scale_init_value": 0.0, "num_classes": 7}),
        ("convnext_tiny", {}),
        ("convnextv2_atto", {}),
        ("convnextv2_atto", {"layer_scale_init_value": 0.5}),  # GRN and layer scale together
        ("convnext_isotropic_small", {}),
        ("convnext_isotropic_small", {"layer_scale_init_value": 0.5}),
    ],
)
def test_both_frameworks_match_the_numpy_reference(variant, overrides):
    torch_model = random_torch_model(variant, seed=21, **overrides).double()
    x = images(*ODD_SIZE, seed=21)
    state = {k: v.numpy() for k, v in torch_model.state_dict().items()}
    expected = reference.forward(state, x)
    assert_float64_parity(expected, torch_outputs(torch_model, x))
    keras_model = converted_keras_model(torch_model, variant, "float64", **overrides)
    assert_float64_parity(expected, keras_outputs(keras_model, x))


def test_reference_catches_a_shared_mistake():
    """The check above fails for a mistake both frameworks would share: here the final
    LayerNorm applied before pooling instead of after."""
    torch_model = random_torch_model("convnext_atto", seed=22).double()
    x = images(*ODD_SIZE, seed=22)
    state = {k: v.numpy() for k, v in torch_model.state_dict().items()}
    outputs = torch_outputs(torch_model, x)
    with torch.no_grad():
        last = torch.from_numpy(outputs["stage 4"])
        normed = torch_model.norm(last.permute(0, 2, 3, 1)).mean((1, 2))  # norm, then pool
        outputs["logits"] = torch_model.head(normed).numpy()
    with pytest.raises(AssertionError, match="^logits"):
        assert_float64_parity(reference.forward(state, x), outputs)


def test_drop_path_schedule_is_linear_in_both_frameworks():
    depths, rate = convnext_torch.VARIANTS["convnext_tiny"][0], 0.4
    expected = torch.linspace(0, rate, sum(depths)).tolist()  # the official schedule
    torch_model = convnext_torch.create_model("convnext_tiny", drop_path_rate=rate)
    keras_model = convnext_tf.create_model("convnext_tiny", drop_path_rate=rate)
    torch_rates = [
        getattr(block.drop_path, "drop_prob", 0.0)
        for stage in torch_model.stages
        for block in stage
    ]
    keras_rates = [block.drop_path_rate for stage in keras_model.stages for block in stage.layers]
    keras_layers = [
        getattr(block.drop_path, "drop_prob", 0.0)
        for stage in keras_model.stages
        for block in stage.layers
    ]
    np.testing.assert_allclose(torch_rates, expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(keras_rates, expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(keras_layers, expected, rtol=1e-6, atol=1e-7)
