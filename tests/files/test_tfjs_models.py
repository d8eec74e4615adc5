"""TF.js graph models (converters.deploy.artifacts.tfjs): what model.json and its shards may
claim is checked before Node sees them, and the Node runner computes, fetches and filters what
it is asked for.

The files here are written by hand in tensorflowjs_converter's layout (a GraphDef as JSON, its
constants' values moved to weight shards): a model of three operations that TF.js runs in
milliseconds. Running one needs Node and TF.js (`make tfjs`): those tests are skipped without
them. tests/peers/test_tfjs.py verifies ConvNeXts the real converter wrote.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from converters.deploy.artifacts import open_artifact
from converters.deploy.artifacts.tfjs import DEFAULT_MODULES, MODULES_VARIABLE
from converters.deploy.locate import KeptShapes
from converters.errors import ConversionError

SCALE = np.array([0.5, -2.0, 3.0], dtype=np.float32)
SHIFT = np.array([1.0, 0.25, -4.0], dtype=np.float32)
AXES = np.array([1, 2], dtype=np.int32)

needs_tfjs = pytest.mark.skipif(
    shutil.which("node") is None or not (DEFAULT_MODULES / "@tensorflow").is_dir(),
    reason="no TF.js in Node (make tfjs installs it into .tfjs/)",
)


def shape(*dims: int) -> dict:
    return {"dim": [{"size": str(d)} for d in dims]}


def const(name: str, value: np.ndarray) -> dict:
    kind = "DT_FLOAT" if value.dtype == np.float32 else "DT_INT32"
    tensor = {"dtype": kind, "tensorShape": shape(*value.shape)}
    return {
        "name": name,
        "op": "Const",
        "attr": {"dtype": {"type": kind}, "value": {"tensor": tensor}},
    }


def op(name: str, kind: str, *inputs: str, **attr) -> dict:
    return {
        "name": name,
        "op": kind,
        "input": list(inputs),
        "attr": {"T": {"type": "DT_FLOAT"}, **attr},
    }


def web_model(folder: Path, **changes) -> Path:
    """images (N, H, W, 3) -> scaled = images * SCALE -> shifted = scaled + SHIFT -> logits =
    the spatial mean of shifted, (N, 3); `changes` replace model.json's top-level entries."""
    folder.mkdir(parents=True, exist_ok=True)
    nodes = [
        {"name": "images", "op": "Placeholder", "attr": {"dtype": {"type": "DT_FLOAT"}}},
        const("scale", SCALE),
        const("shift", SHIFT),
        const("axes", AXES),
        op("scaled", "Mul", "images", "scale"),
        op("shifted", "AddV2", "scaled", "shift"),
        op("pooled", "Mean", "shifted", "axes", keep_dims={"b": False}, Tidx={"type": "DT_INT32"}),
        op("Identity", "Identity", "pooled"),
    ]
    weights = [
        {"name": "scale", "shape": [3], "dtype": "float32"},
        {"name": "shift", "shape": [3], "dtype": "float32"},
        {"name": "axes", "shape": [2], "dtype": "int32"},
    ]
    (folder / "group1-shard1of1.bin").write_bytes(
        SCALE.tobytes() + SHIFT.tobytes() + AXES.tobytes()
    )
    model = {
        "format": "graph-model",
        "generatedBy": "by hand",
        "convertedBy": "TensorFlow.js Converter v4.22.0",
        "signature": {
            "inputs": {
                "images": {
                    "name": "images:0",
                    "dtype": "DT_FLOAT",
                    "tensorShape": shape(-1, -1, -1, 3),
                }
            },
            "outputs": {
                "logits": {"name": "Identity:0", "dtype": "DT_FLOAT", "tensorShape": shape(-1, 3)}
            },
        },
        "modelTopology": {"node": nodes, "library": {}, "versions": {"producer": 1994}},
        "weightsManifest": [{"paths": ["group1-shard1of1.bin"], "weights": weights}],
        **changes,
    }
    (folder / "model.json").write_text(json.dumps(model))
    return folder


