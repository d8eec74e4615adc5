"""The Keras model only: eps and padding, the exact GELU, dtype policies all the way down,
config and file round trips of randomised weights, SavedModel export. What both models must
do is tested once for both in test_models.py; parameter counts in test_mirror.py."""

import math

import keras
import numpy as np
import pytest

import convnext_tf
from convnext_tf import create_model
from tests.support.helpers import (
    ODD_SIZE,
    TINY_SPECS,
    converted_keras_model,
    differences,
    images,
    keras_outputs,
    random_torch_model,
    torch_outputs,
)


def walk(layer):
    """Every layer under `layer`, itself included, depth first."""
    yield layer
    for child in layer._flatten_layers(include_self=False, recursive=False):
        yield from walk(child)


@pytest.fixture(scope="module")
def atto():
    """convnext_atto with every weight randomised (through PyTorch and the converter): a save
    that dropped the norms, biases or layer scales would show, which constant initial values
    would hide."""
    torch_model = random_torch_model("convnext_atto", seed=31, num_classes=10)
    return converted_keras_model(torch_model, "convnext_atto", "float32", num_classes=10)


def weights_by_path(model) -> dict[str, np.ndarray]:
    return {v.path: keras.ops.convert_to_numpy(v) for v in model.weights}


def assert_same_weights(loaded, original) -> None:
    expected, found = weights_by_path(original), weights_by_path(loaded)
    assert list(found) == list(expected)
    for path, value in expected.items():
        np.testing.assert_array_equal(found[path], value, err_msg=path)


def test_every_layernorm_has_eps_1e6_and_no_padding_same_on_strided_convs(atto):
    layers = list(walk(atto))
    norms = [layer for layer in layers if isinstance(layer, convnext_tf.LayerNorm)]
    assert len(norms) == 1 + 3 + sum(atto.depths) + 1  # stem, downsamples, blocks, final
    assert all(n.eps == 1e-6 for n in norms)
    convs = [layer for layer in layers if type(layer) is keras.layers.Conv2D]
    assert len(convs) == 4 and all(c.padding == "valid" for c in convs)


def test_gelu_is_exact_in_float64():
    x = np.linspace(-6, 6, 1001)
    expected = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x])
    gelu = convnext_tf.GELU(dtype="float64")
    np.testing.assert_allclose(np.asarray(gelu(x)), expected, rtol=0, atol=1e-15)


# --- dtype: every sublayer takes the model's policy; no global state -----------------------


@pytest.mark.parametrize("build", ["create_model", "constructor", "block"])
def test_float64_reaches_every_sublayer_and_variable(build):
    spec = TINY_SPECS["v2_with_layer_scale"]  # GRN and layer scale: every kind of weight
    if build == "create_model":
        model = create_model(spec, dtype="float64")
    elif build == "constructor":  # the class itself, without create_model's help
        model = convnext_tf.ConvNeXt(**spec.arguments(), dtype="float64")
    else:
        model = convnext_tf.Block(8, use_grn=True, drop_path=0.1, dtype="float64")
    x = np.random.default_rng(0).standard_normal((2, 40, 40, 8 if build == "block" else 3))
    y = model(x)  # the first call builds: nothing may round the float64 input on the way
    assert keras.config.dtype_policy().name == "float32"  # the global policy was not touched
    assert keras.backend.standardize_dtype(y.dtype) == "float64"
    for layer in walk(model):
        if isinstance(layer, keras.layers.InputLayer):
            assert layer.dtype == "float64", layer.name  # an input, not a computation
            continue
        assert layer.dtype_policy.name == "float64", layer.name
        assert (layer.variable_dtype, layer.compute_dtype) == ("float64", "float64"), layer.name
    assert model.weights and {v.dtype for v in model.weights} == {"float64"}


def test_float64_model_built_by_its_constructor_matches_pytorch_to_1e12():
    torch_model = random_torch_model(TINY_SPECS["v1"], seed=32).double()
    keras_model = convnext_tf.ConvNeXt(**TINY_SPECS["v1"].arguments(), dtype="float64")
    x = images(*ODD_SIZE, seed=32)
    keras_outputs(keras_model, x)  # builds it, on float64 input, in its first call
    from converters import torch_to_keras

    torch_to_keras(torch_model.state_dict(), keras_model)
    for name, diff in differences(
        torch_outputs(torch_model, x), keras_outputs(keras_model, x)
    ).items():
        assert diff.max_rel <= 1e-12, name


# Mixed precision: float32 weights, half-precision compute. Measured against float32 PyTorch
# on convnext_atto / convnextv2_atto (61x127, batch 2): logits 1.4e-3 / 2.1e-3 relative for
# float16, 1.0e-2 / 8.9e-3 for bfloat16 (stages up to 2.5e-3 and 1.7e-2). The bounds leave 2x.
MIXED = {"mixed_float16": ("float16", 5e-3), "mixed_bfloat16": ("bfloat16", 4e-2)}


