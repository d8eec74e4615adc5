"""torchvision's ConvNeXt (`torchvision.models.convnext_tiny` ..): read, detected or forced, and
written so that torchvision's own class loads it strictly. The files here are written from
torchvision/models/convnext.py's description of its modules (tests/peers/test_torchvision.py
builds them with the real package); a wrong rule in the table shows up as a wrong tensor, a
refused file or different logits."""

import keras
import numpy as np
import pytest
import torch

from converters import load_state_dict
from converters.errors import ConversionError
from converters.names import layouts
from converters.names.torchvision import check_representable
from convnext_spec.spec import ModelSpec
from tests.support.helpers import (
    assert_one_line_error,
    assert_same_logits,
    random_torch_model,
    run,
    write_layout,
)


def torchvision_state_dict(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """The state_dict torchvision's ConvNeXt has for the weights of `model` (convnext_torch's),
    module by module as torchvision/models/convnext.py builds them: `features` holds the stem
    (Conv2dNormActivation: conv, LayerNorm2d), then each stage (CNBlocks) followed by its
    downsampling (LayerNorm2d, conv) except after the last; a CNBlock is `block` = (Conv2d,
    Permute, LayerNorm, Linear, GELU, Linear, Permute) and `layer_scale` (C, 1, 1);
    `classifier` = (LayerNorm2d, Flatten, Linear)."""
    features: list[torch.nn.Module] = [model.downsample_layers[0]]  # the stem
    for i, stage in enumerate(model.stages):
        features.append(stage)
        if i + 1 < len(model.stages):
            features.append(model.downsample_layers[i + 1])
    state = {}

    def put(name: str, module: torch.nn.Module) -> None:
        state[f"{name}.weight"] = module.weight.detach().numpy()
        state[f"{name}.bias"] = module.bias.detach().numpy()

    for n, feature in enumerate(features):
        if isinstance(feature[0], convnext_block_type()):  # a stage of CNBlocks
            for j, block in enumerate(feature):
                sequence = [block.dwconv, None, block.norm, block.pwconv1, None, block.pwconv2]
                for index, module in enumerate(sequence):
                    if module is not None:  # Permute and GELU hold no tensor
                        put(f"features.{n}.{j}.block.{index}", module)
                gamma = block.gamma.detach().numpy()
                state[f"features.{n}.{j}.layer_scale"] = gamma.reshape(-1, 1, 1)
        else:  # stem (conv, norm) or downsampling (norm, conv)
            for index, module in enumerate(feature):
                put(f"features.{n}.{index}", module)
    put("classifier.0", model.norm)  # Flatten at 1 holds nothing
    put("classifier.2", model.head)
    return state


def convnext_block_type() -> type:
    import convnext_torch

    return convnext_torch.Block


def official_of(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in model.state_dict().items()}


def save(tensors: dict[str, np.ndarray], path) -> None:
    torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()}, path)


@pytest.fixture(scope="module")
def atto() -> torch.nn.Module:
    return random_torch_model("convnext_atto", seed=91, num_classes=5)


def test_doubled_index_templates_read_and_write_both_ways():
    """features.{2i} and features.{2i+1}: stage i at 2i + 1, its downsampling at 2i."""
    rules = layouts.KEY_LAYOUTS["torchvision"].rules
    pairs = {
        "features.0.0.weight": "downsample_layers.0.0.weight",
        "features.0.1.bias": "downsample_layers.0.1.bias",
        "features.6.1.weight": "downsample_layers.3.1.weight",
        "features.7.2.block.0.weight": "stages.3.2.dwconv.weight",
        "features.13.0.block.5.bias": "stages.6.0.pwconv2.bias",
        "features.1.11.layer_scale": "stages.0.11.gamma",
    }
    for torchvision_key, official in pairs.items():
        assert layouts.rename(torchvision_key, rules) == official
        assert layouts.rename(official, rules, reverse=True) == torchvision_key
    for odd_one in ("features.2.0.block.0.weight", "features.3.0.weight", "features.x.0.weight"):
        assert layouts.rename(odd_one, rules) is None, odd_one


