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

import tempfile
from collections.abc import Callable
from pathlib import Path

import keras

from converters.deploy.artifacts import SERVING_SIGNATURE, TRACE_SIGNATURE
from converters.deploy.trace import has_head, is_backbone, keras_trace
from converters.errors import ConversionError
from converters.files.destinations import is_tflite_path
from converters.files.outputs import atomic_output

QUANTIZATIONS = ("float16", "dynamic")  # .tflite only
# A flatbuffer holds at most 2 GiB. Past this much float32 weight (leaving room for the graph),
# the converter writes the weights after it, at offsets (LiteRT reads both): convnextv2_huge.
BUFFER_OFFSETS_FROM = 2**31 - 2**28


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
    signatures = signatures_of(model)
    with atomic_output(dst, force=force, size=4 * model.count_params()) as tmp:
        if tflite:
            log(f"converting to LiteRT{f' ({quantize} quantization)' if quantize else ''}")
            offsets = 4 * model.count_params() > BUFFER_OFFSETS_FROM
            if offsets:
                log("the weights pass 2 GB: written after the flatbuffer, at offsets")
            with open(tmp, "wb") as f:
                f.write(to_tflite(signatures, quantize, workdir=Path(tmp).parent, offsets=offsets))
        else:
            save_savedmodel(signatures, tmp)
    kind = ".tflite file" if tflite else "SavedModel"
    return f"{kind} with signatures {SERVING_SIGNATURE!r} and {TRACE_SIGNATURE!r}"


def signatures_of(model: keras.Model) -> dict:
    """The two signature functions of `model`, by signature name."""
    import tensorflow as tf

    output = "logits" if has_head(model) else "features"
    images = tf.TensorSpec([None, None, None, model.in_chans], model.compute_dtype, name="images")

    def serving_default(images):
        return {output: model(images, training=False)}

    def stages(images):
        return keras_trace(model, images)

    return {
        SERVING_SIGNATURE: tf.function(serving_default, input_signature=[images], autograph=False),
        TRACE_SIGNATURE: tf.function(stages, input_signature=[images], autograph=False),
    }


def save_savedmodel(signatures: dict, path: str | Path) -> None:
    """A SavedModel of these signature functions (name -> tf.function with an input
    signature) and of the TensorFlow variables they capture, nothing else.

    Not the Keras model behind them: LiteRT's converter finds no values for variables saved
    through a Keras model's object graph (its file computes NaN), Keras' own ExportArchive
    writes every variable twice (as a Keras variable and as the tf.Variable under it), and
    walking the object graph makes saving take seconds longer."""
    import tensorflow as tf

    functions = {name: function.get_concrete_function() for name, function in signatures.items()}
    captured = {}
    for function in functions.values():
        for variable in function.variables:
            captured.setdefault(id(variable), variable)
    holder = tf.Module()
    holder.captured_variables = list(captured.values())
    tf.saved_model.save(holder, str(path), signatures=functions)


def to_tflite(
    signatures: dict, quantize: str | None, workdir: str | Path | None = None, offsets: bool = False
) -> bytes:
    """The .tflite flatbuffer of these signatures, converted from their SavedModel.

    LiteRT's converter is given the SavedModel, not functions frozen in memory: it freezes
    the variables itself, once for both signatures, which share them. Frozen in Python first
    (convert_variables_to_constants_v2, one graph per signature), convnext_tiny took 8.5 GB
    at its peak; this way, 2.0 GB. The SavedModel is written in `workdir` (export puts it
    beside the destination, where the user has room for the weights; /tmp may be memory)
    and removed, whatever happens. offsets: the weights stored after the flatbuffer, which
    holds at most 2 GiB."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix=".convnext-export-", dir=workdir) as directory:
        save_savedmodel(signatures, directory)
        converter = tf.lite.TFLiteConverter.from_saved_model(
            directory, signature_keys=list(signatures)
        )
        if quantize:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]  # int8 weights, dynamic range
        if quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
        converter._experimental_use_buffer_offset = offsets  # noqa: SLF001 - no public name
        try:
            return converter.convert()
        except Exception as e:  # noqa: BLE001 - the converter raises its own types
            raise ConversionError(
                f"LiteRT conversion failed: {' '.join(str(e).split())[:300]}"
            ) from None
