"""What the verify tests share: the tiny model they check (SPEC at SIZE), its Keras copies and
written files, and the assertions on a verdict (tests/deploy/)."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import keras
import torch

from converters.deploy.artifacts import open_artifact
from converters.deploy.export import export_model, save_savedmodel
from converters.deploy.inputs import feeding, folder_images, random_images
from converters.deploy.result import Verification
from converters.deploy.verify import verify_models
from converters.files.outputs import TEMP_PREFIX
from convnext_spec.spec import ModelSpec
from tests.support.helpers import (
    BATCH,
    converted_keras_model,
)

SPEC = ModelSpec(depths=(1, 1, 2, 1), dims=(8, 16, 24, 32), num_classes=5)


SIZE = (61, 67)

# SPEC's .tflite files are converted in 2 pieces and joined, as convnext_tiny's are (and
# convnext_xlarge's in 33; converters.deploy.export.PIECE_BYTES): downsample_layers.0 to
# stages.2.1, then downsample_layers.3 to the head. Every deploy test of a .tflite reads a
# joined file.
PIECE_BYTES = 80_000


def in_pieces():
    """.tflite files exported in this block are converted in SPEC's 2 pieces."""
    return mock.patch("converters.deploy.export.PIECE_BYTES", PIECE_BYTES)


def point_names(spec: ModelSpec) -> list[str]:
    """The intermediate outputs of a ConvNeXt classifier, in the order it computes them."""
    names = []
    for i, depth in enumerate(spec.depths):
        names.append(f"downsample_layers.{i}")
        names += [f"stages.{i}.{j}" for j in range(depth)]
    return [*names, "norm", "head"]


def check(
    reference: torch.nn.Module,
    path: Path,
    *,
    size: tuple[int, int] = SIZE,
    folder: Path | None = None,
    signature: str | None = None,
    input_layout: str | None = None,
    pixels: str | None = None,
    output: str | None = None,
    spec: ModelSpec = SPEC,
    locate: str = "on-fail",
) -> Verification:
    """What verify() does after reading the checkpoint: open `path` as an artifact of `spec`,
    describe how it is fed (detection, then these options) and compare it with `reference`
    on BATCH random images of `size`, or on the pictures in `folder`."""
    artifact = open_artifact(path, spec, signature)
    feed = feeding(artifact, spec.in_chans, input_layout, pixels, None, None, output)
    if folder is None:
        inputs = random_images(BATCH, size, spec.in_chans, seed=0)
    else:
        inputs = folder_images(folder, size, spec.in_chans)
    return verify_models(reference, artifact, inputs, feed, batch=BATCH, locate=locate)


def assert_passes(result: Verification) -> None:
    assert result.passed, result.format()
    assert result.first_divergence is None
    assert result.top1 == 1.0
    assert all(p.ok for p in result.points), result.format()


def assert_fails_at(result: Verification, name: str) -> None:
    """FAIL, with `name` the first point out of tolerance: every point before it agrees."""
    assert not result.passed, result.format()
    assert result.first_divergence == name, result.format()
    names = [p.name for p in result.points]
    at = names.index(name)
    assert all(p.ok for p in result.points[:at]), result.format()
    assert not result.points[at].ok


def assert_unusable(code: int, out: str, err: str, *fragments: str) -> None:
    """verify's exit status for unusable input (2), and one line naming the problem as the
    last line on stderr (the lines before it are the log): a foreseen problem, not a crash,
    and no verdict printed."""
    assert code == 2, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("convnext: error: "), last
    assert "unexpected" not in last and "Traceback" not in err, last
    for fragment in fragments:
        assert fragment in last, (fragment, last)
    assert "PASS" not in out and "FAIL" not in out


def tree(path: Path) -> dict[str, tuple[int, int]]:
    """Every file under `path` (or `path` itself) with its size and modification time."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {
        str(p.relative_to(path.parent)): (p.stat().st_size, p.stat().st_mtime_ns) for p in files
    }


def temp_dirs(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.startswith(TEMP_PREFIX)]


def perturb_one_value(variable, delta: float) -> None:
    value = variable.numpy()
    value.flat[value.size // 3] += delta  # the randomised weights are ~0.05-0.3
    variable.assign(value)


def keras_copy(torch_model: torch.nn.Module, dtype: str = "float32") -> keras.Model:
    """A fresh convnext_tf model of SPEC holding `torch_model`'s weights: a correct
    conversion, for a test to break without touching the others'."""
    return converted_keras_model(torch_model, SPEC, dtype)


def write(model: keras.Model, path: Path, quantize: str | None = None) -> Path:
    """`model` as the artifact `path` names: .weights.h5, .keras, .tflite or a SavedModel."""
    if path.name.endswith(".weights.h5"):
        model.save_weights(path)
    elif path.suffix == ".keras":
        model.save(path)
    else:
        with in_pieces():
            export_model(model, path, quantize=quantize)
    return path


EXPORTS = {  # kind -> (`convnext export model.keras` destination, options)
    "savedmodel": ("savedmodel", []),
    "tflite": ("model.tflite", []),
    "tflite-float16": ("model-float16.tflite", ["--quantize", "float16"]),
    "tflite-dynamic": ("model-dynamic.tflite", ["--quantize", "dynamic"]),
}


def save_signatures(path: Path, signatures: dict) -> Path:
    """These signature functions saved as convnext export saves its own
    (converters.deploy.export.save_savedmodel: the variables they capture, not the object
    that holds them, whose Keras model's object graph took 16 s to walk for four signatures
    of the tiny model)."""
    save_savedmodel(signatures, path)
    return path
