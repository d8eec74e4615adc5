"""`convnext verify` against artifacts and options that try to fool it or to harm the user:
NaN and Inf outputs that must FAIL, report paths that must not replace anything, names that
must not forge a verdict. Each case was seen to pass wrongly (or to overwrite) before its fix.

The comparison cases run converters.deploy.verify.verify_models on an in-memory artifact whose
output is exactly what the case needs; the command-line cases use real files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch

from converters.deploy.artifacts import Artifact
from converters.deploy.inputs import feeding, random_images
from converters.deploy.verify import verify_models
from converters.errors import ConversionError
from tests.deploy.test_verify import SIZE, SPEC, keras_copy, write
from tests.support.helpers import assert_one_line_error, random_torch_model, run

ROOT = Path(__file__).resolve().parents[2]

pytest.importorskip("ai_edge_litert", reason=".tflite files need ai-edge-litert (deploy extra)")

BATCH = 4


@pytest.fixture(scope="module")
def tiny_model() -> torch.nn.Module:
    return random_torch_model(SPEC, seed=1)


@dataclass
class Scripted(Artifact):
    """A black box whose output is the correct logits passed through `edit`: a deployment
    that is right, or wrong in exactly one chosen way."""

    model: torch.nn.Module | None = None
    edit: object = None

    def run(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            logits = self.model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
        return self.edit(logits.astype(np.float32))


def compare(model: torch.nn.Module, edit) -> object:
    artifact = Scripted(Path("scripted"), "keras", "a scripted black box", model=model, edit=edit)
    feed = feeding(artifact, 3, None, None, None, None, None)
    inputs = random_images(BATCH, SIZE, 3, seed=0)
    return verify_models(model, artifact, inputs, feed, batch=2)


def all_nan(logits):
    return np.full_like(logits, np.nan)


def wrong_with_one_nan(logits):
    """A wildly wrong head (every logit times 7) with a single NaN logit in each image."""
    out = logits * 7.0
    out[:, 2] = np.nan
    return out


def one_inf(logits):
    out = logits.copy()
    out[1, 0] = np.inf
    return out


def nan_in_second_batch_only(logits):
    """NaN only in the images of the second batch, after a first batch that agreed: a
    running max that starts from a finite value must not drop it."""
    out = logits.copy()
    if compare.calls % 2:
        out[:] = np.nan
    compare.calls += 1
    return out


compare.calls = 0


def test_the_scripted_artifact_passes_unedited(tiny_model):
    """The sibling of the NaN cases: the same black box, unedited, PASSES."""
    result = compare(tiny_model, lambda logits: logits)
    assert result.passed, result.format()


@pytest.mark.parametrize(
    "edit, images",
    [
        (all_nan, 4),
        (wrong_with_one_nan, 4),
        (one_inf, 2),  # one image in each batch of 2
        (nan_in_second_batch_only, 2),
    ],
)
def test_nan_or_inf_in_the_output_fails_and_is_named(tiny_model, edit, images):
    """NaN or Inf where PyTorch is finite is a FAIL, whatever the rest of the output: said in
    the verdict's notes with the count of images, in the JSON, and in no image's agreement."""
    result = compare(tiny_model, edit)
    text = result.format()
    assert not result.passed, text
    assert result.output.nonfinite == images
    assert not result.output.ok
    assert f"holds NaN or Inf on {images} of {BATCH} images" in text
    assert text.splitlines()[-1].startswith("FAIL: ")
    data = json.loads(result.to_json())
    assert data["verdict"] == "FAIL" and data["output"]["ok"] is False
    assert data["output"]["nonfinite"] == images
    nan_rows = [row for row in result.images if row.found == -1]
    assert len(nan_rows) == images and not any(row.agree for row in nan_rows)


def test_nan_in_a_block_names_that_block_first(tmp_path, tiny_model):
    """A traced artifact whose stages.1.0 gives NaN (one depthwise weight NaN): FAIL, with
    stages.1.0 the first divergence and the first NaN, in the text and the HTML report."""
    from converters.deploy.artifacts import open_artifact
    from converters.deploy.report import render_html
    from converters.weights.convert import keras_variables

    model = keras_copy(tiny_model)
    variable = keras_variables(model)["stages.1.0.dwconv.weight"]
    value = variable.numpy()
    value.flat[3] = np.nan
    variable.assign(value)
    path = write(model, tmp_path / "nan.weights.h5")
    artifact = open_artifact(path, SPEC)
    feed = feeding(artifact, 3, None, None, None, None, None)
    result = verify_models(tiny_model, artifact, random_images(2, SIZE, 3, 0), feed, batch=2)
    assert not result.passed
    assert result.first_divergence == "stages.1.0"
    assert "first NaN or Inf at stages.1.0" in result.format()
    assert "NaN or Inf" in render_html(result)


def test_a_reference_that_is_not_finite_is_unusable(tiny_model):
    """A checkpoint whose own model gives NaN is no reference: refused, not PASS or FAIL."""
    import copy

    broken = copy.deepcopy(tiny_model)
    with torch.no_grad():
        broken.head.weight[0, 0] = float("nan")
    with pytest.raises(ConversionError, match="the PyTorch model gives NaN or Inf at head"):
        compare(broken, lambda logits: logits)


def test_an_infinite_tolerance_is_refused(tiny_model):
    from converters.deploy.result import Point

    assert not Point("x", 1.0, 1.0, 0.0, float("inf")).ok
    assert not Point("x", 1.0, 1.0, 0.0, 1e-3, atol=float("inf")).ok


# --- the command line: an all-NaN .tflite ---------------------------------------------------


@pytest.fixture(scope="module")
def atto(tmp_path_factory, torch_model) -> Path:
    path = tmp_path_factory.mktemp("atto") / "atto.pth"
    torch.save({"model": torch_model.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def nan_tflite(atto, torch_model) -> Path:
    """The atto conversion exported to .tflite with its head's weights NaN: all-NaN logits,
    what a careless conversion produces."""
    from converters.deploy.export import export_model
    from converters.weights.convert import keras_variables
    from tests.support.helpers import converted_keras_model

    model = converted_keras_model(torch_model, "convnext_atto", "float32", num_classes=10)
    variable = keras_variables(model)["head.weight"]
    variable.assign(np.full(variable.shape, np.nan, np.float32))
    path = atto.with_name("nan.tflite")
    export_model(model, path)
    return path


def test_cli_an_all_nan_tflite_fails_in_text_json_and_html(capsys, tmp_path, atto, nan_tflite):
    report, record = tmp_path / "r.html", tmp_path / "r.json"
    code, out, err = run(
        capsys, "verify", atto, nan_tflite, "--size", *SIZE, "--batch", 2,
        "--report", report, "--json", record,
    )  # fmt: skip
    assert code == 1, out + err
    assert out.strip().splitlines()[-1].startswith("FAIL: logits")
    assert "holds NaN or Inf on 2 of 2 images" in out
    assert "first divergence: head" in out
    assert json.loads(record.read_text())["verdict"] == "FAIL"
    page = report.read_text()
    assert "FAIL: logits" in page and "NaN or Inf" in page
    assert not os.path.exists(tmp_path / "r.html.tmp")


# --- --report and --json: checked before the run, nothing replaced, no input overwritten ----


def refused_before_the_run(capsys, checkpoint: Path, deployed: Path, *options, says: str):
    """verify with these output options: exit 2, one line containing `says`, and nothing read
    (the log has no 'reading' line: a place that cannot be written costs no minutes)."""
    code, out, err = run(capsys, "verify", checkpoint, deployed, *options)
    assert_one_line_error(code, err, says, status=2)
    assert "reading" not in err and out == ""


@pytest.fixture
def artifact_dir(tmp_path) -> Path:
    """A stand-in SavedModel directory: the checks come before anything opens it."""
    path = tmp_path / "savedmodel"
    path.mkdir()
    (path / "saved_model.pb").write_bytes(b"")
    return path


def test_a_directory_given_to_report_is_refused_and_kept(capsys, tmp_path, atto, artifact_dir):
    folder = tmp_path / "reports"
    folder.mkdir()
    (folder / "mine.txt").write_text("keep me")
    for force in ([], ["--force"]):
        refused_before_the_run(
            capsys, atto, artifact_dir, "--report", folder, *force, says="is a directory"
        )
    assert (folder / "mine.txt").read_text() == "keep me"


@pytest.mark.parametrize("which", ["checkpoint", "inside the artifact", "symlink to checkpoint"])
def test_an_input_given_as_an_output_is_refused_even_with_force(
    capsys, tmp_path, atto, artifact_dir, which
):
    data = atto.read_bytes()
    target = {
        "checkpoint": atto,
        "inside the artifact": artifact_dir / "saved_model.pb",
        "symlink to checkpoint": tmp_path / "link.json",
    }[which]
    if which == "symlink to checkpoint":
        target.symlink_to(atto)
    refused_before_the_run(
        capsys, atto, artifact_dir, "--json", target, "--force", says="is one of verify's inputs"
    )
    assert atto.read_bytes() == data
    assert (artifact_dir / "saved_model.pb").read_bytes() == b""


def test_an_output_through_a_symlinked_folder_of_the_artifact_is_refused(
    capsys, tmp_path, atto, artifact_dir
):
    """A SavedModel whose variables/ is a symlink to a folder elsewhere: writing
    `savedmodel/variables/x` or the same place by its real name writes into the artifact."""
    store = tmp_path / "store"
    store.mkdir()
    (store / "variables.index").write_bytes(b"index")
    (artifact_dir / "variables").symlink_to(store)
    for target in (artifact_dir / "variables" / "new.json", store / "variables.index"):
        refused_before_the_run(
            capsys, atto, artifact_dir, "--json", target, "--force", says="verify's inputs"
        )
    assert (store / "variables.index").read_bytes() == b"index"
    assert not (store / "new.json").exists()


def test_a_symlink_to_a_device_is_not_replaced(capsys, tmp_path, atto, artifact_dir):
    link = tmp_path / "out.json"
    link.symlink_to(os.devnull)
    refused_before_the_run(capsys, atto, artifact_dir, "--json", link, says="exists; pass --force")
    refused_before_the_run(
        capsys, atto, artifact_dir, "--json", link, "--force", says="not a regular file"
    )
    assert link.is_symlink() and os.readlink(link) == os.devnull


def test_an_existing_report_needs_force(capsys, tmp_path, atto, artifact_dir):
    old = tmp_path / "r.html"
    old.write_text("previous")
    refused_before_the_run(capsys, atto, artifact_dir, "--report", old, says="pass --force")
    assert old.read_text() == "previous"


def test_one_path_for_both_outputs_is_refused(capsys, tmp_path, atto, artifact_dir):
    path = tmp_path / "same"
    refused_before_the_run(
        capsys, atto, artifact_dir, "--report", path, "--json", path, says="given to both"
    )


def test_an_output_in_a_missing_directory_is_refused_before_the_run(
    capsys, tmp_path, atto, artifact_dir
):
    refused_before_the_run(
        capsys, atto, artifact_dir, "--json", tmp_path / "nowhere" / "r.json", says="no such dir"
    )


def test_force_replaces_a_previous_report(capsys, tmp_path, atto, nan_tflite):
    """The sibling of the refusals: with --force an existing regular file is replaced (a
    check rerun rewrites its report), atomically, with no temporary left beside it."""
    record = tmp_path / "r.json"
    record.write_text("previous")
    code, out, err = run(
        capsys, "verify", atto, nan_tflite, "--size", *SIZE, "--batch", 2, "--json", record,
        "--force",
    )  # fmt: skip
    assert code == 1, out + err
    assert json.loads(record.read_text())["verdict"] == "FAIL"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


# --- SavedModels that reach out: an allow-list over everything loading or calling runs ------


def savedmodel(directory: Path, module, signatures=None) -> Path:
    import tensorflow as tf

    path = directory / "model"
    tf.saved_model.save(module, str(path), signatures=signatures)
    return path


def serving(body):
    """A serving signature whose logits are `body`'s side effect followed by a mean."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    def serve(images):
        body()
        return {"logits": tf.reduce_mean(images, axis=[1, 2])}

    return serve


