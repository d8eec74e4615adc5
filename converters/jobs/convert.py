"""convert_file: a checkpoint converted to another layout or framework, every tensor accounted."""

from __future__ import annotations

from pathlib import Path

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
    check_destination,
    check_hf_destination,
    check_target,
    suffix_of,
    target_from_suffix,
)
from converters.names.layouts import LAYOUT_CHOICES, WRITTEN_LAYOUTS
from converters.weights.accounting import check_match, expected_shapes
from converters.weights.applications_files import is_applications_file, read_applications
from converters.weights.identify import checked_spec, model_spec, read_state
from converters.weights.targets import (
    ConversionResult,
    keras_file_to_pytorch,
    pytorch_to_keras_applications,
    pytorch_to_keras_file,
    write_pytorch,
)


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
        check_keras_source_options(layout, ema, key, prefix)
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
