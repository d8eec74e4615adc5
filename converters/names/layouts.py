"""The key layouts ConvNeXt checkpoints come in, and how each maps onto the official one.

Reading renames a foreign layout into the official one (the names convnext_torch uses, which
converters.names.mapping maps onto Keras); writing renames the other way. Each layout is one
`KeyLayout` record at the bottom of this file: its table of (official, foreign) key templates
({i}, {j}, {k} stand for indices and {p} for weight or bias; {2i} and {2i+1} for the even
and odd numbers that stand for index i where a layout numbers two kinds of module in one
sequence, as torchvision does; the first template that matches a whole key wins), the keys that
identify it, and its tensor fix-ups on reading and on writing.
A key no template matches is never guessed at: it is reported by name. Adding a layout is
adding a record.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from converters.errors import ConversionError
from converters.names import hf, hf_backbones, mm, torchvision
from convnext_spec.spec import ModelSpec, name_of

# official                            timm
TIMM: tuple[tuple[str, str], ...] = (
    ("downsample_layers.0.{k}.{p}",     "stem.{k}.{p}"),  # patch or overlapping stems
    ("downsample_layers.{i}.{k}.{p}",   "stages.{i}.downsample.{k}.{p}"),
    ("stages.{i}.{j}.dwconv.{p}",       "stages.{i}.blocks.{j}.conv_dw.{p}"),
    ("stages.{i}.{j}.norm.{p}",         "stages.{i}.blocks.{j}.norm.{p}"),
    ("stages.{i}.{j}.pwconv1.{p}",      "stages.{i}.blocks.{j}.mlp.fc1.{p}"),
    ("stages.{i}.{j}.pwconv2.{p}",      "stages.{i}.blocks.{j}.mlp.fc2.{p}"),
    ("stages.{i}.{j}.gamma",            "stages.{i}.blocks.{j}.gamma"),
    ("stages.{i}.{j}.grn.gamma",        "stages.{i}.blocks.{j}.mlp.grn.weight"),  # V2, (4C,)
    ("stages.{i}.{j}.grn.beta",         "stages.{i}.blocks.{j}.mlp.grn.bias"),
    ("norm.{p}",                        "head.norm.{p}"),
    ("norm_pre.{p}",                    "norm_pre.{p}"),  # head_norm_first (tiny_hnf)
    ("pre_logits.0.{p}",                "head.pre_logits.fc.{p}"),  # the MLP head (large_mlp)
    ("head.{p}",                        "head.fc.{p}"),
)  # fmt: skip

# official                        Hugging Face transformers (ConvNextForImageClassification)
HF: tuple[tuple[str, str], ...] = (
    ("downsample_layers.0.0.{p}",    "convnext.embeddings.patch_embeddings.{p}"),
    ("downsample_layers.0.1.{p}",    "convnext.embeddings.layernorm.{p}"),
    ("downsample_layers.{i}.{k}.{p}", "convnext.encoder.stages.{i}.downsampling_layer.{k}.{p}"),
    ("stages.{i}.{j}.dwconv.{p}",    "convnext.encoder.stages.{i}.layers.{j}.dwconv.{p}"),
    ("stages.{i}.{j}.norm.{p}",      "convnext.encoder.stages.{i}.layers.{j}.layernorm.{p}"),
    ("stages.{i}.{j}.pwconv1.{p}",   "convnext.encoder.stages.{i}.layers.{j}.pwconv1.{p}"),
    ("stages.{i}.{j}.pwconv2.{p}",   "convnext.encoder.stages.{i}.layers.{j}.pwconv2.{p}"),
    ("stages.{i}.{j}.gamma",         "convnext.encoder.stages.{i}.layers.{j}.layer_scale_parameter"),  # noqa: E501
    ("stages.{i}.{j}.grn.gamma",     "convnext.encoder.stages.{i}.layers.{j}.grn.weight"),
    ("stages.{i}.{j}.grn.beta",      "convnext.encoder.stages.{i}.layers.{j}.grn.bias"),
    ("norm.{p}",                     "convnext.layernorm.{p}"),
    ("head.{p}",                     "classifier.{p}"),
)  # fmt: skip

# ConvNextV2ForImageClassification: the same names under "convnextv2." instead of "convnext."
HF_V2 = tuple((official, hf.replace("convnext.", "convnextv2.", 1)) for official, hf in HF)

# official                          Hugging Face transformers (DINOv3ConvNextModel: no head)
HF_DINOV3: tuple[tuple[str, str], ...] = (
    ("downsample_layers.{i}.{k}.{p}",  "stages.{i}.downsample_layers.{k}.{p}"),  # 0: the stem
    ("stages.{i}.{j}.dwconv.{p}",      "stages.{i}.layers.{j}.depthwise_conv.{p}"),
    ("stages.{i}.{j}.norm.{p}",        "stages.{i}.layers.{j}.layer_norm.{p}"),
    ("stages.{i}.{j}.pwconv1.{p}",     "stages.{i}.layers.{j}.pointwise_conv1.{p}"),
    ("stages.{i}.{j}.pwconv2.{p}",     "stages.{i}.layers.{j}.pointwise_conv2.{p}"),
    ("stages.{i}.{j}.gamma",           "stages.{i}.layers.{j}.gamma"),
    ("norm.{p}",                       "layer_norm.{p}"),
)  # fmt: skip

# official                          OpenCLIP image tower: timm's ConvNeXt under visual.trunk.
OPEN_CLIP: tuple[tuple[str, str], ...] = (
    *((official, f"visual.trunk.{timm}") for official, timm in TIMM if official != "head.{p}"),
    ("head.weight",                    "visual.head.proj.weight"),  # "linear": no bias
    ("pre_logits.0.{p}",               "visual.head.mlp.fc1.{p}"),  # "mlp": Linear, GELU,
    ("head.weight",                    "visual.head.mlp.fc2.weight"),  # Linear without bias
)  # fmt: skip

# official                          ConvNeXt V2's FCMAE pre-training (its sparse encoder)
FCMAE: tuple[tuple[str, str], ...] = (
    ("downsample_layers.0.{k}.{p}",    "encoder.downsample_layers.0.{k}.{p}"),  # dense stem
    ("downsample_layers.{i}.0.{p}",    "encoder.downsample_layers.{i}.0.ln.{p}"),
    ("downsample_layers.{i}.1.weight", "encoder.downsample_layers.{i}.1.kernel"),
    ("downsample_layers.{i}.1.bias",   "encoder.downsample_layers.{i}.1.bias"),
    ("stages.{i}.{j}.dwconv.weight",   "encoder.stages.{i}.{j}.dwconv.kernel"),
    ("stages.{i}.{j}.dwconv.bias",     "encoder.stages.{i}.{j}.dwconv.bias"),
    ("stages.{i}.{j}.norm.{p}",        "encoder.stages.{i}.{j}.norm.ln.{p}"),
    ("stages.{i}.{j}.pwconv1.{p}",     "encoder.stages.{i}.{j}.pwconv1.linear.{p}"),
    ("stages.{i}.{j}.pwconv2.{p}",     "encoder.stages.{i}.{j}.pwconv2.linear.{p}"),
    ("stages.{i}.{j}.grn.gamma",       "encoder.stages.{i}.{j}.grn.gamma"),
    ("stages.{i}.{j}.grn.beta",        "encoder.stages.{i}.{j}.grn.beta"),
)  # fmt: skip

MLP_WEIGHT = re.compile(r"stages\.\d+\.\d+\.pwconv[12]\.weight")
GRN_PARAMETER = re.compile(r"stages\.\d+\.\d+\.grn\.(gamma|beta)")  # (1, 1, 1, C); timm: (C,)

ReadFixup = Callable[[str, np.ndarray], tuple[np.ndarray, str | None]]  # -> value, note
WriteFixup = Callable[[str, np.ndarray, ModelSpec | None], tuple[np.ndarray, str | None]]
# (official tensors, skipped foreign tensors, official key -> the foreign key it was read
# from) -> notes; may add tensors, or raise
Completion = Callable[[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, str]], list[str]]


def unchanged_on_read(key: str, value: np.ndarray) -> tuple[np.ndarray, str | None]:
    return value, None


def unchanged_on_write(key: str, value: np.ndarray, spec: ModelSpec | None):
    return value, None


@dataclass(frozen=True)
class KeyLayout:
    """One key scheme: how its names map onto the official ones and what else differs."""

    name: str
    rules: tuple[tuple[str, str], ...]  # (official, foreign) templates; () is the official
    signatures: tuple[str, ...]  # keys whose presence identifies the layout
    on_read: ReadFixup = unchanged_on_read  # official key, foreign value -> official value
    on_write: WriteFixup = unchanged_on_write  # official key, value, spec -> foreign value
    normalise_key: Callable[[str], str] = str  # a foreign key before renaming
    written_key: Callable[[str, ModelSpec | None], str] = lambda key, spec: key  # after it
    skip: tuple[tuple[str, str], ...] = ()  # (regex, what it is): keys that are not the model's
    complete: Completion | None = None  # what the layout lacks or holds twice
    complete_on_write: Callable[[dict, ModelSpec | None], list[str]] | None = None  # the same

    def to_official(
        self, tensors: dict[str, np.ndarray]
    ) -> tuple[dict[str, np.ndarray], list[str], list[str]]:
        """Rename a state_dict of this layout into the official one. Returns the renamed
        tensors, the keys no rule matched (the caller refuses them), and notes on value
        changes made and on keys skipped."""
        renamed, unmatched, notes, skipped = {}, [], [], {}
        source: dict[str, str] = {}  # official key -> the key it was read from
        for key, value in tensors.items():
            what = next((what for pattern, what in self.skip if re.match(pattern, key)), None)
            if what is not None:
                skipped[key] = value
                continue
            official = rename(self.normalise_key(key), self.rules) if self.rules else key
            if official is None:
                unmatched.append(key)
                continue
            if official in source:  # two names for one tensor: which is meant is not guessed
                raise ConversionError(
                    f"{source[official]} and {key} both name {official} in the {self.name} "
                    "layout: two copies of one tensor, and which is meant is not guessed"
                )
            source[official] = key
            renamed[official], note = self.on_read(official, value)
            if note and note not in notes:
                notes.append(note)
        notes += skipped_notes(skipped, self.skip)
        if self.complete is not None and not unmatched:
            notes += self.complete(renamed, skipped, source)
        return renamed, unmatched, notes

    def from_official(
        self, tensors: dict[str, np.ndarray], spec: ModelSpec | None = None
    ) -> tuple[dict[str, np.ndarray], list[str]]:
        """Rename an official state_dict of a model of `spec` into this layout. Returns the
        tensors and notes on value changes made. Raises ConversionError for a key the layout
        has no name for (timm and Hugging Face have no isotropic ConvNeXt)."""
        out, notes = {}, []
        for key, value in tensors.items():
            target = rename(key, self.rules, reverse=True) if self.rules else key
            if target is None:
                raise ConversionError(f"the {self.name} layout has no name for {key}")
            target = self.written_key(target, spec)
            if target in out:
                raise ConversionError(f"two tensors would be written as {target}")
            out[target], note = self.on_write(key, value, spec)
            if note and note not in notes:
                notes.append(note)
        if self.complete_on_write is not None:
            notes += self.complete_on_write(out, spec)
        return out, notes


# timm builds these variants with conv_mlp=True: 1x1-conv MLP weights of shape (out, in, 1, 1).
TIMM_CONV_MLP_VARIANTS = (
    *(
        f"{family}_{size}"
        for family in ("convnext", "convnextv2")
        for size in ("atto", "femto", "pico", "nano")
    ),
    "convnext_zepto_rms",
    "convnext_zepto_rms_ols",
    "convnext_atto_ols",
    "convnext_atto_rms",
    "convnext_femto_ols",
    "convnext_pico_ols",
    "convnext_nano_ols",
    "convnext_tiny_hnf",
)


def timm_read(key: str, value: np.ndarray) -> tuple[np.ndarray, str | None]:
    if MLP_WEIGHT.fullmatch(key) and value.ndim == 4 and value.shape[2:] == (1, 1):
        note = "1x1-conv MLP weights (out, in, 1, 1) read as Linear (out, in)"
        return value.reshape(value.shape[:2]), note  # (out, in, 1, 1) -> (out, in)
    if GRN_PARAMETER.fullmatch(key) and value.ndim == 1:
        return value.reshape(1, 1, 1, -1), None  # timm's (C,) -> (1, 1, 1, C)
    return value, None


def timm_write(key: str, value: np.ndarray, spec: ModelSpec | None):
    if MLP_WEIGHT.fullmatch(key) and timm_conv_mlp(spec):
        return value.reshape((*value.shape, 1, 1)), "1x1-conv MLP weights"  # -> (out, in, 1, 1)
    if GRN_PARAMETER.fullmatch(key):
        return value.reshape(-1), None  # (1, 1, 1, C) -> timm's (C,)
    return value, None


def timm_complete_on_write(tensors: dict[str, np.ndarray], spec: ModelSpec | None) -> list[str]:
    """timm's classifier always has a bias; OpenCLIP's projection has none: a zero bias is the
    same function (what timm's own loader adds for OpenCLIP weights)."""
    weight = tensors.get("head.fc.weight")
    if weight is None or "head.fc.bias" in tensors:
        return []
    tensors["head.fc.bias"] = np.zeros(weight.shape[0], weight.dtype)
    return ["head.fc.bias added as zeros (timm's classifier has a bias, this head none)"]


def timm_conv_mlp(spec: ModelSpec | None) -> bool:
    """Whether timm builds this model with its MLP as 1x1 convolutions (atto..nano)."""
    return spec is not None and name_of(spec) in TIMM_CONV_MLP_VARIANTS


def hf_prefixed(key: str) -> str:
    """ConvNextModel (no classifier) saves its keys without the "convnext." prefix;
    DINOv3ConvNextModel holds its stages under "model." in memory (transformers 5), not in
    its files."""
    if key.startswith(("embeddings.", "encoder.", "layernorm.")):
        return f"convnext.{key}"
    if key.startswith("hidden_states_norms."):  # ConvNextBackbone's norms, by stage name
        return hf_backbones.stage_norm_key(key)
    return key.removeprefix("model.") if key.startswith("model.stages.") else key


def skipped_notes(skipped: dict[str, np.ndarray], skip: tuple[tuple[str, str], ...]) -> list[str]:
    """`skipped 12 tensors that are not the model's: 10 of the FCMAE decoder (decoder.*),
    2 of ...`, one note."""
    if not skipped:
        return []
    counts: dict[str, list[str]] = {}
    for key in skipped:
        what = next(what for pattern, what in skip if re.match(pattern, key))
        counts.setdefault(what, []).append(key)
    parts = [f"{len(keys)} of {what}" for what, keys in counts.items()]
    return [f"skipped {len(skipped)} tensors that are not the model's: {', '.join(parts)}"]


def fcmae_read(key: str, value: np.ndarray) -> tuple[np.ndarray, str | None]:
    """MinkowskiEngine's tensors in PyTorch's shapes (ConvNeXt-V2's remap_checkpoint_keys).
    A kernel is (k*k, in, out), or (k*k, C) depthwise, its offsets listed with the first
    spatial axis (H) fastest: entry h + k*w holds tap (h, w). Biases are (1, C), GRN (1, C)."""
    if key.endswith(".weight") and value.ndim == 3:  # the 2x2 downsampling convs
        taps, c_in, c_out = value.shape
        k = math.isqrt(taps)
        note = "sparse-conv kernels (k*k, in, out) read as (out, in, k, k)"
        return value.reshape(k, k, c_in, c_out).transpose(3, 2, 1, 0), note  # [w,h,i,o]->[o,i,h,w]
    if key.endswith("dwconv.weight") and value.ndim == 2:
        taps, c = value.shape
        k = math.isqrt(taps)
        return value.reshape(k, k, c).transpose(2, 1, 0)[:, None], None  # -> (C, 1, h, w)
    if GRN_PARAMETER.fullmatch(key) and value.ndim == 2:
        return value.reshape(1, 1, 1, -1), None  # (1, C) -> (1, 1, 1, C)
    if key.endswith(".bias") and value.ndim == 2:
        return value.reshape(-1), None  # (1, C) -> (C,)
    return value, None


def fcmae_complete(tensors: dict[str, np.ndarray], skipped: dict, read_from: dict) -> list[str]:
    """The encoder has no final norm (the decoder follows it): added at the values fine-tuning
    starts from, as ConvNeXt-V2's main_finetune.py and timm's .fcmae weights leave it."""
    last = next((v.shape[0] for k, v in tensors.items() if k == "downsample_layers.3.1.bias"), None)
    if last is None or "norm.weight" in tensors:
        return []
    tensors["norm.weight"] = np.ones(last, np.float32)
    tensors["norm.bias"] = np.zeros(last, np.float32)
    return [
        "the FCMAE encoder has no final norm: norm.weight 1 and norm.bias 0 added, where "
        "fine-tuning starts (the model outputs features; fine-tune before trusting them)"
    ]


def dinov3_complete(tensors: dict[str, np.ndarray], skipped: dict, read_from: dict) -> list[str]:
    """DINOv3's norms.3 is its final norm again (one module, two names): checked, not read."""
    for p in ("weight", "bias"):
        copy = skipped.get(f"norms.3.{p}")
        if copy is not None and not np.array_equal(copy, tensors.get(f"norm.{p}")):
            raise ConversionError(f"norms.3.{p} differs from norm.{p}: not a DINOv3 checkpoint")
    return []


OFFICIAL = KeyLayout(
    "official",
    rules=(),
    signatures=(
        "downsample_layers.0.0.weight",
        "stem.weight",  # the isotropic models (official layout only)
    ),
)
TIMM_LAYOUT = KeyLayout(
    "timm",
    rules=TIMM,
    signatures=("stem.0.weight",),
    on_read=timm_read,
    on_write=timm_write,
    complete_on_write=timm_complete_on_write,
)
HF_LAYOUT = KeyLayout(
    "hf",
    rules=HF + HF_V2 + HF_DINOV3 + hf_backbones.NORMS,
    signatures=(
        "convnext.embeddings.patch_embeddings.weight",
        "convnextv2.embeddings.patch_embeddings.weight",
        "embeddings.patch_embeddings.weight",  # ConvNextModel: no "convnext." prefix
        "stages.0.downsample_layers.0.weight",  # DINOv3ConvNextModel
        "model.stages.0.downsample_layers.0.weight",
    ),
    normalise_key=hf_prefixed,
    written_key=hf.written_key,
    complete=hf_backbones.unit_final_norm,  # DINOv3ConvNextBackbone: no norm at all
)
DINOV3 = KeyLayout(  # Meta's dinov3 .pth files: the official names, the final norm twice
    "dinov3",
    rules=(),
    signatures=("norms.3.weight",),
    skip=((r"norms\.3\.", "DINOv3's second name for norm (norms.3.*, checked equal)"),),
    complete=dinov3_complete,
)
OPEN_CLIP_LAYOUT = KeyLayout(
    "open_clip",
    rules=OPEN_CLIP,
    signatures=("visual.trunk.stem.0.weight",),
    on_read=timm_read,
    skip=((r"(?!visual\.)", "the text tower and logit scale (outside visual.*)"),),
)
FCMAE_LAYOUT = KeyLayout(
    "fcmae",
    rules=FCMAE,
    signatures=("encoder.downsample_layers.0.0.weight",),
    on_read=fcmae_read,
    skip=(
        (r"decoder\.", "the FCMAE decoder (decoder.*)"),
        (r"(mask_token|proj\.|pred\.)", "its mask token and projections"),
    ),
    complete=fcmae_complete,
)
MMPRETRAIN_LAYOUT = KeyLayout(  # mmpretrain, mmdetection, mmsegmentation: converters.names.mm
    "mmpretrain",
    rules=mm.MMPRETRAIN,
    signatures=mm.SIGNATURES,
    on_read=timm_read,  # the same two fix-ups: 1x1-conv MLP weights, GRN's (4C,)
    complete=mm.pooled_final_norm,
)
TORCHVISION_LAYOUT = KeyLayout(  # torchvision.models.convnext_*: see converters.names.torchvision
    "torchvision",
    rules=torchvision.TORCHVISION,
    signatures=torchvision.SIGNATURES,
    on_read=torchvision.on_read,
    on_write=torchvision.on_write,
    complete_on_write=torchvision.complete_on_write,
)

# The layouts as users name them (`--from`), and below in the order detect() tries them.
LAYOUT_NAMES = (
    "official",
    "timm",
    "hf",
    "open_clip",
    "fcmae",
    "dinov3",
    "torchvision",
    "mmpretrain",
)
# Every layout, in the order detect() tries their signatures.
KEY_LAYOUTS: dict[str, KeyLayout] = {
    layout.name: layout
    for layout in (
        HF_LAYOUT,
        OPEN_CLIP_LAYOUT,
        FCMAE_LAYOUT,
        TIMM_LAYOUT,
        TORCHVISION_LAYOUT,
        DINOV3,
        MMPRETRAIN_LAYOUT,
        OFFICIAL,
    )
}
LAYOUT_CHOICES = ("auto", *LAYOUT_NAMES)  # what `--from` / `layout` takes: auto detects
WRITTEN_LAYOUTS = ("official", "timm", "hf", "torchvision")  # the PyTorch layouts convert writes
TARGETS = ("keras", "keras-applications", *WRITTEN_LAYOUTS)  # what convert writes


_PLACEHOLDER = {
    "i": r"(?P<i>\d+)",
    "2i": r"(?P<even>\d*[02468])",  # 2i: read back as i
    "2i+1": r"(?P<odd>\d*[13579])",  # 2i + 1: read back as i
    "j": r"(?P<j>\d+)",
    "k": r"(?P<k>\d+)",
    "p": r"(?P<p>weight|bias)",
}


_FIELD = re.compile(r"\{(2i\+1|2i|\w)\}")  # a placeholder of a template


def _compile(template: str) -> re.Pattern:
    parts = _FIELD.split(template)  # literal, name, literal, name, ...
    pattern = "".join(
        _PLACEHOLDER[part] if n % 2 else re.escape(part) for n, part in enumerate(parts)
    )
    return re.compile(pattern)


def rename(key: str, rules: Iterable[tuple[str, str]], reverse: bool = False) -> str | None:
    """`key` in the other layout: foreign -> official, or official -> foreign with `reverse`.
    None when no rule matches."""
    for official, foreign in rules:
        source, target = (official, foreign) if reverse else (foreign, official)
        match = _compile(source).fullmatch(key)
        if match:
            values = match.groupdict()
            for doubled, offset in (("even", 0), ("odd", 1)):
                if doubled in values:
                    values["i"] = str((int(values.pop(doubled)) - offset) // 2)
            return _fill(target, values)
    return None


def _fill(template: str, values: dict[str, str]) -> str:
    """`template` with its placeholders replaced by `values` ({2i} and {2i+1} from i)."""

    def value(field: re.Match) -> str:
        name = field.group(1)
        if name.startswith("2i"):
            return str(2 * int(values["i"]) + (name == "2i+1"))
        return values[name]

    return _FIELD.sub(value, template)


def detect(keys: Iterable[str]) -> str | None:
    """The layout whose signature key is present, or None."""
    keys = set(keys)
    for layout in KEY_LAYOUTS.values():
        if any(signature in keys for signature in layout.signatures):
            return layout.name
    if any(k.startswith(("downsample_layers.", "stages.", "blocks.")) for k in keys):
        return "official"  # the signature itself is missing: let strict accounting name it
    return None


def to_official(
    tensors: dict[str, np.ndarray], layout: str
) -> tuple[dict[str, np.ndarray], list[str], list[str]]:
    """Rename a state_dict of `layout` into the official one (see KeyLayout.to_official)."""
    return KEY_LAYOUTS[layout].to_official(tensors)


def from_official(
    tensors: dict[str, np.ndarray], layout: str, spec: ModelSpec | None = None
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Rename an official state_dict into `layout` (see KeyLayout.from_official)."""
    return KEY_LAYOUTS[layout].from_official(tensors, spec)
