"""ConvNeXt in PyTorch.

Paper: Liu et al., "A ConvNet for the 2020s", CVPR 2022, https://arxiv.org/abs/2201.03545
Reference code: https://github.com/facebookresearch/ConvNeXt (models/convnext.py)

Attribute names are the official ones, so an official checkpoint loads with a plain
`load_state_dict`. The twin file, convnext_tf/model.py, has the same classes, names and order.

Differences from the twin file (convnext_tf/model.py):
- Layout: PyTorch convolutions take (N, C, H, W); Keras takes (N, H, W, C). The block permutes
  to channels-last around its MLP here; the Keras block is channels-last throughout.
- LayerNorm: here it normalises over C, which is dim 1 in (N, C, H, W) ("channels_first") or
  the last dim ("channels_last"). In Keras C is always last, so one form suffices there.
- GELU: `nn.GELU()` is exact (erf). Keras needs an explicit erf form (see its GELU class).
- Padding: stem and downsample convs have no padding here; PyTorch floors odd sizes. Keras uses
  padding="valid", which floors the same way ("same" would pad and diverge). The overlapping
  stems' padding=1 is a ZeroPadding2D layer in Keras, before a "valid" conv.
- The block's MLP: both files call `mlp(x, self.pwconv1, self.act, self.grn, self.pwconv2)`,
  which is `self.pwconv2(self.grn(self.act(self.pwconv1(x))))`. This one (kernels.py) computes
  it in CPU inference as fused oneDNN calls; TensorFlow optimises a tf.function's graph by
  itself, so the Keras one (convnext_tf/layers.py) calls the layers one by one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from convnext_spec.spec import ModelSpec, as_backbone, resolve, stem_width
from convnext_torch.kernels import mlp


def drop_path(x: torch.Tensor, drop_prob: float = 0.0, training: bool = False) -> torch.Tensor:
    """Zero whole samples of a residual branch (stochastic depth), rescaling the survivors."""
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1 - drop_prob
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)  # one draw per sample: (N, 1, 1, 1)
    random_tensor = torch.floor(keep_prob + torch.rand(shape, dtype=x.dtype, device=x.device))
    return x / keep_prob * random_tensor


class DropPath(nn.Module):
    """Stochastic depth: drops the residual branch of a whole sample during training.

    Args:
        drop_prob (float): Probability of dropping the branch. Default: 0.0
    """

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.drop_prob, self.training)


class LayerNorm(nn.Module):
    """LayerNorm over the channel dimension, for channels-last or channels-first tensors.

    Args:
        normalized_shape (int): Number of channels C.
        eps (float): Added to the variance. ConvNeXt uses 1e-6 everywhere. Default: 1e-6
        data_format (str): "channels_last" for (N, H, W, C), "channels_first" for (N, C, H, W).
    """

    def __init__(
        self, normalized_shape: int, eps: float = 1e-6, data_format: str = "channels_last"
    ):
        super().__init__()
        if data_format not in ("channels_last", "channels_first"):
            raise ValueError(f"data_format must be channels_last or channels_first: {data_format}")
        self.weight = nn.Parameter(torch.ones(normalized_shape))
        self.bias = nn.Parameter(torch.zeros(normalized_shape))
        self.eps = eps
        self.data_format = data_format
        self.normalized_shape = (normalized_shape,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.data_format == "channels_last":
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        # channels_first: (N, C, H, W) seen as (N, H, W, C), where layer_norm's last dim is C.
        # One fused kernel; written out as mean and variance over dim 1 it is five passes,
        # 10x slower on the stem's output (and the result leaves channels_last in memory).
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class RMSNorm(nn.Module):
    """RMSNorm over the channel dimension (timm's RmsNorm / RmsNorm2d): x / sqrt(mean(x^2) +
    eps), then a per-channel weight. No centring and no bias.

    Args:
        normalized_shape (int): Number of channels C.
        eps (float): Added to the mean square. Default: 1e-6
        data_format (str): "channels_last" for (N, H, W, C), "channels_first" for (N, C, H, W).
    """

    def __init__(
        self, normalized_shape: int, eps: float = 1e-6, data_format: str = "channels_last"
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(normalized_shape))
        self.eps = eps
        self.data_format = data_format

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = 1 if self.data_format == "channels_first" else -1
        x = x / torch.sqrt(x.pow(2).mean(c, keepdim=True) + self.eps)
        return self.weight[:, None, None] * x if c == 1 else self.weight * x


class SimpleNorm(RMSNorm):
    """SimpleNorm over the channel dimension (timm's SimpleNorm / SimpleNorm2d): x / sqrt(var +
    eps) with the unbiased variance (divided by C - 1, as torch.var), then a per-channel
    weight. The variance is taken around the mean, but x itself is not centred; no bias.
    RMSNorm's weight and arguments (eps is added to the variance); only the statistic differs.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = 1 if self.data_format == "channels_first" else -1
        mean = x.mean(c, keepdim=True)
        var = (x - mean).pow(2).sum(c, keepdim=True) / (x.shape[c] - 1)  # unbiased
        x = x / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x if c == 1 else self.weight * x


