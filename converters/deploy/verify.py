"""Does a deployed model compute what the PyTorch original computes? (`convnext verify`)

Both sides get the same images, decoded, resized and normalised once in numpy, so that the
check is of the two models and not of two image pipelines. The reference is the PyTorch model
in the precision the artifact computes in (float32, or float64). The tolerance is derived, not
guessed: PyTorch itself one precision away (float64 for a float32 artifact; float16 or int8
weights for a quantized .tflite) is run on the same inputs, and its distance from the
reference is the noise floor that any correct implementation sits at; the artifact passes
within FACTOR times that floor. For this project's models and `convnext export` output, every
block and stage is compared the same way, so that the first output out of tolerance names the
block (`stages.2.5`) or stem (`downsample_layers.0`) where the artifact goes wrong.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import platform
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch

import convnext_torch
from converters.deploy.artifacts import Artifact, open_artifact, rejected
from converters.deploy.hints import Evidence, advise
from converters.deploy.inputs import (
    CHANNEL_ORDERS,
    OUTPUT_KINDS,
    PIXEL_SCALES,
    Feeding,
    Images,
    channels_first,
    feeding,
    folder_images,
    in_fixed_batches,
    input_words,
    probe_output,
    random_images,
    served_name,
)
from converters.deploy.locate import LOCATE_IMAGES, Location, locate_points
from converters.deploy.references import quantized_exactly, reference_copy
from converters.deploy.result import ImageRow, Point, Stopwatch, Verification
from converters.deploy.trace import torch_trace
from converters.errors import ConversionError, Log, choice_argument, path_argument, quiet
from converters.startup import native_notices_silenced
from converters.weights.accounting import load_torch_model
from converters.weights.identify import model_spec, read_state

# The float32 noise floor is measured on as many images as this many float64 depthwise-conv
# multiply-adds allow (they are what makes PyTorch's float64 slow: ~1e7 a second here), at
# least MIN_FLOOR_IMAGES: all 360 digits of `make demo` (32x32), 2 images of ConvNeXt-T at
# 224x224. A maximum over many images grows with their number, so the floor is measured on
# as many as is cheap; deterministic, unlike a time limit, so that a verdict can be rerun.
FLOOR_DEPTHWISE_WORK = 2.5e8
MIN_FLOOR_IMAGES = 2
FACTOR = 10.0  # tolerance / noise floor; a correct float32 port measures 1.0-1.8 (README)
UNIT_ROUNDOFF = {"float32": 2.0**-24, "float64": 2.0**-53}  # the floor's floor


class Tally:
    """The largest differences seen at one named output, batch after batch.

    Every reduction here keeps a NaN: Python's max(0.0, nan) is 0.0 and numpy's max of a NaN
    array is NaN only by luck of the ufunc, so a NaN or infinity in the artifact's output
    would otherwise vanish and leave a PASS. Non-finite values where PyTorch is finite are
    counted apart (`nonfinite`, the images they are in), and fail the point by themselves."""

    def __init__(self) -> None:
        self.max_abs = 0.0
        self.floor_abs = 0.0
        self.scale = 0.0
        self.nonfinite: list[int] = []  # the images (by position in the run) with NaN or Inf
        self.seen = 0  # images compared so far
        self.note = ""

    def add(self, reference: np.ndarray, found: np.ndarray) -> None:
        if found.shape != reference.shape:
            self.note = f"shape {tuple(found.shape)}, PyTorch {tuple(reference.shape)}"
            self.max_abs = float("inf")
            return
        bad = ~np.isfinite(found.reshape(len(found), -1)).all(axis=1)
        self.nonfinite += [self.seen + int(i) for i in np.flatnonzero(bad)]
        self.seen += len(found)
        self.max_abs = worst(self.max_abs, nan_max(np.abs(found - reference)))
        self.scale = worst(self.scale, nan_max(np.abs(reference)))

    def add_floor(self, reference: np.ndarray, baseline: np.ndarray) -> None:
        self.floor_abs = worst(self.floor_abs, nan_max(np.abs(baseline - reference)))

    def point(
        self,
        name: str,
        tolerance: Callable[[float], float],
        atol: float = 0.0,
        floor_scale: float = 1.0,
    ) -> Point:
        """The comparison at this output; `floor_scale` turns the floor measured into the
        one that applies (float64: the float32 floor times 2^-29, see verify_models)."""
        scale = self.scale or 1.0
        floor = self.floor_abs / scale * floor_scale
        note = self.note
        if self.nonfinite and not note:
            note = f"NaN or Inf in {len(self.nonfinite)} of {self.seen} images"
        return Point(
            name,
            self.max_abs,
            self.max_abs / scale,
            floor,
            tolerance(floor),
            atol=atol,
            scale=scale,
            note=note,
            nonfinite=len(self.nonfinite),
        )


def judged(tolerance: Callable[[float], float], floor_scale: float):
    """The comparison locate makes at each candidate (converters.deploy.locate.Judge): the
    same Tally, tolerance and floor as every traced point's."""

    def judge(name, reference, found, floor) -> Point:
        tally = Tally()
        tally.add(reference, found)
        if floor is not None:
            tally.add_floor(reference[: len(floor)], floor)
        return tally.point(name, tolerance, floor_scale=floor_scale)

    return judge


