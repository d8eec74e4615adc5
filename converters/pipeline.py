"""Whole jobs, as the command line runs them, for Python users too.

    from converters import convert_file
    result = convert_file("convnext_tiny_1k_224_ema.pth", "tiny.keras")
    result = convert_file("timm.safetensors", "k.weights.h5", target="keras-applications")

Each function takes the command line's options as parameters (same names, without the
dashes), raises ConversionError with one line naming the problem, and reports what it does
through `log` (a function taking one line; the command line passes one that prints to stderr).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import convnext_torch
from converters import formats, hf, keras_applications
from converters.checkpoint import DIRECTORY_FILES, StateDict, load_state_dict
from converters.convert import (
    check_match,
    infer_spec,
    keras_model_from_state,
    keras_to_torch,
    resolve_spec,
    with_hidden_fields,
)
from converters.errors import ConversionError, choice_argument, count_argument, path_argument
from converters.export import export_destination_problem, export_model
from converters.files import (
    KERAS_SUFFIXES,
    TORCH_SUFFIXES,
    atomic_output,
    check_writable,
    h5_array_count,
    keras_spec,
    load_keras_model,
    suffix_of,
    write_hf_directory,
    write_keras,
    write_torch,
)
from converters.verification import Verification
from converters.verify import verify
from convnext_spec.spec import ModelSpec, SpecError, changes_from_variant, names, spec_from_name

LAYOUTS = ("auto", *formats.LAYOUT_NAMES)  # key layouts read
HF_FILES = ("config.json", "model.safetensors")  # what `target` hf writes
TARGETS = ("keras", "keras-applications", "official", "timm", "hf")  # what convert_file writes
SUFFIXES = {  # the files each target writes; hf: a directory
    "keras": KERAS_SUFFIXES,
    "keras-applications": (".weights.h5",),
    "official": TORCH_SUFFIXES,
    "timm": TORCH_SUFFIXES,
    "hf": (),
}

Log = Callable[[str], None]


def quiet(line: str) -> None:
    """The default `log`: say nothing."""


@dataclass
class ConversionResult:
    """What convert_file wrote."""

    source: Path
    destination: Path
    target: str  # keras, keras-applications, official or timm
    spec: ModelSpec  # the model the tensors belong to
    tensors: int
    parameters: int
    load_with: str  # a line of Python that loads the result


def convert_file(
    src: str | Path,
    dst: str | Path,
    target: str | None = None,
    layout: str = "auto",
    ema: bool = False,
    variant: str | None = None,
    num_classes: int | None = None,
    include_top: bool = True,
    force: bool = False,
    key: str | None = None,
    log: Log = quiet,
) -> ConversionResult:
    """Convert the checkpoint at `src` and write it to `dst`, every tensor accounted for.

    src: a PyTorch file (.pth/.pt/.bin, .safetensors, a Hugging Face directory) in one of
    formats.LAYOUTS (official, timm, hf, open_clip, fcmae, dinov3; `layout` "auto": detected),
    or a Keras file (.keras, or .weights.h5 with `variant`). target: "keras",
    "keras-applications", "official", "timm" or "hf" (a directory); None picks it from dst's
    suffix. ema: a training checkpoint's EMA weights. variant,
    num_classes: the model, when not read off the tensor shapes. include_top: with
    keras-applications, False writes include_top=False weights. force: overwrite dst.
    key: the entry of a training checkpoint that holds the weights, when it is none of
    "model", "state_dict" (or, with `ema`, "model_ema", "state_dict_ema", "ema").
    """
    src, dst = path_argument("src", src), path_argument("dst", dst)
    choice_argument("layout", layout, LAYOUTS)
    count_argument("num_classes", num_classes)
    target = target or target_from_suffix(dst)
    check_target(target, dst)
    if target == "hf":
        check_hf_destination(dst, force, src)
    else:
        check_destination(dst, force, src)
    if variant is not None:
        checked_spec(variant)  # a misspelt name is named before a large file is read
    if suffix_of(src, KERAS_SUFFIXES):
        if target not in ("official", "timm", "hf"):
            raise ConversionError(f"{src} is a Keras file already: `target` official, timm or hf")
        if layout != "auto" or ema or key is not None:
            raise ConversionError(
                "`layout`, `ema` and `key` describe PyTorch sources, not Keras files"
            )
        return keras_file_to_pytorch(src, dst, target, variant, num_classes, log, force)

    state = read_checkpoint(src, layout, ema, key, log)
    state, spec = model_spec(state, variant, num_classes, log)
    if target == "keras":
        return pytorch_to_keras_file(state, spec, dst, log, force)
    if target == "keras-applications":
        return pytorch_to_keras_applications(state, spec, dst, include_top, log, force)
    with torch.device("meta"):  # names and shapes only
        model = convnext_torch.create_model(spec)
    check_match(state, {k: tuple(v.shape) for k, v in model.state_dict().items()})
    return write_pytorch(state.tensors, spec, src, dst, target, log, force)


def read_checkpoint(
    path: Path,
    layout: str = "auto",
    ema: bool = False,
    key: str | None = None,
    log: Log = quiet,
) -> StateDict:
    """The checkpoint's StateDict, saying what was found and any note on it."""
    log(f"reading {path}")
    state = load_state_dict(path, layout=layout, ema=ema, key=key)
    where = f" under {state.wrapper!r}" if state.wrapper else ""
    dtypes = ", ".join(state.dtypes)
    log(f"found {len(state.tensors)} tensors ({dtypes}){where}, {state.layout} layout")
    for note in state_notes(state, ema):
        log(note)
    return state


