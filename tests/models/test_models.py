"""Both model packages, by tests written once over a small framework adapter
(tests/support/helpers.py): shapes at odd sizes, layer scale and head init, drop path, GRN, the
isotropic form, and a gradient for every parameter. Framework-only checks live in
test_torch_model.py and test_tf_model.py."""

import numpy as np
import pytest

from convnext_spec.spec import ModelSpec
from tests.support.helpers import (
    FRAMEWORKS,
    KERAS,
    ODD_SIZE,
    TINY_SPECS,
    TORCH,
    blocks_of,
    converted_keras_model,
    images,
    random_torch_model,
)

pytestmark = pytest.mark.parametrize("fw", FRAMEWORKS, ids=repr)


def test_odd_sizes_floor_like_the_official_model(fw):
    model = fw.create_model(TINY_SPECS["v1"])
    stages = fw.outputs(model, images(*ODD_SIZE))
    # 61 -> 15 -> 7 -> 3 -> 1 and 127 -> 31 -> 15 -> 7 -> 3: floored at every step
    assert [stages[f"stage {i}"].shape for i in range(1, 5)] == [
        (2, 8, 15, 31),
        (2, 16, 7, 15),
        (2, 24, 3, 7),
        (2, 32, 1, 3),
    ]
    assert stages["logits"].shape == (2, 5)


def test_isotropic_stem_and_layer_scale_defaults(fw):
    model = fw.create_model("convnext_isotropic_small", num_classes=3)
    (stage,) = [v for k, v in fw.outputs(model, images(*ODD_SIZE)).items() if k != "logits"]
    assert stage.shape == (2, 384, 3, 7)  # 16x16 / 16, floored
    assert blocks_of(model)[0].gamma is None  # the released small and base have no layer scale
    weights = fw.weights(model)
    assert list(weights)[:2] == ["stem.weight", "stem.bias"] and "blocks.17.pwconv2.bias" in weights
    with_scale = fw.weights(fw.create_model(TINY_SPECS["isotropic_with_layer_scale"]))
    assert with_scale["blocks.2.gamma"].shape == (16,)


def test_layer_scale_init_and_head_init_scale(fw):
    model = fw.create_model("convnext_atto", layer_scale_init_value=0.5, head_init_scale=0.1)
    weights = fw.weights(model)
    gammas = [v for k, v in weights.items() if k.endswith(".gamma")]
    assert len(gammas) == 12 and all(np.all(g == 0.5) for g in gammas)
    # std 0.02 (not the seed's 0.2); Keras' TruncatedNormal cuts at 2 std, so ~0.88 of it
    assert 0.015 < weights["stages.2.0.pwconv1.weight"].std() < 0.021
    assert 0.0015 < weights["head.weight"].std() < 0.0021  # times head_init_scale
    assert np.all(weights["head.bias"] == 0)


def test_layer_scale_zero_means_no_gamma(fw):
    model = fw.create_model("convnext_atto", layer_scale_init_value=0)
    assert blocks_of(model)[0].gamma is None
    assert not any(k.endswith("gamma") for k in fw.weights(model))


def test_v2_blocks_have_grn_and_no_layer_scale(fw):
    model = fw.create_model("convnextv2_atto")
    block = blocks_of(model)[2]  # stage 1, block 0
    assert isinstance(block.grn, fw.package.GRN) and block.gamma is None
    weights = fw.weights(model)
    assert weights["stages.1.0.grn.gamma"].shape == (1, 1, 1, 4 * 80)
    assert np.all(weights["stages.1.0.grn.gamma"] == 0) and np.all(
        weights["stages.1.0.grn.beta"] == 0
    )
    assert not isinstance(blocks_of(fw.create_model("convnext_atto"))[2].grn, fw.package.GRN)


def test_drop_path_drops_whole_samples_in_training_only(fw):
    x = np.random.default_rng(0).standard_normal((64, 4, 2, 2)).astype("float32")
    drop = fw.drop_path(0.5)
    np.testing.assert_array_equal(drop(x, False), x)
    y = drop(x, True)
    dropped = (y.reshape(64, -1) == 0).all(1)
    assert 0 < dropped.sum() < 64  # whole samples dropped, not all
    np.testing.assert_allclose(y[~dropped], x[~dropped] / 0.5, rtol=1e-6)


def test_drop_path_schedule_is_linear_from_zero(fw):
    spec = ModelSpec(depths=(3, 3, 9, 3), dims=(8, 8, 8, 8), drop_path_rate=0.4)
    expected = np.linspace(0, 0.4, 18)  # the official schedule
    rates = [
        getattr(block.drop_path, "drop_prob", 0.0) for block in blocks_of(fw.create_model(spec))
    ]
    np.testing.assert_allclose(rates, expected, rtol=1e-6, atol=1e-7)


def test_training_flag_reaches_drop_path(fw):
    # layer scale 1: with the default 1e-6 a dropped branch would change nothing visible
    spec = TINY_SPECS["v1"].replace(drop_path_rate=0.5, layer_scale_init_value=1.0)
    model = fw.create_model(spec)
    x = images(32, 32, batch=4, seed=1)
    a, b = fw.forward(model, x), fw.forward(model, x)
    np.testing.assert_array_equal(a, b)  # inference: deterministic
    assert not np.allclose(a, fw.forward(model, x, training=True), rtol=1e-3, atol=1e-3)


def missing_gradients(gradients: dict[str, np.ndarray]) -> list[str]:
    """The parameters whose gradient is absent (NaN-filled by the adapter), not finite, or
    zero everywhere."""
    return [k for k, g in gradients.items() if not np.isfinite(g).all() or not np.any(g)]


@pytest.mark.parametrize("case", list(TINY_SPECS))
def test_every_parameter_gets_a_finite_nonzero_gradient(fw, case):
    torch_model = random_torch_model(TINY_SPECS[case], seed=5).double()
    model = (
        torch_model
        if fw is TORCH
        else converted_keras_model(torch_model, TINY_SPECS[case], "float64")
    )
    x = images(*ODD_SIZE, seed=5)
    if TINY_SPECS[case].in_chans == 1:
        x = x[:, :1]
    gradients = fw.gradients(model, x)
    assert list(gradients) == list(torch_model.state_dict())  # every parameter, by its name
    assert missing_gradients(gradients) == []
    if fw is KERAS:  # and the same gradients as PyTorch's, to float64 rounding
        for key, expected in TORCH.gradients(torch_model, x).items():
            scale = np.abs(expected).max()
            assert np.abs(gradients[key] - expected).max() <= 1e-10 * scale, key


def test_the_gradient_check_catches_a_parameter_the_forward_pass_skips(fw):
    torch_model = random_torch_model(TINY_SPECS["v1"], seed=6).double()
    model = (
        torch_model
        if fw is TORCH
        else converted_keras_model(torch_model, TINY_SPECS["v1"], "float64")
    )
    block = blocks_of(model)[1]
    if fw is TORCH:
        block.norm.forward = lambda x: x  # created, but not used
    else:
        block.norm.call = lambda x: x
    gradients = fw.gradients(model, images(*ODD_SIZE, seed=6))
    assert missing_gradients(gradients) == ["stages.1.0.norm.weight", "stages.1.0.norm.bias"]
