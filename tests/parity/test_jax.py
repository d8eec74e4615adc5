"""Keras on JAX: the models use keras.ops only, so they, the converter and .keras files work with
KERAS_BACKEND=jax, at the same tolerances as on TensorFlow. Needs jax (`make test-peers`
installs it in .venv-peers); the check runs in a process of its own, since Keras fixes its
backend at import."""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from tests.support.helpers import (
    FLOAT32_GAP_FACTOR,
    RTOL_FLOAT64,
    random_torch_model,
    run,
    torch_outputs,
)

pytestmark = pytest.mark.peer
ROOT = Path(__file__).resolve().parents[2]


def test_models_converter_and_keras_files_on_jax(capsys, tmp_path):
    pytest.importorskip("jax")
    torch_model = random_torch_model("convnext_atto_ols", seed=82, num_classes=5)
    import torch

    torch.save(torch_model.state_dict(), tmp_path / "m.pth")
    code, _, err = run(capsys, "convert", tmp_path / "m.pth", tmp_path / "m.keras")  # on TF
    assert code == 0, err
    x = np.random.default_rng(3).standard_normal((2, 3, 61, 127)).astype(np.float32)
    np.savez(tmp_path / "io.npz", images=x, logits=torch_outputs(torch_model, x)["logits"])
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_ENABLE_X64": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tests" / "support" / "jax_check.py"),
            tmp_path / "m.keras",
            tmp_path / "io.npz",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    print(json.dumps(found, indent=1))
    assert found["round_trip_exact"]
    assert max(found["float64"].values()) <= RTOL_FLOAT64
    assert found["one_weight_off_by_1e-6"] > 1e3 * RTOL_FLOAT64
    assert max(found["float32"].values()) <= FLOAT32_GAP_FACTOR
    assert found["tf_file_on_jax"] < 1e-4 and found["jax_file_again"] == 0.0
    assert keras.backend.backend() == "tensorflow"  # this process is untouched
