"""Whole jobs, as the command line runs them, for Python users too.

    from converters import convert_file
    result = convert_file("convnext_tiny_1k_224_ema.pth", "tiny.keras")
    result = convert_file("timm.safetensors", "k.weights.h5", target="keras-applications")

Each function takes the command line's options as parameters (same names, without the
dashes), raises ConversionError with one line naming the problem, and reports what it does
through `log` (a function taking one line; the command line passes one that prints to stderr).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from converters.deploy.export import export_model
from converters.deploy.report import write_json, write_report
from converters.deploy.result import Verification
from converters.deploy.verify import verify
from converters.errors import (
    ConversionError,
    Log,
    choice_argument,
    count_argument,
    path_argument,
    quiet,
)
from converters.files.checkpoint import load_state_dict
from converters.files.destinations import (
    KERAS_SUFFIXES,
    check_destination,
    check_hf_destination,
    check_report_destinations,
    check_target,
    check_writable,
    export_destination_problem,
    suffix_of,
    target_from_suffix,
)
from converters.files.keras_files import h5_array_count, keras_spec, load_keras_model
from converters.names.layouts import LAYOUT_CHOICES, WRITTEN_LAYOUTS
from converters.weights.applications_files import is_applications_file, read_applications
from converters.weights.convert import check_match, expected_shapes, keras_model_from_state
from converters.weights.identify import (
    checked_spec,
    model_spec,
    read_state,
    resolve_spec,
    spec_from_shapes,
    with_hidden_fields,
)
from converters.weights.targets import (
    ConversionResult,
    keras_file_to_pytorch,
    pytorch_to_keras_applications,
    pytorch_to_keras_file,
    write_pytorch,
)
from convnext_spec.spec import variant_names


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
    prefix: str | None = None,
) -> ConversionResult:
    """Convert the checkpoint at `src` and write it to `dst`, every tensor accounted for.

    src: a PyTorch file (.pth/.pt/.bin, .safetensors, a Hugging Face directory) in one of
    LAYOUT_NAMES (official, timm, hf, open_clip, fcmae, dinov3, torchvision, mmpretrain;
    `layout` "auto": detected), or a Keras file (.keras, or .weights.h5 with `variant`).
    target: "keras", "keras-applications", "official", "timm", "torchvision" or "hf" (a
    directory); None picks it from dst's suffix. ema: a training checkpoint's EMA weights.
    variant, num_classes: the model, when not read off the tensor shapes. include_top: with
    keras-applications, False writes include_top=False weights. force: overwrite dst.
    key: the entry of a training checkpoint that holds the weights, when it is none of
    "model", "state_dict" (or, with `ema`, "model_ema", "state_dict_ema", "ema"). prefix: a
    prefix every key carries (a training wrapper's attribute, "model." say), removed; without
    it, one that alone makes the keys a known layout is found and removed.
    """
    src, dst = path_argument("src", src), path_argument("dst", dst)
    choice_argument("layout", layout, LAYOUT_CHOICES)
    count_argument("num_classes", num_classes)
    target = target or target_from_suffix(dst)
    check_target(target, dst)
    if target == "hf":
        check_hf_destination(dst, force, src)
    else:
        check_destination(dst, force, src)
    if variant is not None:
        checked_spec(variant)  # a misspelt name is named before a large file is read
    applications = is_applications_file(src)  # .weights.h5, .keras or a legacy .h5
    if suffix_of(src, KERAS_SUFFIXES) or applications:
        if target not in WRITTEN_LAYOUTS:
            raise ConversionError(
                f"{src} is a Keras file already: `target` {', '.join(WRITTEN_LAYOUTS)}"
            )
        if layout != "auto" or ema or key is not None or prefix is not None:
            raise ConversionError(
                "`layout`, `ema`, `key` and `prefix` describe PyTorch sources, not Keras files"
            )
        if not applications:
            return keras_file_to_pytorch(src, dst, target, variant, num_classes, log, force)
        state = read_applications(src, variant, log)
    else:
        state = read_state(src, layout, ema, key, log, prefix)
    state, spec = model_spec(state, variant, num_classes, log)
    if target == "keras":
        return pytorch_to_keras_file(state, spec, dst, log, force)
    if target == "keras-applications":
        return pytorch_to_keras_applications(state, spec, dst, include_top, log, force)
    check_match(state, expected_shapes(spec))
    result = write_pytorch(state.tensors, spec, src, dst, target, log, force)
    for note in state.notes if applications else ():  # how to feed it, after the conversion
        log(f"note: {note}")
    return result


# --- verify and export ---------------------------------------------------------------------


def verify_file(
    torch_src: str | Path,
    deployed: str | Path,
    report: str | Path | None = None,
    json_path: str | Path | None = None,
    force: bool = False,
    log: Log = quiet,
    wording: Callable[[str], str] | None = None,
    **options,
) -> Verification:
    """converters.deploy.verify.verify: check a deployed model (SavedModel, .tflite, Keras file)
    against a PyTorch checkpoint; the options are verify()'s. `report` (an HTML page) and
    `json_path` are checked before anything runs, as every output is (nothing replaced
    without `force`, never a directory, never one of the inputs), and written atomically
    once the verdict is in. `wording` rewrites the `parameter` names in the report's text
    (the command line passes its own, so that the page names its flags)."""
    sources = [path_argument("torch_src", torch_src), path_argument("deployed", deployed)]
    if options.get("images") is not None:
        sources.append(path_argument("images", options["images"]))
    choice_argument("layout", options.get("layout", "auto"), LAYOUT_CHOICES)
    count_argument("num_classes", options.get("num_classes"))
    outputs = [
        (name, path_argument(name, p))
        for name, p in (("report", report), ("json_path", json_path))
        if p is not None
    ]
    check_report_destinations(outputs, force, sources)
    result = verify(torch_src, deployed, log=log, **options)
    for name, path in outputs:
        if name == "report":
            write_report(result, path, force, wording)
        else:
            write_json(result, path, force)
        log(f"wrote {path}")
    return result


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
    prefix: str | None = None,
) -> str:
    """A PyTorch checkpoint (as convert_file reads it) or a Keras file, exported to `dst`: a
    SavedModel directory, or a .tflite file when dst ends in .tflite (`quantize`: float16 or
    dynamic). Both carry the `stages` signature that `convnext verify` localises with.
    Returns what was written, in words."""
    src, dst = path_argument("src", src), path_argument("dst", dst)
    choice_argument("layout", layout, LAYOUT_CHOICES)
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
        if layout != "auto" or ema or key is not None or prefix is not None:
            raise ConversionError(
                "`layout`, `ema`, `key` and `prefix` describe PyTorch sources, not Keras files"
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
        state = read_state(src, layout, ema, key, log, prefix)
        state, spec = model_spec(state, variant, num_classes, log)
        model, _ = keras_model_from_state(state, spec)
        del state  # the Keras model holds a copy: not kept through the conversion's peak
    log(f"writing {dst}")
    written = export_model(model, dst, quantize=quantize, force=force, log=log)
    log(f"wrote {dst}: {written}")
    return written


# --- inspect and variants ------------------------------------------------------------------


def inspect_file(
    path: str | Path,
    layout: str = "auto",
    ema: bool = False,
    key: str | None = None,
    prefix: str | None = None,
) -> list[tuple]:
    """What a checkpoint or Keras file holds, as (label, value) rows; writes nothing."""
    path = path_argument("path", path)
    choice_argument("layout", layout, LAYOUT_CHOICES)
    if suffix_of(path, KERAS_SUFFIXES):
        return inspect_keras(path)
    state = load_state_dict(path, layout=layout, ema=ema, key=key, prefix=prefix)
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
        spec = spec_from_shapes(state)
        try:
            spec = with_hidden_fields(spec, state.source)  # SimpleNorm vs RMSNorm, eps
        except ConversionError:
            pass  # no named variant: said below
        variant = (
            spec.name
            if spec.name in variant_names()
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
        try:  # convert's own check: inspect never calls readable what convert refuses
            check_match(state, expected_shapes(resolve_spec(state)))
        except ConversionError as e:
            rows.append(("converts", f"no: {e}"))
    except ConversionError as e:
        rows.append(("variant", f"not inferred: {e}"))
    rows.append(("dtype", ", ".join(state.dtypes)))
    rows.append(("tensors", str(len(state.tensors))))
    rows.append(("parameters", f"{sum(int(v.size) for v in state.tensors.values()):,}"))
    rows += [("note", note) for note in state.notes]
    if state.nonfinite:
        rows.append(("NaN/Inf in", ", ".join(state.nonfinite)))
    if state.config and "layer_norm_eps" in state.config and "norm.weight" in state.tensors:
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
