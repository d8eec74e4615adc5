"""The two model files mirror each other: same variant table, same classes and methods in the
same order, same attribute names, and for every variant the same tensors under the same names.
"""

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import keras
import pytest
import torch

import convnext_tf
import convnext_tf.layers
import convnext_tf.model
import convnext_torch
import convnext_torch.kernels
import convnext_torch.model
from converters.names import mapping
from converters.weights.convert import keras_variables
from tests.support.helpers import ALL_VARIANTS, PARAMETERS, keras_shapes_only

ROOT = Path(__file__).resolve().parents[2]
TORCH_FILE = ROOT / "convnext_torch" / "model.py"
KERAS_FILE = ROOT / "convnext_tf" / "model.py"

KERAS_ONLY_CLASSES: set[str] = set()  # GELU, the one Keras-only class, is in convnext_tf/layers.py
KERAS_ONLY_METHODS = {"build", "get_config"}  # Keras creates weights lazily and serialises
METHOD_TWINS = {"forward": "call"}


def classes(path: Path) -> dict[str, list[str]]:
    """Class name -> method names, in file order."""
    tree = ast.parse(path.read_text())
    return {
        node.name: [n.name for n in node.body if isinstance(n, ast.FunctionDef)]
        for node in tree.body
        if isinstance(node, ast.ClassDef)
    }


def test_one_variant_table_for_both():
    assert convnext_torch.VARIANTS is convnext_tf.VARIANTS  # the same object: convnext_spec.spec
    assert convnext_torch.ISOTROPIC_VARIANTS is convnext_tf.ISOTROPIC_VARIANTS
    assert convnext_torch.FAMILY_DEFAULTS is convnext_tf.FAMILY_DEFAULTS
    for path in (TORCH_FILE, KERAS_FILE):
        assert "VARIANTS" not in path.read_text()  # no copy of the table in a model file


def test_same_classes_in_the_same_order():
    torch_classes = list(classes(TORCH_FILE))
    keras_classes = [c for c in classes(KERAS_FILE) if c not in KERAS_ONLY_CLASSES]
    expected = [
        "DropPath",
        "LayerNorm",
        "RMSNorm",
        "SimpleNorm",
        "GRN",
        "Block",
        "ConvNeXt",
        "ConvNeXtBackbone",
        "ConvNeXtIsotropic",
    ]
    assert torch_classes == keras_classes == expected


@pytest.mark.parametrize("kind", ["classifier", "backbone", "isotropic"])
def test_constructor_arguments_are_the_specs_in_both_frameworks(kind):
    """The argument list of each model class is written once, in convnext_spec.ARGUMENTS; both
    frameworks' constructors take exactly those, in that order."""
    from convnext_spec.spec import ARGUMENTS, MODEL_CLASSES

    for package in (convnext_torch, convnext_tf):
        model_class = getattr(package, MODEL_CLASSES[kind])
        names = [
            name
            for name, parameter in inspect.signature(model_class.__init__).parameters.items()
            if name != "self" and parameter.kind is not inspect.Parameter.VAR_KEYWORD
        ]
        assert tuple(names) == ARGUMENTS[kind], package.__name__


def test_same_methods_in_the_same_order():
    keras_methods = classes(KERAS_FILE)
    for name, methods in classes(TORCH_FILE).items():
        expected = [METHOD_TWINS.get(m, m) for m in methods if m != "_init_weights"]
        found = [m for m in keras_methods[name] if m not in KERAS_ONLY_METHODS]
        assert found == expected, name


FRAMEWORK_STATE = {"training", "seed_generator"}  # PyTorch's train/eval flag, Keras' random state


