""".keras and .weights.h5 files (Keras): this project's models, whose every block output
is traced under the PyTorch names, keras.applications models and weights files, and any other
Keras model (a hand-written port), read in safe mode and called as a black box whose own
layer outputs are where converters.deploy.locate looks for the blocks.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import keras
import numpy as np

from converters.deploy.artifacts.base import (
    Artifact,
    batch_of,
    compared_precision,
    layout_of,
    output_kind_of,
    pick_output,
    precision_notes,
)
from converters.deploy.artifacts.candidates import Candidate, Keep, graph_tensors
from converters.deploy.trace import is_backbone, keras_trace
from converters.errors import ConversionError, first_sentence
from converters.files.guards import CONFIG_LIMIT, check_regular_file, keras_member
from converters.files.keras_files import check_self_contained, load_keras_model
from converters.weights import keras_applications
from convnext_spec.spec import KIND_OF_CLASS, ModelSpec


@dataclass
class KerasArtifact(Artifact):
    """A Keras model in memory: this project's (traced) or another (a black box)."""

    model: keras.Model | None = None
    ours: bool = False
    pick: int | None = None  # which of a foreign model's several outputs is compared

    @property
    def traced(self) -> bool:
        return self.ours

    def run(self, x: np.ndarray) -> np.ndarray:
        out = self.model(x, training=False)
        if isinstance(out, dict):  # a foreign model's named outputs, in output_names' order
            out = list(out.values())
        if isinstance(out, (list, tuple)):  # a detection backbone: its last output
            out = out[-1 if self.pick is None else self.pick]
        return keras.ops.convert_to_numpy(out)

    def trace(self, x: np.ndarray) -> dict[str, np.ndarray]:
        if not self.ours:
            return super().trace(x)
        return {k: keras.ops.convert_to_numpy(v) for k, v in keras_trace(self.model, x).items()}

    def tensors(self, x: np.ndarray, keep: Keep) -> list[Candidate]:
        return keras_tensors(self.model, x.astype(self.input_dtype), keep)


@dataclass
class KerasApplicationsWeights(KerasArtifact):
    """A keras.applications weights file: with its top, the model is built for one input
    size, so it is built again for the size it is given (the weights fit every size)."""

    spec: ModelSpec | None = None
    include_top: bool = True

    def run(self, x: np.ndarray) -> np.ndarray:
        size = tuple(x.shape[1:3])
        if self.include_top and tuple(self.model.inputs[0].shape[1:3]) != size:
            self.model = keras_applications.build(self.spec, True, size)
            self.model.load_weights(self.path)
        return super().run(x)


def open_keras(path: Path, spec: ModelSpec | None, output_name: str | None = None) -> KerasArtifact:
    check_regular_file(path)
    weights = path.name.endswith(".weights.h5")
    project = not weights and config_class(path) in KIND_OF_CLASS
    if output_name is not None and (weights or project):
        raise ConversionError(f"{path}: has one output; `output_name` picks among several")
    if weights:
        if weights_are_ours(path):
            model = load_keras_model(path, spec)
            return ours(path, model, "this project's Keras weights (.weights.h5)")
        return keras_applications_weights(path, spec)
    if project:
        return ours(path, load_keras_model(path), "this project's Keras model (.keras)")
    return foreign_keras(path, output_name)


def ours(path: Path, model: keras.Model, description: str) -> KerasArtifact:
    output = "features" if is_backbone(model) or not model.head.weights else "logits"
    return KerasArtifact(
        path,
        "keras",
        description,
        output=output,
        precision=model.compute_dtype,
        input_dtype=model.compute_dtype,
        model=model,
        ours=True,
    )


def weights_are_ours(path: Path) -> bool:
    """A convnext_tf weights file has top-level groups named after the model's attributes;
    a Functional model's (keras.applications) has only `layers` and `vars`."""
    check_self_contained(path, path)
    try:
        with h5py.File(path, "r") as f:
            return "downsample_layers" in f or "stem" in f
    except OSError as e:
        raise ConversionError(f"{path}: not a Keras weights file ({first_sentence(e)})") from None


def keras_applications_weights(path: Path, spec: ModelSpec | None) -> KerasArtifact:
    """A keras.applications weights file, as `convnext convert --to keras-applications` writes
    it: built with include_preprocessing (pixels 0-255 in) and without the softmax, as the
    weights alone say neither; the variant comes from the PyTorch side."""
    if spec is None:
        raise ConversionError(f"{path}: a keras.applications weights file needs `variant`")
    errors = []
    for include_top in (spec.num_classes > 0, False):
        try:
            model = keras_applications.build(spec, include_top=include_top)
            model.load_weights(path)
        except ConversionError:
            raise
        except Exception as e:  # noqa: BLE001 - Keras raises many types for a mismatch
            errors.append(first_sentence(e))
            continue
        output = "logits" if include_top else "features"
        return KerasApplicationsWeights(
            path,
            "keras-applications",
            f"keras.applications {keras_applications.CONSTRUCTORS[spec.name]} weights "
            f"({'with' if include_top else 'without'} its top, no softmax)",
            pixels="0-255",
            output=output,
            model=model,
            spec=spec,
            include_top=include_top,
        )
    raise ConversionError(f"{path}: not keras.applications weights of {spec.name} ({errors[0]})")


def config_class(path: Path) -> str | None:
    """The class a .keras file's config.json names, or None if it is no Keras file."""
    try:
        config = json.loads(keras_member(path, "config.json", CONFIG_LIMIT))
    except (ValueError, RecursionError) as e:
        raise ConversionError(f"{path}: not a Keras model file ({first_sentence(e)})") from None
    return config.get("class_name") if isinstance(config, dict) else None


def foreign_keras(path: Path, output_name: str | None = None) -> KerasArtifact:
    """Any other .keras model (keras.applications, a hand-written port), loaded in safe mode
    and called as a black box."""
    try:
        check_self_contained(io.BytesIO(keras_member(path, "model.weights.h5")), path)
        model = keras.models.load_model(path, safe_mode=True, compile=False)
    except ConversionError:
        raise
    except Exception as e:  # noqa: BLE001
        raise ConversionError(f"{path}: cannot load ({first_sentence(e)})") from None
    names = [layer.name for layer in model.layers]
    applications = any(name.endswith("_prestem_normalization") for name in names)
    last = getattr(model.layers[-1], "activation", None)
    softmax = getattr(last, "__name__", "") == "softmax"
    shape = model.inputs[0].shape if model.inputs else None
    names = list(getattr(model, "output_names", None) or [])
    picked = None
    if names or output_name:
        picked = pick_output(path, "the model", dict.fromkeys(names), output_name)
    artifact = KerasArtifact(
        path,
        "keras-applications" if applications else "keras",
        f"{'a keras.applications' if applications else 'a Keras'} model ({model.name})",
        pixels="0-255" if applications else None,
        output="probabilities" if softmax else ("logits" if applications else None),
        precision=compared_precision(model.compute_dtype),
        input_dtype=model.compute_dtype,
        model=model,
        notes=precision_notes(model.compute_dtype),
    )
    if len(names) > 1:
        artifact.pick = names.index(picked)
        artifact.output = output_kind_of(picked) or artifact.output
        artifact.description += f", output {picked!r} of {len(names)}"
    if shape is not None:
        artifact.layout, artifact.size = layout_of(shape)
        artifact.batch = batch_of(shape)
    if applications:
        artifact.notes.append("keras.applications normalises its input: it gets pixels 0-255")
    return artifact


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
