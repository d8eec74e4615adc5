"""The command line across layouts, file types and directions: timm, Hugging Face and official
sources; Keras -> PyTorch; keras.applications as a target; `convnext inspect`."""

import json

import keras
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import convnext_tf
from converters import load_state_dict
from converters.weights import keras_applications
from tests.support.helpers import (
    assert_one_line_error,
    assert_same_logits,
    random_torch_model,
    run,
    write_layout,
)

VARIANT = "convnext_atto"


@pytest.fixture(scope="module")
def torch_model():
    return random_torch_model(VARIANT, seed=41, num_classes=10)


@pytest.fixture(scope="module")
def official(torch_model):
    return {k: v.numpy() for k, v in torch_model.state_dict().items()}


def write(tensors: dict, path, layout="official", conv_mlp=False):
    foreign = write_layout(tensors, layout, conv_mlp=conv_mlp)
    if str(path).endswith(".safetensors"):
        save_file({k: torch.from_numpy(v).contiguous() for k, v in foreign.items()}, str(path))
    else:
        torch.save({k: torch.from_numpy(v) for k, v in foreign.items()}, path)
    return path


def test_timm_safetensors_to_keras(capsys, tmp_path, torch_model, official):
    src = write(official, tmp_path / "timm.safetensors", "timm", conv_mlp=True)
    code, _, err = run(capsys, "convert", src, tmp_path / "m.keras")
    assert code == 0, err
    assert "timm layout" in err and "1x1-conv MLP weights" in err
    assert_same_logits(torch_model, keras.models.load_model(tmp_path / "m.keras"))


def test_hugging_face_directory_to_keras_weights(capsys, tmp_path, torch_model, official):
    write(official, tmp_path / "model.safetensors", "hf")
    (tmp_path / "config.json").write_text(json.dumps({"layer_norm_eps": 1e-12}))
    dst = tmp_path / "m.weights.h5"
    code, _, err = run(capsys, "convert", tmp_path, dst)
    assert code == 0, err
    assert "hf layout" in err and "final LayerNorm eps 1e-12" in err
    keras_model = convnext_tf.create_model(VARIANT, num_classes=10)
    keras_model.load_weights(dst)
    assert_same_logits(torch_model, keras_model)


@pytest.mark.parametrize(
    "layout, suffix",
    [
        ("official", ".pth"),
        ("timm", ".safetensors"),
        pytest.param("official", ".safetensors", marks=pytest.mark.exhaustive),
        pytest.param("timm", ".pth", marks=pytest.mark.exhaustive),
    ],
)
def test_keras_back_to_pytorch_is_bit_exact(capsys, tmp_path, official, suffix, layout):
    src = write(official, tmp_path / "ckpt.pth")
    assert run(capsys, "convert", src, tmp_path / "m.keras")[0] == 0
    dst = tmp_path / f"back{suffix}"
    code, _, err = run(capsys, "convert", tmp_path / "m.keras", dst, "--to", layout)
    assert code == 0, err
    state = load_state_dict(dst)
    assert state.layout == layout
    assert set(state.tensors) == set(official)
    assert all(np.array_equal(state.tensors[k], official[k]) for k in official)
    if layout == "timm":  # timm's atto keeps its MLP as 1x1 convs
        raw = load_state_dict(dst, layout="timm")
        assert raw.notes and "1x1-conv" in raw.notes[0]


def test_keras_weights_file_needs_its_variant(capsys, tmp_path, official):
    src = write(official, tmp_path / "ckpt.pth")
    assert run(capsys, "convert", src, tmp_path / "m.weights.h5")[0] == 0
    code, _, err = run(capsys, "convert", tmp_path / "m.weights.h5", tmp_path / "a.pth")
    assert_one_line_error(code, err, "does not record its variant: pass --variant")
    code, _, err = run(
        capsys, "convert", tmp_path / "m.weights.h5", tmp_path / "b.pth",
        "--variant", "convnext_nano", "--num-classes", 10,
    )  # fmt: skip
    assert_one_line_error(code, err, "holds 128 arrays", "has 146: another variant?")
    code, _, err = run(
        capsys, "convert", tmp_path / "m.weights.h5", tmp_path / "c.pth",
        "--variant", VARIANT, "--num-classes", 10,
    )  # fmt: skip
    assert code == 0, err
    state = load_state_dict(tmp_path / "c.pth")
    assert all(np.array_equal(state.tensors[k], official[k]) for k in official)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pth", "ckpt.pth", "m.weights.h5"]


def test_timm_file_to_official_file(capsys, tmp_path, official):
    src = write(official, tmp_path / "timm.pth", "timm", conv_mlp=True)
    code, _, err = run(capsys, "convert", src, tmp_path / "official.safetensors")
    assert code == 0, err
    state = load_state_dict(tmp_path / "official.safetensors")
    assert state.layout == "official"
    assert all(np.array_equal(state.tensors[k], official[k]) for k in official)