def test_an_op_a_deny_list_missed_is_refused_at_call_time(capsys, tmp_path, atto):
    """tf.print to a file writes it when called (PrintV2 with output_stream="file://..."),
    an op the old list of forbidden ops did not name: refused before loading, never run."""
    import tensorflow as tf

    target = tmp_path / "printed"
    serve = serving(lambda: tf.print("x", output_stream=f"file://{target}"))
    module = tf.Module()
    module.serve = serve
    path = savedmodel(tmp_path, module, {"serving_default": serve})
    code, _, err = run(capsys, "verify", atto, path, "--size", 61, 67)
    assert_one_line_error(code, err, "refused: serve", "runs StringFormat", status=2)
    assert not target.exists()


def test_a_resource_initializer_that_writes_at_load_time_is_refused(capsys, tmp_path, atto):
    """A resource whose _initialize runs when tf.saved_model.load restores it: the file would
    be written by loading alone, before any signature is called. Refused unloaded."""
    import tensorflow as tf

    target = tmp_path / "written-at-load"

    class Writer(tf.saved_model.experimental.TrackableResource):
        def _create_resource(self):
            return tf.raw_ops.VarHandleOp(dtype=tf.float32, shape=[], shared_name="w")

        def _initialize(self):
            tf.io.write_file(str(target), "x")

    module = tf.Module()
    module.writer = Writer()
    module.serve = serving(lambda: None)
    path = savedmodel(tmp_path, module, {"serving_default": module.serve})
    target.unlink(missing_ok=True)  # saving ran the initializer once: the test is of loading
    code, _, err = run(capsys, "verify", atto, path, "--size", 61, 67)
    assert_one_line_error(code, err, "refused: writer/", status=2)
    assert not target.exists()


