"""Which model a checkpoint is: the ModelSpec read off the tensor shapes (`spec_from_shapes`,
completed from the named variant they fit by `infer_spec`), or
resolved against a named variant and the user's options (`resolve_spec`), with what only a
named variant can tell (SimpleNorm vs RMSNorm, eps); and a checkpoint read as such a model,
saying what was found (`read_state`, `model_spec`)."""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from converters.errors import ConversionError, Log, quiet
from converters.files.checkpoint import StateDict, load_state_dict
from convnext_spec.spec import (
    HIDDEN_FIELDS,
    ModelSpec,
    SpecError,
    as_backbone,
    changes_from_variant,
    name_of,
    spec_from_name,
    variants_like,
)


def read_state(
    path: Path,
    layout: str = "auto",
    ema: bool = False,
    key: str | None = None,
    log: Log = quiet,
    prefix: str | None = None,
) -> StateDict:
    """The checkpoint's StateDict, saying what was found and any note on it."""
    log(f"reading {path}")
    state = load_state_dict(path, layout=layout, ema=ema, key=key, prefix=prefix)
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
    final_norm = "norm.weight" in state.tensors  # a backbone's norms are 1e-6 in transformers
    if isinstance(eps, (int, float)) and eps != 1e-6 and final_norm:
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


def checked_spec(variant: str, **overrides) -> ModelSpec:
    """spec_from_name, with a ConversionError for an unknown name or argument."""
    try:
        return spec_from_name(variant, **overrides)
    except SpecError as e:
        raise ConversionError(str(e)) from None


def infer_spec(state: StateDict) -> ModelSpec:
    """The model a checkpoint is, as `convnext convert` infers it: the spec its shapes show,
    completed by the one named variant they fit with what no tensor records (RMSNorm or
    SimpleNorm, the norms' eps). Raises ConversionError, as the command line refuses, when the
    shapes fit no named variant (timm's test_convnext: its tanh GELU and eps 1e-5 are in no
    tensor, and a model built from its shapes alone is off by 1e-4) or several."""
    return with_hidden_fields(spec_from_shapes(state), state.source)


def spec_from_shapes(state: StateDict) -> ModelSpec:
    """The spec of the model an official-layout state_dict belongs to, read off its keys and
    shapes (hierarchical V1 or V2, detection backbone, or isotropic). Its depths and dims may
    name no variant, and what no tensor records (norm eps, RMSNorm vs SimpleNorm) is the
    defaults': infer_spec and resolve_spec complete it from a named variant."""
    tensors = state.tensors
    isotropic = "stem.weight" in tensors
    stem = "stem.weight" if isotropic else "downsample_layers.0.0.weight"
    if stem not in tensors:
        sample = ", ".join(list(tensors)[:3]) or "no tensors at all"
        official = state.layout == "official"
        named = "" if official else f" (its official name; read as the {state.layout} layout)"
        raise ConversionError(
            f"{state.source}: not a whole ConvNeXt state_dict: no stem {stem}{named} "
            f"(found {sample})"
        )
    stem_convs = [stem] if isotropic else stem_conv_keys(tensors)
    downsamples = [] if isotropic else [f"downsample_layers.{i}.1.weight" for i in (1, 2, 3)]
    convs = [stem_convs[-1], *downsamples]  # each gives a stage's dims
    has_head = "head.weight" in tensors  # without: a feature extractor, num_classes=0
    head_hidden = "pre_logits.0.weight" in tensors  # timm's MLP head
    heads = [k for k in ("pre_logits.0.weight", "head.weight") if k in tensors]
    for key, rank in [*((c, 4) for c in [stem, *convs]), *((h, 2) for h in heads)]:
        if key not in tensors:
            raise ConversionError(f"{state.source}: missing {key}")
        if tensors[key].ndim != rank:
            shape = tuple(tensors[key].shape)
            raise ConversionError(f"{state.source}: {key} has shape {shape}, expected {rank} axes")
    dims = [tensors[key].shape[0] for key in convs]
    block = r"blocks\.()(\d+)\." if isotropic else r"stages\.(\d)\.(\d+)\."
    blocks = [set() for _ in dims]
    for key in tensors:
        match = re.match(block, key)
        if match and int(match.group(1) or 0) < len(dims):
            blocks[int(match.group(1) or 0)].add(int(match.group(2)))
    out_indices = backbone_outputs(tensors, isotropic)
    layer_scale = any(re.fullmatch(r"(stages\.\d+|blocks)\.\d+\.gamma", k) for k in tensors)
    try:
        spec = ModelSpec(
            kind="isotropic" if isotropic else "backbone" if out_indices else "classifier",
            depths=tuple(max(b) + 1 if b else 0 for b in blocks),  # gaps show up as missing
            dims=tuple(int(d) for d in dims),
            num_classes=int(tensors["head.weight"].shape[0]) if has_head else 0,
            in_chans=int(tensors[stem].shape[1]),
            layer_scale_init_value=1e-6 if layer_scale else 0.0,
            use_grn=any(".grn." in key for key in tensors),
            out_indices=out_indices or (),
            # RMSNorm or SimpleNorm (no bias; which one, the variant says: resolve_spec)
            norm="layernorm" if isotropic or "downsample_layers.1.0.bias" in tensors else "rmsnorm",
            stem="patchify" if isotropic else stem_kind(tensors, stem_convs),
            head="norm_first"
            if "norm_pre.weight" in tensors
            else "mlp"
            if head_hidden
            else "linear",
            head_hidden_size=int(tensors["pre_logits.0.weight"].shape[0]) if head_hidden else 0,
            head_bias=not has_head or "head.bias" in tensors,
        )
    except SpecError as e:
        raise ConversionError(f"{state.source}: not a ConvNeXt this project builds ({e})") from None
    return spec


