"""The deployed models `convnext verify` checks, behind one interface.

What people deploy is seldom this project's own Keras file: a SavedModel that TF Serving runs,
a .tflite file on a phone, a keras.applications model, a port somebody wrote by hand. Each is
opened here as an Artifact that says what it knows about itself (the input layout and size it
takes, whether it wants pixels or normalised input, whether it ends in a softmax, the
precision it computes in) and runs a batch the way its users run it: a SavedModel through its
serving signature, a .tflite file through the LiteRT interpreter.

Artifacts written by this project (convnext_tf files, and `convnext export` output, which
carries a second signature, `stages`) also give their intermediate outputs under the PyTorch
module names (converters.deploy.trace.trace), so that a difference can be traced to the block or
stem where it starts. Anything else is a black box: only its output can be compared.

Opening a SavedModel or .tflite file runs none of the Python in it (a SavedModel holds a
TensorFlow graph, a .tflite file LiteRT operators); calling it runs that graph, which is
what verifying it means, so a SavedModel's every function that loading or calling can reach
is first checked against an allow-list of inference operations (converters.files.savedmodel).
Keras files are read in Keras' safe mode (no lambdas).
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import keras
import numpy as np

from converters.deploy.trace import is_backbone, keras_trace
from converters.errors import ConversionError, first_sentence
from converters.files.destinations import KERAS_SUFFIXES, suffix_of
from converters.files.foreign_formats import check_not_keras2, check_not_tfjs
from converters.files.guards import CONFIG_LIMIT, check_regular_file, keras_member
from converters.files.keras_files import check_self_contained, load_keras_model
from converters.files.savedmodel import check_savedmodel
from converters.weights import keras_applications
from convnext_spec.spec import KIND_OF_CLASS, ModelSpec

SERVING_SIGNATURE = "serving_default"  # what TF Serving and LiteRT call by default
TRACE_SIGNATURE = "stages"  # convnext export's second signature: every intermediate output
PROBABILITY_NAMES = ("probabilities", "probs", "predictions", "softmax")


@dataclass
class Artifact:
    """A deployed model, and what is known of the input it takes and the output it gives.

    None means not known: verify then uses its options, or a default it says it assumed."""

    path: Path
    kind: str  # keras, keras-applications, savedmodel, tflite
    description: str
    layout: str | None = "nhwc"  # nhwc or nchw
    size: tuple[int, int] | None = None  # a fixed (H, W) the artifact takes
    batch: int | None = None  # a fixed batch it takes (litert-torch, onnx2tf, nobuco: 1)
    pixels: str | None = None  # 0-255 or 0-1 when it normalises its input itself
    output: str | None = "logits"  # logits, probabilities, features; None: not known
    precision: str = "float32"  # what it computes in: float32, float64, float16, dynamic-int8
    input_dtype: str = "float32"
    notes: list[str] = field(default_factory=list)

    @property
    def traced(self) -> bool:
        """Whether trace() gives the intermediate outputs."""
        return False

    def run(self, x: np.ndarray) -> np.ndarray:
        """The artifact's output on `x` (in its own layout and scale), as numpy."""
        raise NotImplementedError

    def trace(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """The named intermediate outputs (converters.deploy.trace.trace), channels last."""
        raise ConversionError(f"{self.path}: {self.kind} artifacts give their outputs only")


# --- Keras files --------------------------------------------------------------------------


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


# --- SavedModel ---------------------------------------------------------------------------


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
        import tensorflow as tf

        outputs = self.serving(**{self.input_name: tf.constant(x, dtype=self.input_dtype)})
        return outputs[self.output_name].numpy()

    def trace(self, x: np.ndarray) -> dict[str, np.ndarray]:
        import tensorflow as tf

        outputs = self.stages(**{self.input_name: tf.constant(x, dtype=self.input_dtype)})
        return {name: value.numpy() for name, value in outputs.items()}


def open_savedmodel(
    path: Path, signature: str | None, output_name: str | None = None
) -> SavedModelArtifact:
    import tensorflow as tf

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


def compared_precision(declared: str) -> str:
    """The precision a foreign artifact is held to: float64 where it takes float64 (stricter),
    else float32. Its own word cannot loosen the tolerance: a graph that takes float16 input
    may compute anything in float32 and pass float16's noise floor."""
    return "float64" if declared == "float64" else "float32"


def precision_notes(declared: str) -> list[str]:
    if declared in ("float32", "float64"):
        return []
    return [
        f"it takes {declared} input: held to float32's tolerance all the same (an artifact "
        "does not choose its own); pass `rtol` for a model that computes in "
        f"{declared}"
    ]


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


def pick_output(path: Path, key: str, outputs: dict, chosen: str | None = None) -> str:
    """The output compared: `chosen` (`output_name`), the only one, or the one whose name says
    logits or probabilities; with several and no such name, the user picks."""
    where = key if key == "the model" else f"signature {key!r}"
    if chosen is not None:
        if chosen not in outputs:
            have = ", ".join(map(str, outputs)) or "none"
            raise ConversionError(f"{path}: {where} has no output {chosen!r} (it has: {have})")
        return chosen
    if len(outputs) == 1:
        return next(iter(outputs))
    for name in ("logits", *PROBABILITY_NAMES, "output_0"):
        if name in outputs:
            return name
    raise ConversionError(
        f"{path}: {where} has several outputs ({', '.join(map(str, outputs))}) and none is "
        "called logits: pick one with `output_name`"
    )


def output_kind_of(name: str) -> str | None:
    """What an output's name says it holds, if it says."""
    lowered = name.lower()
    if "logit" in lowered:
        return "logits"
    if "feature" in lowered:
        return "features"
    if any(word in lowered for word in PROBABILITY_NAMES):
        return "probabilities"
    return None


def layout_of(shape) -> tuple[str | None, tuple[int, int] | None]:
    """The layout and fixed spatial size an image input's shape says, when it says: a channel
    axis of 1 or 3 at one end and not the other. (None, None, None, 3) is NHWC;
    (None, 3, None, None) NCHW; (None, None, None, None) says nothing."""
    dims = [None if d is None or d < 0 else int(d) for d in list(shape)]
    first, last = dims[1] in (1, 3), dims[3] in (1, 3)
    if last and not first:
        layout = "nhwc"
    elif first and not last:
        layout = "nchw"
    else:
        layout = "nhwc" if dims[3] is not None and dims[1] is None else None
    spatial = {"nhwc": dims[1:3], "nchw": dims[2:4]}.get(layout, [None, None])
    size = tuple(spatial) if None not in spatial else None
    return layout, size


def batch_of(shape) -> int | None:
    """The fixed batch an input shape says (litert-torch's (1, 3, 224, 224)), or None."""
    first = list(shape)[0] if len(list(shape)) else None
    return None if first is None or int(first) < 0 else int(first)


# --- TFLite -------------------------------------------------------------------------------


@dataclass
class TFLiteArtifact(Artifact):
    """A .tflite file, run by the LiteRT interpreter (ai-edge-litert), as on a device."""

    runner: object = None
    stages: object = None
    input_name: str = ""
    output_name: str = ""

    @property
    def traced(self) -> bool:
        return self.stages is not None

    def run(self, x: np.ndarray) -> np.ndarray:
        outputs = self.runner(**{self.input_name: x.astype(self.input_dtype)})
        return np.array(outputs[self.output_name])  # a copy: the next call overwrites them

    def trace(self, x: np.ndarray) -> dict[str, np.ndarray]:
        outputs = self.stages(**{self.input_name: x.astype(self.input_dtype)})
        return {name: np.array(value) for name, value in outputs.items()}


def open_tflite(
    path: Path, signature: str | None, output_name: str | None = None
) -> TFLiteArtifact:
    check_regular_file(path)
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise ConversionError(
            f"{path}: running .tflite files needs LiteRT: pip install ai-edge-litert"
        ) from None
    try:
        interpreter = Interpreter(model_path=str(path))
        signatures = interpreter.get_signature_list()
    except Exception as e:  # noqa: BLE001 - a bad flatbuffer is a ValueError or RuntimeError
        raise ConversionError(f"{path}: not a usable .tflite file ({first_sentence(e)})") from None
    key = signature or SERVING_SIGNATURE
    if key not in signatures and signature is None and len(signatures) == 1:
        key = next(iter(signatures))  # a converter that named its one signature otherwise
    check_builtin_ops(path, interpreter)
    if not signatures and signature is None:  # onnx2tf's: called by its model inputs
        key, runner = MODEL_IO, ModelRunner(interpreter)
        output_names = list(runner.outputs)
    elif key not in signatures:
        have = ", ".join(signatures) or "none"
        raise ConversionError(f"{path}: no signature {key!r} (it has: {have}); pass `signature`")
    else:
        runner = interpreter.get_signature_runner(key)
        output_names = signatures[key]["outputs"]
    inputs = runner.get_input_details()
    images = [
        (name, d)
        for name, d in inputs.items()
        if len(d["shape_signature"]) == 4 and np.issubdtype(d["dtype"], np.floating)
    ]
    if len(inputs) != 1 or len(images) != 1:
        described = ", ".join(
            f"{n} {d['dtype'].__name__}{list(d['shape'])}" for n, d in inputs.items()
        )
        raise ConversionError(
            f"{path}: {called(key)} takes no single float image batch "
            f"(it takes: {described or 'nothing'})"
        )
    input_name, details = images[0]
    outputs = dict.fromkeys(output_names)
    output_name = pick_output(path, key, outputs, output_name)
    layout, size = layout_of(details["shape_signature"])
    precision, weights = tflite_precision(interpreter)
    artifact = TFLiteArtifact(
        path,
        "tflite",
        f"a .tflite file, {called(key)} ({input_name} -> {output_name}), run by LiteRT",
        layout=layout,
        size=size,
        batch=batch_of(details["shape_signature"]),
        output=output_kind_of(output_name),
        precision=precision,
        input_dtype=np.dtype(details["dtype"]).name,
        runner=runner,
        input_name=input_name,
        output_name=output_name,
    )
    artifact.notes.append(weights)
    if len(outputs) > 1:
        others = ", ".join(sorted(name for name in outputs if name != output_name))
        artifact.notes.append(f"compared its output {output_name!r}; not its others ({others})")
    if TRACE_SIGNATURE in signatures and signature is None:
        artifact.stages = interpreter.get_signature_runner(TRACE_SIGNATURE)
        artifact.description += f", with the {TRACE_SIGNATURE!r} signature of convnext export"
    return artifact


MODEL_IO = "the model"  # a .tflite file without signatures: its model inputs and outputs


def check_builtin_ops(path: Path, interpreter) -> None:
    """TensorFlow ops kept in a .tflite file (SELECT_TF_OPS: onnx2tf's FlexErf for the exact
    GELU) run only where the Flex delegate is linked, which LiteRT's interpreter is not."""
    ops = interpreter._get_ops_details()  # noqa: SLF001 - LiteRT's only view of the graph
    flex = sorted({op["op_name"] for op in ops if op["op_name"].startswith("Flex")})
    if flex:
        raise ConversionError(
            f"{path}: uses TensorFlow ops ({', '.join(flex)}) that LiteRT runs only with the "
            "Flex delegate, which its interpreter does not have (onnx2tf keeps Erf so)"
        )


def called(key: str) -> str:
    return "no signature: its model inputs and outputs" if key == MODEL_IO else f"signature {key!r}"


class ModelRunner:
    """A .tflite file without signatures (onnx2tf's: TFLiteConverter.from_keras_model of a
    tf_keras model writes none), called as LiteRT's signature runners are: by its model
    inputs' names, returning its model outputs by name."""

    _signature_key = None  # what a signature runner holds: this file has no signature

    def __init__(self, interpreter) -> None:
        self.interpreter = interpreter
        self.allocated = False  # not before a batch's shape: a dynamic size may not fit 1x1
        self.inputs = {d["name"]: d for d in interpreter.get_input_details()}
        self.outputs = {d["name"]: d for d in interpreter.get_output_details()}

    def get_input_details(self) -> dict[str, dict]:
        return self.inputs

    def __call__(self, **feeds: np.ndarray) -> dict[str, np.ndarray]:
        for name, value in feeds.items():
            details = self.inputs[name]
            if not self.allocated or tuple(value.shape) != tuple(details["shape"]):
                self.interpreter.resize_tensor_input(details["index"], value.shape)
                self.interpreter.allocate_tensors()
                details["shape"], self.allocated = np.array(value.shape), True
            self.interpreter.set_tensor(details["index"], value)
        self.interpreter.invoke()
        return {name: self.interpreter.get_tensor(d["index"]) for name, d in self.outputs.items()}


# The LiteRT operators whose second input is a weight tensor: where quantization matters.
WEIGHTED_OPS = frozenset(
    "CONV_2D DEPTHWISE_CONV_2D FULLY_CONNECTED BATCH_MATMUL TRANSPOSE_CONV CONV_3D".split()
)


QUANTIZED_ELEMENTS = 1024  # LiteRT's dynamic range quantization leaves smaller weights float


def tflite_precision(interpreter) -> tuple[str, str]:
    """What a .tflite file computes in, decided from the weights its convolutions and matrix
    products take, and said in words. The looser tolerance of a quantized file is earned only
    by LiteRT's own pattern, the one verify's reference reproduces: dynamic-int8 when every
    weight of 1024 elements or more is int8 with its scales (or int8 dequantized on load) and
    every smaller one float; float16 when every weight is stored as float16. Anything else (an
    int8 cast feeding nothing weighted, one int8 convolution among float ones) is compared as
    float32: a tampered file must not choose its own tolerance."""
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()  # noqa: SLF001 - LiteRT's only view of the graph

    def dtype(index: int) -> str:
        return np.dtype(tensors[index]["dtype"]).name

    def quantized(index: int) -> bool:
        return len(tensors[index]["quantization_parameters"]["scales"]) > 0

    dequantized = {  # DEQUANTIZE output -> its input, the stored weight
        out: op["inputs"][0]
        for op in ops
        if op["op_name"] == "DEQUANTIZE" and len(op["inputs"])
        for out in op["outputs"]
    }
    stored: list[tuple[str, bool]] = []  # (how each weight is stored, whether LiteRT's
    for op in ops:  # dynamic range quantization would quantize it)
        if op["op_name"] not in WEIGHTED_OPS or len(op["inputs"]) < 2 or op["inputs"][1] < 0:
            continue
        weight = dequantized.get(op["inputs"][1], op["inputs"][1])
        kind = dtype(weight)
        if kind == "int8" and not (quantized(weight) or op["inputs"][1] in dequantized):
            kind = "int8 without scales"
        large = int(np.prod(tensors[weight]["shape"])) >= QUANTIZED_ELEMENTS
        stored.append((kind, large))
    total = len(stored)
    int8 = sum(kind == "int8" for kind, _ in stored)
    float16 = sum(kind == "float16" for kind, _ in stored)
    if int8 and all((kind == "int8") == large for kind, large in stored):
        return "dynamic-int8", (
            f"{int8} of its {total} convolutions and matrix products take int8 weights (every "
            f"weight of {QUANTIZED_ELEMENTS} elements or more, as LiteRT quantizes): compared "
            "as dynamic-int8"
        )
    if float16 and float16 == total:
        return "float16", (
            f"its {total} convolutions and matrix products take float16 weights: compared as "
            "float16"
        )
    if int8 or float16:
        return "float32", (
            f"{int8 + float16} of its {total} convolutions and matrix products take int8 or "
            "float16 weights, not in LiteRT's pattern: compared as float32 (pass `rtol` to "
            "allow more)"
        )
    return "float32", f"its {total} convolutions and matrix products take float32 weights"


# --- detection ----------------------------------------------------------------------------


def rejected(artifact: Artifact, x: np.ndarray, error: Exception) -> ConversionError:
    """The one line for an artifact that refuses the batch it was given: most often a layout,
    size or dtype it does not take."""
    custom = re.search(r"unresolved custom op: ([^.\s]+)", str(error))
    if custom:
        return ConversionError(
            f"{artifact.path}: uses the custom operator {custom.group(1)}, which this LiteRT "
            "does not have: it runs only where that operator is registered"
        )
    text = str(error)
    if any(word in text for word in ("CheckNumerics", "Checking numerics", "ssertion failed")):
        return ConversionError(
            f"{artifact.path}: its graph stopped the run with its own check "
            f"({first_sentence(error)[:200]})"
        )
    layout = "NCHW" if artifact.layout == "nchw" else "NHWC"
    return ConversionError(
        f"{artifact.path}: refused a {layout} batch of shape {tuple(x.shape)} "
        f"({first_sentence(error)[:200]}); if it takes another layout or size, pass "
        "`input_layout` or `size`"
    )


def open_artifact(
    path: str | Path,
    spec: ModelSpec | None = None,
    signature: str | None = None,
    output_name: str | None = None,
) -> Artifact:
    """The deployed model at `path`, detected from what it is: a SavedModel directory (with a
    saved_model.pb), a .tflite file (LiteRT's flatbuffer), or a Keras file: this project's
    .keras / .weights.h5 (`spec`, from the PyTorch side, builds a .weights.h5), a
    keras.applications model or weights file, or any other Keras model. `output_name` picks
    one of several outputs (of a signature, or of a Keras model)."""
    path = Path(path)
    check_not_tfjs(path)
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise ConversionError(f"{path}: a directory, but not a SavedModel (no saved_model.pb)")
        return open_savedmodel(path, signature, output_name)
    if not path.exists():
        raise ConversionError(f"{path}: no such file or directory")
    if path.suffix.lower() == ".tflite" or is_tflite(path):
        return open_tflite(path, signature, output_name)
    if path.suffix.lower() in (".keras", ".h5") and not path.name.endswith(".weights.h5"):
        check_regular_file(path)
        check_not_keras2(path)
    if suffix_of(path, KERAS_SUFFIXES):
        return open_keras(path, spec, output_name)
    raise ConversionError(
        f"{path}: not a deployed model this command reads (a SavedModel directory, a .tflite "
        "file, a .keras or .weights.h5 file)"
    )


def is_tflite(path: Path) -> bool:
    """LiteRT's flatbuffers carry the identifier TFL3 at bytes 4..8."""
    try:
        with open(path, "rb") as f:
            return f.read(8)[4:8] == b"TFL3"
    except OSError:
        return False
