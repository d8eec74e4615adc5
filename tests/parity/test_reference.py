"""Both models against an independent numpy forward pass (tests/support/reference.py): anchors the
architecture itself, which cross-framework parity cannot (a mistake in both would cancel)."""

import pytest
import torch

from convnext_spec.spec import resolve
from tests.support import reference
from tests.support.helpers import (
    ODD_SIZE,
    TINY_SPECS,
    assert_float64_parity,
    converted_keras_model,
    images,
    keras_outputs,
    random_torch_model,
    torch_outputs,
)

CASES = {case: spec for case, spec in TINY_SPECS.items() if spec.kind != "backbone"}  # see
# test_backbone.py for the backbones against the reference


def check_against_reference(spec) -> None:
    torch_model = random_torch_model(spec, seed=21).double()
    x = images(*ODD_SIZE, seed=21)
    if not isinstance(spec, str):
        x = x[:, : spec.in_chans]
    state = {k: v.numpy() for k, v in torch_model.state_dict().items()}
    spec = resolve(spec)
    expected = reference.forward(state, x, spec.norm, spec.norm_eps)
    assert_float64_parity(expected, torch_outputs(torch_model, x))
    keras_model = converted_keras_model(torch_model, spec, "float64")
    assert_float64_parity(expected, keras_outputs(keras_model, x))


@pytest.mark.parametrize("case", list(CASES))
def test_both_frameworks_match_the_numpy_reference(case):
    check_against_reference(CASES[case])


@pytest.mark.exhaustive
@pytest.mark.parametrize(
    "variant",
    [
        "convnext_atto",
        "convnextv2_atto",
        "convnext_isotropic_small",
        "convnext_zepto_rms_ols",
        "convnext_atto_rms",
        "convnext_pico_ols",
    ],
)
def test_real_variants_match_the_numpy_reference(variant):
    check_against_reference(variant)


def test_reference_catches_a_shared_mistake():
    """The check above fails for a mistake both frameworks would share: here the final
    LayerNorm applied before pooling instead of after."""
    torch_model = random_torch_model(TINY_SPECS["v1"], seed=22).double()
    x = images(*ODD_SIZE, seed=22)
    state = {k: v.numpy() for k, v in torch_model.state_dict().items()}
    outputs = torch_outputs(torch_model, x)
    with torch.no_grad():
        last = torch.from_numpy(outputs["stage 4"])
        normed = torch_model.norm(last.permute(0, 2, 3, 1)).mean((1, 2))  # norm, then pool
        outputs["logits"] = torch_model.head(normed).numpy()
    with pytest.raises(AssertionError, match="^logits"):
        assert_float64_parity(reference.forward(state, x), outputs)
