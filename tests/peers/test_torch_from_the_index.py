"""The commands in the environment users get from `pip install torch tensorflow-cpu`: torch
2.14.1 from the package index brings triton, which crashes a process that imported TensorFlow
first (before convnext_spec.import_order, `convnext convert` died right after "inferred ...").
Each command runs as users run it, in a process of its own started from the console script.
`make test-peers` keeps triton installed; without it this module is skipped."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import convnext_torch
from tests.support.parity import randomize_

pytestmark = [
    pytest.mark.peer,
    pytest.mark.skipif(
        shutil.which("convnext", path=str(Path(sys.executable).parent)) is None,
        reason="the console script is not installed beside this Python",
    ),
]
pytest.importorskip("triton", reason="triton is not installed (torch from the package index)")

CONVNEXT = str(Path(sys.executable).parent / "convnext")


def convnext(*argv) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [CONVNEXT, *map(str, argv)], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr[-1500:]}"
    return result


def test_convert_export_and_verify_beside_triton(tmp_path):
    model = randomize_(convnext_torch.create_model("convnext_atto", num_classes=5), seed=3)
    torch.save(model.state_dict(), tmp_path / "atto.pth")
    convnext("convert", tmp_path / "atto.pth", tmp_path / "atto.keras")
    convnext("export", tmp_path / "atto.pth", tmp_path / "atto.tflite")
    verified = convnext("verify", tmp_path / "atto.pth", tmp_path / "atto.tflite")
    assert "PASS" in verified.stdout + verified.stderr
    # verify imports TensorFlow only for the kinds that need it, after PyTorch: a SavedModel
    convnext("export", tmp_path / "atto.pth", tmp_path / "atto_savedmodel")
    verified = convnext("verify", tmp_path / "atto.pth", tmp_path / "atto_savedmodel")
    assert "PASS" in verified.stdout + verified.stderr