def test_ema_weights_are_converted_when_asked(capsys, tmp_path, official):
    ema = {k: (v * 0.5).astype(np.float32) for k, v in official.items()}
    torch.save(
        {
            "model": {k: torch.from_numpy(v) for k, v in official.items()},
            "model_ema": {k: torch.from_numpy(v) for k, v in ema.items()},
            "epoch": 3,
        },
        tmp_path / "train.pth",
    )
    code, _, err = run(capsys, "convert", tmp_path / "train.pth", tmp_path / "a.keras")
    assert code == 0 and "also holds EMA weights" in err
    code, _, err = run(capsys, "convert", tmp_path / "train.pth", tmp_path / "b.pth", "--ema")
    assert code == 0 and "under 'model_ema'" in err
    state = load_state_dict(tmp_path / "b.pth")
    assert all(np.array_equal(state.tensors[k], ema[k]) for k in official)


def test_inspect_a_training_checkpoint(capsys, tmp_path, official):
    timm = write_layout(official, "timm", conv_mlp=True)
    as_torch = {k: torch.from_numpy(v).half() for k, v in timm.items()}
    torch.save({"model": as_torch, "model_ema": as_torch, "epoch": 1}, tmp_path / "t.pth")
    code, out, _ = run(capsys, "inspect", tmp_path / "t.pth")
    assert code == 0
    lines = dict(line.split(":", 1) for line in out.strip().splitlines())
    assert lines["layout"].strip() == "timm"
    assert lines["variant"].strip() == VARIANT
    assert lines["classes"].strip() == "10"
    assert lines["dtype"].strip() == "float16"
    assert lines["tensors"].strip() == "128"
    assert lines["parameters"].strip() == f"{sum(v.size for v in official.values()):,}"
    assert lines["EMA weights"].strip() == "under 'model_ema': --ema converts them instead"
    assert not list(tmp_path.glob("*.keras"))  # inspect writes nothing


def test_inspect_keras_files(capsys, tmp_path, official):
    src = write(official, tmp_path / "ckpt.pth")
    assert run(capsys, "convert", src, tmp_path / "m.keras")[0] == 0
    code, out, _ = run(capsys, "inspect", tmp_path / "m.keras")
    assert code == 0 and VARIANT in out and "classes:        10" in out


@pytest.mark.parametrize(
    "variant",
    [
        "convnext_tiny",
        *(
            pytest.param(v, marks=pytest.mark.exhaustive)  # 50M..350M parameters
            for v in ("convnext_small", "convnext_base", "convnext_large", "convnext_xlarge")
        ),
    ],
)
def test_keras_applications_target_loads_and_agrees(capsys, tmp_path, variant):
    torch_model = random_torch_model(variant, seed=42, num_classes=10).eval()
    src = write({k: v.numpy() for k, v in torch_model.state_dict().items()}, tmp_path / "t.pth")
    dst = tmp_path / "kapp.weights.h5"
    code, _, err = run(capsys, "convert", src, dst, "--to", "keras-applications")
    assert code == 0, err
    constructor = getattr(keras.applications, keras_applications.CONSTRUCTORS[variant])
    model = constructor(weights=str(dst), classes=10, classifier_activation=None)
    x = np.random.default_rng(2).standard_normal((2, 3, 224, 224)).astype(np.float32)
    pixels = keras_applications.to_pixels(x).transpose(0, 2, 3, 1).astype(np.float32)
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(x)).numpy()
    found = np.asarray(model(pixels))
    np.testing.assert_allclose(found, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    assert (found.argmax(1) == expected.argmax(1)).all()

    no_top = tmp_path / "notop.weights.h5"
    code, _, err = run(capsys, "convert", src, no_top, "--to", "keras-applications", "--no-top")
    assert code == 0 and "skipped (no top): head.weight, head.bias" in err
    features = constructor(
        weights=str(no_top), include_top=False, input_shape=(None, None, 3), pooling="avg"
    )
    with torch.no_grad():
        expected = torch_model.forward_features(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(np.asarray(features(pixels)), expected, rtol=1e-4, atol=1e-4)


def test_keras_applications_has_no_atto(capsys, tmp_path, official):
    src = write(official, tmp_path / "t.pth")
    code, _, err = run(
        capsys, "convert", src, tmp_path / "k.weights.h5", "--to", "keras-applications"
    )
    assert_one_line_error(code, err, "keras.applications has no convnext_atto")
    assert not (tmp_path / "k.weights.h5").exists()


def test_target_and_suffix_must_agree(capsys, tmp_path, official):
    src = write(official, tmp_path / "t.pth")
    code, _, err = run(capsys, "convert", src, tmp_path / "k.keras", "--to", "timm")
    assert_one_line_error(code, err, "--to timm writes .pth or .pt or .bin or .safetensors files")
    code, _, err = run(capsys, "convert", src, tmp_path / "k.keras", "--to", "keras-applications")
    assert_one_line_error(code, err, "--to keras-applications writes .weights.h5 files")


# --- Hugging Face out ----------------------------------------------------------------------


def test_hf_target_writes_a_directory_that_reads_back_exactly(capsys, tmp_path, official):
    src = write(official, tmp_path / "m.pth")
    code, _, err = run(capsys, "convert", src, tmp_path / "hf", "--to", "hf")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "hf").iterdir()) == [
        "config.json",
        "model.safetensors",
    ]
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["architectures"] == ["ConvNextForImageClassification"]
    assert config["layer_norm_eps"] == 1e-6  # not transformers' default 1e-12
    assert (config["hidden_sizes"], config["depths"]) == ([40, 80, 160, 320], [2, 2, 6, 2])
    assert len(config["id2label"]) == 10
    state = load_state_dict(tmp_path / "hf")
    assert state.layout == "hf" and not state.notes
    assert state.tensors.keys() == official.keys()
    assert all(np.array_equal(state.tensors[k], v) for k, v in official.items())


