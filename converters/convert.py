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

from converters import mapping
from converters.checkpoint import ConversionError, StateDict, load_state_dict

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
    drop path) is not a weight and is not listed."""
    prefix = f"{model.path or model.name}/"
    variables: dict[str, keras.Variable] = {}
    for variable in model.weights:
        if not variable.path.startswith(prefix):
            raise ConversionError(f"variable {variable.path} lies outside model {prefix}")
        key = mapping.torch_key(variable.path[len(prefix) :])
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
    check_match(state, targets)
    for done, (key, variable) in enumerate(targets.items(), start=1):
        value = mapping.to_keras(key, state.tensors[key])
        variable.assign(value.astype(variable.dtype))  # float16/bf16 already widened: exact
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


def keras_to_torch(keras_model: keras.Model) -> dict[str, torch.Tensor]:
    """The Keras model's weights as a state_dict with the official PyTorch key names."""
    return {
        key: torch.from_numpy(mapping.to_torch(key, keras.ops.convert_to_numpy(variable)))
        for key, variable in keras_variables(keras_model).items()
    }


def check_match(state: StateDict, targets: Mapping[str, keras.Variable]) -> None:
    """Raise ConversionError unless the checkpoint and the model have the same names and each
    tensor has the shape its variable needs."""
    missing = [key for key in targets if key not in state.tensors]
    unexpected = [key for key in state.tensors if key not in targets]
    mismatched = []
    for key, variable in targets.items():
        if key in state.tensors:
            expected = mapping.torch_shape(key, tuple(variable.shape))
            found = tuple(state.tensors[key].shape)
            if found != expected:
                mismatched.append(f"{key}: expected {expected}, found {found}")
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


@dataclass
class InferredConfig:
    """A ConvNeXt configuration read off a state_dict's keys and shapes."""

    depths: tuple[int, ...]
    dims: tuple[int, ...]
    num_classes: int
    in_chans: int
    layer_scale: bool  # whether the blocks carry `gamma`

    def variant(self, variants: Mapping[str, tuple[tuple[int, ...], tuple[int, ...]]]) -> str:
        """The name of the variant with these depths and dims; ConversionError if none has."""
        for name, (depths, dims) in variants.items():
            if tuple(depths) == self.depths and tuple(dims) == self.dims:
                return name
        raise ConversionError(
            f"no known variant has depths {self.depths} and dims {self.dims}; "
            "choose one with --variant to see which tensors differ"
        )

    def overrides(self) -> dict:
        """create_model arguments that make a model shaped like the checkpoint."""
        overrides = {"num_classes": self.num_classes, "in_chans": self.in_chans}
        if not self.layer_scale:
            overrides["layer_scale_init_value"] = 0.0
        return overrides


def infer_config(state: StateDict) -> InferredConfig:
    """Depths, dims, classes and input channels of an official-layout ConvNeXt state_dict."""
    tensors = state.tensors
    stem = "downsample_layers.0.0.weight"
    if stem not in tensors:
        sample = ", ".join(list(tensors)[:3]) or "no tensors at all"
        raise ConversionError(
            f"{state.source}: not an official-layout ConvNeXt state_dict: no {stem} "
            f"(found {sample})"
        )
    dims = [tensors[stem].shape[0]]
    for i in range(1, 4):
        key = f"downsample_layers.{i}.1.weight"
        if key not in tensors:
            raise ConversionError(f"{state.source}: missing {key}")
        dims.append(tensors[key].shape[0])
    blocks = [set() for _ in range(4)]
    for key in tensors:
        match = re.match(r"stages\.(\d)\.(\d+)\.", key)
        if match and int(match.group(1)) < 4:
            blocks[int(match.group(1))].add(int(match.group(2)))
    if "head.weight" not in tensors:
        raise ConversionError(f"{state.source}: no head.weight (a backbone without classifier?)")
    return InferredConfig(
        depths=tuple(max(b) + 1 if b else 0 for b in blocks),  # gaps show up as missing
        dims=tuple(int(d) for d in dims),
        num_classes=int(tensors["head.weight"].shape[0]),
        in_chans=int(tensors[stem].shape[1]),
        layer_scale=any(key.endswith(".gamma") for key in tensors),
    )
