"""A network saved from inside a training wrapper: every key under the wrapper's attribute
(Lightning's "model.", "net.", a distillation's "student.backbone.", ...). Such a prefix is
found and removed when that alone makes the keys a known layout, and said; `--prefix` names
one; a layout's own leading names ("encoder.", "visual.", "convnext.") are never taken for
one."""

import numpy as np
import pytest
import torch

from converters import load_state_dict
from converters.errors import ConversionError
from converters.files.checkpoint import common_prefixes
from tests.support.helpers import assert_one_line_error, random_torch_model, run, write_layout


@pytest.fixture(scope="module")
def official() -> dict[str, np.ndarray]:
    model = random_torch_model("convnext_atto", seed=95, num_classes=4)
    return {k: v.numpy() for k, v in model.state_dict().items()}


def under(prefix: str, tensors: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {prefix + k: torch.from_numpy(v) for k, v in tensors.items()}


def assert_same_tensors(found: dict, expected: dict) -> None:
    assert found.keys() == expected.keys()
    for key, value in expected.items():
        np.testing.assert_array_equal(found[key], value, err_msg=key)


@pytest.mark.parametrize(
    "prefix, layout",
    [
        ("model.", "official"),  # Lightning's LightningModule attribute
        ("net.", "timm"),
        ("student.backbone.", "timm"),  # several dotted parts
        ("model.module.", "official"),  # a wrapper inside DataParallel inside another
        ("ema_model.", "torchvision"),
    ],
)
def test_a_wrapper_prefix_on_every_key_is_found_and_said(official, prefix, layout):
    if layout == "torchvision":
        from tests.names.test_torchvision_layout import torchvision_state_dict

        model = random_torch_model("convnext_atto", seed=95, num_classes=4)
        written = torchvision_state_dict(model)
    else:
        written = write_layout(official, layout) if layout != "official" else official
    state = load_state_dict(under(prefix, written))
    assert state.layout == layout
    assert_same_tensors(state.tensors, official)
    assert f"removed the prefix {prefix!r} from all {len(written)} keys" in " ".join(state.notes)
    assert f"they are the {layout} layout" in " ".join(state.notes)


def test_module_prefix_and_a_wrapper_prefix_together(official):
    state = load_state_dict(under("module.model.", official))
    assert_same_tensors(state.tensors, official)
    notes = " ".join(state.notes)
    assert "'module.' (DataParallel)" in notes and "removed the prefix 'model.'" in notes


def test_a_layouts_own_leading_names_are_not_taken_for_a_prefix():
    """FCMAE's encoder alone is all "encoder.*": stripped, it would read as the official
    layout. OpenCLIP's image tower alone is all "visual.*"."""
    from tests.names.test_more_layouts import fcmae_checkpoint, open_clip_state_dict

    v2 = random_torch_model("convnextv2_atto", seed=96, num_classes=0)
    encoder = {
        k: v
        for k, v in fcmae_checkpoint({k: v.numpy() for k, v in v2.state_dict().items()}).items()
        if k.startswith("encoder.")
    }
    state = load_state_dict(under("", encoder))
    assert state.layout == "fcmae"
    assert not [note for note in state.notes if "removed the prefix" in note]
    state = load_state_dict(under("model.", encoder))  # the wrapper's part only, shortest first
    assert state.layout == "fcmae"
    assert "removed the prefix 'model.'" in " ".join(state.notes)

    tower = random_torch_model("convnext_atto", seed=97, num_classes=8, head_bias=False)
    clip = open_clip_state_dict({k: v.numpy() for k, v in tower.state_dict().items()})
    visual = {k: v for k, v in clip.items() if k.startswith("visual.")}
    state = load_state_dict(under("", visual))
    assert state.layout == "open_clip"
    assert not [note for note in state.notes if "removed the prefix" in note]


def test_a_wrapped_detection_checkpoint_keeps_its_backbone_rule(official):
    """model.backbone.* beside model.neck.*: "model." goes, then backbone.* is the model."""
    tensors = {**under("model.backbone.", official), "model.neck.0.weight": torch.ones(3)}
    state = load_state_dict(tensors)
    assert_same_tensors(state.tensors, official)
    assert state.outside_backbone == ("neck.0.weight",)


def test_a_prefix_not_on_every_key_is_not_guessed(official):
    tensors = {**under("model.", official), "loss.weight": torch.ones(2)}
    with pytest.raises(ConversionError, match="not a ConvNeXt state_dict in any known layout"):
        load_state_dict(tensors)


def test_prefix_option_names_one(capsys, tmp_path, official):
    torch.save({"state_dict": under("model.", official), "epoch": 3}, tmp_path / "lightning.ckpt")
    code, out, err = run(capsys, "inspect", tmp_path / "lightning.ckpt", "--prefix", "model")
    assert code == 0, err
    assert "removed the --prefix 'model.' from all 128 keys" in out
    assert "convnext_atto" in out

    code, _, err = run(
        capsys, "convert", tmp_path / "lightning.ckpt", tmp_path / "out.pth", "--prefix", "model."
    )
    assert code == 0, err
    assert_same_tensors(
        {k: v.numpy() for k, v in torch.load(tmp_path / "out.pth").items()}, official
    )


def test_prefix_option_on_keys_without_it_is_one_line(capsys, tmp_path, official):
    tensors = {**under("model.", official), "loss.weight": torch.ones(2), "step": torch.ones(1)}
    torch.save(tensors, tmp_path / "mixed.pth")
    for command in (
        ["inspect"],
        ["convert", tmp_path / "o.pth"],
        ["export", tmp_path / "o.tflite"],
    ):
        code, _, err = run(
            capsys, command[0], tmp_path / "mixed.pth", *command[1:], "--prefix", "model"
        )
        assert_one_line_error(
            code, err, "2 of 130 keys do not start with the --prefix 'model.' (loss.weight, step)"
        )
    code, _, err = run(
        capsys, "verify", tmp_path / "mixed.pth", tmp_path / "o.tflite", "--prefix", "net"
    )
    assert_one_line_error(
        code, err, "130 of 130 keys do not start with the --prefix 'net.'", status=2
    )


def test_common_prefixes_are_whole_dotted_parts_shortest_first():
    assert common_prefixes(["a.b.c.weight", "a.b.d.bias"]) == ["a.", "a.b."]
    assert common_prefixes(["ab.c.weight", "a.c.weight"]) == []
    assert common_prefixes(["a.weight", "a.bias"]) == ["a."]
    assert common_prefixes(["a.b.weight", "a.bias"]) == ["a."]  # a tensor's own name never
