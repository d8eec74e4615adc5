"""TF.js graph models (a model.json and its weight shards), run where they run: by TF.js itself,
in Node (tfjs_runner.js beside this file), on its WebAssembly backend. No TensorFlow.

A TF.js model is what `tensorflowjs_converter` makes of a SavedModel for a web page. Only TF.js
runs it, so verify drives TF.js 4.22 in Node, installed from the npm registry by `make tfjs`
into .tfjs/ (or found where CONVNEXT_TFJS_MODULES points): the pure-JavaScript packages, not
tfjs-node, whose native library is downloaded at install time from outside the registry.

Before Node sees the files, model.json and its shards are read with bounds
(converters.files.tfjs_files), and Node is given a copy of what was checked. A graph model is
a list of TF.js operations: running it executes nothing from the files. Its node outputs are its own
intermediate tensors (TFJSArtifact.tensors), where converters.deploy.locate looks for the blocks.
"""

from __future__ import annotations

import heapq
import json
import math
import os
import shutil
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from converters.deploy.artifacts.base import (
    Artifact,
    batch_of,
    layout_of,
    output_kind_of,
    pick_output,
)
from converters.deploy.artifacts.candidates import Candidate, Keep
from converters.errors import ConversionError, first_sentence
from converters.files.tfjs_files import (
    ARITHMETIC,
    STORED_BYTES,
    AffineWeight,
    affine_levels,
    affine_range,
    check_operations,
    image_input,
    producer_of,
    read_manifest,
    read_span,
    weight_files,
)

RUNNER = Path(__file__).with_name("tfjs_runner.js")
MODULES_VARIABLE = "CONVNEXT_TFJS_MODULES"  # a node_modules folder with TF.js in it
DEFAULT_MODULES = Path(__file__).resolve().parents[3] / ".tfjs" / "node_modules"
PACKAGES = ("tfjs-core", "tfjs-converter", "tfjs-backend-cpu", "tfjs-backend-wasm")
INSTALL = (
    "`make tfjs` installs it into .tfjs/ (npm, from the registry), or set "
    f"{MODULES_VARIABLE} to a node_modules folder holding @tensorflow/"
    + ", @tensorflow/".join(PACKAGES)
    + " 4.22"
)
RUN_LIMIT = 900  # seconds one Node run may take (convnext_tiny, 4 images: 4 s)
BACKEND = "wasm"  # TF.js's WebAssembly backend: a browser's without WebGL, Node's fastest here
SKIPPED_OPS = frozenset({"Const", "Placeholder", "Identity", "NoOp"})
FLOAT_TYPES = frozenset({"DT_FLOAT", "DT_HALF"})