def state_notes(state: StateDict, ema: bool) -> list[str]:
    """What a user should know about a checkpoint beyond its tensors."""
    notes = []
    if state.has_ema and not ema:
        notes.append(
            f"note: the file also holds EMA weights ({state.ema_key!r}); `ema` converts those "
            "instead"
        )
    if state.outside_backbone:
        groups = Counter(key.split(".")[0] for key in state.outside_backbone)
        listed = ", ".join(f"{name}.* ({count})" for name, count in groups.items())
        notes.append(f"skipped {len(state.outside_backbone)} tensors outside 'backbone.': {listed}")
    notes += [f"note: {note}" for note in state.notes]
    eps = (state.config or {}).get("layer_norm_eps")
    if isinstance(eps, (int, float)) and eps != 1e-6:
        notes.append(
            f"note: config.json gives the final LayerNorm eps {eps:g}; these models use 1e-6, "
            "which moves logits by about 1e-6 / (2 x variance of the pooled features) relative "
            "(5e-7 measured on random ConvNeXt-T weights)"
        )
    if state.nonfinite:
        names_ = ", ".join(state.nonfinite[:4]) + (", ..." if len(state.nonfinite) > 4 else "")
        count = f"{len(state.nonfinite)} tensor{'s' if len(state.nonfinite) > 1 else ''}"
        notes.append(f"warning: {count} with NaN or Inf ({names_}); kept as they are")
    return notes


def model_spec(
    state: StateDict, variant: str | None, num_classes: int | None, log: Log = quiet
) -> tuple[StateDict, ModelSpec]:
    """resolve_spec, saying what it inferred or used; with `num_classes` 0 on a checkpoint
    that has a head, the state without the head (a feature extractor), saying so."""
    spec = resolve_spec(state, variant, num_classes)
    how = "using" if variant or num_classes is not None else "inferred"
    shapes = "" if how == "using" else " (from the tensor shapes)"
    log(f"{how} {spec.name}: {describe(spec)}{shapes}")
    head = [key for key in state.tensors if key.startswith("head.")]
    if spec.kind != "backbone" and spec.num_classes == 0:
        if head:
            classes = state.tensors["head.weight"].shape[0] if "head.weight" in head else "?"
            state = dataclasses.replace(
                state, tensors={k: v for k, v in state.tensors.items() if k not in head}
            )
            log(
                f"left out the head ({', '.join(head)}: {classes} classes): the model outputs "
                "the pooled features"
            )
        else:
            log("note: no classifier (head.* absent): the model outputs the pooled features")
    if spec.kind == "backbone":
        log(
            "note: a detection backbone (norm{i} per stage, no final norm or head): "
            "built as ConvNeXtBackbone"
        )
    return state, spec


