"""A TF.js graph model's files, read with bounds before anything runs them
(converters.deploy.artifacts.tfjs runs them, in Node): its model.json and weight shards.

What a model.json claims is checked against what is there: a graph model with one float image
input; operations from the SavedModel allow-list, less calls and branches, and no functions
or initializer graph (nothing that loops or calls itself); weight shards inside the model's
folder, each once, holding exactly the bytes the manifest's weight shapes take (counted in
Python's integers). Weights quantized the affine way (uint8 / uint16) are listed with their
range and place, for the reference that rounds PyTorch's weights as the converter did.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from converters.errors import ConversionError
from converters.files.guards import check_regular_file
from converters.files.savedmodel import ALLOWED_OPS

MANIFEST_LIMIT = 1 << 24  # model.json: a graph's nodes (convnext_tiny's: 0.5 MB) and manifest
# Bytes per element as TF.js stores a weight (its own dtype, or its quantization's).
STORED_BYTES = {"float32": 4, "int32": 4, "bool": 1, "uint8": 1, "uint16": 2, "float16": 2}
# What a SavedModel may run (converters.files.savedmodel: no loops, nothing that never ends),
# with the name tensorflowjs_converter gives a fused depthwise convolution, and without calls
# or branches: the converter inlines every function of a convolutional network, so a graph
# model with any is refused (no function can then loop or call itself).
CALLS = frozenset({"If", "StatelessIf", "Case", "StatelessCase", "PartitionedCall"})
TFJS_OPS = (ALLOWED_OPS - CALLS - {"StatefulPartitionedCall"}) | {"FusedDepthwiseConv2dNative"}


@dataclass(frozen=True)
class AffineWeight:
    """A weight stored by TF.js's affine quantization: its minimum and scale (the manifest's),
    its level type, and where its levels lie in the shards taken one after another."""

    low: float
    scale: float
    dtype: str  # uint8 or uint16
    offset: int
    count: int

    @property
    def key(self) -> tuple[str, str]:
        return (f"{self.low:.9g}", f"{self.scale:.9g}")


ARITHMETIC = ("float64", "float32")  # what the converter's numpy rounds in: 2.x, 1.x


def affine_levels(
    value: np.ndarray, low: float, high: float, levels: int, arithmetic: str
) -> np.ndarray:
    """The levels tensorflowjs_converter stores for `value` (float32): numpy 2 computes them in
    float64 (the minimum and scale are float64 scalars), numpy 1 in float32 (value-based
    casting keeps the array's type)."""
    low, scale = affine_range(low, high, levels)
    kind = np.float64 if arithmetic == "float64" else np.float32
    top = kind(levels * scale + low)
    return np.round((value.astype(kind).clip(kind(low), top) - kind(low)) / kind(scale))


def read_span(shards: list[Path], offset: int, length: int) -> bytes:
    """`length` bytes from `offset` in the shards taken one after another."""
    parts = []
    for path in shards:
        size = path.stat().st_size
        if offset < size and length > 0:
            with open(path, "rb") as f:
                f.seek(offset)
                parts.append(f.read(min(length, size - offset)))
            length -= len(parts[-1])
        offset = max(0, offset - size)
    return b"".join(parts)


def affine_range(low: float, high: float, levels: int) -> tuple[float, float]:
    """tensorflowjs_converter's affine quantization range of values from `low` to `high` in
    `levels` steps: its minimum (moved so that 0 is a level when the range holds 0) and scale,
    in float64 as its numpy computes them."""
    scale = (high - low) / levels
    if low <= 0 <= high:
        low = -round(-low / scale) * scale
    return low, scale


def producer_of(topology: dict) -> int:
    """The GraphDef version that wrote the graph (TF.js reads it; 0 when it is not said)."""
    return int((topology.get("versions") or {}).get("producer") or 0)


def read_manifest(manifest: Path) -> dict:
    check_regular_file(manifest, "a TF.js model.json")
    if manifest.stat().st_size > MANIFEST_LIMIT:
        raise ConversionError(
            f"{manifest}: refused: {manifest.stat().st_size:,} bytes, more than a TF.js "
            f"model.json holds ({MANIFEST_LIMIT:,})"
        )
    try:
        data = json.loads(manifest.read_bytes())
    except (ValueError, RecursionError) as e:
        raise ConversionError(f"{manifest}: not JSON ({e})") from None
    if not isinstance(data, dict) or not ({"modelTopology", "weightsManifest"} & set(data)):
        raise ConversionError(
            f"{manifest}: not a TF.js model.json (it holds no modelTopology or weightsManifest)"
        )
    return data


def check_operations(manifest: Path, data: dict) -> None:
    """Every operation of the graph is one of TFJS_OPS, and it has no functions and no
    initializer graph (which TF.js would run before it): a graph with a loop, or a function
    that calls itself, could keep Node running, and growing, without end."""
    topology = data["modelTopology"]
    if (topology.get("library") or {}).get("function") or data.get("modelInitializer"):
        raise ConversionError(
            f"{manifest}: refused: it holds functions or an initializer graph (control flow), "
            "which tensorflowjs_converter writes for no convolutional network"
        )
    other = sorted({node.get("op") for node in topology["node"]} - TFJS_OPS, key=str)
    if other:
        raise ConversionError(
            f"{manifest}: refused: its graph runs {', '.join(map(str, other[:5]))}"
            f"{', ...' if len(other) > 5 else ''}, not among the inference operations verify runs"
        )


def image_input(manifest: Path, inputs: dict) -> tuple[str, list[int | None]]:
    """The one float 4-D input of a graph model's signature, and its shape (None: open)."""
    described = []
    for name, spec in inputs.items():
        dims = (spec.get("tensorShape") or {}).get("dim") or []
        shape = [None if int(d.get("size", -1)) < 0 else int(d["size"]) for d in dims]
        described.append((name, spec.get("dtype"), shape))
    if len(described) != 1 or described[0][1] != "DT_FLOAT" or len(described[0][2]) != 4:
        said = ", ".join(f"{n} {d}{s}" for n, d, s in described) or "nothing"
        raise ConversionError(f"{manifest}: takes no single float image batch (it takes: {said})")
    return described[0][0], described[0][2]


def weight_files(
    manifest: Path, data: dict, affine: list[AffineWeight]
) -> tuple[list[Path], tuple[str, str]]:
    """The weight shards, in the manifest's order, each a regular file in the model's folder,
    holding together exactly what the manifest's weights take; and the precision the stored
    weights say, in words. Each uint8 / uint16 weight is added to `affine`."""
    folder = manifest.parent.resolve()
    shards, declared, quantized, seen, plain = [], 0, set(), set(), 0
    for group in data.get("weightsManifest") or []:
        for relative in group.get("paths") or []:
            path = (folder / str(relative)).resolve()
            if folder not in path.parents:
                raise ConversionError(
                    f"{manifest}: refused: weight shard {relative!r} lies outside its folder"
                )
            check_regular_file(path, "a weight shard")
            inode = (path.stat().st_dev, path.stat().st_ino)  # listed twice, by any name, it
            if inode in seen:  # would be read twice: Node would hold more than the folder does
                raise ConversionError(f"{manifest}: refused: weight shard {relative!r} repeats one")
            seen.add(inode)
            shards.append(path)
        for weight in group.get("weights") or []:
            stored = (weight.get("quantization") or {}).get("dtype") or weight.get("dtype")
            if stored not in STORED_BYTES:
                raise ConversionError(
                    f"{manifest}: weight {weight.get('name')!r} is stored as {stored}, which "
                    "no float image model holds"
                )
            quantization = weight.get("quantization")
            if quantization:
                quantized.add(stored)
            elif weight.get("dtype") == "float32":
                plain += 1
            elements = elements_of(manifest, weight)
            if stored in ("uint8", "uint16"):
                low, scale = float(quantization["min"]), float(quantization["scale"])
                affine.append(AffineWeight(low, scale, stored, declared, elements))
            declared += elements * STORED_BYTES[stored]
    held = sum(path.stat().st_size for path in shards)
    if held != declared:
        raise ConversionError(
            f"{manifest}: its weight shards hold {held:,} bytes, its manifest's weights take "
            f"{declared:,}: a shard is missing, cut short or not this model's"
        )
    if not quantized:
        return shards, ("float32", "its weights are stored as float32")
    if plain:  # the converter's --quantize_* '*' quantizes every float weight: a looser
        # tolerance is not earned by quantizing a few (a tampered file's choice)
        return shards, (
            "float32",
            f"{plain} of its float weights are not quantized, the others are "
            f"({' and '.join(sorted(quantized))}): compared as float32 (pass `rtol` to allow more)",
        )
    if len(quantized) == 1:
        (kind,) = quantized
        if kind == "float16":
            return shards, (kind, "its weights are stored as float16: compared as float16")
        return shards, (kind, f"its weights are quantized to {kind} (TF.js's affine quantization)")
    kinds = " and ".join(sorted(quantized))
    return shards, (
        "float32",
        f"its weights are quantized to {kinds} at once, which verify's reference does not "
        "reproduce: compared as float32 (pass `rtol` to allow more)",
    )


def elements_of(manifest: Path, weight: dict) -> int:
    """How many values a weight's shape says it holds, in Python's integers (numpy's int64
    wraps: a shape of 2^31 x 2^31 x 320 would count as none)."""
    shape = weight.get("shape") or []
    if not all(type(d) is int and d >= 0 for d in shape):
        raise ConversionError(f"{manifest}: weight {weight.get('name')!r} has shape {shape}")
    return math.prod(shape)
