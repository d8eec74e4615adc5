"""inspect_file: what a checkpoint or Keras file holds, read and never written."""

from __future__ import annotations

from pathlib import Path

from converters.errors import ConversionError, choice_argument, path_argument
from converters.files.checkpoint import load_state_dict
from converters.files.destinations import KERAS_SUFFIXES, suffix_of
from converters.files.keras_files import h5_array_count, keras_spec, load_keras_model
from converters.names.layouts import LAYOUT_CHOICES
from converters.weights.accounting import check_match, expected_shapes
from converters.weights.identify import resolve_spec, spec_from_shapes, with_hidden_fields
from convnext_spec.spec import variant_names


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