def describe(spec: ModelSpec) -> str:
    """`num_classes=10, in_chans=3` and whatever else differs from the named variant."""
    arguments = build_arguments(spec)
    return ", ".join(f"{k}={v}" for k, v in arguments.items())


def build_arguments(spec: ModelSpec) -> dict:
    """create_model / create_backbone arguments that, with spec.name, build `spec`."""
    first = ("out_indices",) if spec.kind == "backbone" else ("num_classes",)
    arguments = {key: getattr(spec, key) for key in (*first, "in_chans")}
    for key, value in changes_from_variant(spec).items():
        if key not in ("num_classes", "out_indices"):
            arguments.setdefault(key, value)
    return arguments


def pytorch_to_keras_file(
    state: StateDict, spec: ModelSpec, dst: Path, log: Log = quiet, force: bool = False
) -> ConversionResult:
    model, report = keras_model_from_state(state, spec)
    for line in dtype_notes(report.source_dtypes, report.target_dtype):
        log(line)
    log(f"writing {dst}")
    write_keras(model, dst, force)
    log(f"wrote {dst}: {report.tensors} tensors, {report.parameters:,} parameters")
    if dst.name.endswith(".keras"):
        load_with = f"import convnext_tf, keras; keras.models.load_model({str(dst)!r})"
    else:
        build = "create_backbone" if spec.kind == "backbone" else "create_model"
        arguments = "".join(f", {k}={v!r}" for k, v in build_arguments(spec).items())
        load_with = f"convnext_tf.{build}({spec.name!r}{arguments}).load_weights({str(dst)!r})"
    return ConversionResult(
        Path(state.source), dst, "keras", spec, report.tensors, report.parameters, load_with
    )


def pytorch_to_keras_applications(
    state: StateDict,
    spec: ModelSpec,
    dst: Path,
    include_top: bool = True,
    log: Log = quiet,
    force: bool = False,
) -> ConversionResult:
    model = keras_applications.build(spec, include_top)
    skipped = keras_applications.assign(state, model, spec.depths, include_top)
    if skipped:
        log(f"skipped (no top): {', '.join(skipped)}")
    log(f"writing {dst}")
    write_keras(model, dst, force)
    name = keras_applications.CONSTRUCTORS[spec.name]
    top = (
        f"classes={spec.num_classes}, classifier_activation=None"
        if include_top
        else "include_top=False, pooling='avg'"
    )
    log(f"wrote {dst}: {len(model.weights)} tensors for keras.applications.{name}")
    load_with = (
        f"keras.applications.{name}(weights={str(dst)!r}, {top}); it takes [0, 255] pixels "
        "and normalises them itself"
    )
    parameters = sum(int(np.prod(v.shape)) for v in model.weights)
    return ConversionResult(
        Path(state.source),
        dst,
        "keras-applications",
        spec,
        len(model.weights),
        parameters,
        load_with,
    )


def keras_file_to_pytorch(
    src: Path,
    dst: Path,
    layout: str,
    variant: str | None = None,
    num_classes: int | None = None,
    log: Log = quiet,
    force: bool = False,
) -> ConversionResult:
    log(f"reading {src}")
    spec = None
    if variant is not None:
        overrides = {} if num_classes is None else {"num_classes": num_classes}
        spec = checked_spec(variant, **overrides)
    model = load_keras_model(src, spec)
    spec = keras_spec(model)
    tensors = {k: v.numpy() for k, v in keras_to_torch(model).items()}
    log(f"read {spec.name}, {describe(spec)}: {len(tensors)} tensors")
    return write_pytorch(tensors, spec, src, dst, layout, log, force)


