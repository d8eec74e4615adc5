"""OpenMMLab's ConvNeXt (mmpretrain classifiers; mmdetection / mmsegmentation backbones) and
transformers' backbones (ConvNextBackbone, ConvNextV2Backbone, UperNet's, DINOv3ConvNextBackbone).

Each file is spelled out here from the source's own code (mmpretrain's
models/backbones/convnext.py, transformers' modeling_convnext.py, modeling_convnextv2.py,
modeling_dinov3_convnext.py), with random values, read by the loader users run, and checked
through the outputs: the classifier's logits, each backbone output against the project's
ConvNeXtBackbone. The real packages: tests/peers/test_mm_and_backbones.py."""

import numpy as np
import pytest
import torch

import convnext_tf
import convnext_torch
from converters import load_state_dict, load_torch_model, torch_to_keras
from converters.jobs import inspect_file
from converters.weights.identify import spec_from_shapes
from convnext_spec.spec import ModelSpec
from tests.support.helpers import (
    BATCH,
    ODD_SIZE,
    assert_one_line_error,
    random_torch_model,
    run,
    write_layout,
)
from tests.support.parity import keras_outputs, torch_outputs

# Four different widths: a norm read onto the wrong stage cannot fit by shape.
TINY = ModelSpec(depths=(1, 1, 2, 1), dims=(8, 16, 24, 32), num_classes=5)
TINY_V2 = TINY.replace(use_grn=True, layer_scale_init_value=0.0)


def backbone_spec(spec: ModelSpec, out_indices: tuple[int, ...]) -> ModelSpec:
    return spec.replace(kind="backbone", num_classes=0, out_indices=out_indices)


def parameters(module: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}{name}": p.detach().clone() for name, p in module.named_parameters()}


# --- mmpretrain -----------------------------------------------------------------------------


def mmpretrain_backbone(model, linear_pw_conv: bool = True) -> dict[str, torch.Tensor]:
    """mmpretrain.models.backbones.ConvNeXt's state_dict holding `model`'s weights, as its code
    names them: downsample_layers as the official ones (Sequential: conv, LN2d / LN2d, conv);
    stages.{i}.{j} a ConvNeXtBlock of depthwise_conv, norm, pointwise_conv1, pointwise_conv2
    (nn.Linear, or with linear_pw_conv=False a 1x1 nn.Conv2d), grn.gamma / grn.beta of shape
    (4C,) (models/utils/norm.py GRN), gamma (C,); then norm{i} for each of out_indices."""
    state = {}
    for i, layer in enumerate(model.downsample_layers):
        state |= parameters(layer, f"downsample_layers.{i}.")
    for i, stage in enumerate(model.stages):
        for j, block in enumerate(stage):
            name = f"stages.{i}.{j}."
            state |= parameters(block.dwconv, name + "depthwise_conv.")
            state |= parameters(block.norm, name + "norm.")
            for ours, theirs in (("pwconv1", "pointwise_conv1"), ("pwconv2", "pointwise_conv2")):
                linear = getattr(block, ours)
                weight = linear.weight.detach().clone()
                if not linear_pw_conv:
                    weight = weight[:, :, None, None]  # nn.Conv2d(kernel_size=1): (out, in, 1, 1)
                state[f"{name}{theirs}.weight"] = weight
                state[f"{name}{theirs}.bias"] = linear.bias.detach().clone()
            if isinstance(block.grn, convnext_torch.model.GRN):
                state[name + "grn.gamma"] = block.grn.gamma.detach().reshape(-1).clone()
                state[name + "grn.beta"] = block.grn.beta.detach().reshape(-1).clone()
            if block.gamma is not None:
                state[name + "gamma"] = block.gamma.detach().clone()
    for i in getattr(model, "out_indices", ()):  # a detection backbone's norm{i}
        state |= parameters(getattr(model, f"norm{i}"), f"norm{i}.")
    return state


def mmpretrain_classifier(model, linear_pw_conv: bool = True) -> dict:
    """An mmpretrain ImageClassifier checkpoint as mmengine saves it: the backbone with
    out_indices=-1 under backbone., whose norm3 (gap_before_final_norm=True: after pooling)
    holds the final norm, and LinearClsHead's head.fc."""
    state = {f"backbone.{k}": v for k, v in mmpretrain_backbone(model, linear_pw_conv).items()}
    state |= parameters(model.norm, "backbone.norm3.")
    state |= parameters(model.head, "head.fc.")
    return {"meta": {"epoch": 300, "mmpretrain_version": "1.2.0"}, "state_dict": state}


