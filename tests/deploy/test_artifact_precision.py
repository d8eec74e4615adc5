"""The tolerance an artifact is held to follows what it computes with, never what it says of
itself: a .tflite file earns a quantized tolerance only by LiteRT's own quantization pattern,
and a graph that takes float16 input is held to float32's."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from converters.deploy.inputs import feeding, random_images
from converters.deploy.verify import verify_models
from tests.deploy.test_verify import SIZE, SPEC, keras_copy
from tests.deploy.test_verify_hostile import savedmodel
from tests.support.verifying import save_signatures


def tflite_of(directory: Path, module, name: str) -> Path:
    """`module.serve` as a float32 .tflite file, through a SavedModel (LiteRT's converter)."""
    import tensorflow as tf

    saved = directory / f"{name}_savedmodel"
    save_signatures(saved, {"serving_default": module.serve})
    path = directory / f"{name}.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_saved_model(str(saved)).convert())
    return path


def test_an_idle_int8_cast_does_not_loosen_the_tolerance(tmp_path, tiny_model):
    """A float32 model 1e-3 off that holds one int8 cast feeding nothing weighted: compared
    as float32 (its convolutions take float32 weights), so it FAILS. Deciding from any int8
    tensor made it dynamic-int8, whose tolerance let it pass."""
    import tensorflow as tf

    from converters.deploy.artifacts import open_artifact

    model = keras_copy(tiny_model)

    class OffByAThousandth(tf.Module):
        def __init__(self):
            super().__init__()
            self.model = model  # tracked: its variables are saved with the module

        @tf.function(input_signature=[tf.TensorSpec([None, *SIZE, 3], tf.float32)])
        def serve(self, x):
            idle = tf.cast(tf.cast(x[:, :1, :1, :1] * 0.0, tf.int8), tf.float32)
            logits = self.model(x, training=False) * 1.001
            return {"logits": logits + tf.reshape(idle, [-1, 1])}

    path = tflite_of(tmp_path, OffByAThousandth(), "idle_cast")
    artifact = open_artifact(path, SPEC)
    assert artifact.precision == "float32"
    assert any("take float32 weights" in note for note in artifact.notes)
    feed = feeding(artifact, 3, None, None, None, None, None)
    result = verify_models(tiny_model, artifact, random_images(2, SIZE, 3, 0), feed, batch=2)
    assert not result.passed, result.format()


class GraphOnly:
    """What tflite_precision reads of a LiteRT interpreter: tensors and operators."""

    def __init__(self, weights: list[tuple[str, tuple[int, ...], bool]]):
        """`weights`: (dtype, shape, has scales) of each convolution's weight."""
        self.tensors, self.ops = [], []
        for i, (dtype, shape, scales) in enumerate(weights):
            parameters = {"scales": np.ones(shape[0]) if scales else np.zeros(0)}
            self.tensors.append(
                {"index": 2 * i, "dtype": np.float32, "shape": np.array([1, 8, 8, shape[-1]]),
                 "quantization_parameters": {"scales": np.zeros(0)}}
            )  # fmt: skip
            self.tensors.append(
                {"index": 2 * i + 1, "dtype": np.dtype(dtype), "shape": np.array(shape),
                 "quantization_parameters": parameters}
            )  # fmt: skip
            self.ops.append({"op_name": "CONV_2D", "inputs": [2 * i, 2 * i + 1], "outputs": []})

    def get_tensor_details(self):
        return self.tensors

    def _get_ops_details(self):
        return self.ops


@pytest.mark.parametrize(
    "weights, precision",
    [
        ([("int8", (64, 3, 3, 64), True), ("float32", (8, 1, 1, 8), False)], "dynamic-int8"),
        ([("int8", (64, 3, 3, 64), True), ("float32", (64, 3, 3, 64), False)], "float32"),
        ([("int8", (8, 1, 1, 8), True), ("float32", (8, 1, 1, 8), False)], "float32"),
        ([("int8", (64, 3, 3, 64), False)], "float32"),  # int8 with no scales: a cast
        ([("float16", (64, 3, 3, 64), False), ("float32", (8, 1, 1, 8), False)], "float32"),
        ([("float16", (64, 3, 3, 64), False), ("float16", (8, 1, 1, 8), False)], "float16"),
    ],
)
def test_only_litert_s_own_quantization_pattern_earns_the_looser_tolerance(weights, precision):
    """One int8 convolution among float ones (a tampered float32 file, whose other weights
    were changed) passed with the dynamic-int8 tolerance, 30,000 times float32's: now the
    quantized tolerance needs every weight LiteRT would quantize quantized, and no other."""
    from converters.deploy.artifacts.tflite import tflite_precision

    assert tflite_precision(GraphOnly(weights))[0] == precision


def test_a_savedmodel_cannot_loosen_its_tolerance_by_taking_float16(tmp_path, tiny_model):
    """A graph that takes float16 input, computes in float32 and is 0.3% off passed against
    float16's floor: a foreign artifact is held to float32's tolerance, and told so."""
    import tensorflow as tf

    from converters.deploy.artifacts import open_artifact

    model = keras_copy(tiny_model)

    class Float16In(tf.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float16)])
        def serve(self, x):
            return {"logits": self.model(tf.cast(x, tf.float32), training=False) * 1.003}

    module = Float16In()
    path = savedmodel(tmp_path, module, {"serving_default": module.serve})
    artifact = open_artifact(path, SPEC)
    assert (artifact.precision, artifact.input_dtype) == ("float32", "float16")
    assert any("held to float32's tolerance" in note for note in artifact.notes)
    feed = feeding(artifact, 3, None, None, None, None, None)
    result = verify_models(tiny_model, artifact, random_images(2, SIZE, 3, 0), feed, batch=2)
    assert not result.passed, result.format()


