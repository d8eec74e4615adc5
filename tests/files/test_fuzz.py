"""Random mutations of small valid files: every reader ends in a ConversionError or a read.

Hypothesis mutates a tiny model's `.pth`, `.safetensors`, Hugging Face directory,
`.weights.h5` and `.keras` files: truncations, flipped, overwritten, inserted and deleted
bytes; the fields of the zip records of `.pth` and `.keras` (versions, sizes, offsets, CRCs,
counts, zip64 records), their members (dropped, renamed, duplicated, deflated, added,
rewritten with their CRCs right); the pickle inside a `.pth` (its integers, which are shapes,
strides, offsets and storage sizes; its strings; its globals, which are the storage dtypes;
single opcodes); the state_dict saved (dtypes, shapes, broadcast and strided views, sparse and
meta tensors, things that are not tensors, wrappers, pickle protocol 4, the legacy format);
safetensors' 8-byte header length and its JSON header (dtypes, shapes, data offsets); the JSON
of config.json and metadata.json (objects Keras would deserialize included); the datasets of
an HDF5 weights file (dtypes, shapes, filters, links, external storage, virtual datasets,
cycles, attributes) before its bytes are mutated.

Each read runs in a long-lived child process (one for the PyTorch readers, one with Keras):
the child reports what the reader raised, how long it took and how far its peak resident
memory rose; the parent gives each read a time limit and watches the child's exit status, so
a hang or a crash (a segfault in h5py, an abort) is a failure of its own, and a fresh child
takes the next read. The child's address space is capped (RLIMIT_AS) once it is warm, so a
runaway allocation ends in MemoryError rather than on the machine.

The default run (`make test`) is a fixed, derandomized slice of about half a minute. The
long run draws new inputs every time:

    CONVNEXT_FUZZ_EXAMPLES=2000 .venv/bin/python -m pytest tests/files/test_fuzz.py   # make fuzz

(2000 examples for each file kind, about 45 minutes; add `--hypothesis-seed=N` to repeat
one run, CONVNEXT_FUZZ_LOG=FILE to keep every read's outcome). A failure names the mutations
Hypothesis shrank it to and keeps the mutated file for reproduction. Readers that misbehave
today are listed in KNOWN: the fuzz tests tolerate them, and each has a strict xfail
reproduction at the end, which turns into a failure once the reader is fixed. The harness
itself is tested last: a child that crashes, hangs, raises or fills memory is seen to.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import zipfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.file_mutations import (
    H5_EXAMPLES,
    HF_EXAMPLES,
    KERAS_EXAMPLES,
    PTH_EXAMPLES,
    ST_EXAMPLES,
    H5Edit,
    H5Edits,
)
from tests.support.fuzz_harness import (
    READ_TIMEOUT,
    SPEC_FIELDS,
    Fuzz,
    Reader,
    fuzz_settings,
    problem,
)
from tests.support.fuzz_seeds import Seeds, make_seeds, set_zip_member
from tests.support.mutations import BYTE_OPS, Member, ZipField

# The children are POSIX processes (pass_fds, process groups, select on pipes).
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX only")

# --- the fixtures and the fuzz tests ---------------------------------------------------------


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def seeds(work) -> Seeds:
    seeds = make_seeds(work)
    (work / "valid.pth").write_bytes(seeds.pth)
    (work / "valid.safetensors").write_bytes(seeds.safetensors)
    (work / "valid-hf").mkdir()
    (work / "valid-hf" / "config.json").write_bytes(seeds.hf_config)
    (work / "valid-hf" / "model.safetensors").write_bytes(seeds.hf_safetensors)
    (work / "valid.weights.h5").write_bytes(seeds.weights_h5)
    (work / "valid.keras").write_bytes(seeds.keras)
    return seeds


@pytest.fixture(scope="module")
def fuzz(work, seeds):
    warm = {
        "torch": [work / "valid.pth", work / "valid.safetensors", work / "valid-hf"],
        "keras": [work / "valid.weights.h5", work / "valid.keras"] * 2,
    }
    readers = {kind: Reader(kind, work / f"{kind}.log", warm[kind]) for kind in warm}
    fuzz = Fuzz(work, readers)
    yield fuzz
    for reader in readers.values():
        reader.stop()


def apply_ops(data: bytes, ops: tuple) -> bytes:
    for op in ops:
        data = op(data)
    return data


def save_state_dict(state: object, mode: str, path: Path) -> None:
    import torch

    if mode == "protocol4":
        torch.save(state, path, pickle_protocol=4)
    elif mode == "legacy":
        torch.save(state, path, _use_new_zipfile_serialization=False)
    else:
        torch.save(state, path)


@fuzz_settings(examples=80)
@given(example=PTH_EXAMPLES)
def test_pth_mutations_read_or_raise_conversion_error(fuzz, seeds, example):
    path = fuzz.base / "fuzz.pth"
    if example.edit is None and example.save == "default":
        data = seeds.pth
    else:
        state = dict(seeds.state_dict)
        if example.edit is not None:
            state = example.edit.apply(state)
        save_state_dict(state, example.save, path)
        data = path.read_bytes()
        if zipfile.is_zipfile(path):  # the same bytes on every run, as the seed
            data = set_zip_member(data, ".data/serialization_id", b"0" * 40)
    path.write_bytes(apply_ops(data, example.ops))
    fuzz.check("torch", path, example)


@fuzz_settings(examples=80)
@given(example=ST_EXAMPLES)
def test_safetensors_mutations_read_or_raise_conversion_error(fuzz, seeds, example):
    from safetensors.torch import save as save_safetensors

    path = fuzz.base / "fuzz.safetensors"
    data = seeds.safetensors
    if example.edit is not None:
        state = example.edit.apply(dict(seeds.state_dict))
        with contextlib.suppress(Exception):  # safetensors refuses some names: keep the seed
            data = save_safetensors({k: v.contiguous() for k, v in state.items()})
    path.write_bytes(apply_ops(data, example.ops))
    fuzz.check("torch", path, example)


@fuzz_settings(examples=25)
@given(example=HF_EXAMPLES)
def test_hugging_face_directory_mutations_read_or_raise_conversion_error(fuzz, seeds, example):
    path = fuzz.base / "fuzz-hf"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir()
    if not example.drop_config:
        (path / "config.json").write_bytes(apply_ops(seeds.hf_config, example.config))
    (path / "model.safetensors").write_bytes(apply_ops(seeds.hf_safetensors, example.weights))
    fuzz.check("torch", path, example)


@fuzz_settings(examples=5)
@given(example=H5_EXAMPLES)
def test_weights_h5_mutations_read_or_raise_conversion_error(fuzz, seeds, example):
    path = fuzz.base / "fuzz.weights.h5"
    data = seeds.weights_h5 if example.edits is None else example.edits(seeds.weights_h5)
    path.write_bytes(apply_ops(data, example.ops))
    fuzz.check("keras", path, example)


@fuzz_settings(examples=14)
@given(example=KERAS_EXAMPLES)
def test_keras_mutations_read_or_raise_conversion_error(fuzz, seeds, example):
    path = fuzz.base / "fuzz.keras"
    data = seeds.keras
    if example.weights is not None:
        data = Member("model.weights.h5", (example.weights,))(data)
    path.write_bytes(apply_ops(data, example.ops))
    fuzz.check("keras", path, example)


def test_the_seeds_are_the_same_bytes_on_every_run(work, seeds):
    """The derandomized slice mutates fixed offsets: the files under them must not change."""
    (work / "again").mkdir()
    again = make_seeds(work / "again")
    for field in ("pth", "safetensors", "weights_h5", "keras", "hf_config", "hf_safetensors"):
        assert getattr(again, field) == getattr(seeds, field), field


# --- the findings, each reduced to one input ---------------------------------------------------
# Strict xfails: each turns into a failure once its reader is fixed; then remove it and its
# entry in KNOWN.


def read_torch(path: Path):
    from converters.files.checkpoint import load_state_dict

    return load_state_dict(path)


def test_finding_pth_whose_zip_entry_needs_a_newer_zip_version(work, seeds):
    from converters.errors import ConversionError

    path = work / "zip-version.pth"
    path.write_bytes(ZipField("central", "version_needed", 0, 81)(seeds.pth))
    with contextlib.suppress(ConversionError):  # torch's own zip reader may read it: fine
        read_torch(path)  # anything else (BadZipFile, NotImplementedError) fails the test


def test_finding_pth_whose_zip64_locator_names_another_disk(work, seeds):
    from converters.errors import ConversionError

    path = work / "multi-disk.pth"
    path.write_bytes(ZipField("zip64_locator", "disk", 0, 1)(seeds.pth))
    with contextlib.suppress(ConversionError):  # torch's own zip reader may read it: fine
        read_torch(path)  # anything else (BadZipFile, NotImplementedError) fails the test


# Weights that reach outside their file: HDF5 would follow them (Keras before 3.13.2 did, and
# 3.13.2 with h5py 3.10 still did for links); check_self_contained (converters.files.keras_files)
# refuses them.
REACHING_OUT = {
    "external_storage": lambda target: (H5Edit(1, "external_storage", target),),
    # a link is not an array: one more array keeps load_keras_model's count right
    "external_link": lambda target: (H5Edit(1, "external_link", target), H5Edit(0, "padding", 0)),
    "virtual": lambda target: (H5Edit(1, "virtual", target),),
}


@pytest.mark.parametrize(
    "suffix, how, target",
    [(".weights.h5", how, "fifo") for how in REACHING_OUT]
    + [(".weights.h5", "external_storage", "file"), (".keras", "virtual", "file")],
)
def test_finding_weights_that_reach_outside_their_file_are_refused(
    fuzz, work, seeds, suffix, how, target
):
    fifo = work / "fifo"
    if not fifo.exists():
        os.mkfifo(fifo)
    other = work / "valid.weights.h5"  # an HDF5 file with the same datasets
    edits = H5Edits(REACHING_OUT[how](str(fifo if target == "fifo" else other)))
    if suffix == ".keras":
        data = Member("model.weights.h5", (edits,))(seeds.keras)
    else:
        data = edits(seeds.weights_h5)
    path = work / f"outside-{how}-{target}{suffix}"
    path.write_bytes(data)
    result = fuzz.readers["keras"].read(path, timeout=10)
    assert result["outcome"] == "ConversionError", result


# --- SavedModel graphs: an operation outside the allow-list, anywhere that runs -------------


@pytest.fixture(scope="module")
def savedmodel_graph(work) -> tuple[Path, bytes, list[str]]:
    """A convnext export SavedModel of the tiny spec, its saved_model.pb, and the names of
    every TensorFlow op outside converters.files.savedmodel.ALLOWED_OPS (tf.raw_ops knows them)."""
    import tensorflow as tf

    import convnext_tf
    from converters.deploy.export import export_model
    from converters.files.savedmodel import ALLOWED_OPS
    from convnext_spec.spec import ModelSpec

    path = work / "graph_savedmodel"
    if not path.exists():
        export_model(convnext_tf.create_model(ModelSpec(**SPEC_FIELDS)), path)
    forbidden = sorted(set(dir(tf.raw_ops)) - ALLOWED_OPS - {"__doc__"})
    forbidden = [name for name in forbidden if not name.startswith("_")]
    return path, (path / "saved_model.pb").read_bytes(), forbidden


@fuzz_settings(examples=30)
@given(data=st.data())
def test_savedmodel_with_a_forbidden_op_anywhere_it_runs_is_refused(savedmodel_graph, data):
    """One node of one function that loading or calling reaches (a signature, the stages
    trace, a function those call) gets an op outside the allow-list: refused, naming it."""
    from tensorflow.core.protobuf import saved_model_pb2

    from converters.errors import ConversionError
    from converters.files.savedmodel import check_savedmodel, roots

    path, original, forbidden = savedmodel_graph
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString(original)
    graph = saved.meta_graphs[0]
    reached = sorted(roots(graph.object_graph_def))
    functions = {f.signature.name: f for f in graph.graph_def.library.function}
    function = functions[data.draw(st.sampled_from(reached), label="function")]
    node = function.node_def[data.draw(st.integers(0, len(function.node_def) - 1), label="node")]
    node.op = data.draw(st.sampled_from(forbidden), label="op")
    target = path.with_name("graph_mutant")
    target.mkdir(exist_ok=True)
    (target / "saved_model.pb").write_bytes(saved.SerializeToString())
    with pytest.raises(ConversionError, match=f"runs {node.op}"):
        check_savedmodel(target)


@fuzz_settings(examples=30)
@given(ops=st.lists(BYTE_OPS, min_size=1, max_size=4))
def test_savedmodel_pb_mutations_check_or_raise_conversion_error(savedmodel_graph, ops):
    """Mutated bytes of saved_model.pb: the check passes or refuses in one line, nothing else
    (no DecodeError, no IndexError from a node id that points nowhere)."""
    from converters.errors import ConversionError
    from converters.files.savedmodel import check_savedmodel

    path, original, _ = savedmodel_graph
    target = path.with_name("bytes_mutant")
    target.mkdir(exist_ok=True)
    (target / "saved_model.pb").write_bytes(apply_ops(original, tuple(ops)))
    with contextlib.suppress(ConversionError):
        check_savedmodel(target)


# --- the harness itself ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def selftest(work):
    """A child whose reader does what each file says: crash, hang, raise, fill memory."""
    reader = Reader("selftest", work / "selftest.log", [])
    yield reader
    reader.stop()


@pytest.mark.parametrize(
    "behaviour, outcome, why",
    [
        ("ok", "ok", None),
        ("conversion", "ConversionError", None),
        ("two lines", "ConversionError", "not one line"),
        ("raise", "other", "builtins.KeyError"),
        ("segfault", "crash", "killed by SIGSEGV"),
        ("abort", "crash", "killed by SIGABRT"),
        ("exit", "crash", "exited with status 3"),
        ("hang", "hang", "no answer within 1 s"),
        ("memory", "ok", "raised peak memory by"),
        ("huge", "other", "MemoryError"),
    ],
)
def test_the_harness_sees_crashes_hangs_exceptions_and_memory(
    work, selftest, behaviour, outcome, why
):
    if behaviour == "huge":
        if selftest.process is None:
            selftest.start()
        if selftest.limit is None:
            pytest.skip("the address space cannot be capped here (RLIMIT_AS)")
    path = work / "behaviour.txt"
    path.write_text(behaviour)
    result = selftest.read(path, timeout=1 if behaviour == "hang" else READ_TIMEOUT)
    assert result["outcome"] == outcome, result
    if why is None:
        assert problem(result) is None
    else:
        assert why in problem(result)