def test_a_function_outside_the_signatures_is_checked_too(capsys, tmp_path, atto):
    """The object graph, not the meta graph's signature_def, is what TF2 loads: a clean
    signature beside a function that reads a file is refused, naming where that sits."""
    import tensorflow as tf

    secret = tmp_path / "secret.txt"
    secret.write_text("private")
    module = tf.Module()
    module.serve = serving(lambda: None)
    module.peek = tf.function(lambda: tf.io.read_file(str(secret)), input_signature=[])
    module.peek.get_concrete_function()
    path = savedmodel(tmp_path, module, {"serving_default": module.serve})
    code, out, err = run(capsys, "verify", atto, path, "--size", 61, 67)
    assert_one_line_error(code, err, "refused: peek runs ReadFile", status=2)
    assert "private" not in out + err


def test_a_tf1_savedmodel_is_refused(tmp_path):
    from tensorflow.core.protobuf import saved_model_pb2

    from converters.files.savedmodel import check_savedmodel

    saved = saved_model_pb2.SavedModel()
    saved.meta_graphs.add()
    (tmp_path / "saved_model.pb").write_bytes(saved.SerializeToString())
    with pytest.raises(ConversionError, match="a TF1 SavedModel"):
        check_savedmodel(tmp_path)


# --- export: what the destination's name says -----------------------------------------------


