"""`convnext verify` and `convnext export` end to end: a correct deployment PASSES as every
artifact kind, and each deliberately broken one FAILS, with the first divergence named where
the break is. Every PASS here has a sibling that shows the same check failing.

The subject is the check, not the width: the localisation tests run on SPEC, a 5-block
ConvNeXt with every weight randomised, compared through converters.deploy.verify.verify_models (SPEC
is no named variant, so verify() cannot infer it from a checkpoint file). The command line
needs a named variant: its tests use conftest's convnext_atto. Images are 61x67, no multiple
of 32: 61 -> 15 -> 7 -> 3 -> 1 and 67 -> 16 -> 8 -> 4 -> 2, a remainder at the stem and odd
sizes at two downsamples, so a padding="same" conv changes the shapes (at 224 it hides).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import keras
import numpy as np
import pytest
import tensorflow as tf
import torch

import convnext_tf
from converters.deploy.artifacts import open_artifact
from converters.deploy.artifacts.keras_models import KerasArtifact
from converters.deploy.inputs import feeding, random_images
from converters.deploy.verify import FACTOR, UNIT_ROUNDOFF, verify, verify_models
from converters.errors import ConversionError
from converters.files.checkpoint import load_state_dict
from converters.weights import keras_applications
from converters.weights.convert import keras_variables
from convnext_spec.spec import spec_from_name
from tests.support.helpers import (
    BATCH,
    blocks_of,
    random_torch_model,
)
from tests.support.verifying import (
    SIZE,
    SPEC,
    assert_fails_at,
    assert_passes,
    check,
    keras_copy,
    perturb_one_value,
    point_names,
    save_signatures,
    write,
)

# The `deploy` extra (make install brings it; the lowest-versions environment does not):
# Pillow for pictures, LiteRT for .tflite files.
pytest.importorskip("PIL", reason="convnext verify --images needs Pillow (the deploy extra)")
pytest.importorskip("ai_edge_litert", reason=".tflite files need ai-edge-litert (deploy extra)")


# --- 1. a correct conversion passes, as every artifact kind ---------------------------------


@pytest.mark.parametrize("kind", ["keras", "weights.h5", "savedmodel", "tflite"])
def test_correct_float32_conversion_passes_block_by_block(tiny_model, deployed, kind):
    """A correct conversion PASSES as each artifact kind, with every block and stage
    compared in model order and in tolerance, and the same top-1 class on every image; the
    tolerance is the derived one, FACTOR times the float32 floor it reports."""
    result = check(tiny_model, deployed[kind])
    assert_passes(result)
    assert [p.name for p in result.points] == point_names(SPEC)
    assert result.topk == 1.0
    assert result.output_kind == "logits"
    tolerance = result.tolerance
    assert (tolerance["how"], tolerance["precision"]) == ("derived", "float32")
    assert tolerance["rtol"] == pytest.approx(
        FACTOR * max(tolerance["floor"], UNIT_ROUNDOFF["float32"])
    )
    assert result.output.max_rel > 0  # compared, not skipped
    if kind in ("savedmodel", "tflite"):
        assert "'stages' signature of convnext export" in result.artifact


@pytest.mark.parametrize(
    "kind, precision",
    [("tflite-float16", "float16"), ("tflite-dynamic", "dynamic-int8")],
)
def test_quantized_tflite_passes_a_looser_derived_tolerance(tiny_model, deployed, kind, precision):
    """A quantized .tflite PASSES against a tolerance derived from a PyTorch copy with its
    weights rounded the same way: looser than float32's, and stated. (Its FAIL sibling: the
    quantized broken deployments in BROKEN.)"""
    float32 = check(tiny_model, deployed["tflite"])
    result = check(tiny_model, deployed[kind])
    assert result.passed, result.format()
    assert result.first_divergence is None
    assert [p.name for p in result.points] == point_names(SPEC)
    assert result.tolerance["precision"] == precision
    assert result.tolerance["how"] == "derived"
    assert result.tolerance["rtol"] > 100 * float32.tolerance["rtol"]
    assert precision in result.verdict_line()
    if precision == "float16":  # int8 moves logits by ~1e-2: top-1 may flip on close classes
        assert result.top1 == 1.0


@pytest.fixture(scope="module")
def float64_deployed(tmp_path_factory, tiny_model) -> dict[str, Path]:
    """The correct conversion into a float64 Keras model, as .keras and as a SavedModel."""
    directory = tmp_path_factory.mktemp("float64")
    model = keras_copy(tiny_model, "float64")
    return {
        "keras": write(model, directory / "model.keras"),
        "savedmodel": write(model, directory / "savedmodel"),
    }


@pytest.mark.parametrize("kind", ["keras", "savedmodel"])
def test_float64_artifact_is_fed_and_compared_in_float64(tiny_model, float64_deployed, kind):
    """A float64 artifact gets float64 input and is compared in float64: every difference is
    at float64 rounding (~1e-15), where an input or computation rounded to float32 anywhere
    would show ~1e-8."""
    result = check(tiny_model, float64_deployed[kind])
    assert result.tolerance["precision"] == "float64"
    assert [p.name for p in result.points] == point_names(SPEC)
    assert max(p.max_rel for p in [*result.points, result.output]) < 1e-13, result.format()
    assert result.top1 == 1.0


@pytest.mark.parametrize("kind", ["keras", "savedmodel"])
def test_float64_conversion_passes_with_a_tolerance_2_to_the_29_smaller(
    tiny_model, deployed, float64_deployed, kind
):
    """A correct float64 conversion PASSES, against a tolerance 2^-29 (the ratio of the unit
    roundoffs) times the float32 one on the same inputs: the float32 floor scaled to float64.
    (Its FAIL sibling: test_float64_sees_a_perturbation_below_float32_rounding.)"""
    float32 = check(tiny_model, deployed[kind])
    result = check(tiny_model, float64_deployed[kind])
    assert_passes(result)
    assert [p.name for p in result.points] == point_names(SPEC)
    ratio = result.tolerance["rtol"] / float32.tolerance["rtol"]
    assert ratio == pytest.approx(2**-29, rel=0.5), f"{ratio:.2e} vs 2^-29 = {2**-29:.2e}"


def test_float64_verdict_states_the_floor_its_tolerance_comes_from(tiny_model, float64_deployed):
    """What the verdict line prints, `FACTOR x the float64 noise floor F`, is the tolerance
    used, at the output and at every point, as it is for float32 (the first test above)."""
    result = check(tiny_model, float64_deployed["keras"])
    assert result.tolerance["rtol"] == pytest.approx(FACTOR * result.tolerance["floor"])
    for p in result.points:
        assert p.tolerance == pytest.approx(FACTOR * max(p.floor, UNIT_ROUNDOFF["float64"]))


def test_float64_sees_a_perturbation_below_float32_rounding(tmp_path, tiny_model):
    """One weight moved by 1e-9 (float32's spacing at these weights is ~1e-8): float64 FAILS
    at the block that holds it, every earlier point agreeing; float32 cannot even hold the
    change and PASSES. This is what float64 is for."""
    results = {}
    for dtype in ("float64", "float32"):
        model = keras_copy(tiny_model, dtype)
        perturb_one_value(keras_variables(model)["stages.2.1.pwconv1.weight"], 1e-9)
        results[dtype] = check(tiny_model, write(model, tmp_path / f"{dtype}.keras"))
    assert_fails_at(results["float64"], "stages.2.1")
    assert_passes(results["float32"])


# --- 2. a broken deployment fails where it breaks -------------------------------------------
# Each is built from a correct conversion. A Keras layer reads `eps` (convnext_tf's LayerNorm;
# Keras' own LayerNormalization calls it `epsilon`, which convnext_tf's would silently ignore)
# and `padding` (Conv2D) when it is called, so setting them on the built model changes what
# the model computes and what a new tf.function traces: convnext export's signatures are
# traced afresh, so the SavedModel carries the broken computation (were it not so, verify
# would PASS and these tests fail). A new activation cannot be set: Keras refuses new
# sublayers on a built layer ("You cannot add new elements of state ... to a layer that is
# already built"), so the tanh GELU model is built with convnext_tf.model.GELU replaced.


def perturbed_weight(torch_model: torch.nn.Module) -> keras.Model:
    """One value of stages.2.1's pwconv1 kernel moved by 1e-2."""
    model = keras_copy(torch_model)
    perturb_one_value(keras_variables(model)["stages.2.1.pwconv1.weight"], 1e-2)
    return model


def transposed_depthwise_kernel(torch_model: torch.nn.Module) -> keras.Model:
    """stages.1.0's 7x7 depthwise kernel with kh and kw swapped (same shape, so it loads)."""
    model = keras_copy(torch_model)
    variable = keras_variables(model)["stages.1.0.dwconv.weight"]
    variable.assign(np.ascontiguousarray(variable.numpy().swapaxes(0, 1)))
    return model


def layer_norm_eps_1e_3(torch_model: torch.nn.Module) -> keras.Model:
    """Every LayerNorm with Keras' default eps, 1e-3, for ConvNeXt's 1e-6: the first one is
    the stem's (downsample_layers.0.1)."""
    model = keras_copy(torch_model)
    norms = [
        model.downsample_layers[0].layers[1],
        *(layer.layers[0] for layer in model.downsample_layers[1:]),
        *(block.norm for block in blocks_of(model)),
        model.norm,
    ]
    assert all(isinstance(n, convnext_tf.LayerNorm) and n.eps == 1e-6 for n in norms)
    for norm in norms:
        norm.eps = 1e-3
    return model


class TanhGELU(convnext_tf.GELU):
    """keras.ops.gelu's default form, the tanh approximation (~5e-4 off the exact GELU)."""

    def call(self, x):
        return keras.ops.gelu(x, approximate=True)


def tanh_gelu(torch_model: torch.nn.Module) -> keras.Model:
    """Every block's activation the tanh approximation: the first block is stages.0.0."""
    with mock.patch.object(convnext_tf.model, "GELU", TanhGELU):
        model = keras_copy(torch_model)
    assert all(isinstance(block.act, TanhGELU) for block in blocks_of(model))
    return model


def same_padding(layer: str) -> Callable[[torch.nn.Module], keras.Model]:
    """padding="same" on the stem conv (downsample_layers.0) or a downsampling conv: it pads
    the bottom and right where PyTorch's floors, which changes every output size that is not
    a multiple of the stride."""

    def build(torch_model: torch.nn.Module) -> keras.Model:
        model = keras_copy(torch_model)
        index = int(layer.split(".")[-1])
        conv = model.downsample_layers[index].layers[0 if index == 0 else 1]
        assert isinstance(conv, keras.layers.Conv2D) and conv.padding == "valid"
        conv.padding = "same"
        return model

    return build


@dataclass(frozen=True)
class Breakage:
    build: Callable[[torch.nn.Module], keras.Model]
    file: str  # the artifact written
    first: str  # where verify must say the difference starts
    quantize: str | None = None


BROKEN = {
    "one perturbed weight": Breakage(perturbed_weight, "perturbed.weights.h5", "stages.2.1"),
    "kh-kw-transposed depthwise kernel": Breakage(
        transposed_depthwise_kernel, "transposed.keras", "stages.1.0"
    ),
    "LayerNorm eps 1e-3": Breakage(layer_norm_eps_1e_3, "eps", "downsample_layers.0"),
    "tanh GELU": Breakage(tanh_gelu, "tanh", "stages.0.0"),
    "padding=same on the stem": Breakage(
        same_padding("downsample_layers.0"), "same-stem", "downsample_layers.0"
    ),
    "transposed depthwise kernel, float16 .tflite": Breakage(
        transposed_depthwise_kernel, "transposed-float16.tflite", "stages.1.0", "float16"
    ),
    "transposed depthwise kernel, dynamic .tflite": Breakage(
        transposed_depthwise_kernel, "transposed-dynamic.tflite", "stages.1.0", "dynamic"
    ),
}


@pytest.fixture(scope="module")
def broken(tmp_path_factory, tiny_model) -> dict[str, Path]:
    """Every BROKEN deployment, written once: weight breakage as Keras files, computation
    breakage as SavedModels or .tflite files from convnext export."""
    directory = tmp_path_factory.mktemp("broken")
    return {
        name: write(case.build(tiny_model), directory / case.file, case.quantize)
        for name, case in BROKEN.items()
    }


@pytest.mark.parametrize("name", list(BROKEN))
def test_broken_deployment_fails_where_it_breaks(tiny_model, broken, name):
    """Each broken deployment FAILS, and the first divergence is the layer that holds the
    break: every earlier point agrees within its tolerance, that one does not."""
    result = check(tiny_model, broken[name])
    assert_fails_at(result, BROKEN[name].first)
    assert [p.name for p in result.points] == point_names(SPEC)
    assert f"first divergence: {BROKEN[name].first}" in result.format()
    if "padding" in name:  # 15x16 in PyTorch, 16x17 with "same" at the stem
        assert "shape" in next(p for p in result.points if not p.ok).note


def test_same_padding_passes_at_224(tiny_model, broken):
    """The stem with padding="same" PASSES at 224x224, where "same" pads nothing: why the
    size option matters, and why the default check uses 61x67."""
    result = check(tiny_model, broken["padding=same on the stem"], size=(224, 224))
    assert_passes(result)
    assert [p.name for p in result.points] == point_names(SPEC)


# --- 3. a hand-written TF port, as a black box ----------------------------------------------


class LayerScale(keras.layers.Layer):
    """The seed's Block.gamma, as a layer of its own: the residual branch times a vector."""

    def build(self, input_shape):
        self.gamma = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="gamma")

    def call(self, x):
        return self.gamma * x


