"""The converter: exact transposes, strict accounting, safe loading, bit-exact round trip."""

import argparse
import pickle

import numpy as np
import pytest
import torch

import convnext_tf
import convnext_torch
from converters import (
    ConversionError,
    infer_spec,
    keras_to_torch,
    keras_variables,
    load_state_dict,
    resolve_spec,
    torch_to_keras,
)
from converters.names import mapping
from converters.weights.identify import spec_from_shapes
from convnext_spec.spec import ModelSpec, as_backbone, spec_from_name
from tests.support.helpers import Exploit, random_torch_model, run
from tests.support.parity import randomize_

VARIANT = "convnext_atto"


@pytest.fixture(scope="module")
def torch_model():
    return random_torch_model(VARIANT, seed=7, num_classes=11)


@pytest.fixture
def keras_model():
    return convnext_tf.create_model(VARIANT, num_classes=11)


# --- the mapping, element by element -------------------------------------------------------


def test_conv_kernel_element_lands_where_keras_reads_it():
    w = np.arange(5 * 3 * 4 * 2, dtype=np.float32).reshape(5, 3, 4, 2)  # (out, in, kh, kw)
    k = mapping.to_keras("downsample_layers.0.0.weight", w)
    assert k.shape == (4, 2, 3, 5)  # (kh, kw, in, out)
    assert k[3, 1, 2, 4] == w[4, 2, 3, 1]


def test_depthwise_kernel_element_lands_where_keras_reads_it():
    w = np.arange(6 * 1 * 7 * 7, dtype=np.float32).reshape(6, 1, 7, 7)  # (C, 1, kh, kw)
    k = mapping.to_keras("stages.0.0.dwconv.weight", w)
    assert k.shape == (7, 7, 6, 1)  # (kh, kw, C, 1)
    assert k[1, 5, 4, 0] == w[4, 0, 1, 5]


def test_dense_kernel_is_transposed():
    w = np.arange(12, dtype=np.float32).reshape(4, 3)  # (out, in)
    assert mapping.to_keras("head.weight", w)[2, 1] == w[1, 2]


@pytest.mark.parametrize(
    "keras_path, key",
    [
        ("stages.2/5/pwconv1/kernel", "stages.2.5.pwconv1.weight"),
        ("stages.0/0/dwconv/kernel", "stages.0.0.dwconv.weight"),
        ("stages.3/1/gamma", "stages.3.1.gamma"),
        ("downsample_layers.0/1/weight", "downsample_layers.0.1.weight"),
        ("downsample_layers.2/1/bias", "downsample_layers.2.1.bias"),
        ("norm/weight", "norm.weight"),
        ("head/kernel", "head.weight"),
    ],
)
def test_name_rule(keras_path, key):
    assert mapping.torch_key(keras_path) == key


def test_every_tensor_has_the_layout_its_rank_needs(torch_model):
    for key, value in torch_model.state_dict().items():
        kind = mapping.tensor_kind(key, value.ndim)
        assert len(mapping.TRANSPOSES[kind]) == value.ndim, (key, kind)
    assert mapping.tensor_kind("stages.1.2.dwconv.weight") == "depthwise"
    assert mapping.tensor_kind("downsample_layers.2.1.weight") == "conv"
    assert mapping.tensor_kind("downsample_layers.2.0.weight") == "vector"  # its LayerNorm


def test_wrong_rank_is_refused():
    with pytest.raises(ValueError, match="head.weight: expected 2 axes"):
        mapping.to_keras("head.weight", np.zeros((3, 4, 1, 1)))


# --- whole models --------------------------------------------------------------------------


def test_round_trip_is_bit_exact(torch_model, keras_model):
    report = torch_to_keras(torch_model.state_dict(), keras_model)
    back = keras_to_torch(keras_model)
    original = torch_model.state_dict()
    assert list(back) == list(original)  # same keys, in the official order
    for key, value in original.items():
        assert back[key].dtype == value.dtype
        assert torch.equal(back[key], value), key
    assert report.tensors == len(original)
    assert report.parameters == sum(v.numel() for v in original.values())


