"""PyTorch state_dict <-> Keras ConvNeXt, by name, with strict accounting.

Every checkpoint tensor must be used exactly once and every Keras variable assigned exactly
once; anything else raises ConversionError naming the keys. Keras' own `.weights.h5` loading
matches layers by position and silently cross-loads same-shaped layers, so it is never used
for foreign weights: each variable is found by its path and assigned directly.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import torch

import convnext_tf
import convnext_torch
from converters import mapping
from converters.checkpoint import StateDict, load_state_dict
from converters.errors import ConversionError
from convnext_spec.spec import (
    HIDDEN_FIELDS,
    ModelSpec,
    SpecError,
    as_backbone,
    name_of,
    spec_from_name,
    variants_like,
)

Progress = Callable[[int, int], None]  # (done, total)


@dataclass
class ConversionReport:
    """What torch_to_keras did: how many tensors and parameters, and from what."""

    tensors: int
    parameters: int
    source: str
    wrapper: str | None
    source_dtypes: tuple[str, ...]
    target_dtype: str


def keras_variables(model: keras.Model) -> dict[str, keras.Variable]:
    """The model's weights keyed by their PyTorch name. Keras-only state (the random seed of
    drop path) is not a weight and is not listed. A model built by its first eager call
    names its variables without its own name in front (`stages.0/0/...`), one built
    symbolically (create_model) with it (`convnext_tiny/stages.0/0/...`): both are read."""
    prefix = f"{model.path or model.name}/"
    variables: dict[str, keras.Variable] = {}
    for variable in model.weights:
        key = mapping.torch_key(variable.path.removeprefix(prefix))
        if key in variables:
            raise ConversionError(f"two Keras variables map to {key}")
        variables[key] = variable
    return variables


def torch_to_keras(
    source: str | Path | Mapping | StateDict,
    keras_model: keras.Model,
    progress: Progress | None = None,
) -> ConversionReport:
    """Assign a PyTorch checkpoint (a path, a state_dict or a loaded StateDict) to a built Keras
    ConvNeXt. Nothing is assigned unless every tensor and every variable match."""
    state = source if isinstance(source, StateDict) else load_state_dict(source)
    targets = keras_variables(keras_model)
    check_match(state, {k: mapping.torch_shape(k, tuple(v.shape)) for k, v in targets.items()})
    for done, (key, variable) in enumerate(targets.items(), start=1):
        value = mapping.to_keras(key, state.tensors[key])
        variable.assign(value.astype(variable.dtype, copy=False))  # half was widened: exact
        if progress:
            progress(done, len(targets))
    return ConversionReport(
        tensors=len(targets),
        parameters=sum(int(np.prod(v.shape)) for v in targets.values()),
        source=state.source,
        wrapper=state.wrapper,
        source_dtypes=state.dtypes,
        target_dtype=keras_model.dtype_policy.variable_dtype,
    )


def keras_model_from_state(
    state: StateDict, spec: ModelSpec, dtype=None
) -> tuple[keras.Model, ConversionReport]:
    """A Keras ConvNeXt of `spec` holding the checkpoint's weights, with the same strict
    accounting as torch_to_keras. Takes the tensors out of `state` as it goes: `state.tensors`
    is empty afterwards.

    Why not create_model and torch_to_keras: the model would draw random initial values only
    to have them replaced (6.5 s of a 19 s conversion of convnext_xlarge), and the checkpoint
    and the model would each hold every weight at once. Here the model is built with its
    variables waiting for a value (built in a keras.StatelessScope), and each variable is then
    created from its checkpoint tensor, which is dropped once the variable holds it: the
    weights are in memory once, plus one tensor in flight."""
    if in_stateless_scope():
        raise ConversionError(
            "a model with weights cannot be built inside a keras.StatelessScope: its variables "
            "would take their values only when the scope ends, and assigning does not stick"
        )
    with torch.device("meta"):  # the names and shapes, before anything is built
        expected = convnext_torch.create_model(spec).state_dict()
    check_match(state, {key: tuple(value.shape) for key, value in expected.items()})
    tensors, parameters = len(state.tensors), sum(int(v.size) for v in state.tensors.values())

    def value_of(key: str) -> Callable:
        def initializer(shape, dtype=None):  # called once, as the variable is created
            value = mapping.to_keras(key, state.tensors.pop(key))
            if value.shape != tuple(shape):  # the two model files disagree: never assign
                raise ConversionError(f"{key}: Keras expects {tuple(shape)}, got {value.shape}")
            return value.astype(keras.backend.standardize_dtype(dtype), copy=False)

        return initializer

    model = build_with_values(spec, dtype, value_of)
    if model is None:  # a Keras that cannot defer variables: built the usual way, assigned
        model = convnext_tf.create_model(spec, dtype=dtype)
        torch_to_keras(state, model)
        state.tensors.clear()
    target_dtype = model.dtype_policy.variable_dtype
    report = ConversionReport(
        tensors, parameters, state.source, state.wrapper, state.dtypes, target_dtype
    )
    return model, report


def in_stateless_scope() -> bool:
    try:  # Keras-internal, as long as keras has StatelessScope; no scope where it is gone
        from keras.src.backend.common.stateless_scope import in_stateless_scope as inside
    except ImportError:
        return False
    return inside()


def build_with_values(spec: ModelSpec, dtype, value_of: Callable) -> keras.Model | None:
    """create_model(spec) with each weight created by `value_of(key)` instead of its own
    initializer, or None where this Keras offers no way to (nothing is built then).

    Keras-internal, kept here: variables made in a keras.StatelessScope wait in a global list,
    each with its initializer (Variable._initializer), until _deferred_initialize creates
    them. The list is restored however this ends (an error in an initializer left in it would
    break every later StatelessScope of the process)."""
    try:
        from keras.src.backend.common import global_state
        from keras.src.backend.common.variables import Variable
    except ImportError:
        return None
    if not hasattr(Variable, "_deferred_initialize"):
        return None
    waiting = "uninitialized_variables"
    before = list(global_state.get_global_attribute(waiting, None) or [])
    try:
        with keras.StatelessScope(initialize_variables=False):
            model = convnext_tf.create_model(spec, dtype=dtype)
        ours = (global_state.get_global_attribute(waiting, None) or [])[len(before) :]
        targets = keras_variables(model)
        if not {id(v) for v in targets.values()} <= {id(v) for v in ours}:
            return None  # some weight has a value already: this Keras does not defer them
        for key, variable in targets.items():
            variable._initializer = value_of(key)
        for variable in ours:  # the weights, and Keras-only state with its own initializer
            variable._deferred_initialize()
        return model
    finally:
        global_state.set_global_attribute(waiting, before)


def keras_to_torch(keras_model: keras.Model) -> dict[str, torch.Tensor]:
    """The Keras model's weights as a state_dict with the official PyTorch key names."""
    return {
        key: torch.from_numpy(mapping.to_torch(key, keras.ops.convert_to_numpy(variable)))
        for key, variable in keras_variables(keras_model).items()
    }


