"""Optional: the real timm and Hugging Face packages, created offline with random weights.

Skipped unless the peers are installed (`make test-peers` sets them up): transformers in
.venv-peers, timm in its own environment named by CONVNEXT_TIMM_PYTHON, run as a separate
process because the triton that comes with timm's torch crashes when imported after TensorFlow.
"""

import json
import os
import subprocess
from pathlib import Path

import keras
import numpy as np
import pytest
import torch

import convnext_torch
from converters.names.layouts import from_official
from convnext_spec.spec import VARIANT_OPTIONS, VARIANTS, parameter_count, spec_from_name
from tests.support.helpers import keras_outputs, random_torch_model, run

pytestmark = pytest.mark.peer

TIMM_PYTHON = os.environ.get("CONVNEXT_TIMM_PYTHON")
PEER_SCRIPT = Path(__file__).parents[1] / "support" / "peer_timm.py"


def randomise(model: torch.nn.Module) -> None:
    """Every parameter of a peer's model random and non-degenerate, as peer_timm.py's."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.copy_(0.5 + torch.rand(p.shape, generator=generator))
            else:
                p.copy_(torch.randn(p.shape, generator=generator) / p[0].numel() ** 0.5)


def timm(*args) -> None:
    subprocess.run([TIMM_PYTHON, str(PEER_SCRIPT), *map(str, args)], check=True)


needs_timm = pytest.mark.skipif(
    not TIMM_PYTHON, reason="set CONVNEXT_TIMM_PYTHON to a Python with timm"
)
TIMM_ORIGINALS = [name for name in VARIANTS if name in VARIANT_OPTIONS or "zepto" in name]


@needs_timm
@pytest.mark.parametrize(
    "variant",
    [
        "convnext_atto",
        "convnext_tiny",
        "convnextv2_atto",
        *(v for v in TIMM_ORIGINALS if v != "convnext_xxlarge"),  # 846M: shapes only, below
    ],
)
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
    gap = np.abs(logits - io["logits"]).max() / np.abs(io["logits"]).max()
    with capsys.disabled():  # run() reads what the command printed
        print(f"timm {io['timm']} {variant} -> Keras: logits max rel {gap:.1e}")

    back = tmp_path / "back.safetensors"
    assert run(capsys, "convert", tmp_path / "m.keras", back, "--to", "timm")[0] == 0
    timm("run", variant, back, tmp_path / "io.npz")  # timm's strict load_state_dict
    np.testing.assert_array_equal(np.load(tmp_path / "io.npz")["logits"], io["logits"])


@needs_timm
@pytest.mark.parametrize("variant", TIMM_ORIGINALS)
def test_timm_has_our_keys_shapes_and_parameter_counts(tmp_path, variant):
    """timm's state_dict (on the meta device) is what our timm-layout writer gives, key for key
    and shape for shape, and timm counts the parameters convnext_spec.spec counts."""
    timm("shapes", variant, tmp_path / "timm.json")
    found = json.loads((tmp_path / "timm.json").read_text())
    spec = spec_from_name(variant)
    with torch.device("meta"):
        ours = convnext_torch.create_model(spec).state_dict()
    zeros = {k: np.broadcast_to(np.float32(0), tuple(v.shape)) for k, v in ours.items()}
    written, _ = from_official(zeros, "timm", spec)
    assert {k: list(v.shape) for k, v in written.items()} == found["shapes"]
    assert parameter_count(spec) == found["parameters"]
    print(f"timm {found['timm']} {variant}: {found['parameters']:,} parameters, same keys")


@pytest.mark.parametrize("version", ["ConvNext", "ConvNextV2"])
def test_hugging_face_model_to_keras(capsys, tmp_path, version):
    transformers = pytest.importorskip("transformers")
    config = getattr(transformers, f"{version}Config")(
        hidden_sizes=[40, 80, 160, 320], depths=[2, 2, 6, 2], num_labels=10
    )
    model = getattr(transformers, f"{version}ForImageClassification")(config).eval()
    randomise(model)
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


@pytest.mark.parametrize(
    "variant, num_classes",
    [("convnext_atto", 10), ("convnextv2_atto", 10), ("convnext_atto", 0), ("convnextv2_atto", 0)],
)
def test_hugging_face_directory_we_write_loads_in_transformers(
    capsys, tmp_path, variant, num_classes
):
    """`--to hf` gives a directory transformers loads with no missing or unexpected key, and
    whose outputs are ours: float64 to 1e-12 (transformers' default final eps, 1e-12 instead
    of 1e-6, would be 1e-7 off here), float32 at the noise floor."""
    transformers = pytest.importorskip("transformers")
    torch_model = random_torch_model(variant, seed=61, num_classes=num_classes)
    torch.save(torch_model.state_dict(), tmp_path / "m.pth")
    code, _, err = run(capsys, "convert", tmp_path / "m.pth", tmp_path / "hf", "--to", "hf")
    assert code == 0, err
    family = "ConvNextV2" if "v2" in variant else "ConvNext"
    name = f"{family}ForImageClassification" if num_classes else f"{family}Model"
    loaded, info = getattr(transformers, name).from_pretrained(
        tmp_path / "hf", output_loading_info=True
    )
    assert not any(info.values()), info  # missing, unexpected, mismatched, errors
    images = np.random.default_rng(0).standard_normal((2, 3, 61, 127))
    found = {}
    for dtype in (torch.float64, torch.float32):
        x = torch.from_numpy(images).to(dtype)
        with torch.no_grad():
            out = loaded.to(dtype).eval()(pixel_values=x)
            found[dtype] = (out.logits if num_classes else out.pooler_output).double().numpy()
            ours = torch_model.to(dtype).eval()(x).double().numpy()
        gap = np.abs(found[dtype] - ours).max() / np.abs(ours).max()
        if dtype == torch.float64:
            assert gap < 1e-12, gap
        print(f"transformers {transformers.__version__} {name} {dtype}: max rel {gap:.1e}")
    floor = np.abs(found[torch.float32] - found[torch.float64]).max() / np.abs(ours).max()
    assert gap < 10 * floor, (gap, floor)


@needs_timm
@pytest.mark.parametrize(
    "model, variant",
    [("convnext_base_w", "convnext_base"), ("convnext_large_d", "convnext_large_mlp")],
)
def test_open_clip_image_tower_to_keras(capsys, tmp_path, model, variant):
    """A whole random OpenCLIP model (open_clip.create_model, pretrained=None): its image
    tower converts, the text tower is skipped, and Keras gives encode_image's embedding."""
    subprocess.run(
        [TIMM_PYTHON, str(PEER_SCRIPT.with_name("peer_open_clip.py")), model, tmp_path],
        check=True,
        cwd=PEER_SCRIPT.parent,
    )
    io = np.load(tmp_path / "io.npz")
    code, _, err = run(capsys, "convert", tmp_path / "clip.pt", tmp_path / "m.keras")
    assert code == 0, err
    assert "open_clip layout" in err and f"inferred {variant}" in err, err
    found = keras_outputs(keras.models.load_model(tmp_path / "m.keras"), io["images"])["logits"]
    expected = io["embedding"]
    gap = np.abs(found - expected).max() / np.abs(expected).max()
    print(f"open_clip {io['version']} {model}: embedding max rel {gap:.1e}")
    assert gap < 1e-4


