"""`convnext verify` and `convnext export` from the command line: exit codes, the report and
JSON, one line for each unusable input, nothing left behind by a failed export, and what a
first user got wrong."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
import torch

from converters.deploy.verify import verify
from converters.weights.convert import keras_variables
from convnext_spec.spec import ModelSpec
from tests.support.helpers import (
    BATCH,
    assert_one_line_error,
    converted_keras_model,
    random_torch_model,
    run,
)
from tests.support.verifying import (
    SIZE,
    SPEC,
    assert_passes,
    assert_unusable,
    check,
    in_pieces,
    perturb_one_value,
    temp_dirs,
    tree,
    write,
)

# The `deploy` extra (make install brings it; the lowest-versions environment does not):
# Pillow for pictures, LiteRT for .tflite files.
pytest.importorskip("PIL", reason="convnext verify --images needs Pillow (the deploy extra)")
pytest.importorskip("ai_edge_litert", reason=".tflite files need ai-edge-litert (deploy extra)")


@pytest.fixture(scope="module")
def atto_checkpoint(tmp_path_factory, torch_model) -> Path:
    """conftest's convnext_atto (10 classes, randomised) as an official training checkpoint:
    the command line reads named variants only."""
    path = tmp_path_factory.mktemp("atto") / "atto.pth"
    torch.save({"model": torch_model.state_dict(), "epoch": 1}, path)
    return path


@pytest.fixture(scope="module")
def atto_savedmodel(atto_checkpoint) -> Path:
    """`convnext export atto.pth DST`: a SavedModel directory from a PyTorch checkpoint (the
    .tflite path of export is the same code, run from a Keras file by `deployed`)."""
    from converters.cli import main

    path = atto_checkpoint.with_name("atto_savedmodel")
    assert main(["export", str(atto_checkpoint), str(path)]) == 0
    return path


def test_cli_export_then_verify_passes_exit_0_with_report_and_json(
    capsys, tmp_path, atto_checkpoint, atto_savedmodel, pictures
):
    """`convnext export` then `convnext verify --images DIR`: PASS, exit 0, the verdict
    printed, and the report and JSON written; the JSON loads, with every block compared and
    a row per picture, and the HTML page carries the verdict and its plot."""
    report, record = tmp_path / "report.html", tmp_path / "result.json"
    code, out, err = run(
        capsys, "verify", atto_checkpoint, atto_savedmodel, "--images", pictures,
        "--report", report, "--json", record,
    )  # fmt: skip
    assert code == 0, out + err
    assert out.strip().splitlines()[-1].startswith("PASS: logits max rel")
    data = json.loads(record.read_text())
    assert data["verdict"] == "PASS" and data["first_divergence"] is None
    assert [p["name"] for p in data["points"]][:3] == [
        "downsample_layers.0",
        "stages.0.0",
        "stages.0.1",
    ]
    assert [row["name"] for row in data["images"]] == ["a.png", "b.jpg", "c.png"]
    page = report.read_text()
    assert "PASS: logits max rel" in page and "data:image/png;base64," in page


@pytest.fixture(scope="module")
def broken_atto_weights(atto_checkpoint, torch_model) -> Path:
    """The atto conversion with one value of stages.2.3's pwconv2 kernel moved by 1e-2."""
    model = converted_keras_model(torch_model, "convnext_atto", "float32", num_classes=10)
    perturb_one_value(keras_variables(model)["stages.2.3.pwconv2.weight"], 1e-2)
    path = atto_checkpoint.with_name("broken.weights.h5")
    model.save_weights(path)
    return path


def test_cli_fail_exits_1_naming_the_first_divergence(
    capsys, tmp_path, atto_checkpoint, broken_atto_weights
):
    """A broken deployment: FAIL, exit 1, the first divergence printed and in the JSON.
    Run as `compare`, verify's old name: the same command."""
    record = tmp_path / "result.json"
    code, out, err = run(
        capsys, "compare", atto_checkpoint, broken_atto_weights, "--size", *SIZE,
        "--batch", BATCH, "--json", record,
    )  # fmt: skip
    assert code == 1, out + err
    assert "first divergence: stages.2.3" in out
    assert out.strip().splitlines()[-1].startswith("FAIL: logits")
    data = json.loads(record.read_text())
    assert (data["verdict"], data["first_divergence"]) == ("FAIL", "stages.2.3")


