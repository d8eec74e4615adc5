"""PyTorch and Keras give the same stage outputs and logits from the same converted weights.

Every parameter is randomised first (layer scale and LayerNorm affine included), inputs are
random, batched and of sizes that leave remainders at the stem and every downsample. float64
must agree to ~1e-12; float32 within a small multiple of each framework's own float32 error.
test_sensitivity.py shows these checks fail on one broken weight.
"""

import numpy as np
import pytest

from tests.helpers import (
    ODD_SIZE,
    assert_float32_parity,
    assert_float64_parity,
    converted_keras_model,
    images,
    keras_outputs,
    random_torch_model,
    torch_outputs,
)
from tests.test_torch_model import ALL_VARIANTS

SMALL = ["convnext_atto", "convnext_tiny", "convnextv2_atto"]  # also at 224x224


def check_parity(variant: str, height: int, width: int, seed: int) -> None:
    x = images(height, width, seed=seed)
    torch_model = random_torch_model(variant, seed=seed).double()
    pt64 = torch_outputs(torch_model, x)
    tf64 = keras_outputs(converted_keras_model(torch_model, variant, "float64"), x)
    assert_float64_parity(pt64, tf64)

    torch_model.float()
    pt32 = torch_outputs(torch_model, x)
    tf32 = keras_outputs(converted_keras_model(torch_model, variant, "float32"), x)
    assert_float32_parity(pt32, tf32, pt64)

    # the randomised model is not degenerate: finite, and the images get different logits
    logits = pt64["logits"]
    assert np.isfinite(logits).all()
    assert np.abs(logits[0] - logits[1]).max() > 0.1 * np.abs(logits).max()


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_parity_odd_size(variant):
    check_parity(variant, *ODD_SIZE, seed=1)


@pytest.mark.parametrize("variant", SMALL)
def test_parity_224(variant):
    check_parity(variant, 224, 224, seed=2)