@pytest.mark.parametrize("spec", ["convnextv2_atto", "convnext_atto_no_head"])
def test_hf_target_names_v2_and_headless_models_as_transformers_does(capsys, tmp_path, spec):
    headless = spec.endswith("_no_head")
    torch_model = random_torch_model(
        spec.removesuffix("_no_head"), seed=42, num_classes=0 if headless else 3
    )
    src = tmp_path / "m.pth"
    torch.save(torch_model.state_dict(), src)
    assert run(capsys, "convert", src, tmp_path / "hf", "--to", "hf")[0] == 0
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    keys = list(load_file(tmp_path / "hf" / "model.safetensors"))
    if headless:
        assert config["architectures"] == ["ConvNextModel"]
        assert "embeddings.patch_embeddings.weight" in keys and "classifier.weight" not in keys
    else:
        assert config["architectures"] == ["ConvNextV2ForImageClassification"]
        assert "layer_scale_init_value" not in config
        assert all(k.startswith(("convnextv2.", "classifier.")) for k in keys)
    state = load_state_dict(tmp_path / "hf")
    assert all(
        torch.equal(torch.from_numpy(state.tensors[k]), v)
        for k, v in torch_model.state_dict().items()
    )


@pytest.mark.parametrize(
    "spec, message",
    [
        ("convnext_atto_rms", "transformers' ConvNeXt has norm layernorm, this model rmsnorm"),
        ("convnext_isotropic_small", "transformers has no isotropic ConvNeXt"),
        ("convnextv2_atto", "transformers' ConvNeXt V2 has no layer scale"),
    ],
)
def test_hf_target_refuses_what_transformers_cannot_hold(capsys, tmp_path, spec, message):
    torch_model = random_torch_model(spec, seed=43, layer_scale_init_value=1e-6)
    src = tmp_path / "m.pth"
    torch.save(torch_model.state_dict(), src)
    code, _, err = run(capsys, "convert", src, tmp_path / "hf", "--to", "hf")
    assert_one_line_error(code, err, message)
    assert not (tmp_path / "hf").exists()


def test_hf_target_replaces_only_a_hugging_face_directory(capsys, tmp_path, official):
    src = write(official, tmp_path / "m.pth")
    (tmp_path / "other").mkdir()
    code, _, err = run(capsys, "convert", src, tmp_path / "other", "--to", "hf", "--force")
    assert_one_line_error(code, err, "not a Hugging Face directory")
    assert run(capsys, "convert", src, tmp_path / "hf", "--to", "hf")[0] == 0
    code, _, err = run(capsys, "convert", src, tmp_path / "hf", "--to", "hf")
    assert_one_line_error(code, err, "exists; pass --force")
    assert run(capsys, "convert", src, tmp_path / "hf", "--to", "hf", "--force")[0] == 0
    assert (tmp_path / "hf" / "model.safetensors").stat().st_mode & 0o044  # not safetensors' 0600
    (tmp_path / "hf" / "preprocessor_config.json").write_text("{}")  # someone else's file
    code, _, err = run(capsys, "convert", src, tmp_path / "hf", "--to", "hf", "--force")
    assert_one_line_error(code, err, "holds files this command does not write")
    assert (tmp_path / "hf" / "preprocessor_config.json").exists()
    code, _, err = run(capsys, "convert", src, tmp_path / "hf.safetensors", "--to", "hf")
    assert_one_line_error(code, err, "--to hf writes a directory, not a file")