def hand_written_port(
    torch_model: torch.nn.Module, stem_padding: str = "valid", moved: str | None = None
) -> keras.Model:
    """SPEC written the way ../shared/seed/convnext-blog-post.txt writes ConvNeXt in TF:
    Keras' own layers (Conv2D, LayerNormalization, Activation("gelu"), Dense), names of its
    own (stem, stage1_block0, downsample2, ...), here as a functional model, and the PyTorch
    weights copied in by hand. The seed pads with "same"; this port uses "valid" unless
    `stem_padding` puts the seed's bug back. `moved`: a layer of the port one value of whose
    kernel is moved by 1e-2 (a one-weight break in that block)."""
    state = {key: value.detach().numpy() for key, value in torch_model.state_dict().items()}
    layers = keras.layers
    copies = []  # (layer, its weights in Keras' layout), assigned once the model is built

    def norm(name: str, key: str):
        layer = layers.LayerNormalization(epsilon=1e-6, name=name)
        copies.append((layer, [state[f"{key}.weight"], state[f"{key}.bias"]]))
        return layer

    def conv(name: str, key: str, stride: int, padding: str = "valid"):
        weight = state[f"{key}.weight"]  # (out, in, kh, kw)
        layer = layers.Conv2D(weight.shape[0], stride, strides=stride, padding=padding, name=name)
        copies.append((layer, [weight.transpose(2, 3, 1, 0), state[f"{key}.bias"]]))
        return layer

    def dense(name: str, key: str):
        weight = state[f"{key}.weight"]  # (out, in)
        layer = layers.Dense(weight.shape[0], name=name)
        copies.append((layer, [weight.T, state[f"{key}.bias"]]))
        return layer

    inputs = keras.Input((None, None, 3))
    x = conv("stem_conv2d", "downsample_layers.0.0", 4, stem_padding)(inputs)
    x = norm("stem_norm", "downsample_layers.0.1")(x)
    for i, depth in enumerate(SPEC.depths):
        if i:
            x = norm(f"downsample{i + 1}_norm", f"downsample_layers.{i}.0")(x)
            x = conv(f"downsample{i + 1}_conv2d", f"downsample_layers.{i}.1", 2)(x)
        for j in range(depth):
            name, key = f"stage{i + 1}_block{j}", f"stages.{i}.{j}"
            dwconv = layers.DepthwiseConv2D(7, padding="same", name=f"{name}_dwconv")
            kernel = state[f"{key}.dwconv.weight"].transpose(2, 3, 0, 1)  # (C,1,7,7)->(7,7,C,1)
            copies.append((dwconv, [kernel, state[f"{key}.dwconv.bias"]]))
            y = dwconv(x)
            y = norm(f"{name}_norm", f"{key}.norm")(y)
            y = dense(f"{name}_pwconv1", f"{key}.pwconv1")(y)
            y = layers.Activation("gelu", name=f"{name}_gelu")(y)  # exact: erf
            y = dense(f"{name}_pwconv2", f"{key}.pwconv2")(y)
            scale = LayerScale(name=f"{name}_gamma")
            copies.append((scale, [state[f"{key}.gamma"]]))
            x = layers.Add(name=f"{name}_add")([x, scale(y)])
    x = layers.GlobalAveragePooling2D(name="pool")(x)  # the seed's tf.reduce_mean over H, W
    x = norm("norm", "norm")(x)
    model = keras.Model(inputs, dense("head", "head")(x), name="seed_style_convnext")
    for layer, values in copies:
        layer.set_weights(values)
    if moved is not None:
        perturb_one_value(model.get_layer(moved).kernel, 1e-2)
    return model


