"""The detection / segmentation backbone form and the official detection checkpoints."""

import keras
import numpy as np
import pytest
import torch

import convnext_tf
import convnext_torch
from converters import load_state_dict, torch_to_keras
from convnext_spec.spec import ModelSpec, as_backbone, spec_from_name
from tests.support import reference
from tests.support.helpers import (
    ODD_SIZE,
    TINY_SPECS,
    assert_float32_parity,
    assert_float64_parity,
    assert_one_line_error,
    images,
    run,
)
from tests.support.parity import randomize_


def backbone_outputs(model, x: np.ndarray) -> dict[str, np.ndarray]:
    if isinstance(model, torch.nn.Module):
        dtype = next(model.parameters()).dtype
        with torch.no_grad():
            outputs = model.eval()(torch.from_numpy(x).to(dtype))
        return {f"out {i}": o.numpy() for i, o in enumerate(outputs)}
    outputs = model(x.transpose(0, 2, 3, 1).astype(model.compute_dtype), training=False)
    return {f"out {i}": np.asarray(o).transpose(0, 3, 1, 2) for i, o in enumerate(outputs)}


def expected_outputs(state: dict, x: np.ndarray, spec: ModelSpec) -> dict[str, np.ndarray]:
    """The numpy reference's stage outputs, each through its channels-first norm."""
    stages = reference.forward(state, x, spec.norm, spec.norm_eps)
    return {
        f"out {n}": reference.normalise(
            stages[f"stage {i + 1}"].transpose(0, 2, 3, 1),
            state,
            f"norm{i}",
            spec.norm,
            spec.norm_eps,
        ).transpose(0, 3, 1, 2)
        for n, i in enumerate(spec.out_indices)
    }


def check_backbone_parity_and_reference(spec: ModelSpec) -> None:
    torch_model = randomize_(convnext_torch.create_model(spec), 51).double()
    x = images(*ODD_SIZE, seed=51)
    state = {k: v.numpy() for k, v in torch_model.state_dict().items()}
    pt64 = backbone_outputs(torch_model, x)
    assert len(pt64) == len(spec.out_indices)
    assert_float64_parity(expected_outputs(state, x, spec), pt64)

    keras64 = convnext_tf.create_model(spec, dtype="float64")
    torch_to_keras(torch_model.state_dict(), keras64)
    assert_float64_parity(pt64, backbone_outputs(keras64, x))

    torch_model.float()
    keras32 = convnext_tf.create_model(spec)
    torch_to_keras(torch_model.state_dict(), keras32)
    pt32 = backbone_outputs(torch_model, x)
    assert_float32_parity(pt32, backbone_outputs(keras32, x), pt64)


@pytest.mark.parametrize("case", ["backbone", "v2_backbone"])
def test_backbone_parity_and_reference(case):
    check_backbone_parity_and_reference(TINY_SPECS[case])


@pytest.mark.exhaustive
@pytest.mark.parametrize(
    "variant, out_indices", [("convnext_atto", (0, 1, 2, 3)), ("convnextv2_atto", (1, 3))]
)
def test_backbone_parity_and_reference_real_variants(variant, out_indices):
    check_backbone_parity_and_reference(as_backbone(spec_from_name(variant), out_indices))


def test_keras_backbone_round_trips_through_a_keras_file(tmp_path):
    model = convnext_tf.create_backbone("convnext_atto", out_indices=(2, 3))
    x = np.random.default_rng(0).standard_normal((1, 64, 96, 3)).astype("float32")
    model.save(tmp_path / "b.keras")
    loaded = keras.models.load_model(tmp_path / "b.keras")
    assert isinstance(loaded, convnext_tf.ConvNeXtBackbone) and loaded.out_indices == (2, 3)
    for a, b in zip(model(x), loaded(x), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.fixture
def detection_checkpoint(tmp_path):
    """An official-style detection checkpoint: the backbone under 'backbone.', beside an FPN
    neck and heads, wrapped as {'meta': ..., 'state_dict': ...}."""
    backbone = randomize_(convnext_torch.create_backbone("convnext_atto"), 52)
    state = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    state["neck.lateral_convs.0.conv.weight"] = torch.zeros(256, 40, 1, 1)
    state["neck.fpn_convs.0.conv.weight"] = torch.zeros(256, 256, 3, 3)
    state["rpn_head.rpn_conv.weight"] = torch.zeros(256, 256, 3, 3)
    torch.save({"meta": {"epoch": 12}, "state_dict": state}, tmp_path / "det.pth")
    return tmp_path / "det.pth", backbone


def test_detection_checkpoint_converts_its_backbone_and_names_the_rest(
    capsys, tmp_path, detection_checkpoint
):
    path, backbone = detection_checkpoint
    state = load_state_dict(path)
    assert len(state.outside_backbone) == 3 and "rpn_head.rpn_conv.weight" in state.outside_backbone
    code, _, err = run(capsys, "convert", path, tmp_path / "b.keras")
    assert code == 0, err
    assert "skipped 3 tensors outside 'backbone.': neck.* (2), rpn_head.* (1)" in err
    assert "out_indices=(0, 1, 2, 3)" in err
    x = np.random.default_rng(3).standard_normal((2, 3, 61, 127)).astype(np.float32)
    expected = backbone_outputs(backbone, x)
    found = backbone_outputs(keras.models.load_model(tmp_path / "b.keras"), x)
    for name in expected:
        np.testing.assert_allclose(found[name], expected[name], rtol=1e-4, atol=1e-4)
    code, out, _ = run(capsys, "verify", path, tmp_path / "b.keras", "--size", 61, 127)
    assert code == 0 and "norm3" in out and "PASS: features" in out


def test_detection_checkpoint_refuses_a_head(capsys, tmp_path, detection_checkpoint):
    path, _ = detection_checkpoint
    code, _, err = run(capsys, "convert", path, tmp_path / "b.keras", "--num-classes", 10)
    assert_one_line_error(code, err, "is a detection backbone: it has no head")
    code, _, err = run(
        capsys, "convert", path, tmp_path / "k.weights.h5", "--to", "keras-applications"
    )
    assert_one_line_error(code, err, "keras.applications has no detection-backbone form")
