"""Official ConvNeXt weights <-> keras.applications.ConvNeXt{Tiny,...,XLarge}, one table
(`variables_by_key`) both ways: `assign` writes a model, `official_tensors` reads one back.

For a TF deployment built on keras.applications that must take a PyTorch fine-tune. Its model
differs from convnext_tf in four ways that matter here:
- layer names of its own (`convnext_tiny_stage_2_block_5_pointwise_conv_1`), listed below;
- the depthwise conv is a grouped Conv2D(groups=C), kernel (kh, kw, 1, C), not (kh, kw, C, 1);
- with include_preprocessing (the default) it normalises its input itself: it takes pixels in
  [0, 255], where the PyTorch model takes (x / 255 - mean) / std with ImageNet's mean and std;
- its head ends in a softmax by default (classifier_activation=None gives logits), and without
  the top, pooling="avg" puts the final LayerNorm after pooling as in PyTorch (pooling=None
  normalises every position instead).
Every variable is assigned by layer, counted, and checked against the model's full list.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import keras
import numpy as np

from converters.errors import ConversionError
from converters.files.checkpoint import StateDict
from converters.names import mapping
from converters.weights.convert import check_match
from convnext_spec.spec import IMAGENET_MEAN, IMAGENET_STD, ModelSpec

CONSTRUCTORS = {
    "convnext_tiny": "ConvNeXtTiny",
    "convnext_small": "ConvNeXtSmall",
    "convnext_base": "ConvNeXtBase",
    "convnext_large": "ConvNeXtLarge",
    "convnext_xlarge": "ConvNeXtXLarge",
}

# IMAGENET_MEAN, IMAGENET_STD (convnext_spec): the normalisation keras.applications builds in


def check_spec(spec: ModelSpec, include_top: bool = True) -> None:
    """Raise ConversionError unless keras.applications has a model of this spec."""
    if spec.kind == "backbone":
        raise ConversionError("keras.applications has no detection-backbone form")
    if spec.name not in CONSTRUCTORS:
        raise ConversionError(
            f"keras.applications has no {spec.name}; it has {', '.join(CONSTRUCTORS)}"
        )
    if spec.in_chans != 3 or not spec.has_layer_scale:
        raise ConversionError("keras.applications models take 3 channels and have layer scale")
    if include_top and spec.num_classes == 0:
        raise ConversionError("the checkpoint has no head: pass `include_top=False`")


def build(
    spec: ModelSpec, include_top: bool = True, size: tuple[int, int] | None = None
) -> keras.Model:
    """An uninitialised keras.applications ConvNeXt of `spec` (nothing is downloaded). With
    its top, keras.applications fixes the input size when it builds the model: 224 x 224
    unless `size`; the weights are the same at every size."""
    check_spec(spec, include_top)
    constructor = getattr(keras.applications, CONSTRUCTORS[spec.name])
    if include_top:  # logits, like PyTorch (keras.applications' default ends in a softmax)
        return constructor(
            weights=None,
            classes=spec.num_classes,
            classifier_activation=None,
            name=spec.name,
            input_shape=(*size, 3) if size else None,
        )
    return constructor(
        weights=None,
        include_top=False,
        input_shape=(None, None, 3),
        pooling="avg",
        name=spec.name,
    )


def variables_by_key(
    model: keras.Model, depths: tuple[int, ...], include_top: bool
) -> Iterator[tuple[str, keras.Variable, str]]:
    """(official key, keras.applications variable, kind of transpose) for every tensor."""
    n = model.name

    def layer(*path: str) -> keras.layers.Layer:
        found = model.get_layer(path[0])
        for name in path[1:]:
            found = found.get_layer(name)
        return found

    def conv(key: str, *path: str):
        yield (
            f"{key}.weight",
            layer(*path).kernel,
            "conv",
        )  # grouped Conv2D too: (kh, kw, in/g, out)
        yield f"{key}.bias", layer(*path).bias, "vector"

    def norm(key: str, target: keras.layers.Layer):
        yield f"{key}.weight", target.gamma, "vector"
        yield f"{key}.bias", target.beta, "vector"

    def dense(key: str, target: keras.layers.Layer):
        yield f"{key}.weight", target.kernel, "dense"
        yield f"{key}.bias", target.bias, "vector"

    yield from conv("downsample_layers.0.0", f"{n}_stem", f"{n}_stem_conv")
    yield from norm("downsample_layers.0.1", layer(f"{n}_stem", f"{n}_stem_layernorm"))
    for i in range(1, 4):  # keras.applications counts its downsampling blocks from 0
        block = f"{n}_downsampling_block_{i - 1}"
        yield from norm(
            f"downsample_layers.{i}.0", layer(block, f"{n}_downsampling_layernorm_{i - 1}")
        )
        yield from conv(f"downsample_layers.{i}.1", block, f"{n}_downsampling_conv_{i - 1}")
    for i, depth in enumerate(depths):
        for j in range(depth):
            p = f"{n}_stage_{i}_block_{j}"
            yield from conv(f"stages.{i}.{j}.dwconv", f"{p}_depthwise_conv")
            yield from norm(f"stages.{i}.{j}.norm", layer(f"{p}_layernorm"))
            yield from dense(f"stages.{i}.{j}.pwconv1", layer(f"{p}_pointwise_conv_1"))
            yield from dense(f"stages.{i}.{j}.pwconv2", layer(f"{p}_pointwise_conv_2"))
            yield f"stages.{i}.{j}.gamma", layer(f"{p}_layer_scale").gamma, "vector"
    if include_top:
        yield from norm("norm", layer(f"{n}_head_layernorm"))
        yield from dense("head", layer(f"{n}_head_dense"))
    else:  # without the top, the final LayerNorm is the model's last (unnamed) layer
        yield from norm("norm", model.layers[-1])


def assign(
    state: StateDict, model: keras.Model, depths: tuple[int, ...], include_top: bool
) -> list[str]:
    """Assign an official-layout checkpoint to a keras.applications model, strictly. Returns
    the checkpoint keys left out on purpose (the head, without the top)."""
    targets = list(variables_by_key(model, depths, include_top))
    skipped = [] if include_top else [k for k in ("head.weight", "head.bias") if k in state.tensors]
    expected = {  # in PyTorch's layout, as check_match reports shapes
        key: tuple(int(variable.shape[a]) for a in np.argsort(mapping.TRANSPOSES[kind]))
        for key, variable, kind in targets
    }
    used = {k: v for k, v in state.tensors.items() if k not in skipped}
    check_match(dataclasses.replace(state, tensors=used), expected)
    assigned = {id(variable) for _, variable, _ in targets}
    if len(assigned) != len(targets) or assigned != {id(v) for v in model.weights}:
        raise ConversionError(f"keras.applications {model.name}: variables left unassigned")
    for key, variable, kind in targets:
        value = np.ascontiguousarray(state.tensors[key].transpose(mapping.TRANSPOSES[kind]))
        variable.assign(value.astype(variable.dtype, copy=False))
    return skipped


def official_tensors(
    read: Callable[[keras.Variable], np.ndarray],
    model: keras.Model,
    depths: tuple[int, ...],
    include_top: bool,
) -> dict[str, np.ndarray]:
    """assign's inverse, by the same table: each of the model's variables as stored in a file
    (`read(variable)`, in Keras' axis order) under its official key, in PyTorch's axis order.
    Every variable of the model is read exactly once."""
    targets = list(variables_by_key(model, depths, include_top))
    if {id(variable) for _, variable, _ in targets} != {id(v) for v in model.weights}:
        raise ConversionError(f"keras.applications {model.name}: variables the table misses")
    tensors = {}
    for key, variable, kind in targets:
        # (kh, kw, in/g, out) -> (out, in/g, kh, kw), grouped depthwise (kh, kw, 1, C) too
        back = tuple(int(a) for a in np.argsort(mapping.TRANSPOSES[kind]))
        tensors[key] = mapping.transposed(np.asarray(read(variable)), back)
    return tensors


def to_pixels(images: np.ndarray) -> np.ndarray:
    """The [0, 255] pixels whose keras.applications preprocessing gives `images`, which are
    normalised the PyTorch way, (N, C, H, W): x * std * 255 + mean * 255."""
    mean = np.asarray(IMAGENET_MEAN).reshape(1, 3, 1, 1)
    std = np.asarray(IMAGENET_STD).reshape(1, 3, 1, 1)
    return (images * std + mean) * 255.0
