"""convnext export's .tflite file, converted in pieces and joined into one subgraph
(converters.deploy.export.write_tflite, converters.deploy.tflite_join): what keeps LiteRT's
converter within a few copies of a piece's weights rather than of the whole model's.

Every other deploy test of a .tflite reads such a joined file too (tests.support.verifying's
in_pieces: SPEC in 2 pieces), correct or broken, float32 or quantized."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert", reason=".tflite files need ai-edge-litert (deploy extra)")

from ai_edge_litert.interpreter import Interpreter  # noqa: E402
from tensorflow.lite.python import schema_py_generated as schema  # noqa: E402

import converters.deploy.export as export  # noqa: E402
from converters.deploy.trace import Step, forward_steps  # noqa: E402
from convnext_spec.spec import ModelSpec  # noqa: E402
from tests.support.helpers import converted_keras_model, random_torch_model  # noqa: E402
from tests.support.verifying import (  # noqa: E402
    SPEC,
    assert_fails_at,
    assert_passes,
    check,
    in_pieces,
    keras_copy,
    point_names,
)


def test_the_forward_pass_is_cut_into_pieces_at_trace_points(tiny_model):
    """The test model's steps in its 2 pieces: together, every step once and in order; each
    piece ends at a point of the chain (what the next piece takes), never at the pooling."""
    steps = forward_steps(keras_copy(tiny_model))
    with in_pieces():
        pieces = export.pieces_of(steps)
    assert [[s.name for s in piece] for piece in pieces] == [
        ["downsample_layers.0", "stages.0.0", "downsample_layers.1", "stages.1.0"]
        + ["downsample_layers.2", "stages.2.0", "stages.2.1"],
        ["downsample_layers.3", "stages.3.0", None, "norm", "head"],
    ]
    assert [step for piece in pieces for step in piece] == steps


def test_a_step_heavier_than_a_piece_is_a_piece_of_its_own():
    """A block past PIECE_BYTES (convnextv2_huge's, 254 MB) is converted alone; the pooling
    (no weights, no point) is never where a piece ends."""

    class Layer:
        def __init__(self, size: int):
            self.weights = [np.zeros(size // 4)]

    steps = [Step("a", Layer(8)), Step("b", Layer(400)), Step(None, None), Step("c", Layer(8))]
    with mock.patch.object(export, "PIECE_BYTES", 100):
        pieces = export.pieces_of(steps)
    assert [[s.name for s in piece] for piece in pieces] == [["a"], ["b"], [None, "c"]]


def test_the_joined_file_is_one_subgraph_that_both_signatures_run(deployed):
    """One subgraph, both signatures on it; the serving signature's logits are the very
    tensor the stages signature calls `head`; every weight starts 64-byte aligned in the file."""
    path = deployed["tflite"]
    data = path.read_bytes()
    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    assert len(model.subgraphs) == 1
    signatures = {s.signatureKey.decode(): s for s in model.signatureDefs}
    assert set(signatures) == {"serving_default", "stages"}
    assert {s.subgraphIndex for s in signatures.values()} == {0}
    (logits,) = signatures["serving_default"].outputs
    head = next(o for o in signatures["stages"].outputs if o.name == b"head")
    assert logits.tensorIndex == head.tensorIndex
    root, start = schema.Model.GetRootAs(data, 0), np.frombuffer(data, np.uint8).ctypes.data
    weights = {
        t.buffer for t in model.subgraphs[0].tensors if model.buffers[t.buffer].data is not None
    }
    assert len(weights) > 20
    for index in weights:
        assert (root.Buffers(index).DataAsNumpy().ctypes.data - start) % 64 == 0

    interpreter = Interpreter(model_path=str(path))
    images = np.random.default_rng(0).normal(size=(2, 61, 67, 3)).astype(np.float32)
    served = interpreter.get_signature_runner("serving_default")(images=images)
    stages = interpreter.get_signature_runner("stages")(images=images)
    assert set(stages) == set(point_names(SPEC))
    np.testing.assert_array_equal(served["logits"], stages["head"])


def test_a_piece_joined_to_the_wrong_tensor_fails_where_it_starts(tmp_path, tiny_model):
    """The check that the joining is right: a file whose second piece takes stages.2.0 (the
    same shape) instead of stages.2.1 FAILS, first at downsample_layers.3, the first point
    that piece computes. (The correct file passes: test_verify.py.)"""
    join = export.join

    def miswired(pieces, *args, **kwargs):
        wrong = {"stages.2.1": "stages.2.0"}
        pieces = [type(p)(p.path, wrong.get(p.link, p.link)) for p in pieces]
        return join(pieces, *args, **kwargs)

    path = tmp_path / "miswired.tflite"
    with in_pieces(), mock.patch.object(export, "join", miswired):
        export.export_model(keras_copy(tiny_model), path)
    assert_fails_at(check(tiny_model, path), "downsample_layers.3")


HEADS = {
    "norm_first": ModelSpec(
        depths=(1, 1, 2, 1), dims=(8, 16, 24, 32), num_classes=5, head="norm_first"
    ),
    "mlp": ModelSpec(
        depths=(1, 1, 2, 1), dims=(8, 16, 24, 32), num_classes=5, head="mlp", head_hidden_size=12
    ),
    "isotropic": ModelSpec(kind="isotropic", depths=(4,), dims=(16,), num_classes=5),
}


@pytest.mark.exhaustive
@pytest.mark.parametrize("name", list(HEADS))
def test_every_head_and_the_isotropic_model_pass_cut_into_many_pieces(tmp_path, name):
    """timm's "norm_first" and "mlp" heads and the isotropic model, cut wherever a piece can
    end (6 to 10 pieces): each file passes with every point located."""
    spec = HEADS[name]
    torch_model = random_torch_model(spec, seed=1)
    model = converted_keras_model(torch_model, spec, "float32")
    path = tmp_path / f"{name}.tflite"
    with mock.patch.object(export, "PIECE_BYTES", 3000):
        assert len(export.pieces_of(forward_steps(model))) >= 6
        export.export_model(model, path)
    result = check(torch_model, path)
    assert_passes(result)
    assert result.points[-1].name == "head" and all(p.ok for p in result.points)
