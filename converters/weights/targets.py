"""Each target convert writes, from tensors already in the official layout: a Keras file, a
keras.applications weights file, or a PyTorch file in the official, timm, Hugging Face or
torchvision layout.
Each returns a ConversionResult with the line of Python that loads what was written."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from converters.errors import Log, quiet
from converters.files.checkpoint import StateDict
from converters.files.keras_files import keras_spec, load_keras_model
from converters.files.writers import write_hf_directory, write_keras, write_torch
from converters.names import hf, layouts, torchvision
from converters.weights import keras_applications
from converters.weights.convert import keras_model_from_state, keras_to_torch
from converters.weights.identify import build_arguments, checked_spec, describe
from convnext_spec.spec import ModelSpec


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
    if layout == "torchvision":
        torchvision.check_representable(spec)
    renamed, notes = layouts.from_official(tensors, layout, spec)
    log(f"writing {dst} ({', '.join([f'{layout} layout', *notes])})")
    if layout == "hf":
        write_hf_directory(renamed, hf.config(spec), dst, force)
        reader = f"transformers.{hf.architecture(spec)}.from_pretrained({str(dst)!r})"
    else:
        write_torch(renamed, dst, force)
        safetensors = dst.name.endswith(".safetensors")
        reader = "safetensors.torch.load_file" if safetensors else "torch.load"
        if layout == "torchvision":
            reader = f"{torchvision.builder(spec)}.load_state_dict({reader}({str(dst)!r}))"
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