@dataclass
class TFJSArtifact(Artifact):
    """A TF.js graph model, run by TF.js in Node."""

    manifest: Path = Path()
    shards: list[Path] = field(default_factory=list)
    node: str = ""
    modules: Path = Path()
    input_name: str = ""
    fetch: str = ""  # the output compared, as TF.js names it (node:index)
    nodes: list[str] = field(default_factory=list)  # float node outputs, in graph order
    runtime: str = ""  # TF.js's version, backend and Node's, for the report
    checked: dict = field(default_factory=dict)  # the model.json Node loads: what was checked
    affine: list[AffineWeight] = field(default_factory=list)  # its uint8 / uint16 weights

    def unmatched_weights(
        self, parameters: dict[str, np.ndarray], levels: int
    ) -> tuple[list[str], str]:
        """The names among `parameters` (PyTorch's, of more than one value) whose affine range
        (min, scale), as tensorflowjs_converter computes it, is not among this model's
        quantized weights (none: the file's weights are PyTorch's quantized this way, a
        weight the converter folded with another would not be), and the arithmetic the
        converter rounded in: float64 (numpy 2), or float32 (numpy 1, with TensorFlow 2.16 and
        older), which puts some values one level off. Told from the stored levels of the
        weights where the two differ: which one they are, as a whole (a broken weight is
        neither, and does not count)."""
        by_range: dict[tuple[str, str], list[AffineWeight]] = {}
        for weight in self.affine:
            by_range.setdefault(weight.key, []).append(weight)
        missing, votes = [], Counter()
        for name, value in parameters.items():
            low, high = float(value.min()), float(value.max())
            if low == high:
                continue  # one value: stored as it is, whatever the quantization
            key = AffineWeight(*affine_range(low, high, levels), "", 0, 0).key
            if not by_range.get(key):
                missing.append(name)
                continue
            weight = by_range[key].pop(0)
            wide, narrow = (affine_levels(value, low, high, levels, a) for a in ARITHMETIC)
            if weight.count == value.size and not np.array_equal(wide, narrow):
                stored = np.sort(self.stored_levels(weight), axis=None)
                for arithmetic, levels_of in zip(ARITHMETIC, (wide, narrow), strict=True):
                    votes[arithmetic] += np.array_equal(stored, np.sort(levels_of, axis=None))
        arithmetic = "float32" if votes["float32"] > votes["float64"] else "float64"
        return missing, arithmetic

    def stored_levels(self, weight: AffineWeight) -> np.ndarray:
        """A quantized weight's levels as its shards store them (little-endian)."""
        width = STORED_BYTES[weight.dtype]
        data = read_span(self.shards, weight.offset, weight.count * width)
        return np.frombuffer(data, dtype=f"<u{width}")

    def run(self, x: np.ndarray) -> np.ndarray:
        found = self.execute(x, [self.fetch])
        if not found:
            raise ConversionError(f"{self.manifest}: its output {self.fetch} is not float32")
        return next(iter(found.values()))

    def tensors(self, x: np.ndarray, keep: Keep) -> list[Candidate]:
        """Every float node output of the graph that `keep` accepts, each at its place in an
        order the graph can be computed in (float_nodes; fetched a few dozen at a time)."""
        found = self.execute(x, self.nodes, getattr(keep, "wanted", None))
        order = {name: i for i, name in enumerate(self.nodes)}
        return [
            Candidate(name, order[name], value)
            for name, value in found.items()
            if keep(tuple(value.shape))
        ]

    def execute(self, x: np.ndarray, fetch: list[str], shapes=None) -> dict[str, np.ndarray]:
        """The tensors `fetch` names on `x`, from one Node process (tfjs_runner.js: a process a
        batch, each loading the weights again, a second for convnext_tiny); of shapes
            among `shapes` only, when given (what the runner writes is read back here)."""
        with tempfile.TemporaryDirectory(prefix="convnext-tfjs-") as work:
            work = Path(work)
            np.ascontiguousarray(x, dtype="<f4").tofile(work / "input.bin")
            (work / "model.json").write_text(json.dumps(self.checked))
            request = {
                "model": str(work / "model.json"),
                "shards": [str(p) for p in self.shards],
                "backend": BACKEND,
                "modules": str(self.modules.resolve()),
                "input": str(work / "input.bin"),
                "shape": list(x.shape),
                "fetch": fetch,
                "shapes": None if shapes is None else [list(s) for s in shapes],
                "values": str(work / "values.bin"),
                "index": str(work / "index.json"),
            }
            (work / "request.json").write_text(json.dumps(request))
            environment = {**os.environ, "NODE_PATH": str(self.modules.resolve())}
            try:
                done = subprocess.run(
                    [self.node, str(RUNNER), str(work / "request.json")],
                    capture_output=True,
                    text=True,
                    env=environment,
                    check=False,
                    timeout=RUN_LIMIT,
                )
            except subprocess.TimeoutExpired:
                raise ConversionError(
                    f"{self.manifest}: TF.js had not finished after {RUN_LIMIT} s on a batch of "
                    f"shape {tuple(x.shape)}: stopped"
                ) from None
            if done.returncode != 0:
                raise RuntimeError(f"TF.js: {runner_error(done)}")
            index = json.loads((work / "index.json").read_text())["tensors"]
            written = (work / "values.bin").stat().st_size > 0
            values = np.memmap(work / "values.bin", dtype="<f4", mode="r") if written else None
            found = {}
            for entry in index:
                if entry["offset"] < 0:
                    continue
                start, count = entry["offset"] // 4, math.prod(entry["shape"])
                held = values[start : start + count] if values is not None else np.zeros(0, "<f4")
                found[entry["name"]] = np.array(held).reshape(entry["shape"])
            del values
            return found


def runner_error(done: subprocess.CompletedProcess) -> str:
    """What Node said when the runner failed: the runner's own one line, else (Node itself
    failing, before the runner could catch anything) the first line that names an error."""
    if done.returncode < 0:  # a signal: the kernel's out-of-memory killer, most often
        return f"Node was stopped by signal {-done.returncode} (out of memory?)"
    lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
    if any("out of memory" in line.lower() for line in lines):
        return "Node ran out of memory"
    named = [line for line in lines if "error" in line.lower()]
    return (named or lines or [f"node exited with status {done.returncode}"])[0][:300]


def open_tfjs(manifest: Path, output_name: str | None = None) -> TFJSArtifact:
    """The TF.js graph model whose model.json is `manifest`, checked as the module says."""
    data = read_manifest(manifest)
    try:
        artifact = graph_model(manifest, data, output_name)
    except (AttributeError, TypeError, ValueError, KeyError, OverflowError) as e:
        raise ConversionError(
            f"{manifest}: not a TF.js model.json this reads ({type(e).__name__}: "
            f"{first_sentence(e)[:120]})"
        ) from None
    artifact.node, artifact.modules = find_tfjs(manifest)
    check_version(manifest, artifact.modules)
    artifact.runtime = runtime(artifact.node, artifact.modules)
    return artifact


