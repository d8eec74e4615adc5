"""The `convnext` command line: conversions that work, and one clear line for each bad input,
with a non-zero exit and nothing left behind."""

import subprocess
import sys
from pathlib import Path

import keras
import pytest
import torch

import convnext_tf
from tests.support.helpers import (
    Exploit,
    assert_one_line_error,
    assert_same_logits,
    run,
)

VARIANT = "convnext_atto"


def test_convert_to_weights_file_infers_variant(capsys, tmp_path, checkpoint, torch_model):
    dst = tmp_path / "out.weights.h5"
    code, _, err = run(capsys, "convert", checkpoint, dst)
    assert code == 0, err
    assert "inferred convnext_atto: num_classes=10, in_chans=3" in err
    assert "128 tensors" in err
    keras_model = convnext_tf.create_model(VARIANT, num_classes=10)
    keras_model.load_weights(dst)
    assert_same_logits(torch_model, keras_model)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pth", "out.weights.h5"]


def test_convert_to_keras_file_with_explicit_variant(capsys, tmp_path, checkpoint, torch_model):
    dst = tmp_path / "out.keras"
    code, _, err = run(
        capsys, "convert", checkpoint, dst, "--variant", VARIANT, "--num-classes", 10
    )
    assert code == 0, err
    assert_same_logits(torch_model, keras.models.load_model(dst))


def test_existing_destination_needs_force(capsys, tmp_path, checkpoint):
    dst = tmp_path / "out.weights.h5"
    dst.write_text("keep me")
    code, _, err = run(capsys, "convert", checkpoint, dst)
    assert_one_line_error(code, err, "exists; pass --force")
    assert dst.read_text() == "keep me"
    code, _, err = run(capsys, "convert", checkpoint, dst, "--force")
    assert code == 0, err
    assert dst.stat().st_size > 1000


def corrupt(tmp_path, checkpoint, kind) -> Path:
    path = tmp_path / f"{kind}.pth"
    if kind == "text":
        path.write_text("this is not a checkpoint\n")
    elif kind == "truncated":
        path.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "tensor":
        torch.save(torch.zeros(3), path)
    return path


@pytest.mark.parametrize(
    "kind, fragments",
    [
        ("missing", ["missing.pth: no such file"]),
        ("text", ["text.pth: not a PyTorch checkpoint"]),
        ("truncated", ["truncated.pth: truncated or corrupt checkpoint"]),
        ("empty", ["empty.pth: truncated or corrupt checkpoint"]),
        ("tensor", ["tensor.pth: holds a Tensor, not a state_dict"]),
    ],
)
def test_bad_source_file(capsys, tmp_path, checkpoint, kind, fragments):
    src = tmp_path / "missing.pth" if kind == "missing" else corrupt(tmp_path, checkpoint, kind)
    before = set(tmp_path.iterdir())
    code, _, err = run(capsys, "convert", src, tmp_path / "out.keras")
    assert_one_line_error(code, err, *fragments)
    assert set(tmp_path.iterdir()) == before  # nothing written, no temporary left


def test_wrong_variant_names_the_mismatch(capsys, tmp_path, checkpoint):
    code, _, err = run(
        capsys, "convert", checkpoint, tmp_path / "o.keras", "--variant", "convnext_femto"
    )
    assert_one_line_error(
        code,
        err,
        "shape mismatch",
        "downsample_layers.0.0.weight: expected (48, 3, 4, 4), found (40, 3, 4, 4)",
    )
    assert not (tmp_path / "o.keras").exists()


def test_wrong_num_classes_names_the_head(capsys, tmp_path, checkpoint):
    code, _, err = run(capsys, "convert", checkpoint, tmp_path / "o.keras", "--num-classes", 1000)
    assert_one_line_error(code, err, "head.weight: expected (1000, 320), found (10, 320)")


