"""Set up before any test imports Keras, and the fixtures several test modules share."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# `make test` runs 2 workers (pytest-xdist): each framework's thread pools get the worker's
# share of the cores, not all of them, before either framework starts (PyTorch reads
# OMP_NUM_THREADS, TensorFlow its TF_NUM_* variables; the commands a test starts inherit them).
# Pools sized for the whole machine in every worker oversubscribe the cores.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    share = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    for name in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        os.environ.setdefault(name, str(share))

from converters.startup import import_tensorflow_quietly

import_tensorflow_quietly()  # before the tests import Keras

import pytest
import torch

from tests.support.helpers import random_torch_model


@pytest.fixture(scope="module")
def torch_model():
    """convnext_atto with 10 classes, every weight randomised (a module may define its own)."""
    return random_torch_model("convnext_atto", seed=11, num_classes=10)


@pytest.fixture
def checkpoint(tmp_path, torch_model):
    """`torch_model` as an official training checkpoint: {"model": ..., "epoch": 1}."""
    path = tmp_path / "ckpt.pth"
    torch.save({"model": torch_model.state_dict(), "epoch": 1}, path)
    return path