PORTS = {
    "correct": {},
    "seed's padding=same on the stem": {"stem_padding": "same"},
    "one weight of stage3_block1": {"moved": "stage3_block1_pwconv1"},  # = stages.2.1
}


@pytest.fixture(scope="module")
def ports(tmp_path_factory, tiny_model) -> dict[str, Path]:
    """Each PORTS variant, exported with Keras' own model.export(): a SavedModel whose
    signature has Keras' input and output names and no `stages` signature."""
    directory = tmp_path_factory.mktemp("ports")
    paths = {}
    for i, (name, options) in enumerate(PORTS.items()):
        paths[name] = directory / f"port{i}"
        hand_written_port(tiny_model, **options).export(paths[name], verbose=False)
    return paths


@pytest.fixture(scope="module")
def port_tflites(ports) -> dict[str, Path]:
    """The correct and the one-weight PORTS converted to .tflite by LiteRT's converter from
    their SavedModels (TFLiteConverter.from_saved_model, as people convert such a port):
    tensors named by the converter, no `stages` signature."""
    paths = {}
    for name in ("correct", "one weight of stage3_block1"):
        paths[name] = ports[name].with_suffix(".tflite")
        converter = tf.lite.TFLiteConverter.from_saved_model(str(ports[name]))
        paths[name].write_bytes(converter.convert())
    return paths