def graph_model(manifest: Path, data: dict, output_name: str | None) -> TFJSArtifact:
    if data.get("format") != "graph-model" or "node" not in (data.get("modelTopology") or {}):
        raise ConversionError(
            f"{manifest}: a TF.js layers model: verify runs TF.js graph models "
            "(tensorflowjs_converter --input_format tf_saved_model), which hold every operation "
            "TF.js runs; convert the SavedModel to one, or verify the Keras model it came from"
        )
    check_operations(manifest, data)
    signature = data.get("signature") or {}
    input_name, shape = image_input(manifest, signature.get("inputs") or {})
    declared = signature.get("outputs") or {}
    outputs = {name: spec.get("name", name) for name, spec in declared.items()}
    if not outputs:
        raise ConversionError(f"{manifest}: its signature names no output")
    output_name = pick_output(manifest, "the model", outputs, output_name)
    affine: list[AffineWeight] = []
    shards, weights = weight_files(manifest, data, affine)
    layout, size = layout_of(shape)
    artifact = TFJSArtifact(
        manifest.parent,
        "tfjs",
        f"a TF.js graph model ({input_name} -> {output_name}), run by TF.js in Node",
        layout=layout,
        size=size,
        batch=batch_of(shape),
        output=output_kind_of(output_name),
        precision=weights[0],
        manifest=manifest,
        shards=shards,
        input_name=input_name,
        fetch=outputs[output_name],
        nodes=float_nodes(data["modelTopology"]["node"]),
        checked={  # only what was checked: no initializer, no metadata that renames outputs
            "format": "graph-model",
            "modelTopology": {
                "node": data["modelTopology"]["node"],
                "versions": {"producer": int(producer_of(data["modelTopology"]))},
            },
            "signature": signature,
            "weightsManifest": [
                {"weights": list(group.get("weights") or [])}
                for group in data.get("weightsManifest") or []
            ],
        },
    )
    artifact.notes.append(weights[1])
    artifact.affine = affine
    if len(outputs) > 1:
        others = ", ".join(sorted(name for name in outputs if name != output_name))
        artifact.notes.append(f"compared its output {output_name!r}; not its others ({others})")
    return artifact


def float_nodes(nodes: list) -> list[str]:
    """The float node outputs a graph computes, in an order it can be computed in (each after
    its inputs; of those ready, the first in the file): where its block outputs may be found."""
    index = {node["name"]: i for i, node in enumerate(nodes)}
    needs: list[set[int]] = [set() for _ in nodes]
    feeds: list[list[int]] = [[] for _ in nodes]
    for i, node in enumerate(nodes):
        for name in node.get("input") or []:
            j = index.get(name.lstrip("^").split(":")[0])
            if j is not None and j != i and j not in needs[i]:
                needs[i].add(j)
                feeds[j].append(i)
    ready = [i for i, needed in enumerate(needs) if not needed]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for k in feeds[i]:
            needs[k].discard(i)
            if not needs[k]:
                heapq.heappush(ready, k)
    placed = set(order)
    order += [i for i in range(len(nodes)) if i not in placed]  # a cycle: the file's order
    return [nodes[i]["name"] for i in order if is_float_output(nodes[i])]


def is_float_output(node: dict) -> bool:
    if node.get("op") in SKIPPED_OPS:
        return False
    attributes = node.get("attr") or {}
    for key in ("T", "dtype", "DstT"):
        kind = (attributes.get(key) or {}).get("type")
        if kind is not None:
            return kind in FLOAT_TYPES
    return True  # said nowhere: fetched, and kept only if it holds floats


def runtime(node: str, modules: Path) -> str:
    """TF.js's version, its backend, and Node's version, in words."""
    package = json.loads((modules / "@tensorflow" / "tfjs-converter" / "package.json").read_text())
    done = subprocess.run([node, "--version"], capture_output=True, text=True, check=False)
    return f"{package.get('version')} ({BACKEND} backend), Node {done.stdout.strip()}"


def check_version(manifest: Path, modules: Path) -> None:
    """TF.js 4, whose loading and executor APIs the runner calls (make tfjs pins 4.22)."""
    said = {}
    for package in PACKAGES:
        try:
            text = (modules / "@tensorflow" / package / "package.json").read_text()
            said[package] = str(json.loads(text).get("version"))
        except (OSError, ValueError, AttributeError):
            said[package] = "unreadable"
    other = {p: v for p, v in said.items() if not v.startswith("4.")}
    if other:
        found = ", ".join(f"{p} {v}" for p, v in other.items())
        raise ConversionError(f"{manifest}: TF.js 4 is needed, {modules} holds {found}: {INSTALL}")


def find_tfjs(manifest: Path) -> tuple[str, Path]:
    """Node, and the node_modules folder TF.js is installed in."""
    node = shutil.which("node")
    if node is None:
        raise ConversionError(f"{manifest}: a TF.js model runs in Node, which is not installed")
    modules = Path(os.environ.get(MODULES_VARIABLE) or DEFAULT_MODULES)
    missing = [p for p in PACKAGES if not (modules / "@tensorflow" / p / "package.json").is_file()]
    if missing:
        raise ConversionError(
            f"{manifest}: a TF.js model runs in Node with TF.js, not found in {modules}: {INSTALL}"
        )
    return node, modules
