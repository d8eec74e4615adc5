"""Optional: the real mmpretrain and transformers packages build each source, with random
weights, offline; the converted Keras model is compared with the package's own forward pass
on two 61 x 127 images (each backbone output, or the logits).

Skipped unless the package imports (`.venv-timm` has both). mmpretrain's ConvNeXt is also what
the mmdetection 3.x / mmsegmentation 1.x configs build (`type='mmpretrain.ConvNeXt'`)."""

import keras
import numpy as np
import pytest
import torch

from tests.peers.test_peers import randomise
from tests.support.helpers import keras_outputs, run

pytestmark = pytest.mark.peer

IMAGES = np.random.default_rng(0).standard_normal((2, 3, 61, 127)).astype(np.float32)
ATTO = {"depths": [2, 2, 6, 2], "channels": [40, 80, 160, 320]}  # a named variant's shapes
V2 = {"use_grn": True, "layer_scale_init_value": 0.0}


def assert_close(name: str, found: np.ndarray, expected: np.ndarray) -> float:
    assert found.shape == expected.shape, (name, found.shape, expected.shape)
    gap = float(np.abs(found - expected).max() / np.abs(expected).max())
    print(f"{name}: max rel {gap:.1e}")
    assert gap < 1e-4, (name, gap)
    return gap


def converted_outputs(capsys, src, dst, *fragments: str) -> list[np.ndarray]:
    """`convnext convert SRC DST.keras`, then the Keras model's outputs (N, C, H, W) on IMAGES:
    the logits of a classifier, or each output of a backbone."""
    code, _, err = run(capsys, "convert", src, dst)
    assert code == 0, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    outputs = keras_outputs(keras.models.load_model(dst), IMAGES)
    if "logits" in outputs:
        return [outputs["logits"]]
    return [outputs[f"stage {n}"] for n in range(1, len(outputs) + 1)]


# --- mmpretrain -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [{}, {**V2, "linear_pw_conv": False}],
    ids=["v1", "v2_1x1_conv"],
)
def test_mmpretrain_classifier_to_keras(capsys, tmp_path, options):
    """An mmpretrain ImageClassifier (ConvNeXt, LinearClsHead) saved as mmengine saves it."""
    pytest.importorskip("mmpretrain")
    from mmengine.runner import save_checkpoint
    from mmpretrain.models import ImageClassifier

    model = ImageClassifier(
        backbone={"type": "ConvNeXt", "arch": ATTO, **options},
        head={"type": "LinearClsHead", "num_classes": 10, "in_channels": 320},
    )
    model.eval()
    randomise(model)
    save_checkpoint(
        {"meta": {"epoch": 1}, "state_dict": model.state_dict()}, str(tmp_path / "c.pth")
    )
    with torch.no_grad():
        expected = model(torch.from_numpy(IMAGES), mode="tensor").numpy()
    variant = "convnextv2_atto" if options else "convnext_atto"
    (found,) = converted_outputs(
        capsys, tmp_path / "c.pth", tmp_path / "m.keras", "mmpretrain layout", f"{variant}: num_"
    )
    assert_close(f"mmpretrain ImageClassifier {variant} logits", found, expected)


@pytest.mark.parametrize("options", [{}, V2], ids=["v1", "v2"])
def test_mmpretrain_detection_backbone_to_keras(capsys, tmp_path, options):
    """mmdetection's / mmsegmentation's form: out_indices (0, 1, 2, 3), norms on the maps
    (gap_before_final_norm=False), under backbone. beside a neck."""
    pytest.importorskip("mmpretrain")
    from mmpretrain.models.backbones import ConvNeXt

    backbone = ConvNeXt(arch=ATTO, out_indices=(0, 1, 2, 3), gap_before_final_norm=False, **options)
    backbone.eval()  # mmpretrain's train() returns None, not the module
    randomise(backbone)
    state = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    state["neck.lateral_convs.0.conv.weight"] = torch.randn(64, 40, 1, 1)
    torch.save({"meta": {}, "state_dict": state}, tmp_path / "det.pth")
    with torch.no_grad():
        expected = [o.numpy() for o in backbone(torch.from_numpy(IMAGES))]
    found = converted_outputs(
        capsys, tmp_path / "det.pth", tmp_path / "b.keras", "mmpretrain layout", "neck.* (1)"
    )
    assert len(found) == len(expected) == 4
    for i, (f, e) in enumerate(zip(found, expected, strict=True)):
        assert_close(f"mmpretrain ConvNeXt backbone norm{i}", f, e)


