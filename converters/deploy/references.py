"""The PyTorch models verify compares an artifact against: the reference computing as the
artifact should (float64, float32, or with its weights quantized as the artifact stores them)
and, one precision away, the baseline whose distance from it is the noise floor
(converters.deploy.verify)."""

from __future__ import annotations

import numpy as np
import torch

from converters.deploy.artifacts import Artifact
from converters.deploy.artifacts.tflite import QUANTIZED_ELEMENTS


def reference_copy(
    model: torch.nn.Module, precision: str, arithmetic: str = "float64"
) -> torch.nn.Module:
    """A copy of `model` that computes like an artifact of `precision`: float64 (the
    reference), float32, float16 (weights rounded to float16, computed in float32, as a
    float16-quantized .tflite does), uint8 / uint16 (TF.js's affine weight quantization,
    affine_rounded) or dynamic-int8 (matrix and conv weights of 1024 elements
    or more rounded to int8 per output channel, as LiteRT's converter does; the run-time
    quantization of activations is not simulated). For float32, a float32 model is its own
    reference, not copied: nothing changes it, and a copy would hold as much memory again
    as the weights (convnext_xlarge: 1.4 GB)."""
    import copy

    if precision == "float32" and all(p.dtype == torch.float32 for p in model.parameters()):
        return model.eval()
    copied = copy.deepcopy(model).double() if precision == "float64" else copy.deepcopy(model)
    if precision == "float64":
        return copied.eval()
    copied = copied.float().eval()
    with torch.no_grad():
        for p in copied.parameters():
            if precision == "float16":
                p.copy_(p.half().float())
            elif precision in AFFINE_LEVELS:
                p.copy_(affine_rounded(p, AFFINE_LEVELS[precision], arithmetic))
            elif precision == "dynamic-int8" and p.ndim > 1 and p.numel() >= QUANTIZED_ELEMENTS:
                axes = tuple(range(1, p.ndim))
                step = p.abs().amax(dim=axes, keepdim=True).clamp_min(1e-30) / 127
                p.copy_((p / step).round().clamp(-127, 127) * step)
    return copied


AFFINE_LEVELS = {"uint8": 255, "uint16": 65535}  # TF.js's affine weight quantization


def quantized_exactly(
    model: torch.nn.Module, artifact: Artifact
) -> tuple[torch.nn.Module, str] | None:
    """For an artifact whose weights are quantized the affine way (a TF.js model's uint8 /
    uint16), whether they are PyTorch's quantized exactly so: every parameter's range found
    among the artifact's (Artifact.unmatched_weights). Then PyTorch on those weights, rounded
    in the arithmetic the converter used, computes what the artifact should, to float32's
    noise floor: that copy, and the words that say so. None when not (or not an affine
    artifact): compared against the quantization's floor."""
    if artifact.precision not in AFFINE_LEVELS:
        return None
    parameters = {n: p.detach().float().numpy() for n, p in model.named_parameters()}
    found = artifact.unmatched_weights(parameters, AFFINE_LEVELS[artifact.precision])
    if found is None:
        return None
    missing, arithmetic = found
    if missing:
        artifact.notes.append(
            f"{len(missing)} of PyTorch's weights ({', '.join(missing[:3])}"
            f"{', ...' if len(missing) > 3 else ''}) are not among its quantized ones as "
            f"{artifact.precision} would store them: compared with {artifact.precision}'s floor"
        )
        return None
    rounded = reference_copy(model, artifact.precision, arithmetic)
    return rounded, (
        f"each of PyTorch's weights, quantized to {artifact.precision} as the converter does "
        f"(rounded in {arithmetic}), is among its own (the same minimum and scale): compared "
        "with PyTorch on those weights, at float32's noise floor"
    )


def affine_rounded(p: torch.Tensor, levels: int, arithmetic: str = "float64") -> torch.Tensor:
    """`p` stored as tensorflowjs_converter's --quantize_uint8 / uint16 store a weight, and
    read back: one scale for the whole tensor (artifacts.tfjs.affine_range), each value
    rounded to a level in `arithmetic` (artifacts.tfjs.affine_levels)."""
    from converters.deploy.artifacts.tfjs import affine_levels, affine_range

    values = p.detach().float().numpy()
    low, high = float(values.min()), float(values.max())
    if low == high:
        return p.clone()  # one value: stored as its minimum, exactly
    start, scale = affine_range(low, high, levels)
    steps = affine_levels(values, low, high, levels, arithmetic).astype(np.float64)
    return torch.from_numpy((steps * scale + start).astype(np.float32)).to(p.dtype)