def port_file(ports, port_tflites, kind: str, name: str) -> Path:
    return (ports if kind == "savedmodel" else port_tflites)[name]


@pytest.mark.parametrize(
    "kind", [pytest.param("savedmodel", marks=pytest.mark.exhaustive), "tflite"]
)
def test_hand_written_port_passes_with_every_block_located(tiny_model, ports, port_tflites, kind):
    """A correct port with its own layer names PASSES through its serving signature, and,
    asked to locate its blocks on a pass too, every block and stage is found by value among
    its own tensors, in model order, each under the port's own name for it (stage3_block1 is
    stages.2.1): the same table as this project's own export gives."""
    artifact = open_artifact(port_file(ports, port_tflites, kind, "correct"), SPEC)
    assert artifact.kind == kind and not artifact.traced
    assert artifact.input_name != "images"  # Keras' name, not convnext export's
    result = check(tiny_model, artifact.path, locate="always")
    assert_passes(result)
    assert [p.name for p in result.points] == point_names(SPEC)
    sources = {p.name: p.source for p in result.points}
    assert "stage3_block1" in sources["stages.2.1"], sources
    assert "stem" in sources["downsample_layers.0"], sources
    assert "downsample4" in sources["downsample_layers.3"], sources
    text = result.format()
    assert "located by value" in text and "11 of 11 points" in text
    assert "not compared" not in text and "first divergence" not in text
    assert "compared as logits" in text  # output_0 says nothing: told by its values