def test_keras_to_torch_loads_strictly_into_the_torch_model(torch_model, keras_model):
    torch_to_keras(torch_model.state_dict(), keras_model)
    fresh = convnext_torch.create_model(VARIANT, num_classes=11)
    fresh.load_state_dict(keras_to_torch(keras_model), strict=True)
    for (name, a), b in zip(
        torch_model.state_dict().items(), fresh.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("wrapper", [None, "model", "state_dict"])
def test_wrapped_checkpoint_files_load(tmp_path, torch_model, keras_model, wrapper):
    state = torch_model.state_dict()
    obj = state if wrapper is None else {wrapper: state, "epoch": 300, "optimizer": {}}
    torch.save(obj, tmp_path / "ckpt.pth")
    torch_to_keras(tmp_path / "ckpt.pth", keras_model)
    np.testing.assert_array_equal(
        keras_variables(keras_model)["head.weight"].numpy(), state["head.weight"].numpy().T
    )


def test_official_training_checkpoint_with_args_namespace_loads(tmp_path, torch_model):
    args = argparse.Namespace(model="convnext_atto", lr=4e-3)
    torch.save({"model": torch_model.state_dict(), "args": args, "epoch": 1}, tmp_path / "c.pth")
    state = load_state_dict(tmp_path / "c.pth")
    assert state.wrapper == "model" and len(state.tensors) == len(torch_model.state_dict())


def test_malicious_pickle_is_refused_and_not_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"model": {"head.weight": torch.zeros(2, 2)}, "x": Exploit()}, "evil.pth")
    with pytest.raises(ConversionError, match="refused: loading it would call .*system"):
        load_state_dict("evil.pth")
    with open("plain.pkl", "wb") as f:
        pickle.dump(Exploit(), f)
    with pytest.raises(ConversionError, match="not a PyTorch checkpoint"):
        load_state_dict("plain.pkl")
    assert not (tmp_path / "EXPLOITED").exists()


def test_missing_unexpected_and_mismatched_are_all_named(torch_model, keras_model):
    state = dict(torch_model.state_dict())
    del state["stages.1.0.gamma"]
    state["stages.9.0.gamma"] = torch.zeros(3)
    state["head.bias"] = torch.zeros(12)
    before = {k: v.numpy().copy() for k, v in keras_variables(keras_model).items()}
    with pytest.raises(ConversionError) as error:
        torch_to_keras(state, keras_model)
    e = error.value
    assert e.missing == ["stages.1.0.gamma"]
    assert e.unexpected == ["stages.9.0.gamma"]
    assert e.mismatched == ["head.bias: expected (11,), found (12,)"]
    message = str(e)
    assert "\n" not in message
    for part in ("1 missing (stages.1.0.gamma)", "1 unexpected (stages.9.0.gamma)", "head.bias"):
        assert part in message
    after = {k: v.numpy() for k, v in keras_variables(keras_model).items()}
    assert all(np.array_equal(before[k], after[k]) for k in before)  # nothing half-assigned


def test_transposed_shape_is_a_mismatch_not_a_silent_reshape(torch_model, keras_model):
    state = dict(torch_model.state_dict())
    state["stages.0.0.pwconv1.weight"] = state["stages.0.0.pwconv1.weight"].T.contiguous()
    with pytest.raises(ConversionError, match=r"pwconv1.weight: expected \(160, 40\), found"):
        torch_to_keras(state, keras_model)


def test_half_precision_is_widened_exactly(torch_model):
    for dtype in (torch.float16, torch.bfloat16):
        state = {k: v.to(dtype) for k, v in torch_model.state_dict().items()}
        keras_model = convnext_tf.create_model(VARIANT, num_classes=11)
        report = torch_to_keras(state, keras_model)
        assert report.source_dtypes == (str(dtype).removeprefix("torch."),)
        back = keras_to_torch(keras_model)
        assert all(torch.equal(back[k].to(dtype), v) for k, v in state.items())


def test_non_float_and_non_tensor_entries_are_refused(torch_model):
    with pytest.raises(ConversionError, match="head.bias has dtype torch.int64"):
        load_state_dict({**torch_model.state_dict(), "head.bias": torch.zeros(3, dtype=torch.long)})
    with pytest.raises(ConversionError, match="not a state_dict: epoch is not"):
        load_state_dict({**torch_model.state_dict(), "epoch": 3})
    with pytest.raises(ConversionError, match="holds a list"):
        load_state_dict([1, 2])


def test_infer_spec_reads_the_shapes(torch_model):
    spec = infer_spec(load_state_dict(torch_model.state_dict()))
    assert spec == spec_from_name(VARIANT, num_classes=11)
    assert spec.name == VARIANT


@pytest.mark.parametrize(
    "spec",
    [
        spec_from_name("convnextv2_atto", num_classes=0, in_chans=1),
        spec_from_name("convnext_isotropic_small", num_classes=4),
        spec_from_name("convnext_isotropic_large", num_classes=4),
        as_backbone(spec_from_name("convnextv2_atto"), (1, 2)),
        spec_from_name("convnext_atto", layer_scale_init_value=0.0),
    ],
    ids=lambda spec: f"{spec.name}-{spec.kind}",
)
def test_infer_spec_gives_back_the_spec_of_every_kind(spec):
    with torch.device("meta"):
        model = convnext_torch.create_model(spec)
    state = {k: np.empty(v.shape, np.float32) for k, v in model.state_dict().items()}
    assert spec_from_shapes(load_state_dict(state)) == spec