def no_image_signature(directory: Path) -> Path:
    """A SavedModel whose serving signature takes a 1-D int32 tensor: no image at all."""

    class Tokens(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.int32)])
        def serve(self, tokens):
            return {"logits": tf.cast(tokens, tf.float32)[:, None] * tf.ones([1, 10])}

    module, path = Tokens(), directory / "tokens"
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


def folder_with(directory: Path, files: dict[str, bytes]) -> Path:
    """A folder holding one good PNG and `files` (name -> content)."""
    from PIL import Image

    folder = directory / "pictures"
    folder.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(folder / "good.png")
    for name, content in files.items():
        (folder / name).write_bytes(content)
    return folder


def not_a_savedmodel(directory: Path) -> Path:
    (directory / "exported").mkdir()
    (directory / "exported" / "model.bin").write_bytes(b"\0" * 16)
    return directory / "exported"


# name -> (make(a fresh folder, good artifacts) -> arguments after TORCH_SRC, what the line says)
UNUSABLE = {
    "missing DEPLOYED": (lambda d, a: [d / "missing.tflite"], "no such file or directory"),
    "folder with a non-image file": (
        lambda d, a: [a["atto"], "--images", folder_with(d, {"notes.txt": b"hello"})],
        "notes.txt: not a JPEG or PNG file (--images takes only those)",
    ),
    "folder with an undecodable PNG": (
        lambda d, a: [a["atto"], "--images", folder_with(d, {"broken.png": b"\x89PNG\r\n"})],
        "broken.png: cannot decode the image",
    ),
    "directory that is not a SavedModel": (
        lambda d, a: [not_a_savedmodel(d)],
        "a directory, but not a SavedModel",
    ),
    "signature taking no image": (
        lambda d, a: [no_image_signature(d)],
        "takes no single float image batch",
    ),
    "other variant, 5 classes for 10": (
        lambda d, a: [a["spec"], "--size", *SIZE, "--batch", BATCH],
        "gives outputs of shape (2, 5), the PyTorch model (2, 10): another variant or class",
    ),
}


@pytest.mark.parametrize("name", list(UNUSABLE))
def test_cli_unusable_input_exits_2_and_writes_nothing(
    capsys, tmp_path, atto_checkpoint, atto_savedmodel, deployed, name
):
    """Unusable input: exit 2, one line naming the problem, no verdict, and neither the
    report nor the JSON written."""
    make, says = UNUSABLE[name]
    report, record = tmp_path / "report.html", tmp_path / "result.json"
    arguments = make(tmp_path, {"atto": atto_savedmodel, "spec": deployed["savedmodel"]})
    code, out, err = run(
        capsys, "verify", atto_checkpoint, *arguments, "--report", report, "--json", record
    )
    assert_unusable(code, out, err, says)
    assert not report.exists() and not record.exists()
    assert temp_dirs(tmp_path) == []


@pytest.mark.parametrize("kind", ["savedmodel", "tflite"])
def test_cli_export_refuses_an_existing_destination(
    capsys, atto_checkpoint, atto_savedmodel, deployed, kind
):
    """Without --force, export refuses a DST that exists: exit 1, one line, and DST exactly
    as it was (the same files, sizes and times)."""
    src, dst = {
        "savedmodel": (atto_checkpoint, atto_savedmodel),
        "tflite": (deployed["keras"], deployed["tflite"]),
    }[kind]
    before = tree(dst)
    code, _, err = run(capsys, "export", src, dst)
    assert_one_line_error(code, err, str(dst), "exists", "--force")
    assert tree(dst) == before
    assert temp_dirs(dst.parent) == []