def write_pytorch(
    tensors: dict,
    spec: ModelSpec,
    src: Path,
    dst: Path,
    layout: str,
    log: Log = quiet,
    force: bool = False,
) -> ConversionResult:
    if layout == "hf":
        hf.check_representable(spec)
    renamed, notes = formats.from_official(tensors, layout, spec)
    log(f"writing {dst} ({', '.join([f'{layout} layout', *notes])})")
    if layout == "hf":
        write_hf_directory(renamed, hf.config(spec), dst, force)
        reader = f"transformers.{hf.architecture(spec)}.from_pretrained({str(dst)!r})"
    else:
        write_torch(renamed, dst, force)
        safetensors = dst.name.endswith(".safetensors")
        reader = "safetensors.torch.load_file" if safetensors else "torch.load"
    parameters = sum(int(v.size) for v in renamed.values())
    log(f"wrote {dst}: {len(renamed)} tensors, {parameters:,} parameters")
    return ConversionResult(Path(src), dst, layout, spec, len(renamed), parameters, reader)


def dtype_notes(source_dtypes: tuple[str, ...], target_dtype: str) -> list[str]:
    notes = []
    widened = [d for d in source_dtypes if d in ("float16", "bfloat16")]
    if widened:
        notes.append(f"widened {', '.join(widened)} to {target_dtype} (exact)")
    if "float64" in source_dtypes and target_dtype != "float64":
        notes.append(f"rounded float64 to {target_dtype}")
    return notes


def target_from_suffix(dst: Path) -> str:
    if suffix_of(dst, KERAS_SUFFIXES):
        return "keras"
    if suffix_of(dst, TORCH_SUFFIXES):
        return "official"
    known = ", ".join(KERAS_SUFFIXES + TORCH_SUFFIXES)
    raise ConversionError(
        f"{dst}: output must end in one of {known}, or be a directory with `target` hf"
    )


def check_target(target: str, dst: Path) -> None:
    if target not in TARGETS:
        raise ConversionError(f"unknown `target` {target!r}; known: {', '.join(TARGETS)}")
    if target == "hf":
        if suffix_of(dst, KERAS_SUFFIXES + TORCH_SUFFIXES):
            raise ConversionError(f"{dst}: `target` hf writes a directory, not a file")
        return
    if not suffix_of(dst, SUFFIXES[target]):
        raise ConversionError(
            f"{dst}: `target` {target} writes {' or '.join(SUFFIXES[target])} files"
        )


def check_hf_destination(dst: Path, force: bool, src: Path) -> None:
    """Before any work: nothing at `dst`, or with `force` a Hugging Face directory (one with a
    config.json), never the source itself, and files can be created beside it."""
    if os.path.lexists(dst):
        if dst.resolve() == src.resolve():
            raise ConversionError(f"{dst}: is the source; write the conversion elsewhere")
        if not force:
            raise ConversionError(f"{dst}: exists; pass `force` to overwrite it")
        if not (dst.is_dir() and (dst / "config.json").is_file()) or dst.is_symlink():
            raise ConversionError(
                f"{dst}: exists and is not a Hugging Face directory; `force` replaces only those"
            )
        others = sorted(p.name for p in dst.iterdir() if p.name not in HF_FILES)
        if others:
            listed = ", ".join(others[:4]) + (", ..." if len(others) > 4 else "")
            raise ConversionError(
                f"{dst}: holds files this command does not write ({listed}); `force` would "
                "delete them: write elsewhere, or remove them first"
            )
    if not dst.parent.is_dir():
        raise ConversionError(f"{dst.parent}: no such directory")
    check_writable(dst)