def test_infer_spec_refuses_what_the_command_line_refuses(capsys, tmp_path):
    """timm's test_convnext (depths 1-2-4-2, dims 24-64) runs a tanh GELU with eps 1e-5, which
    no tensor records: built from its shapes alone it is off by 1e-4. The library's
    infer_spec refuses it with the command line's words; spec_from_shapes still reads them."""
    spec = ModelSpec(depths=(1, 2, 4, 2), dims=(24, 32, 48, 64), num_classes=3)
    with torch.device("meta"):
        model = convnext_torch.create_model(spec)
    tensors = {k: torch.zeros(v.shape) for k, v in model.state_dict().items()}
    state = load_state_dict(tensors)
    assert spec_from_shapes(state) == spec
    with pytest.raises(ConversionError, match=r"no known convnext variant has depths \(1, 2, 4"):
        infer_spec(state)
    torch.save(tensors, tmp_path / "test_convnext.pth")
    code, _, err = run(capsys, "convert", tmp_path / "test_convnext.pth", tmp_path / "t.keras")
    assert code == 1 and "no known convnext variant has depths (1, 2, 4, 2)" in err


def test_resolve_spec_takes_the_checkpoints_head_channels_and_layer_scale(torch_model):
    state = load_state_dict(torch_model.state_dict())
    assert resolve_spec(state) == spec_from_name(VARIANT, num_classes=11)
    # a named variant keeps the checkpoint's head: the strict check then names what differs
    assert resolve_spec(state, "convnext_tiny") == spec_from_name("convnext_tiny", num_classes=11)
    assert resolve_spec(state, num_classes=3).num_classes == 3
    with pytest.raises(ConversionError, match="unknown variant 'convnext_tinny'; did you mean"):
        resolve_spec(state, "convnext_tinny")
    with pytest.raises(ConversionError, match="`num_classes` must be 0"):
        resolve_spec(state, num_classes=-2)


def test_a_shape_no_variant_has_needs_a_variant():
    with torch.device("meta"):
        model = convnext_torch.create_model("convnext_atto", depths=(2, 2, 5, 2))
    state = load_state_dict(
        {k: np.empty(v.shape, np.float32) for k, v in model.state_dict().items()}
    )
    with pytest.raises(ConversionError, match=r"depths \(2, 2, 5, 2\).*choose one with `variant`"):
        resolve_spec(state)


def test_model_without_layer_scale_converts():
    torch_model = random_torch_model(VARIANT, seed=8, layer_scale_init_value=0.0)
    assert not any(k.endswith("gamma") for k in torch_model.state_dict())
    spec = resolve_spec(load_state_dict(torch_model.state_dict()))
    keras_model = convnext_tf.create_model(spec)
    torch_to_keras(torch_model.state_dict(), keras_model)
    back = keras_to_torch(keras_model)
    assert all(torch.equal(back[k], v) for k, v in torch_model.state_dict().items())


def test_drop_path_random_state_is_not_a_weight():
    keras_model = convnext_tf.create_model(VARIANT, drop_path_rate=0.2)
    torch_model = convnext_torch.create_model(VARIANT, drop_path_rate=0.2)
    assert set(keras_variables(keras_model)) == set(torch_model.state_dict())
    torch_to_keras(torch_model.state_dict(), keras_model)


def test_float64_checkpoint_into_float64_model_is_exact(torch_model):
    state = {k: v.double() for k, v in torch_model.state_dict().items()}
    keras_model = convnext_tf.create_model(VARIANT, num_classes=11, dtype="float64")
    torch_to_keras(state, keras_model)
    back = keras_to_torch(keras_model)
    assert all(back[k].dtype == torch.float64 and torch.equal(back[k], v) for k, v in state.items())


@pytest.mark.parametrize(
    "variant, build",
    [
        ("convnextv2_atto", "create_model"),
        ("convnext_isotropic_small", "create_model"),
        ("convnextv2_atto", "create_backbone"),
    ],
)
def test_every_family_round_trips_bit_exact(variant, build):
    torch_model = randomize_(getattr(convnext_torch, build)(variant), seed=9)
    keras_model = getattr(convnext_tf, build)(variant)
    torch_to_keras(torch_model.state_dict(), keras_model)
    back = keras_to_torch(keras_model)
    assert list(back) == list(torch_model.state_dict())
    assert all(torch.equal(back[k], v) for k, v in torch_model.state_dict().items())
    state = torch_model.state_dict()
    for dropped in (list(state)[0], list(state)[-1]):  # the stem (the layout's signature), the last
        incomplete = {k: v for k, v in state.items() if k != dropped}
        with pytest.raises(ConversionError, match=rf"1 missing \({dropped}\)"):
            torch_to_keras(incomplete, keras_model)


