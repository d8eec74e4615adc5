"""Run in a process of its own with KERAS_BACKEND=jax and JAX_ENABLE_X64=1 (Keras fixes its
backend at import, and JAX computes float64 only when asked to): the Keras models, the
converter and .keras files on JAX, against PyTorch. Prints one JSON line of measurements;
test_jax.py runs it and judges them.

    python tests/jax_check.py KERAS_FILE_FROM_TF NPZ
"""

import json
import os
import sys
import tempfile

import keras
import numpy as np
import torch

import convnext_tf
import convnext_torch
from converters.weights.convert import keras_to_torch, torch_to_keras
from tests.support.helpers import ODD_SIZE, TINY_SPECS, images
from tests.support.parity import Difference, differences, keras_outputs, randomize_, torch_outputs


def main() -> None:
    assert keras.backend.backend() == "jax", keras.backend.backend()
    results = {"float64": {}, "float32": {}, "round_trip_exact": True}
    for case, spec in TINY_SPECS.items():
        x = images(*ODD_SIZE, seed=81)[:, : spec.in_chans]
        torch_model = randomize_(convnext_torch.create_model(spec), seed=81).double()
        keras64 = convnext_tf.create_model(spec, dtype="float64")
        torch_to_keras(torch_model.state_dict(), keras64)
        pt64 = torch_outputs(torch_model, x)
        gaps = differences(pt64, keras_outputs(keras64, x))
        results["float64"][case] = max(d.max_rel for d in gaps.values())
        back = keras_to_torch(keras64)
        results["round_trip_exact"] &= all(
            torch.equal(back[k], v) for k, v in torch_model.state_dict().items()
        )
        if case == "v1":  # the check can fail: one weight of one block 1e-6 off
            kernel = keras64.get_layer("stages.2").layers[0].dwconv.kernel
            kernel.assign(kernel * (1 + 1e-6))
            gaps = differences(pt64, keras_outputs(keras64, x))
            results["one_weight_off_by_1e-6"] = max(d.max_rel for d in gaps.values())
        torch_model.float()
        keras32 = convnext_tf.create_model(spec, dtype="float32")
        torch_to_keras(torch_model.state_dict(), keras32)
        pt32, tf32 = torch_outputs(torch_model, x), keras_outputs(keras32, x)
        results["float32"][case] = max(
            Difference.between(k, pt32[k], tf32[k]).max_abs
            / Difference.between(k, pt64[k], pt32[k]).max_abs
            for k in pt64
        )
    # a .keras file written under TensorFlow, loaded and saved again under JAX
    from_tf, npz = sys.argv[1], sys.argv[2]
    expected = np.load(npz)
    model = keras.models.load_model(from_tf)
    found = keras_outputs(model, expected["images"])["logits"]
    results["tf_file_on_jax"] = float(np.abs(found - expected["logits"]).max())
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "again.keras")
        model.save(path)
        again = keras_outputs(keras.models.load_model(path), expected["images"])["logits"]
    results["jax_file_again"] = float(np.abs(again - found).max())
    print(json.dumps(results))


if __name__ == "__main__":
    main()
