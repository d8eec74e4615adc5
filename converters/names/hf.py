"""Hugging Face transformers out: the config.json that goes beside the weights.

`convnext convert SRC DST --to hf` writes DST as a `save_pretrained` directory, config.json
and model.safetensors, that `ConvNextForImageClassification.from_pretrained(DST)` (or
ConvNextV2..., or ConvNextModel / ConvNextV2Model without a head) loads with no missing or
unexpected keys. The key names are the hf record of converters.names.layouts.

transformers hard-codes eps 1e-6 in every LayerNorm but the last one, whose eps is the
config's `layer_norm_eps` (1e-12 by default): it is written as these models' 1e-6, so the
logits match at the float32 noise floor rather than 5e-7 off. Pure: no framework imported.
"""

from __future__ import annotations

from converters.errors import ConversionError
from convnext_spec.spec import ModelSpec

# What the transformers ConvNeXt classes can hold; anything else is refused by name.
REPRESENTABLE = {"kind": "classifier", "norm": "layernorm", "norm_eps": 1e-6}
REPRESENTABLE_FORMS = {"stem": "patchify", "head": "linear", "head_bias": True}


def check_representable(spec: ModelSpec) -> None:
    """Raise ConversionError unless transformers' ConvNeXt (V2) classes can be this model."""
    if spec.kind != "classifier":
        what = "isotropic ConvNeXt" if spec.kind == "isotropic" else "detection backbone"
        raise ConversionError(f"transformers has no {what}: `target` hf writes classifiers")
    for field, value in {**REPRESENTABLE, **REPRESENTABLE_FORMS}.items():
        if getattr(spec, field) != value:
            raise ConversionError(
                f"transformers' ConvNeXt has {field} {value}, this model {getattr(spec, field)}: "
                "it cannot be written in the hf layout (timm's layout can: `target` timm)"
            )
    if spec.use_grn and spec.has_layer_scale:
        raise ConversionError(
            "transformers' ConvNeXt V2 has no layer scale, this model has: it cannot be written "
            "in the hf layout"
        )


def architecture(spec: ModelSpec) -> str:
    """The transformers class that loads the directory."""
    family = "ConvNextV2" if spec.use_grn else "ConvNext"
    return f"{family}ForImageClassification" if spec.num_classes else f"{family}Model"


def config(spec: ModelSpec) -> dict:
    """config.json for `spec` (check_representable first)."""
    labels = {str(i): f"LABEL_{i}" for i in range(spec.num_classes)}
    fields = {
        "architectures": [architecture(spec)],
        "model_type": "convnextv2" if spec.use_grn else "convnext",
        "num_channels": spec.in_chans,
        "patch_size": 4,
        "num_stages": 4,
        "hidden_sizes": list(spec.dims),
        "depths": list(spec.depths),
        "hidden_act": "gelu",
        "initializer_range": 0.02,
        "layer_norm_eps": spec.norm_eps,  # the final LayerNorm's: transformers' default is 1e-12
        "drop_path_rate": 0.0,
        "image_size": 224,
        "torch_dtype": "float32",
    }
    if not spec.use_grn:  # V2's config has none: no layer scale
        fields["layer_scale_init_value"] = spec.layer_scale_init_value
    if spec.num_classes:
        fields["id2label"] = labels
        fields["label2id"] = {name: int(i) for i, name in labels.items()}
    return fields


def written_key(key: str, spec: ModelSpec | None) -> str:
    """An hf-layout key (as formats' rules name it, "convnext." in front) as the class that
    loads `spec` names it: "convnextv2." for V2, no prefix for a model without a head."""
    if spec is None or not key.startswith("convnext."):
        return key
    if not spec.num_classes:
        return key.removeprefix("convnext.")
    return "convnextv2." + key.removeprefix("convnext.") if spec.use_grn else key