# --- a Keras model built from the checkpoint (what `convnext convert` runs) -----------------


DROP_PATH = {"num_classes": 11, "drop_path_rate": 0.2}  # drop path: a non-weight variable


@pytest.mark.parametrize(
    "variant, overrides, deferred",
    [
        pytest.param(VARIANT, DROP_PATH, True, id="atto-deferred"),
        pytest.param("convnextv2_atto", {}, False, id="v2-assigned"),
        pytest.param("convnext_zepto_rms_ols", {}, True, id="zepto-deferred"),
        pytest.param(VARIANT, DROP_PATH, False, id="atto-assigned", marks=pytest.mark.exhaustive),
        pytest.param("convnextv2_atto", {}, True, id="v2-deferred", marks=pytest.mark.exhaustive),
        pytest.param(
            "convnext_zepto_rms_ols", {}, False, id="zepto-assigned", marks=pytest.mark.exhaustive
        ),
    ],
)
def test_keras_model_from_state_holds_the_checkpoint_exactly(
    variant, overrides, deferred, monkeypatch
):
    """Variables created from the checkpoint (the pinned Keras), or, where Keras cannot defer
    them, built as usual and assigned: the same weights, every tensor taken out of `state`."""
    from converters.weights import convert

    if not deferred:  # as on a Keras without deferred variables
        monkeypatch.setattr(convert, "build_with_values", lambda *args: None)
    assigned = []
    assign = convert.torch_to_keras
    monkeypatch.setattr(convert, "torch_to_keras", lambda *a: assigned.append(1) or assign(*a))
    original = random_torch_model(variant, seed=11, **overrides).state_dict()
    state = load_state_dict(original)
    spec = resolve_spec(state).replace(**overrides)
    model, report = convert.keras_model_from_state(state, spec)
    assert assigned == ([] if deferred else [1])  # the pinned Keras: no value drawn, then replaced
    assert state.tensors == {}  # each tensor dropped once its variable held it
    back = keras_to_torch(model)
    assert list(back) == list(original)
    assert all(torch.equal(back[k], v) for k, v in original.items())
    assert report.tensors == len(original)
    assert report.parameters == sum(v.numel() for v in original.values())
    assert report.target_dtype == "float32"
    x = np.random.default_rng(0).standard_normal((2, 37, 45, 3)).astype("float32")
    assert np.isfinite(np.asarray(model(x))).all()  # callable: every variable has a value


def test_keras_model_from_state_in_float64_and_refusing_a_mismatch_before_building(
    torch_model, monkeypatch
):
    from converters.weights.convert import keras_model_from_state

    state = load_state_dict({k: v.double() for k, v in torch_model.state_dict().items()})
    spec = resolve_spec(state)
    model, report = keras_model_from_state(state, spec, dtype="float64")
    assert report.target_dtype == "float64"
    back = keras_to_torch(model)
    assert all(torch.equal(back[k], v.double()) for k, v in torch_model.state_dict().items())

    state = load_state_dict(torch_model.state_dict())
    del state.tensors["head.bias"]
    built = []
    monkeypatch.setattr(convnext_tf, "create_model", lambda *a, **k: built.append(a))
    with pytest.raises(ConversionError, match=r"1 missing \(head.bias\)"):
        keras_model_from_state(state, spec)
    assert built == []  # refused from the shapes alone, nothing built


def test_keras_model_from_state_leaves_keras_usable_after_an_error_and_inside_a_scope(
    torch_model, monkeypatch
):
    """An initializer that fails (memory, an interrupt) must not leave Keras' list of waiting
    variables behind: every later StatelessScope would fail. Inside a caller's own scope the
    variables would get values only at its end, and assigned ones would not stick: refused."""
    import keras

    from converters.weights.convert import keras_model_from_state

    original = torch_model.state_dict()
    spec = resolve_spec(load_state_dict(original))
    calls = []

    def failing(key, value):
        calls.append(key)
        if len(calls) == 5:
            raise MemoryError("out of memory (a test)")
        return to_keras(key, value)

    to_keras = mapping.to_keras
    monkeypatch.setattr(mapping, "to_keras", failing)
    with pytest.raises(MemoryError):
        keras_model_from_state(load_state_dict(original), spec)
    monkeypatch.setattr(mapping, "to_keras", to_keras)

    model, _ = keras_model_from_state(load_state_dict(original), spec)  # works again
    back = keras_to_torch(model)
    assert all(torch.equal(back[k], v) for k, v in original.items())
    with keras.StatelessScope():  # and so does any scope after it
        pass

    state = load_state_dict(original)
    with keras.StatelessScope(), pytest.raises(ConversionError, match="inside a keras.Stateless"):
        keras_model_from_state(state, spec)  # assigned values would not stick
    assert len(state.tensors) == len(original)