def norm_layer(
    norm: str, dim: int, eps: float = 1e-6, data_format: str = "channels_last"
) -> nn.Module:
    """The spec's norm ("layernorm", "rmsnorm" or "simplenorm") over `dim` channels."""
    norm_class = {"layernorm": LayerNorm, "rmsnorm": RMSNorm, "simplenorm": SimpleNorm}[norm]
    return norm_class(dim, eps=eps, data_format=data_format)


class GRN(nn.Module):
    """Global Response Normalization (ConvNeXt V2), on channels-last input: each channel is
    scaled by its L2 norm over (H, W) relative to the mean of those norms over channels.
    gamma and beta start at zero, so a fresh GRN is the identity.

    Args:
        dim (int): Number of channels.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gx = torch.norm(x, p=2, dim=(1, 2), keepdim=True)  # (N, H, W, C) -> (N, 1, 1, C)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
        return self.gamma * (x * nx) + self.beta + x


class Block(nn.Module):
    """ConvNeXt block: 7x7 depthwise conv -> LayerNorm -> Linear 4C -> GELU (-> GRN in V2) ->
    Linear C -> layer scale -> drop path -> residual.

    Args:
        dim (int): Number of channels C.
        drop_path (float): Stochastic depth rate of this block. Default: 0.0
        layer_scale_init_value (float): Initial value of the layer scale `gamma`; 0 means no
            layer scale. Default: 1e-6
        use_grn (bool): Global Response Normalization after GELU, as in ConvNeXt V2.
            Default: False
        norm (str): "layernorm", "rmsnorm" or "simplenorm". Default: "layernorm"
        norm_eps (float): The norm's eps. Default: 1e-6
    """

    def __init__(
        self,
        dim: int,
        drop_path: float = 0.0,
        layer_scale_init_value: float = 1e-6,
        use_grn: bool = False,
        norm: str = "layernorm",
        norm_eps: float = 1e-6,
    ):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)  # depthwise
        self.norm = norm_layer(norm, dim, norm_eps)
        self.pwconv1 = nn.Linear(dim, 4 * dim)  # pointwise 1x1 convs, as Linear on channels-last
        self.act = nn.GELU()  # exact erf form (the default)
        self.grn = GRN(4 * dim) if use_grn else nn.Identity()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = (
            nn.Parameter(layer_scale_init_value * torch.ones(dim))
            if layer_scale_init_value > 0
            else None
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.dwconv(x)
        x = x.permute(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)
        x = self.norm(x)
        # pwconv1 -> act -> grn -> pwconv2; in CPU inference as fused oneDNN calls (kernels.py)
        x = mlp(x, self.pwconv1, self.act, self.grn, self.pwconv2)
        if self.gamma is not None:
            x = self.gamma * x
        x = x.permute(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
        return shortcut + self.drop_path(x)


class ConvNeXt(nn.Module):
    """ConvNeXt: a 4x4 patch stem, four stages of blocks with 2x2 downsampling between them,
    global average pooling, LayerNorm and a linear classifier. timm's originals change the norm,
    the stem or the head (convnext_spec.spec.VARIANT_OPTIONS).

    Args:
        in_chans (int): Number of input image channels. Default: 3
        num_classes (int): Number of classes of the classifier head; 0 means no head, the model
            returns the pooled features. Default: 1000
        depths (tuple[int, ...]): Number of blocks in each stage. Default: (3, 3, 9, 3)
        dims (tuple[int, ...]): Channels of each stage. Default: (96, 192, 384, 768)
        drop_path_rate (float): Stochastic depth rate of the last block; it rises linearly from
            0 at the first block. Default: 0.0
        layer_scale_init_value (float): Initial layer scale of every block; 0 disables it.
            Default: 1e-6
        head_init_scale (float): Factor applied to the initial head weights and bias. Default: 1.0
        use_grn (bool): Global Response Normalization in every block (ConvNeXt V2, which also
            has no layer scale). Default: False
        norm (str): Every norm: "layernorm", "rmsnorm" or "simplenorm". Default: "layernorm"
        norm_eps (float): Every norm's eps. Default: 1e-6
        stem (str): "patchify" (4x4 conv, stride 4), or timm's overlapping stems of two 3x3
            stride-2 convs: "overlap", "overlap_tiered" (half width between them),
            "overlap_act" (a GELU between them). Default: "patchify"
        head (str): "linear" (pool, norm, Linear), "norm_first" (norm, pool, Linear) or "mlp"
            (pool, norm, Linear, GELU, Linear). Default: "linear"
        head_hidden_size (int): Width of the "mlp" head's hidden Linear. Default: 0
        head_bias (bool): Whether the classifier has a bias. Default: True
    """

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        depths: tuple[int, ...] = (3, 3, 9, 3),
        dims: tuple[int, ...] = (96, 192, 384, 768),
        drop_path_rate: float = 0.0,
        layer_scale_init_value: float = 1e-6,
        head_init_scale: float = 1.0,
        use_grn: bool = False,
        norm: str = "layernorm",
        norm_eps: float = 1e-6,
        stem: str = "patchify",
        head: str = "linear",
        head_hidden_size: int = 0,
        head_bias: bool = True,
    ):
        super().__init__()
        self.downsample_layers = nn.ModuleList()  # the stem, then 3 downsampling layers
        if stem == "patchify":
            stem_layers = [nn.Conv2d(in_chans, dims[0], kernel_size=4, stride=4)]  # floors
        else:  # timm's overlapping stems: two 3x3 stride-2 convs, padding 1
            width = stem_width(stem, dims[0])
            stem_layers = [
                nn.Conv2d(in_chans, width, kernel_size=3, stride=2, padding=1),
                *([nn.GELU()] if stem == "overlap_act" else []),
                nn.Conv2d(width, dims[0], kernel_size=3, stride=2, padding=1),
            ]
        stem_norm = norm_layer(norm, dims[0], norm_eps, data_format="channels_first")
        self.downsample_layers.append(nn.Sequential(*stem_layers, stem_norm))
        for i in range(3):
            downsample_layer = nn.Sequential(
                norm_layer(norm, dims[i], norm_eps, data_format="channels_first"),
                nn.Conv2d(dims[i], dims[i + 1], kernel_size=2, stride=2),  # no padding: floors
            )
            self.downsample_layers.append(downsample_layer)

        self.stages = nn.ModuleList()  # 4 stages of residual blocks
        n_blocks = sum(depths)  # drop path rate rises linearly from 0 to drop_path_rate
        dp_rates = [drop_path_rate * k / max(n_blocks - 1, 1) for k in range(n_blocks)]
        cur = 0
        for i in range(4):
            stage = nn.Sequential(
                *[
                    Block(
                        dims[i], dp_rates[cur + j], layer_scale_init_value, use_grn, norm, norm_eps
                    )
                    for j in range(depths[i])
                ]
            )
            self.stages.append(stage)
            cur += depths[i]

        # The final norm: on the feature map before pooling ("norm_first", timm's norm_pre), or
        # on the pooled features (the paper's), where the other one is an Identity.
        norm_first = head == "norm_first"
        self.norm_pre = (
            norm_layer(norm, dims[-1], norm_eps, data_format="channels_first")
            if norm_first
            else nn.Identity()
        )
        self.norm = nn.Identity() if norm_first else norm_layer(norm, dims[-1], norm_eps)
        self.pre_logits = (  # the "mlp" head's hidden layer
            nn.Sequential(nn.Linear(dims[-1], head_hidden_size), nn.GELU())
            if head == "mlp"
            else nn.Identity()
        )
        width = head_hidden_size if head == "mlp" else dims[-1]
        self.head = (
            nn.Linear(width, num_classes, bias=head_bias) if num_classes > 0 else nn.Identity()
        )

        self.apply(self._init_weights)
        if num_classes > 0:
            self.head.weight.data.mul_(head_init_scale)
            if head_bias:
                self.head.bias.data.mul_(head_init_scale)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            # std 0.02 as in the official code; truncated at +-2 (absolute, i.e. 100 std)
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The output of each of the four stages, (N, C_i, H_i, W_i): for detection backbones
        and for locating where two implementations stop agreeing."""
        outputs = []
        for i in range(4):
            x = self.downsample_layers[i](x)
            x = self.stages[i](x)
            outputs.append(x)
        return outputs

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm_pre(self.forward_stages(x)[-1])
        return self.norm(x.mean([-2, -1]))  # global average pool: (N, C, H, W) -> (N, C)

    def forward_patch_features(self, x: torch.Tensor) -> torch.Tensor:
        """The final norm applied to every position of the last feature map, (N, H * W, C) in
        row-major order: DINOv3's patch tokens (x_norm_patchtokens)."""
        x = self.norm_pre(self.forward_stages(x)[-1])
        return self.norm(x.flatten(2).transpose(1, 2))  # (N, C, H, W) -> (N, H * W, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        x = self.pre_logits(x)
        return self.head(x)