@pytest.mark.parametrize(
    "spec, linear_pw_conv", [(TINY, True), (TINY_V2, False)], ids=["v1_linear", "v2_1x1_conv"]
)
def test_mmpretrain_classifier_reads_as_the_classifier(spec, linear_pw_conv):
    torch_model = random_torch_model(spec, seed=81)
    checkpoint = mmpretrain_classifier(torch_model, linear_pw_conv)
    state = load_state_dict(checkpoint)
    assert state.layout == "mmpretrain" and state.wrapper == "state_dict"
    assert state.outside_backbone == ()
    assert spec_from_shapes(state) == spec
    assert "norm3 applies after global average pooling" in " ".join(state.notes)
    assert_same_outputs(torch_model, read_into_torch(state, spec))


def test_mmpretrain_classifier_into_keras():
    torch_model = random_torch_model(TINY, seed=81)
    keras_model = convnext_tf.create_model(TINY)
    torch_to_keras(load_state_dict(mmpretrain_classifier(torch_model)), keras_model)
    assert_same_outputs(torch_model, keras_model)


def test_mmpretrain_classifier_through_the_command_line(capsys, tmp_path):
    """inspect calls it a classifier (it called it an official-layout detection backbone), and
    convert writes the classifier (here in the official layout: Keras is tested above)."""
    torch_model = random_torch_model("convnext_atto", seed=82, num_classes=7)
    torch.save(mmpretrain_classifier(torch_model), tmp_path / "cls.pth")
    rows = dict(inspect_file(tmp_path / "cls.pth"))
    assert rows["layout"] == "mmpretrain" and rows["variant"] == "convnext_atto"
    assert rows["classes"] == "7" and "not backbone" not in rows and "converts" not in rows
    code, _, err = run(capsys, "convert", tmp_path / "cls.pth", tmp_path / "o.pth")
    assert code == 0, err
    assert "mmpretrain layout" in err and "inferred convnext_atto: num_classes=7" in err
    converted = convnext_torch.create_model("convnext_atto", num_classes=7)
    converted.load_state_dict(torch.load(tmp_path / "o.pth"))
    assert_same_outputs(torch_model, converted)


def test_mmpretrain_backbone_alone_is_its_default_pooled_form():
    """mmpretrain's ConvNeXt with its defaults (out_indices=-1, gap_before_final_norm=True)
    returns norm3 of the pooled map: the classifier's features, without a head."""
    torch_model = random_torch_model(TINY.replace(num_classes=0), seed=83)
    state = mmpretrain_backbone(torch_model) | parameters(torch_model.norm, "norm3.")
    state = load_state_dict(state, layout="mmpretrain")
    assert spec_from_shapes(state) == TINY.replace(num_classes=0)
    assert "norm3 alone and no head" in " ".join(state.notes)
    assert_same_outputs(torch_model, read_into_torch(state, TINY.replace(num_classes=0)))


def outputs(model, x: np.ndarray) -> dict[str, np.ndarray]:
    if isinstance(model, torch.nn.Module):
        return torch_outputs(model, x)
    return keras_outputs(model, x)


def assert_same_outputs(expected_model, model) -> None:
    """Every stage output, and the logits unless a backbone, within 1e-4 on two 61 x 127
    images."""
    x = np.random.default_rng(4).standard_normal((BATCH, 3, *ODD_SIZE)).astype(np.float32)
    expected, found = outputs(expected_model, x), outputs(model, x)
    assert expected.keys() == found.keys()
    for name in expected:
        np.testing.assert_allclose(found[name], expected[name], rtol=1e-4, atol=1e-4, err_msg=name)


def read_into_torch(state, spec: ModelSpec) -> torch.nn.Module:
    """A fresh PyTorch model of `spec` holding what the loader read (the strict check), the
    fast way to see the right weights arrived; the Keras side has its own tests."""
    model = convnext_torch.create_model(spec)
    load_torch_model(state, model)
    return model


