"""Fixtures of the deploy tests: the tiny model and its correct conversion written as every
artifact kind, built once for each test process (session scope: pytest-xdist hands a worker
files of other packages in between, and a package-scoped fixture was built again each time
the worker came back to this one)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.support.helpers import (
    random_torch_model,
)
from tests.support.verifying import EXPORTS, SPEC, in_pieces, keras_copy, write


@pytest.fixture(scope="session")
def tiny_model() -> torch.nn.Module:
    """SPEC in PyTorch, every weight randomised (layer scale too): each weight matters."""
    return random_torch_model(SPEC, seed=1)


class Deployed(Mapping):
    """The correct float32 conversion of the tiny model as each artifact kind, each written
    the first time a test asks for it: .keras and .weights.h5 by Keras, SavedModel and .tflite
    files (float32, float16, dynamic) by the command line, `convnext export model.keras DST
    [--quantize Q]` (these are also the tests of export from a Keras file and of --quantize).
    Each test process writes only the kinds its tests read (an export takes seconds)."""

    KINDS = ("keras", "weights.h5", *EXPORTS)

    def __init__(self, directory: Path, tiny_model: torch.nn.Module):
        self.directory, self.tiny_model = directory, tiny_model
        self.paths: dict[str, Path] = {}

    def __getitem__(self, kind: str) -> Path:
        if kind not in self.KINDS:
            raise KeyError(kind)
        if kind not in self.paths:
            self.paths[kind] = self.write(kind)
        return self.paths[kind]

    def write(self, kind: str) -> Path:
        from converters.cli import main

        if kind in ("keras", "weights.h5"):
            return write(keras_copy(self.tiny_model), self.directory / f"model.{kind}")
        name, options = EXPORTS[kind]
        path = self.directory / name
        with in_pieces():
            assert main(["export", str(self["keras"]), str(path), *options]) == 0
        return path

    def __iter__(self) -> Iterator[str]:
        return iter(self.KINDS)

    def __len__(self) -> int:
        return len(self.KINDS)


@pytest.fixture(scope="session")
def deployed(tmp_path_factory, tiny_model) -> Deployed:
    """The tiny model's correct conversion as every artifact kind (Deployed), kind -> path."""
    return Deployed(tmp_path_factory.mktemp("deployed"), tiny_model)


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