def calls(path: Path) -> dict[str, list[str]]:
    """Function or Class.method (by its Keras name) -> the sublayers (`self.x(...)`) and the
    helpers both model modules have that it calls, in the order they are evaluated; a helper
    with the attributes of self it is given: "mlp(self.pwconv1, self.act, ...)". __init__ and
    the Keras-only methods are left out: they construct, where these compute."""
    shared = {n for n in dir(convnext_torch.model) if hasattr(convnext_tf.model, n)}

    def is_self(node) -> bool:
        return isinstance(node, ast.Attribute) and getattr(node.value, "id", None) == "self"

    found = {}
    for node in ast.parse(path.read_text()).body:
        functions = node.body if isinstance(node, ast.ClassDef) else [node]
        for function in functions:
            if not isinstance(function, ast.FunctionDef) or function.name in (
                KERAS_ONLY_METHODS | {"__init__", "_init_weights"}
            ):
                continue
            called = sorted(  # an inner call ends before the outer one: evaluation order
                (n for n in ast.walk(function) if isinstance(n, ast.Call)),
                key=lambda n: (n.end_lineno, n.end_col_offset),
            )
            sequence = []
            for call in called:
                callee = call.func.value if isinstance(call.func, ast.Subscript) else call.func
                if is_self(callee):
                    name = f"self.{callee.attr}"
                elif isinstance(callee, ast.Name) and callee.id in shared:
                    name = callee.id
                else:
                    continue
                args = [
                    f"self.{a.attr}"
                    for a in call.args
                    if is_self(a) and a.attr not in FRAMEWORK_STATE
                ]
                sequence.append(f"{name}({', '.join(args)})" if args else name)
            method = METHOD_TWINS.get(function.name, function.name)
            found[method if node is function else f"{node.name}.{method}"] = sequence
    return found


def test_same_calls_on_the_same_sublayers_in_the_same_order():
    """Every method that computes (and every function) calls the same sublayers and shared
    helpers in the same order in both files; the block's MLP is one helper in both, with the
    fused CPU path in PyTorch's (convnext_torch/kernels.py) and the layers one by one in
    Keras' (convnext_tf/layers.py)."""
    torch_calls, keras_calls = calls(TORCH_FILE), calls(KERAS_FILE)
    assert {name: keras_calls.get(name) for name in torch_calls} == torch_calls
    assert torch_calls["Block.call"] == [
        "self.dwconv",
        "self.norm",
        "mlp(self.pwconv1, self.act, self.grn, self.pwconv2)",
        "self.drop_path",
    ]
    assert convnext_torch.model.mlp is convnext_torch.kernels.mlp
    assert convnext_tf.model.mlp is convnext_tf.layers.mlp
    for mlp in (convnext_torch.model.mlp, convnext_tf.model.mlp):
        assert list(inspect.signature(mlp).parameters) == ["x", "pwconv1", "act", "grn", "pwconv2"]


def test_keras_helpers_importable_from_the_model_module():
    """Moved to convnext_tf/layers.py, still where other code imports them from."""
    for name in ("GELU", "SQRT_HALF", "check_float64_backend", "mean", "sequential"):
        assert getattr(convnext_tf.model, name) is getattr(convnext_tf.layers, name)
    assert convnext_tf.GELU is convnext_tf.layers.GELU
    assert keras.saving.get_registered_object("convnext_tf>GELU") is convnext_tf.GELU


