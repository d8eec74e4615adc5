"""The one description of a model (convnext_spec.spec): framework-free, the papers' parameter
counts from shapes alone, lookups both ways, and a clear error for what it cannot build."""

import subprocess
import sys
from pathlib import Path

import pytest

from convnext_spec.spec import (
    CHECKPOINTS,
    HIDDEN_FIELDS,
    ISOTROPIC_VARIANTS,
    VARIANTS,
    ModelSpec,
    SpecError,
    as_backbone,
    changes_from_variant,
    from_arguments,
    name_of,
    parameter_count,
    resolve,
    spec_from_name,
    stem_width,
    variant_names,
    variants_like,
)
from tests.support.helpers import ALL_VARIANTS, PARAMETERS, TINY_SPECS


def test_importing_the_spec_and_the_pure_converter_modules_loads_no_framework():
    code = (
        "import sys, convnext_spec, converters.names.mapping, converters.names.layouts, "
        "converters.names.hf, converters.errors; "
        "print(sorted(m for m in ('torch', 'tensorflow', 'keras') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_model_files_import_the_spec_with_the_same_line():
    root = Path(__file__).resolve().parents[2]
    lines = []
    for package in ("convnext_torch", "convnext_tf"):
        source = (root / package / "model.py").read_text().splitlines()
        lines.append([line for line in source if line.startswith("from convnext_spec.spec")])
    assert lines[0] == lines[1] and len(lines[0]) == 1


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_parameter_count_from_shapes_is_the_papers(variant):
    assert parameter_count(spec_from_name(variant)) == PARAMETERS[variant]


def test_every_variant_is_listed_once():
    assert variant_names() == [*VARIANTS, *ISOTROPIC_VARIANTS] == list(PARAMETERS)


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_name_of_the_spec_of_a_name_is_the_name(variant):
    spec = spec_from_name(variant, num_classes=7, in_chans=1)
    assert name_of(spec) == spec.name == variant
    assert changes_from_variant(spec) == {"num_classes": 7, "in_chans": 1}


def test_families_and_their_defaults():
    assert spec_from_name("convnextv2_atto").use_grn
    assert spec_from_name("convnextv2_atto").layer_scale_init_value == 0.0
    assert spec_from_name("convnext_atto").layer_scale_init_value == 1e-6
    assert spec_from_name("convnext_isotropic_small").layer_scale_init_value == 0.0
    assert spec_from_name("convnext_isotropic_large").has_layer_scale
    assert spec_from_name("convnextv2_tiny").family == "convnextv2"
    assert spec_from_name("convnext_isotropic_base").family == "convnext_isotropic"
    # a V1 spec with a V2's shapes is no V2 variant: the family is part of the name
    assert name_of(spec_from_name("convnext_atto", use_grn=True)) == "convnextv2_atto"
    assert name_of(TINY_SPECS["v1"]) is None and TINY_SPECS["v1"].name == "convnext"


@pytest.mark.parametrize("case", list(TINY_SPECS))
def test_arguments_round_trip(case):
    spec = TINY_SPECS[case]
    assert from_arguments(spec.kind, spec.arguments()) == spec
    assert resolve(spec) is spec or resolve(spec) == spec


def test_backbone_form():
    spec = as_backbone(spec_from_name("convnext_tiny", num_classes=10), (1, 3))
    assert (spec.kind, spec.num_classes, spec.out_indices) == ("backbone", 0, (1, 3))
    assert spec.name == "convnext_tiny"
    assert parameter_count(spec) == (
        parameter_count(spec_from_name("convnext_tiny", num_classes=0))
        - 2 * 768  # no final norm
        + 2 * (192 + 768)  # norm1, norm3
    )
    with pytest.raises(SpecError, match="has no backbone form"):
        as_backbone(spec_from_name("convnext_isotropic_small"))


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: spec_from_name("convnext_tinny"), "did you mean convnext_tiny"),
        (lambda: spec_from_name("resnet50"), "unknown variant 'resnet50'; known: convnext_zepto"),
        (lambda: spec_from_name("convnext_tiny", num_clases=3), "unknown model argument"),
        (lambda: spec_from_name("convnext_tiny", num_classes=-1), "num_classes must be 0"),
        (lambda: ModelSpec(depths=(3, 3, 9)), "4 stages"),
        (lambda: ModelSpec(kind="isotropic"), "1 stage"),
        (lambda: ModelSpec(kind="detector"), "kind must be one of"),
        (lambda: ModelSpec(out_indices=(0,)), "belong to a backbone"),
        (lambda: ModelSpec(kind="backbone", num_classes=0, out_indices=(3, 1)), "increasing"),
        (lambda: ModelSpec(kind="backbone", num_classes=0, out_indices=(4,)), "among 0, 1, 2, 3"),
        (lambda: ModelSpec(norm_eps=0.0), "norm_eps must be between 0 and 1, not 0.0"),
        (lambda: ModelSpec(norm="batchnorm"), "norm must be one of 'layernorm', 'rmsnorm'"),
        (lambda: ModelSpec(stem="deep"), "stem must be one of 'patchify', 'overlap'"),
        (lambda: ModelSpec(head="mlp"), "head_hidden_size is the width of the 'mlp' head"),
        (lambda: ModelSpec(head_hidden_size=8), "head_hidden_size is the width"),
        (
            lambda: ModelSpec(kind="backbone", num_classes=0, out_indices=(3,), head_bias=False),
            "a backbone has no head to change",
        ),
        (
            lambda: spec_from_name("convnext_isotropic_small", norm="rmsnorm"),
            "the isotropic ConvNeXt has LayerNorm",
        ),
        (lambda: ModelSpec(depths=(3, 0, 9, 3)), "must be positive"),
    ],
)
def test_what_cannot_be_built_is_one_clear_error(build, message):
    with pytest.raises(SpecError, match=message.replace("(", r"\(")):
        build()


