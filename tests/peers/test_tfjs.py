"""Optional: `convnext verify` on TF.js graph models, as tensorflowjs_converter writes them from a
SavedModel for a web page, run by TF.js itself in Node.

`make test-peers` builds the converter's environment (.venv-tfjs: tensorflowjs 4.22 pins
tensorflow 2.19; CONVNEXT_TFJS_PYTHON names another) and installs TF.js into .tfjs/ (`make
tfjs`); without either these tests are skipped. From one random convnext_atto checkpoint, the
SavedModel `convnext export` writes is converted (a TF.js graph model keeps only the serving
signature: a black box, whose blocks are found among its node outputs): the correct model
PASSES at 224x224 and at 61x67, and the same conversion with one weight of stages.2.1 moved
FAILS with stages.2.1 named, which it no longer does with the matching disabled. A float16
model (`--quantize_float16`) is compared as float16, its PASS line saying what it cannot see;
broken, it still passes at the logits, and its blocks name stages.2.1. A uint8 model's weights
are PyTorch's quantized exactly as the converter does (each range found in its manifest), so
it is held to float32's tolerance against PyTorch on those weights: broken, it FAILS there.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

import convnext_torch
from converters.deploy import locate
from converters.deploy.artifacts.tfjs import DEFAULT_MODULES
from tests.peers.test_third_party_artifacts import (
    BROKEN_BLOCK,
    BROKEN_SIZE,
    SIZES,
    VARIANT,
    converter_python,
    verdict,
)
from tests.support.helpers import run
from tests.support.parity import randomize_

PYTHON = converter_python("tfjs")
CONVERTER = None if PYTHON is None else PYTHON.parent / "tensorflowjs_converter"

pytestmark = [
    pytest.mark.peer,
    pytest.mark.skipif(
        CONVERTER is None or not CONVERTER.exists(),
        reason="no tensorflowjs_converter (make test-peers builds .venv-tfjs, or set "
        "CONVNEXT_TFJS_PYTHON)",
    ),
    pytest.mark.skipif(
        shutil.which("node") is None or not (DEFAULT_MODULES / "@tensorflow").is_dir(),
        reason="no TF.js in Node (make tfjs installs it into .tfjs/)",
    ),
]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """A random convnext_atto with 5 classes in the official layout, and the same with one
    value of stages.2.1.pwconv2.weight moved by 0.1."""
    directory = tmp_path_factory.mktemp("tfjs")
    state = randomize_(convnext_torch.create_model(VARIANT, num_classes=5), seed=3).state_dict()
    paths = {"correct": directory / "atto.pth", "broken": directory / "broken.pth"}
    torch.save(state, paths["correct"])
    weight = state[f"{BROKEN_BLOCK}.pwconv2.weight"]
    weight.view(-1)[weight.numel() // 3] += 0.1
    torch.save(state, paths["broken"])
    return paths


@pytest.fixture(scope="module")
def web_models(checkpoints, tmp_path_factory) -> dict[str, Path]:
    """(correct|broken)[-float16] -> a TF.js graph model folder, from convnext export's
    SavedModel of that checkpoint by the real tensorflowjs_converter."""
    from converters.jobs.export import export_file

    directory = tmp_path_factory.mktemp("web")
    models = {}
    for name, checkpoint in checkpoints.items():
        savedmodel = directory / f"{name}_savedmodel"
        export_file(checkpoint, savedmodel)
        quantized = {"-float16": "--quantize_float16", "-uint8": "--quantize_uint8"}
        for suffix, options in [("", []), *((s, [o, "*"]) for s, o in quantized.items())]:
            out = directory / f"{name}{suffix}_web"
            argv = [CONVERTER, "--input_format=tf_saved_model", *options, savedmodel, out]
            done = subprocess.run([str(a) for a in argv], capture_output=True, text=True)
            assert done.returncode == 0, done.stderr[-3000:]
            models[name + suffix] = out
    return models


def verify(capsys, checkpoint: Path, model: Path, size, *options) -> tuple[int, str]:
    code, out, err = run(capsys, "verify", checkpoint, model, "--size", *size, *options)
    print(f"\n{model.name} {size[0]}x{size[1]}: {verdict(out) or err.strip()[-300:]}")
    return code, out + err


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_correct_web_model_passes(capsys, checkpoints, web_models, size):
    code, out = verify(capsys, checkpoints["correct"], web_models["correct"], size)
    assert code == 0, out
    assert re.search(r"^PASS: logits max rel", out, re.MULTILINE), out
    assert "TF.js graph model" in out and re.search(r"^tfjs: +4\.22\.0 \(wasm", out, re.M), out


def test_one_broken_weight_is_localised(capsys, checkpoints, web_models):
    """FAIL, with stages.2.1 named from the model's own node outputs, under TF.js's name."""
    code, out = verify(capsys, checkpoints["correct"], web_models["broken"], BROKEN_SIZE)
    assert code == 1, out
    assert f"first divergence: {BROKEN_BLOCK}" in out, out
    assert re.search(r"stages\.2\.1 .*out of tolerance.*best of its shape: \S*stages\.2", out)


def test_localisation_is_seen_failing_without_the_matching(capsys, checkpoints, web_models):
    """The same FAIL with no tensor read as a block's (locate.readings gives none): nothing
    is located, so no block is named. The test above rests on the matching."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(locate, "readings", lambda reference, value: iter(()))
        code, out = verify(capsys, checkpoints["correct"], web_models["broken"], BROKEN_SIZE)
    assert code == 1, out
    assert "first divergence" not in out, out


def test_float16_web_model_is_compared_as_float16_and_says_what_it_cannot_see(
    capsys, checkpoints, web_models
):
    code, out = verify(capsys, checkpoints["correct"], web_models["correct-float16"], SIZES[1])
    assert code == 0, out
    assert "stored as float16: compared as float16" in out, out
    assert "18 of 18 points" in out and "matches no tensor" not in out, out  # its blocks too
    assert re.search(r"^PASS: .*float16 noise floor.*blind below", out, re.MULTILINE), out


def test_float16_web_model_with_a_broken_weight_names_the_block_its_logits_hide(
    capsys, checkpoints, web_models
):
    """The logits pass under float16's tolerance; its blocks, compared on a PASS too under a
    tolerance that wide, name stages.2.1 as the first that matches no tensor."""
    code, out = verify(capsys, checkpoints["correct"], web_models["broken-float16"], SIZES[1])
    assert code == 0, out
    assert "stages.2.1 matches no tensor, and later points do" in out, out


@pytest.mark.parametrize("name, code", [("correct-uint8", 0), ("broken-uint8", 1)])
def test_uint8_web_model_is_held_to_float32_on_its_own_weights(
    capsys, checkpoints, web_models, name, code
):
    got, out = verify(capsys, checkpoints["correct"], web_models[name], SIZES[1])
    assert got == code, out
    assert (
        "quantized to uint8 as the converter does (rounded in float64), is among its own" in out
    ), out
    assert "float32 noise floor" in out, out
    if code:
        assert f"first divergence: {BROKEN_BLOCK}" in out, out
