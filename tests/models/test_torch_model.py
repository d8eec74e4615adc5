"""The PyTorch model only: official key names, the official init, its two LayerNorm forms,
GRN's definition. What both models must do is tested once for both in test_models.py."""

import pytest
import torch

import convnext_torch
from convnext_torch import create_model
from tests.support.helpers import ALL_VARIANTS, PARAMETERS


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_parameter_count_on_the_meta_device(variant):
    with torch.device("meta"):  # shapes only: every named variant, no memory
        model = create_model(variant)
    assert sum(p.numel() for p in model.parameters()) == PARAMETERS[variant]


def test_official_key_names():
    keys = list(create_model("convnext_tiny").state_dict())
    assert keys[:6] == [
        "downsample_layers.0.0.weight",
        "downsample_layers.0.0.bias",
        "downsample_layers.0.1.weight",
        "downsample_layers.0.1.bias",
        "downsample_layers.1.0.weight",
        "downsample_layers.1.0.bias",
    ]
    assert "stages.2.8.pwconv2.weight" in keys and "stages.2.9.gamma" not in keys
    assert keys[-4:] == ["norm.weight", "norm.bias", "head.weight", "head.bias"]
    block = [k for k in keys if k.startswith("stages.0.0.")]
    assert block == [
        "stages.0.0.gamma",
        "stages.0.0.dwconv.weight",
        "stages.0.0.dwconv.bias",
        "stages.0.0.norm.weight",
        "stages.0.0.norm.bias",
        "stages.0.0.pwconv1.weight",
        "stages.0.0.pwconv1.bias",
        "stages.0.0.pwconv2.weight",
        "stages.0.0.pwconv2.bias",
    ]


def test_init_follows_the_official_code():
    torch.manual_seed(0)
    model = create_model("convnext_tiny", layer_scale_init_value=0.5, head_init_scale=0.1)
    weight = model.stages[2][0].pwconv1.weight
    assert abs(weight.std().item() - 0.02) < 1e-3  # std 0.02, not the seed post's 0.2
    assert torch.all(model.stages[2][0].pwconv1.bias == 0)
    assert abs(model.head.weight.std().item() - 0.002) < 2e-4  # 0.02 * head_init_scale
    assert torch.all(model.downsample_layers[1][0].weight == 1)
    for module in model.modules():
        if isinstance(module, (convnext_torch.LayerNorm, torch.nn.LayerNorm)):
            assert module.eps == 1e-6


def test_channels_first_layernorm_matches_layer_norm_over_channels():
    norm = convnext_torch.LayerNorm(8, data_format="channels_first")
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.normal_()
    x = torch.randn(2, 8, 5, 3)
    expected = torch.nn.functional.layer_norm(
        x.permute(0, 2, 3, 1), (8,), norm.weight, norm.bias, 1e-6
    ).permute(0, 3, 1, 2)
    torch.testing.assert_close(norm(x), expected)


def test_grn_matches_its_definition():
    grn = convnext_torch.GRN(6)
    with torch.no_grad():
        grn.gamma.normal_()
        grn.beta.normal_()
    x = torch.randn(2, 5, 3, 6)  # (N, H, W, C)
    gx = x.pow(2).sum(dim=(1, 2), keepdim=True).sqrt()
    nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(grn(x), grn.gamma * (x * nx) + grn.beta + x)
