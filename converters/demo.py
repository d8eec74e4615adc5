"""`make demo`: the main job end to end, offline, on a small model.

1. build convnext_atto in PyTorch (10 classes) and give every weight a value that matters,
2. save it as an official-style training checkpoint, {"model": state_dict, "epoch": ...},
3. convert it with the command line, `convnext convert CKPT DST.keras`,
4. load the .keras file in Keras and compare both models on the same batch, stage by stage.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from converters.startup import import_tensorflow_quietly

import_tensorflow_quietly()  # before Keras is imported: TensorFlow's notices go nowhere

import keras
import numpy as np
import torch

import convnext_tf  # noqa: F401  (registers the Keras classes that load_model needs)
import convnext_torch
from converters.parity import compare, randomize_

VARIANT = "convnext_atto"
BATCH, HEIGHT, WIDTH = 4, 61, 127  # 61 -> 15 -> 7 -> 3 -> 1: odd at the stem and every downsample


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="convnext-demo-") as tmp:
        checkpoint = Path(tmp) / f"{VARIANT}.pth"
        converted = Path(tmp) / f"{VARIANT}.keras"

        print(f"1. PyTorch {VARIANT}, 10 classes, every weight randomised (layer scale too)")
        torch_model = randomize_(convnext_torch.create_model(VARIANT, num_classes=10), seed=0)
        torch.save({"model": torch_model.state_dict(), "epoch": 300}, checkpoint)
        print(f"2. saved {checkpoint.name} ({checkpoint.stat().st_size / 1e6:.1f} MB)")

        command = [sys.executable, "-m", "converters", "convert", str(checkpoint), str(converted)]
        print(f"3. $ convnext convert {checkpoint.name} {converted.name}")
        result = subprocess.run(command, capture_output=True, text=True)
        print("   " + result.stderr.strip().replace("\n", "\n   "))
        if result.returncode != 0:
            return result.returncode

        keras_model = keras.models.load_model(converted)
        images = np.random.default_rng(0).standard_normal((BATCH, 3, HEIGHT, WIDTH))
        images = images.astype(np.float32)
        report = compare(torch_model, keras_model, images)
        print(f"4. Keras {converted.name} vs PyTorch on {BATCH} images of {HEIGHT}x{WIDTH}:")
        print("   " + report.format().replace("\n", "\n   "))

    diverged = report.first_divergence(rtol=1e-4)
    if diverged or report.top1_agreement < 1.0:
        print(f"FAILED: the models disagree from {diverged or 'the top-1 class'} on")
        return 1
    print("OK: float32 logits agree to rounding error and every top-1 class matches")
    return 0


if __name__ == "__main__":
    sys.exit(main())
