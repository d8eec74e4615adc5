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
- GELU: written out with erf (the GELU class below); Keras' built-ins are either tanh-based
  (keras.ops.gelu) or only float32-accurate in float64 (TF's exact gelu).
- Padding: stem and downsample convs use padding="valid", which floors odd sizes like PyTorch.
  padding="same" would pad the bottom/right and change every size that is not a multiple of 32.
- Defaults set explicitly because Keras' differ: LayerNorm eps 1e-6 (Keras: 1e-3), truncated
  normal std 0.02. Keras' TruncatedNormal cuts at 2 std; PyTorch's trunc_normal_ cuts at +-2
  absolute (100 std). Either is a fine initialisation; checkpoints are what must match.
- Weights are created when the model is built: create_model builds it for any (H, W).
- dtype: create_model(..., dtype="float64") builds every layer in float64; Keras layers take
  the global dtype policy at construction, PyTorch converts afterwards with .double().
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import keras
from keras import layers, ops

SQRT_HALF = 1 / math.sqrt(2)  # a Python float: stays float64 in float64 models


def trunc_normal(std: float = 0.02) -> keras.initializers.Initializer:
    # One initializer per layer: an unseeded Keras initializer repeats its values when reused.
    return keras.initializers.TruncatedNormal(stddev=std)


def from_config_in_its_dtype(cls, config: dict):
    """Rebuild a model with every sublayer in the saved dtype. Keras layers take the global
    dtype policy at construction, so a float64 model would otherwise reload float32 inside."""
    dtype = config.get("dtype")
    with default_float(keras.dtype_policies.get(dtype) if dtype is not None else None):
        return cls(**config)


def drop_path(x, drop_prob: float = 0.0, training: bool = False, seed=None):
    """Zero whole samples of a residual branch (stochastic depth), rescaling the survivors."""
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1 - drop_prob
    shape = (ops.shape(x)[0],) + (1,) * (len(x.shape) - 1)  # one draw per sample: (N, 1, 1, 1)
    random_tensor = ops.floor(keep_prob + keras.random.uniform(shape, dtype=x.dtype, seed=seed))
    return x / keep_prob * random_tensor


@keras.saving.register_keras_serializable(package="convnext_tf")
class DropPath(layers.Layer):
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
        return {**super().get_config(), "drop_prob": self.drop_prob}


@keras.saving.register_keras_serializable(package="convnext_tf")
class LayerNorm(layers.Layer):
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
        mean = ops.mean(x, axis=-1, keepdims=True)
        var = ops.mean(ops.square(x - mean), axis=-1, keepdims=True)  # biased, like PyTorch
        x = (x - mean) / ops.sqrt(var + self.eps)
        return self.weight * x + self.bias

    def get_config(self) -> dict:
        return {**super().get_config(), "normalized_shape": self.normalized_shape, "eps": self.eps}


@keras.saving.register_keras_serializable(package="convnext_tf")
class GELU(layers.Layer):
    """Exact GELU, 0.5 x (1 + erf(x / sqrt(2))), the same function as PyTorch's nn.GELU().

    Keras-only: keras.ops.gelu defaults to the tanh approximation (5e-4 off), and TF's exact
    gelu rounds 1/sqrt(2) to float32, which caps float64 agreement at ~5e-9.
    """

    def call(self, x):
        return 0.5 * x * (1.0 + ops.erf(x * SQRT_HALF))


@keras.saving.register_keras_serializable(package="convnext_tf")
class GRN(layers.Layer):
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
        nx = gx / (ops.mean(gx, axis=-1, keepdims=True) + 1e-6)
        return self.gamma * (x * nx) + self.beta + x

    def get_config(self) -> dict:
        return {**super().get_config(), "dim": self.dim}


@keras.saving.register_keras_serializable(package="convnext_tf")
class Block(layers.Layer):
    """ConvNeXt block: 7x7 depthwise conv -> LayerNorm -> Linear 4C -> GELU (-> GRN in V2) ->
    Linear C -> layer scale -> drop path -> residual.

    Args:
        dim (int): Number of channels C.
        drop_path (float): Stochastic depth rate of this block. Default: 0.0
        layer_scale_init_value (float): Initial value of the layer scale `gamma`; 0 means no
            layer scale. Default: 1e-6
        use_grn (bool): Global Response Normalization after GELU, as in ConvNeXt V2.
            Default: False
    """

    def __init__(
        self,
        dim: int,
        drop_path: float = 0.0,
        layer_scale_init_value: float = 1e-6,
        use_grn: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.dim = dim
        self.drop_path_rate = drop_path
        self.layer_scale_init_value = layer_scale_init_value
        self.use_grn = use_grn
        self.dwconv = layers.DepthwiseConv2D(  # "same" at stride 1 and 7x7 pads 3 on every side
            7, padding="same", depthwise_initializer=trunc_normal(), name="dwconv"
        )
        self.norm = LayerNorm(dim, eps=1e-6, name="norm")
        self.pwconv1 = layers.Dense(4 * dim, kernel_initializer=trunc_normal(), name="pwconv1")
        self.act = GELU(name="act")
        self.grn = GRN(4 * dim, name="grn") if use_grn else layers.Identity(name="grn")
        self.pwconv2 = layers.Dense(dim, kernel_initializer=trunc_normal(), name="pwconv2")
        self.gamma = None  # created in build() when layer_scale_init_value > 0
        self.drop_path = (
            DropPath(drop_path, name="drop_path")
            if drop_path > 0.0
            else layers.Identity(name="drop_path")
        )

    def build(self, input_shape) -> None:
        if self.layer_scale_init_value > 0:
            init = keras.initializers.Constant(self.layer_scale_init_value)
            self.gamma = self.add_weight(shape=(self.dim,), initializer=init, name="gamma")

    def call(self, x, training=None):
        shortcut = x
        x = self.dwconv(x)
        # already (N, H, W, C): nothing to permute
        x = self.norm(x)
        x = self.pwconv1(x)
        x = self.act(x)
        x = self.grn(x)
        x = self.pwconv2(x)
        if self.gamma is not None:
            x = self.gamma * x
        # stays (N, H, W, C)
        return shortcut + self.drop_path(x, training=training)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "dim": self.dim,
            "drop_path": self.drop_path_rate,
            "layer_scale_init_value": self.layer_scale_init_value,
            "use_grn": self.use_grn,
        }


@keras.saving.register_keras_serializable(package="convnext_tf")
class ConvNeXt(keras.Model):
    """ConvNeXt: a 4x4 patch stem, four stages of blocks with 2x2 downsampling between them,
    global average pooling, LayerNorm and a linear classifier.

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
        self.downsample_layers = []  # the stem, then 3 downsampling layers
        stem = keras.Sequential(
            [
                layers.Conv2D(  # "valid": floors like PyTorch
                    dims[0],
                    4,
                    strides=4,
                    padding="valid",
                    kernel_initializer=trunc_normal(),
                    name="0",
                ),
                LayerNorm(dims[0], eps=1e-6, name="1"),  # "channels_first" in PyTorch
            ],
            name="downsample_layers.0",
        )
        self.downsample_layers.append(stem)
        for i in range(3):
            downsample_layer = keras.Sequential(
                [
                    LayerNorm(dims[i], eps=1e-6, name="0"),  # "channels_first" in PyTorch
                    layers.Conv2D(  # "valid": floors like PyTorch
                        dims[i + 1],
                        2,
                        strides=2,
                        padding="valid",
                        kernel_initializer=trunc_normal(),
                        name="1",
                    ),
                ],
                name=f"downsample_layers.{i + 1}",
            )
            self.downsample_layers.append(downsample_layer)

        self.stages = []  # 4 stages of residual blocks
        n_blocks = sum(depths)  # drop path rate rises linearly from 0 to drop_path_rate
        dp_rates = [drop_path_rate * k / max(n_blocks - 1, 1) for k in range(n_blocks)]
        cur = 0
        for i in range(4):
            stage = keras.Sequential(
                [
                    Block(dims[i], dp_rates[cur + j], layer_scale_init_value, use_grn, name=str(j))
                    for j in range(depths[i])
                ],
                name=f"stages.{i}",
            )
            self.stages.append(stage)
            cur += depths[i]

        self.norm = LayerNorm(dims[-1], eps=1e-6, name="norm")  # after pooling
        self.head = (
            layers.Dense(
                num_classes,
                kernel_initializer=trunc_normal(0.02 * head_init_scale),
                bias_initializer="zeros",  # zero times head_init_scale
                name="head",
            )
            if num_classes > 0
            else layers.Identity(name="head")
        )

    from_config = classmethod(from_config_in_its_dtype)

    def build(self, input_shape) -> None:
        # Keras creates weights from input shapes: one symbolic pass builds every layer.
        self.forward_features(keras.KerasTensor(input_shape, dtype=self.compute_dtype))
        self.head.build((input_shape[0], self.dims[-1]))

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
        x = self.forward_stages(x, training=training)[-1]
        return self.norm(ops.mean(x, axis=(1, 2)))  # global average pool: (N, H, W, C) -> (N, C)

    def call(self, x, training=None):
        x = self.forward_features(x, training=training)
        return self.head(x)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "in_chans": self.in_chans,
            "num_classes": self.num_classes,
            "depths": self.depths,
            "dims": self.dims,
            "drop_path_rate": self.drop_path_rate,
            "layer_scale_init_value": self.layer_scale_init_value,
            "head_init_scale": self.head_init_scale,
            "use_grn": self.use_grn,
        }


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
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.in_chans = in_chans
        self.depths = tuple(depths)
        self.dims = tuple(dims)
        self.drop_path_rate = drop_path_rate
        self.layer_scale_init_value = layer_scale_init_value
        self.use_grn = use_grn
        trunk = ConvNeXt(
            in_chans, 0, depths, dims, drop_path_rate, layer_scale_init_value, 1.0, use_grn
        )
        self.downsample_layers = trunk.downsample_layers  # the classifier's, without its top
        self.stages = trunk.stages
        self.out_indices = tuple(out_indices)
        for i in self.out_indices:
            setattr(self, f"norm{i}", LayerNorm(dims[i], eps=1e-6, name=f"norm{i}"))

    from_config = classmethod(from_config_in_its_dtype)

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
        return {
            **super().get_config(),
            "in_chans": self.in_chans,
            "depths": self.depths,
            "dims": self.dims,
            "drop_path_rate": self.drop_path_rate,
            "layer_scale_init_value": self.layer_scale_init_value,
            "use_grn": self.use_grn,
            "out_indices": self.out_indices,
        }


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
        self.stem = layers.Conv2D(  # "valid": floors like PyTorch
            dim, 16, strides=16, padding="valid", kernel_initializer=trunc_normal(), name="stem"
        )
        dp_rates = [drop_path_rate * k / max(depth - 1, 1) for k in range(depth)]
        self.blocks = keras.Sequential(
            [Block(dim, dp_rates[i], layer_scale_init_value, name=str(i)) for i in range(depth)],
            name="blocks",
        )
        self.norm = LayerNorm(dim, eps=1e-6, name="norm")  # after pooling
        self.head = (
            layers.Dense(
                num_classes,
                kernel_initializer=trunc_normal(0.02 * head_init_scale),
                bias_initializer="zeros",  # zero times head_init_scale
                name="head",
            )
            if num_classes > 0
            else layers.Identity(name="head")
        )

    from_config = classmethod(from_config_in_its_dtype)

    def build(self, input_shape) -> None:
        # Keras creates weights from input shapes: one symbolic pass builds every layer.
        self.forward_features(keras.KerasTensor(input_shape, dtype=self.compute_dtype))
        self.head.build((input_shape[0], self.dim))

    def forward_stages(self, x, training=None) -> list:
        """The output of the single stage, (N, H / 16, W / 16, C), as a list like ConvNeXt's."""
        return [self.blocks(self.stem(x), training=training)]

    def forward_features(self, x, training=None):
        x = self.forward_stages(x, training=training)[-1]
        return self.norm(ops.mean(x, axis=(1, 2)))  # global average pool: (N, H, W, C) -> (N, C)

    def call(self, x, training=None):
        x = self.forward_features(x, training=training)
        return self.head(x)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "in_chans": self.in_chans,
            "num_classes": self.num_classes,
            "depth": self.depth,
            "dim": self.dim,
            "drop_path_rate": self.drop_path_rate,
            "layer_scale_init_value": self.layer_scale_init_value,
            "head_init_scale": self.head_init_scale,
        }