@pytest.mark.parametrize("depths, dims", [((3, 3, 9, 3), (96, 192, 384, 768))])
def test_hugging_face_dinov3_to_keras(capsys, tmp_path, depths, dims):
    """transformers' DINOv3ConvNextModel (tiny's shapes, random weights): its pooled output is
    the Keras model's, and its patch tokens are forward_patch_features."""
    transformers = pytest.importorskip("transformers")
    config = transformers.DINOv3ConvNextConfig(depths=list(depths), hidden_sizes=list(dims))
    model = transformers.DINOv3ConvNextModel(config).eval()
    randomise(model)
    model.save_pretrained(tmp_path / "hf")
    code, _, err = run(capsys, "convert", tmp_path / "hf", tmp_path / "m.keras")
    assert code == 0, err
    assert "hf layout" in err and "inferred convnext_tiny" in err and "num_classes=0" in err
    images = np.random.default_rng(0).standard_normal((2, 3, 61, 127)).astype(np.float32)
    with torch.no_grad():
        out = model(pixel_values=torch.from_numpy(images))
    keras_model = keras.models.load_model(tmp_path / "m.keras")
    pooled = keras_outputs(keras_model, images)["logits"]
    patches = keras.ops.convert_to_numpy(
        keras_model.forward_patch_features(images.transpose(0, 2, 3, 1))
    )
    for name, found, expected in [
        ("pooler_output", pooled, out.pooler_output.numpy()),
        ("patch tokens", patches, out.last_hidden_state[:, 1:].numpy()),
    ]:
        gap = np.abs(found - expected).max() / np.abs(expected).max()
        print(f"transformers {transformers.__version__} DINOv3 {name}: max rel {gap:.1e}")
        assert gap < 1e-4, (name, gap)