@pytest.mark.parametrize("kind", ["savedmodel", "tflite"])
def test_hand_written_port_broken_in_one_block_fails_there(tiny_model, ports, port_tflites, kind):
    """The sibling: one weight of the port's stage3_block1 moved by 1e-2 FAILS, with
    stages.2.1 named as the first divergence from the port's own tensors: every point before
    it located and in tolerance, its best match out of tolerance, and the points after it
    said to be unmatchable rather than guessed."""
    result = check(tiny_model, port_file(ports, port_tflites, kind, "one weight of stage3_block1"))
    assert_fails_at(result, "stages.2.1")
    names = point_names(SPEC)
    assert [p.name for p in result.points] == names[: names.index("stages.2.1") + 1]
    assert "stage3_block1" in result.points[-1].source
    assert result.points[-1].max_rel > 10 * result.points[-1].tolerance
    text = result.format()
    assert "first divergence: stages.2.1" in text
    assert (
        "after the first divergence, nothing can be matched by value): downsample_layers.3" in text
    )


def test_hand_written_keras_port_in_memory_fails_at_the_broken_block(tiny_model):
    """A port held as a Keras model (the Python API: no file) is located from its layers'
    outputs, named by its layers: the one-weight break FAILS at stages.2.1."""
    model = hand_written_port(tiny_model, moved="stage3_block1_pwconv1")
    artifact = KerasArtifact(Path("port"), "keras", "a hand-written port", model=model)
    inputs = random_images(BATCH, SIZE, SPEC.in_chans, seed=0)
    feed = feeding(artifact, SPEC.in_chans, None, None, None, None, None)
    result = verify_models(tiny_model, artifact, inputs, feed, batch=BATCH)
    assert_fails_at(result, "stages.2.1")
    assert [p.source for p in result.points[:2]] == ["stem_norm", "stage1_block0_add"]


