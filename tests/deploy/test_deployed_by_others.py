"""What other tools deploy, fed and judged right (issue 21): a fixed batch of one (litert-torch,
onnx2tf, nobuco), float16 input (onnx2tf's float16 .tflite), several outputs, a fixed size,
files verify cannot run (Keras 2, a TF.js layers model), and hints that follow what was measured.

The artifacts are written here as those tools lay them out (the input shape a fixed-batch
export declares, a signature with two named outputs), from the tiny randomised model of
conftest; one tf.Module holds every signature, so that one SavedModel is saved for them all.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from unittest import mock

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

from converters.deploy.artifacts import open_artifact
from converters.deploy.inputs import feeding, random_images
from converters.deploy.report import render_html
from converters.deploy.verify import verify_models
from converters.errors import ConversionError
from converters.weights.convert import keras_variables
from tests.support.helpers import BATCH
from tests.support.verifying import SIZE, SPEC, check, keras_copy, save_signatures, write

pytest.importorskip("ai_edge_litert", reason=".tflite files need ai-edge-litert (deploy extra)")

FIXED = (64, 64)  # the fixed-size signature's size: a multiple of 32, where "same" hides


class Deployed(tf.Module):
    """The signatures other tools write, of one Keras model."""

    def __init__(self, model: keras.Model):
        super().__init__()
        self.model = model

    @tf.function(input_signature=[tf.TensorSpec([1, 3, *SIZE], tf.float32)])
    def batch_of_one(self, x):
        """litert-torch / nobuco style: NCHW, batch 1 and the size fixed."""
        return {"logits": self.model(tf.transpose(x, [0, 2, 3, 1]), training=False)}

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    def two_outputs(self, x):
        """Two outputs, neither called logits: the pooled features and the class scores."""
        from converters.deploy.trace import keras_trace

        points = keras_trace(self.model, x)
        return {"embedding_features": points["norm"], "scores": points["head"]}

    @tf.function(input_signature=[tf.TensorSpec([None, *FIXED, 3], tf.float32)])
    def fixed_size(self, x):
        return {"logits": self.model(x, training=False)}


def save(module: Deployed, path: Path, names: list[str]) -> Path:
    return save_signatures(path, {n: getattr(module, n) for n in names})


def float16_input_tflite(model: keras.Model, path: Path) -> Path:
    """onnx2tf's float16 file as it is fed: a float16 NHWC input of a fixed batch of 1,
    computed in float32 (converted from a SavedModel saved as convnext export saves: the
    converter freezes the variables it captures)."""
    serve = tf.function(
        lambda x: {"logits": model(tf.cast(x, tf.float32), training=False)},
        input_signature=[tf.TensorSpec([1, *SIZE, 3], tf.float16)],
    )
    directory = save_signatures(path.with_suffix(".savedmodel"), {"serving_default": serve})
    converter = tf.lite.TFLiteConverter.from_saved_model(str(directory))
    path.write_bytes(converter.convert())
    return path


class TanhGELU(keras.layers.Layer):
    def call(self, x):
        return keras.ops.gelu(x, approximate=True)


@pytest.fixture(scope="module")
def others(tmp_path_factory, tiny_model) -> dict[str, Path]:
    """The correct model's SavedModel (every signature above), the same with a tanh GELU in
    every block (batch_of_one only), and the float16-input .tflite."""
    import convnext_tf

    directory = tmp_path_factory.mktemp("others")
    model = keras_copy(tiny_model)
    with mock.patch.object(convnext_tf.model, "GELU", TanhGELU):
        broken = keras_copy(tiny_model)
    names = ["batch_of_one", "two_outputs", "fixed_size"]
    return {
        "savedmodel": save(Deployed(model), directory / "correct", names),
        "broken": save(Deployed(broken), directory / "broken", ["batch_of_one"]),
        "float16 input": float16_input_tflite(model, directory / "float16-input.tflite"),
    }


def run_check(reference, path, signature=None, output_name=None, batch=BATCH, size=SIZE, **kw):
    artifact = open_artifact(path, SPEC, signature, output_name)
    feed = feeding(artifact, 3, None, None, None, None, kw.get("output"))
    inputs = random_images(batch, size, 3, seed=0)
    return verify_models(reference, artifact, inputs, feed, batch=batch)


# --- 1. a fixed batch ------------------------------------------------------------------------


def test_a_batch_of_one_artifact_passes_with_no_option(tiny_model, others):
    """A signature taking (1, 3, 61, 67) is fed the images one at a time, and PASSES."""
    artifact = open_artifact(others["savedmodel"], SPEC, "batch_of_one")
    assert (artifact.batch, artifact.layout, artifact.size) == (1, "nchw", SIZE)
    result = run_check(tiny_model, others["savedmodel"], "batch_of_one", batch=3)
    assert result.passed, result.format()
    assert len(result.images) == 3 and result.top1 == 1.0
    assert "in batches of 1, its fixed batch" in result.inputs
    assert any("went to it one at a time" in n for n in result.notes)


def test_a_broken_batch_of_one_artifact_fails_and_the_slip_is_named(tiny_model, others):
    """The sibling with a tanh GELU FAILS; the hint, tried in PyTorch, names the tanh GELU as
    what reproduces the artifact's output."""
    result = run_check(tiny_model, others["broken"], "batch_of_one")
    assert not result.passed, result.format()
    hint = next(n for n in result.notes if "reproduces it" in n)
    assert "a tanh GELU" in hint.split("reproduces it")[0].rsplit(";", 1)[-1], hint


