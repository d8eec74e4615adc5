"""ConvNeXt in Keras 3 (TensorFlow backend).

Paper: Liu et al., "A ConvNet for the 2020s", CVPR 2022, https://arxiv.org/abs/2201.03545
Reference code: https://github.com/facebookresearch/ConvNeXt (models/convnext.py)

Every layer is named like the PyTorch attribute it mirrors, so a Keras variable path reads like
the PyTorch key: `convnext_tiny/stages.2/5/pwconv1/kernel` <-> `stages.2.5.pwconv1.weight`.
The twin file, convnext_torch/model.py, has the same classes, names and order.

Differences from the twin file (convnext_torch/model.py):
- Layout: Keras convolutions take (N, H, W, C); PyTorch takes (N, C, H, W). The block here is
  channels-last throughout, so the two permutes of the PyTorch block have nothing to do.
- LayerNorm: C is always the last axis here, so PyTorch's "channels_first" and
  "channels_last" forms are the same layer.
- GELU: written out with erf (GELU in layers.py); Keras' built-ins are either tanh-based
  (keras.ops.gelu) or only float32-accurate in float64 (TF's exact gelu).
- Padding: stem and downsample convs use padding="valid", which floors odd sizes like PyTorch.
  padding="same" would pad the bottom/right and change every size that is not a multiple of 32.
  The overlapping stems' padding=1 (Conv2d's argument in PyTorch) is a ZeroPadding2D layer here,
  named after its conv ("0_pad"); at stride 2 "same" would pad the bottom/right only.
- Defaults set explicitly because Keras' differ: LayerNorm eps 1e-6 (Keras: 1e-3), truncated
  normal std 0.02. Keras' TruncatedNormal cuts at 2 std; PyTorch's trunc_normal_ cuts at +-2
  absolute (100 std). Either is a fine initialisation; checkpoints are what must match.
- Weights are created when the model is built: create_model builds it for any (H, W).
- dtype: a Keras layer's dtype policy is fixed at construction, so every sublayer gets
  `dtype=self.dtype_policy` (keras-hub's convention): ConvNeXt(dtype="float64") is float64 all
  the way down, and a mixed policy (float32 weights, bfloat16 compute) too. PyTorch converts
  a built model instead, with .double().
- The block's MLP: both files call `mlp(x, self.pwconv1, self.act, self.grn, self.pwconv2)`;
  this one (layers.py) calls the layers one by one, PyTorch's fuses them in CPU inference.
- Keras-only bookkeeping, which `make diff` leaves out: build() and get_config() in the
  classes, conv() below, and the helpers of convnext_tf/layers.py (imported here).
"""

from __future__ import annotations

import keras
from keras import layers, ops

from convnext_spec.spec import ModelSpec, as_backbone, resolve, stem_width

# Keras-only helpers (convnext_tf/layers.py: `make diff` leaves them out), importable from here
from convnext_tf.layers import (
    GELU,
    ShapePreserving,
    check_float64_backend,
    config,
    mean,
    mlp,
    sequential,
    trunc_normal,
)
from convnext_tf.layers import SQRT_HALF as SQRT_HALF


def conv(filters: int, kernel_size: int, strides: int, **kwargs) -> layers.Conv2D:
    """Keras-only (PyTorch spells nn.Conv2d out): padding="valid", which floors odd sizes like
    PyTorch, and trunc_normal, looked up in this module like every layer's; kwargs: name, dtype."""
    init = trunc_normal()
    return layers.Conv2D(filters, kernel_size, strides, "valid", kernel_initializer=init, **kwargs)


def drop_path(x, drop_prob: float = 0.0, training: bool = False, seed=None):
    """Zero whole samples of a residual branch (stochastic depth), rescaling the survivors."""
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1 - drop_prob
    shape = (ops.shape(x)[0],) + (1,) * (len(x.shape) - 1)  # one draw per sample: (N, 1, 1, 1)
    random_tensor = ops.floor(keep_prob + keras.random.uniform(shape, dtype=x.dtype, seed=seed))
    return x / keep_prob * random_tensor