def test_missing_and_extra_keys_are_named(capsys, tmp_path, torch_model):
    state = dict(torch_model.state_dict())
    del state["stages.3.1.pwconv2.bias"]
    state["stages.3.1.extra"] = torch.zeros(2)
    torch.save(state, tmp_path / "odd.pth")
    code, _, err = run(capsys, "convert", tmp_path / "odd.pth", tmp_path / "o.weights.h5")
    assert_one_line_error(
        code, err, "1 missing (stages.3.1.pwconv2.bias)", "1 unexpected (stages.3.1.extra)"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.pth"]


def test_unknown_layout_and_unknown_variant(capsys, tmp_path):
    torch.save({"conv1.weight": torch.zeros(2, 3, 3, 3)}, tmp_path / "resnet.pth")
    code, _, err = run(capsys, "convert", tmp_path / "resnet.pth", tmp_path / "o.keras")
    assert_one_line_error(
        code, err, "not a ConvNeXt state_dict in any known layout (official, timm"
    )
    code, _, err = run(
        capsys,
        "convert",
        tmp_path / "resnet.pth",
        tmp_path / "o.keras",
        "--variant",
        "convnext_huge",
    )
    assert_one_line_error(code, err, "unknown variant 'convnext_huge'")


def test_bad_destination(capsys, tmp_path, checkpoint):
    code, _, err = run(capsys, "convert", checkpoint, tmp_path / "out.h5")
    assert_one_line_error(code, err, "output must end in one of .weights.h5, .keras, .pth")
    code, _, err = run(capsys, "convert", checkpoint, tmp_path / "nowhere" / "out.keras")
    assert_one_line_error(code, err, "no such directory")


def test_malicious_checkpoint_is_refused(capsys, tmp_path):
    torch.save({"model": {}, "payload": Exploit()}, tmp_path / "evil.pth")
    code, _, err = run(capsys, "convert", tmp_path / "evil.pth", tmp_path / "o.keras")
    assert_one_line_error(code, err, "refused", "nothing in the file is executed")
    assert not Path("EXPLOITED").exists() and not (tmp_path / "EXPLOITED").exists()


def test_variants_lists_parameter_counts(capsys):
    code, out, _ = run(capsys, "variants")
    assert code == 0
    assert "convnext_tiny" in out and "28,589,128" in out and "350,196,968" in out
    reads, writes = out.splitlines()[-2:]  # every layout read and every target written
    assert all(layout in reads for layout in ("torchvision", "mmpretrain", "keras.applications"))
    assert writes.endswith("keras, keras-applications, official, timm, hf, torchvision")


def test_console_script_runs_as_its_own_process(tmp_path):
    script = Path(sys.executable).parent / "convnext"
    assert script.exists(), "the `convnext` console script is installed with the package"
    ok = subprocess.run([script, "variants"], capture_output=True, text=True)
    assert ok.returncode == 0 and "convnext_tiny" in ok.stdout, ok.stderr
    bad = subprocess.run(
        [script, "convert", tmp_path / "none.pth", tmp_path / "p.keras"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1
    # exactly these lines: no start-up notice of TensorFlow (oneDNN, CPU features) or torch
    # around them, whatever this machine's TensorFlow would print
    missing = tmp_path / "none.pth"
    assert bad.stderr == f"reading {missing}\nconvnext: error: {missing}: no such file\n"
    assert bad.stdout == ""


def test_verify_passes_a_faithful_conversion(capsys, tmp_path, checkpoint):
    assert run(capsys, "convert", checkpoint, tmp_path / "m.keras")[0] == 0
    code, out, err = run(capsys, "verify", checkpoint, tmp_path / "m.keras", "--size", 61, 127)
    assert code == 0, err
    assert "stages.3.0" in out and "top-1 agreement: 4/4" in out
    assert out.strip().splitlines()[-1].startswith("PASS: logits max rel")


@pytest.mark.exhaustive  # the default tier: tests/deploy/test_verify_cli.py, at a small size
def test_verify_names_the_block_where_a_deployment_diverges(capsys, tmp_path, checkpoint):
    from converters import keras_variables

    assert run(capsys, "convert", checkpoint, tmp_path / "m.weights.h5")[0] == 0
    deployed = convnext_tf.create_model(VARIANT, num_classes=10)
    deployed.load_weights(tmp_path / "m.weights.h5")
    kernel = keras_variables(deployed)["stages.2.1.dwconv.weight"]
    kernel.assign(kernel.numpy().swapaxes(0, 1))  # a kh/kw slip in stage 3
    deployed.save_weights(tmp_path / "deployed.weights.h5")
    # `compare` is verify's old name
    code, out, _ = run(capsys, "compare", checkpoint, tmp_path / "deployed.weights.h5")
    assert code == 1
    assert "first divergence: stages.2.1" in out
    assert out.strip().splitlines()[-1].startswith("FAIL: logits")


def test_verify_bad_keras_file_is_one_line_and_exit_2(capsys, tmp_path, checkpoint):
    (tmp_path / "broken.keras").write_bytes(b"not a zip")
    code, _, err = run(capsys, "verify", checkpoint, tmp_path / "broken.keras")
    assert_one_line_error(code, err, "broken.keras: not a Keras model file", status=2)
    code, _, err = run(capsys, "verify", checkpoint, tmp_path / "absent.weights.h5")
    assert_one_line_error(code, err, "absent.weights.h5: no such file", status=2)


@pytest.mark.parametrize(
    "change, fragment",
    [
        (lambda s: {**s, 5: torch.zeros(1)}, "key 5 is not a string"),
        (lambda s: {**s, "head.weight": torch.zeros(3)}, "head.weight has shape (3,), expected 2"),
        (
            lambda s: {**s, "downsample_layers.0.0.weight": torch.zeros(40)},
            "downsample_layers.0.0.weight has shape (40,), expected 4",
        ),
        (
            lambda s: {**s, "head.bias": torch.zeros(10).to_sparse()},
            "head.bias is a torch.sparse_coo",
        ),
        (
            lambda s: {**s, "head.bias": torch.zeros(10).to(torch.float8_e4m3fn)},
            "head.bias has dtype torch.float8_e4m3fn, expected float16/bfloat16/float32/float64",
        ),
        (lambda s: {**s, "head.bias": torch.zeros(10, dtype=torch.int64)}, "dtype torch.int64"),
    ],
)
def test_odd_tensors_and_keys_are_one_line_errors(capsys, tmp_path, torch_model, change, fragment):
    torch.save(change(dict(torch_model.state_dict())), tmp_path / "odd.pth")
    code, _, err = run(capsys, "convert", tmp_path / "odd.pth", tmp_path / "o.keras")
    assert_one_line_error(code, err, fragment)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.pth"]


def test_nan_weights_are_converted_with_a_warning(capsys, tmp_path, torch_model):
    state = dict(torch_model.state_dict())
    state["stages.0.0.gamma"] = state["stages.0.0.gamma"].clone()
    state["stages.0.0.gamma"][0] = float("nan")
    torch.save(state, tmp_path / "nan.pth")
    code, _, err = run(capsys, "convert", tmp_path / "nan.pth", tmp_path / "o.keras")
    assert code == 0
    assert "warning: 1 tensor with NaN or Inf (stages.0.0.gamma)" in err
