"""The PyTorch side of the strict accounting: the names and shapes a model of a spec has, a
checkpoint held to them (check_match, which the Keras side uses too) and loaded into a PyTorch
model. No Keras here: verify, which needs only the PyTorch model, loads no TensorFlow for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

import convnext_torch
from converters.errors import ConversionError
from converters.files.checkpoint import StateDict, load_state_dict
from convnext_spec.spec import ModelSpec


def load_torch_model(
    source: str | Path | Mapping | StateDict, torch_model: torch.nn.Module
) -> None:
    """Load a checkpoint into a PyTorch ConvNeXt with the same strict accounting (and one-line
    errors) as torch_to_keras; PyTorch's own strict load reports over many lines."""
    state = source if isinstance(source, StateDict) else load_state_dict(source)
    expected = {k: tuple(v.shape) for k, v in torch_model.state_dict().items()}
    check_match(state, expected)
    torch_model.load_state_dict({k: torch.from_numpy(v) for k, v in state.tensors.items()})


def expected_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """The state_dict names and shapes of a model of `spec` (PyTorch's layout): what
    check_match holds a checkpoint to, for convert and inspect alike. Built on the meta
    device: no memory, no initialisation."""
    with torch.device("meta"):
        model = convnext_torch.create_model(spec)
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


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