def test_export_suffixes_are_case_insensitive_and_unknown_ones_refused(capsys, tmp_path, atto):
    import convnext_tf
    from converters.deploy.artifacts import is_tflite
    from converters.deploy.export import export_model

    path = tmp_path / "model.TFLITE"

    def write(model, destination, *args, **kwargs):
        Path(destination).write_bytes(b"\0\0\0\0TFL3")

    with mock.patch("converters.deploy.export.write_tflite", write):
        export_model(convnext_tf.create_model(SPEC), path)  # the LiteRT converter: not the test
    assert path.is_file() and is_tflite(path)  # a LiteRT file, not a SavedModel directory
    for name in ("model.onnx", "model.pb"):
        code, _, err = run(capsys, "export", atto, tmp_path / name)
        assert_one_line_error(code, err, "export writes a .tflite file or a SavedModel")
        assert not (tmp_path / name).exists()


def test_export_force_does_not_delete_the_users_files_in_a_savedmodel(capsys, tmp_path, atto):
    folder = tmp_path / "served"
    (folder / "variables").mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"")
    (folder / "notes.txt").write_text("mine")
    code, _, err = run(capsys, "export", atto, folder, "--force")
    assert_one_line_error(code, err, "holds files a SavedModel does not (notes.txt)")
    assert (folder / "notes.txt").read_text() == "mine"


