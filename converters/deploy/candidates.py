"""The intermediate tensors of a deployed model that is not this project's: where
converters.deploy.locate looks for the reference's block outputs.

An artifact written by `convnext export` names its block outputs itself (its `stages`
signature); a port written by hand, or a file from another converter, names nothing we know.
Its own tensors are all there is, so each kind of artifact gives them up here, with the
artifact's own name for each and its place in the order the artifact computes them:

- a .tflite file: a second LiteRT interpreter keeps every tensor
  (`experimental_preserve_all_tensors`), read after `invoke()`, in the order of its operators.
  That interpreter runs LiteRT's builtin kernels, not the XNNPACK delegate that runs the
  served output (a delegate keeps no intermediate tensor to read);
- a SavedModel: the serving signature's own graph, its variables frozen into constants and
  pruned to fetch the candidate tensors: the same operations the allow-list passed
  (converters.files.savedmodel), nothing added but outputs;
- a functional Keras model: every layer's output (`keras.Model(model.inputs, outputs)`); any
  other Keras model (subclassed, as the seed's port is, or nested) is traced into a graph and
  read as a SavedModel's is.

Only float tensors of a shape some reference point has are kept (`keep`), so that holding
them stays within what verify's memory check allows.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np

from converters.deploy.artifacts import (
    Artifact,
    KerasArtifact,
    ModelRunner,
    SavedModelArtifact,
    TFLiteArtifact,
)

# Whether a tensor of this shape may be a point; None in a shape: not known yet (a graph's
# batch and image size are open), so possible.
Keep = Callable[[tuple[int | None, ...]], bool]


@dataclass
class Candidate:
    """One intermediate tensor of the artifact, as it computed it."""

    name: str  # the artifact's own name: a LiteRT tensor, a graph tensor, a Keras layer
    position: int  # where it is computed: later tensors have larger positions
    value: np.ndarray


def intermediate_tensors(artifact: Artifact, x: np.ndarray, keep: Keep) -> list[Candidate]:
    """The artifact's intermediate tensors on input `x` (in its own layout), in the order it
    computes them, those of a shape `keep` accepts. Raises NotImplementedError for a kind of
    artifact that keeps none to read."""
    if isinstance(artifact, TFLiteArtifact):
        return tflite_tensors(artifact, x, keep)
    if isinstance(artifact, SavedModelArtifact):
        return graph_tensors(artifact.serving, x.astype(artifact.input_dtype), keep)
    if isinstance(artifact, KerasArtifact):
        return keras_tensors(artifact.model, x.astype(artifact.input_dtype), keep)
    raise NotImplementedError(f"{artifact.kind} artifacts keep no intermediate tensors")


def tflite_tensors(artifact: TFLiteArtifact, x: np.ndarray, keep: Keep) -> list[Candidate]:
    """Every float tensor a LiteRT interpreter computes, kept by a second interpreter of the
    same file; each operator's outputs at that operator's place."""
    from ai_edge_litert.interpreter import Interpreter

    with warnings.catch_warnings():  # "intended for debugging purposes only": it is that here
        warnings.simplefilter("ignore")
        interpreter = Interpreter(
            model_path=str(artifact.path), experimental_preserve_all_tensors=True
        )
    key = artifact.runner._signature_key  # noqa: SLF001
    # a file without signatures (onnx2tf's) is called through its model inputs, as verify does
    runner = ModelRunner(interpreter) if key is None else interpreter.get_signature_runner(key)
    runner(**{artifact.input_name: x.astype(artifact.input_dtype)})
    details = {t["index"]: t for t in interpreter.get_tensor_details()}
    found = []
    for op in interpreter._get_ops_details():  # noqa: SLF001 - in execution order
        for index in op["outputs"]:
            detail = details.get(index)
            if detail is None or not np.issubdtype(detail["dtype"], np.floating):
                continue
            if not keep(tuple(int(d) for d in detail["shape"])):
                continue
            name = detail["name"].split(";")[0]  # fused operators join their names with ';'
            found.append(Candidate(name, int(op["index"]), np.array(interpreter.get_tensor(index))))
    return found


def keras_tensors(model: keras.Model, x: np.ndarray, keep: Keep) -> list[Candidate]:
    """A functional model's layer outputs, named after the layers, in the order of its
    layers (a functional model lists them in the order they are called); any other model
    through the graph its call traces to."""
    layers = [layer for layer in getattr(model, "layers", []) if layer_output(layer) is not None]
    if not layers or not getattr(model, "inputs", None):
        import tensorflow as tf

        spec = tf.TensorSpec([None, *x.shape[1:]], x.dtype)
        function = tf.function(lambda images: model(images, training=False))
        return graph_tensors(function.get_concrete_function(spec), x, keep)
    outputs = [layer_output(layer) for layer in layers]
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs  # as it was built
    probe = keras.Model(inputs, outputs)
    values = probe(x, training=False)
    found = []
    for position, (layer, value) in enumerate(zip(layers, values, strict=True)):
        value = keras.ops.convert_to_numpy(value)
        if np.issubdtype(value.dtype, np.floating) and keep(tuple(value.shape)):
            found.append(Candidate(layer.name, position, value))
    return found


def layer_output(layer):
    """A layer's one symbolic output in a functional model, or None (an input layer, a layer
    with several outputs, or one called more than once)."""
    if isinstance(layer, keras.layers.InputLayer):
        return None
    try:
        output = layer.output
    except (AttributeError, ValueError):  # never called in a graph, or called several times
        return None
    return output if hasattr(output, "shape") else None


def graph_tensors(function, x: np.ndarray, keep: Keep) -> list[Candidate]:
    """The float tensors of a concrete function's graph: its variables frozen into constants,
    the graph imported whole and pruned to fetch them, so that no operation runs that the
    function does not run. Named as the graph names them; positions in graph order, which is
    an order the graph can be computed in (an operation is added after its inputs)."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    frozen = convert_variables_to_constants_v2(function)
    graph_def = frozen.graph.as_graph_def()
    feed_name = frozen.inputs[0].name

    def imported():
        tf.compat.v1.import_graph_def(graph_def, name="")

    wrapped = tf.compat.v1.wrap_function(imported, [])
    graph = wrapped.graph
    feed = graph.get_tensor_by_name(feed_name)
    fetches, names = [], []
    for op in graph.get_operations():
        if op.type in ("Const", "Placeholder", "Identity", "NoOp"):
            continue
        for tensor in op.outputs:
            shape = tensor.shape
            if tensor.dtype.is_floating and shape.rank in (2, 4) and keep(tuple(shape.as_list())):
                fetches.append(tensor)
                names.append(op.name)
    if not fetches:
        return []
    pruned = wrapped.prune(feeds=[feed], fetches=fetches)
    values = pruned(tf.constant(x, dtype=feed.dtype))
    found = []
    for position, (name, value) in enumerate(zip(names, values, strict=True)):
        if keep(tuple(value.shape)):
            found.append(Candidate(name, position, value.numpy()))
    return found