def nan_max(values: np.ndarray) -> float:
    """The largest value, or NaN if there is one: a NaN must fail, not vanish in max()."""
    values = np.asarray(values)
    if values.size == 0:
        return 0.0
    return float("nan") if np.isnan(values).any() else float(np.max(values))


def worst(*values: float) -> float:
    """max() that keeps a NaN wherever it stands (Python's max(0.0, nan) is 0.0)."""
    return float("nan") if any(math.isnan(v) for v in values) else max(values)


def check_reference_finite(expected: dict[str, np.ndarray], names: list[str]) -> None:
    """A PyTorch model whose own output is NaN or Inf on these inputs is no reference: the
    checkpoint holds such values, or overflows; nothing can be verified against it."""
    for name, value in expected.items():
        if not np.isfinite(value).all():
            raise ConversionError(
                f"the PyTorch model gives NaN or Inf at {name} on {', '.join(names)}: the "
                "checkpoint is no reference to verify against (`convnext inspect` lists "
                "non-finite tensors)"
            )


def verify(
    torch_src: str | Path,
    deployed: str | Path,
    layout: str = "auto",
    ema: bool = False,
    variant: str | None = None,
    num_classes: int | None = None,
    key: str | None = None,
    size: tuple[int, int] | None = None,
    batch: int = 4,
    seed: int = 0,
    images: str | Path | None = None,
    input_layout: str | None = None,
    pixels: str | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    output: str | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    signature: str | None = None,
    allow_tf32: bool = False,
    log: Log = quiet,
    prefix: str | None = None,
    output_name: str | None = None,
    locate: str = "on-fail",
) -> Verification:
    """Check the deployed model at `deployed` against the PyTorch checkpoint `torch_src`.

    torch_src and its options (layout, ema, variant, num_classes, key, prefix): as
    convert_file.
    deployed: a SavedModel directory, a .tflite file, or a .keras / .weights.h5 file (this
    project's or keras.applications'), detected (converters.deploy.artifacts.open_artifact).
    Inputs: `batch` random images of `size` (default 224 x 224; the artifact's own, if it
    has a fixed one), or every JPEG/PNG in the folder `images`. How the artifact takes them,
    when it does not say so itself: input_layout "nhwc" / "nchw"; pixels "0-255" / "0-1" for
    raw pixels (None: normalised like the PyTorch input, with `mean` and `std`, ImageNet's by
    default, which the PyTorch side always gets); output "logits" / "probabilities" (then
    compared with PyTorch's softmax). atol / rtol replace the derived tolerance.
    signature: the SavedModel / .tflite signature to call (default serving_default);
    output_name: which of its outputs (or a Keras model's) to compare, where it has several.
    locate: "on-fail" (default) or "always": when a foreign artifact's blocks are looked for
        among its own tensors (verify_models).
    allow_tf32: on a GPU, leave TensorFloat-32 on (it is turned off in both by default).
    """

    started, clock = time.perf_counter(), Stopwatch()
    check_options(input_layout, pixels, output, size, batch, mean, std, seed, atol, rtol)
    torch_src = path_argument("torch_src", torch_src)
    deployed = path_argument("deployed", deployed)
    check_torch_source(torch_src)
    state = read_state(torch_src, layout, ema, key, log, prefix)
    state, spec = model_spec(state, variant, num_classes, log)
    clock.lap("read the checkpoint")
    # the artifact's own size, or 224 x 224, is known once it is open: till then the
    # smallest size there is bounds what the batch takes
    check_memory(spec, tuple(size) if size is not None else (32, 32), batch)
    reference = convnext_torch.create_model(spec)
    load_torch_model(state, reference)
    del state
    clock.lap("build the PyTorch model")
    log(f"opening {deployed}")
    artifact = open_artifact(deployed, spec, signature, output_name)
    clock.lap("open the artifact (TensorFlow's import, where it needs it)")
    log(f"found {artifact.description}")
    if size is None:
        size = artifact.size or (224, 224)
    elif artifact.size and tuple(size) != artifact.size:
        raise ConversionError(
            f"{deployed}: takes {artifact.size[0]}x{artifact.size[1]} images only; "
            f"`size` {size[0]} {size[1]} cannot be fed to it"
        )
    # a fixed batch is fed whole, the images repeated to fill it (inputs.in_fixed_batches)
    check_memory(spec, tuple(size), max(batch, artifact.batch or 0))
    if images is not None:
        inputs = folder_images(path_argument("images", images), tuple(size), spec.in_chans)
    else:
        inputs = random_images(batch, tuple(size), spec.in_chans, seed)
    clock.lap("read or make the images")
    return verify_models(
        reference,
        artifact,
        inputs,
        feeding(artifact, spec.in_chans, input_layout, pixels, mean, std, output),
        batch=batch,
        atol=atol,
        rtol=rtol,
        allow_tf32=allow_tf32,
        torch_source=str(torch_src),
        started=started,
        log=log,
        locate=locate,
        clock=clock,
    )