def test_torchvision_file_is_detected_and_converts_to_keras(capsys, tmp_path, atto):
    official = official_of(atto)
    torchvision = torchvision_state_dict(atto)
    assert len(torchvision) == len(official)
    save(torchvision, tmp_path / "tv.pth")

    state = load_state_dict(tmp_path / "tv.pth")
    assert state.layout == "torchvision"
    assert state.tensors.keys() == official.keys()
    for key, value in official.items():
        np.testing.assert_array_equal(state.tensors[key], value, err_msg=key)

    code, _, err = run(capsys, "convert", tmp_path / "tv.pth", tmp_path / "m.keras")
    assert code == 0, err
    assert "torchvision layout" in err and "inferred convnext_atto: num_classes=5" in err
    assert_same_logits(atto, keras.models.load_model(tmp_path / "m.keras"))


@pytest.mark.exhaustive
def test_keras_file_to_torchvision(capsys, tmp_path, atto):
    """A Keras file written as torchvision's state_dict: the same tensors under the names
    torchvision gives them (make test-all; tests/peers/test_torchvision.py loads it into
    torchvision itself)."""
    save(official_of(atto), tmp_path / "official.pth")
    assert run(capsys, "convert", tmp_path / "official.pth", tmp_path / "m.keras")[0] == 0
    torchvision = torchvision_state_dict(atto)
    code, _, err = run(
        capsys, "convert", tmp_path / "m.keras", tmp_path / "back.pth", "--to", "torchvision"
    )
    assert code == 0, err
    back = torch.load(tmp_path / "back.pth")
    assert back.keys() == torchvision.keys()
    for key, value in torchvision.items():
        np.testing.assert_array_equal(back[key].numpy(), value, err_msg=key)


def test_to_torchvision_writes_torchvisions_names_and_shapes(capsys, tmp_path, atto):
    save(official_of(atto), tmp_path / "official.pth")
    code, _, err = run(
        capsys,
        "convert",
        tmp_path / "official.pth",
        tmp_path / "tv.safetensors",
        "--to",
        "torchvision",
    )
    assert code == 0, err
    assert "torchvision layout" in err
    assert "load with: torchvision.models.ConvNeXt([CNBlockConfig(40, 80, 2)" in err
    from safetensors.numpy import load_file

    written = load_file(tmp_path / "tv.safetensors")
    expected = torchvision_state_dict(atto)
    assert written.keys() == expected.keys()
    for key, value in expected.items():
        np.testing.assert_array_equal(written[key], value, err_msg=key)

    code, out, err = run(capsys, "inspect", tmp_path / "tv.safetensors")
    assert code == 0, err
    assert "torchvision" in out and "convnext_atto" in out


def test_no_layer_scale_and_no_head_bias_are_written_as_ones_and_zeros(capsys, tmp_path):
    """torchvision always has both: ones and zeros compute what the model computes."""
    model = random_torch_model(
        "convnext_atto", seed=92, num_classes=3, layer_scale_init_value=0.0, head_bias=False
    )
    save(official_of(model), tmp_path / "official.pth")
    code, _, err = run(
        capsys, "convert", tmp_path / "official.pth", tmp_path / "tv.pth", "--to", "torchvision"
    )
    assert code == 0, err
    assert "layer_scale added as ones in 12 blocks" in err
    assert "classifier.2.bias added as zeros" in err
    written = torch.load(tmp_path / "tv.pth")
    scales = [k for k in written if k.endswith("layer_scale")]
    assert len(scales) == 12 and all(bool((written[k] == 1).all()) for k in scales)
    assert written["features.5.1.layer_scale"].shape == (160, 1, 1)
    assert written["classifier.2.bias"].shape == (3,) and not written["classifier.2.bias"].any()

    state = load_state_dict(tmp_path / "tv.pth")  # read back: a model with both, same logits
    back = random_torch_model("convnext_atto", num_classes=3)
    back.load_state_dict({k: torch.from_numpy(v) for k, v in state.tensors.items()})
    x = torch.from_numpy(np.random.default_rng(3).standard_normal((2, 3, 61, 127)).astype("f4"))
    with torch.no_grad():
        torch.testing.assert_close(back.eval()(x), model.eval()(x), rtol=0, atol=0)


