"""The PyTorch <-> Keras mapping: one name rule and one transpose per kind of tensor.

Names. Every Keras layer is named like the PyTorch attribute it mirrors, so the Keras variable
path, relative to the model, is the PyTorch key with "/" for "." and "kernel" for "weight":

    stages.2/5/pwconv1/kernel   <->   stages.2.5.pwconv1.weight

Axis orders. What differs is the order of the axes, by kind of tensor (KIND_RULES says which
key is which kind; TRANSPOSES gives the axes). Nothing is ever matched by position or by shape.
("Layout", elsewhere in the project, means a checkpoint's key scheme: official, timm, hf.)

Everything here is pure: names and numpy arrays in, names and numpy arrays out.
"""

from __future__ import annotations

import re

import numpy as np

# Keras variable name -> PyTorch parameter name, where they differ.
KERAS_TO_TORCH_NAME = {"kernel": "weight"}

# kind          PyTorch -> Keras axes   shapes
TRANSPOSES: dict[str, tuple[int, ...]] = {
    "conv":      (2, 3, 1, 0),  # (out, in, kh, kw) -> (kh, kw, in, out)
    "depthwise": (2, 3, 0, 1),  # (C, 1, kh, kw)    -> (kh, kw, C, 1)
    "dense":     (1, 0),        # (out, in)         -> (in, out)
    "vector":    (0,),          # (C,)              -> (C,): biases, LayerNorm, layer scale
    "grn":       (0, 1, 2, 3),  # (1, 1, 1, C)      -> (1, 1, 1, C): channels-last in both
}  # fmt: skip

# Which kind each PyTorch key is; the first full match wins.
# PyTorch key (regex)                            kind
KIND_RULES: tuple[tuple[str, str], ...] = (
    (r"downsample_layers\.0\.\d+\.weight",        "stem"),       # a conv or its norm: below
    (r"downsample_layers\.[1-3]\.1\.weight",      "conv"),       # downsample 2x2 / 2
    (r"stem\.weight",                            "conv"),       # isotropic stem 16x16 / 16
    (r"(stages\.\d+|blocks)\.\d+\.dwconv\.weight", "depthwise"),  # 7x7 depthwise
    (r"(stages\.\d+|blocks)\.\d+\.pwconv[12]\.weight", "dense"),  # pointwise as Linear
    (r"head\.weight",                            "dense"),      # classifier
    (r"pre_logits\.0\.weight",                   "dense"),      # the "mlp" head's hidden layer
    (r"stages\.\d+\.\d+\.grn\.(gamma|beta)",        "grn"),        # ConvNeXt V2
    (r".*\.(bias|weight|gamma)",                 "vector"),     # norms, biases, layer scale
)  # fmt: skip


def torch_key(keras_path: str) -> str:
    """`stages.2/5/pwconv1/kernel` -> `stages.2.5.pwconv1.weight` (path relative to the model)."""
    *layer_names, variable = keras_path.split("/")
    return ".".join([*layer_names, KERAS_TO_TORCH_NAME.get(variable, variable)])


def tensor_kind(key: str, ndim: int | None = None) -> str:
    """The kind of tensor a PyTorch key holds, which decides its transpose.

    The one rule that needs the number of axes is the stem's: `downsample_layers.0.1.weight`
    is the patch stem's norm but an overlapping stem's second conv, and `.2.weight` that norm
    or (with a GELU at index 1) that conv. Its weights are a conv with 4 axes, a norm with 1."""
    for pattern, kind in KIND_RULES:
        if re.fullmatch(pattern, key):
            if kind == "stem":
                return "conv" if ndim in (None, 4) else "vector"
            return kind
    raise KeyError(f"no tensor-kind rule for {key}")


def to_keras(key: str, value: np.ndarray) -> np.ndarray:
    """A PyTorch tensor in Keras' axis order. Raises ValueError on the wrong number of axes."""
    axes = TRANSPOSES[tensor_kind(key, value.ndim)]
    _check_rank(key, value, axes)
    return transposed(value, axes)


def to_torch(key: str, value: np.ndarray) -> np.ndarray:
    """A Keras variable in PyTorch's axis order: the inverse permutation of to_keras."""
    axes = TRANSPOSES[tensor_kind(key, value.ndim)]
    _check_rank(key, value, axes)
    return transposed(value, tuple(int(a) for a in np.argsort(axes)))


def torch_shape(key: str, keras_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The PyTorch shape of a Keras variable of `keras_shape` under `key`."""
    axes = TRANSPOSES[tensor_kind(key, len(keras_shape))]
    return tuple(int(keras_shape[a]) for a in np.argsort(axes))


def transposed(value: np.ndarray, axes: tuple[int, ...], rows: int = 256) -> np.ndarray:
    """`value.transpose(axes)` as a new C-contiguous array, copied `rows` source rows at a time.
    One strided copy of a large matrix misses the cache on every element: an 8192 x 2048
    float32 matrix takes 209 ms that way and 57 ms in blocks (convnext_xlarge has 72 of them)."""
    out = np.empty(tuple(value.shape[a] for a in axes), dtype=value.dtype)
    if value.ndim == 0 or value.shape[0] <= rows:
        out[...] = value.transpose(axes)
        return out
    where = axes.index(0)  # the source's first axis, in the output
    for start in range(0, value.shape[0], rows):
        block = [slice(None)] * value.ndim
        block[where] = slice(start, start + rows)
        out[tuple(block)] = value[start : start + rows].transpose(axes)
    return out


def _check_rank(key: str, value: np.ndarray, axes: tuple[int, ...]) -> None:
    if value.ndim != len(axes):
        raise ValueError(f"{key}: expected {len(axes)} axes, found shape {tuple(value.shape)}")
