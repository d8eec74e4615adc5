"""Measure the parity numbers quoted in the README, for every variant.

    .venv/bin/python benchmarks/parity.py [--out benchmarks/parity.md] [--variants NAME ...]

Same procedure as tests/parity/test_parity.py (randomised weights, batch 2, 61x127 for every
variant, 224x224 for the small ones); prints a markdown table of logit differences: float64
PyTorch vs Keras (relative to the largest logit), float32 PyTorch vs Keras, PyTorch's and Keras'
own float32 error (float32 vs their float64 run), and the ratio the tests bound.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from converters.startup import import_tensorflow_quietly

import_tensorflow_quietly()
import numpy as np
import torch

import convnext_tf
import convnext_torch
from converters.weights.convert import torch_to_keras
from convnext_spec.spec import variant_names
from tests.support.parity import differences, keras_outputs, randomize_, torch_outputs

ODD_SIZE = (61, 127)  # as the tests: a remainder at the stem and an odd size at every downsample
SMALL = ["convnext_atto", "convnext_tiny", "convnextv2_atto"]  # also at 224x224


def images(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((2, 3, height, width))


def random_torch_model(variant: str, seed: int) -> torch.nn.Module:
    with torch.device("meta"):  # its own initialisation would be overwritten anyway
        model = convnext_torch.create_model(variant)
    return randomize_(model.to_empty(device="cpu"), seed=seed)


def converted_keras_model(torch_model: torch.nn.Module, variant: str, dtype: str):
    keras_model = convnext_tf.create_model(variant, dtype=dtype)
    torch_to_keras(torch_model.state_dict(), keras_model)
    return keras_model


def measure(variant: str, height: int, width: int, seed: int) -> str:
    x = images(height, width, seed=seed)
    model = random_torch_model(variant, seed=seed).double()
    pt64 = torch_outputs(model, x)
    tf64 = keras_outputs(converted_keras_model(model, variant, "float64"), x)
    model.float()
    pt32 = torch_outputs(model, x)
    tf32 = keras_outputs(converted_keras_model(model, variant, "float32"), x)
    rel64 = differences(pt64, tf64)["logits"].max_rel
    gap32 = differences(pt32, tf32)["logits"].max_abs
    own_pt = differences(pt64, pt32)["logits"].max_abs
    own_tf = differences(tf64, tf32)["logits"].max_abs
    worst = max(
        differences(pt32, tf32)[k].max_abs / differences(pt64, pt32)[k].max_abs for k in pt64
    )
    return (
        f"| {variant} | {height}x{width} | {rel64:.1e} | {gap32:.1e} | {own_pt:.1e} "
        f"| {own_tf:.1e} | {worst:.2f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path)
    parser.add_argument("--variants", nargs="+", default=variant_names(), help="default: every one")
    args = parser.parse_args()
    lines = [
        "| variant | input | float64 rel. | float32 abs. | PyTorch f32 err | Keras f32 err "
        "| worst gap / PyTorch err (any stage) |",
        "|---|---|---|---|---|---|---|",
    ]
    for variant in args.variants:
        lines.append(measure(variant, *ODD_SIZE, seed=1))
        print(lines[-1], flush=True)
    for variant in [v for v in SMALL if v in args.variants]:
        lines.append(measure(variant, 224, 224, seed=2))
        print(lines[-1], flush=True)
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