def refused(folder: Path, *fragments: str) -> str:
    with pytest.raises(ConversionError) as error:
        open_artifact(folder)
    message = str(error.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_a_correct_model_opens_as_a_graph_model(tmp_path, monkeypatch):
    monkeypatch.setenv(MODULES_VARIABLE, str(DEFAULT_MODULES))
    if shutil.which("node") is None:
        pytest.skip("no Node")
    if not (DEFAULT_MODULES / "@tensorflow").is_dir():
        refused(web_model(tmp_path / "web"), "make tfjs")
        return
    artifact = open_artifact(web_model(tmp_path / "web") / "model.json")
    assert artifact.kind == "tfjs" and artifact.layout == "nhwc" and artifact.size is None
    assert artifact.nodes == ["scaled", "shifted", "pooled"]  # graph order, float, not Const


def test_a_shard_outside_the_models_folder_is_refused(tmp_path):
    (tmp_path / "secret.bin").write_bytes(b"\0" * 32)
    manifest = [
        {
            "paths": ["../secret.bin"],
            "weights": [{"name": "scale", "shape": [8], "dtype": "float32"}],
        }
    ]
    refused(web_model(tmp_path / "web", weightsManifest=manifest), "'../secret.bin' lies outside")


def test_weights_that_claim_more_than_the_shards_hold_are_refused(tmp_path):
    """A manifest's shapes are claims: what Node would allocate is checked against the bytes."""
    huge = [{"name": "scale", "shape": [1 << 40], "dtype": "float32"}]
    manifest = [{"paths": ["group1-shard1of1.bin"], "weights": huge}]
    refused(web_model(tmp_path / "web", weightsManifest=manifest), "hold 32 bytes", "take 4,398")


def test_a_missing_shard_is_refused(tmp_path):
    folder = web_model(tmp_path / "web")
    (folder / "group1-shard1of1.bin").unlink()
    refused(folder, "no such file")


@pytest.mark.parametrize(
    "changes, says",
    [
        ({"format": "layers-model"}, "a TF.js layers model"),
        ({"signature": {"inputs": {}, "outputs": {}}}, "takes no single float image batch"),
        ({"weightsManifest": "x"}, "not a TF.js model.json this reads"),
        ({"signature": {"inputs": {"x": []}}}, "not a TF.js model.json this reads"),
    ],
    ids=["layers model", "no input", "manifest not a list", "input not a mapping"],
)
def test_what_is_no_graph_model_is_named_in_one_line(tmp_path, changes, says):
    refused(web_model(tmp_path / "web", **changes), says)


def test_without_tfjs_the_error_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setenv(MODULES_VARIABLE, str(tmp_path / "node_modules"))
    refused(web_model(tmp_path / "web"), "runs in Node", "make tfjs", MODULES_VARIABLE)


@needs_tfjs
def test_the_runner_computes_what_the_graph_says(tmp_path):
    artifact = open_artifact(web_model(tmp_path / "web"))
    x = np.random.default_rng(0).standard_normal((2, 5, 7, 3)).astype(np.float32)
    expected = (x * SCALE + SHIFT).mean(axis=(1, 2))
    np.testing.assert_allclose(artifact.run(x), expected, rtol=1e-6, atol=1e-6)
    assert artifact.run(x).shape == (2, 3)


@needs_tfjs
def test_the_runner_gives_the_node_outputs_of_the_shapes_asked_for(tmp_path):
    """Every float node output, in graph order, and only those of a kept shape: the runner is
    told the shapes, so it writes nothing else (a (2, 3) pooled point keeps (2, 3) only)."""
    artifact = open_artifact(web_model(tmp_path / "web"))
    x = np.random.default_rng(1).standard_normal((2, 5, 7, 3)).astype(np.float32)
    every = artifact.tensors(x, KeptShapes(frozenset({(2, 5, 7, 3), (2, 3)})))
    assert [(c.name, c.position) for c in every] == [("scaled", 0), ("shifted", 1), ("pooled", 2)]
    np.testing.assert_allclose(every[1].value, x * SCALE + SHIFT, rtol=1e-6)
    pooled = artifact.tensors(x, KeptShapes(frozenset({(2, 3)})))
    assert [c.name for c in pooled] == ["pooled"]
    assert artifact.tensors(x, KeptShapes(frozenset({(9, 9)}))) == []  # nothing written


@needs_tfjs
def test_a_graph_tfjs_cannot_run_fails_in_one_line(tmp_path):
    """An operation the allow-list passes but TF.js has no kernel for: Node's error, one line."""
    folder = web_model(tmp_path / "web")
    model = json.loads((folder / "model.json").read_text())
    model["modelTopology"]["node"][4]["op"] = "FakeQuantWithMinMaxArgs"
    (folder / "model.json").write_text(json.dumps(model))
    artifact = open_artifact(folder)
    with pytest.raises(RuntimeError, match="FakeQuantWithMinMaxArgs") as error:
        artifact.run(np.zeros((1, 4, 4, 3), np.float32))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m["modelTopology"].update(
            library={"function": [{"signature": {"name": "body"}, "nodeDef": []}]}
        ),
        lambda m: m["modelTopology"].update(  # a function named as an op it would stand for
            library={"function": [{"signature": {"name": "While"}, "nodeDef": []}]}
        ),
        lambda m: m.update(modelInitializer={"node": [{"name": "w", "op": "While"}]}),
    ],
    ids=["a function", "a function named While", "an initializer graph"],
)
def test_control_flow_is_refused_before_node_runs_it(tmp_path, change):
    """A loop, or a function that calls itself, could keep Node running and growing without
    end: a graph model with functions or an initializer graph (which TF.js runs first) is
    refused, whatever they are named; the converter inlines a convolutional network's."""
    folder = web_model(tmp_path / "web")
    model = json.loads((folder / "model.json").read_text())
    change(model)
    (folder / "model.json").write_text(json.dumps(model))
    refused(folder, "refused: it holds functions or an initializer graph")


