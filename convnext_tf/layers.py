"""Keras-only helpers of convnext_tf/model.py, kept out of it so that its classes line up with
convnext_torch/model.py's (`make diff`). Each stands for something PyTorch has built in or does
elsewhere: an initialiser, nn.Sequential's dtype, Tensor.mean, nn.GELU, the block's MLP (its
PyTorch twin, in convnext_torch/kernels.py, has a fused CPU path). model.py re-exports them.
"""

from __future__ import annotations

import inspect
import math

import keras
from keras import layers, ops

SQRT_HALF = 1 / math.sqrt(2)  # a Python float: stays float64 in float64 models


def trunc_normal(std: float = 0.02) -> keras.initializers.Initializer:
    # One initializer per layer: an unseeded Keras initializer repeats its values when reused.
    return keras.initializers.TruncatedNormal(stddev=std)


def sequential(sublayers: list, name: str, dtype) -> keras.Sequential:
    """keras.Sequential in the given dtype policy. Keras-only: keras.Sequential takes no dtype
    argument, and until built it would cast its input to the global policy (float64 inputs
    rounded to float32 on the first call)."""
    model = keras.Sequential(sublayers, name=name)
    model.dtype_policy = dtype
    return model


def mean(x, axis, keepdims: bool = False):
    """The mean over `axis`, in x's dtype. Keras-only: keras.ops.mean on the JAX backend
    averages in float32 whatever the input (keras 3.15 asks jnp.mean for dtype
    result_type(x.dtype, "float32"), which is float32), 1e-8 off in float64."""
    axes = (axis,) if isinstance(axis, int) else axis
    if all(x.shape[a] is not None for a in axes):  # eager, and C always: a Python int
        return ops.sum(x, axis=axis, keepdims=keepdims) / math.prod(x.shape[a] for a in axes)
    count = 1
    for a in axes:
        size = ops.shape(x)[a]  # a tensor where H and W are known only when called
        if size is None:  # a symbolic KerasTensor, whose shape alone is computed
            return ops.mean(x, axis=axis, keepdims=keepdims)
        count = count * size
    return ops.sum(x, axis=axis, keepdims=keepdims) / ops.cast(count, x.dtype)


class ShapePreserving:
    """Keras-only: a layer whose output has its input's shape says so (compute_output_shape),
    so that Keras' symbolic pass, which builds a model, need not trace its call() in a scratch
    graph. That tracing took most of the 4.6 s that building convnext_atto took."""

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="convnext_tf")
class GELU(ShapePreserving, layers.Layer):
    """Exact GELU, 0.5 x (1 + erf(x / sqrt(2))), the same function as PyTorch's nn.GELU().

    Keras-only: keras.ops.gelu defaults to the tanh approximation (5e-4 off), and TF's exact
    gelu rounds 1/sqrt(2) to float32, which caps float64 agreement at ~5e-9.
    """

    def call(self, x):
        return 0.5 * x * (1.0 + ops.erf(x * SQRT_HALF))


def mlp(x, pwconv1: layers.Layer, act: layers.Layer, grn: layers.Layer, pwconv2: layers.Layer):
    """`pwconv2(grn(act(pwconv1(x))))` for channels-last x (N, H, W, C): the block's MLP, its
    layers called one by one. The PyTorch twin (convnext_torch/kernels.py) computes the same
    function as fused oneDNN calls in CPU inference; TensorFlow's graph optimiser fuses a
    tf.function by itself."""
    return pwconv2(grn(act(pwconv1(x))))


def config(layer: layers.Layer, base: dict, **renamed: str) -> dict:
    """A get_config(): `base` (the parent class's) and the layer's constructor arguments, in
    order, each read from the attribute of its name or of the name `renamed` gives it (Block's
    `norm` argument is its `norm_kind`: `self.norm` is the layer). Keras-only: PyTorch
    serialises weights alone, Keras rebuilds a saved model from these arguments."""
    parameters = inspect.signature(type(layer).__init__).parameters.values()
    names = [p.name for p in parameters if p.kind == p.POSITIONAL_OR_KEYWORD][1:]  # not self
    return {**base, **{name: getattr(layer, renamed.get(name, name)) for name in names}}


def check_float64_backend(dtype) -> None:
    """Keras-only: JAX computes float64 only with jax_enable_x64 (JAX_ENABLE_X64=1), and
    otherwise rounds silently to float32; say so instead."""
    if keras.backend.backend() != "jax" or "float64" not in str(dtype):
        return
    import jax

    if not jax.config.jax_enable_x64:
        raise ValueError(
            "float64 on Keras' JAX backend needs JAX_ENABLE_X64=1 (or "
            "jax.config.update('jax_enable_x64', True)) first; JAX would compute float32"
        )
