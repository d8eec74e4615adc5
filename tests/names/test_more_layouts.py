"""The layouts of ConvNeXt checkpoints beyond the classifiers: ConvNeXt V2's FCMAE pre-training
(sparse-conv shapes), Meta's DINOv3 and Hugging Face's DINOv3ConvNextModel, and OpenCLIP's image
towers. Each file is written here from the source's own description of its keys and shapes
(the real packages: test_peers.py), read by the loader users run, and checked tensor by tensor
and through both frameworks' outputs."""

import keras
import numpy as np
import pytest
import torch

from converters import load_state_dict
from tests.support.helpers import (
    assert_one_line_error,
    assert_same_logits,
    random_torch_model,
    run,
    write_layout,
)


def official_of(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in model.state_dict().items()}


# --- FCMAE ---------------------------------------------------------------------------------


def minkowski_kernel(weight: np.ndarray) -> np.ndarray:
    """A dense conv weight (out, in, k, k) as MinkowskiEngine stores it: (k*k, in, out), its
    offsets listed with the first spatial axis fastest (entry h + k*w is tap (h, w));
    depthwise (C, 1, k, k) as (k*k, C). Written out with loops, from MinkowskiEngine's
    kernel_region.hpp, not from the converter's reshape."""
    out_c, in_c, k, _ = weight.shape
    depthwise = in_c == 1
    kernel = np.zeros((k * k, out_c) if depthwise else (k * k, in_c, out_c), weight.dtype)
    for h in range(k):
        for w in range(k):
            if depthwise:
                kernel[h + k * w] = weight[:, 0, h, w]
            else:
                kernel[h + k * w] = weight[:, :, h, w].T
    return kernel