@pytest.mark.parametrize("spec", [TINY, TINY_V2], ids=["v1", "v2"])
def test_mmdetection_backbone_reads_as_convnext_backbone(spec):
    """An mmdetection 3.x / mmsegmentation 1.x checkpoint: mmpretrain.ConvNeXt with
    out_indices and gap_before_final_norm=False under backbone., a neck and heads beside."""
    spec = backbone_spec(spec, (0, 2, 3))
    torch_model = random_torch_model(spec, seed=84)
    state = {f"backbone.{k}": v for k, v in mmpretrain_backbone(torch_model).items()}
    state["neck.lateral_convs.0.conv.weight"] = torch.randn(16, 8, 1, 1)
    state["decode_head.conv_seg.weight"] = torch.randn(19, 16, 1, 1)
    loaded = load_state_dict({"meta": {}, "state_dict": state})
    assert loaded.layout == "mmpretrain" and len(loaded.outside_backbone) == 2
    assert spec_from_shapes(loaded) == spec
    assert_same_outputs(torch_model, read_into_torch(loaded, spec))


def test_a_swapped_mmpretrain_tensor_is_caught():
    """Two same-shaped tensors exchanged in the file: every name and shape still fits, the
    outputs do not."""
    torch_model = random_torch_model(TINY, seed=85)
    checkpoint = mmpretrain_classifier(torch_model)
    weights = checkpoint["state_dict"]
    first, second = (f"backbone.stages.2.{j}.pointwise_conv1.weight" for j in (0, 1))
    weights[first], weights[second] = weights[second], weights[first]
    with pytest.raises(AssertionError, match="stage 3"):
        assert_same_outputs(torch_model, read_into_torch(load_state_dict(checkpoint), TINY))


# --- transformers' backbones ----------------------------------------------------------------


def hf_backbone(model) -> dict[str, torch.Tensor]:
    """transformers' ConvNextBackbone / ConvNextV2Backbone state_dict holding `model`'s weights,
    as modeling_convnext(v2).py names them: embeddings.patch_embeddings / .layernorm,
    encoder.stages.{i}.downsampling_layer.{0: norm, 1: conv}, encoder.stages.{i}.layers.{j}.
    {dwconv, layernorm, pwconv1, pwconv2, layer_scale_parameter, grn.weight / grn.bias
    (1, 1, 1, 4C)}; a LayerNorm per out_features stage, hidden_states_norms.stage{n}, where
    stage{n} is the output of encoder.stages.{n - 1} (stage_names: stem, stage1, ...)."""
    stem_conv, stem_norm = model.downsample_layers[0]
    state = parameters(stem_conv, "embeddings.patch_embeddings.")
    state |= parameters(stem_norm, "embeddings.layernorm.")
    for i, stage in enumerate(model.stages):
        if i:
            state |= parameters(
                model.downsample_layers[i], f"encoder.stages.{i}.downsampling_layer."
            )
        for j, block in enumerate(stage):
            name = f"encoder.stages.{i}.layers.{j}."
            state |= parameters(block.dwconv, name + "dwconv.")
            state |= parameters(block.norm, name + "layernorm.")
            state |= parameters(block.pwconv1, name + "pwconv1.")
            state |= parameters(block.pwconv2, name + "pwconv2.")
            if isinstance(block.grn, convnext_torch.model.GRN):
                state[name + "grn.weight"] = block.grn.gamma.detach().clone()
                state[name + "grn.bias"] = block.grn.beta.detach().clone()
            if block.gamma is not None:
                state[name + "layer_scale_parameter"] = block.gamma.detach().clone()
    for i in model.out_indices:
        state |= parameters(getattr(model, f"norm{i}"), f"hidden_states_norms.stage{i + 1}.")
    return state


@pytest.mark.parametrize(
    "spec, upernet", [(TINY, False), (TINY_V2, False), (TINY, True)], ids=["v1", "v2", "upernet"]
)
def test_transformers_backbone_reads_as_convnext_backbone(spec, upernet):
    spec = backbone_spec(spec, (1, 2, 3))
    torch_model = random_torch_model(spec, seed=86)
    state = hf_backbone(torch_model)
    if upernet:  # UperNetForSemanticSegmentation: the backbone beside its two heads
        state = {f"backbone.{k}": v for k, v in state.items()}
        state["decode_head.classifier.weight"] = torch.randn(4, 8, 1, 1)
        state["auxiliary_head.classifier.weight"] = torch.randn(4, 8, 1, 1)
    loaded = load_state_dict(state)
    assert loaded.layout == "hf" and len(loaded.outside_backbone) == (2 if upernet else 0)
    assert spec_from_shapes(loaded) == spec
    assert_same_outputs(torch_model, read_into_torch(loaded, spec))