def stem_conv_keys(tensors: Mapping[str, np.ndarray]) -> list[str]:
    """The stem's convolutions: one (patchify) or two (timm's overlapping stems), the weights
    with 4 axes among downsample_layers.0.* (the first whatever its shape: checked later)."""
    pattern = re.compile(r"downsample_layers\.0\.(\d+)\.weight")
    found = sorted((int(m.group(1)), k) for k in tensors if (m := pattern.fullmatch(k)))
    return [k for index, k in found if index == 0 or tensors[k].ndim == 4]


def stem_kind(tensors: Mapping[str, np.ndarray], convs: list[str]) -> str:
    """Which stem the stem's convolutions make: a 4x4 patch conv, or two 3x3 convs at indices 0
    and 1 ("overlap", or "overlap_tiered" when the first is narrower) or 0 and 2 (a GELU
    between them: "overlap_act")."""
    if len(convs) == 1:
        return "patchify"
    if convs[-1] == "downsample_layers.0.2.weight":
        return "overlap_act"
    first, second = (tensors[k].shape[0] for k in convs[:2])
    return "overlap" if first == second else "overlap_tiered"


def resolve_spec(
    state: StateDict, variant: str | None = None, num_classes: int | None = None
) -> ModelSpec:
    """The model to build for a checkpoint. Without `variant`: the spec read off its shapes,
    which must be a known variant's. With `variant`: that variant, with the checkpoint's
    classes, input channels, layer scale and backbone form; the strict check then names every
    tensor that differs. `num_classes` replaces the number of classes."""
    if num_classes is not None and num_classes < 0:
        raise ConversionError(f"`num_classes` must be 0 (no head) or more, got {num_classes}")
    try:
        inferred = spec_from_shapes(state)
    except ConversionError:
        if variant is None:
            raise
        inferred = None  # `variant` given: the strict check names what differs
    if variant is None:
        spec = with_hidden_fields(inferred, state.source)
    else:
        try:
            spec = spec_from_name(variant)
        except SpecError as e:
            raise ConversionError(str(e)) from None
        if inferred is not None:
            if inferred.kind == "backbone" and spec.kind == "classifier":
                spec = as_backbone(spec, inferred.out_indices)
            spec = spec.replace(
                num_classes=0 if spec.kind == "backbone" else inferred.num_classes,
                in_chans=inferred.in_chans,
                layer_scale_init_value=inferred.layer_scale_init_value,
                head_bias=inferred.head_bias if spec.kind == "classifier" else True,
            )
    if num_classes is not None:
        if spec.kind == "backbone" and num_classes:
            raise ConversionError(f"{state.source} is a detection backbone: it has no head")
        if spec.kind != "backbone":
            spec = spec.replace(num_classes=num_classes)
    return spec


def with_hidden_fields(inferred: ModelSpec, source: str) -> ModelSpec:
    """The inferred spec with what its tensors cannot show (HIDDEN_FIELDS: RMSNorm or
    SimpleNorm, the norms' eps) taken from the one variant its shapes name."""
    if name_of(inferred) is not None:
        return inferred
    biased = inferred.norm == "layernorm"  # what the tensors do show of the norm
    candidates = [
        name
        for name in variants_like(inferred, ignore=HIDDEN_FIELDS)
        if (spec_from_name(name).norm == "layernorm") == biased
    ]
    if len(candidates) == 1:
        variant = spec_from_name(candidates[0])
        return inferred.replace(**{field: getattr(variant, field) for field in HIDDEN_FIELDS})
    if candidates:
        raise ConversionError(
            f"{source}: the tensors fit {' and '.join(candidates)}, which differ only in what "
            "no tensor shows (norm, eps); choose one with `variant`"
        )
    defaults = {"stem": "patchify", "head": "linear"}
    extra = "".join(
        f", {field} {getattr(inferred, field)}"
        for field, default in defaults.items()
        if getattr(inferred, field) != default
    )
    raise ConversionError(
        f"no known {inferred.family} variant has depths {inferred.depths} and dims "
        f"{inferred.dims}{extra}; choose one with `variant` to see which tensors differ"
    )


def backbone_outputs(tensors: Mapping[str, np.ndarray], isotropic: bool) -> tuple[int, ...] | None:
    """The out_indices of a detection backbone (per-stage norm{i}, no final norm), or None."""
    indices = sorted(
        {int(m.group(1)) for k in tensors if (m := re.fullmatch(r"norm(\d)\.weight", k))}
    )
    if isotropic or not indices or "norm.weight" in tensors:
        return None
    return tuple(indices)