def test_batch_one_is_allowed_and_says_what_it_hides(tiny_model, others):
    """One random image (`batch` 1) is compared, with a note that the batch axis went
    untested; the command line takes --batch 1."""
    from converters.cli import parser

    result = run_check(tiny_model, others["savedmodel"], "two_outputs", "scores", batch=1)
    assert result.passed and len(result.images) == 1, result.format()
    assert any("an error across the batch axis cannot show" in n for n in result.notes)
    args = parser().parse_args(["verify", "a.pth", "b.tflite", "--batch", "1"])
    assert args.batch == 1


def test_shape_problems_are_found_before_any_pytorch_work(tiny_model, others):
    """A layout the artifact refuses, or another class count, is one ConversionError raised
    before the reference or its floor runs (torch_trace is never called)."""
    called = mock.Mock(side_effect=AssertionError("PyTorch ran"))
    with mock.patch("converters.deploy.verify.torch_trace", called):
        artifact = open_artifact(others["savedmodel"], SPEC, "batch_of_one")
        feed = feeding(artifact, 3, "nhwc", None, None, None, None)
        with pytest.raises(ConversionError, match="refused a batch of shape"):
            verify_models(tiny_model, artifact, random_images(2, SIZE, 3, 0), feed, batch=2)
        other = open_artifact(others["savedmodel"], SPEC, "two_outputs", "scores")
        wider = type(tiny_model.head)(tiny_model.head.in_features, 7)
        with mock.patch.object(tiny_model, "head", wider):
            feed = feeding(other, 3, None, None, None, None, None)
            with pytest.raises(
                ConversionError, match=r"shape \(2, 5\), the PyTorch model \(2, 7\)"
            ):
                verify_models(tiny_model, other, random_images(2, SIZE, 3, 0), feed, batch=2)
    called.assert_not_called()


# --- 3. float16 -------------------------------------------------------------------------------


def test_float16_input_is_detected_and_both_sides_get_the_same_values(tiny_model, others):
    """A .tflite taking float16 is fed float16, and PyTorch the same rounded values: it
    PASSES at float32's tolerance (the rounding of its input, ~5e-4, is not its error)."""
    artifact = open_artifact(others["float16 input"], SPEC)
    assert (artifact.input_dtype, artifact.batch) == ("float16", 1)
    result = run_check(tiny_model, others["float16 input"])
    assert result.passed, result.format()
    assert result.tolerance["precision"] == "float32"
    assert "float16" in result.inputs and "the same rounded values" in result.inputs


@pytest.mark.parametrize("kind", ["tflite-float16", "tflite-dynamic"])
def test_a_quantized_pass_says_what_its_tolerance_cannot_see(tiny_model, deployed, kind):
    """A quantized .tflite PASSES, and its verdict line names the usual slips that its wider
    tolerance would let through, with how much each moves these outputs; a float32 PASS
    says nothing of the kind."""
    result = check(tiny_model, deployed[kind])
    line = result.verdict_line()
    assert result.passed, result.format()
    assert f"blind below {result.tolerance['rtol']:.1e}" in line, line
    assert "would pass unseen" in line
    assert "blind below" not in check(tiny_model, deployed["tflite"]).verdict_line()


# --- 4. several outputs ---------------------------------------------------------------------


def test_output_name_picks_one_of_several_outputs(tiny_model, others):
    """Two outputs, neither called logits: refused with the way to pick; `output_name`
    scores PASSES as logits, embedding_features as features against PyTorch's pooled norm."""
    with pytest.raises(ConversionError, match="pick one with `output_name`"):
        open_artifact(others["savedmodel"], SPEC, "two_outputs")
    with pytest.raises(ConversionError, match="has no output 'logit'"):
        open_artifact(others["savedmodel"], SPEC, "two_outputs", "logit")
    scores = run_check(tiny_model, others["savedmodel"], "two_outputs", "scores")
    assert scores.passed and scores.output_kind == "logits", scores.format()
    features = run_check(tiny_model, others["savedmodel"], "two_outputs", "embedding_features")
    assert features.passed and features.output_kind == "features", features.format()
    assert features.verdict_line().startswith("PASS: features")
    assert features.images == [] and features.output.scale > 0


# --- 5. a fixed size, and the report's words -------------------------------------------------