def test_cli_export_force_replaces_a_savedmodel(
    capsys, tmp_path, tiny_model, deployed, atto_savedmodel
):
    """With --force, export replaces an existing SavedModel whole: the 10-class atto export
    at DST becomes SPEC's 5-class model (exported from a .keras file), which verifies, and
    nothing of the old one or of the temporary directory is left. (A folder that holds other
    files besides is refused: test_verify_hostile.)"""
    dst = tmp_path / "savedmodel"
    shutil.copytree(atto_savedmodel, dst)
    (dst / "assets").mkdir(exist_ok=True)
    (dst / "assets" / "stale.txt").write_text("from the old export")
    code, out, err = run(capsys, "export", deployed["keras"], dst, "--force")
    assert code == 0, err
    assert not (dst / "assets" / "stale.txt").exists()
    assert_passes(check(tiny_model, dst))
    assert temp_dirs(tmp_path) == []


def test_weights_past_the_flatbuffers_2_gb_are_written_at_offsets_and_verify(
    capsys, monkeypatch, tmp_path, tiny_model, deployed
):
    """A model whose float32 weights pass what a flatbuffer holds (2 GiB: convnextv2_huge)
    is written with its weights after the flatbuffer, at offsets, which LiteRT reads: here the
    tiny model, with the threshold at 0 bytes. The file verifies, block by block, and differs
    from the usual one (seen: with the option left off, it is the usual file)."""
    monkeypatch.setattr("converters.deploy.export.BUFFER_OFFSETS_FROM", 0)
    dst = tmp_path / "offsets.tflite"
    with in_pieces():
        code, out, err = run(capsys, "export", deployed["keras"], dst)
    assert code == 0, err
    assert "the weights pass 2 GB: written after the flatbuffer, at offsets" in out + err
    assert dst.read_bytes() != deployed["tflite"].read_bytes()
    result = check(tiny_model, dst)
    assert_passes(result)
    assert len(result.points) > 3  # the stages signature is there, after the offsets too


def test_cli_export_quantize_needs_a_tflite_destination(capsys, tmp_path, deployed):
    """--quantize with a SavedModel destination is an error: exit 1, one line, nothing
    written."""
    dst = tmp_path / "savedmodel"
    code, _, err = run(capsys, "export", deployed["keras"], dst, "--quantize", "float16")
    assert_one_line_error(code, err, "--quantize", ".tflite")
    assert not dst.exists() and temp_dirs(tmp_path) == []


def failing_savedmodel(signatures, path: str) -> None:
    """tf.saved_model.save that dies halfway: a partial directory, then an I/O error."""
    os.makedirs(os.path.join(path, "variables"))
    Path(path, "saved_model.pb").write_bytes(b"partial")
    raise OSError(errno.EIO, "Input/output error (simulated)", path)


def failing_converter(monkeypatch) -> None:
    """The LiteRT converter failing, after export opened the .tflite file to write and wrote
    the SavedModel it converts from."""
    from_saved_model = tf.lite.TFLiteConverter.from_saved_model

    def failing(*args, **kwargs):
        converter = from_saved_model(*args, **kwargs)
        converter.convert = lambda: (_ for _ in ()).throw(RuntimeError("simulated"))
        return converter

    monkeypatch.setattr(tf.lite.TFLiteConverter, "from_saved_model", failing)


@pytest.mark.parametrize(
    "kind, force",
    [("savedmodel", False), ("tflite", False), ("savedmodel", True)],
    ids=["savedmodel", "tflite", "savedmodel over an existing one, --force"],
)
def test_cli_failed_export_leaves_nothing_behind(
    capsys, monkeypatch, tmp_path, deployed, kind, force
):
    """An export that fails while writing exits 1 with one line, and leaves nothing at DST
    and no .convnext-* temporary file or directory beside it (a .tflite is converted from a
    SavedModel written there); with --force over an existing SavedModel, the old one is left
    exactly as it was."""
    existing = deployed["savedmodel"] if force else None  # written before writing is broken
    if kind == "tflite":
        failing_converter(monkeypatch)
    else:
        monkeypatch.setattr("converters.deploy.export.save_savedmodel", failing_savedmodel)
    dst = tmp_path / ("model.tflite" if kind == "tflite" else "savedmodel")
    if force:
        shutil.copytree(existing, dst)
    before = tree(dst) if force else None
    code, _, err = run(capsys, "export", deployed["keras"], dst, *(["--force"] if force else []))
    assert_one_line_error(code, err, "simulated")
    if force:
        assert tree(dst) == before  # the old SavedModel, untouched
    else:
        assert not dst.exists()
    assert temp_dirs(tmp_path) == []