def check_destination(dst: Path, force: bool, src: Path | None = None) -> None:
    """Before any work: `dst` may be written (its directory exists and takes new files), and
    nothing is at `dst` (a dangling symlink counts) unless `force`, nor ever `src` itself, by
    any name: the file would be replaced by its conversion (a training checkpoint would lose
    its optimizer state and epoch)."""
    if dst.is_dir():
        raise ConversionError(f"{dst}: is a directory")
    if os.path.lexists(dst):
        if src is not None and is_source(src, dst):
            named = "" if dst == src else f" ({src})"
            raise ConversionError(f"{dst}: is the source{named}; write the conversion elsewhere")
        if not force:
            raise ConversionError(f"{dst}: exists; pass `force` to overwrite it")
    if not dst.parent.is_dir():
        raise ConversionError(f"{dst.parent}: no such directory")
    check_writable(dst)


def is_source(src: Path, dst: Path) -> bool:
    """Whether `dst` is `src` or, for a Hugging Face directory, the weights file read in it."""
    sources = [src / name for name in DIRECTORY_FILES] if src.is_dir() else [src]
    for source in sources:
        try:
            if os.path.samefile(source, dst):
                return True
        except OSError:  # either missing (a dangling symlink at dst)
            pass
    return False


def checked_spec(variant: str, **overrides) -> ModelSpec:
    """spec_from_name, with a ConversionError for an unknown name or argument."""
    try:
        return spec_from_name(variant, **overrides)
    except SpecError as e:
        raise ConversionError(str(e)) from None


# --- verify and export ---------------------------------------------------------------------


def verify_file(
    torch_src: str | Path,
    deployed: str | Path,
    report: str | Path | None = None,
    json_path: str | Path | None = None,
    force: bool = False,
    log: Log = quiet,
    **options,
) -> Verification:
    """converters.verify.verify: check a deployed model (SavedModel, .tflite, Keras file)
    against a PyTorch checkpoint; the options are verify()'s. `report` (an HTML page) and
    `json_path` are checked before anything runs, as every output is (nothing replaced
    without `force`, never a directory, never one of the inputs), and written atomically
    once the verdict is in."""
    sources = [path_argument("torch_src", torch_src), path_argument("deployed", deployed)]
    if options.get("images") is not None:
        sources.append(path_argument("images", options["images"]))
    choice_argument("layout", options.get("layout", "auto"), LAYOUTS)
    count_argument("num_classes", options.get("num_classes"))
    outputs = [
        (name, path_argument(name, p))
        for name, p in (("report", report), ("json_path", json_path))
        if p is not None
    ]
    check_report_destinations(outputs, force, sources)
    result = verify(torch_src, deployed, log=log, **options)
    for name, path in outputs:
        (write_report if name == "report" else write_json)(result, path, force)
        log(f"wrote {path}")
    return result


def check_report_destinations(
    outputs: list[tuple[str, Path]], force: bool, sources: list[Path]
) -> None:
    """Before the verification starts, so that a place that cannot be written costs no
    minutes: each output path is no directory, none of the inputs (the checkpoint, the
    artifact or anything in it, the pictures), not another output, in a directory that takes
    new files, and holds nothing unless `force`, which replaces only a regular file (never a
    symlink, a device or a FIFO, which a report would turn into a plain file)."""
    places = input_places(sources)
    seen: dict[Path, str] = {}
    for name, path in outputs:
        if path.is_dir():
            raise ConversionError(f"{path}: is a directory; `{name}` takes a file path")
        if is_input(path, places):
            raise ConversionError(f"{path}: is one of verify's inputs; write `{name}` elsewhere")
        key = path.parent.resolve() / path.name
        if key in seen:
            raise ConversionError(f"{path}: given to both `{seen[key]}` and `{name}`")
        seen[key] = name
        if os.path.lexists(path):
            if not force:
                raise ConversionError(f"{path}: exists; pass `force` to overwrite it")
            if path.is_symlink() or not path.is_file():
                raise ConversionError(
                    f"{path}: exists and is not a regular file; `force` replaces only those"
                )
        if not path.parent.is_dir():
            raise ConversionError(f"{path.parent}: no such directory")
        check_writable(path)