@pytest.mark.parametrize("op", ["While", "If", "StatefulPartitionedCall", "NoSuchOp"])
def test_operations_off_the_list_are_refused_by_name(tmp_path, op):
    folder = web_model(tmp_path / "web")
    model = json.loads((folder / "model.json").read_text())
    model["modelTopology"]["node"][4]["op"] = op
    (folder / "model.json").write_text(json.dumps(model))
    refused(folder, f"refused: its graph runs {op}")


def test_a_shard_listed_twice_is_refused(tmp_path):
    """Read twice, one file would make Node hold more than the folder does."""
    folder = web_model(tmp_path / "web")
    (folder / "again.bin").hardlink_to(folder / "group1-shard1of1.bin")
    model = json.loads((folder / "model.json").read_text())
    model["weightsManifest"][0]["paths"] = ["group1-shard1of1.bin", "again.bin"]
    model["weightsManifest"][0]["weights"].append({"name": "x", "shape": [8], "dtype": "float32"})
    (folder / "model.json").write_text(json.dumps(model))
    refused(folder, "weight shard 'again.bin' repeats one")


@needs_tfjs
def test_node_loads_only_what_was_checked(tmp_path):
    """userDefinedMetadata.signature, which TF.js prefers to the signature verify checked,
    would feed the images to another node (here `shifted`, skipping the scale and shift):
    the model.json Node loads is verify's checked copy, without it."""
    folder = web_model(tmp_path / "web")
    model = json.loads((folder / "model.json").read_text())
    swapped = {"inputs": {"images": {"name": "shifted:0", "dtype": "DT_FLOAT"}}}
    model["userDefinedMetadata"] = {"signature": swapped}
    (folder / "model.json").write_text(json.dumps(model))
    x = np.random.default_rng(2).standard_normal((1, 3, 5, 3)).astype(np.float32)
    out = open_artifact(folder).run(x)
    np.testing.assert_allclose(out, (x * SCALE + SHIFT).mean(axis=(1, 2)), rtol=1e-6)


