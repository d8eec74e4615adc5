"""Reading and writing the layouts people hold: official, timm, Hugging Face; .pth,
.safetensors and Hugging Face directories; EMA weights. The renaming is checked against key
lists written out by hand from each format's documented names, so that a renaming mistake made
in both directions cannot cancel out in a round trip."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from converters import ConversionError, load_state_dict
from converters.names import layouts
from tests.support.helpers import random_torch_model, write_layout

VARIANT = "convnext_atto"  # depths (2, 2, 6, 2), dims (40, 80, 160, 320)

# timm's names for the first pieces of convnext_atto (timm builds atto with conv_mlp=True)
TIMM_KEYS_WRITTEN_OUT = {
    "stem.0.weight": (40, 3, 4, 4),
    "stem.0.bias": (40,),
    "stem.1.weight": (40,),
    "stem.1.bias": (40,),
    "stages.0.blocks.0.gamma": (40,),
    "stages.0.blocks.0.conv_dw.weight": (40, 1, 7, 7),
    "stages.0.blocks.0.conv_dw.bias": (40,),
    "stages.0.blocks.0.norm.weight": (40,),
    "stages.0.blocks.0.norm.bias": (40,),
    "stages.0.blocks.0.mlp.fc1.weight": (160, 40, 1, 1),
    "stages.0.blocks.0.mlp.fc1.bias": (160,),
    "stages.0.blocks.0.mlp.fc2.weight": (40, 160, 1, 1),
    "stages.0.blocks.0.mlp.fc2.bias": (40,),
    "stages.1.downsample.0.weight": (40,),
    "stages.1.downsample.0.bias": (40,),
    "stages.1.downsample.1.weight": (80, 40, 2, 2),
    "stages.1.downsample.1.bias": (80,),
    "stages.3.blocks.1.mlp.fc2.weight": (320, 1280, 1, 1),
    "head.norm.weight": (320,),
    "head.norm.bias": (320,),
    "head.fc.weight": (10, 320),
    "head.fc.bias": (10,),
}

# Hugging Face ConvNextForImageClassification's names for the same pieces
HF_KEYS_WRITTEN_OUT = {
    "convnext.embeddings.patch_embeddings.weight": (40, 3, 4, 4),
    "convnext.embeddings.patch_embeddings.bias": (40,),
    "convnext.embeddings.layernorm.weight": (40,),
    "convnext.embeddings.layernorm.bias": (40,),
    "convnext.encoder.stages.0.layers.0.layer_scale_parameter": (40,),
    "convnext.encoder.stages.0.layers.0.dwconv.weight": (40, 1, 7, 7),
    "convnext.encoder.stages.0.layers.0.dwconv.bias": (40,),
    "convnext.encoder.stages.0.layers.0.layernorm.weight": (40,),
    "convnext.encoder.stages.0.layers.0.layernorm.bias": (40,),
    "convnext.encoder.stages.0.layers.0.pwconv1.weight": (160, 40),
    "convnext.encoder.stages.0.layers.0.pwconv1.bias": (160,),
    "convnext.encoder.stages.0.layers.0.pwconv2.weight": (40, 160),
    "convnext.encoder.stages.0.layers.0.pwconv2.bias": (40,),
    "convnext.encoder.stages.1.downsampling_layer.0.weight": (40,),
    "convnext.encoder.stages.1.downsampling_layer.0.bias": (40,),
    "convnext.encoder.stages.1.downsampling_layer.1.weight": (80, 40, 2, 2),
    "convnext.encoder.stages.1.downsampling_layer.1.bias": (80,),
    "convnext.encoder.stages.3.layers.1.pwconv2.weight": (320, 1280),
    "convnext.layernorm.weight": (320,),
    "convnext.layernorm.bias": (320,),
    "classifier.weight": (10, 320),
    "classifier.bias": (10,),
}


@pytest.fixture(scope="module")
def official():
    model = random_torch_model(VARIANT, seed=31, num_classes=10)
    return {k: v.numpy() for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    "layout, written_out, conv_mlp",
    [("timm", TIMM_KEYS_WRITTEN_OUT, True), ("hf", HF_KEYS_WRITTEN_OUT, False)],
)
def test_written_layout_has_the_documented_names(official, layout, written_out, conv_mlp):
    foreign = write_layout(official, layout, conv_mlp=conv_mlp)
    assert len(foreign) == len(official) == 128
    for key, shape in written_out.items():
        assert key in foreign, key
        assert foreign[key].shape == shape, key
    assert layouts.detect(foreign) == layout


@pytest.mark.parametrize("layout, conv_mlp", [("timm", True), ("timm", False), ("hf", False)])
def test_round_trip_through_a_layout_is_bit_exact(official, layout, conv_mlp):
    foreign = write_layout(official, layout, conv_mlp=conv_mlp)
    back, unmatched, _ = layouts.to_official(foreign, layout)
    assert unmatched == []
    assert list(back) == list(official)
    assert all(np.array_equal(back[k], official[k]) for k in official)


def test_reading_documented_names_gives_official_tensors(official):
    """Hand-written foreign keys, values taken from the official tensors they must name."""
    timm_pairs = {
        "stem.0.weight": "downsample_layers.0.0.weight",
        "stages.1.downsample.1.weight": "downsample_layers.1.1.weight",
        "stages.0.blocks.0.mlp.fc1.weight": "stages.0.0.pwconv1.weight",
        "stages.0.blocks.0.gamma": "stages.0.0.gamma",
        "head.norm.weight": "norm.weight",
        "head.fc.weight": "head.weight",
    }
    for foreign, expected in timm_pairs.items():
        assert layouts.rename(foreign, layouts.TIMM) == expected
    hf_pairs = {
        "convnext.embeddings.layernorm.bias": "downsample_layers.0.1.bias",
        "convnext.encoder.stages.2.downsampling_layer.0.weight": "downsample_layers.2.0.weight",
        "convnext.encoder.stages.2.layers.5.layer_scale_parameter": "stages.2.5.gamma",
        "convnext.encoder.stages.2.layers.5.layernorm.weight": "stages.2.5.norm.weight",
        "convnext.layernorm.weight": "norm.weight",
        "classifier.bias": "head.bias",
    }
    for foreign, expected in hf_pairs.items():
        assert layouts.rename(foreign, layouts.HF) == expected


def save(obj, path):
    if str(path).endswith(".safetensors"):
        save_file({k: torch.as_tensor(v).contiguous() for k, v in obj.items()}, str(path))
    else:
        torch.save(
            {k: torch.as_tensor(v) for k, v in obj.items()} if isinstance(obj, dict) else obj, path
        )
    return path


def assert_same(state, official):
    assert set(state.tensors) == set(official)  # safetensors keeps keys sorted
    assert all(np.array_equal(state.tensors[k], official[k]) for k in official)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize("layout, conv_mlp", [("timm", True), ("hf", False), ("official", False)])
def test_files_in_every_layout_are_detected_and_read(tmp_path, official, suffix, layout, conv_mlp):
    foreign = write_layout(official, layout, conv_mlp=conv_mlp)
    state = load_state_dict(save(foreign, tmp_path / f"ckpt{suffix}"))
    assert state.layout == layout
    assert_same(state, official)
    assert bool(state.notes) == conv_mlp  # says when 1x1-conv weights were reshaped


def test_hugging_face_directory_with_config(tmp_path, official):
    save(write_layout(official, "hf"), tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps({"layer_norm_eps": 1e-12, "num_labels": 10}))
    state = load_state_dict(tmp_path)
    assert state.layout == "hf" and state.config["layer_norm_eps"] == 1e-12
    assert_same(state, official)


def test_hugging_face_base_model_without_prefix_or_classifier(official):
    hf = write_layout(official, "hf")
    base = {k.removeprefix("convnext."): v for k, v in hf.items() if not k.startswith("classifier")}
    state = load_state_dict({k: torch.from_numpy(v) for k, v in base.items()})
    assert state.layout == "hf"
    assert set(state.tensors) == set(official) - {"head.weight", "head.bias"}


def test_bfloat16_safetensors_are_widened(tmp_path, official):
    path = tmp_path / "half.safetensors"
    save_file({k: torch.from_numpy(v).to(torch.bfloat16) for k, v in official.items()}, str(path))
    state = load_state_dict(path)
    assert state.dtypes == ("bfloat16",)
    assert all(v.dtype == np.float32 for v in state.tensors.values())
    expected = {
        k: torch.from_numpy(v).to(torch.bfloat16).float().numpy() for k, v in official.items()
    }
    assert all(np.array_equal(state.tensors[k], expected[k]) for k in official)


def test_ema_weights_are_chosen_explicitly(tmp_path, official):
    ema = {k: v + 1 for k, v in official.items()}
    checkpoint = {
        "model": {k: torch.from_numpy(v) for k, v in official.items()},
        "model_ema": {k: torch.from_numpy(v) for k, v in ema.items()},
        "epoch": 10,
        "optimizer": {},
    }
    torch.save(checkpoint, tmp_path / "train.pth")
    state = load_state_dict(tmp_path / "train.pth")
    assert state.wrapper == "model" and state.has_ema
    assert set(state.skipped) == {"model_ema", "epoch", "optimizer"}
    assert_same(state, official)
    state = load_state_dict(tmp_path / "train.pth", ema=True)
    assert state.wrapper == "model_ema"
    assert np.array_equal(state.tensors["head.bias"], ema["head.bias"])
    torch.save({"model": checkpoint["model"]}, tmp_path / "plain.pth")
    with pytest.raises(ConversionError, match="`ema` asked for, but there is no 'model_ema'"):
        load_state_dict(tmp_path / "plain.pth", ema=True)


def test_keys_without_a_rule_are_named_not_dropped(official):
    timm = write_layout(official, "timm", conv_mlp=True)
    timm["head.proj.weight"] = np.zeros((3, 3), np.float32)
    with pytest.raises(
        ConversionError, match=r"1 keys have no name in the timm layout \(head.proj"
    ):
        load_state_dict({k: torch.from_numpy(v) for k, v in timm.items()})


def test_forcing_the_wrong_layout_says_which_it_looks_like(official):
    timm = {k: torch.from_numpy(v) for k, v in write_layout(official, "timm").items()}
    with pytest.raises(ConversionError, match="look like the timm layout"):
        load_state_dict(timm, layout="hf")


def test_corrupt_safetensors_is_one_line(tmp_path):
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ConversionError, match="bad.safetensors: not a readable safetensors file"):
        load_state_dict(tmp_path / "bad.safetensors")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConversionError, match="a directory without model.safetensors"):
        load_state_dict(tmp_path / "empty")


def test_convnext_v2_grn_names_and_shapes_in_every_layout():
    model = random_torch_model("convnextv2_atto", seed=32, num_classes=10)
    official = {k: v.numpy() for k, v in model.state_dict().items()}
    assert official["stages.1.0.grn.gamma"].shape == (1, 1, 1, 320)
    timm = write_layout(official, "timm", conv_mlp=True)
    assert timm["stages.1.blocks.0.mlp.grn.weight"].shape == (320,)  # timm keeps (C,)
    assert timm["stages.1.blocks.0.mlp.grn.bias"].shape == (320,)
    hf = {
        k.replace("convnext.", "convnextv2.", 1): v for k, v in write_layout(official, "hf").items()
    }
    assert hf["convnextv2.encoder.stages.1.layers.0.grn.weight"].shape == (1, 1, 1, 320)
    for layout, foreign in (("timm", timm), ("hf", hf)):
        state = load_state_dict({k: torch.from_numpy(v) for k, v in foreign.items()})
        assert state.layout == layout
        assert set(state.tensors) == set(official)
        assert all(np.array_equal(state.tensors[k], official[k]) for k in official)


def test_the_command_line_offers_every_layout():
    from converters import cli

    offered = {
        action.dest: action.choices
        for name, command in cli.parser()._subparsers._group_actions[0].choices.items()
        if name == "convert"
        for action in command._actions
    }
    assert tuple(offered["layout"]) == ("auto", *layouts.LAYOUT_NAMES)
    assert tuple(offered["target"]) == layouts.TARGETS
    assert sorted(layouts.LAYOUT_NAMES) == sorted(layouts.KEY_LAYOUTS)