def check_torch_source(path: Path) -> None:
    """A deployed model given where the PyTorch checkpoint goes: said as such, not as a
    checkpoint that fails to unpickle."""
    what = None
    if path.is_dir() and (path / "saved_model.pb").is_file():
        what = "a SavedModel"
    elif path.suffix.lower() == ".tflite":
        what = "a .tflite file"
    elif path.name.endswith((".keras", ".weights.h5")):
        what = "a Keras file"
    if what:
        raise ConversionError(
            f"{path}: is {what}; verify takes the PyTorch checkpoint first, then the deployed model"
        )


def check_options(
    input_layout, pixels, output, size, batch, mean, std, seed=0, atol=None, rtol=None
) -> None:
    """Every option checked before anything is read: a wrong type is a TypeError naming the
    parameter, a value out of bounds a ConversionError, as the command line's are."""
    if input_layout not in (None, *CHANNEL_ORDERS):
        raise ConversionError(f"`input_layout` must be {' or '.join(CHANNEL_ORDERS)}")
    if pixels not in (None, *PIXEL_SCALES):
        raise ConversionError(f"`pixels` must be {' or '.join(PIXEL_SCALES)}")
    if output not in (None, *OUTPUT_KINDS):
        raise ConversionError(f"`output` must be {' or '.join(OUTPUT_KINDS)}")
    if size is not None:
        if not isinstance(size, (tuple, list)) or len(size) != 2 or not all(map(is_int, size)):
            raise TypeError("`size` must be two integers, height and width")
        if min(size) < 32:
            raise ConversionError("`size` must be at least 32 x 32")
    for name, value in (("batch", batch), ("seed", seed)):
        if not is_int(value):
            raise TypeError(f"`{name}` must be an integer, not {type(value).__name__}")
    if batch < 1:
        raise ConversionError("`batch` must be positive")
    if seed < 0:
        raise ConversionError("`seed` must be 0 or more")
    for name, value in (("atol", atol), ("rtol", rtol)):
        if value is None:
            continue
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise TypeError(f"`{name}` must be a number, not {type(value).__name__}")
        if not math.isfinite(value) or value < 0:
            raise ConversionError(f"`{name}` must be a finite number of 0 or more, not {value}")
    for name, values in (("mean", mean), ("std", std)):
        if values is None:
            continue
        if not isinstance(values, (tuple, list)) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
        ):
            raise TypeError(f"`{name}` must be a sequence of numbers")
        if not all(np.isfinite(values)):
            raise ConversionError(f"`{name}` must be finite numbers")
    if std is not None and min(abs(v) for v in std) == 0:
        raise ConversionError("`std` must not be 0")


