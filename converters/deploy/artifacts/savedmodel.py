"""SavedModel directories, called through a signature as TF Serving calls them (TensorFlow).

Before TensorFlow loads any of it, every function that loading or calling can reach is checked
against an allow-list of inference operations (converters.files.savedmodel). A SavedModel from
`convnext export` carries a second signature, `stages`, with every intermediate output; any
other gives up its own tensors from its serving graph (converters.deploy.candidates).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from converters.deploy.artifacts.base import (
    SERVING_SIGNATURE,
    TRACE_SIGNATURE,
    Artifact,
    batch_of,
    compared_precision,
    layout_of,
    output_kind_of,
    pick_output,
    precision_notes,
)
from converters.deploy.artifacts.candidates import Candidate, Keep, graph_tensors
from converters.errors import ConversionError, first_sentence
from converters.files.savedmodel import check_savedmodel


@dataclass
class SavedModelArtifact(Artifact):
    """A SavedModel directory, called through a signature as TF Serving calls it."""

    serving: object = None  # the concrete function of the serving signature
    stages: object = None  # convnext export's trace signature, if there is one
    input_name: str = ""
    output_name: str = ""
    keep: object = None  # the loaded object: its variables live as long as it does

    @property
    def traced(self) -> bool:
        return self.stages is not None

    def run(self, x: np.ndarray) -> np.ndarray:
        outputs = self.serving(**{self.input_name: tf.constant(x, dtype=self.input_dtype)})
        return outputs[self.output_name].numpy()

    def trace(self, x: np.ndarray) -> dict[str, np.ndarray]:
        outputs = self.stages(**{self.input_name: tf.constant(x, dtype=self.input_dtype)})
        return {name: value.numpy() for name, value in outputs.items()}

    def tensors(self, x: np.ndarray, keep: Keep) -> list[Candidate]:
        """The serving graph's own tensors (candidates.graph_tensors)."""
        return graph_tensors(self.serving, x.astype(self.input_dtype), keep)


def open_savedmodel(
    path: Path, signature: str | None, output_name: str | None = None
) -> SavedModelArtifact:
    applications = check_savedmodel(path).keras_applications  # before TensorFlow runs any of it
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as e:  # noqa: BLE001 - TensorFlow raises many types for a bad directory
        raise ConversionError(f"{path}: cannot load the SavedModel ({first_sentence(e)})") from None
    signatures = dict(loaded.signatures)
    key = signature or SERVING_SIGNATURE
    if key not in signatures:
        have = ", ".join(signatures) or "none"
        raise ConversionError(f"{path}: no signature {key!r} (it has: {have}); pass `signature`")
    serving = signatures[key]
    input_name, spec = image_input(path, key, serving.structured_input_signature[1])
    output_name = pick_output(path, key, serving.structured_outputs, output_name)
    others = sorted(name for name in serving.structured_outputs if name != output_name)
    layout, size = layout_of(spec.shape)
    artifact = SavedModelArtifact(
        path,
        "savedmodel",
        f"a SavedModel, signature {key!r} ({input_name} -> {output_name})",
        layout=layout,
        size=size,
        batch=batch_of(spec.shape),
        output=output_kind_of(output_name),
        precision=compared_precision(spec.dtype.name),
        input_dtype=spec.dtype.name,
        serving=serving,
        input_name=input_name,
        output_name=output_name,
        keep=loaded,
    )
    artifact.notes += precision_notes(spec.dtype.name)
    if others:
        artifact.notes.append(
            f"compared its output {output_name!r}; not its others ({', '.join(others)})"
        )
    if applications:
        artifact.pixels = "0-255"
        artifact.description += "; keras.applications: it normalises pixels 0-255 itself"
    stages = signatures.get(TRACE_SIGNATURE)
    if stages is not None and signature is None:
        stage_inputs = stages.structured_input_signature[1]
        if list(stage_inputs) == [input_name]:
            artifact.stages = stages
            artifact.description += f", with the {TRACE_SIGNATURE!r} signature of convnext export"
    return artifact


def image_input(path: Path, key: str, inputs: dict) -> tuple[str, object]:
    """The one 4-D float input of a signature: a model that takes anything else is not an
    image classifier this command can feed."""
    images = [
        (name, spec)
        for name, spec in inputs.items()
        if spec.shape.rank == 4 and spec.dtype.is_floating
    ]
    if len(inputs) != 1 or len(images) != 1:
        described = ", ".join(f"{n} {s.dtype.name}{list(s.shape)}" for n, s in inputs.items())
        raise ConversionError(
            f"{path}: signature {key!r} takes no single float image batch "
            f"(it takes: {described or 'nothing'})"
        )
    return images[0]
