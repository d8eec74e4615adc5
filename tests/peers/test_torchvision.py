"""Optional: the real torchvision package. Its ConvNeXt (built offline with random weights, at
an input size that is not a multiple of 32) converted to Keras gives torchvision's own logits,
and `--to torchvision` writes a file torchvision's class loads with strict=True and runs to
the same logits. Skipped unless torchvision imports (`.venv-timm` has it)."""

import time

import keras
import numpy as np
import pytest
import torch

from tests.support.helpers import keras_outputs, random_torch_model, run

pytestmark = pytest.mark.peer
torchvision = pytest.importorskip("torchvision")

IMAGES = np.random.default_rng(0).standard_normal((2, 3, 61, 127)).astype(np.float32)


def randomise(model: torch.nn.Module, seed: int) -> None:
    """Every parameter random and non-degenerate: norms' weights and biases and the layer
    scales away from their initial ones and zeros, so that none can be dropped unnoticed."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1 or p.shape[1:] == (1, 1):  # biases, norms, layer_scale (C, 1, 1)
                p.copy_(0.5 + torch.rand(p.shape, generator=generator))
            else:
                p.copy_(torch.randn(p.shape, generator=generator) / p[0].numel() ** 0.5)


def torchvision_logits(model: torch.nn.Module) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(torch.from_numpy(IMAGES)).numpy()


@pytest.mark.parametrize("builder", ["convnext_tiny", "convnext_small"])
def test_torchvision_model_to_keras_and_back(capsys, tmp_path, builder):
    started = time.perf_counter()
    model = getattr(torchvision.models, builder)(num_classes=10)
    randomise(model, seed=1)
    expected = torchvision_logits(model)
    torch.save(model.state_dict(), tmp_path / "tv.pth")

    code, _, err = run(capsys, "convert", tmp_path / "tv.pth", tmp_path / "m.keras")
    assert code == 0, err
    assert "torchvision layout" in err and f"inferred {builder}: num_classes=10" in err
    found = keras_outputs(keras.models.load_model(tmp_path / "m.keras"), IMAGES)["logits"]
    scale = np.abs(expected).max()
    np.testing.assert_allclose(found, expected, rtol=1e-4, atol=1e-4 * scale)
    gap = np.abs(found - expected).max() / scale

    code, _, err = run(
        capsys, "convert", tmp_path / "m.keras", tmp_path / "back.pth", "--to", "torchvision"
    )
    assert code == 0, err
    assert f"load with: torchvision.models.{builder}(num_classes=10)" in err
    fresh = getattr(torchvision.models, builder)(num_classes=10)
    fresh.load_state_dict(torch.load(tmp_path / "back.pth", weights_only=True), strict=True)
    np.testing.assert_array_equal(torchvision_logits(fresh), expected)  # the same float32 tensors
    with capsys.disabled():
        print(
            f"\ntorchvision {torchvision.__version__} {builder} -> Keras: logits max rel "
            f"{gap:.1e}; back through --to torchvision: identical "
            f"({time.perf_counter() - started:.1f} s)"
        )


def test_official_without_layer_scale_loads_into_torchvision(capsys, tmp_path):
    """A model without layer scale or head bias is written with layer_scale ones and a zero
    bias: torchvision's class loads it strictly and computes the official model's logits."""
    official = random_torch_model(
        "convnext_atto", seed=3, num_classes=7, layer_scale_init_value=0, head_bias=False
    )
    torch.save(official.state_dict(), tmp_path / "o.pth")
    code, _, err = run(
        capsys, "convert", tmp_path / "o.pth", tmp_path / "tv.pth", "--to", "torchvision"
    )
    assert code == 0, err
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt

    stages = [CNBlockConfig(40, 80, 2), CNBlockConfig(80, 160, 2), CNBlockConfig(160, 320, 6)]
    model = ConvNeXt([*stages, CNBlockConfig(320, None, 2)], num_classes=7)
    model.load_state_dict(torch.load(tmp_path / "tv.pth", weights_only=True), strict=True)
    with torch.no_grad():
        expected = official.eval()(torch.from_numpy(IMAGES)).numpy()
    found = torchvision_logits(model)
    np.testing.assert_allclose(found, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