def load_torch_model(
    source: str | Path | Mapping | StateDict, torch_model: torch.nn.Module
) -> None:
    """Load a checkpoint into a PyTorch ConvNeXt with the same strict accounting (and one-line
    errors) as torch_to_keras; PyTorch's own strict load reports over many lines."""
    state = source if isinstance(source, StateDict) else load_state_dict(source)
    expected = {k: tuple(v.shape) for k, v in torch_model.state_dict().items()}
    check_match(state, expected)
    torch_model.load_state_dict({k: torch.from_numpy(v) for k, v in state.tensors.items()})


def check_match(state: StateDict, expected: Mapping[str, tuple[int, ...]]) -> None:
    """Raise ConversionError unless the checkpoint has exactly the names of `expected` (name ->
    shape in PyTorch's layout), each with that shape."""
    missing = [key for key in expected if key not in state.tensors]
    unexpected = [key for key in state.tensors if key not in expected]
    mismatched = [
        f"{key}: expected {shape}, found {tuple(state.tensors[key].shape)}"
        for key, shape in expected.items()
        if key in state.tensors and tuple(state.tensors[key].shape) != tuple(shape)
    ]
    if missing or unexpected or mismatched:
        parts = [
            summarise(what, items)
            for what, items in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("shape mismatch", mismatched),
            )
            if items
        ]
        raise ConversionError(
            f"{state.source} does not match the model: {'; '.join(parts)}",
            missing=missing,
            unexpected=unexpected,
            mismatched=mismatched,
        )


def summarise(what: str, items: list[str], shown: int = 4) -> str:
    more = f", and {len(items) - shown} more" if len(items) > shown else ""
    return f"{len(items)} {what} ({', '.join(items[:shown])}{more})"


def infer_spec(state: StateDict) -> ModelSpec:
    """The spec of the model an official-layout state_dict belongs to, read off its keys and
    shapes (hierarchical V1 or V2, detection backbone, or isotropic). Its depths and dims may
    name no variant; resolve_spec insists on one."""
    tensors = state.tensors
    isotropic = "stem.weight" in tensors
    stem = "stem.weight" if isotropic else "downsample_layers.0.0.weight"
    if stem not in tensors:
        sample = ", ".join(list(tensors)[:3]) or "no tensors at all"
        raise ConversionError(
            f"{state.source}: not an official-layout ConvNeXt state_dict: no {stem} "
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
        inferred = infer_spec(state)
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