@pytest.mark.parametrize(
    "policy, variant",
    [
        ("mixed_float16", "convnext_atto"),
        ("mixed_bfloat16", "convnextv2_atto"),
        pytest.param("mixed_bfloat16", "convnext_atto", marks=pytest.mark.exhaustive),
        pytest.param("mixed_float16", "convnextv2_atto", marks=pytest.mark.exhaustive),
    ],
)
def test_mixed_precision_builds_runs_and_stays_near_float32_pytorch(policy, variant):
    compute, bound = MIXED[policy]
    torch_model = random_torch_model(variant, seed=33, num_classes=10)
    keras_model = converted_keras_model(torch_model, variant, policy, num_classes=10)
    assert {v.dtype for v in keras_model.weights} == {"float32"}
    x = images(*ODD_SIZE, seed=33).astype(np.float32)
    found = keras_outputs(keras_model, x)
    assert str(found["logits"].dtype) == compute
    expected = torch_outputs(torch_model, x)
    found = {k: v.astype(np.float32) for k, v in found.items()}
    for name, diff in differences(expected, found).items():
        assert diff.max_rel <= bound, f"{name}: {diff.max_rel:.2e} relative under {policy}"


# --- serialization ------------------------------------------------------------------------


LAYER_CONFIGS = [
    (convnext_tf.DropPath, {"drop_prob": 0.3}),
    (convnext_tf.LayerNorm, {"normalized_shape": 12, "eps": 1e-6}),
    (convnext_tf.GELU, {}),
    (convnext_tf.GRN, {"dim": 12}),
    (
        convnext_tf.Block,
        {"dim": 8, "drop_path": 0.2, "layer_scale_init_value": 0.5, "use_grn": True},
    ),
    (convnext_tf.ConvNeXt, TINY_SPECS["v2"].arguments()),
    (convnext_tf.ConvNeXtBackbone, TINY_SPECS["backbone"].arguments()),
    (convnext_tf.ConvNeXtIsotropic, TINY_SPECS["isotropic"].arguments()),
]


@pytest.mark.parametrize("cls, arguments", LAYER_CONFIGS, ids=lambda c: getattr(c, "__name__", ""))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_layer_class_round_trips_its_config(cls, arguments, dtype):
    layer = cls(**arguments, dtype=dtype, name="x")
    config = layer.get_config()
    for key, value in arguments.items():
        assert config[key] == value, key  # every constructor argument, as given
    clone = cls.from_config(config)
    assert clone.get_config() == config
    assert clone.dtype_policy.name == dtype


def test_every_layer_class_is_tested_above():
    exported = [getattr(convnext_tf, name) for name in convnext_tf.__all__]
    layer_classes = {c for c in exported if isinstance(c, type) and issubclass(c, keras.Layer)}
    assert layer_classes == {cls for cls, _ in LAYER_CONFIGS}


def test_keras_file_round_trip_keeps_every_weight(tmp_path, atto):
    atto.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert isinstance(loaded, convnext_tf.ConvNeXt)
    assert_same_weights(loaded, atto)
    x = np.random.default_rng(2).standard_normal((2, 45, 53, 3)).astype("float32")
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(atto(x)))


def test_weights_file_round_trip_keeps_every_weight(tmp_path, atto):
    atto.save_weights(tmp_path / "m.weights.h5")
    other = create_model("convnext_atto", num_classes=10)
    other.load_weights(tmp_path / "m.weights.h5")
    assert_same_weights(other, atto)


def test_export_saved_model_serves_any_size(tmp_path, atto):
    import tensorflow as tf

    atto.export(tmp_path / "saved", verbose=False)
    served = tf.saved_model.load(str(tmp_path / "saved"))
    for height, width in [(32, 32), (61, 127)]:
        x = np.random.default_rng(4).standard_normal((3, height, width, 3)).astype("float32")
        np.testing.assert_allclose(served.serve(x), atto(x), rtol=1e-5, atol=1e-5)


def test_float64_model_reloads_in_float64(tmp_path):
    torch_model = random_torch_model(TINY_SPECS["v2"], seed=34).double()
    model = converted_keras_model(torch_model, TINY_SPECS["v2"], "float64")
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert {v.dtype for v in loaded.weights} == {"float64"}
    assert {layer.compute_dtype for layer in walk(loaded) if layer.weights} == {"float64"}
    assert_same_weights(loaded, model)
    x = np.random.default_rng(5).standard_normal((2, 40, 40, 3))
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))
    assert keras.config.dtype_policy().name == "float32"
