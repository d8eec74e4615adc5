"""PyTorch and Keras give the same stage outputs and logits from the same converted weights.

Every parameter is randomised first (layer scale and LayerNorm affine included), inputs are
random, batched and of sizes that leave remainders at the stem and every downsample. float64
must agree to ~1e-12; float32 within a small multiple of each framework's own float32 error.
test_sensitivity.py shows these checks fail on one broken weight.

Tiers: by default every structural case on a tiny spec, and the real variants that cover every
code path at their real widths (atto, V2 atto); `make test-all` adds every named variant (the
exhaustive marker).
"""

import numpy as np
import pytest

from convnext_spec.spec import ModelSpec
from tests.support.helpers import (
    ALL_VARIANTS,
    ODD_SIZE,
    TINY_SPECS,
    assert_float32_parity,
    assert_float64_parity,
    converted_keras_model,
    images,
    keras_outputs,
    random_torch_model,
    torch_outputs,
)

DEFAULT_TIER = ["convnext_atto", "convnextv2_atto"]  # the isotropic path: its tiny specs
SMALL = ["convnext_atto", "convnext_tiny", "convnextv2_atto"]  # also at 224x224


def check_parity(variant: str | ModelSpec, height: int, width: int, seed: int) -> None:
    x = images(height, width, seed=seed)
    if isinstance(variant, ModelSpec) and variant.in_chans != 3:
        x = x[:, : variant.in_chans]
    torch_model = random_torch_model(variant, seed=seed).double()
    pt64 = torch_outputs(torch_model, x)
    tf64 = keras_outputs(converted_keras_model(torch_model, variant, "float64"), x)
    assert_float64_parity(pt64, tf64)

    torch_model.float()
    pt32 = torch_outputs(torch_model, x)
    tf32 = keras_outputs(converted_keras_model(torch_model, variant, "float32"), x)
    assert_float32_parity(pt32, tf32, pt64)

    # the randomised model is not degenerate: finite, and the images get different outputs
    last = pt64["logits"] if "logits" in pt64 else list(pt64.values())[-1]
    assert np.isfinite(last).all()
    assert np.abs(last[0] - last[1]).max() > 0.1 * np.abs(last).max()


@pytest.mark.parametrize("case", list(TINY_SPECS))
def test_parity_of_every_structure_on_a_tiny_spec(case):
    check_parity(TINY_SPECS[case], *ODD_SIZE, seed=1)


@pytest.mark.parametrize("variant", DEFAULT_TIER)
def test_parity_odd_size(variant):
    check_parity(variant, *ODD_SIZE, seed=1)


@pytest.mark.exhaustive
@pytest.mark.parametrize("variant", [v for v in ALL_VARIANTS if v not in DEFAULT_TIER])
def test_parity_odd_size_every_variant(variant):
    check_parity(variant, *ODD_SIZE, seed=1)


@pytest.mark.exhaustive
@pytest.mark.parametrize("variant", SMALL)
def test_parity_224(variant):
    check_parity(variant, 224, 224, seed=2)
