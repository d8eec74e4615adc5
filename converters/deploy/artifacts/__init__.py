"""The deployed models `convnext verify` checks, behind one interface.

What people deploy is seldom this project's own Keras file: a SavedModel that TF Serving runs,
a .tflite file on a phone, a keras.applications model, a port somebody wrote by hand. Each is
opened as an Artifact that says what it knows about itself (the input layout and size it
takes, whether it wants pixels or normalised input, whether it ends in a softmax, the
precision it computes in) and runs a batch the way its users run it: a SavedModel through its
serving signature, a .tflite file through the LiteRT interpreter.

One module per kind, each importing only the framework that runs it, so that verifying a
.tflite file never loads TensorFlow (seconds of a verify that takes seconds):

- tflite: .tflite files, by LiteRT alone;
- savedmodel: SavedModel directories, by TensorFlow;
- keras_models: .keras and .weights.h5 files, by Keras;
- tfjs: TF.js graph models (a model.json and its shards), by TF.js in Node;
- base: what they share, the Artifact interface and how a signature's input and outputs
  are read; candidates: an artifact's own intermediate tensors, as every kind gives them.

This package's door, open_artifact, detects the kind and imports only that kind's module.

Artifacts written by this project (convnext_tf files, and `convnext export` output, which
carries a second signature, `stages`) also give their intermediate outputs under the PyTorch
module names (converters.deploy.trace.trace), so that a difference can be traced to the block or
stem where it starts. Any other artifact gives up its own tensors (Artifact.tensors), among
which converters.deploy.locate looks for the same points.

Opening a SavedModel or .tflite file runs none of the Python in it (a SavedModel holds a
TensorFlow graph, a .tflite file LiteRT operators); calling it runs that graph, which is
what verifying it means, so a SavedModel's every function that loading or calling can reach
is first checked against an allow-list of inference operations (converters.files.savedmodel).
Keras files are read in Keras' safe mode (no lambdas).
"""

from __future__ import annotations

from pathlib import Path

from converters.deploy.artifacts.base import (
    SERVING_SIGNATURE,
    TRACE_SIGNATURE,
    Artifact,
    rejected,
)
from converters.errors import ConversionError
from converters.files.destinations import KERAS_SUFFIXES, suffix_of
from converters.files.foreign_formats import check_not_keras2, tfjs_manifest
from converters.files.guards import check_regular_file
from converters.startup import import_tensorflow
from convnext_spec.spec import ModelSpec

__all__ = [
    "SERVING_SIGNATURE",
    "TRACE_SIGNATURE",
    "Artifact",
    "is_tflite",
    "open_artifact",
    "rejected",
]


def open_artifact(
    path: str | Path,
    spec: ModelSpec | None = None,
    signature: str | None = None,
    output_name: str | None = None,
) -> Artifact:
    """The deployed model at `path`, detected from what it is: a SavedModel directory (with a
    saved_model.pb), a .tflite file (LiteRT's flatbuffer), a TF.js graph model (its folder or
    its model.json), or a Keras file: this project's
    .keras / .weights.h5 (`spec`, from the PyTorch side, builds a .weights.h5), a
    keras.applications model or weights file, or any other Keras model. `output_name` picks
    one of several outputs (of a signature, or of a Keras model). Only the framework the
    kind needs is imported: TensorFlow (quietly, from an entry point) for a SavedModel or a
    Keras file, LiteRT alone for a .tflite file."""
    path = Path(path)
    manifest = tfjs_manifest(path)
    if manifest is not None:
        from converters.deploy.artifacts.tfjs import open_tfjs  # Node runs it: no framework here

        if signature not in (None, SERVING_SIGNATURE):
            raise ConversionError(
                f"{path}: a TF.js graph model has one signature (tensorflowjs_converter keeps "
                "the one it converts): `signature` does not apply"
            )
        return open_tfjs(manifest, output_name)
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise ConversionError(f"{path}: a directory, but not a SavedModel (no saved_model.pb)")
        import_tensorflow()
        from converters.deploy.artifacts.savedmodel import open_savedmodel

        return open_savedmodel(path, signature, output_name)
    if not path.exists():
        raise ConversionError(f"{path}: no such file or directory")
    if path.suffix.lower() == ".tflite" or is_tflite(path):
        from converters.deploy.artifacts.tflite import open_tflite  # LiteRT only

        return open_tflite(path, signature, output_name)
    if path.suffix.lower() in (".keras", ".h5") and not path.name.endswith(".weights.h5"):
        check_regular_file(path)
        check_not_keras2(path)
    if suffix_of(path, KERAS_SUFFIXES):
        import_tensorflow()
        from converters.deploy.artifacts.keras_models import open_keras

        return open_keras(path, spec, output_name)
    raise ConversionError(
        f"{path}: not a deployed model this command reads (a SavedModel directory, a .tflite "
        "file, a TF.js model.json, a .keras or .weights.h5 file)"
    )


def is_tflite(path: Path) -> bool:
    """LiteRT's flatbuffers carry the identifier TFL3 at bytes 4..8."""
    try:
        with open(path, "rb") as f:
            return f.read(8)[4:8] == b"TFL3"
    except OSError:
        return False