def test_hand_written_port_with_the_seeds_padding_fails(tiny_model, ports):
    """The seed's padding="same" on the stem, at 61x67, makes the port FAIL on its logits;
    no tensor has the stem's shape, so no block can be matched after it, and no point is
    named: where it goes wrong is said to be unnameable, not guessed."""
    result = check(tiny_model, ports["seed's padding=same on the stem"])
    assert not result.passed, result.format()
    assert result.points == [] and result.first_divergence is None
    assert result.output.max_rel > result.tolerance["rtol"]
    text = result.format()
    assert "intermediate:  not compared" in text
    assert "cannot be named: after the input" in text


# --- 4. keras.applications ------------------------------------------------------------------
# convnext_tiny, 28M parameters: about 18 s for this section on 2 cores (a 115 MB checkpoint,
# file and .keras model written and read, a 224x224 run), so it is in the exhaustive tier.


@pytest.fixture(scope="module")
def convnext_tiny(tmp_path_factory) -> tuple[torch.nn.Module, Path]:
    """convnext_tiny (28M parameters), 10 classes, every weight randomised, and the same as
    an official checkpoint file."""
    model = random_torch_model("convnext_tiny", seed=2, num_classes=10)
    path = tmp_path_factory.mktemp("convnext_tiny") / "convnext_tiny.pth"
    torch.save(model.state_dict(), path)
    return model, path


@pytest.fixture(scope="module")
def applications_weights(convnext_tiny) -> Path:
    """`convnext convert --to keras-applications` of convnext_tiny: a .weights.h5 for
    keras.applications.ConvNeXtTiny (preprocessing built in, no softmax)."""
    from converters.cli import main

    _, checkpoint = convnext_tiny
    path = checkpoint.with_name("applications.weights.h5")
    assert main(["convert", str(checkpoint), str(path), "--to", "keras-applications"]) == 0
    return path


@pytest.mark.exhaustive
def test_keras_applications_weights_pass(convnext_tiny, applications_weights):
    """The converted keras.applications weights PASS, fed raw pixels 0-255 (their model
    normalises itself), at 224x224, the only size a keras.applications model with its top
    takes (see test_keras_applications_weights_at_another_size)."""
    _, checkpoint = convnext_tiny
    result = verify(checkpoint, applications_weights, batch=BATCH)
    assert result.passed, result.format()
    assert "keras.applications ConvNeXtTiny weights" in result.artifact
    assert "pixels 0-255" in result.inputs and "224x224" in result.inputs
    assert result.top1 == 1.0 and result.output_kind == "logits"


