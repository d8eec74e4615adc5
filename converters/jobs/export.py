"""export_file: a checkpoint or Keras file exported to a SavedModel or a .tflite file."""

from __future__ import annotations

from pathlib import Path

from converters.deploy.export import export_model
from converters.errors import (
    ConversionError,
    Log,
    check_keras_source_options,
    choice_argument,
    count_argument,
    path_argument,
    quiet,
)
from converters.files.destinations import (
    KERAS_SUFFIXES,
    check_writable,
    export_destination_problem,
    suffix_of,
)
from converters.files.keras_files import load_keras_model
from converters.names.layouts import LAYOUT_CHOICES
from converters.weights.convert import keras_model_from_state
from converters.weights.identify import checked_spec, model_spec, read_state


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
        check_keras_source_options(layout, ema, key, prefix)
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
