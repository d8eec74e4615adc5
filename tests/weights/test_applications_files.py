"""keras.applications ConvNeXt files read back into PyTorch, and HDF5 files named for what
they are. The files are written by keras.applications itself (`save_weights`, `save` to .keras
and to legacy .h5) from a model whose every variable is random, converted through the command
line and compared with keras.applications' own outputs: it is fed [0, 255] pixels, the
PyTorch model the same pictures normalised."""

from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
import torch

import convnext_torch
from converters import load_state_dict
from converters.weights import keras_applications
from tests.support.helpers import assert_one_line_error, run

CLASSES = 5


def randomise(model: keras.Model, seed: int) -> None:
    """Every variable random: kernels small, norms' and layer scale's gammas around 1 (a
    LayerScale of 1e-6 would hide its block), biases and betas of either sign."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        shape = tuple(variable.shape)
        if len(shape) == 1:
            centre = 1.0 if variable.path.endswith(("gamma", "variable")) else 0.0
            value = centre + 0.3 * rng.standard_normal(shape)
            if "layer_scale" in variable.path:
                value = 0.5 + 0.3 * rng.standard_normal(shape)
        else:
            value = 0.05 * rng.standard_normal(shape)
        variable.assign(value.astype(variable.dtype))


class Saved(dict):
    """A keras.applications model's files, each written the first time a test asks."""

    def __init__(self, model: keras.Model, folder: Path, **extra):
        super().__init__(extra)
        self.model, self.folder = model, folder

    def __missing__(self, kind: str) -> Path:
        path = self.folder / {"weights": "tiny.weights.h5", "keras": "tiny.keras"}.get(
            kind, "tiny.h5"
        )
        if kind == "weights":
            self.model.save_weights(path)
        else:  # .keras, or Keras 3's legacy HDF5 format (tiny.h5)
            self.model.save(path)
        self[kind] = path
        return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Saved:
    """A keras.applications ConvNeXtTiny as users have it (preprocessing built in, a softmax
    head), random; its logits on two 224 x 224 pictures (the size it is built for with its
    top), taken with the softmax set aside for the call; its files written on demand."""
    model = keras.applications.ConvNeXtTiny(weights=None, classes=CLASSES)
    randomise(model, seed=3)
    pixels = np.random.default_rng(4).uniform(0, 255, (2, 224, 224, 3)).astype(np.float32)
    head = model.get_layer("convnext_tiny_head_dense")
    probabilities = np.asarray(model(pixels))
    head.activation = keras.activations.linear
    logits = np.asarray(model(pixels))
    head.activation = keras.activations.softmax  # saved as users have it
    expected = torch.softmax(torch.from_numpy(logits.copy()), 1).numpy()
    np.testing.assert_allclose(probabilities, expected, atol=1e-6)
    return Saved(model, tmp_path_factory.mktemp("applications"), pixels=pixels, logits=logits)


def normalised(pixels: np.ndarray) -> torch.Tensor:
    """What the PyTorch model takes: (x / 255 - mean) / std, NCHW."""
    mean = np.asarray(keras_applications.IMAGENET_MEAN)
    std = np.asarray(keras_applications.IMAGENET_STD)
    return torch.from_numpy(((pixels / 255.0 - mean) / std).transpose(0, 3, 1, 2).astype("f4"))


def torch_logits(path: Path, pixels: np.ndarray, **create) -> np.ndarray:
    """The converted file (any layout this project reads) in convnext_torch, run."""
    model = convnext_torch.create_model("convnext_tiny", **create).eval()
    tensors = load_state_dict(path).tensors
    model.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()}, strict=True)
    with torch.no_grad():
        return model(normalised(pixels)).numpy()