def test_a_stem_norm_is_named_not_guessed():
    """out_features may name "stem": ConvNeXtBackbone has no such output."""
    torch_model = random_torch_model(backbone_spec(TINY, (0, 3)), seed=87)
    state = hf_backbone(torch_model)
    state["hidden_states_norms.stem.weight"] = torch.ones(8)
    with pytest.raises(Exception, match=r"1 keys have no name in the hf layout \(hidden_states_"):
        load_state_dict(state)


def dinov3_backbone(model) -> dict[str, torch.Tensor]:
    """transformers' DINOv3ConvNextBackbone state_dict holding `model`'s trunk, as
    modeling_dinov3_convnext.py names it: stages.{i}.downsample_layers.{k} (stage 0: conv,
    norm; others: norm, conv), stages.{i}.layers.{j}.{depthwise_conv, layer_norm,
    pointwise_conv1, pointwise_conv2, gamma}; no norm after the stages (DINOv3ConvNextModel's
    layer_norm is not in the backbone)."""
    state = {}
    for i, stage in enumerate(model.stages):
        state |= parameters(model.downsample_layers[i], f"stages.{i}.downsample_layers.")
        for j, block in enumerate(stage):
            name = f"stages.{i}.layers.{j}."
            state |= parameters(block.dwconv, name + "depthwise_conv.")
            state |= parameters(block.norm, name + "layer_norm.")
            state |= parameters(block.pwconv1, name + "pointwise_conv1.")
            state |= parameters(block.pwconv2, name + "pointwise_conv2.")
            state[name + "gamma"] = block.gamma.detach().clone()
    return state


def test_dinov3_backbone_reads_as_the_headless_convnext():
    """Its feature maps are the raw stage outputs: forward_stages of the headless ConvNeXt,
    whose final norm (absent) is added as 1, 0, and said."""
    spec = TINY.replace(num_classes=0)
    torch_model = random_torch_model(spec, seed=88)
    with torch.no_grad():
        torch_model.norm.weight.fill_(1.0)
        torch_model.norm.bias.zero_()
    state = load_state_dict(dinov3_backbone(torch_model))
    assert state.layout == "hf" and spec_from_shapes(state) == spec
    assert "DINOv3ConvNextBackbone keeps none" in " ".join(state.notes)
    keras_model = convnext_tf.create_model(spec)
    torch_to_keras(state, keras_model)
    assert_same_outputs(torch_model, keras_model)  # the pooled output: through norm 1, 0


def test_inspect_and_convert_agree_on_a_dinov3_backbone(capsys, tmp_path):
    """One verdict from both, on the file and on one missing a tensor: inspect runs convert's
    check (it called readable what convert refused)."""
    torch_model = random_torch_model("convnext_atto", seed=89, num_classes=0)
    state = dinov3_backbone(torch_model)
    torch.save(state, tmp_path / "b.pth")
    rows = dict(inspect_file(tmp_path / "b.pth"))
    assert rows["layout"] == "hf" and rows["classes"] == "0 (no head)" and "converts" not in rows
    code, _, err = run(capsys, "convert", tmp_path / "b.pth", tmp_path / "o.pth")
    assert code == 0 and "DINOv3ConvNextBackbone keeps none" in err, err

    del state["stages.3.layers.1.gamma"]
    torch.save(state, tmp_path / "short.pth")
    rows = dict(inspect_file(tmp_path / "short.pth"))
    code, _, err = run(capsys, "convert", tmp_path / "short.pth", tmp_path / "s.pth")
    assert_one_line_error(code, err, "1 missing (stages.3.1.gamma)")
    assert rows["converts"] == "no: " + err.strip().splitlines()[-1].removeprefix(
        "convnext: error: "
    )


def test_a_convnext_model_file_without_its_final_norm_is_not_completed(capsys, tmp_path):
    """The unit norm is DINOv3's backbone form only: a transformers ConvNextModel file that
    lacks its `layernorm` is a damaged file, and strict accounting names what it lacks."""
    torch_model = random_torch_model("convnext_atto", seed=90, num_classes=0)
    official = {k: v.numpy() for k, v in torch_model.state_dict().items()}
    state = write_layout(official, "hf")
    assert "convnext.layernorm.weight" in state
    state = {k: torch.from_numpy(v) for k, v in state.items() if "convnext.layernorm." not in k}
    torch.save(state, tmp_path / "no_norm.pth")
    code, _, err = run(capsys, "convert", tmp_path / "no_norm.pth", tmp_path / "o.pth")
    assert_one_line_error(code, err, "missing (norm.weight, norm.bias)")