# --- options out of bounds: one line, before the work ---------------------------------------


@pytest.mark.parametrize(
    "options, says",
    [
        (["--seed", "-1"], "--seed must be 0 or more"),
        (["--size", "100000", "100000"], "GB are available: pass a smaller --batch or --size"),
        (["--batch", "100000"], "takes about"),
    ],
)
def test_options_out_of_bounds_are_one_line_before_any_model_runs(
    capsys, atto, artifact_dir, options, says
):
    """--seed -1 ended in numpy's ValueError, a huge --size or --batch was killed for memory
    with no message: each is refused before the artifact is opened or a model runs."""
    code, out, err = run(capsys, "verify", atto, artifact_dir, *options)
    assert_one_line_error(code, err, says, status=2)
    assert "opening" not in err and out == ""


def test_python_api_misuse_raises_conversion_or_type_errors_naming_the_parameter(atto):
    from converters import jobs

    bad = ConversionError
    cases = [
        (lambda: jobs.convert_file(atto, "o.keras", layout="bogus"), bad, "`layout`"),
        (lambda: jobs.convert_file(None, "o.keras"), TypeError, "`src`"),
        (lambda: jobs.convert_file(atto, "o.keras", num_classes="1"), TypeError, "num_classes"),
        (lambda: jobs.inspect_file(atto, layout="x"), ConversionError, "`layout`"),
        (lambda: jobs.export_file(atto, "o.tflite", layout="x"), ConversionError, "`layout`"),
        (lambda: jobs.verify_file(atto, None), TypeError, "`deployed`"),
        (lambda: jobs.verify_file(atto, "d", atol=float("inf")), ConversionError, "`atol`"),
        (lambda: jobs.verify_file(atto, "d", batch="4"), TypeError, "`batch`"),
        (lambda: jobs.verify_file(atto, "d", size=(64,)), TypeError, "`size`"),
    ]  # fmt: skip
    for call, kind, names in cases:
        with pytest.raises(kind, match=names):
            call()


def test_a_custom_op_tflite_names_the_operator(tmp_path, nan_tflite):
    """A .tflite whose first operator is a custom one LiteRT does not have: named, not
    taken for an input layout or size problem."""
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as schema

    from converters.deploy.artifacts import open_artifact
    from converters.deploy.verify import call

    model = schema.ModelT.InitFromPackedBuf(nan_tflite.read_bytes(), 0)
    code = model.operatorCodes[0]
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
    code.customCode = "EvilOp"
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    (tmp_path / "custom.tflite").write_bytes(builder.Output())
    artifact = open_artifact(tmp_path / "custom.tflite")
    with pytest.raises(ConversionError, match="uses the custom operator EvilOp"):
        call(artifact.run, artifact, np.zeros((1, *SIZE, 3), np.float32))


