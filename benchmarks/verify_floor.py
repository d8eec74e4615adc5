"""The floor of `convnext verify` (make bench): the least one process can do to reach the same
verdict on the same inputs. It imports PyTorch and what runs the artifact (LiteRT alone for a
.tflite file, TensorFlow for a SavedModel), loads the checkpoint and the artifact, and runs the
PyTorch model in float32, the artifact, and the float64 floor pass on the same images as
verify (`--batch` random images at 224 x 224 from the same seed; the float64 pass on as many
as verify measured its floor on). Nothing else: no checks, no report, no localisation.

    python benchmarks/verify_floor.py CHECKPOINT ARTIFACT VARIANT FLOOR_IMAGES [BATCH]
"""

from __future__ import annotations

import sys


def main() -> None:
    checkpoint, artifact, variant, floor_images = sys.argv[1:5]
    batch = int(sys.argv[5]) if len(sys.argv) > 5 else 4
    import numpy as np
    import torch

    import convnext_torch

    tflite = artifact.endswith(".tflite")
    if tflite:
        from ai_edge_litert.interpreter import Interpreter
    else:
        import tensorflow as tf

    model = convnext_torch.create_model(variant)
    model.load_state_dict(torch.load(checkpoint, weights_only=True))
    model.eval()
    if tflite:
        runner = Interpreter(model_path=artifact).get_signature_runner("serving_default")
        name = next(iter(runner.get_input_details()))

        def run(x: np.ndarray) -> np.ndarray:
            return next(iter(runner(**{name: x}).values()))
    else:
        serving = tf.saved_model.load(artifact).signatures["serving_default"]

        def run(x: np.ndarray) -> np.ndarray:
            return next(iter(serving(tf.constant(x)).values())).numpy()

    images = np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        reference = model(torch.from_numpy(images)).numpy()
        found = run(np.ascontiguousarray(images.transpose(0, 2, 3, 1)))
        near = model.double()(torch.from_numpy(images[: int(floor_images)]).double()).numpy()
    served, floor = np.abs(reference - found).max(), np.abs(reference[: len(near)] - near).max()
    print(f"max abs: artifact {served:.2e}, float64 {floor:.2e}")


if __name__ == "__main__":
    main()