@pytest.mark.exhaustive
def test_keras_applications_weights_fed_the_wrong_pixels_fail(convnext_tiny, applications_weights):
    """The sibling: the same weights fed pixels 0-1 where their model expects 0-255 FAIL."""
    torch_model, _ = convnext_tiny
    spec = spec_from_name("convnext_tiny", num_classes=10)
    result = check(torch_model, applications_weights, spec=spec, size=(224, 224), pixels="0-1")
    assert not result.passed, result.format()


@pytest.mark.exhaustive
def test_keras_applications_weights_at_another_size(convnext_tiny, applications_weights):
    """At 61x67 the weights either PASS or are refused with one clear line naming the size
    they take, never an unforeseen error."""
    _, checkpoint = convnext_tiny
    try:
        result = verify(checkpoint, applications_weights, size=SIZE, batch=BATCH)
    except ConversionError as e:
        assert "224x224" in str(e)
    else:
        assert result.passed, result.format()


@pytest.fixture(scope="module")
def applications_model(convnext_tiny) -> Path:
    """convnext_tiny's weights in keras.applications.ConvNeXtTiny with its defaults (its
    preprocessing layer, which takes pixels 0-255, and its softmax), saved as .keras, for
    61x67 input (a model with its top has a fixed size, which verify reads off it)."""
    torch_model, checkpoint = convnext_tiny
    model = keras.applications.ConvNeXtTiny(
        weights=None, classes=10, input_shape=(*SIZE, 3), name="convnext_tiny"
    )
    spec = spec_from_name("convnext_tiny", num_classes=10)
    keras_applications.assign(load_state_dict(torch_model.state_dict()), model, spec.depths, True)
    path = checkpoint.with_name("applications.keras")
    model.save(path)
    return path


@pytest.mark.exhaustive
def test_keras_applications_model_with_softmax_and_preprocessing_passes(
    convnext_tiny, applications_model
):
    """The saved keras.applications model PASSES through verify() with no option at all:
    its size (61x67), its pixels 0-255 and its probabilities are detected, and it is
    compared with PyTorch's softmax."""
    _, checkpoint = convnext_tiny
    artifact = open_artifact(applications_model, spec_from_name("convnext_tiny", num_classes=10))
    assert (artifact.pixels, artifact.output, artifact.size) == ("0-255", "probabilities", SIZE)
    result = verify(checkpoint, applications_model, batch=BATCH)
    assert result.passed, result.format()
    assert result.output_kind == "probabilities"
    assert "61x67" in result.inputs and "pixels 0-255" in result.inputs
    assert result.first_divergence is None and result.top1 == 1.0


@pytest.mark.exhaustive
def test_keras_applications_softmax_compared_as_logits_fails(convnext_tiny, applications_model):
    """The sibling: the same model compared as if it gave logits FAILS, so the PASS above
    depends on its output being detected."""
    torch_model, _ = convnext_tiny
    spec = spec_from_name("convnext_tiny", num_classes=10)
    result = check(torch_model, applications_model, spec=spec, output="logits")
    assert not result.passed, result.format()


# --- 5. a black box described by options ----------------------------------------------------


class BlackBox(tf.Module):
    """One SavedModel, four ways of serving the same correct model, each a signature."""

    def __init__(self, model: keras.Model):
        super().__init__()
        self.model = model
        self.mean = tf.constant(keras_applications.IMAGENET_MEAN, tf.float32)
        self.std = tf.constant(keras_applications.IMAGENET_STD, tf.float32)

    @tf.function(input_signature=[tf.TensorSpec([None, 3, None, None], tf.float32)])
    def nchw(self, x):
        """NCHW normalised input, as a PyTorch-minded exporter writes it."""
        return {"output_0": self.model(tf.transpose(x, [0, 2, 3, 1]), training=False)}

    @tf.function(input_signature=[tf.TensorSpec([None, 3, None, None], tf.float32)])
    def nchw_bgr(self, x):
        """The same with the channels reversed (BGR): a broken one."""
        return {"output_0": self.model(tf.transpose(x[:, ::-1], [0, 2, 3, 1]), training=False)}

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    def pixels(self, x):
        """Raw pixels 0-255, normalised inside."""
        return {"output_0": self.model((x / 255.0 - self.mean) / self.std, training=False)}

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    def probabilities(self, x):
        """Softmax output under a name that does not say so."""
        return {"output_0": tf.nn.softmax(self.model(x, training=False))}


