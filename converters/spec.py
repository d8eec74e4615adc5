"""One description of a ConvNeXt model for both frameworks: the variant tables and `ModelSpec`.

Both model files build from a `ModelSpec`, the converter infers one from a checkpoint's shapes,
and the command line resolves one from its options: "which model is this" is answered here
only. Like transformers' one `ConvNextConfig` for its PyTorch and TF files, the description is
data, not code.

Why this module lives in `converters`: it must import neither PyTorch nor Keras, so that
`convnext_torch` and `convnext_tf` can both import it with the same line (and each still reads
on its own), while the top level keeps the packages the project was specified with. The
`converters` package `__init__` imports nothing, so `import converters.spec` loads no
framework (tests/test_spec.py checks that in a fresh interpreter).
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable
from dataclasses import dataclass


class SpecError(ValueError):
    """A model description that names no variant or no buildable model; one line."""


# Variants of the paper (tiny..xlarge) and timm's small ones (atto..nano), and ConvNeXt V2
# (Woo et al. 2023: GRN, no layer scale; see FAMILY_DEFAULTS). Parameter counts are for 1000
# classes and 3 input channels.
# name                  depths           dims                         parameters
VARIANTS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "convnext_atto":     ((2, 2, 6, 2),   (40, 80, 160, 320)),      #   3,695,520
    "convnext_femto":    ((2, 2, 6, 2),   (48, 96, 192, 384)),      #   5,217,784
    "convnext_pico":     ((2, 2, 6, 2),   (64, 128, 256, 512)),     #   9,045,672
    "convnext_nano":     ((2, 2, 8, 2),   (80, 160, 320, 640)),     #  15,593,560
    "convnext_tiny":     ((3, 3, 9, 3),   (96, 192, 384, 768)),     #  28,589,128
    "convnext_small":    ((3, 3, 27, 3),  (96, 192, 384, 768)),     #  50,223,688
    "convnext_base":     ((3, 3, 27, 3),  (128, 256, 512, 1024)),   #  88,591,464
    "convnext_large":    ((3, 3, 27, 3),  (192, 384, 768, 1536)),   # 197,767,336
    "convnext_xlarge":   ((3, 3, 27, 3),  (256, 512, 1024, 2048)),  # 350,196,968
    "convnextv2_atto":   ((2, 2, 6, 2),   (40, 80, 160, 320)),      #   3,708,400
    "convnextv2_femto":  ((2, 2, 6, 2),   (48, 96, 192, 384)),      #   5,233,240
    "convnextv2_pico":   ((2, 2, 6, 2),   (64, 128, 256, 512)),     #   9,066,280
    "convnextv2_nano":   ((2, 2, 8, 2),   (80, 160, 320, 640)),     #  15,623,800
    "convnextv2_tiny":   ((3, 3, 9, 3),   (96, 192, 384, 768)),     #  28,635,496
    "convnextv2_base":   ((3, 3, 27, 3),  (128, 256, 512, 1024)),   #  88,717,800
    "convnextv2_large":  ((3, 3, 27, 3),  (192, 384, 768, 1536)),   # 197,956,840
    "convnextv2_huge":   ((3, 3, 27, 3),  (352, 704, 1408, 2816)),  # 660,289,640
}  # fmt: skip

# The isotropic models of the paper. The released small and base have no layer scale, large has.
# name                         depth  dim   layer scale  parameters
ISOTROPIC_VARIANTS: dict[str, tuple[int, int, float]] = {
    "convnext_isotropic_small":  (18,   384,  0.0),     #  22,308,712
    "convnext_isotropic_base":   (18,   768,  0.0),     #  87,083,752
    "convnext_isotropic_large":  (36,   1024, 1e-6),    # 305,942,504
}  # fmt: skip

# What a family changes beyond depths and dims (the prefix of the variant name).
FAMILY_DEFAULTS: dict[str, dict] = {
    "convnext": {},
    "convnextv2": {"use_grn": True, "layer_scale_init_value": 0.0},
}

KINDS = ("classifier", "backbone", "isotropic")
# The architecture options a spec can name. One value each today; timm's RMSNorm, overlapping
# stems and MLP heads (the variants issue) become more values here and code in both models.
NORMS = ("layernorm",)
NORM_EPS = (1e-6,)
STEMS = ("patchify",)
HEADS = ("linear",)


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
    norm: str = "layernorm"
    norm_eps: float = 1e-6  # every LayerNorm, the final one included
    stem: str = "patchify"  # a k x k, stride k convolution (k = 4, or 16 isotropic)
    head: str = "linear"

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
        for field, allowed in (
            ("norm", NORMS),
            ("norm_eps", NORM_EPS),
            ("stem", STEMS),
            ("head", HEADS),
        ):
            if getattr(self, field) not in allowed:
                shown = ", ".join(map(repr, allowed))
                raise SpecError(f"{field}={getattr(self, field)!r} is not built yet ({shown})")

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
        (the same in both frameworks)."""
        if self.kind == "isotropic":
            return {
                "in_chans": self.in_chans,
                "num_classes": self.num_classes,
                "depth": self.depths[0],
                "dim": self.dims[0],
                "drop_path_rate": self.drop_path_rate,
                "layer_scale_init_value": self.layer_scale_init_value,
                "head_init_scale": self.head_init_scale,
            }
        if self.kind == "backbone":
            return {
                "in_chans": self.in_chans,
                "depths": self.depths,
                "dims": self.dims,
                "drop_path_rate": self.drop_path_rate,
                "layer_scale_init_value": self.layer_scale_init_value,
                "use_grn": self.use_grn,
                "out_indices": self.out_indices,
            }
        return {
            "in_chans": self.in_chans,
            "num_classes": self.num_classes,
            "depths": self.depths,
            "dims": self.dims,
            "drop_path_rate": self.drop_path_rate,
            "layer_scale_init_value": self.layer_scale_init_value,
            "head_init_scale": self.head_init_scale,
            "use_grn": self.use_grn,
        }


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