# Variants of the paper (tiny..xlarge) and timm's small ones (atto..nano), and ConvNeXt V2
# (Woo et al. 2023: GRN, no layer scale; see FAMILY_DEFAULTS). Parameter counts are for 1000
# classes and 3 input channels.
# name                  depths           dims                         parameters
VARIANTS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "convnext_atto":     ((2, 2, 6, 2),   (40, 80, 160, 320)),      #   3,695,520
    "convnext_femto":    ((2, 2, 6, 2),   (48, 96, 192, 384)),      #   5,217,784
    "convnext_pico":     ((2, 2, 6, 2),   (64, 128, 256, 512)),     #   9,045,672
    "convnext_nano":     ((2, 2, 8, 2),   (80, 160, 320, 640)),     #  15,593,560
    "convnext_tiny":     ((3, 3, 9, 3),   (96, 192, 384, 768)),     #  28,589,128
    "convnext_small":    ((3, 3, 27, 3),  (96, 192, 384, 768)),     #  50,223,688
    "convnext_base":     ((3, 3, 27, 3),  (128, 256, 512, 1024)),   #  88,591,464
    "convnext_large":    ((3, 3, 27, 3),  (192, 384, 768, 1536)),   # 197,767,336
    "convnext_xlarge":   ((3, 3, 27, 3),  (256, 512, 1024, 2048)),  # 350,196,968
    "convnextv2_atto":   ((2, 2, 6, 2),   (40, 80, 160, 320)),      #   3,708,400
    "convnextv2_femto":  ((2, 2, 6, 2),   (48, 96, 192, 384)),      #   5,233,240
    "convnextv2_pico":   ((2, 2, 6, 2),   (64, 128, 256, 512)),     #   9,066,280
    "convnextv2_nano":   ((2, 2, 8, 2),   (80, 160, 320, 640)),     #  15,623,800
    "convnextv2_tiny":   ((3, 3, 9, 3),   (96, 192, 384, 768)),     #  28,635,496
    "convnextv2_base":   ((3, 3, 27, 3),  (128, 256, 512, 1024)),   #  88,717,800
    "convnextv2_large":  ((3, 3, 27, 3),  (192, 384, 768, 1536)),   # 197,956,840
    "convnextv2_huge":   ((3, 3, 27, 3),  (352, 704, 1408, 2816)),  # 660,289,640
}  # fmt: skip