# --- transformers ---------------------------------------------------------------------------


def transformers_config(transformers, family: str, **options):
    return getattr(transformers, f"{family}Config")(
        depths=ATTO["depths"], hidden_sizes=ATTO["channels"], **options
    )


@pytest.mark.parametrize("family", ["ConvNext", "ConvNextV2"])
def test_transformers_backbone_to_keras(capsys, tmp_path, family):
    """out_features stage2..stage4: stage{n} is the output of stage n - 1."""
    transformers = pytest.importorskip("transformers")
    config = transformers_config(transformers, family, out_features=["stage2", "stage3", "stage4"])
    model = getattr(transformers, f"{family}Backbone")(config).eval()
    randomise(model)
    model.save_pretrained(tmp_path / "hf")
    with torch.no_grad():
        expected = [m.numpy() for m in model(torch.from_numpy(IMAGES)).feature_maps]
    found = converted_outputs(
        capsys, tmp_path / "hf", tmp_path / "b.keras", "out_indices=(1, 2, 3)"
    )
    for name, f, e in zip(config.out_features, found, expected, strict=True):
        assert_close(f"transformers {transformers.__version__} {family}Backbone {name}", f, e)


def test_transformers_upernet_backbone_to_keras(capsys, tmp_path):
    """UperNetForSemanticSegmentation: the ConvNextBackbone under backbone., its decode and
    auxiliary heads beside it, skipped and counted."""
    transformers = pytest.importorskip("transformers")
    backbone_config = transformers_config(
        transformers, "ConvNext", out_features=["stage1", "stage2", "stage3", "stage4"]
    )
    config = transformers.UperNetConfig(
        backbone_config=backbone_config, hidden_size=32, auxiliary_in_channels=160, num_labels=5
    )
    model = transformers.UperNetForSemanticSegmentation(config).eval()
    randomise(model)
    model.save_pretrained(tmp_path / "hf")
    with torch.no_grad():
        expected = [m.numpy() for m in model.backbone(torch.from_numpy(IMAGES)).feature_maps]
    found = converted_outputs(
        capsys, tmp_path / "hf", tmp_path / "b.keras", "decode_head.*", "auxiliary_head.*"
    )
    for n, (f, e) in enumerate(zip(found, expected, strict=True), 1):
        assert_close(f"transformers {transformers.__version__} UperNet backbone stage{n}", f, e)


def test_transformers_dinov3_backbone_to_keras(capsys, tmp_path):
    """DINOv3ConvNextBackbone has no norm at all: its feature maps are the raw stage outputs,
    forward_stages of the headless ConvNeXt it converts to."""
    transformers = pytest.importorskip("transformers")
    config = transformers.DINOv3ConvNextConfig(
        depths=ATTO["depths"],
        hidden_sizes=ATTO["channels"],
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    model = transformers.DINOv3ConvNextBackbone(config).eval()
    randomise(model)
    model.save_pretrained(tmp_path / "hf")
    with torch.no_grad():
        expected = [m.numpy() for m in model(torch.from_numpy(IMAGES)).feature_maps]
    code, _, err = run(capsys, "convert", tmp_path / "hf", tmp_path / "m.keras")
    assert code == 0 and "DINOv3ConvNextBackbone keeps none" in err, err
    keras_model = keras.models.load_model(tmp_path / "m.keras")
    found = keras_model.forward_stages(IMAGES.transpose(0, 2, 3, 1), training=False)
    for n, (f, e) in enumerate(zip(found, expected, strict=True), 1):
        f = keras.ops.convert_to_numpy(f).transpose(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
        assert_close(
            f"transformers {transformers.__version__} DINOv3ConvNextBackbone stage{n}", f, e
        )