def input_places(sources: list[Path]) -> tuple[set[str], set[tuple[int, int]]]:
    """Every directory an input holds (real paths, through symlinks: a SavedModel whose
    variables/ is a link elsewhere) and every file it holds (device and inode, whatever its
    name): where no output may be written."""
    directories: set[str] = set()
    files: set[tuple[int, int]] = set()
    for source in sources:
        if not source.is_dir():
            with contextlib.suppress(OSError):
                found = os.stat(source)
                files.add((found.st_dev, found.st_ino))
            continue
        for root, subdirectories, file_names in os.walk(source, followlinks=True):
            real = os.path.realpath(root)
            if real in directories:  # a link back up the tree: walked already
                subdirectories[:] = []
                continue
            directories.add(real)
            for name in file_names:
                with contextlib.suppress(OSError):
                    found = os.stat(os.path.join(root, name))
                    files.add((found.st_dev, found.st_ino))
    return directories, files


def is_input(path: Path, places: tuple[set[str], set[tuple[int, int]]]) -> bool:
    """Whether writing `path` would write an input (input_places) or into one."""
    directories, files = places
    if os.path.realpath(path.parent) in directories:
        return True
    try:
        found = os.stat(path)
    except OSError:
        return False
    return (found.st_dev, found.st_ino) in files


def export_file(
    src: str | Path,
    dst: str | Path,
    quantize: str | None = None,
    layout: str = "auto",
    ema: bool = False,
    variant: str | None = None,
    num_classes: int | None = None,
    key: str | None = None,
    force: bool = False,
    log: Log = quiet,
) -> str:
    """A PyTorch checkpoint (as convert_file reads it) or a Keras file, exported to `dst`: a
    SavedModel directory, or a .tflite file when dst ends in .tflite (`quantize`: float16 or
    dynamic). Both carry the `stages` signature that `convnext verify` localises with.
    Returns what was written, in words."""
    src, dst = path_argument("src", src), path_argument("dst", dst)
    choice_argument("layout", layout, LAYOUTS)
    count_argument("num_classes", num_classes)
    problem = export_destination_problem(dst)
    if problem:
        raise ConversionError(problem)
    if dst.exists() and not force:
        raise ConversionError(f"{dst}: exists; pass `force` to overwrite it")
    if not dst.parent.is_dir():
        raise ConversionError(f"{dst.parent}: no such directory")
    check_writable(dst)
    if variant is not None:
        checked_spec(variant)
    if src.suffix.lower() == ".tflite" or (src / "saved_model.pb").is_file():
        raise ConversionError(
            f"{src}: a deployed model already; export reads PyTorch checkpoints and Keras files"
        )
    if suffix_of(src, KERAS_SUFFIXES):
        if layout != "auto" or ema or key is not None:
            raise ConversionError(
                "`layout`, `ema` and `key` describe PyTorch sources, not Keras files"
            )
        if src.name.endswith(".keras") and (variant is not None or num_classes is not None):
            raise ConversionError(
                f"{src}: a .keras file records its model; `variant` and `num_classes` are for "
                ".weights.h5 files"
            )
        classes = {} if num_classes is None else {"num_classes": num_classes}
        spec = checked_spec(variant, **classes) if variant else None
        model = load_keras_model(src, spec)
    else:
        state = read_checkpoint(src, layout, ema, key, log)
        state, spec = model_spec(state, variant, num_classes, log)
        model, _ = keras_model_from_state(state, spec)
    log(f"writing {dst}")
    written = export_model(model, dst, quantize=quantize, force=force, log=log)
    log(f"wrote {dst}: {written}")
    return written


# --- inspect and variants ------------------------------------------------------------------


