"""One description of a ConvNeXt model for both frameworks: the variant tables and `ModelSpec`.

Both model files build from a `ModelSpec`, the converter infers one from a checkpoint's shapes,
and the command line resolves one from its options: "which model is this" is answered here
only. Like transformers' one `ConvNextConfig` for its PyTorch and TF files, the description is
data, not code.

This package imports neither PyTorch nor Keras, so that `convnext_torch`, `convnext_tf` and
`converters` all import it with the same line and each model package still reads on its own
(tests check that `import convnext_spec` loads no framework, in a fresh interpreter).
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable
from dataclasses import dataclass


class SpecError(ValueError):
    """A model description that names no variant or no buildable model; one line."""


# Variants of the paper (tiny..xlarge), timm's (zepto..nano, xxlarge and the timm originals
# whose architecture differs: VARIANT_OPTIONS), and ConvNeXt V2 (Woo et al. 2023: GRN, no layer
# scale; see FAMILY_DEFAULTS). Parameter counts are for 1000 classes and 3 input channels; for
# timm's names they are timm's own (timm 1.0.31, `make test-peers` compares them).
# name                      depths            dims                        parameters
VARIANTS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "convnext_zepto_rms":     ((2, 2, 4, 2),    (32, 64, 128, 256)),        #   2,155,656
    "convnext_zepto_rms_ols": ((2, 2, 4, 2),    (32, 64, 128, 256)),        #   2,164,232
    "convnext_atto":          ((2, 2, 6, 2),    (40, 80, 160, 320)),        #   3,695,520
    "convnext_atto_ols":      ((2, 2, 6, 2),    (40, 80, 160, 320)),        #   3,702,912
    "convnext_atto_rms":      ((2, 2, 6, 2),    (40, 80, 160, 320)),        #   3,693,040
    "convnext_femto":         ((2, 2, 6, 2),    (48, 96, 192, 384)),        #   5,217,784
    "convnext_femto_ols":     ((2, 2, 6, 2),    (48, 96, 192, 384)),        #   5,226,520
    "convnext_pico":          ((2, 2, 6, 2),    (64, 128, 256, 512)),       #   9,045,672
    "convnext_pico_ols":      ((2, 2, 6, 2),    (64, 128, 256, 512)),       #   9,061,928
    "convnext_nano":          ((2, 2, 8, 2),    (80, 160, 320, 640)),       #  15,593,560
    "convnext_nano_ols":      ((2, 2, 8, 2),    (80, 160, 320, 640)),       #  15,649,560
    "convnext_tiny":          ((3, 3, 9, 3),    (96, 192, 384, 768)),       #  28,589,128
    "convnext_tiny_hnf":      ((3, 3, 9, 3),    (96, 192, 384, 768)),       #  28,589,128
    "convnext_small":         ((3, 3, 27, 3),   (96, 192, 384, 768)),       #  50,223,688
    "convnext_base":          ((3, 3, 27, 3),   (128, 256, 512, 1024)),     #  88,591,464
    "convnext_large":         ((3, 3, 27, 3),   (192, 384, 768, 1536)),     # 197,767,336
    "convnext_large_mlp":     ((3, 3, 27, 3),   (192, 384, 768, 1536)),     # 200,128,168
    "convnext_xlarge":        ((3, 3, 27, 3),   (256, 512, 1024, 2048)),    # 350,196,968
    "convnext_xxlarge":       ((3, 4, 30, 3),   (384, 768, 1536, 3072)),    # 846,471,016
    "convnextv2_atto":        ((2, 2, 6, 2),    (40, 80, 160, 320)),        #   3,708,400
    "convnextv2_femto":       ((2, 2, 6, 2),    (48, 96, 192, 384)),        #   5,233,240
    "convnextv2_pico":        ((2, 2, 6, 2),    (64, 128, 256, 512)),       #   9,066,280
    "convnextv2_nano":        ((2, 2, 8, 2),    (80, 160, 320, 640)),       #  15,623,800
    "convnextv2_tiny":        ((3, 3, 9, 3),    (96, 192, 384, 768)),       #  28,635,496
    "convnextv2_base":        ((3, 3, 27, 3),   (128, 256, 512, 1024)),     #  88,717,800
    "convnextv2_large":       ((3, 3, 27, 3),   (192, 384, 768, 1536)),     # 197,956,840
    "convnextv2_huge":        ((3, 3, 27, 3),   (352, 704, 1408, 2816)),    # 660,289,640
}  # fmt: skip

# The isotropic models of the paper. The released small and base have no layer scale, large has.
# name                         depth  dim   layer scale  parameters
ISOTROPIC_VARIANTS: dict[str, tuple[int, int, float]] = {
    "convnext_isotropic_small":  (18,   384,  0.0),     #  22,308,712
    "convnext_isotropic_base":   (18,   768,  0.0),     #  87,083,752
    "convnext_isotropic_large":  (36,   1024, 1e-6),    # 305,942,504
}  # fmt: skip

# timm's originals: what each changes beyond depths and dims (read from timm's
# models/convnext.py). "simplenorm" is x / sqrt(unbiased variance + eps), without centring or
# bias; "rmsnorm" x / sqrt(mean(x^2) + eps), without bias. The overlapping stems are two 3x3
# stride-2 convs (the first to half the width, rounded to 8, when "tiered"; a GELU between them
# with "act"). "norm_first" normalises the last feature map before pooling; "mlp" puts a Linear
# and a GELU between the final norm and the classifier.
VARIANT_OPTIONS: dict[str, dict] = {
    "convnext_zepto_rms":     {"norm": "simplenorm"},
    "convnext_zepto_rms_ols": {"norm": "simplenorm", "stem": "overlap_act"},
    "convnext_atto_ols":      {"stem": "overlap_tiered"},
    "convnext_atto_rms":      {"norm": "rmsnorm"},
    "convnext_femto_ols":     {"stem": "overlap_tiered"},
    "convnext_pico_ols":      {"stem": "overlap_tiered"},
    "convnext_nano_ols":      {"stem": "overlap"},
    "convnext_tiny_hnf":      {"head": "norm_first"},
    "convnext_large_mlp":     {"head": "mlp", "head_hidden_size": 1536},
    "convnext_xxlarge":       {"norm_eps": 1e-5},
}  # fmt: skip

# Published checkpoints that are a variant with another head: what `convnext convert` builds
# for each (layout: how its file names the tensors, converters.names.layouts). OpenCLIP's image
# towers end in a projection to the embedding without bias.
CLIP = {"head_bias": False}
# release                       (layout, variant, changes)
CHECKPOINTS: dict[str, tuple[str, str, dict]] = {
    "open_clip convnext_base":     ("open_clip", "convnext_base", {"num_classes": 512, **CLIP}),
    "open_clip convnext_base_w":   ("open_clip", "convnext_base", {"num_classes": 640, **CLIP}),
    "open_clip convnext_large_d":  ("open_clip", "convnext_large_mlp", {"num_classes": 768, **CLIP}),  # noqa: E501
    "open_clip convnext_xxlarge":  ("open_clip", "convnext_xxlarge", {"num_classes": 1024, **CLIP}),
    "dinov3 convnext_tiny":        ("dinov3", "convnext_tiny", {"num_classes": 0}),
    "dinov3 convnext_small":       ("dinov3", "convnext_small", {"num_classes": 0}),
    "dinov3 convnext_base":        ("dinov3", "convnext_base", {"num_classes": 0}),
    "dinov3 convnext_large":       ("dinov3", "convnext_large", {"num_classes": 0}),
    **{
        f"fcmae {size}":           ("fcmae", size, {"num_classes": 0})
        for size in ("convnextv2_atto", "convnextv2_femto", "convnextv2_pico", "convnextv2_nano",
                     "convnextv2_tiny", "convnextv2_base", "convnextv2_large", "convnextv2_huge")
    },
}  # fmt: skip

# What a family changes beyond depths and dims (the prefix of the variant name).
FAMILY_DEFAULTS: dict[str, dict] = {
    "convnext": {},
    "convnextv2": {"use_grn": True, "layer_scale_init_value": 0.0},
}

# The input normalisation every ImageNet ConvNeXt was trained with (torchvision's constants):
# what verify feeds the PyTorch side, and what keras.applications builds into its models.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

KINDS = ("classifier", "backbone", "isotropic")
# kind -> the class both model packages build it with (convnext_torch.ConvNeXt, ...)
MODEL_CLASSES = {
    "classifier": "ConvNeXt",
    "backbone": "ConvNeXtBackbone",
    "isotropic": "ConvNeXtIsotropic",
}
KIND_OF_CLASS = {class_name: kind for kind, class_name in MODEL_CLASSES.items()}
# kind -> its class's constructor arguments, in signature order, in both frameworks (the tests
# compare them with both signatures)
ARGUMENTS = {
    "classifier": (
        "in_chans", "num_classes", "depths", "dims", "drop_path_rate", "layer_scale_init_value",
        "head_init_scale", "use_grn", "norm", "norm_eps", "stem", "head", "head_hidden_size",
        "head_bias",
    ),
    "backbone": (
        "in_chans", "depths", "dims", "drop_path_rate", "layer_scale_init_value", "use_grn",
        "out_indices", "norm", "norm_eps", "stem",
    ),
    "isotropic": (
        "in_chans", "num_classes", "depth", "dim", "drop_path_rate", "layer_scale_init_value",
        "head_init_scale",
    ),
}  # fmt: skip
# The architecture options a spec can name (see VARIANT_OPTIONS for what each is).
NORMS = ("layernorm", "rmsnorm", "simplenorm")
STEMS = ("patchify", "overlap", "overlap_tiered", "overlap_act")
HEADS = ("linear", "norm_first", "mlp")
# Fields a checkpoint's tensors do not show: RMSNorm and SimpleNorm have the same one weight,
# and no tensor holds an eps. Reading a checkpoint takes them from the variant its shapes name.
HIDDEN_FIELDS = ("norm", "norm_eps")


@dataclass(frozen=True)
class ModelSpec:
    """Everything that decides a ConvNeXt model's tensors and outputs, in both frameworks.

    kind: "classifier" (ConvNeXt), "backbone" (ConvNeXtBackbone: stage outputs, per-stage
    norms, no head) or "isotropic" (ConvNeXtIsotropic: one stage, `depths` and `dims` of one
    entry each). The other fields are the constructor arguments of the same names.
    """

    kind: str = "classifier"
    depths: tuple[int, ...] = (3, 3, 9, 3)  # isotropic: (depth,)
    dims: tuple[int, ...] = (96, 192, 384, 768)  # isotropic: (dim,)
    num_classes: int = 1000  # 0: no head, the pooled features out; a backbone has none
    in_chans: int = 3
    layer_scale_init_value: float = 1e-6  # 0: no layer scale `gamma` in the blocks
    use_grn: bool = False  # ConvNeXt V2's Global Response Normalization
    out_indices: tuple[int, ...] = ()  # backbone only: the stages it returns
    drop_path_rate: float = 0.0  # training only: no tensor depends on it
    head_init_scale: float = 1.0  # initialisation only
    norm: str = "layernorm"  # every norm: layernorm, rmsnorm or simplenorm (NORMS)
    norm_eps: float = 1e-6  # every norm's eps, the final one included (GRN's is its own)
    stem: str = "patchify"  # a 4 x 4, stride 4 conv (16 isotropic), or an overlapping one
    head: str = "linear"  # pool, norm, Linear; "norm_first": norm, pool, Linear; "mlp"
    head_hidden_size: int = 0  # the hidden Linear's width of the "mlp" head
    head_bias: bool = True  # the classifier's bias; OpenCLIP's projections have none

    def __post_init__(self) -> None:
        for name in ("depths", "dims", "out_indices"):  # from JSON or a Keras config: lists
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        self._check()

    def _check(self) -> None:
        if self.kind not in KINDS:
            raise SpecError(f"kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        stages = 1 if self.kind == "isotropic" else 4
        if len(self.depths) != stages or len(self.dims) != stages:
            raise SpecError(
                f"a {self.kind} has {stages} stage{'s' * (stages > 1)}: depths {self.depths} "
                f"and dims {self.dims} need {stages} entr{'ies' if stages > 1 else 'y'} each"
            )
        if min(self.depths) < 1 or min(self.dims) < 1 or self.in_chans < 1:
            raise SpecError(f"depths, dims and in_chans must be positive: {self}")
        if self.num_classes < 0:
            raise SpecError(f"num_classes must be 0 (no head) or more, not {self.num_classes}")
        if self.kind == "backbone":
            if self.num_classes:
                raise SpecError("a backbone has no head: num_classes must be 0")
            if not self.out_indices or sorted(set(self.out_indices)) != list(self.out_indices):
                raise SpecError(f"out_indices must be increasing stage indices: {self.out_indices}")
            if not set(self.out_indices) <= {0, 1, 2, 3}:
                raise SpecError(f"out_indices must be among 0, 1, 2, 3: {self.out_indices}")
        elif self.out_indices:
            raise SpecError(f"out_indices belong to a backbone, not to a {self.kind}")
        if self.kind == "isotropic" and self.use_grn:
            raise SpecError("the isotropic ConvNeXt has no GRN form")
        for field, allowed in (("norm", NORMS), ("stem", STEMS), ("head", HEADS)):
            if getattr(self, field) not in allowed:
                shown = ", ".join(map(repr, allowed))
                raise SpecError(f"{field} must be one of {shown}, not {getattr(self, field)!r}")
        if not 0 < self.norm_eps < 1:
            raise SpecError(f"norm_eps must be between 0 and 1, not {self.norm_eps}")
        if (self.head == "mlp") != (self.head_hidden_size > 0):
            raise SpecError(
                f"head_hidden_size is the width of the 'mlp' head (more than 0) and 0 "
                f"otherwise: head={self.head!r}, head_hidden_size={self.head_hidden_size}"
            )
        head_options = (self.head, self.head_hidden_size, self.head_bias)
        if self.kind != "classifier" and head_options != ("linear", 0, True):
            raise SpecError(f"a {self.kind} has no head to change: head options {head_options}")
        if self.kind == "isotropic" and (self.norm, self.norm_eps, self.stem) != (
            "layernorm",
            1e-6,
            "patchify",
        ):
            raise SpecError("the isotropic ConvNeXt has LayerNorm (eps 1e-6) and a patch stem")

    @property
    def family(self) -> str:
        """convnext, convnextv2 (GRN) or convnext_isotropic: the prefix of the variant names."""
        if self.kind == "isotropic":
            return "convnext_isotropic"
        return "convnextv2" if self.use_grn else "convnext"

    @property
    def name(self) -> str:
        """The variant name of its family, depths and dims, else the family name."""
        return name_of(self) or self.family

    @property
    def has_layer_scale(self) -> bool:
        return self.layer_scale_init_value > 0

    def replace(self, **changes) -> ModelSpec:
        """A copy with some fields changed; unknown names raise SpecError."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            fields = ", ".join(f.name for f in dataclasses.fields(self))
            raise SpecError(f"unknown model argument {unknown[0]!r}; known: {fields}")
        return dataclasses.replace(self, **changes)

    def arguments(self) -> dict:
        """The keyword arguments of the model class this spec builds, in its signature order
        (the same in both frameworks: ARGUMENTS)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values.update(depth=self.depths[0], dim=self.dims[0])  # the isotropic model's names
        return {name: values[name] for name in ARGUMENTS[self.kind]}


def from_arguments(kind: str, arguments: dict) -> ModelSpec:
    """The spec of a model built with these constructor `arguments` (a Keras get_config(), or
    what arguments() gave); keys that are not model arguments (name, dtype, ...) are ignored."""
    arguments = dict(arguments)
    if kind == "isotropic":
        arguments["depths"] = (arguments.pop("depth"),)
        arguments["dims"] = (arguments.pop("dim"),)
    if kind == "backbone":
        arguments["num_classes"] = 0
    fields = {f.name for f in dataclasses.fields(ModelSpec)}
    return ModelSpec(kind=kind, **{k: v for k, v in arguments.items() if k in fields})


def variant_names() -> list[str]:
    """Every variant name: hierarchical (V1, V2), then isotropic."""
    return [*VARIANTS, *ISOTROPIC_VARIANTS]


def family_of(name: str) -> str:
    """The family of a hierarchical variant name: convnext or convnextv2."""
    return name.split("_", 1)[0]


def spec_from_name(name: str, **overrides) -> ModelSpec:
    """The spec of a named variant, with `overrides` (ModelSpec fields) applied."""
    if name in ISOTROPIC_VARIANTS:
        depth, dim, layer_scale_init_value = ISOTROPIC_VARIANTS[name]
        spec = ModelSpec(
            kind="isotropic",
            depths=(depth,),
            dims=(dim,),
            layer_scale_init_value=layer_scale_init_value,
        )
    elif name in VARIANTS:
        depths, dims = VARIANTS[name]
        options = {**FAMILY_DEFAULTS[family_of(name)], **VARIANT_OPTIONS.get(name, {})}
        spec = ModelSpec(depths=depths, dims=dims, **options)
    else:
        raise SpecError(unknown_variant(name))
    return spec.replace(**overrides)


def unknown_variant(name: str) -> str:
    """`unknown variant 'x'`, with the closest names, for an error message."""
    close = difflib.get_close_matches(str(name), variant_names(), n=1, cutoff=0.6)
    known = f"known: {', '.join(variant_names())}"
    hint = f"did you mean {' or '.join(close)}?" if close else known
    return f"unknown variant {name!r}; {hint}"


def resolve(name_or_spec: str | ModelSpec, **overrides) -> ModelSpec:
    """A spec from a variant name or a spec, with `overrides` (ModelSpec fields) applied."""
    if isinstance(name_or_spec, ModelSpec):
        return name_or_spec.replace(**overrides)
    return spec_from_name(name_or_spec, **overrides)


def as_backbone(spec: ModelSpec, out_indices: Iterable[int] = (0, 1, 2, 3)) -> ModelSpec:
    """The detection-backbone form of a hierarchical spec: no head, norms on `out_indices`."""
    if spec.kind == "isotropic":
        raise SpecError(f"{name_of(spec) or 'an isotropic model'} has no backbone form")
    return spec.replace(
        kind="backbone",
        num_classes=0,
        head_init_scale=1.0,
        out_indices=tuple(out_indices),
        head="linear",
        head_hidden_size=0,
        head_bias=True,
    )


# The fields that make a variant what it is; classes, channels, layer scale, the head's bias
# and the training-only fields may differ from the variant's.
ARCHITECTURE = ("depths", "dims", "norm", "norm_eps", "stem", "head", "head_hidden_size")


def name_of(spec: ModelSpec) -> str | None:
    """The variant with the spec's family and architecture (ARCHITECTURE), or None. A backbone
    is named after its classifier, whatever its head was."""
    return next(iter(variants_like(spec)), None)


def variants_like(spec: ModelSpec, ignore: Iterable[str] = ()) -> list[str]:
    """The variants of the spec's family whose architecture equals the spec's, except for the
    fields in `ignore` (HIDDEN_FIELDS: what a checkpoint's tensors do not tell)."""
    fields = [f for f in ARCHITECTURE if f not in ignore]
    if spec.kind == "backbone":
        fields = [f for f in fields if not f.startswith("head")]
    found = []
    for name in variant_names():
        variant = spec_from_name(name)
        if variant.family == spec.family and all(
            getattr(variant, f) == getattr(spec, f) for f in fields
        ):
            found.append(name)
    return found


def changes_from_variant(spec: ModelSpec) -> dict:
    """The fields in which `spec` differs from its named variant (what to pass as overrides to
    create_model(name_of(spec), ...)); every non-default field when it names no variant."""
    name = name_of(spec)
    base = spec_from_name(name) if name else ModelSpec()
    if spec.kind == "backbone" and base.kind == "classifier":
        base = as_backbone(base, spec.out_indices)
    return {
        f.name: getattr(spec, f.name)
        for f in dataclasses.fields(spec)
        if f.name != "kind" and getattr(spec, f.name) != getattr(base, f.name)
    }


def parameter_count(spec: ModelSpec) -> int:
    """The number of parameters a model of this spec has, from the shapes alone."""

    def norm(d: int) -> int:
        return 2 * d if spec.norm == "layernorm" else d  # RMSNorm, SimpleNorm: no bias

    def conv(c_in: int, c_out: int, k: int) -> int:
        return c_in * c_out * k * k + c_out

    def block(d: int) -> int:
        dwconv = 7 * 7 * d + d
        mlp = (d * 4 * d + 4 * d) + (4 * d * d + d)
        gamma = d if spec.has_layer_scale else 0
        grn = 2 * 4 * d if spec.use_grn else 0
        return dwconv + norm(d) + mlp + gamma + grn

    def head(d: int) -> int:
        count = norm(d)
        if spec.head == "mlp":
            count += d * spec.head_hidden_size + spec.head_hidden_size
            d = spec.head_hidden_size
        if spec.num_classes:
            count += d * spec.num_classes + (spec.num_classes if spec.head_bias else 0)
        return count

    dims, depths = spec.dims, spec.depths
    if spec.kind == "isotropic":
        stem = conv(spec.in_chans, dims[0], 16)
        return stem + depths[0] * block(dims[0]) + head(dims[0])
    if spec.stem == "patchify":
        count = conv(spec.in_chans, dims[0], 4) + norm(dims[0])
    else:  # two 3x3 convs, then the norm
        width = stem_width(spec.stem, dims[0])
        count = conv(spec.in_chans, width, 3) + conv(width, dims[0], 3) + norm(dims[0])
    for i in range(1, 4):  # downsample: norm, then a 2x2 conv
        count += norm(dims[i - 1]) + conv(dims[i - 1], dims[i], 2)
    count += sum(depth * block(d) for depth, d in zip(depths, dims, strict=True))
    if spec.kind == "backbone":
        return count + sum(norm(dims[i]) for i in spec.out_indices)
    return count + head(dims[-1])


def stem_width(stem: str, dim: int) -> int:
    """The channels between an overlapping stem's two convs: `dim`, or half of it rounded to a
    multiple of 8 (never more than 10% down) for "overlap_tiered", as timm's make_divisible."""
    if stem != "overlap_tiered":
        return dim
    half = dim // 2
    width = max(8, int(half + 4) // 8 * 8)
    return width + 8 if width < 0.9 * half else width