def is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def comparison_bytes(spec, size: tuple[int, int]) -> int:
    """About what comparing one image of `size` holds at once: every block's output of the
    reference, the floor's model and the artifact (float64 once compared, and a difference
    beside them), the widest MLP activation, and the image in its forms."""
    h, w = size
    if spec.kind == "isotropic":
        shapes = [(spec.depths[0], spec.dims[0], (h // 16) * (w // 16))]
    else:
        shapes = [
            (depth, dim, (h // (4 << i)) * (w // (4 << i)))
            for i, (depth, dim) in enumerate(zip(spec.depths, spec.dims, strict=True))
        ]
    traced = sum((depth + 1) * dim * area for depth, dim, area in shapes)
    widest = max(4 * dim * area for _, dim, area in shapes)
    return 8 * (4 * traced + 3 * widest + 4 * h * w * spec.in_chans)


def available_memory() -> int | None:
    """Bytes the system can still give (MemAvailable), or None where it does not say."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(spec, size: tuple[int, int], batch: int) -> None:
    """Refuse a batch and size whose comparison cannot fit in memory, before any model runs:
    the process would otherwise be killed with no word said."""
    need = batch * comparison_bytes(spec, size)
    free = available_memory()
    if free is not None and need > free:
        raise ConversionError(
            f"`batch` {batch} of {size[0]}x{size[1]} images takes about {need / 1e9:,.1f} GB "
            f"to compare, {free / 1e9:,.1f} GB are available: pass a smaller `batch` or `size`"
        )


@np.errstate(all="ignore")  # NaN and Inf are counted (Tally), not warned about on stderr
def verify_models(
    model: torch.nn.Module,
    artifact: Artifact,
    inputs: Images,
    feed: Feeding,
    batch: int = 4,
    atol: float | None = None,
    rtol: float | None = None,
    allow_tf32: bool = False,
    torch_source: str = "",
    started: float | None = None,
    log: Log = quiet,
    locate: str = "on-fail",
    clock: Stopwatch | None = None,
) -> Verification:
    """verify() on models already in memory: `model`, a convnext_torch model (any dtype; it
    is copied to the precisions needed), `artifact` (converters.deploy.artifacts), `inputs` and how
    to `feed` them. Python users with a model in hand start here. A foreign artifact's blocks
    are found among its own tensors (converters.deploy.locate) when its output FAILS, where
    they say where it goes wrong; `locate="always"` finds them on a PASS too (it costs a
    second run of the first batch: for a SavedModel, freezing its graph). `clock` times the
    stages (Verification.timings)."""
    choice_argument("locate", locate, ("on-fail", "always"))
    started = time.perf_counter() if started is None else started
    clock = clock or Stopwatch()
    feed = dataclasses.replace(feed)  # the output kind may be settled below: not the caller's
    batches = inputs.batches(batch)
    first_batch = next(batches)  # the artifact runs it before any PyTorch work: a batch,
    probed, guessed = probe_output(  # size or class count it refuses is said in seconds
        model, artifact, feed, first_batch[1], lambda x: call(artifact.run, artifact, x)
    )
    clock.lap("the artifact's first batch (probed)")
    environment = numeric_environment(artifact, allow_tf32)
    precision = artifact.precision
    # The reference computes as the artifact should; the baseline is PyTorch itself one
    # precision away, whose distance from the reference is the noise floor. float64 is
    # slow on the CPU (its depthwise conv has no fast kernel: 20x float32 for ConvNeXt-T),
    # so for a float32 artifact the floor is measured on as many of the first images as
    # a fixed amount of float64 work allows (floor_images).
    # The float64 floor of a float32 artifact runs block by block, each on a float64 copy of
    # its own (torch_trace's dtype), rather than on a float64 copy of the whole model.
    floor_dtype = None
    exactly = quantized_exactly(model, artifact)
    if exactly is not None:  # its every weight known: float32 on those, held to float32's floor
        reference = baseline = exactly[0]
        precision, floor_dtype = "float32", torch.float64
    elif precision == "float64":
        reference, baseline = reference_copy(model, "float64"), reference_copy(model, "float32")
    elif precision == "float32":
        reference = baseline = reference_copy(model, "float32")
        floor_dtype = torch.float64
    else:  # quantized: float32 against PyTorch with its weights quantized the same way
        reference, baseline = reference_copy(model, "float32"), reference_copy(model, precision)
    floored_at_most = len(inputs.names)
    if precision == "float32":
        floored_at_most = floor_images(model, inputs.size, inputs.channels, floored_at_most)
    clock.lap("copy the reference to the precisions needed")
    notes = list(artifact.notes) + ([exactly[1]] if exactly else []) + list(feed.notes) + guessed
    if artifact.layout is None and feed.layout == "nhwc":
        notes.append("the artifact's input shape does not say its layout: NHWC assumed")
    tallies: dict[str, Tally] = {}
    served = Tally()
    rows: list[ImageRow] = []
    topk_same: list[bool] = []
    output_name, k, floored = None, 5, 0
    factor = FACTOR
    smallest = UNIT_ROUNDOFF.get(precision, UNIT_ROUNDOFF["float32"])
    # No float128 to measure a float64 artifact's floor against: rounding error scales with
    # the unit roundoff, so the float32 floor measured (float32 against float64) times 2^-29.
    floor_scale = (
        UNIT_ROUNDOFF["float64"] / UNIT_ROUNDOFF["float32"] if precision == "float64" else 1.0
    )

    def tolerance(floor: float) -> float:
        if rtol is not None:
            return rtol
        return float("nan") if math.isnan(floor) else factor * max(floor, smallest)

    located: Location | None = None  # a foreign artifact's points, found by value (locate)
    first_seen = None  # its first batch: given, the reference's points, the floor's
    log(f"comparing on {inputs.description}")
    for index, (names, pixels) in enumerate(itertools.chain([first_batch], batches)):
        x, given = feed.both_inputs(pixels, artifact.input_dtype)
        clock.lap("read or make the images")
        expected = torch_trace(reference, x)
        check_reference_finite(expected, names)
        clock.lap("the PyTorch reference")
        output_name = served_name(expected, feed.output)  # head, norm, a backbone's last norm
        m = min(len(names), floored_at_most - floored)
        floor = torch_trace(baseline, x[:m], floor_dtype) if m > 0 else {}
        floored += m
        clock.lap("the noise floor (PyTorch one precision away)")
        found = {}
        if artifact.traced:
            found = call(artifact.trace, artifact, given)
            clock.lap("the artifact's stage outputs")
            for name in expected:  # in the order the model computes them
                if name in found:
                    tally = tallies.setdefault(name, Tally())
                    tally.add(expected[name], channels_first(found[name]))
                    if m > 0:
                        tally.add_floor(expected[name][:m], floor[name])
        elif index == 0:  # a foreign artifact: its own tensors, on the first batch, below
            first_seen = (given, expected, floor)
        got = (
            probed
            if index == 0
            else channels_first(np.asarray(call(artifact.run, artifact, given), dtype=np.float64))
        )
        clock.lap("the artifact")
        if index == 0:  # what the hints after the verdict are tried on
            evidence = Evidence(x, got, {k: channels_first(v) for k, v in found.items()})
        want = expected[output_name]
        if feed.output == "probabilities":
            want = softmax(want)
        if got.shape != want.shape:
            raise ConversionError(
                f"{artifact.path}: gives outputs of shape {tuple(got.shape)}, the PyTorch "
                f"model {tuple(want.shape)}: another variant or class count?"
            )
        served.add(want, got)
        if m > 0:
            near = floor[output_name]
            served.add_floor(want[:m], softmax(near) if feed.output == "probabilities" else near)
        if feed.output != "features":
            k = min(5, want.shape[1])
            for name, w, g in zip(names, want, got, strict=True):
                finite = bool(np.isfinite(g).all())
                found_class = int(g.argmax()) if finite else -1  # NaN agrees with no class
                rows.append(ImageRow(name, int(w.argmax()), found_class, nan_max(abs(w - g))))
                topk_same.append(finite and set(np.argsort(-w)[:k]) == set(np.argsort(-g)[:k]))
    final = served.point(output_name, tolerance, atol or 0.0, floor_scale)
    clock.lap("compare")
    # Under a quantized artifact's tolerance, wider than what one wrong weight moves the output
    # by, a PASS says little: its blocks are compared too, each against its own floor (the
    # reference with its weights quantized the same way), where a wrong weight stands out
    # before the later blocks dilute it. (Not under a --rtol: one tolerance for every point,
    # however far into the network, is no floor of its own.)
    quantized = precision not in ("float32", "float64")
    wide = rtol is not None or quantized
    if first_seen is not None and (locate == "always" or not final.ok or quantized):
        log("locating the intermediate outputs among the artifact's own tensors")
        judge = judged(tolerance, floor_scale)
        with native_notices_silenced():  # LiteRT's INFO lines from a second interpreter
            located = locate_points(artifact, *first_seen, judge)
        clock.lap("locate the blocks among the artifact's tensors")
    elif first_seen is not None:
        notes.append(
            "intermediate outputs: a foreign artifact's blocks are located among its own "
            "tensors when its output fails (`locate` always: on a pass too)"
        )
    points = [t.point(n, tolerance, floor_scale=floor_scale) for n, t in tallies.items()]
    if located is not None:
        points = located.points
        notes += located.notes(artifact.batch or min(LOCATE_IMAGES, len(inputs.names)))
    if artifact.traced and not points:
        notes.append("its stage outputs carry no names this model has: not compared")
    first = next((p.name for p in points if not p.ok), None)
    if final.nonfinite:
        where = [inputs.names[i] for i in served.nonfinite]
        first_nan = next((p.name for p in points if p.nonfinite), None)
        notes.insert(
            0,
            f"the artifact's output holds NaN or Inf on {len(served.nonfinite)} of "
            f"{served.seen} images ({', '.join(where[:8])}"
            f"{', ...' if len(where) > 8 else ''}), where PyTorch's is finite: a FAIL"
            + (f"; first NaN or Inf at {first_nan}" if first_nan else ""),
        )
    passed = final.ok
    suspect = None  # on a PASS: a point out of its own tolerance, said in the verdict line too
    if passed and first:
        notes.append(f"{first} is out of its tolerance, the output is not")
        suspect, first = first, None
    if passed and quantized and located is not None and located.misses:
        suspect = suspect or located.misses[0].name
        notes.append(
            f"{located.misses[0].name} matches no tensor, and later points do: fused away, or "
            "an error that this wide a tolerance lets the later blocks hide (its nearest tensor "
            "above)"
        )
    elif not passed and first is None and not (located and located.unlocated):
        first = f"the served {feed.output} (every intermediate output agrees)" if points else None
    agreeing = float(np.mean([r.agree for r in rows])) if rows else 1.0
    hints, caveat = advise(
        model, evidence, feed.output, output_name, points, final, first, wide, agreeing, artifact
    )
    if suspect:  # the verdict is the output's; what a block shows is not left to the notes
        caveat = f"but {suspect} is not within its own tolerance (notes)" + (
            f"; {caveat}" if caveat else ""
        )
    clock.lap("hints")
    notes += hints
    label = feed.output  # logits, probabilities or features
    final.name = label
    tolerance = {
        "rtol": final.tolerance,
        "atol": final.atol,
        "factor": factor,
        "floor": final.floor,
        "precision": precision,
        "floor_images": min(floored, len(inputs.names)),
        "how": "given" if rtol is not None else "derived",
    }
    return Verification(
        passed=passed,
        torch_source=torch_source,
        deployed=str(artifact.path),
        artifact=artifact.description,
        inputs=inputs.description + input_words(feed, artifact.input_dtype, artifact.batch),
        output_kind=label,
        output=final,
        points=points,
        first_divergence=first,
        top1=float(np.mean([r.agree for r in rows])) if rows else None,
        topk=float(np.mean(topk_same)) if rows else None,
        k=k,
        images=rows,
        tolerance=tolerance,
        environment=environment,
        notes=notes,
        seconds=time.perf_counter() - started,
        caveat=caveat,
        timings=clock.seconds,
    )


def call(method, artifact: Artifact, x: np.ndarray):
    """artifact.run or .trace, its own errors (TensorFlow's, LiteRT's) made one line, and
    LiteRT's notice on its first run ("INFO: Created ... XNNPACK delegate") kept off the
    command line's stderr."""
    try:
        with native_notices_silenced():
            return in_fixed_batches(method, artifact.batch, x)
    except ConversionError:
        raise
    except Exception as e:  # noqa: BLE001 - TensorFlow and LiteRT raise many types
        raise rejected(artifact, x, e) from None


def floor_images(model: torch.nn.Module, size: tuple[int, int], channels: int, count: int) -> int:
    """How many of `count` images the float32 floor is measured on (FLOOR_DEPTHWISE_WORK):
    the depthwise multiply-adds of one image, counted from one float32 pass's block outputs."""
    probe = reference_copy(model, "float32")
    shapes = torch_trace(probe, np.zeros((1, channels, *size), np.float32))
    work = sum(
        value.size * block.dwconv.kernel_size[0] * block.dwconv.kernel_size[1]
        for name, value in shapes.items()
        for block in [block_named(probe, name)]
        if block is not None
    )
    affordable = int(FLOOR_DEPTHWISE_WORK // max(work, 1))
    return max(min(count, affordable), min(count, MIN_FLOOR_IMAGES))


def block_named(model: torch.nn.Module, name: str):
    """The Block that produced the trace point `name` (`stages.2.5`, `blocks.3`), or None."""
    parts = name.split(".")
    if parts[0] == "stages" and len(parts) == 3:
        return model.stages[int(parts[1])][int(parts[2])]
    if parts[0] == "blocks" and len(parts) == 2:
        return model.blocks[int(parts[1])]
    return None


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


def numeric_environment(artifact: Artifact, allow_tf32: bool) -> dict[str, str]:
    """What decides the float32 numerics here, for the record: versions, oneDNN, threads,
    and on a GPU, TensorFloat-32 (off in both frameworks unless allowed). TensorFlow is
    described where the artifact needed it; a .tflite file runs on LiteRT alone, a TF.js model
    on TF.js in Node."""
    environment = {
        "python": platform.python_version(),
        "torch": f"{torch.__version__} (reference on the CPU, {torch.get_num_threads()} threads)",
    }
    if artifact.kind == "tflite":
        environment["litert"] = package("ai-edge-litert")
        environment["device"] = f"CPU ({platform.machine()})"
        return environment
    if artifact.kind == "tfjs":
        environment["tfjs"] = artifact.runtime
        environment["device"] = f"CPU ({platform.machine()})"
        return environment
    import keras
    import tensorflow as tf

    environment["tensorflow"] = f"{tf.__version__}, oneDNN {onednn_state()}"
    environment["keras"] = f"{keras.__version__} ({keras.backend.backend()} backend)"
    threads = tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()
    environment["threads"] = f"TensorFlow {threads} (of {os.cpu_count()} CPUs)"
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        tf.config.experimental.enable_tensor_float_32_execution(allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = allow_tf32
        torch.backends.cudnn.allow_tf32 = allow_tf32
        state = "on (allowed)" if allow_tf32 else "off in both"
        environment["device"] = f"TensorFlow on {len(gpus)} GPU(s); TF32 {state}"
    else:
        environment["device"] = f"CPU ({platform.machine()})"
    return environment


def onednn_state() -> str:
    """TensorFlow uses oneDNN kernels on x86 Linux unless TF_ENABLE_ONEDNN_OPTS=0."""
    setting = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
    if setting is not None:
        return f"{'off' if setting == '0' else 'on'} (TF_ENABLE_ONEDNN_OPTS={setting})"
    return "on (default)" if platform.machine() in ("x86_64", "AMD64") else "off (default)"


def package(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"
