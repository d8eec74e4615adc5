"""The Keras model: eps, shapes for any size, training flag, config and .keras round trips,
SavedModel export. Its parameter counts are checked in test_mirror.py."""

import keras
import numpy as np
import pytest

import convnext_tf
from convnext_tf import create_model


@pytest.fixture(scope="module")
def atto():
    return create_model("convnext_atto", num_classes=10)


def test_any_input_size_floors_like_pytorch(atto):
    x = np.random.default_rng(0).standard_normal((2, 61, 127, 3)).astype("float32")
    stages = atto.forward_stages(x)
    assert [tuple(s.shape) for s in stages] == [
        (2, 15, 31, 40),
        (2, 7, 15, 80),
        (2, 3, 7, 160),
        (2, 1, 3, 320),
    ]
    assert tuple(atto(x).shape) == (2, 10)


def test_every_layernorm_has_eps_1e6_and_no_padding_same_on_strided_convs(atto):
    def walk(layer):
        yield layer
        for child in layer._flatten_layers(include_self=False, recursive=False):
            yield from walk(child)

    layers = list(walk(atto))
    norms = [layer for layer in layers if isinstance(layer, convnext_tf.LayerNorm)]
    assert len(norms) == 1 + 3 + sum(atto.depths) + 1  # stem, downsamples, blocks, final
    assert all(n.eps == 1e-6 for n in norms)
    convs = [layer for layer in layers if type(layer) is keras.layers.Conv2D]
    assert len(convs) == 4 and all(c.padding == "valid" for c in convs)


def test_gelu_is_exact_in_float64():
    x = np.linspace(-6, 6, 1001)
    from math import erf, sqrt

    expected = np.array([0.5 * v * (1 + erf(v / sqrt(2))) for v in x])
    gelu = convnext_tf.GELU(dtype="float64")
    np.testing.assert_allclose(np.asarray(gelu(x)), expected, rtol=0, atol=1e-15)


def test_layer_scale_init_and_head_init_scale():
    model = create_model("convnext_atto", layer_scale_init_value=0.5, head_init_scale=0.1)
    assert np.all(model.stages[1].layers[1].gamma.numpy() == 0.5)
    assert abs(model.head.kernel.numpy().std() - 0.002) < 3e-4
    no_scale = create_model("convnext_atto", layer_scale_init_value=0)
    assert no_scale.stages[0].layers[0].gamma is None
    assert not any(v.path.endswith("gamma") for v in no_scale.weights)


def test_drop_path_drops_whole_samples_in_training_only():
    x = np.random.default_rng(0).standard_normal((64, 2, 2, 4)).astype("float32")
    drop = convnext_tf.DropPath(0.5)
    np.testing.assert_array_equal(np.asarray(drop(x, training=False)), x)
    y = np.asarray(drop(x, training=True))
    dropped = (y.reshape(64, -1) == 0).all(1)
    assert 0 < dropped.sum() < 64
    np.testing.assert_allclose(y[~dropped], x[~dropped] / 0.5)


def test_training_flag_reaches_drop_path():
    # layer scale 1: with the default 1e-6 a dropped branch would change nothing visible
    model = create_model(
        "convnext_atto", num_classes=5, drop_path_rate=0.5, layer_scale_init_value=1
    )
    x = np.random.default_rng(1).standard_normal((4, 32, 32, 3)).astype("float32")
    a, b = np.asarray(model(x, training=False)), np.asarray(model(x, training=False))
    np.testing.assert_array_equal(a, b)  # inference: deterministic
    c = np.asarray(model(x, training=True))
    assert not np.allclose(a, c, rtol=1e-3, atol=1e-3)


def test_config_round_trip():
    model = create_model("convnext_atto", num_classes=7, drop_path_rate=0.1, head_init_scale=0.5)
    config = model.get_config()
    assert config["depths"] == (2, 2, 6, 2) and config["num_classes"] == 7
    clone = convnext_tf.ConvNeXt.from_config(config)
    clone(keras.Input((None, None, 3)))
    assert clone.get_config() == config
    assert clone.count_params() == model.count_params()


def test_keras_file_round_trip(tmp_path, atto):
    x = np.random.default_rng(2).standard_normal((2, 45, 53, 3)).astype("float32")
    atto.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert isinstance(loaded, convnext_tf.ConvNeXt)
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(atto(x)))


def test_weights_file_round_trip(tmp_path, atto):
    x = np.random.default_rng(3).standard_normal((2, 40, 40, 3)).astype("float32")
    atto.save_weights(tmp_path / "m.weights.h5")
    other = create_model("convnext_atto", num_classes=10)
    other.load_weights(tmp_path / "m.weights.h5")
    np.testing.assert_array_equal(np.asarray(other(x)), np.asarray(atto(x)))


def test_export_saved_model_serves_any_size(tmp_path, atto):
    import tensorflow as tf

    atto.export(tmp_path / "saved", verbose=False)
    served = tf.saved_model.load(str(tmp_path / "saved"))
    for height, width in [(32, 32), (61, 127)]:
        x = np.random.default_rng(4).standard_normal((3, height, width, 3)).astype("float32")
        np.testing.assert_allclose(served.serve(x), atto(x), rtol=1e-5, atol=1e-5)


def test_float64_model_reloads_in_float64(tmp_path):
    model = create_model("convnext_atto", num_classes=3, dtype="float64")
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert {v.dtype for v in loaded.weights} == {"float64"}
    x = np.random.default_rng(5).standard_normal((1, 40, 40, 3))
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