def assert_agree(found: np.ndarray, expected: np.ndarray) -> None:
    np.testing.assert_allclose(found, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    assert (found.argmax(1) == expected.argmax(1)).all()


@pytest.mark.exhaustive
def test_weights_h5_to_official_gives_its_logits(capsys, tmp_path, tiny):
    """The positional .weights.h5: the variant and classes read off the shapes."""
    dst = tmp_path / "tiny.pth"
    code, _, err = run(capsys, "convert", tiny["weights"], dst)
    assert code == 0, err
    assert "found 182 arrays (float32) of a keras.applications ConvNeXtTiny" in err
    assert f"inferred convnext_tiny: num_classes={CLASSES}" in err
    assert "pixels in [0, 255]" in err.splitlines()[-1]  # how to feed it, said last
    assert_agree(torch_logits(dst, tiny["pixels"], num_classes=CLASSES), tiny["logits"])


def test_keras_with_softmax_to_timm_gives_its_logits(capsys, tmp_path, tiny):
    """The .keras file: its config is read as data (the softmax and the preprocessing are
    said), its weights by position; written in the timm layout."""
    dst = tmp_path / "tiny.safetensors"
    code, _, err = run(capsys, "convert", tiny["keras"], dst, "--to", "timm")
    assert code == 0, err
    assert "timm layout" in err and "its head ends in a softmax" in err
    assert "normalised [0, 255] pixels itself (include_preprocessing)" in err
    assert load_state_dict(dst).layout == "timm"
    assert_agree(torch_logits(dst, tiny["pixels"], num_classes=CLASSES), tiny["logits"])


@pytest.mark.exhaustive
def test_legacy_h5_and_hf(capsys, tmp_path, tiny):
    """model.save("x.h5") (legacy HDF5, arrays by layer name) with `variant` named, to a
    Hugging Face directory."""
    dst = tmp_path / "hf"
    code, _, err = run(
        capsys, "convert", tiny["legacy"], dst, "--to", "hf", "--variant", "convnext_tiny"
    )
    assert code == 0, err
    assert "legacy HDF5, by layer name" in err
    assert_agree(torch_logits(dst, tiny["pixels"], num_classes=CLASSES), tiny["logits"])


@pytest.mark.exhaustive
def test_without_top_at_an_odd_size(capsys, tmp_path):
    """include_top=False, pooling="avg": the features, at 61 x 127 (no fixed size without
    the top); no classes to infer, the head absent."""
    model = keras.applications.ConvNeXtTiny(
        weights=None, include_top=False, input_shape=(None, None, 3), pooling="avg"
    )
    randomise(model, seed=5)
    src, dst = tmp_path / "notop.keras", tmp_path / "notop.pth"
    model.save(src)
    code, _, err = run(capsys, "convert", src, dst)
    assert code == 0, err
    assert "num_classes=0" in err and "pooling='avg'" in err
    pixels = np.random.default_rng(6).uniform(0, 255, (2, 61, 127, 3)).astype(np.float32)
    assert_agree(torch_logits(dst, pixels, num_classes=0), np.asarray(model(pixels)))


def test_variant_is_checked_against_the_shapes(capsys, tmp_path, tiny):
    """`--variant` names the variant; one the shapes contradict, or one keras.applications
    does not have, is refused by name before anything is built."""
    dst = tmp_path / "out.pth"
    code, _, err = run(capsys, "convert", tiny["weights"], dst, "--variant", "convnext_small")
    assert_one_line_error(
        code,
        err,
        "holds a keras.applications convnext_tiny (depths (3, 3, 9, 3), dims (96, 192, 384, "
        "768)), not convnext_small",
    )
    code, _, err = run(capsys, "convert", tiny["weights"], dst, "--variant", "convnext_atto")
    assert_one_line_error(code, err, "keras.applications has no convnext_atto")
    code, _, err = run(capsys, "convert", tiny["weights"], tmp_path / "k.keras")
    assert_one_line_error(code, err, "is a Keras file already")
    assert not dst.exists()


def copy_with(src: Path, dst: Path, change) -> Path:
    dst.write_bytes(src.read_bytes())
    with h5py.File(dst, "r+") as f:
        change(f)
    return dst


@pytest.mark.exhaustive
def test_every_array_accounted_for(capsys, tmp_path, tiny):
    """An array no variable takes, and a variable with no array, are named by path."""
    extra = copy_with(
        tiny["weights"],
        tmp_path / "extra.weights.h5",
        lambda f: f.create_dataset("layers/dense/vars/2", data=np.zeros(3, "f4")),
    )
    code, _, err = run(capsys, "convert", extra, tmp_path / "a.pth")
    assert_one_line_error(code, err, "1 unexpected (layers/dense/vars/2)")
    missing = copy_with(
        tiny["weights"],
        tmp_path / "missing.weights.h5",
        lambda f: f.__delitem__("layers/conv2d_3/vars/1"),
    )
    code, _, err = run(capsys, "convert", missing, tmp_path / "b.pth")
    assert_one_line_error(code, err, "1 missing (layers/conv2d_3/vars/1)")
    assert not list(tmp_path.glob("*.pth"))


# --- HDF5 files that are not checkpoints -----------------------------------------------------


@pytest.fixture(scope="module")
def legacy_dense(tmp_path_factory) -> Path:
    """A real legacy HDF5 model file that is no ConvNeXt (Keras 3 still writes the format)."""
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    path = tmp_path_factory.mktemp("legacy") / "dense.h5"
    model.save(path)
    return path


@pytest.mark.parametrize("name", ["dense.h5", "dense.pth", "dense.keras"])
def test_hdf5_never_reaches_the_pickle_reader(capsys, tmp_path, legacy_dense, name):
    """An HDF5 file by any name is named for what it is, with the route that reads it; the
    pickle reader never sees it (it said "unsupported pickle opcode 72")."""
    src = tmp_path / name
    src.write_bytes(legacy_dense.read_bytes())
    for argv in (("convert", src, tmp_path / "out.pth"), ("inspect", src)):
        code, _, err = run(capsys, *argv)
        assert_one_line_error(
            code,
            err,
            f"{src}: a Keras legacy HDF5 model file (keras_version {keras.__version__})",
            "save it as .keras",
        )
        assert "pickle" not in err


def test_keras3_weights_named_h5_says_so(capsys, tmp_path):
    src = tmp_path / "w.h5"
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.save_weights(tmp_path / "w.weights.h5")
    src.write_bytes((tmp_path / "w.weights.h5").read_bytes())
    code, _, err = run(capsys, "convert", src, tmp_path / "out.pth")
    assert_one_line_error(code, err, "a Keras 3 weights file (HDF5)", "name it .weights.h5")