def test_lists_from_json_become_tuples():
    spec = ModelSpec(depths=[1, 1, 1, 1], dims=[8, 8, 8, 8])
    assert spec.depths == (1, 1, 1, 1) and hash(spec)


def test_timm_originals_are_their_base_variant_with_options():
    atto = spec_from_name("convnext_atto")
    assert spec_from_name("convnext_atto_ols") == atto.replace(stem="overlap_tiered")
    assert spec_from_name("convnext_atto_rms") == atto.replace(norm="rmsnorm")
    assert spec_from_name("convnext_zepto_rms_ols").norm == "simplenorm"
    assert spec_from_name("convnext_xxlarge").norm_eps == 1e-5
    large_mlp = spec_from_name("convnext_large_mlp")
    assert (large_mlp.head, large_mlp.head_hidden_size) == ("mlp", 1536)
    # the options are part of the name; classes, channels and the head's bias are not
    assert name_of(atto.replace(stem="overlap")) is None
    assert name_of(atto.replace(norm="rmsnorm", num_classes=3, head_bias=False)) == (
        "convnext_atto_rms"
    )
    assert name_of(as_backbone(large_mlp)) == "convnext_large"  # a backbone has no head
    assert as_backbone(large_mlp).head == "linear"


def test_what_no_tensor_shows_is_looked_up_by_the_rest():
    shapes_only = spec_from_name("convnext_zepto_rms").replace(norm="rmsnorm")  # bias-free norm
    assert variants_like(shapes_only, ignore=HIDDEN_FIELDS) == ["convnext_zepto_rms"]
    xxlarge = spec_from_name("convnext_xxlarge").replace(norm_eps=1e-6)
    assert name_of(xxlarge) is None
    assert variants_like(xxlarge, ignore=HIDDEN_FIELDS) == ["convnext_xxlarge"]


@pytest.mark.parametrize(
    "stem, dim, width",
    [("overlap_tiered", 40, 24), ("overlap_tiered", 64, 32), ("overlap", 80, 80)],
)
def test_the_stem_width_is_timms_make_divisible(stem, dim, width):
    assert stem_width(stem, dim) == width


@pytest.mark.parametrize("release", list(CHECKPOINTS))
def test_a_published_checkpoint_is_read_as_its_variant(release):
    """What `convert` infers from a checkpoint of the release's shapes (meta device: no
    memory) is the variant CHECKPOINTS names, with its changes: OpenCLIP's xxlarge gets eps
    1e-5 from the variant, which no tensor holds."""
    import torch

    import convnext_torch
    from converters.files.checkpoint import StateDict
    from converters.weights.identify import resolve_spec

    _, variant, changes = CHECKPOINTS[release]
    expected = spec_from_name(variant, **changes)
    with torch.device("meta"):
        model = convnext_torch.create_model(expected)
    state = StateDict({k: v for k, v in model.state_dict().items()}, "meta", None, ())
    assert resolve_spec(state) == expected
