"""The conversion pipeline as a library: what the command line does, from Python, with the
same options as parameters; errors that name parameters, which the command line shows as its
flags."""

import pytest
import torch
from safetensors.torch import load_file

import convnext_tf
from converters import ConversionError, convert_file
from converters.jobs import inspect_file, verify_file
from convnext_spec.spec import parameter_count, spec_from_name
from tests.support.helpers import (
    assert_one_line_error,
    assert_same_logits,
    run,
)

VARIANT = "convnext_atto"


def test_convert_file_to_keras_returns_what_it_did(tmp_path, checkpoint, torch_model):
    lines = []
    result = convert_file(checkpoint, tmp_path / "m.weights.h5", log=lines.append)
    assert result.spec == spec_from_name(VARIANT, num_classes=10)
    assert (result.target, result.tensors) == ("keras", 128)
    assert result.parameters == parameter_count(result.spec) == 3_377_730
    assert lines[0] == f"reading {checkpoint}" and "inferred convnext_atto" in lines[2]
    assert "create_model('convnext_atto', num_classes=10, in_chans=3)" in result.load_with
    keras_model = convnext_tf.create_model(VARIANT, num_classes=10)
    keras_model.load_weights(result.destination)
    assert_same_logits(torch_model, keras_model)


def test_convert_file_to_timm_and_back_through_keras(tmp_path, checkpoint, torch_model):
    timm = convert_file(checkpoint, tmp_path / "t.safetensors", target="timm")
    tensors = load_file(timm.destination)
    assert tensors["stages.0.blocks.0.mlp.fc1.weight"].shape == (160, 40, 1, 1)  # conv_mlp
    keras_file = convert_file(timm.destination, tmp_path / "m.keras")
    assert keras_file.spec == timm.spec
    back = convert_file(keras_file.destination, tmp_path / "back.pth")
    state = torch.load(back.destination, weights_only=True)
    assert all(torch.equal(state[k], v) for k, v in torch_model.state_dict().items())


def test_inspect_and_verify_from_python(tmp_path, checkpoint):
    rows = dict(inspect_file(checkpoint))
    assert rows["variant"] == VARIANT and rows["classes"] == "10" and rows["not weights"] == "epoch"
    convert_file(checkpoint, tmp_path / "m.keras")
    result = verify_file(checkpoint, tmp_path / "m.keras", size=(61, 127), batch=2)
    assert result.passed and result.first_divergence is None and result.top1 == 1.0


def test_library_errors_name_parameters_and_the_command_line_its_flags(
    capsys, tmp_path, checkpoint
):
    convert_file(checkpoint, tmp_path / "m.weights.h5")
    with pytest.raises(ConversionError, match="pass `variant` \\(and `num_classes`") as error:
        convert_file(tmp_path / "m.weights.h5", tmp_path / "back.pth")
    assert "--" not in str(error.value)
    code, _, err = run(capsys, "convert", tmp_path / "m.weights.h5", tmp_path / "back.pth")
    assert_one_line_error(code, err, "pass --variant (and --num-classes unless 1000)")
    with pytest.raises(ConversionError, match="exists; pass `force`"):
        convert_file(checkpoint, tmp_path / "m.weights.h5")
    code, _, err = run(capsys, "convert", checkpoint, tmp_path / "m.weights.h5")
    assert_one_line_error(code, err, "exists; pass --force to overwrite it")
