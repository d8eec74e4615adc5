"""Fixtures of the deploy tests: the tiny model and its correct conversion written as every
artifact kind, built once for each test process (session scope: pytest-xdist hands a worker
files of other packages in between, and a package-scoped fixture was built again each time
the worker came back to this one)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.support.helpers import (
    random_torch_model,
)
from tests.support.verifying import EXPORTS, SPEC, keras_copy, write


@pytest.fixture(scope="session")
def tiny_model() -> torch.nn.Module:
    """SPEC in PyTorch, every weight randomised (layer scale too): each weight matters."""
    return random_torch_model(SPEC, seed=1)


@pytest.fixture(scope="session")
def deployed(tmp_path_factory, tiny_model) -> dict[str, Path]:
    """The correct float32 conversion of `tiny_model`, written once as each artifact kind:
    .keras and .weights.h5 by Keras, then SavedModel and .tflite files (float32, float16,
    dynamic) by the command line, `convnext export model.keras DST [--quantize Q]`: these
    are also the tests of export from a Keras file and of --quantize."""
    from converters.cli import main

    directory = tmp_path_factory.mktemp("deployed")
    model = keras_copy(tiny_model)
    paths = {
        "keras": write(model, directory / "model.keras"),
        "weights.h5": write(model, directory / "model.weights.h5"),
    }
    for kind, (name, options) in EXPORTS.items():
        paths[kind] = directory / name
        assert main(["export", str(paths["keras"]), str(paths[kind]), *options]) == 0
    return paths


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> Path:
    """Three small pictures of other sizes (PNG, JPEG, a grey PNG), and a hidden file that
    is not a picture (skipped, as a Finder's .DS_Store must be)."""
    Image = pytest.importorskip("PIL.Image")
    directory = tmp_path_factory.mktemp("pictures")
    rng = np.random.default_rng(5)
    Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(directory / "a.png")
    Image.fromarray(rng.integers(0, 256, (90, 70, 3), dtype=np.uint8)).save(directory / "b.jpg")
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(directory / "c.png")
    (directory / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    return directory
