"""PyTorch state_dict <-> Keras ConvNeXt, by name, with strict accounting.

Every checkpoint tensor must be used exactly once and every Keras variable assigned exactly
once; anything else raises ConversionError naming the keys. Keras' own `.weights.h5` loading
matches layers by position and silently cross-loads same-shaped layers, so it is never used
for foreign weights: each variable is found by its path and assigned directly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import torch

import convnext_tf
from converters.errors import ConversionError
from converters.files.checkpoint import StateDict, load_state_dict
from converters.names import mapping
from converters.weights.accounting import check_match, expected_shapes
from convnext_spec.spec import (
    ModelSpec,
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
    check_match(state, expected_shapes(spec))  # the names and shapes, before anything is built
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