def test_no_stray_lines_on_stderr_from_litert_or_numpy(capfd, tmp_path, atto, nan_tflite):
    """The one-line promise: a verify of a .tflite with NaN in it prints its log lines and
    nothing else on stderr, at the file descriptor (LiteRT's C++ writes its delegate notice
    there), and raises no Python warning (numpy's would be a line of its own)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        code, _, err = run(capfd, "verify", atto, nan_tflite, "--size", *SIZE, "--batch", 2)
    assert code == 1, err
    assert "INFO:" not in err and "Warning" not in err, err


def test_verify_of_a_tflite_file_loads_no_tensorflow(tmp_path, atto, nan_tflite):
    """LiteRT runs a .tflite file alone: `convnext verify` of one, in a fresh process, goes
    through every stage (the checkpoint, the artifact, the reference, the floor, its stage
    outputs, the hints after a FAIL) without importing TensorFlow or Keras, whose start-up is
    most of a verify's time; the JSON says how long each stage took."""
    record = tmp_path / "r.json"
    code = (
        "import sys\n"
        "from converters.cli import main\n"
        f"code = main(['verify', {str(atto)!r}, {str(nan_tflite)!r}, '--size', '{SIZE[0]}', "
        f"'{SIZE[1]}', '--batch', '2', '--json', {str(record)!r}])\n"
        "print(code, sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert result.stdout.strip().splitlines()[-1] == "1 []", result.stdout + result.stderr
    timings = json.loads(record.read_text())["timings"]
    assert list(timings)[:3] == [
        "read the checkpoint",
        "build the PyTorch model",
        "open the artifact (TensorFlow's import, where it needs it)",
    ]
    assert "the artifact's stage outputs" in timings and "hints" in timings
    assert all(seconds >= 0 for seconds in timings.values())


def test_a_picture_past_pillows_warning_size_is_refused_in_one_line(tmp_path):
    from PIL import Image

    from converters.deploy.inputs import read_image

    path = tmp_path / "huge.png"
    Image.new("L", (10000, 9000)).save(path)  # 90 million pixels: Pillow warns past 89.5
    with pytest.raises(ConversionError, match="refused: Image size"):
        read_image(path, (64, 64), 3)


def test_a_loop_or_a_recursive_call_is_refused(capsys, tmp_path, atto):
    """Every op of an endless tf.while_loop is harmless alone, and it hung verify inside
    TensorFlow, where SIGTERM cannot reach: loops are not on the allow-list. A function that
    calls itself is the other way to loop: refused too (a call planted in the graph)."""
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    from converters.files.savedmodel import check_savedmodel, roots

    serve = serving(lambda: tf.while_loop(lambda i: i >= 0, lambda i: i + 1, [0]))
    module = tf.Module()
    module.serve = serve
    path = savedmodel(tmp_path, module, {"serving_default": serve})
    code, _, err = run(capsys, "verify", atto, path, "--size", 61, 67)
    assert_one_line_error(code, err, "While", status=2)

    clean = tf.Module()
    clean.serve = serving(lambda: None)
    path = savedmodel(tmp_path / "clean", clean, {"serving_default": clean.serve})
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((path / "saved_model.pb").read_bytes())
    graph = saved.meta_graphs[0]
    name = next(iter(roots(graph.object_graph_def)))
    function = next(f for f in graph.graph_def.library.function if f.signature.name == name)
    function.node_def.add(name="again", op=name)
    (path / "saved_model.pb").write_bytes(saved.SerializeToString())
    with pytest.raises(ConversionError, match="calls itself"):
        check_savedmodel(path)


def test_a_fifo_or_symlink_inside_a_savedmodel_is_refused(tmp_path):
    """The loader would block for ever on a FIFO where its variables belong."""
    from converters.files.savedmodel import check_savedmodel

    for kind in ("fifo", "symlink"):
        path = tmp_path / kind
        (path / "variables").mkdir(parents=True)
        (path / "saved_model.pb").write_bytes(b"")
        data = path / "variables" / "variables.data-00000-of-00001"
        if kind == "fifo":
            os.mkfifo(data)
        else:
            data.symlink_to("/dev/zero")
        with pytest.raises(ConversionError, match=f"{data.name} is"):
            check_savedmodel(path)


def test_a_directory_that_appears_at_a_report_path_is_not_replaced(tmp_path):
    """Checked before the run, a report path can become a directory while verify runs:
    --force replaces a regular file only, so the directory and its files stay."""
    from converters.files.outputs import write_text

    path = tmp_path / "race.html"
    path.mkdir()
    (path / "notes.txt").write_text("precious")
    with pytest.raises(ConversionError, match="became a directory"):
        write_text("<html></html>", path, force=True)
    assert (path / "notes.txt").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["race.html"]
