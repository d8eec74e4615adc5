"""A convnext_tf model as a deployment artifact: a SavedModel directory or a .tflite file.

Both carry two signatures:
- `serving_default`: `images` (N, H, W, C), normalised like the PyTorch model's input, ->
  `logits` (`features` for a model without a head), what a server or a phone calls;
- `stages`: the same input -> every intermediate output, named after the PyTorch module that
  produces it (converters.deploy.trace.trace: `downsample_layers.0`, `stages.2.5`, ...), so that a
  deployed copy can still be checked block by block (`convnext verify` uses it).

The batch and image size stay open (None) in both formats, so one file serves every size.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import keras

from converters.deploy.artifacts import SERVING_SIGNATURE, TRACE_SIGNATURE
from converters.deploy.trace import has_head, is_backbone, keras_trace
from converters.errors import ConversionError
from converters.files.destinations import is_tflite_path
from converters.files.outputs import atomic_output

QUANTIZATIONS = ("float16", "dynamic")  # .tflite only


def export_model(
    model: keras.Model,
    dst: str | Path,
    quantize: str | None = None,
    force: bool = False,
    log: Callable[[str], None] = lambda line: None,
) -> str:
    """Write `model` to `dst`: a .tflite file if dst ends in .tflite, else a SavedModel
    directory. quantize (.tflite only): "float16" stores the weights as float16, "dynamic"
    as int8 with activations quantized at run time (LiteRT's dynamic range quantization);
    both are verified against a looser tolerance. Written atomically: nothing is left at
    dst on failure. Returns what was written, in words."""
    dst = Path(dst)
    tflite = is_tflite_path(dst)
    if is_backbone(model):
        raise ConversionError("export writes classifiers and feature extractors, not backbones")
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ConversionError(f"`quantize` must be one of {', '.join(QUANTIZATIONS)}")
    if quantize and not tflite:
        raise ConversionError("`quantize` applies to .tflite files, not to SavedModels")
    if tflite and model.compute_dtype != "float32":
        raise ConversionError(f"LiteRT computes in float32: export a float32 model to {dst.name}")
    module = signatures_of(model)
    with atomic_output(dst, force=force, size=4 * model.count_params()) as tmp:
        if tflite:
            log(f"converting to LiteRT{f' ({quantize} quantization)' if quantize else ''}")
            with open(tmp, "wb") as f:
                f.write(to_tflite(module, quantize))
        else:
            save_savedmodel(module, tmp)
    kind = ".tflite file" if tflite else "SavedModel"
    return f"{kind} with signatures {SERVING_SIGNATURE!r} and {TRACE_SIGNATURE!r}"


def signatures_of(model: keras.Model):
    """A tf.Module holding the model and its two signature functions."""
    import tensorflow as tf

    output = "logits" if has_head(model) else "features"
    images = tf.TensorSpec([None, None, None, model.in_chans], model.compute_dtype, name="images")

    @tf.function(input_signature=[images])
    def serving_default(images):
        return {output: model(images, training=False)}

    @tf.function(input_signature=[images])
    def stages(images):
        return keras_trace(model, images)

    module = tf.Module()
    module.model = model  # tracked: its variables are saved with the functions
    module.serving_default, module.stages = serving_default, stages
    return module


def save_savedmodel(module, path: str) -> None:
    import tensorflow as tf

    signatures = {SERVING_SIGNATURE: module.serving_default, TRACE_SIGNATURE: module.stages}
    tf.saved_model.save(module, path, signatures=signatures)


def to_tflite(module, quantize: str | None) -> bytes:
    """The .tflite flatbuffer of both signatures (named after their functions).

    The converter takes several signatures only with a trackable object, and then keeps the
    weights as resource variables it does not fill in (the model computes NaN): each function
    is frozen first (weights -> constants) and wrapped again under its name, its outputs
    named again in the order a frozen function returns them (its dict flattened: by key)."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    frozen_module = tf.Module()
    for name in (SERVING_SIGNATURE, TRACE_SIGNATURE):
        function = getattr(module, name).get_concrete_function()
        frozen = convert_variables_to_constants_v2(function)
        keys = sorted(function.structured_outputs)
        spec = tf.nest.flatten(function.structured_input_signature)
        setattr(frozen_module, name, named_function(name, frozen, keys, spec))
    functions = [
        getattr(frozen_module, name).get_concrete_function()
        for name in (SERVING_SIGNATURE, TRACE_SIGNATURE)
    ]
    converter = tf.lite.TFLiteConverter.from_concrete_functions(functions, frozen_module)
    if quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]  # int8 weights, dynamic range
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    try:
        return converter.convert()
    except Exception as e:  # noqa: BLE001 - the converter raises its own types
        raise ConversionError(
            f"LiteRT conversion failed: {' '.join(str(e).split())[:300]}"
        ) from None


def named_function(name: str, frozen, keys: list[str], spec: list):
    """A tf.function called `name` (the converter names each signature after its function)
    that returns `frozen`'s outputs under `keys`."""
    import tensorflow as tf

    def call(images):
        return dict(zip(keys, frozen(images), strict=True))

    call.__name__ = name
    return tf.function(call, input_signature=spec)