# The isotropic models of the paper. The released small and base have no layer scale, large has.
# name                         depth  dim   layer scale  parameters
ISOTROPIC_VARIANTS: dict[str, tuple[int, int, float]] = {
    "convnext_isotropic_small":  (18,   384,  0.0),     #  22,308,712
    "convnext_isotropic_base":   (18,   768,  0.0),     #  87,083,752
    "convnext_isotropic_large":  (36,   1024, 1e-6),    # 305,942,504
}  # fmt: skip

# What a family changes beyond depths and dims (the prefix of the variant name).
FAMILY_DEFAULTS: dict[str, dict] = {
    "convnext": {},
    "convnextv2": {"use_grn": True, "layer_scale_init_value": 0.0},
}


def create_model(name: str, dtype: str | None = None, **overrides) -> ConvNeXt | ConvNeXtIsotropic:
    """Build a variant by name, with its weights created for inputs of any (H, W);
    `overrides` are arguments of its class (num_classes, in_chans, drop_path_rate,
    layer_scale_init_value, head_init_scale, and use_grn for ConvNeXt). `dtype` ("float32",
    "float64") sets every layer's dtype; the default is Keras' global dtype policy."""
    with default_float(dtype):
        if name in ISOTROPIC_VARIANTS:
            depth, dim, layer_scale_init_value = ISOTROPIC_VARIANTS[name]
            overrides = {"layer_scale_init_value": layer_scale_init_value, **overrides}
            model = ConvNeXtIsotropic(depth=depth, dim=dim, name=name, **overrides)
        elif name in VARIANTS:
            depths, dims = VARIANTS[name]
            family = FAMILY_DEFAULTS[name.split("_")[0]]
            model = ConvNeXt(depths=depths, dims=dims, name=name, **{**family, **overrides})
        else:
            known = ", ".join([*VARIANTS, *ISOTROPIC_VARIANTS])
            raise ValueError(f"unknown variant {name!r}; known: {known}")
        model(keras.Input(shape=(None, None, model.in_chans)))  # builds; export() needs a call
    return model


def create_backbone(name: str, dtype: str | None = None, **overrides) -> ConvNeXtBackbone:
    """Build a variant (not isotropic) as a detection backbone, for inputs of any (H, W);
    `overrides` are ConvNeXtBackbone arguments (out_indices, in_chans, drop_path_rate, ...)."""
    if name not in VARIANTS:
        raise ValueError(f"no backbone form of {name!r}; known: {', '.join(VARIANTS)}")
    depths, dims = VARIANTS[name]
    family = FAMILY_DEFAULTS[name.split("_")[0]]
    with default_float(dtype):
        model = ConvNeXtBackbone(depths=depths, dims=dims, name=name, **{**family, **overrides})
        model(keras.Input(shape=(None, None, model.in_chans)))
    return model


@contextlib.contextmanager
def default_float(dtype: str | None) -> Iterator[None]:
    """Temporarily set Keras' global dtype policy, which layers take at construction."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(dtype or previous)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
