"""Hostile and careless inputs: files that claim more than they hold, checkpoints as people
have them (wrapper prefixes, EMA entries, other wrappers, heads to drop), and one clear line
for every kind of bad file or bad command line. Writing (signals, full disks, races) is in
test_writing.py; random mutations of valid files in test_fuzz.py."""

import json
import os
import resource
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

from converters import ConversionError, convert_file, load_state_dict
from convnext_spec.spec import ModelSpec
from tests.support.helpers import assert_one_line_error, run, write_layout

# --- a small file must not take the machine ------------------------------------------------


def peak_rss_growth(action) -> int:
    """How far the process' peak resident memory rose during `action`, in bytes."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    action()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024


@pytest.mark.parametrize(
    "shape, message",
    [
        ((20000, 20000), r"declares shape \(20000, 20000\) over 4 bytes of storage"),
        ((10**6, 10**6), r"1,000,000,000,000 elements, more than any ConvNeXt tensor"),
    ],
)
def test_a_broadcast_view_is_refused_before_it_is_materialised(
    tmp_path, torch_model, shape, message
):
    state = dict(torch_model.state_dict())
    state["head.weight"] = torch.zeros(1).expand(*shape)  # 4 bytes of storage
    torch.save(state, tmp_path / "view.pth")
    assert (tmp_path / "view.pth").stat().st_size < 20e6

    def load():
        with pytest.raises(ConversionError, match=message):
            load_state_dict(tmp_path / "view.pth")

    assert peak_rss_growth(load) < 100e6  # 20000^2 float32 would be 1.6 GB


def test_a_zip_that_inflates_far_beyond_its_size_is_refused(tmp_path):
    torch.save({"stem.weight": torch.zeros(64, 1024, 256)}, tmp_path / "plain.pth")  # 64 MiB
    with (
        zipfile.ZipFile(tmp_path / "plain.pth") as plain,
        zipfile.ZipFile(tmp_path / "bomb.pth", "w", zipfile.ZIP_DEFLATED) as bomb,
    ):
        for member in plain.infolist():
            bomb.writestr(member.filename, plain.read(member))
    assert (tmp_path / "bomb.pth").stat().st_size < 1e6

    def load():
        with pytest.raises(ConversionError, match="refused: its zip members inflate to 67,"):
            load_state_dict(tmp_path / "bomb.pth")

    assert peak_rss_growth(load) < 30e6


def test_a_keras_file_whose_config_asks_for_a_huge_model_is_refused_unbuilt(tmp_path):
    import convnext_tf

    convnext_tf.create_model("convnext_atto", num_classes=3).save(tmp_path / "small.keras")
    with zipfile.ZipFile(tmp_path / "small.keras") as small:
        members = {m.filename: small.read(m) for m in small.infolist()}
    config = json.loads(members["config.json"])
    config["config"].update(depths=[3, 3, 27, 3], dims=[256, 512, 1024, 2048])  # xlarge
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(tmp_path / "huge.keras", "w") as huge:
        for name, data in members.items():
            huge.writestr(name, data)

    def load():
        code, _, err = run_cli("inspect", tmp_path / "huge.keras")
        assert_one_line_error(
            code,
            err,
            "config.json describes a convnext_xlarge of 348,154,115 parameters",
            "but its weights file holds 13,",
        )

    assert peak_rss_growth(load) < 100e6


# --- checkpoints as people have them -------------------------------------------------------


@pytest.mark.parametrize(
    "prefix, said",
    [
        ("module.", "removed the prefix 'module.' (DataParallel)"),
        ("_orig_mod.", "removed the prefix '_orig_mod.' (torch.compile)"),
        ("module._orig_mod.", "removed the prefix '_orig_mod.' (torch.compile)"),
    ],
)
def test_wrapper_prefixes_are_removed_and_said(capsys, tmp_path, torch_model, prefix, said):
    state = {prefix + k: v for k, v in torch_model.state_dict().items()}
    torch.save({"model": state}, tmp_path / "ddp.pth")
    code, _, err = run(capsys, "convert", tmp_path / "ddp.pth", tmp_path / "m.weights.h5")
    assert code == 0, err
    assert said in err


def test_timm_ema_weights_are_found_and_the_output_says_which(capsys, tmp_path, torch_model):
    official = {k: v.numpy() for k, v in torch_model.state_dict().items()}
    timm = {k: torch.from_numpy(v) for k, v in write_layout(official, "timm", True).items()}
    ema = {k: v + 1 for k, v in timm.items()}
    torch.save({"state_dict": timm, "state_dict_ema": ema, "epoch": 5}, tmp_path / "t.pth")
    lines = []
    convert_file(tmp_path / "t.pth", tmp_path / "raw.weights.h5", log=lines.append)
    assert "under 'state_dict'" in lines[1]
    assert any("EMA weights ('state_dict_ema'); `ema` converts those" in line for line in lines)
    code, _, err = run(capsys, "convert", tmp_path / "t.pth", tmp_path / "e.weights.h5", "--ema")
    assert code == 0 and "under 'state_dict_ema'" in err
    state = load_state_dict(tmp_path / "t.pth", ema=True)
    np.testing.assert_array_equal(state.tensors["head.bias"], official["head.bias"] + 1)


def test_any_wrapper_by_key(capsys, tmp_path, torch_model):
    torch.save({"net": torch_model.state_dict(), "step": 3}, tmp_path / "n.pth")
    code, _, err = run(capsys, "convert", tmp_path / "n.pth", tmp_path / "m.keras")
    assert_one_line_error(code, err, "net, step are not tensors", "(--key names the entry")
    code, _, err = run(capsys, "convert", tmp_path / "n.pth", tmp_path / "m.keras", "--key", "net")
    assert code == 0 and "under 'net'" in err
    code, _, err = run(capsys, "inspect", tmp_path / "n.pth", "--key", "model")
    assert_one_line_error(code, err, "no 'model' entry holds a state_dict ('net', 'step')")


def test_num_classes_zero_drops_the_head_and_says_so(capsys, tmp_path, checkpoint):
    dst = tmp_path / "features.keras"
    code, _, err = run(capsys, "convert", checkpoint, dst, "--num-classes", 0)
    assert code == 0, err
    assert "left out the head (head.weight, head.bias: 10 classes)" in err
    assert "head.* absent" not in err
    assert "126 tensors" in err


def test_a_directory_with_both_weight_files_says_which_it_read(capsys, tmp_path, torch_model):
    from safetensors.torch import save_file

    hf = write_layout({k: v.numpy() for k, v in torch_model.state_dict().items()}, "hf")
    save_file({k: torch.from_numpy(v) for k, v in hf.items()}, tmp_path / "model.safetensors")
    torch.save({"unused": torch.zeros(1)}, tmp_path / "pytorch_model.bin")
    code, _, err = run(capsys, "convert", tmp_path, tmp_path / "m.weights.h5")
    assert code == 0, err
    assert "read model.safetensors; pytorch_model.bin also there, not read" in err


def test_pickle_protocol_4_names_the_cause(tmp_path, torch_model):
    torch.save(torch_model.state_dict(), tmp_path / "p4.pth", pickle_protocol=4)
    with pytest.raises(ConversionError, match="saved with pickle protocol 4 or 5 .* save it again"):
        load_state_dict(tmp_path / "p4.pth")


# --- one clear line for every bad file -----------------------------------------------------


@pytest.mark.parametrize(
    "config, fragment",
    [
        ("[1, 2]", "holds a list, not a JSON object"),
        ('"text"', "holds a str, not a JSON object"),
        ("[" * 100_000 + "]" * 100_000, "config.json: not JSON"),
        ('{"layer_norm_eps": "small"}', None),  # not a number: not used, no note
    ],
)
def test_odd_config_json_is_one_line_or_ignored(capsys, tmp_path, torch_model, config, fragment):
    from safetensors.torch import save_file

    hf = write_layout({k: v.numpy() for k, v in torch_model.state_dict().items()}, "hf")
    save_file({k: torch.from_numpy(v) for k, v in hf.items()}, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(config)
    code, _, err = run(capsys, "convert", tmp_path, tmp_path / "m.weights.h5")
    if fragment is None:
        assert code == 0, err
        assert "layer_norm_eps" not in err
    else:
        assert_one_line_error(code, err, fragment)
    assert "unexpected" not in err


def test_a_meta_tensor_is_one_line(tmp_path, torch_model):
    state = {**torch_model.state_dict(), "head.bias": torch.empty(10, device="meta")}
    torch.save(state, tmp_path / "meta.pth")
    with pytest.raises(ConversionError, match="head.bias is a meta tensor"):
        load_state_dict(tmp_path / "meta.pth")


def test_what_is_not_a_regular_file_is_refused_at_once(capsys, tmp_path):
    os.mkfifo(tmp_path / "fifo.pth")  # reading it would block forever
    code, _, err = run(capsys, "convert", tmp_path / "fifo.pth", tmp_path / "o.keras")
    assert_one_line_error(code, err, "fifo.pth: not a regular file")
    code, _, err = run(capsys, "inspect", "/dev/zero")
    assert_one_line_error(code, err, "/dev/zero: not a regular file")
    (tmp_path / "dir.keras").mkdir()
    code, _, err = run(capsys, "inspect", tmp_path / "dir.keras")
    assert_one_line_error(code, err, "dir.keras: is a directory, not a Keras file")


# --- the command line itself ---------------------------------------------------------------


def run_cli(*argv):
    """The command line in this process, without capsys (for use inside a measured action)."""
    import contextlib
    import io

    from converters.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main([str(a) for a in argv])
    return code, "", err.getvalue()


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["conver", "a", "b"], "invalid choice: 'conver'"),
        (["conver", "a", "b"], "did you mean convert?"),
        (["convert"], "the following arguments are required: src, dst"),
        (["verify", "a.pth", "b.keras", "--rtol", "-1"], "--rtol: must be a finite number"),
        (["compare", "a.pth", "b.keras", "--size", "0", "5"], "--size: must be 1 or more"),
        (["convert", "a.pth", "b.keras", "--from", "tim"], "invalid choice: 'tim'"),
    ],
)
def test_a_bad_command_line_is_one_line_and_exit_status_2(capsys, argv, fragment):
    with pytest.raises(SystemExit) as exit_:
        run(capsys, *argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert len(err.strip().splitlines()) == 1 and fragment in err


def test_a_misspelt_variant_gets_a_suggestion(capsys, checkpoint, tmp_path):
    code, _, err = run(
        capsys, "convert", checkpoint, tmp_path / "o.keras", "--variant", "convnext_tinny"
    )
    assert_one_line_error(
        code, err, "unknown variant 'convnext_tinny'; did you mean convnext_tiny?"
    )


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        run(capsys, "--version")
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith("convnext ")


def test_verify_refuses_a_savedmodel_whose_signature_writes_files(capsys, checkpoint, tmp_path):
    """A SavedModel is a graph that verify runs: one whose serving signature writes a file (in
    a function it calls, as tf.function nests them) is refused before anything is loaded or
    called, and the file is never written."""
    import tensorflow as tf

    target = tmp_path / "written-by-the-model"

    @tf.function
    def side_effect(images):
        tf.io.write_file(str(target), "x")
        return images

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    def serve(images):
        return {"logits": tf.reduce_mean(side_effect(images), axis=[1, 2])}

    module = tf.Module()
    module.serve = serve
    tf.saved_model.save(module, str(tmp_path / "model"), signatures={"serving_default": serve})
    code, _, err = run(capsys, "verify", checkpoint, tmp_path / "model", "--size", 61, 67)
    assert_one_line_error(code, err, "refused: serve runs WriteFile", "which it calls", status=2)
    assert not target.exists()


def test_two_keys_for_one_tensor_are_refused_naming_both(capsys, tmp_path, torch_model):
    """Hugging Face names a ConvNextModel's stem with and without the "convnext." prefix:
    a file holding both (one zeroed) must not convert with whichever came last."""
    official = {k: v.numpy() for k, v in torch_model.state_dict().items()}
    tensors = {k: torch.from_numpy(v) for k, v in write_layout(official, "hf").items()}
    stem = "convnext.embeddings.patch_embeddings.weight"
    tensors["embeddings.patch_embeddings.weight"] = torch.zeros_like(tensors[stem])
    torch.save(tensors, tmp_path / "twice.pth")
    code, _, err = run(capsys, "convert", tmp_path / "twice.pth", tmp_path / "out.keras")
    assert_one_line_error(
        code, err, stem, "embeddings.patch_embeddings.weight", "both name downsample_layers.0.0"
    )
    assert not (tmp_path / "out.keras").exists()


# --- the terminal: names from files printed as data, closed streams ------------------------


def test_a_name_from_a_file_cannot_forge_a_verdict_line():
    """An artifact's description (its signature's output key, its model's name) with a
    newline and a colour escape: the printed text keeps the real verdict last, on its own
    line, and no escape sequence reaches the terminal."""
    from converters.deploy.result import Point, Verification

    forged = "m\n\x1b[32mPASS: logits max rel 0.00e+00\x1b[0m\x1b[8m"
    result = Verification(
        passed=False, torch_source="a.pth", deployed=forged, artifact=f"a Keras model ({forged})",
        inputs="2 random images", output_kind="logits",
        output=Point("logits", 1.0, 1.0, 1e-7, 1e-6), points=[], first_divergence=None,
        top1=0.5, topk=0.5, k=5, images=[], tolerance={
            "rtol": 1e-6, "atol": 0.0, "factor": 10.0, "floor": 1e-7, "precision": "float32",
            "how": "derived",
        }, environment={}, notes=[f"the artifact's outputs are called {forged}"],
    )  # fmt: skip
    text = result.format()
    assert "\x1b" not in text
    assert not any(line.startswith(("PASS", "\x1b")) for line in text.splitlines())
    assert text.splitlines()[-1].startswith("FAIL: ")
    assert "\\x1b[32mPASS" in text  # shown, as data


def test_a_file_name_with_a_newline_is_one_error_line(capsys, tmp_path):
    path = tmp_path / "evil\n\x1b[32mname.pth"
    path.write_bytes(b"not a checkpoint")
    code, _, err = run(capsys, "convert", path, tmp_path / "out.keras")
    assert_one_line_error(code, err, "evil\\n\\x1b[32mname.pth")
    assert "\x1b" not in err


def test_a_closed_pipe_is_a_quiet_exit():
    """`convnext variants | head -1`: no 'Broken pipe' line, the exit status of SIGPIPE."""
    command = f"{sys.executable} -m converters.cli variants | head -c 10 >/dev/null"
    done = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True)
    assert done.stderr == "", done.stderr
    assert done.returncode in (0, 141)


def test_closed_standard_streams_are_reopened_before_any_file_is():
    """Started with stderr closed (`2>&-`), the next file opened took descriptor 2, and the
    command's own log lines went into it (or failed): the command line reopens 0, 1 and 2 on
    the null device first, and its prints to stderr go nowhere."""
    script = (
        "import os, sys\n"
        "from converters.cli import standard_streams_open\n"
        "standard_streams_open()\n"
        "fd = os.open(os.devnull, os.O_RDONLY)\n"
        "print('error line', file=sys.stderr)\n"
        "print(fd > 2, sys.stderr is not None)\n"
    )
    done = subprocess.run(
        ["bash", "-c", f'exec 2>&-; exec "{sys.executable}" -c "$0"', script],
        stdout=subprocess.PIPE,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
    )
    assert done.stdout.split() == ["True", "True"], done.stdout


# --- Keras files whose parts claim more than they hold -------------------------------------

TINY = ModelSpec(depths=(1, 1, 1, 1), dims=(8, 8, 8, 8), num_classes=3)  # builds in a second


def keras_weights_with_a_fill_value_array(directory):
    """A tiny ConvNeXt's .weights.h5 with its head kernel replaced by a dataset that declares
    (30000, 30000) float32, 3.6 GB, and stores nothing (HDF5's fill value)."""
    import h5py

    import convnext_tf

    path = directory / "fill.weights.h5"
    convnext_tf.create_model(TINY).save_weights(path)
    with h5py.File(path, "r+") as f:
        names = []
        f.visititems(lambda name, obj: names.append(name) if "head" in name else None)
        kernel = next(n for n in names if isinstance(f[n], h5py.Dataset) and f[n].ndim == 2)
        del f[kernel]
        f.create_dataset(kernel, shape=(30000, 30000), dtype="float32")
    assert path.stat().st_size < 20e6
    return path


def test_an_hdf5_array_of_fill_values_is_refused_before_it_is_allocated(tmp_path):
    from converters.files.keras_files import load_keras_model

    path = keras_weights_with_a_fill_value_array(tmp_path)

    def load():
        with pytest.raises(ConversionError, match="its arrays declare .* bytes or more"):
            load_keras_model(path, TINY)

    assert peak_rss_growth(load) < 300e6  # the array alone would be 3.6 GB


def deflate_bomb_keras(directory, config_bytes: int):
    """A .keras file whose config.json is the real config followed by `config_bytes` spaces,
    deflated (JSON allows the whitespace; Keras never compresses)."""
    import convnext_tf

    small = directory / "small.keras"
    convnext_tf.create_model(TINY).save(small)
    path = directory / "bomb.keras"
    with zipfile.ZipFile(small) as source, zipfile.ZipFile(path, "w") as bomb:
        for member in source.infolist():
            data = source.read(member)
            if member.filename == "config.json":  # streamed: never whole in this process
                info = zipfile.ZipInfo("config.json")
                info.compress_type = zipfile.ZIP_DEFLATED
                with bomb.open(info, "w", force_zip64=True) as config:
                    config.write(data)
                    for _ in range(config_bytes >> 20):
                        config.write(b" " * (1 << 20))
            else:
                bomb.writestr(member, data)
    return path


def test_a_deflate_bomb_config_is_refused_before_it_is_inflated(capsys, tmp_path, checkpoint):
    """verify reads a .keras file's config.json to tell this project's models from others:
    256 MiB of it (a few hundred KB deflated) is refused, not inflated."""
    path = deflate_bomb_keras(tmp_path, 1 << 28)
    assert path.stat().st_size < 20e6

    def verify():
        code, _, err = run(capsys, "verify", checkpoint, path)
        assert_one_line_error(code, err, "refused", "inflate", status=2)

    assert peak_rss_growth(verify) < 150e6  # the config read whole: 256 MB, twice


def test_a_keras_file_of_many_empty_members_is_refused_at_once(capsys, tmp_path):
    import convnext_tf

    small = tmp_path / "small.keras"
    convnext_tf.create_model(TINY).save(small)
    with zipfile.ZipFile(small, "a") as archive:
        for i in range(5000):
            archive.writestr(f"assets/{i}", b"")
    code, _, err = run(capsys, "convert", small, tmp_path / "out.pth")
    assert_one_line_error(code, err, "refused: 5,003 zip members")


@pytest.mark.parametrize("rename", [False, True], ids=["crc", "crc and local name"])
def test_a_pth_altered_without_its_crc_is_refused(capsys, tmp_path, torch_model, rename):
    """Bytes of a tensor changed in place, the zip's CRC-32 left as written: torch's reader
    would convert the altered value. Also with the member's local file name changed, which
    made zipfile stop before the CRC with another error, once let through."""
    path = tmp_path / "altered.pth"
    torch.save(torch_model.state_dict(), path)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        member = next(m for m in archive.infolist() if "/data/" in m.filename)
    name_length, extra_length = struct.unpack_from("<HH", data, member.header_offset + 26)
    data[member.header_offset + 30 + name_length + extra_length + 1] ^= 0x40  # the local header
    if rename:
        data[member.header_offset + 30 + name_length - 1] ^= 1
    path.write_bytes(bytes(data))
    code, _, err = run(capsys, "convert", path, tmp_path / "out.keras")
    assert_one_line_error(code, err, "refused: ", "altered or damaged")
