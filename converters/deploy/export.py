"""A convnext_tf model as a deployment artifact: a SavedModel directory or a .tflite file.

Both carry two signatures:
- `serving_default`: `images` (N, H, W, C), normalised like the PyTorch model's input, ->
  `logits` (`features` for a model without a head), what a server or a phone calls;
- `stages`: the same input -> every intermediate output, named after the PyTorch module that
  produces it (converters.deploy.trace.trace: `downsample_layers.0`, `stages.2.5`, ...), so that a
  deployed copy can still be checked block by block (`convnext verify` uses it).

The batch and image size stay open (None) in both formats, so one file serves every size. A
.tflite file is converted piece by piece and joined (write_tflite): one subgraph, which both
signatures run.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

from converters.deploy.artifacts import SERVING_SIGNATURE, TRACE_SIGNATURE
from converters.deploy.tflite_join import Piece, join
from converters.deploy.trace import (
    Step,
    forward_steps,
    has_head,
    is_backbone,
    keras_steps,
    keras_trace,
)
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
    with atomic_output(dst, force=force, size=4 * model.count_params()) as tmp:
        if tflite:
            offsets = 4 * model.count_params() > BUFFER_OFFSETS_FROM
            if offsets:
                log("the weights pass 2 GB: written after the flatbuffer, at offsets")
            write_tflite(model, tmp, quantize, workdir=Path(tmp).parent, offsets=offsets, log=log)
        else:
            save_savedmodel(signatures_of(model), tmp)
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


def write_tflite(
    model: keras.Model,
    destination: str | Path,
    quantize: str | None,
    workdir: str | Path | None = None,
    offsets: bool = False,
    log: Callable[[str], None] = lambda line: None,
) -> None:
    """`model` as a .tflite file at `destination`, with the two signatures of export_model.

    Converted in pieces: LiteRT's converter holds about six copies of the weights it is given
    (docs/speed.md), 10 GB for convnext_xlarge at once. The forward pass is cut into pieces
    of consecutive steps (converters.deploy.trace.forward_steps) of at most PIECE_BYTES of
    weights, each converted on its own from a SavedModel of its steps alone, with its trace
    points as outputs; the pieces are then joined into one subgraph that both signatures run
    (converters.deploy.tflite_join). Nothing crosses a cut but the tensor one piece hands
    the next, so the file runs the operations one conversion of the whole would. The pieces are
    written in `workdir` (beside the destination, where the user has room for the weights;
    /tmp may be memory) and removed, whatever happens. offsets: the weights stored after the
    flatbuffer, which holds at most 2 GiB."""
    steps = forward_steps(model)
    pieces = pieces_of(steps)
    points = [step.name for step in steps if step.name is not None]
    output = "logits" if has_head(model) else "features"
    log(
        f"converting to LiteRT{f' ({quantize} quantization)' if quantize else ''} in "
        f"{len(pieces)} piece{'s' * (len(pieces) != 1)} of at most {PIECE_BYTES / 2**20:.3g} MB "
        "of weights, then joined"
    )
    with tempfile.TemporaryDirectory(prefix=".convnext-export-", dir=workdir) as directory:
        converted, link = [], None  # link: the trace point the next piece takes as its input
        entry = tf_spec([None, None, None, model.in_chans], "images")
        for number, piece in enumerate(pieces):
            function = piece_function(piece, entry)
            path = Path(directory) / f"piece{number}.tflite"
            path.write_bytes(convert_functions({SERVING_SIGNATURE: function}, quantize, directory))
            converted.append(Piece(path, link))
            link = piece[-1].name
            entry = tf_spec(function.get_concrete_function().structured_outputs[link].shape, "x")
        signatures = {
            SERVING_SIGNATURE: ("images", {output: points[-1]}),
            TRACE_SIGNATURE: ("images", {name: name for name in points}),
        }
        join(converted, signatures, destination, offsets=offsets)


# Float32 weights given to LiteRT's converter at once: it peaks at about six times this.
PIECE_BYTES = 64 * 2**20


def pieces_of(steps: list[Step]) -> list[list[Step]]:
    """`steps` in consecutive groups of at most PIECE_BYTES of weights (a heavier step alone),
    each ending at a trace point of the chain, which the next group takes as its input."""
    pieces, piece, size = [], [], 0
    for step in steps:
        weights = [] if step.layer is None else step.layer.weights
        weight = sum(4 * int(np.prod(w.shape)) for w in weights)
        can_cut = piece and piece[-1].name is not None and not piece[-1].side
        if can_cut and size + weight > PIECE_BYTES:
            pieces.append(piece)
            piece, size = [], 0
        piece.append(step)
        size += weight
    return [*pieces, piece]


def piece_function(steps: list[Step], entry):
    """The tf.function of `steps` from the tensor `entry` describes to their trace points."""
    import tensorflow as tf

    def piece(x):
        return keras_steps(steps, x)

    return tf.function(piece, input_signature=[entry], autograph=False)


def tf_spec(shape, name: str):
    import tensorflow as tf

    return tf.TensorSpec(shape, tf.float32, name=name)


def convert_functions(signatures: dict, quantize: str | None, workdir: str | Path) -> bytes:
    """The .tflite flatbuffer of these signature functions, converted from their SavedModel.

    LiteRT's converter is given a SavedModel, not functions frozen in memory: it freezes the
    variables itself, once for every signature that shares them (frozen in Python first,
    convert_variables_to_constants_v2, one graph per signature, the whole convnext_tiny took
    8.5 GB). The SavedModel is written in `workdir` and removed."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix=".convnext-piece-", dir=workdir) as directory:
        save_savedmodel(signatures, directory)
        converter = tf.lite.TFLiteConverter.from_saved_model(
            directory, signature_keys=list(signatures)
        )
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