def test_mirror_diff_pairs_every_class_and_function_and_fits_the_width():
    """`make diff` (tools/mirror_diff.py): each top-level name of the PyTorch file in order,
    beside its twin, no row wider than asked, the Keras-only methods left out."""
    expected = [
        node.name
        for node in ast.parse(TORCH_FILE.read_text()).body
        if isinstance(node, (ast.ClassDef, ast.FunctionDef))
    ]
    assert "Block" in expected and "create_model" in expected
    for mode, width in (("--unified", 80), ("--side-by-side", 150)):
        output = subprocess.run(
            [sys.executable, str(ROOT / "tools" / "mirror_diff.py"), mode, f"--width={width}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        lines = output.splitlines()
        titles = [line.split(":")[0].removeprefix("== ") for line in lines if line[:3] == "== "]
        assert titles == expected, mode
        assert max(map(len, lines)) <= width, mode
        assert not any(f"def {m}(" in line for line in lines for m in KERAS_ONLY_METHODS)
        assert "ConvNeXt.get_config" in output and "ConvNeXt._init_weights" in output


def test_training_files_have_the_same_functions_in_the_same_order():
    """convnext_torch/train.py and convnext_tf/train.py mirror each other like the models."""

    def functions(path: Path) -> list[str]:
        tree = ast.parse(path.read_text())
        return [node.name for node in tree.body if isinstance(node, ast.FunctionDef)]

    torch_functions = functions(ROOT / "convnext_torch" / "train.py")
    assert torch_functions == functions(ROOT / "convnext_tf" / "train.py")
    assert torch_functions[:3] == ["create_optimizer", "loss_of", "train_step"]


@pytest.mark.parametrize(
    "name", ["DropPath", "GRN", "Block", "ConvNeXt", "ConvNeXtBackbone", "ConvNeXtIsotropic"]
)
def test_same_docstrings(name):
    assert inspect.getdoc(getattr(convnext_torch, name)) == inspect.getdoc(
        getattr(convnext_tf, name)
    )


@pytest.mark.parametrize("use_grn", [False, True])
def test_block_attributes_in_the_same_order(use_grn):
    torch_block = convnext_torch.Block(8, use_grn=use_grn)
    keras_block = convnext_tf.Block(8, use_grn=use_grn)
    torch_names = [name for name, _ in torch_block.named_children()]
    keras_names = [layer.name for layer in keras_block._flatten_layers(include_self=False)]
    expected = ["dwconv", "norm", "pwconv1", "act", "grn", "pwconv2", "drop_path"]
    assert torch_names == keras_names == expected


def test_model_attributes_in_the_same_order():
    torch_model = convnext_torch.create_model("convnext_atto")
    keras_model = convnext_tf.create_model("convnext_atto")
    torch_names = [name for name, _ in torch_model.named_children()]
    keras_names = [
        layer.name.split(".")[0]  # Keras names carry the list index: "stages.2"
        for layer in keras_model._flatten_layers(include_self=False, recursive=False)
    ]
    assert (
        list(dict.fromkeys(keras_names))
        == torch_names
        == [
            "downsample_layers",
            "stages",
            "norm_pre",
            "norm",
            "pre_logits",
            "head",
        ]
    )


# One variant of each structure (family, norm, stem, head, depth pattern up to repeats): the
# others differ from these in widths and in how many blocks a stage repeats, which
# test_torch_model.py and test_spec.py count for every variant. `make test-all` builds every
# variant in Keras as well.
ONE_PER_STRUCTURE = [
    "convnext_zepto_rms_ols",  # SimpleNorm, the overlapping stem with a GELU
    "convnext_atto",
    "convnext_atto_ols",  # the tiered overlapping stem
    "convnext_atto_rms",  # RMSNorm
    "convnext_tiny_hnf",  # head norm first; the MLP head: TINY_SPECS, test_spec's counts
    "convnextv2_atto",
    "convnext_isotropic_small",
]


@pytest.mark.parametrize(
    "variant",
    [
        v if v in ONE_PER_STRUCTURE else pytest.param(v, marks=pytest.mark.exhaustive)
        for v in ALL_VARIANTS
    ],
)
def test_same_tensors_under_the_same_names_and_the_papers_parameter_counts(variant):
    """Every named variant, up to the 660M-parameter V2 huge, at no memory cost: PyTorch on
    the meta device, Keras in a StatelessScope (variables with shapes, values never made)."""
    with torch.device("meta"):
        torch_model = convnext_torch.create_model(variant)
    with keras_shapes_only():
        keras_model = convnext_tf.create_model(variant)
    torch_shapes = {k: tuple(v.shape) for k, v in torch_model.state_dict().items()}
    keras_shapes = {
        key: mapping.torch_shape(key, tuple(variable.shape))
        for key, variable in keras_variables(keras_model).items()
    }
    assert list(keras_shapes) == list(torch_shapes)  # same names, same order
    assert keras_shapes == torch_shapes
    assert keras_model.count_params() == PARAMETERS[variant]  # the PyTorch count: test_torch_model


@pytest.mark.parametrize(
    "variant, out_indices",
    [
        ("convnext_tiny", (0, 1, 2, 3)),
        ("convnextv2_atto", (1, 3)),
        ("convnext_zepto_rms_ols", (0, 2)),
    ],
)
def test_backbones_have_the_same_tensors(variant, out_indices):
    with torch.device("meta"):
        torch_model = convnext_torch.create_backbone(variant, out_indices=out_indices)
    with keras_shapes_only():
        keras_model = convnext_tf.create_backbone(variant, out_indices=out_indices)
    torch_shapes = {k: tuple(v.shape) for k, v in torch_model.state_dict().items()}
    keras_shapes = {
        key: mapping.torch_shape(key, tuple(variable.shape))
        for key, variable in keras_variables(keras_model).items()
    }
    assert keras_shapes == torch_shapes
    parameters = ("weight", "bias") if "rms" not in variant else ("weight",)
    assert [k for k in torch_shapes if k.startswith("norm")] == [
        f"norm{i}.{p}" for i in out_indices for p in parameters
    ]
