"""The intermediate tensors of a deployed model that is not this project's: where
converters.deploy.locate looks for the reference's block outputs.

An artifact written by `convnext export` names its block outputs itself (its `stages`
signature); a port written by hand, or a file from another converter, names nothing we know.
Its own tensors are all there is, so each kind of artifact gives them up (Artifact.tensors, in
its kind's module), with the artifact's own name for each and its place in the order the
artifact computes them:

- a .tflite file: a second LiteRT interpreter keeps every tensor
  (`experimental_preserve_all_tensors`), read after `invoke()`, in the order of its operators.
  That interpreter runs LiteRT's builtin kernels, not the XNNPACK delegate that runs the
  served output (a delegate keeps no intermediate tensor to read);
- a SavedModel: the serving signature's own graph (graph_tensors, below), its variables
  frozen into constants and pruned to fetch the candidate tensors: the same operations the
  allow-list passed (converters.files.savedmodel), nothing added but outputs;
- a functional Keras model: every layer's output (`keras.Model(model.inputs, outputs)`); any
  other Keras model (subclassed, as the seed's port is, or nested) is traced into a graph and
  read as a SavedModel's is.

Only float tensors of a shape some reference point has are kept (`keep`), so that holding
them stays within what verify's memory check allows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# Whether a tensor of this shape may be a point; None in a shape: not known yet (a graph's
# batch and image size are open), so possible.
Keep = Callable[[tuple[int | None, ...]], bool]


@dataclass
class Candidate:
    """One intermediate tensor of the artifact, as it computed it."""

    name: str  # the artifact's own name: a LiteRT tensor, a graph tensor, a Keras layer
    position: int  # where it is computed: later tensors have larger positions
    value: np.ndarray


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