def test_a_signature_asked_of_a_graph_model_is_refused(tmp_path):
    """tensorflowjs_converter keeps one signature: asking for another is a mistake to say."""
    with pytest.raises(ConversionError, match="`signature` does not apply"):
        open_artifact(web_model(tmp_path / "web"), signature="stages")


def test_shapes_that_overflow_int64_are_counted_exactly(tmp_path):
    """2^31 x 2^31 x 320 float32 values wrap to 0 bytes in int64: counted in Python's
    integers, they are the 5.9e21 bytes no shard holds; a negative size is no shape."""
    huge = [{"name": "scale", "shape": [2**31, 2**31, 320], "dtype": "float32"}]
    manifest = [{"paths": ["group1-shard1of1.bin"], "weights": huge}]
    refused(web_model(tmp_path / "a", weightsManifest=manifest), "take 5,902,958,")
    negative = [{"name": "scale", "shape": [-1, -8], "dtype": "float32"}]
    manifest = [{"paths": ["group1-shard1of1.bin"], "weights": negative}]
    refused(web_model(tmp_path / "b", weightsManifest=manifest), "has shape [-1, -8]")


@pytest.mark.parametrize(
    "text, says",
    [("{", "not JSON"), ("[1, 2]", "no modelTopology or weightsManifest")],
    ids=["not json", "a list"],
)
def test_a_folder_with_a_bad_model_json_is_named_as_tfjs(tmp_path, text, says):
    """Not taken for a SavedModel without saved_model.pb: the model.json is what is wrong."""
    folder = web_model(tmp_path / "web")
    (folder / "model.json").write_text(text)
    refused(folder, "model.json", says)


@needs_tfjs
def test_node_failing_before_the_runner_starts_says_why(tmp_path, monkeypatch):
    """TF.js missing from the folder verify was pointed at (its package.json files only):
    the runner's one line names the missing package, not Node's version banner."""
    from converters.deploy.artifacts import base

    modules = tmp_path / "node_modules"
    for package in ("tfjs-core", "tfjs-converter", "tfjs-backend-cpu", "tfjs-backend-wasm"):
        (modules / "@tensorflow" / package).mkdir(parents=True)
        (modules / "@tensorflow" / package / "package.json").write_text('{"version": "4.22.0"}')
    monkeypatch.setenv(MODULES_VARIABLE, str(modules))
    artifact = open_artifact(web_model(tmp_path / "web"))
    with pytest.raises(RuntimeError) as error:
        artifact.run(np.zeros((1, 4, 4, 3), np.float32))
    assert "Cannot find module" in str(error.value) and "tfjs-core" in str(error.value)
    said = str(base.rejected(artifact, np.zeros((1, 4, 4, 3)), error.value))
    assert said.endswith("on a batch of (1, 4, 4, 3)") and "input_layout" not in said, said


def test_another_tfjs_major_version_is_refused(tmp_path, monkeypatch):
    modules = tmp_path / "node_modules"
    for package in ("tfjs-core", "tfjs-converter", "tfjs-backend-cpu", "tfjs-backend-wasm"):
        (modules / "@tensorflow" / package).mkdir(parents=True)
        (modules / "@tensorflow" / package / "package.json").write_text('{"version": "3.0.0"}')
    monkeypatch.setenv(MODULES_VARIABLE, str(modules))
    if shutil.which("node") is None:
        pytest.skip("no Node")
    refused(web_model(tmp_path / "web"), "TF.js 4 is needed", "tfjs-core 3.0.0", "make tfjs")