def names() -> list[str]:
    """Every variant name: hierarchical (V1, V2), then isotropic."""
    return [*VARIANTS, *ISOTROPIC_VARIANTS]


def family_of(name: str) -> str:
    """The family of a hierarchical variant name: the part before the size."""
    return name.rsplit("_", 1)[0]


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
        spec = ModelSpec(depths=depths, dims=dims, **FAMILY_DEFAULTS[family_of(name)])
    else:
        raise SpecError(unknown_variant(name))
    return spec.replace(**overrides)


def unknown_variant(name: str) -> str:
    """`unknown variant 'x'`, with the closest names, for an error message."""
    close = difflib.get_close_matches(str(name), names(), n=1, cutoff=0.6)
    hint = f"did you mean {' or '.join(close)}?" if close else f"known: {', '.join(names())}"
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
        kind="backbone", num_classes=0, head_init_scale=1.0, out_indices=tuple(out_indices)
    )


def name_of(spec: ModelSpec) -> str | None:
    """The variant with the spec's family, depths and dims (classes, channels and layer scale
    may differ), or None."""
    if spec.kind == "isotropic":
        table = {n: ((d,), (c,)) for n, (d, c, _) in ISOTROPIC_VARIANTS.items()}
    else:
        table = {n: shape for n, shape in VARIANTS.items() if family_of(n) == spec.family}
    for name, (depths, dims) in table.items():
        if (tuple(depths), tuple(dims)) == (spec.depths, spec.dims):
            return name
    return None


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

    def block(d: int) -> int:
        dwconv = 7 * 7 * d + d
        norm = 2 * d
        mlp = (d * 4 * d + 4 * d) + (4 * d * d + d)
        gamma = d if spec.has_layer_scale else 0
        grn = 2 * 4 * d if spec.use_grn else 0
        return dwconv + norm + mlp + gamma + grn

    def head(d: int) -> int:
        return 2 * d + (d * spec.num_classes + spec.num_classes if spec.num_classes else 0)

    dims, depths = spec.dims, spec.depths
    if spec.kind == "isotropic":
        stem = spec.in_chans * dims[0] * 16 * 16 + dims[0]
        return stem + depths[0] * block(dims[0]) + head(dims[0])
    count = spec.in_chans * dims[0] * 4 * 4 + dims[0] + 2 * dims[0]  # stem conv + its norm
    for i in range(1, 4):  # downsample: norm, then a 2x2 conv
        count += 2 * dims[i - 1] + dims[i - 1] * dims[i] * 2 * 2 + dims[i]
    count += sum(depth * block(d) for depth, d in zip(depths, dims, strict=True))
    if spec.kind == "backbone":
        return count + sum(2 * dims[i] for i in spec.out_indices)
    return count + head(dims[-1])