def inspect_file(
    path: str | Path, layout: str = "auto", ema: bool = False, key: str | None = None
) -> list[tuple]:
    """What a checkpoint or Keras file holds, as (label, value) rows; writes nothing."""
    path = path_argument("path", path)
    choice_argument("layout", layout, LAYOUTS)
    if suffix_of(path, KERAS_SUFFIXES):
        return inspect_keras(path)
    state = load_state_dict(path, layout=layout, ema=ema, key=key)
    rows = [("file", str(path)), ("layout", state.layout)]
    if state.wrapper:
        rows.append(("weights", f"under {state.wrapper!r}"))
    if state.skipped:
        rows.append(("not weights", ", ".join(state.skipped)))
    if state.has_ema and not ema:
        rows.append(("EMA weights", f"under {state.ema_key!r}: `ema` converts them instead"))
    if state.outside_backbone:
        rows.append(("not backbone", f"{len(state.outside_backbone)} tensors (neck, heads)"))
    try:
        spec = infer_spec(state)
        try:
            spec = with_hidden_fields(spec, state.source)  # SimpleNorm vs RMSNorm, eps
        except ConversionError:
            pass  # no named variant: said below
        variant = (
            spec.name
            if spec.name in names()
            else (f"unknown (depths {spec.depths}, dims {spec.dims})")
        )
        if spec.kind == "backbone":
            classes = f"none: a detection backbone, out_indices {spec.out_indices}"
        else:
            classes = str(spec.num_classes) if spec.num_classes else "0 (no head)"
        rows += [
            ("variant", variant),
            ("classes", classes),
            ("input channels", str(spec.in_chans)),
            ("layer scale", "yes" if spec.has_layer_scale else "no"),
        ]
    except ConversionError as e:
        rows.append(("variant", f"not inferred: {e}"))
    rows.append(("dtype", ", ".join(state.dtypes)))
    rows.append(("tensors", str(len(state.tensors))))
    rows.append(("parameters", f"{sum(int(v.size) for v in state.tensors.values()):,}"))
    rows += [("note", note) for note in state.notes]
    if state.nonfinite:
        rows.append(("NaN/Inf in", ", ".join(state.nonfinite)))
    if state.config and "layer_norm_eps" in state.config:
        rows.append(
            ("config.json", f"layer_norm_eps {state.config['layer_norm_eps']} (final norm)")
        )
    return rows


def inspect_keras(path: Path) -> list[tuple]:
    if path.name.endswith(".weights.h5"):
        if not path.is_file():
            raise ConversionError(f"{path}: no such file")
        return [
            ("file", f"{path} (Keras weights; the variant is not recorded)"),
            ("arrays", str(h5_array_count(path))),
        ]
    model = load_keras_model(path)
    spec = keras_spec(model)
    return [
        ("file", f"{path} (Keras model)"),
        ("variant", spec.name),
        ("classes", str(spec.num_classes)),
        ("dtype", model.dtype_policy.variable_dtype),
        ("tensors", str(len(model.weights))),
        ("parameters", f"{model.count_params():,}"),
    ]


def write_report(result: Verification, path: str | Path, force: bool = False) -> None:
    """`result` as one self-contained HTML page (converters.report), written atomically;
    an existing file is replaced only with `force`."""
    write_text(render_report(result), Path(path), force)


def write_json(result: Verification, path: str | Path, force: bool = False) -> None:
    write_text(result.to_json() + "\n", Path(path), force)


def render_report(result: Verification) -> str:
    from converters.report import render_html

    return render_html(result)


def write_text(text: str, path: Path, force: bool = False) -> None:
    """Through atomic_output: without `force` nothing is replaced, even a file that appeared
    while the verification ran."""
    data = text.encode()
    try:
        with atomic_output(path, force, len(data), directories=False) as tmp:
            with open(tmp, "wb") as f:
                f.write(data)
    except IsADirectoryError:
        raise ConversionError(
            f"{path}: became a directory while verify ran; not replaced"
        ) from None