def test_affine_quantization_is_the_converters():
    """tensorflowjs_converter's uint8 range of [-0.3, 1.0]: scale 1.3 / 255, its minimum
    moved to the level nearest -0.3 that puts 0 on a level (59 steps below 0), each value
    rounded to a level: 0 stays 0 exactly. Without the move, 0 would not be a level."""
    import torch

    from converters.deploy.artifacts.tfjs import affine_range
    from converters.deploy.references import affine_rounded

    low, scale = affine_range(-0.3, 1.0, 255)
    assert scale == pytest.approx(1.3 / 255) and low == pytest.approx(-59 * 1.3 / 255)
    values = torch.tensor([-0.3, 0.0, 0.123, 1.0])
    rounded = affine_rounded(values, 255).double()
    assert rounded[1] == 0.0
    steps = (rounded - low) / scale
    assert torch.allclose(steps, steps.round(), atol=1e-4)  # every value on a level
    assert (rounded - values.double()).abs().max() <= scale  # the top clipped by under a step


def test_a_uint8_models_weights_are_matched_to_pytorchs_by_their_ranges(tmp_path):
    """unmatched_weights: a PyTorch weight whose (min, scale) the manifest holds is found
    (once); one of another range is named. A one-valued weight needs no finding."""
    from converters.deploy.artifacts.tfjs import AffineWeight, TFJSArtifact, affine_range

    held = AffineWeight(*affine_range(-2.0, 3.0, 255), "uint8", 0, 3)
    artifact = TFJSArtifact(tmp_path, "tfjs", "test", affine=[held])
    params = {"scale": SCALE, "constant": np.full(3, 0.5, np.float32)}
    assert artifact.unmatched_weights(params, 255)[0] == []
    params["again"] = SCALE.copy()  # the range is held once, not twice
    assert artifact.unmatched_weights(params, 255)[0] == ["again"]
    assert artifact.unmatched_weights({"shift": SHIFT}, 255)[0] == ["shift"]


@pytest.mark.parametrize("arithmetic", ["float64", "float32"])
def test_the_converters_rounding_arithmetic_is_told_from_the_stored_levels(tmp_path, arithmetic):
    """numpy 1 (tensorflowjs_converter under TensorFlow 2.16 and older) rounds the levels in
    float32, numpy 2 in float64: some values land one level apart. Which one a file holds is
    read from its levels, and the reference rounds the same way: exactly the stored levels."""
    import torch

    from converters.deploy.artifacts.tfjs import (
        AffineWeight,
        TFJSArtifact,
        affine_levels,
        affine_range,
    )
    from converters.deploy.references import affine_rounded

    low, high = -1.0, 2.0  # values half way between levels, where the two roundings part
    start, step = affine_range(low, high, 255)
    ties = (start + (np.arange(254) + 0.5) * step).astype(np.float32)
    value = np.concatenate([[low, high], ties]).astype(np.float32)
    wide, narrow = (affine_levels(value, low, high, 255, a) for a in ("float64", "float32"))
    assert 0 < (wide != narrow).sum() < value.size  # some values one level apart
    stored = wide if arithmetic == "float64" else narrow
    (tmp_path / "shard.bin").write_bytes(stored.astype(np.uint8).tobytes())
    weight = AffineWeight(*affine_range(low, high, 255), "uint8", 0, value.size)
    artifact = TFJSArtifact(tmp_path, "tfjs", "test", shards=[tmp_path / "shard.bin"])
    artifact.affine = [weight]
    assert artifact.unmatched_weights({"w": value}, 255) == ([], arithmetic)
    rounded = affine_rounded(torch.from_numpy(value), 255, arithmetic).double().numpy()
    np.testing.assert_array_equal(np.round((rounded - weight.low) / weight.scale), stored)


def test_nodes_are_taken_in_an_order_the_graph_computes_them(tmp_path):
    """The file lists `shifted` before `scaled`, its input: the order locate matches points in
    is the graph's (each node after its inputs), not the file's."""
    folder = web_model(tmp_path / "web")
    model = json.loads((folder / "model.json").read_text())
    nodes = model["modelTopology"]["node"]
    nodes[4], nodes[5] = nodes[5], nodes[4]
    assert [n["name"] for n in nodes[4:6]] == ["shifted", "scaled"]
    (folder / "model.json").write_text(json.dumps(model))
    if shutil.which("node") is None or not (DEFAULT_MODULES / "@tensorflow").is_dir():
        pytest.skip("no TF.js in Node")
    assert open_artifact(folder).nodes == ["scaled", "shifted", "pooled"]


