"""Two .tflite files onnx2tf writes, met here without onnx2tf (tests/peers/
test_third_party_artifacts.py has the real ones): a file with no signature at all (onnx2tf's
TFLiteConverter.from_keras_model of a tf_keras model writes none) is called by its model
inputs and outputs, and PASSES or FAILS like any other; a file that keeps a TensorFlow op
(FlexErf, onnx2tf's exact GELU) is refused in one line before anything runs, since LiteRT's
interpreter has no Flex delegate."""

from __future__ import annotations

from pathlib import Path

import pytest
import tensorflow as tf

from converters.deploy.artifacts import open_artifact
from converters.errors import ConversionError
from tests.support.verifying import SPEC, assert_passes, check, point_names

pytest.importorskip("ai_edge_litert", reason=".tflite files need ai-edge-litert (deploy extra)")


def without_signatures(source: Path, path: Path) -> Path:
    """`source` with its signature defs removed and its serving subgraph first, whose outputs
    are the serving signature's alone (the model's inputs and outputs are its first
    subgraph's), as the flatbuffer schema describes them."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(source))
    keys = [d.signatureKey for d in model.signatureDefs]
    serving = model.signatureDefs[keys.index(b"serving_default")]
    model.subgraphs = [model.subgraphs[serving.subgraphIndex]]
    model.subgraphs[0].outputs = [output.tensorIndex for output in serving.outputs]
    model.signatureDefs = []
    flatbuffer_utils.write_model(model, str(path))
    return path


@pytest.fixture(scope="module")
def unsigned(deployed, tmp_path_factory) -> Path:
    return without_signatures(deployed["tflite"], tmp_path_factory.mktemp("unsigned") / "m.tflite")


def test_a_tflite_file_without_signatures_is_run_by_its_model_inputs(tiny_model, unsigned):
    artifact = open_artifact(unsigned, SPEC)
    assert "no signature" in artifact.description
    result = check(tiny_model, unsigned, locate="always")
    assert_passes(result)
    # its own tensors are read the same way: every block is located inside it (the final
    # norm, fused with the pooling by the converter, may not be)
    located = [p.name for p in result.points]
    assert [n for n in point_names(SPEC) if n.startswith("stages.")] == [
        n for n in located if n.startswith("stages.")
    ], result.format()


def test_tensorflow_ops_in_a_tflite_file_are_refused_by_name(tmp_path):
    @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 3], tf.float32)])
    def erf(x):
        return {"logits": tf.reduce_mean(tf.math.erf(x), axis=(1, 2))}

    converter = tf.lite.TFLiteConverter.from_concrete_functions([erf.get_concrete_function()])
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.TFLITE_BUILTINS,
        tf.lite.OpsSet.SELECT_TF_OPS,
    ]
    path = tmp_path / "flex.tflite"
    path.write_bytes(converter.convert())
    with pytest.raises(ConversionError, match=r"FlexErf.*Flex delegate.*-rtpo Erf"):
        open_artifact(path, SPEC)