def fcmae_checkpoint(official: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """ConvNeXt-V2's FCMAE state_dict (models/fcmae.py, convnextv2_sparse.py) for the encoder
    with these weights: a dense stem, MinkowskiLayerNorm (.ln), MinkowskiLinear (.linear),
    sparse-conv kernels and (1, C) biases and GRN parameters; then a decoder, mask token and
    projections. The encoder has no final norm and no head."""
    fcmae = {}
    for key, value in official.items():
        if key.startswith(("norm.", "head.")):
            continue
        if key.startswith("downsample_layers.0."):
            fcmae[f"encoder.{key}"] = value
            continue
        parts = key.split(".")
        if key.endswith(".1.weight") and key.startswith("downsample_layers"):
            fcmae[f"encoder.{key.removesuffix('weight')}kernel"] = minkowski_kernel(value)
        elif key.endswith("dwconv.weight"):
            fcmae[f"encoder.{key.removesuffix('weight')}kernel"] = minkowski_kernel(value)
        elif ".grn." in key:
            fcmae[f"encoder.{key}"] = value.reshape(1, -1)
        elif parts[-2] in ("norm", "0") and key.startswith(("stages", "downsample_layers")):
            fcmae[f"encoder.{'.'.join(parts[:-1])}.ln.{parts[-1]}"] = value
        elif parts[-2] in ("pwconv1", "pwconv2"):
            fcmae[f"encoder.{'.'.join(parts[:-1])}.linear.{parts[-1]}"] = value
        elif key.endswith(".bias"):  # sparse convs' biases
            fcmae[f"encoder.{key}"] = value.reshape(1, -1)
        else:
            raise AssertionError(key)
    rng = np.random.default_rng(0)
    for key, shape in {
        "proj.weight": (16, 320, 1, 1),
        "mask_token": (1, 16, 1, 1),
        "decoder.0.dwconv.weight": (16, 1, 7, 7),
        "decoder.0.pwconv1.weight": (64, 16),
        "pred.weight": (48, 16, 1, 1),
    }.items():
        fcmae[key] = rng.standard_normal(shape).astype(np.float32)
    return fcmae


def test_fcmae_encoder_reads_into_the_dense_v2_model(capsys, tmp_path):
    torch_model = random_torch_model("convnextv2_atto", seed=71, num_classes=0)
    with torch.no_grad():  # where fine-tuning starts: the encoder has no final norm
        torch_model.norm.weight.fill_(1.0)
        torch_model.norm.bias.zero_()
    official = official_of(torch_model)
    checkpoint = {k: torch.from_numpy(v) for k, v in fcmae_checkpoint(official).items()}
    torch.save({"model": checkpoint, "epoch": 799}, tmp_path / "fcmae.pt")

    state = load_state_dict(tmp_path / "fcmae.pt")
    assert state.layout == "fcmae"
    assert state.tensors.keys() == official.keys()
    for key, value in official.items():
        np.testing.assert_array_equal(state.tensors[key], value, err_msg=key)
    notes = " ".join(state.notes)
    assert "skipped 5 tensors that are not the model's" in notes
    assert "2 of the FCMAE decoder (decoder.*)" in notes
    assert "3 of its mask token and projections" in notes
    assert "norm.weight 1 and norm.bias 0 added" in notes

    code, _, err = run(capsys, "convert", tmp_path / "fcmae.pt", tmp_path / "m.keras")
    assert code == 0, err
    assert "fcmae layout" in err and "inferred convnextv2_atto" in err
    assert_same_logits(torch_model, keras.models.load_model(tmp_path / "m.keras"))


def test_a_transposed_sparse_kernel_is_caught(tmp_path):
    """The (h, w) order of the sparse kernels matters: read the other way, the features move."""
    torch_model = random_torch_model("convnextv2_atto", seed=72, num_classes=0)
    official = official_of(torch_model)
    fcmae = fcmae_checkpoint(official)
    key = "encoder.stages.2.3.dwconv.kernel"
    fcmae[key] = minkowski_kernel(official["stages.2.3.dwconv.weight"].transpose(0, 1, 3, 2))
    state = load_state_dict({k: torch.from_numpy(v) for k, v in fcmae.items()})
    assert not np.array_equal(
        state.tensors["stages.2.3.dwconv.weight"], official["stages.2.3.dwconv.weight"]
    )


# --- DINOv3 --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dinov3_model():
    """A DINOv3 ConvNeXt is the paper's ConvNeXt without a head (tiny..large; atto is as good a
    test of the names and takes less time)."""
    return random_torch_model("convnext_atto", seed=73, num_classes=0)


def test_dinov3_file_reads_as_the_headless_convnext(capsys, tmp_path, dinov3_model):
    official = official_of(dinov3_model)
    dinov3 = {
        **official,
        "norms.3.weight": official["norm.weight"],  # the same module under a second name
        "norms.3.bias": official["norm.bias"],
    }
    torch.save({k: torch.from_numpy(v) for k, v in dinov3.items()}, tmp_path / "d.pth")
    code, _, err = run(capsys, "convert", tmp_path / "d.pth", tmp_path / "m.keras")
    assert code == 0, err
    assert "dinov3 layout" in err and "skipped 2 tensors" in err and "num_classes=0" in err
    keras_model = keras.models.load_model(tmp_path / "m.keras")
    assert_same_logits(dinov3_model, keras_model)  # the pooled features: x_norm_clstoken
    x = np.random.default_rng(2).standard_normal((2, 3, 61, 127)).astype(np.float32)
    with torch.no_grad():
        expected = dinov3_model.forward_patch_features(torch.from_numpy(x)).numpy()
    found = keras_model.forward_patch_features(x.transpose(0, 2, 3, 1))
    assert expected.shape == (2, 1 * 3, 320)  # 61 x 127 -> 1 x 3 positions
    np.testing.assert_allclose(keras.ops.convert_to_numpy(found), expected, rtol=1e-4, atol=1e-4)

    dinov3["norms.3.bias"] = dinov3["norms.3.bias"] + 1
    torch.save({k: torch.from_numpy(v) for k, v in dinov3.items()}, tmp_path / "bad.pth")
    code, _, err = run(capsys, "convert", tmp_path / "bad.pth", tmp_path / "bad.keras")
    assert_one_line_error(code, err, "norms.3.bias differs from norm.bias")


def test_hugging_face_dinov3_keys_read_with_or_without_model_prefix(dinov3_model):
    official = official_of(dinov3_model)
    renamed = {}
    for key, value in official.items():  # DINOv3ConvNextModel's names, from its source
        parts = key.split(".")
        if key.startswith("downsample_layers."):
            new = f"stages.{parts[1]}.downsample_layers.{parts[2]}.{parts[3]}"
        elif key.startswith("stages."):
            name = {"dwconv": "depthwise_conv", "norm": "layer_norm"}.get(parts[3], parts[3])
            name = name.replace("pwconv", "pointwise_conv")
            new = ".".join([f"stages.{parts[1]}.layers.{parts[2]}", name, *parts[4:]])
        else:
            new = key.replace("norm.", "layer_norm.")
        renamed[new] = value
    for prefix in ("", "model."):  # transformers 5 holds the stages under "model."
        tensors = {
            (prefix + k if k.startswith("stages.") else k): torch.from_numpy(v)
            for k, v in renamed.items()
        }
        state = load_state_dict(tensors)
        assert state.layout == "hf"
        assert state.tensors.keys() == official.keys()
        assert all(np.array_equal(state.tensors[k], v) for k, v in official.items())


# --- OpenCLIP ------------------------------------------------------------------------------


def open_clip_state_dict(official: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """OpenCLIP's names (open_clip timm_model.py): timm's trunk under visual.trunk. with its
    classifier reset (head.norm kept), visual.head.proj (linear) or visual.head.mlp.fc1/fc2
    (mlp, fc2 without bias); a text tower beside it."""
    head = {k: v for k, v in official.items() if k.startswith(("head.", "pre_logits."))}
    trunk = write_layout({k: v for k, v in official.items() if k not in head}, "timm")
    clip = {f"visual.trunk.{k}": v for k, v in trunk.items()}
    if "pre_logits.0.weight" in head:
        clip["visual.head.mlp.fc1.weight"] = head["pre_logits.0.weight"]
        clip["visual.head.mlp.fc1.bias"] = head["pre_logits.0.bias"]
        clip["visual.head.mlp.fc2.weight"] = head["head.weight"]
    else:
        clip["visual.head.proj.weight"] = head["head.weight"]
    clip["text_projection"] = np.zeros((8, 16), np.float32)
    clip["logit_scale"] = np.ones((), np.float32)
    return clip


@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_open_clip_image_tower_reads_with_its_projection(capsys, tmp_path, head):
    """OpenCLIP's towers are timm's ConvNeXt under visual.trunk. with a bias-free projection
    (or an MLP whose last Linear has no bias) to the embedding; a whole CLIP state_dict also
    holds the text tower, which is skipped. convnext_atto's trunk stands in for base..xxlarge
    (test_peers.py builds a real tower)."""
    options = {"head": "mlp", "head_hidden_size": 64} if head == "mlp" else {}
    torch_model = random_torch_model(
        "convnext_atto", seed=74, num_classes=32, head_bias=False, **options
    )
    official = official_of(torch_model)
    clip = open_clip_state_dict(official)
    torch.save({k: torch.from_numpy(v) for k, v in clip.items()}, tmp_path / "c.pt")
    state = load_state_dict(tmp_path / "c.pt")
    assert state.layout == "open_clip"
    assert state.tensors.keys() == official.keys()
    assert all(np.array_equal(state.tensors[k], v) for k, v in official.items())
    assert "2 of the text tower and logit scale (outside visual.*)" in " ".join(state.notes)
    if head == "mlp":  # no named variant has atto's trunk with an MLP head: shapes only here
        return
    code, _, err = run(capsys, "convert", tmp_path / "c.pt", tmp_path / "m.keras")
    assert code == 0, err
    assert "open_clip layout" in err and "head_bias=False" in err
    assert_same_logits(torch_model, keras.models.load_model(tmp_path / "m.keras"))
    code, _, err = run(capsys, "convert", tmp_path / "c.pt", tmp_path / "t.pth", "--to", "timm")
    assert code == 0 and "head.fc.bias added as zeros" in err, err
    timm = torch.load(tmp_path / "t.pth")
    assert not timm["head.fc.bias"].any() and timm["head.fc.weight"].shape == (32, 320)


def test_wrong_layout_names_the_right_one(capsys, tmp_path, dinov3_model):
    """A layout forced on a file of another says which one the keys look like."""
    official = official_of(dinov3_model)
    torch.save({k: torch.from_numpy(v) for k, v in official.items()}, tmp_path / "m.pth")
    code, _, err = run(
        capsys, "convert", tmp_path / "m.pth", tmp_path / "m.keras", "--from", "open_clip"
    )
    assert_one_line_error(
        code, err, "no tensor of the model in the open_clip layout", "official layout"
    )


def test_inspect_tells_simplenorm_from_rmsnorm(capsys, tmp_path):
    torch_model = random_torch_model("convnext_zepto_rms", seed=75)
    write_path = tmp_path / "z.safetensors"
    from safetensors.numpy import save_file

    save_file(write_layout(official_of(torch_model), "timm"), str(write_path))
    code, out, err = run(capsys, "inspect", write_path)
    assert code == 0, err
    assert "convnext_zepto_rms" in out and "unknown" not in out