@pytest.fixture(scope="module")
def black_box(tmp_path_factory, tiny_model) -> Path:
    """BlackBox of the correct conversion, saved with tf.saved_model.save: serving_default
    takes NCHW, and the other signatures are named after their methods."""
    module = BlackBox(keras_copy(tiny_model))
    path = tmp_path_factory.mktemp("black_box") / "savedmodel"
    signatures = {
        "serving_default": module.nchw,
        "nchw_bgr": module.nchw_bgr,
        "pixels": module.pixels,
        "probabilities": module.probabilities,
    }
    save_signatures(path, signatures)
    return path


def test_nchw_signature_is_detected_and_passes(tiny_model, black_box):
    """A signature taking (None, 3, None, None) is detected as NCHW, fed NCHW, and PASSES."""
    assert open_artifact(black_box, SPEC).layout == "nchw"
    result = check(tiny_model, black_box)
    assert result.passed, result.format()
    assert "the artifact gets NCHW normalised" in result.inputs
    assert result.first_divergence is None and result.top1 == 1.0
    # a black box that passes: its blocks are looked for among its tensors only on a FAIL
    assert result.points == [] and "located among its own tensors when" in result.format()


def test_nchw_signature_with_bgr_channels_fails(tiny_model, black_box):
    """The sibling: the same NCHW signature with its channels reversed FAILS."""
    result = check(tiny_model, black_box, signature="nchw_bgr")
    assert not result.passed, result.format()


def test_raw_pixels_pass_with_the_pixels_option_and_fail_without(tiny_model, black_box):
    """A signature that normalises 0-255 pixels itself PASSES with pixels="0-255" (PyTorch
    gets the same pictures normalised) and FAILS without it, fed normalised values."""
    with_option = check(tiny_model, black_box, signature="pixels", pixels="0-255")
    assert with_option.passed, with_option.format()
    assert "pixels 0-255" in with_option.inputs
    without = check(tiny_model, black_box, signature="pixels")
    assert not without.passed, without.format()


def test_probabilities_pass_with_the_output_option_and_fail_as_logits(tiny_model, black_box):
    """An output named output_0 that holds probabilities PASSES with output="probabilities"
    (compared with PyTorch's softmax), and without the option too, told by its values (each
    row non-negative and summing to 1), saying so; compared as logits, it FAILS."""
    with_option = check(tiny_model, black_box, signature="probabilities", output="probabilities")
    assert with_option.passed, with_option.format()
    assert with_option.output_kind == "probabilities"
    detected = check(tiny_model, black_box, signature="probabilities")
    assert detected.passed, detected.format()
    assert detected.output_kind == "probabilities"
    assert "compared as probabilities" in detected.format()
    as_logits = check(tiny_model, black_box, signature="probabilities", output="logits")
    assert not as_logits.passed, as_logits.format()


# --- 6. pictures from a folder --------------------------------------------------------------


def test_folder_of_pictures_passes_with_a_row_per_file(tiny_model, deployed, pictures):
    """The pictures, resized once to 61x67 and fed to both sides in batches of 2 (2 + 1),
    PASS, each in a row under its file name, in name order."""
    result = check(tiny_model, deployed["savedmodel"], folder=pictures)
    assert_passes(result)
    assert [row.name for row in result.images] == ["a.png", "b.jpg", "c.png"]
    assert all(row.agree for row in result.images)
    assert f"3 images from {pictures}" in result.inputs


def test_folder_of_pictures_fails_on_a_broken_deployment(tiny_model, broken, pictures):
    """The sibling: the same pictures FAIL a broken deployment, at its break."""
    result = check(tiny_model, broken["tanh GELU"], folder=pictures)
    assert_fails_at(result, "stages.0.0")
    assert len(result.images) == 3


# --- 7. the command line: verify ------------------------------------------------------------


# --- 8. the command line: export -----------------------------------------------------------


# --- 9. what a first user got wrong (a trial of the commands as a new user) ------------------