def test_a_swapped_or_transposed_tensor_is_caught(capsys, tmp_path, atto):
    torchvision = torchvision_state_dict(atto)
    swapped = dict(torchvision)  # the two Linears of a block exchanged: shapes refuse it
    swapped["features.3.1.block.3.weight"] = torchvision["features.3.1.block.5.weight"]
    swapped["features.3.1.block.5.weight"] = torchvision["features.3.1.block.3.weight"]
    save(swapped, tmp_path / "swapped.pth")
    code, _, err = run(capsys, "convert", tmp_path / "swapped.pth", tmp_path / "s.pth")
    assert_one_line_error(code, err, "stages.1.1.pwconv1.weight: expected (320, 80)")

    # the depthwise kernel transposed (h <-> w): the same shape, other values read
    transposed = dict(torchvision)
    kernel = torchvision["features.5.3.block.0.weight"]
    transposed["features.5.3.block.0.weight"] = kernel.transpose(0, 1, 3, 2)
    state = load_state_dict(
        {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in transposed.items()}
    )
    assert not np.array_equal(state.tensors["stages.2.3.dwconv.weight"], kernel)


@pytest.mark.parametrize(
    "variant, options, fragment",
    [
        ("convnextv2_atto", {}, "torchvision's ConvNeXt is V1, this model has GRN"),
        ("convnext_atto", {"in_chans": 1}, "stem takes 3 input channels, this model 1"),
        ("convnext_atto", {"num_classes": 0}, "always ends in a classifier"),
    ],
)
def test_what_torchvision_cannot_hold_is_refused_by_name(
    capsys, tmp_path, variant, options, fragment
):
    model = random_torch_model(variant, seed=93, **options)
    save(official_of(model), tmp_path / "m.pth")
    code, _, err = run(
        capsys, "convert", tmp_path / "m.pth", tmp_path / "tv.pth", "--to", "torchvision"
    )
    assert_one_line_error(code, err, fragment)
    assert not (tmp_path / "tv.pth").exists()


@pytest.mark.parametrize(
    "spec, fragment",
    [
        (ModelSpec(kind="isotropic", depths=(2,), dims=(24,)), "no isotropic ConvNeXt"),
        (
            ModelSpec(kind="backbone", num_classes=0, out_indices=(0, 3)),
            "no detection backbone",
        ),
        (ModelSpec(norm="rmsnorm"), "norm layernorm, this model rmsnorm"),
        (ModelSpec(stem="overlap", dims=(96, 192, 384, 768)), "stem patchify, this model overlap"),
        (ModelSpec(head="mlp", head_hidden_size=8), "head linear, this model mlp"),
        (ModelSpec(norm_eps=1e-5), "norm_eps 1e-06, this model 1e-05"),
    ],
)
def test_timm_forms_isotropic_and_backbones_are_refused(spec, fragment):
    with pytest.raises(ConversionError, match=fragment):
        check_representable(spec)


# --- a forced layout that is not the file's -----------------------------------------------


@pytest.mark.parametrize(
    "written, forced, fragments",
    [
        (
            "timm",
            "official",
            ("not the official layout", "look like the timm layout", "--from timm"),
        ),
        (
            "torchvision",
            "official",
            ("not the official layout", "look like the torchvision layout"),
        ),
        ("torchvision", "dinov3", ("not the dinov3 layout", "look like the torchvision layout")),
        (
            "official",
            "torchvision",
            ("no name in the torchvision layout", "look like the official layout"),
        ),
        ("timm", "torchvision", ("no name in the torchvision layout", "look like the timm layout")),
    ],
)
def test_forcing_a_wrong_layout_says_one_thing(capsys, tmp_path, atto, written, forced, fragments):
    """The error names the layout the keys look like, and no line before it calls the file
    by the forced layout ("found ..., official layout" then "not official" contradicted
    itself)."""
    official = official_of(atto)
    tensors = (
        torchvision_state_dict(atto)
        if written == "torchvision"
        else write_layout(official, written)
    )
    save(tensors, tmp_path / "m.pth")
    code, _, err = run(
        capsys, "convert", tmp_path / "m.pth", tmp_path / "m.keras", "--from", forced
    )
    assert_one_line_error(code, err, *fragments)
    assert not [line for line in err.splitlines() if line.startswith("found ")]