def test_a_shard_linked_from_outside_is_refused(tmp_path):
    folder = web_model(tmp_path / "web")
    (tmp_path / "secret.bin").write_bytes((folder / "group1-shard1of1.bin").read_bytes())
    (folder / "group1-shard1of1.bin").unlink()
    (folder / "group1-shard1of1.bin").symlink_to(tmp_path / "secret.bin")
    refused(folder, "lies outside its folder")


@needs_tfjs
def test_an_output_that_is_not_float_is_said_so(tmp_path):
    folder = web_model(tmp_path / "web")
    model = json.loads((folder / "model.json").read_text())
    model["modelTopology"]["node"].append(
        {"name": "am", "op": "ArgMax", "input": ["pooled", "axes"],
         "attr": {"T": {"type": "DT_FLOAT"}, "output_type": {"type": "DT_INT32"}}}
    )  # fmt: skip
    model["signature"]["outputs"] = {"logits": {"name": "am:0", "dtype": "DT_INT32"}}
    (folder / "model.json").write_text(json.dumps(model))
    with pytest.raises(ConversionError, match="its output am:0 is not float32"):
        open_artifact(folder).run(np.ones((1, 4, 4, 3), np.float32))


@needs_tfjs
def test_a_node_run_past_its_time_is_stopped(tmp_path, monkeypatch):
    from converters.deploy.artifacts import tfjs

    monkeypatch.setattr(tfjs, "RUN_LIMIT", 0.001)
    with pytest.raises(ConversionError, match="TF.js had not finished after"):
        open_artifact(web_model(tmp_path / "web")).run(np.ones((1, 4, 4, 3), np.float32))


def test_weights_not_all_found_fall_back_to_the_quantizations_floor(tmp_path):
    """quantized_exactly: a uint8 model with a PyTorch weight whose range it does not hold is
    compared with uint8's floor, and the note names the weight."""
    import torch

    from converters.deploy.artifacts.tfjs import TFJSArtifact
    from converters.deploy.references import quantized_exactly

    model = torch.nn.Linear(3, 2)
    artifact = TFJSArtifact(tmp_path, "tfjs", "test", precision="uint8", affine=[])
    assert quantized_exactly(model, artifact) is None
    assert any("weight, bias" in note and "uint8's floor" in note for note in artifact.notes)


def test_a_few_quantized_weights_do_not_earn_a_quantized_tolerance(tmp_path):
    """--quantize_float16 '*' stores every float weight as float16: a file with one of them
    float16 and the others float32 (a tampered file choosing its tolerance) is compared as
    float32; all of them float16, as float16."""
    from converters.files.tfjs_files import weight_files

    folder = tmp_path / "web"
    folder.mkdir()
    half = {"dtype": "float16", "original_dtype": "float32"}
    weights = [
        {"name": "scale", "shape": [3], "dtype": "float32", "quantization": half},
        {"name": "shift", "shape": [3], "dtype": "float32"},
    ]
    (folder / "shard.bin").write_bytes(SCALE.astype(np.float16).tobytes() + SHIFT.tobytes())
    data = {"weightsManifest": [{"paths": ["shard.bin"], "weights": weights}]}
    precision, said = weight_files(folder / "model.json", data, [])[1]
    assert precision == "float32" and "1 of its float weights are not quantized" in said
    weights[1]["quantization"] = half
    (folder / "shard.bin").write_bytes(np.concatenate([SCALE, SHIFT]).astype(np.float16).tobytes())
    assert weight_files(folder / "model.json", data, [])[1][0] == "float16"