def test_a_fixed_size_pass_at_a_multiple_of_32_says_to_convert_again(tiny_model, others):
    """A fixed 64x64 artifact cannot take 61x67: the advice after its PASS is to convert it
    again at such a size, not `size` 61 67; a dynamic one gets `size` 61 67, which the HTML
    report writes as --size 61 67 when the command line writes it."""
    from converters.cli import as_flags

    fixed = run_check(tiny_model, others["savedmodel"], "fixed_size", size=FIXED)
    assert fixed.passed, fixed.format()
    assert any("convert it again at a size that is no multiple" in n for n in fixed.notes)
    assert not any("`size` 61 67" in n for n in fixed.notes)
    dynamic = run_check(tiny_model, others["savedmodel"], "two_outputs", "scores", size=FIXED)
    assert any("`size` 61 67" in n for n in dynamic.notes), dynamic.notes
    assert "--size 61 67" in render_html(dynamic, as_flags)
    assert "<code>size</code> 61 67" in render_html(dynamic)


def test_the_command_line_writes_its_report_in_flags():
    """run_verify hands as_flags to the job that writes the report."""
    from converters import cli

    args = cli.parser().parse_args(["verify", "a.pth", "b", "--output-name", "scores"])
    jobs = mock.Mock()
    jobs.verify_file.return_value.format.return_value = "PASS"
    cli.run_verify(args, jobs)
    options = jobs.verify_file.call_args.kwargs
    assert options["wording"] is cli.as_flags and options["output_name"] == "scores"


# --- 6. files verify cannot run --------------------------------------------------------------


def keras2_archive(path: Path) -> Path:
    """A .keras archive as Keras 2.15 writes it: metadata.json names its version."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", json.dumps({"keras_version": "2.15.0"}))
        archive.writestr("config.json", json.dumps({"class_name": "Functional", "config": {}}))
        archive.writestr("model.weights.h5", b"")
    return path


def keras2_h5(path: Path) -> Path:
    """A Keras 2 HDF5 model: root attributes keras_version, backend, model_config."""
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = "2.13.1"
        f.attrs["backend"] = "tensorflow"
        f.attrs["model_config"] = json.dumps({"class_name": "Functional", "config": {}})
        f.create_group("model_weights")
    return path


def tfjs_folder(path: Path) -> Path:
    """A TF.js layers model: model.json (modelTopology, weightsManifest) and one shard."""
    path.mkdir()
    manifest = [{"paths": ["group1-shard1of1.bin"], "weights": []}]
    (path / "model.json").write_text(
        json.dumps({"format": "layers-model", "modelTopology": {}, "weightsManifest": manifest})
    )
    (path / "group1-shard1of1.bin").write_bytes(b"\0" * 8)
    return path


@pytest.mark.parametrize(
    "make, says",
    [
        (
            lambda d: keras2_archive(d / "nobuco.keras"),
            "a Keras 2 model file (keras_version 2.15.0)",
        ),
        (lambda d: keras2_h5(d / "nobuco.h5"), "a Keras 2 model file (keras_version 2.13.1)"),
        (lambda d: tfjs_folder(d / "web_model"), "a TF.js layers model"),
        (lambda d: tfjs_folder(d / "web_model") / "model.json", "a TF.js layers model"),
    ],
    ids=["keras 2 .keras", "keras 2 .h5", "tfjs layers folder", "tfjs layers model.json"],
)
def test_files_verify_cannot_run_are_named_with_the_route_that_works(tmp_path, make, says):
    with pytest.raises(ConversionError) as error:
        open_artifact(make(tmp_path), SPEC)
    message = str(error.value)
    assert says in message and "\n" not in message
    assert ("SavedModel" in message) and ("Keras 2" in says or "TF.js" in message)


# --- 7. hints at a located divergence --------------------------------------------------------


def transposed_depthwise(model: keras.Model) -> str:
    variable = keras_variables(model)["stages.1.0.dwconv.weight"]
    variable.assign(np.ascontiguousarray(variable.numpy().swapaxes(0, 1)))
    return "stages.1.0"


def transposed_stem(model: keras.Model) -> str:
    variable = keras_variables(model)["downsample_layers.0.0.weight"]
    variable.assign(np.ascontiguousarray(variable.numpy().swapaxes(0, 1)))
    return "downsample_layers.0"


@pytest.mark.parametrize(
    "break_, slip",
    [
        (transposed_depthwise, "the depthwise kernels transposed (kh, kw)"),
        (transposed_stem, "the strided conv kernels transposed (kh, kw)"),
    ],
)
def test_a_located_divergence_names_the_slip_that_reproduces_it(tmp_path, tiny_model, break_, slip):
    """At the first divergence, each usual slip is tried on that layer in PyTorch from the
    artifact's own input to it: the one that was made reproduces the artifact's output
    within tolerance (the numbers are in the note), the others do not."""
    model = keras_copy(tiny_model)
    where = break_(model)
    result = check(tiny_model, write(model, tmp_path / "broken.keras"))
    assert result.first_divergence == where, result.format()
    hint = next(n for n in result.notes if n.startswith(f"at {where}"))
    assert f"{slip} reproduces it" in hint, hint
    assert f"{slip} " in hint.split(";", 1)[1] and "as PyTorch has it" in hint
