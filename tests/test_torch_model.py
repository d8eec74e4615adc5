"""The PyTorch model: the paper's parameter counts, official names, init, shapes, drop path."""

import pytest
import torch

import convnext_torch
from convnext_torch import ISOTROPIC_VARIANTS, VARIANTS, create_model

# Parameter counts with 1000 classes: the paper's Table 11 for tiny..xlarge, timm's for atto..nano.
PARAMETERS = {
    "convnext_atto": 3_695_520,
    "convnext_femto": 5_217_784,
    "convnext_pico": 9_045_672,
    "convnext_nano": 15_593_560,
    "convnext_tiny": 28_589_128,
    "convnext_small": 50_223_688,
    "convnext_base": 88_591_464,
    "convnext_large": 197_767_336,
    "convnext_xlarge": 350_196_968,
    # ConvNeXt V2 paper, Table 1/8: 3.7M, 5.2M, 9.1M, 15.6M, 28.6M, 89M, 198M, 660M
    "convnextv2_atto": 3_708_400,
    "convnextv2_femto": 5_233_240,
    "convnextv2_pico": 9_066_280,
    "convnextv2_nano": 15_623_800,
    "convnextv2_tiny": 28_635_496,
    "convnextv2_base": 88_717_800,
    "convnextv2_large": 197_956_840,
    "convnextv2_huge": 660_289_640,
    # isotropic, the paper's Table 3 (22M, 87M, 306M); large with layer scale
    "convnext_isotropic_small": 22_308_712,
    "convnext_isotropic_base": 87_083_752,
    "convnext_isotropic_large": 305_942_504,
}
ALL_VARIANTS = [*VARIANTS, *ISOTROPIC_VARIANTS]


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_parameter_count(variant):
    with torch.device("meta"):
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
    assert torch.all(model.stages[1][1].gamma == 0.5)
    assert abs(model.head.weight.std().item() - 0.002) < 2e-4  # 0.02 * head_init_scale
    assert torch.all(model.downsample_layers[1][0].weight == 1)
    for module in model.modules():
        if isinstance(module, (convnext_torch.LayerNorm, torch.nn.LayerNorm)):
            assert module.eps == 1e-6


def test_layer_scale_zero_means_no_gamma():
    model = create_model("convnext_atto", layer_scale_init_value=0)
    assert model.stages[0][0].gamma is None
    assert not any(k.endswith("gamma") for k in model.state_dict())


def test_odd_sizes_floor_like_the_official_model():
    model = create_model("convnext_atto").eval()
    with torch.no_grad():
        stages = model.forward_stages(torch.randn(2, 3, 61, 127))
    assert [tuple(s.shape) for s in stages] == [
        (2, 40, 15, 31),
        (2, 80, 7, 15),
        (2, 160, 3, 7),
        (2, 320, 1, 3),
    ]


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


def test_drop_path_schedule_and_training_mode():
    model = create_model("convnext_atto", drop_path_rate=0.3)
    blocks = [b for stage in model.stages for b in stage]
    assert isinstance(blocks[0].drop_path, torch.nn.Identity)  # rate 0 for the first block
    assert blocks[-1].drop_path.drop_prob == pytest.approx(0.3)
    x = torch.randn(64, 4, 2, 2)
    drop = convnext_torch.DropPath(0.5)
    drop.eval()
    assert torch.equal(drop(x), x)
    drop.train()
    y = drop(x)
    dropped = (y.flatten(1) == 0).all(1)
    assert 0 < dropped.sum() < 64  # whole samples dropped, not all
    torch.testing.assert_close(y[~dropped], x[~dropped] / 0.5)


def test_v2_blocks_have_grn_and_no_layer_scale():
    model = create_model("convnextv2_atto")
    block = model.stages[1][0]
    assert isinstance(block.grn, convnext_torch.GRN) and block.gamma is None
    assert tuple(block.grn.gamma.shape) == (1, 1, 1, 4 * 80)
    assert torch.all(block.grn.gamma == 0) and torch.all(block.grn.beta == 0)
    assert isinstance(create_model("convnext_atto").stages[1][0].grn, torch.nn.Identity)


def test_grn_matches_its_definition():
    grn = convnext_torch.GRN(6)
    with torch.no_grad():
        grn.gamma.normal_()
        grn.beta.normal_()
    x = torch.randn(2, 5, 3, 6)  # (N, H, W, C)
    gx = x.pow(2).sum(dim=(1, 2), keepdim=True).sqrt()
    nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(grn(x), grn.gamma * (x * nx) + grn.beta + x)


def test_isotropic_shapes_and_layer_scale_defaults():
    model = create_model("convnext_isotropic_small").eval()
    with torch.no_grad():
        (stage,) = model.forward_stages(torch.randn(2, 3, 61, 127))
    assert tuple(stage.shape) == (2, 384, 3, 7)  # 16x16 / 16, floored
    assert model.blocks[0].gamma is None  # the released small and base have no layer scale
    assert create_model("convnext_isotropic_large").blocks[0].gamma is not None
    keys = list(model.state_dict())
    assert keys[:2] == ["stem.weight", "stem.bias"] and "blocks.17.pwconv2.bias" in keys