def test_the_float64_floor_block_by_block_is_the_float64_models(tiny_model):
    """verify's float64 noise floor of a float32 artifact runs each step on a float64 copy of
    its own layer (torch_trace's dtype), holding one block's copy rather than the whole
    model's (2.7 GB for convnext_xlarge): bit for bit what a float64 copy of the whole model
    computes, not what the float32 model does, and the model itself stays float32."""
    import copy

    import torch

    from converters.deploy.trace import torch_trace

    x = np.random.default_rng(3).normal(size=(2, 3, *SIZE))
    stepwise = torch_trace(tiny_model, x, torch.float64)
    whole = torch_trace(copy.deepcopy(tiny_model).double(), x)
    single = torch_trace(tiny_model, x)
    assert list(stepwise) == list(whole)
    for name in whole:
        assert stepwise[name].dtype == np.float64
        np.testing.assert_array_equal(stepwise[name], whole[name])
    assert not np.array_equal(stepwise["head"], single["head"])
    assert {p.dtype for p in tiny_model.parameters()} == {torch.float32}


@pytest.fixture(scope="module")
def float16_ports(tmp_path_factory, tiny_model) -> dict[str, Path]:
    """The hand-written port (no `stages` signature: a black box) as a float16 .tflite by
    LiteRT's converter (float16 weights), correct and with one weight of stage3_block1's
    second pointwise layer moved by 0.04: a break the logits carry within float16's
    tolerance (3.4e-3 against 6.3e-3), its own block 2.6x out of that block's."""
    import tensorflow as tf

    from tests.deploy.test_verify import hand_written_port
    from tests.support.verifying import perturb_one_value

    directory = tmp_path_factory.mktemp("float16_ports")
    paths = {}
    for name, delta in (("correct", 0.0), ("broken", 0.04)):
        port = hand_written_port(tiny_model)
        if delta:
            perturb_one_value(port.get_layer("stage3_block1_pwconv2").kernel, delta)
        port.export(str(directory / name), verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(str(directory / name))
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
        paths[name] = directory / f"{name}.tflite"
        paths[name].write_bytes(converter.convert())
    return paths


def verify_float16_port(tiny_model, path: Path):
    from converters.deploy.artifacts import open_artifact

    artifact = open_artifact(path, SPEC)
    assert artifact.precision == "float16" and not artifact.traced
    feed = feeding(artifact, 3, None, None, None, None, None)
    return verify_models(tiny_model, artifact, random_images(4, SIZE, 3, 0), feed, batch=4)


def test_a_quantized_pass_compares_the_blocks_and_says_which_one_hides_an_error(
    tiny_model, float16_ports
):
    """Under a tolerance wider than one wrong weight moves the logits, the blocks of a foreign
    artifact are located on a PASS too, each held to its own float16 floor: the broken block
    matches no tensor (its nearest, its own output, 2.6x out) while the later ones agree
    again, and the note names it with that distance. The correct port: every point located."""
    result = verify_float16_port(tiny_model, float16_ports["correct"])
    assert result.passed, result.format()
    text = result.format()
    assert "11 of 11 points" in text and "matches no tensor" not in text
    assert "not within its own tolerance" not in result.verdict_line()
    broken = verify_float16_port(tiny_model, float16_ports["broken"])
    assert broken.passed, broken.format()  # the logits cannot see it: the blocks can
    text = broken.format()
    assert "stages.2.1 matches no tensor, and later points do" in text, text
    nearest = re.search(r"nearest tensor .*: stages\.2\.1 \S+ \(([\d.]+)x its tolerance", text)
    assert nearest and float(nearest.group(1)) > 2, text
    assert "but stages.2.1 is not within its own tolerance" in broken.verdict_line()


def test_the_quantized_block_check_is_seen_failing_without_the_matching(
    tiny_model, float16_ports, monkeypatch
):
    """The note above rests on the matching: with no tensor read as a block's, nothing is
    located and no block is named."""
    from converters.deploy import locate

    monkeypatch.setattr(locate, "readings", lambda reference, value: iter(()))
    text = verify_float16_port(tiny_model, float16_ports["broken"]).format()
    assert "matches no tensor" not in text and "nearest tensor" not in text, text
