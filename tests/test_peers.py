"""Optional: the real timm and Hugging Face packages, created offline with random weights.

Skipped unless the peers are installed (`make test-peers` sets them up): transformers in
.venv-peers, timm in its own environment named by CONVNEXT_TIMM_PYTHON, run as a separate
process because the triton that comes with timm's torch crashes when imported after TensorFlow.
"""

import os
import subprocess
from pathlib import Path

import keras
import numpy as np
import pytest
import torch

from tests.helpers import keras_outputs, run

pytestmark = pytest.mark.peer

TIMM_PYTHON = os.environ.get("CONVNEXT_TIMM_PYTHON")
PEER_SCRIPT = Path(__file__).with_name("peer_timm.py")


def timm(*args) -> None:
    subprocess.run([TIMM_PYTHON, str(PEER_SCRIPT), *map(str, args)], check=True)


@pytest.mark.skipif(not TIMM_PYTHON, reason="set CONVNEXT_TIMM_PYTHON to a Python with timm")
@pytest.mark.parametrize("variant", ["convnext_atto", "convnext_tiny", "convnextv2_atto"])
def test_timm_model_to_keras_and_back(capsys, tmp_path, variant):
    timm("make", variant, tmp_path)
    io = np.load(tmp_path / "io.npz")
    code, _, err = run(capsys, "convert", tmp_path / "model.safetensors", tmp_path / "m.keras")
    assert code == 0, err
    assert "timm layout" in err
    logits = keras_outputs(keras.models.load_model(tmp_path / "m.keras"), io["images"])["logits"]
    np.testing.assert_allclose(
        logits, io["logits"], rtol=1e-4, atol=1e-4 * np.abs(io["logits"]).max()
    )

    back = tmp_path / "back.safetensors"
    assert run(capsys, "convert", tmp_path / "m.keras", back, "--to", "timm")[0] == 0
    timm("run", variant, back, tmp_path / "io.npz")  # timm's strict load_state_dict
    np.testing.assert_array_equal(np.load(tmp_path / "io.npz")["logits"], io["logits"])


@pytest.mark.parametrize("version", ["ConvNext", "ConvNextV2"])
def test_hugging_face_model_to_keras(capsys, tmp_path, version):
    transformers = pytest.importorskip("transformers")
    config = getattr(transformers, f"{version}Config")(
        hidden_sizes=[40, 80, 160, 320], depths=[2, 2, 6, 2], num_labels=10
    )
    model = getattr(transformers, f"{version}ForImageClassification")(config).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.copy_(0.5 + torch.rand(p.shape, generator=generator))
            else:
                p.copy_(torch.randn(p.shape, generator=generator) / p[0].numel() ** 0.5)
    model.save_pretrained(tmp_path / "hf")
    code, _, err = run(capsys, "convert", tmp_path / "hf", tmp_path / "m.keras")
    assert code == 0, err
    assert "hf layout" in err and "eps 1e-12" in err
    images = np.random.default_rng(0).standard_normal((2, 3, 61, 127)).astype(np.float32)
    with torch.no_grad():
        expected = model(pixel_values=torch.from_numpy(images)).logits.numpy()
    found = keras_outputs(keras.models.load_model(tmp_path / "m.keras"), images)["logits"]
    np.testing.assert_allclose(found, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    gap = np.abs(found - expected).max()
    print(f"transformers {transformers.__version__} {version}: max abs {gap:.2e}")
