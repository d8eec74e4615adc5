"""Measure what `convnext verify`'s tolerance factor rests on: how far a correct deployment
sits from PyTorch, in units of the float32 noise floor, per variant and artifact kind.

    .venv/bin/python benchmarks/noise_floor.py [--out benchmarks/noise_floor.md]

Randomised weights (every parameter matters), 4 random images at 224x224 and at 61x67, as
`convnext verify` runs them; the artifacts are this project's Keras model, its SavedModel
export and (for the small variants) its .tflite export. Each row: the floor at the logits,
the artifact's difference there, their ratio, and the largest ratio over every block. A
correct port must stay under verify's FACTOR (10) with room to spare.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from converters.startup import import_tensorflow_quietly

import_tensorflow_quietly()
import convnext_tf
import convnext_torch
from converters.deploy.artifacts import open_artifact
from converters.deploy.artifacts.keras_models import KerasArtifact
from converters.deploy.export import export_model
from converters.deploy.inputs import feeding, random_images
from converters.deploy.verify import FACTOR, verify_models
from converters.weights.convert import torch_to_keras
from convnext_spec.spec import spec_from_name
from tests.support.parity import randomize_

VARIANTS = ["convnext_atto", "convnextv2_atto", "convnext_isotropic_small", "convnext_tiny"]
TFLITE = {"convnext_atto", "convnextv2_atto", "convnext_isotropic_small"}  # tiny: 9 GB to convert
SIZES = [(224, 224), (61, 67)]


def rows(variant: str, directory: Path):
    spec = spec_from_name(variant)
    torch_model = randomize_(convnext_torch.create_model(spec), seed=0)
    keras_model = convnext_tf.create_model(spec)
    torch_to_keras(torch_model.state_dict(), keras_model)
    artifacts = {"keras": KerasArtifact(directory, "keras", "", model=keras_model, ours=True)}
    export_model(keras_model, directory / variant)
    artifacts["savedmodel"] = open_artifact(directory / variant)
    if variant in TFLITE:
        export_model(keras_model, directory / f"{variant}.tflite")
        artifacts["tflite"] = open_artifact(directory / f"{variant}.tflite")
    for size in SIZES:
        for kind, artifact in artifacts.items():
            feed = feeding(artifact, 3, None, None, None, None, None)
            inputs = random_images(4, size, 3, seed=0)
            started = time.perf_counter()
            result = verify_models(torch_model, artifact, inputs, feed, batch=4)
            seconds = time.perf_counter() - started
            out = result.output
            worst = max(p.max_rel / p.floor for p in [*result.points, out])
            yield (
                f"| {variant} | {kind} | {size[0]}x{size[1]} | {out.floor:.2e} | "
                f"{out.max_rel:.2e} | {out.max_rel / out.floor:.2f} | {worst:.2f} | "
                f"{result.verdict} | {seconds:.1f} s |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    lines = [
        f"Correct deployments against PyTorch float32, in units of the float32 noise floor "
        f"(verify's FACTOR: {FACTOR:g}).",
        "",
        "| variant | artifact | size | floor (logits) | max rel (logits) | ratio | worst "
        "ratio, any block | verdict | time |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    with tempfile.TemporaryDirectory() as directory:
        for variant in VARIANTS:
            for row in rows(variant, Path(directory)):
                print(row, flush=True)
                lines.append(row)
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
