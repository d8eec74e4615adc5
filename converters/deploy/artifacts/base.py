"""What every kind of deployed model shares: the Artifact interface verify calls, and how a
signature's one image input and its outputs are read (converters.deploy.artifacts). No
framework is imported here."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from converters.errors import ConversionError, first_sentence

if TYPE_CHECKING:
    from converters.deploy.artifacts.candidates import Candidate, Keep

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

    def unmatched_weights(
        self, parameters: dict[str, np.ndarray], levels: int
    ) -> tuple[list[str], str] | None:
        """Which of `parameters` (PyTorch's) are not among the artifact's weights as an
        affine quantization in `levels` steps stores them, and the arithmetic they were
        rounded in; None: it cannot tell (only a TF.js manifest gives each weight's range)."""
        return None

    def tensors(self, x: np.ndarray, keep: Keep) -> list[Candidate]:
        """Its own intermediate tensors on `x` (in its own layout), in the order it computes
        them, those of a shape `keep` accepts (converters.deploy.candidates). Raises
        NotImplementedError for a kind of artifact that keeps none to read."""
        raise NotImplementedError(f"{self.kind} artifacts keep no intermediate tensors")


# --- a signature's input and outputs, as every kind reads them -----------------------------


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
    if text.startswith("TF.js: ") and "shape" not in text.lower():  # not the input: the model
        return ConversionError(f"{artifact.path}: {text[:300]}, on a batch of {tuple(x.shape)}")
    return ConversionError(
        f"{artifact.path}: refused a batch of shape {tuple(x.shape)} "
        f"({first_sentence(error)[:200]}); if it takes another layout or size, pass "
        "`input_layout` or `size`"
    )
