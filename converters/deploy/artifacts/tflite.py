""".tflite files, run by the LiteRT interpreter (ai-edge-litert) as on a device: no TensorFlow.

A file from `convnext export` carries a second signature, `stages`, with every intermediate
output; any other (litert-torch's, onnx2tf's, a converter's without signatures) gives up its
own tensors through a second interpreter that keeps them all (TFLiteArtifact.tensors).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from converters.deploy.artifacts.base import (
    SERVING_SIGNATURE,
    TRACE_SIGNATURE,
    Artifact,
    batch_of,
    layout_of,
    output_kind_of,
    pick_output,
)
from converters.deploy.artifacts.candidates import Candidate, Keep
from converters.errors import ConversionError, first_sentence
from converters.files.guards import check_regular_file


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

    def tensors(self, x: np.ndarray, keep: Keep) -> list[Candidate]:
        """Every float tensor a LiteRT interpreter computes, kept by a second interpreter of
        the same file; each operator's outputs at that operator's place. That interpreter
        runs LiteRT's builtin kernels, not the XNNPACK delegate that runs the served output
        (a delegate keeps no intermediate tensor to read)."""
        from ai_edge_litert.interpreter import Interpreter

        with warnings.catch_warnings():  # "intended for debugging purposes only": it is that
            warnings.simplefilter("ignore")
            interpreter = Interpreter(
                model_path=str(self.path), experimental_preserve_all_tensors=True
            )
        key = self.runner._signature_key  # noqa: SLF001
        # a file without signatures (onnx2tf's) is called through its model inputs, as run is
        runner = ModelRunner(interpreter) if key is None else interpreter.get_signature_runner(key)
        runner(**{self.input_name: x.astype(self.input_dtype)})
        details = {t["index"]: t for t in interpreter.get_tensor_details()}
        found = []
        for op in interpreter._get_ops_details():  # noqa: SLF001 - in execution order
            for index in op["outputs"]:
                detail = details.get(index)
                if detail is None or not np.issubdtype(detail["dtype"], np.floating):
                    continue
                if not keep(tuple(int(d) for d in detail["shape"])):
                    continue
                name = detail["name"].split(";")[0]  # fused operators join names with ';'
                value = np.array(interpreter.get_tensor(index))
                found.append(Candidate(name, int(op["index"]), value))
        return found


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
    GELU) run only where the Flex delegate is linked, which neither LiteRT's interpreter nor
    TensorFlow's (2.21) is. onnx2tf writes Erf as builtin operators when asked (`-rtpo Erf`):
    such a file verifies (tests/peers/test_third_party_artifacts.py)."""
    ops = interpreter._get_ops_details()  # noqa: SLF001 - LiteRT's only view of the graph
    flex = sorted({op["op_name"] for op in ops if op["op_name"].startswith("Flex")})
    if flex:
        route = (
            " (onnx2tf writes Erf as builtin operators with -rtpo Erf)" if "FlexErf" in flex else ""
        )
        raise ConversionError(
            f"{path}: uses TensorFlow ops ({', '.join(flex)}) that LiteRT runs only with the "
            f"Flex delegate, which its interpreter does not have{route}"
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