@keras.saving.register_keras_serializable(package="convnext_tf")
class DropPath(ShapePreserving, layers.Layer):
    """Stochastic depth: drops the residual branch of a whole sample during training.

    Args:
        drop_prob (float): Probability of dropping the branch. Default: 0.0
    """

    def __init__(self, drop_prob: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.drop_prob = drop_prob
        self.seed_generator = keras.random.SeedGenerator()  # Keras' random state is explicit

    def call(self, x, training=None):
        return drop_path(x, self.drop_prob, training, self.seed_generator)

    def get_config(self) -> dict:
        return config(self, super().get_config())


@keras.saving.register_keras_serializable(package="convnext_tf")
class LayerNorm(ShapePreserving, layers.Layer):
    """LayerNorm over the channel dimension, the last axis of (N, H, W, C) or (N, C).

    Args:
        normalized_shape (int): Number of channels C.
        eps (float): Added to the variance. ConvNeXt uses 1e-6 everywhere. Default: 1e-6
    """

    def __init__(self, normalized_shape: int, eps: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        self.normalized_shape = normalized_shape
        self.eps = eps

    def build(self, input_shape) -> None:
        # named like PyTorch's weight/bias (Keras' own LayerNormalization calls them gamma/beta)
        self.weight = self.add_weight(
            shape=(self.normalized_shape,), initializer="ones", name="weight"
        )
        self.bias = self.add_weight(
            shape=(self.normalized_shape,), initializer="zeros", name="bias"
        )

    def call(self, x):
        # C is the last axis in every Keras layout, so one form serves stem, blocks and head
        mu = mean(x, axis=-1, keepdims=True)
        var = mean(ops.square(x - mu), axis=-1, keepdims=True)  # biased, like PyTorch
        x = (x - mu) / ops.sqrt(var + self.eps)
        return self.weight * x + self.bias

    def get_config(self) -> dict:
        return config(self, super().get_config())


@keras.saving.register_keras_serializable(package="convnext_tf")
class RMSNorm(ShapePreserving, layers.Layer):
    """RMSNorm over the channel dimension (timm's RmsNorm / RmsNorm2d): x / sqrt(mean(x^2) +
    eps), then a per-channel weight. No centring and no bias.

    Args:
        normalized_shape (int): Number of channels C.
        eps (float): Added to the mean square. Default: 1e-6
    """

    def __init__(self, normalized_shape: int, eps: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        self.normalized_shape = normalized_shape
        self.eps = eps

    def build(self, input_shape) -> None:
        self.weight = self.add_weight(
            shape=(self.normalized_shape,), initializer="ones", name="weight"
        )

    def call(self, x):
        # C is the last axis in every Keras layout: no channels_first form
        x = x / ops.sqrt(mean(ops.square(x), axis=-1, keepdims=True) + self.eps)
        return self.weight * x

    def get_config(self) -> dict:
        return config(self, super().get_config())


@keras.saving.register_keras_serializable(package="convnext_tf")
class SimpleNorm(RMSNorm):
    """SimpleNorm over the channel dimension (timm's SimpleNorm / SimpleNorm2d): x / sqrt(var +
    eps) with the unbiased variance (divided by C - 1, as torch.var), then a per-channel
    weight. The variance is taken around the mean, but x itself is not centred; no bias.
    RMSNorm's weight and arguments (eps is added to the variance); only the statistic differs.
    """

    def call(self, x):
        # C is the last axis in every Keras layout: no channels_first form
        mu = mean(x, axis=-1, keepdims=True)
        var = ops.sum(ops.square(x - mu), axis=-1, keepdims=True) / (x.shape[-1] - 1)
        x = x / ops.sqrt(var + self.eps)
        return self.weight * x


def norm_layer(norm: str, dim: int, eps: float = 1e-6, **kwargs) -> layers.Layer:
    """The spec's norm ("layernorm", "rmsnorm" or "simplenorm") over `dim` channels; kwargs
    are the layer's name and dtype."""
    norm_class = {"layernorm": LayerNorm, "rmsnorm": RMSNorm, "simplenorm": SimpleNorm}[norm]
    return norm_class(dim, eps=eps, **kwargs)


@keras.saving.register_keras_serializable(package="convnext_tf")
class GRN(ShapePreserving, layers.Layer):
    """Global Response Normalization (ConvNeXt V2), on channels-last input: each channel is
    scaled by its L2 norm over (H, W) relative to the mean of those norms over channels.
    gamma and beta start at zero, so a fresh GRN is the identity.

    Args:
        dim (int): Number of channels.
    """

    def __init__(self, dim: int, **kwargs):
        super().__init__(**kwargs)
        self.dim = dim

    def build(self, input_shape) -> None:
        self.gamma = self.add_weight(shape=(1, 1, 1, self.dim), initializer="zeros", name="gamma")
        self.beta = self.add_weight(shape=(1, 1, 1, self.dim), initializer="zeros", name="beta")

    def call(self, x):
        gx = ops.sqrt(ops.sum(ops.square(x), axis=(1, 2), keepdims=True))  # -> (N, 1, 1, C)
        nx = gx / (mean(gx, axis=-1, keepdims=True) + 1e-6)
        return self.gamma * (x * nx) + self.beta + x

    def get_config(self) -> dict:
        return config(self, super().get_config())


@keras.saving.register_keras_serializable(package="convnext_tf")
class Block(ShapePreserving, layers.Layer):
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
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.dim = dim
        self.drop_path_rate = drop_path
        self.layer_scale_init_value = layer_scale_init_value
        self.use_grn = use_grn
        self.norm_kind = norm  # Keras-only: `self.norm` is the layer
        self.norm_eps = norm_eps
        self.dwconv = layers.DepthwiseConv2D(  # "same" at stride 1 and 7x7 pads 3 on every side
            7,
            padding="same",
            depthwise_initializer=trunc_normal(),
            name="dwconv",
            dtype=self.dtype_policy,
        )
        self.norm = norm_layer(norm, dim, norm_eps, name="norm", dtype=self.dtype_policy)
        self.pwconv1 = layers.Dense(
            4 * dim, kernel_initializer=trunc_normal(), name="pwconv1", dtype=self.dtype_policy
        )
        self.act = GELU(name="act", dtype=self.dtype_policy)
        self.grn = (
            GRN(4 * dim, name="grn", dtype=self.dtype_policy)
            if use_grn
            else layers.Identity(name="grn", dtype=self.dtype_policy)
        )
        self.pwconv2 = layers.Dense(
            dim, kernel_initializer=trunc_normal(), name="pwconv2", dtype=self.dtype_policy
        )
        self.gamma = None  # created in build() when layer_scale_init_value > 0
        self.drop_path = (
            DropPath(drop_path, name="drop_path", dtype=self.dtype_policy)
            if drop_path > 0.0
            else layers.Identity(name="drop_path", dtype=self.dtype_policy)
        )

    def build(self, input_shape) -> None:
        if self.layer_scale_init_value > 0:
            init = keras.initializers.Constant(self.layer_scale_init_value)
            self.gamma = self.add_weight(shape=(self.dim,), initializer=init, name="gamma")
        # the symbolic pass asks compute_output_shape, not call(): the sublayers are built here
        for layer in (self.dwconv, self.norm, self.pwconv1, self.drop_path):
            layer.build(input_shape)
        for layer in (self.act, self.grn, self.pwconv2):  # the hidden width, 4C
            layer.build((*input_shape[:-1], 4 * self.dim))

    def call(self, x, training=None):
        shortcut = x
        x = self.dwconv(x)
        # already (N, H, W, C): nothing to permute
        x = self.norm(x)
        # pwconv1 -> act -> grn -> pwconv2, the layers one by one (layers.py)
        x = mlp(x, self.pwconv1, self.act, self.grn, self.pwconv2)
        if self.gamma is not None:
            x = self.gamma * x
        # stays (N, H, W, C)
        return shortcut + self.drop_path(x, training=training)

    def get_config(self) -> dict:
        return config(self, super().get_config(), drop_path="drop_path_rate", norm="norm_kind")


@keras.saving.register_keras_serializable(package="convnext_tf")
class ConvNeXt(keras.Model):
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
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.depths = tuple(depths)
        self.dims = tuple(dims)
        self.drop_path_rate = drop_path_rate
        self.layer_scale_init_value = layer_scale_init_value
        self.head_init_scale = head_init_scale
        self.use_grn = use_grn
        self.norm_kind = norm  # Keras-only: `self.norm` and `self.head` are layers
        self.norm_eps = norm_eps
        self.stem_kind = stem
        self.head_kind = head
        self.head_hidden_size = head_hidden_size
        self.head_bias = head_bias
        self.downsample_layers = []  # the stem, then 3 downsampling layers
        if stem == "patchify":
            stem_layers = [conv(dims[0], 4, 4, name="0", dtype=self.dtype_policy)]  # floors
        else:  # timm's overlapping stems: two 3x3 stride-2 convs, padding 1
            width = stem_width(stem, dims[0])
            last = "2" if stem == "overlap_act" else "1"  # the PyTorch Sequential's indices
            stem_layers = [
                layers.ZeroPadding2D(1, name="0_pad", dtype=self.dtype_policy),
                conv(width, 3, 2, name="0", dtype=self.dtype_policy),
                *([GELU(name="1", dtype=self.dtype_policy)] if stem == "overlap_act" else []),
                layers.ZeroPadding2D(1, name=f"{last}_pad", dtype=self.dtype_policy),
                conv(dims[0], 3, 2, name=last, dtype=self.dtype_policy),
            ]
        norm_index = 1 if stem == "patchify" else int(last) + 1  # after the convs (and GELU)
        # "channels_first" in PyTorch; C is last here
        stem_norm = norm_layer(
            norm, dims[0], norm_eps, name=str(norm_index), dtype=self.dtype_policy
        )
        stem = sequential(
            [*stem_layers, stem_norm], name="downsample_layers.0", dtype=self.dtype_policy
        )
        self.downsample_layers.append(stem)
        for i in range(3):
            downsample_layer = sequential(
                [
                    # "channels_first" in PyTorch; C is last here
                    norm_layer(norm, dims[i], norm_eps, name="0", dtype=self.dtype_policy),
                    conv(dims[i + 1], 2, 2, name="1", dtype=self.dtype_policy),  # floors
                ],
                name=f"downsample_layers.{i + 1}",
                dtype=self.dtype_policy,
            )
            self.downsample_layers.append(downsample_layer)

        self.stages = []  # 4 stages of residual blocks
        n_blocks = sum(depths)  # drop path rate rises linearly from 0 to drop_path_rate
        dp_rates = [drop_path_rate * k / max(n_blocks - 1, 1) for k in range(n_blocks)]
        cur = 0
        for i in range(4):
            stage = sequential(
                [
                    Block(
                        dims[i],
                        dp_rates[cur + j],
                        layer_scale_init_value,
                        use_grn,
                        norm,
                        norm_eps,
                        name=str(j),
                        dtype=self.dtype_policy,
                    )
                    for j in range(depths[i])
                ],
                name=f"stages.{i}",
                dtype=self.dtype_policy,
            )
            self.stages.append(stage)
            cur += depths[i]

        # The final norm: on the feature map before pooling ("norm_first", timm's norm_pre), or
        # on the pooled features (the paper's), where the other one is an Identity.
        norm_first = head == "norm_first"
        self.norm_pre = (
            norm_layer(norm, dims[-1], norm_eps, name="norm_pre", dtype=self.dtype_policy)
            if norm_first
            else layers.Identity(name="norm_pre", dtype=self.dtype_policy)
        )
        self.norm = (
            layers.Identity(name="norm", dtype=self.dtype_policy)
            if norm_first
            else norm_layer(norm, dims[-1], norm_eps, name="norm", dtype=self.dtype_policy)
        )
        self.pre_logits = (  # the "mlp" head's hidden layer
            sequential(
                [
                    layers.Dense(
                        head_hidden_size,
                        kernel_initializer=trunc_normal(),
                        name="0",
                        dtype=self.dtype_policy,
                    ),
                    GELU(name="1", dtype=self.dtype_policy),
                ],
                name="pre_logits",
                dtype=self.dtype_policy,
            )
            if head == "mlp"
            else layers.Identity(name="pre_logits", dtype=self.dtype_policy)
        )
        self.head = (
            layers.Dense(
                num_classes,
                use_bias=head_bias,
                kernel_initializer=trunc_normal(0.02 * head_init_scale),
                bias_initializer="zeros",  # zero times head_init_scale
                name="head",
                dtype=self.dtype_policy,
            )
            if num_classes > 0
            else layers.Identity(name="head", dtype=self.dtype_policy)
        )

    def build(self, input_shape) -> None:
        # Keras creates weights from input shapes: one symbolic pass builds every layer.
        features = self.forward_features(keras.KerasTensor(input_shape, dtype=self.compute_dtype))
        self.head.build(self.pre_logits(features).shape)

    def forward_stages(self, x, training=None) -> list:
        """The output of each of the four stages, (N, H_i, W_i, C_i): for detection backbones
        and for locating where two implementations stop agreeing."""
        outputs = []
        for i in range(4):
            x = self.downsample_layers[i](x, training=training)
            x = self.stages[i](x, training=training)
            outputs.append(x)
        return outputs

    def forward_features(self, x, training=None):
        x = self.norm_pre(self.forward_stages(x, training=training)[-1])
        return self.norm(mean(x, axis=(1, 2)))  # global average pool: (N, H, W, C) -> (N, C)

    def forward_patch_features(self, x, training=None):
        """The final norm applied to every position of the last feature map, (N, H * W, C) in
        row-major order: DINOv3's patch tokens (x_norm_patchtokens)."""
        x = self.norm_pre(self.forward_stages(x, training=training)[-1])
        x = ops.reshape(x, (ops.shape(x)[0], -1, x.shape[-1]))  # (N, H, W, C) -> (N, H * W, C)
        return self.norm(x)

    def call(self, x, training=None):
        x = self.forward_features(x, training=training)
        x = self.pre_logits(x)
        return self.head(x)

    def get_config(self) -> dict:
        return config(
            self, super().get_config(), norm="norm_kind", stem="stem_kind", head="head_kind"
        )


@keras.saving.register_keras_serializable(package="convnext_tf")
class ConvNeXtBackbone(keras.Model):
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
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.in_chans = in_chans
        self.depths = tuple(depths)
        self.dims = tuple(dims)
        self.drop_path_rate = drop_path_rate
        self.layer_scale_init_value = layer_scale_init_value
        self.use_grn = use_grn
        self.norm_kind = norm  # Keras-only: named like ConvNeXt's
        self.norm_eps = norm_eps
        self.stem_kind = stem
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
            dtype=self.dtype_policy,
        )
        self.downsample_layers = trunk.downsample_layers  # the classifier's, without its top
        self.stages = trunk.stages
        self.out_indices = tuple(out_indices)
        for i in self.out_indices:
            setattr(
                self,
                f"norm{i}",
                norm_layer(norm, dims[i], norm_eps, name=f"norm{i}", dtype=self.dtype_policy),
            )

    def build(self, input_shape) -> None:
        # Keras creates weights from input shapes: one symbolic pass builds every layer.
        self.forward_stages(keras.KerasTensor(input_shape, dtype=self.compute_dtype))

    def forward_stages(self, x, training=None) -> list:
        """The normalised outputs of the stages in out_indices, each (N, H_i, W_i, C_i)."""
        outputs = []
        for i in range(4):
            x = self.downsample_layers[i](x, training=training)
            x = self.stages[i](x, training=training)
            if i in self.out_indices:
                outputs.append(getattr(self, f"norm{i}")(x))
        return outputs

    def call(self, x, training=None) -> list:
        return self.forward_stages(x, training=training)

    def get_config(self) -> dict:
        return config(self, super().get_config(), norm="norm_kind", stem="stem_kind")


@keras.saving.register_keras_serializable(package="convnext_tf")
class ConvNeXtIsotropic(keras.Model):
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
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.depth = depth
        self.dim = dim
        self.drop_path_rate = drop_path_rate
        self.layer_scale_init_value = layer_scale_init_value
        self.head_init_scale = head_init_scale
        self.stem = conv(dim, 16, 16, name="stem", dtype=self.dtype_policy)  # floors
        dp_rates = [drop_path_rate * k / max(depth - 1, 1) for k in range(depth)]
        self.blocks = sequential(
            [
                Block(
                    dim, dp_rates[i], layer_scale_init_value, name=str(i), dtype=self.dtype_policy
                )
                for i in range(depth)
            ],
            name="blocks",
            dtype=self.dtype_policy,
        )
        # after pooling
        self.norm = LayerNorm(dim, eps=1e-6, name="norm", dtype=self.dtype_policy)
        self.head = (
            layers.Dense(
                num_classes,
                kernel_initializer=trunc_normal(0.02 * head_init_scale),
                bias_initializer="zeros",  # zero times head_init_scale
                name="head",
                dtype=self.dtype_policy,
            )
            if num_classes > 0
            else layers.Identity(name="head", dtype=self.dtype_policy)
        )

    def build(self, input_shape) -> None:
        # Keras creates weights from input shapes: one symbolic pass builds every layer.
        self.forward_features(keras.KerasTensor(input_shape, dtype=self.compute_dtype))
        self.head.build((input_shape[0], self.dim))

    def forward_stages(self, x, training=None) -> list:
        """The output of the single stage, (N, H / 16, W / 16, C), as a list like ConvNeXt's."""
        return [self.blocks(self.stem(x), training=training)]

    def forward_features(self, x, training=None):
        x = self.forward_stages(x, training=training)[-1]
        return self.norm(mean(x, axis=(1, 2)))  # global average pool: (N, H, W, C) -> (N, C)

    def call(self, x, training=None):
        x = self.forward_features(x, training=training)
        return self.head(x)

    def get_config(self) -> dict:
        return config(self, super().get_config())


def create_model(
    name_or_spec: str | ModelSpec, dtype=None, **overrides
) -> ConvNeXt | ConvNeXtBackbone | ConvNeXtIsotropic:
    """Build a model from a variant name or a ModelSpec (convnext_spec.spec: the one description
    both frameworks share), with its weights created for inputs of any (H, W). `overrides` are
    ModelSpec fields: num_classes, in_chans, drop_path_rate, layer_scale_init_value,
    head_init_scale, use_grn, ... `dtype` is a Keras dtype policy ("float32", "float64",
    "mixed_bfloat16", ...) for every layer; None takes Keras' global policy."""
    spec = resolve(name_or_spec, **overrides)
    check_float64_backend(dtype)
    model_class = {
        "classifier": ConvNeXt,
        "backbone": ConvNeXtBackbone,
        "isotropic": ConvNeXtIsotropic,
    }[spec.kind]
    model = model_class(**spec.arguments(), name=spec.name, dtype=dtype)
    model(keras.Input(shape=(None, None, spec.in_chans)))  # builds; export() needs a call
    return model


def create_backbone(
    name_or_spec: str | ModelSpec,
    out_indices: tuple[int, ...] = (0, 1, 2, 3),
    dtype=None,
    **overrides,
) -> ConvNeXtBackbone:
    """Build a variant (not isotropic) as a detection backbone returning the stages in
    `out_indices`, for inputs of any (H, W); `overrides` are ModelSpec fields (in_chans,
    drop_path_rate, ...)."""
    spec = as_backbone(resolve(name_or_spec, **overrides), out_indices)
    return create_model(spec, dtype=dtype)