def nchw_model_of_unknown_shape(directory: Path) -> Path:
    """A SavedModel whose signature takes (None, None, None, None) but computes on NCHW:
    nothing in its shape says so, and it fails on an NHWC batch with TensorFlow's error."""
    module = tf.Module()

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, None], tf.float32)])
    def serve(images):
        images = tf.ensure_shape(images, [None, 3, None, None])
        return {"logits": tf.tile(tf.reduce_mean(images, axis=[2, 3]), [1, 4])[:, :10]}

    module.serve = serve
    path = directory / "unknown_layout"
    tf.saved_model.save(module, str(path), signatures={"serving_default": serve})
    return path


def test_cli_an_artifact_that_refuses_the_batch_is_one_line_naming_the_options(
    capsys, tmp_path, atto_checkpoint
):
    code, out, err = run(
        capsys,
        "verify",
        atto_checkpoint,
        nchw_model_of_unknown_shape(tmp_path),
        "--size",
        *SIZE,
        "--batch",
        BATCH,
    )
    assert_unusable(code, out, err, "refused a batch of shape (2, 61, 67, 3)", "--layout")


@pytest.mark.parametrize("kind", ["tflite", "savedmodel", "keras"])
def test_cli_deployed_model_given_first_is_named_as_such(capsys, atto_checkpoint, deployed, kind):
    code, out, err = run(capsys, "verify", deployed[kind], atto_checkpoint)
    assert_unusable(code, out, err, "verify takes the PyTorch checkpoint first")


def test_cli_export_of_a_keras_file_refuses_model_options(capsys, tmp_path, deployed):
    """A .keras file records its model: --num-classes or --variant would be ignored."""
    code, _, err = run(capsys, "export", deployed["keras"], tmp_path / "out", "--num-classes", 0)
    assert_one_line_error(code, err, "a .keras file records its model")
    assert not (tmp_path / "out").exists()


def test_cli_a_misspelt_option_gets_a_close_match(capsys):
    with pytest.raises(SystemExit) as exit_:
        run(capsys, "export", "a.pth", "b.tflite", "--quantise", "float16")
    assert exit_.value.code == 2
    assert "did you mean --quantize?" in capsys.readouterr().err


def test_a_headless_export_is_verified_as_features(tmp_path, tiny_model):
    """An export without a head serves `features`: compared as such, no top-1 rows."""
    headless = ModelSpec(depths=SPEC.depths, dims=SPEC.dims, num_classes=0)
    torch_model = random_torch_model(headless, seed=2)
    model = converted_keras_model(torch_model, headless, "float32")
    path = write(model, tmp_path / "features")
    result = check(torch_model, path, spec=headless)
    assert result.passed and result.output_kind == "features", result.format()
    assert result.top1 is None and result.images == []


@pytest.mark.exhaustive
def test_keras_applications_exported_with_model_export_passes_with_no_option(
    tmp_path, convnext_tiny, applications_model
):
    """keras.applications saved the standard Keras 3 way, `model.export(dir)`: a SavedModel
    whose graph holds keras.applications' input normalisation, so pixels 0-255 are detected
    from it, and its softmax from its values."""
    _, checkpoint = convnext_tiny
    keras.models.load_model(applications_model).export(str(tmp_path / "exported"), verbose=False)
    result = verify(checkpoint, tmp_path / "exported", batch=BATCH)
    assert result.passed, result.format()
    assert "pixels 0-255" in result.inputs and result.output_kind == "probabilities"