class ConvNeXtBackbone(nn.Module):
    """ConvNeXt as a detection / segmentation backbone, as in the official object_detection and
    semantic_segmentation code: ConvNeXt's stem, downsampling layers and stages without pooling
    or head; the output of each stage in out_indices passes its own channels-first LayerNorm
    `norm{i}`.

    Args:
        in_chans (int): Number of input image channels. Default: 3
        depths (tuple[int, ...]): Number of blocks in each stage. Default: (3, 3, 9, 3)
        dims (tuple[int, ...]): Channels of each stage. Default: (96, 192, 384, 768)
        drop_path_rate (float): Stochastic depth rate of the last block; it rises linearly from
            0 at the first block. Default: 0.0
        layer_scale_init_value (float): Initial layer scale of every block; 0 disables it.
            Default: 1e-6
        use_grn (bool): Global Response Normalization in every block (ConvNeXt V2). Default: False
        out_indices (tuple[int, ...]): The stages whose outputs are returned. Default: (0, 1, 2, 3)
        norm (str): Every norm: "layernorm", "rmsnorm" or "simplenorm". Default: "layernorm"
        norm_eps (float): Every norm's eps. Default: 1e-6
        stem (str): "patchify" or an overlapping stem, as in ConvNeXt. Default: "patchify"
    """

    def __init__(
        self,
        in_chans: int = 3,
        depths: tuple[int, ...] = (3, 3, 9, 3),
        dims: tuple[int, ...] = (96, 192, 384, 768),
        drop_path_rate: float = 0.0,
        layer_scale_init_value: float = 1e-6,
        use_grn: bool = False,
        out_indices: tuple[int, ...] = (0, 1, 2, 3),
        norm: str = "layernorm",
        norm_eps: float = 1e-6,
        stem: str = "patchify",
    ):
        super().__init__()
        trunk = ConvNeXt(
            in_chans=in_chans,
            num_classes=0,
            depths=depths,
            dims=dims,
            drop_path_rate=drop_path_rate,
            layer_scale_init_value=layer_scale_init_value,
            use_grn=use_grn,
            norm=norm,
            norm_eps=norm_eps,
            stem=stem,
        )
        self.downsample_layers = trunk.downsample_layers  # the classifier's, without its top
        self.stages = trunk.stages
        self.out_indices = tuple(out_indices)
        for i in self.out_indices:
            self.add_module(
                f"norm{i}", norm_layer(norm, dims[i], norm_eps, data_format="channels_first")
            )

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The normalised outputs of the stages in out_indices, each (N, C_i, H_i, W_i)."""
        outputs = []
        for i in range(4):
            x = self.downsample_layers[i](x)
            x = self.stages[i](x)
            if i in self.out_indices:
                outputs.append(getattr(self, f"norm{i}")(x))
        return outputs

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_stages(x)


class ConvNeXtIsotropic(nn.Module):
    """Isotropic ConvNeXt (the paper's comparison with ViT): a 16x16 patch stem without
    normalisation, one stage of blocks at constant resolution, global average pooling,
    LayerNorm and a linear classifier.

    Args:
        in_chans (int): Number of input image channels. Default: 3
        num_classes (int): Number of classes of the classifier head; 0 means no head, the model
            returns the pooled features. Default: 1000
        depth (int): Number of blocks. Default: 18
        dim (int): Channels of every block. Default: 384
        drop_path_rate (float): Stochastic depth rate of the last block; it rises linearly from
            0 at the first block. Default: 0.0
        layer_scale_init_value (float): Initial layer scale of every block; 0 disables it, as
            in the released small and base models. Default: 0.0
        head_init_scale (float): Factor applied to the initial head weights and bias. Default: 1.0
    """

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        depth: int = 18,
        dim: int = 384,
        drop_path_rate: float = 0.0,
        layer_scale_init_value: float = 0.0,
        head_init_scale: float = 1.0,
    ):
        super().__init__()
        self.stem = nn.Conv2d(in_chans, dim, kernel_size=16, stride=16)  # no padding: floors
        dp_rates = [drop_path_rate * k / max(depth - 1, 1) for k in range(depth)]
        self.blocks = nn.Sequential(
            *[Block(dim, dp_rates[i], layer_scale_init_value) for i in range(depth)]
        )
        self.norm = LayerNorm(dim, eps=1e-6)  # after pooling
        self.head = nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()

        self.apply(ConvNeXt._init_weights)
        if num_classes > 0:
            self.head.weight.data.mul_(head_init_scale)
            self.head.bias.data.mul_(head_init_scale)

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The output of the single stage, (N, C, H / 16, W / 16), as a list like ConvNeXt's."""
        return [self.blocks(self.stem(x))]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_stages(x)[-1]
        return self.norm(x.mean([-2, -1]))  # global average pool: (N, C, H, W) -> (N, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        return self.head(x)


def create_model(
    name_or_spec: str | ModelSpec, **overrides
) -> ConvNeXt | ConvNeXtBackbone | ConvNeXtIsotropic:
    """Build a model from a variant name or a ModelSpec (convnext_spec.spec: the one description
    both frameworks share). `overrides` are ModelSpec fields: num_classes, in_chans,
    drop_path_rate, layer_scale_init_value, head_init_scale, use_grn, ..."""
    spec = resolve(name_or_spec, **overrides)
    model_class = {
        "classifier": ConvNeXt,
        "backbone": ConvNeXtBackbone,
        "isotropic": ConvNeXtIsotropic,
    }[spec.kind]
    return model_class(**spec.arguments())


def create_backbone(
    name_or_spec: str | ModelSpec, out_indices: tuple[int, ...] = (0, 1, 2, 3), **overrides
) -> ConvNeXtBackbone:
    """Build a variant (not isotropic) as a detection backbone returning the stages in
    `out_indices`; `overrides` are ModelSpec fields (in_chans, drop_path_rate, ...)."""
    return create_model(as_backbone(resolve(name_or_spec, **overrides), out_indices))
