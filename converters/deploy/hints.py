"""What a verdict tells an engineer to do, from what was measured rather than from a list.

A conversion that goes wrong mostly goes wrong in one of a few known ways (the slips: a
depthwise kernel transposed or flipped, LayerNorm's eps, the GELU's form, layer scale left out,
padding="same" where PyTorch floors, one weight off). Each is a small edit of the PyTorch
model, so each can be tried: a slip that makes PyTorch compute what the artifact computes is
the likely cause, named with the numbers that single it out; one the tolerance cannot see is
said on a PASS, for a tolerance widened by quantization or given by hand.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from converters.deploy.trace import torch_trace

DIAGNOSED_IMAGES = 2  # the slips are tried on the first images only: float32, a pass each
WRONG_EPS = 1e-3  # Keras' LayerNormalization default, where ConvNeXt uses 1e-6


def each(model: nn.Module, kind: type) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, kind)]


def tanh_gelu(model: nn.Module) -> None:
    for act in each(model, nn.GELU):
        act.approximate = "tanh"


def keras_eps(model: nn.Module) -> None:
    for norm in model.modules():
        if isinstance(getattr(norm, "eps", None), float) and "Norm" in type(norm).__name__:
            norm.eps = WRONG_EPS


def depthwise(model: nn.Module) -> list[nn.Parameter]:
    return [m.weight for m in each(model, nn.Conv2d) if m.groups > 1 and m.groups == m.in_channels]


def depthwise_transposed(model: nn.Module) -> None:
    with torch.no_grad():
        for weight in depthwise(model):  # (C, 1, kh, kw) -> (C, 1, kw, kh)
            weight.copy_(weight.transpose(-1, -2).clone())


def depthwise_flipped(model: nn.Module) -> None:
    with torch.no_grad():
        for weight in depthwise(model):  # convolution where PyTorch cross-correlates
            weight.copy_(weight.flip(-1, -2).clone())


def no_layer_scale(model: nn.Module) -> None:
    with torch.no_grad():
        for block in model.modules():
            if isinstance(getattr(block, "gamma", None), nn.Parameter) and hasattr(block, "dwconv"):
                block.gamma.fill_(1.0)


def strided(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in each(model, nn.Conv2d) if m.stride[0] > 1 and m.groups == 1]


def conv_transposed(model: nn.Module) -> None:
    with torch.no_grad():
        for conv in strided(model):  # (out, in, kh, kw) -> (out, in, kw, kh)
            conv.weight.copy_(conv.weight.transpose(-1, -2).clone())


def tf_same_padding(conv: nn.Conv2d, inputs: tuple) -> tuple:
    """TensorFlow's padding="same": out = ceil(in / stride), the extra row and column at the
    bottom and right, where PyTorch's unpadded conv floors."""
    (x,) = inputs
    pads = []
    for size, k, s in zip(x.shape[-2:], conv.kernel_size, conv.stride, strict=True):
        total = max((-(-size // s) - 1) * s + k - size, 0)
        pads.append((total // 2, total - total // 2))
    (top, bottom), (left, right) = pads
    return (F.pad(x, (left, right, top, bottom)),)


def same_padding(first_only: bool) -> Callable[[nn.Module], None]:
    def apply(model: nn.Module) -> None:
        convs = strided(model)
        for conv in convs[:1] if first_only else convs:
            if conv.padding == (0, 0):
                conv.register_forward_pre_hook(tf_same_padding)

    return apply


def one_weight_off(model: nn.Module) -> None:
    """The largest weight of the middle block's second pointwise layer 10% off: what one
    wrong value in a file moves."""
    blocks = [m for m in model.modules() if hasattr(m, "pwconv2") and hasattr(m, "dwconv")]
    if blocks:
        weight = blocks[len(blocks) // 2].pwconv2.weight
        with torch.no_grad():
            weight.view(-1)[weight.abs().argmax()] *= 1.1


@dataclass(frozen=True)
class Slip:
    label: str
    apply: Callable[[nn.Module], None]
    places: tuple[str, ...]  # where it is tried at a located divergence: block, stem, downsample
    blinds: bool = True  # whether it can hide under a wide tolerance (padding hides by size)


SLIPS = (
    Slip("the depthwise kernels transposed (kh, kw)", depthwise_transposed, ("block",)),
    Slip("the depthwise kernels flipped (a convolution)", depthwise_flipped, ("block",)),
    Slip(f"LayerNorm eps {WRONG_EPS:g}", keras_eps, ("block", "stem", "downsample", "norm")),
    Slip("a tanh GELU", tanh_gelu, ("block",)),
    Slip("layer scale left out", no_layer_scale, ("block",)),
    Slip("the strided conv kernels transposed (kh, kw)", conv_transposed, ("stem", "downsample")),
    Slip('padding="same" on the stem', same_padding(True), ("stem",), blinds=False),
    Slip('padding="same" on every strided conv', same_padding(False), ("downsample",), False),
    Slip("one weight 10% off", one_weight_off, ()),
)

USUAL = {
    "stem": "the stem: its padding (PyTorch floors, padding='same' does not) or its kernel layout",
    "downsample": "a downsampling layer: its padding or its kernel layout",
    "block": (
        "a block: the depthwise kernel's orientation, LayerNorm eps, the GELU form, layer scale"
    ),
    "norm": "the final norm: its eps, or pooling over the wrong axes",
}


def place_of(name: str) -> str | None:
    if name in ("downsample_layers.0", "stem"):
        return "stem"
    if name.startswith("downsample_layers."):
        return "downsample"
    if name.startswith(("stages.", "blocks.")):
        return "block"
    return "norm" if name == "norm" else None


def module_named(model: nn.Module, name: str) -> nn.Module | None:
    try:
        return model.get_submodule(name)
    except AttributeError:
        return None


def relative(found: np.ndarray, want: np.ndarray) -> float:
    if found.shape != want.shape:
        return float("inf")
    return float(np.max(np.abs(found - want)) / (np.max(np.abs(want)) or 1.0))


def run(module: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(np.ascontiguousarray(x, np.float32))).double().numpy()


def slipped_outputs(
    model: nn.Module, x: np.ndarray, name: str, probabilities: bool
) -> dict[str, np.ndarray]:
    """The output `name` of the float32 model with each slip, on `x` (NCHW)."""
    outputs = {}
    for slip in SLIPS:
        copied = copy.deepcopy(model).float().eval()
        slip.apply(copied)
        value = torch_trace(copied, np.asarray(x, np.float32))[name].astype(np.float64)
        outputs[slip.label] = softmax(value) if probabilities else value
    return outputs


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def numbers(rel: dict[str, float], match: str | None = None) -> str:
    return "; ".join(
        f"{label} {'shape differs' if v == float('inf') else f'{v:.1e}'}"
        + (" <- reproduces it" if label == match else "")
        for label, v in rel.items()
    )


def black_box_hint(
    model: nn.Module,
    x: np.ndarray,
    got: np.ndarray,
    name: str,
    probabilities: bool,
    tolerance: float,
    agreeing: float,
) -> str:
    """After a black box FAILs: the slip whose PyTorch output is the artifact's, by the
    numbers; else, with few classes agreeing, the way its input is taken."""
    n = min(DIAGNOSED_IMAGES, len(x))
    found = got[:n]
    rel = {
        label: relative(found, want)
        for label, want in slipped_outputs(model, x[:n], name, probabilities).items()
    }
    match = min(rel, key=rel.get)
    if rel[match] <= tolerance:
        return (
            f"the artifact computes what PyTorch does with {match}: each usual slip tried in "
            f"PyTorch, max rel to the artifact's output (tolerance {tolerance:.1e}): "
            + numbers(rel, match)
        )
    if agreeing < 0.5:
        return (
            "few top-1 classes agree, and no usual conversion slip reproduces the output "
            f"({numbers(rel)}): the artifact may take its input otherwise (`pixels`, "
            "`input_layout`, `mean` / `std`)"
        )
    return f"no usual conversion slip reproduces the output, each tried in PyTorch: {numbers(rel)}"


def divergence_hint(
    model: nn.Module, name: str, before: np.ndarray, found: np.ndarray, tolerance: float
) -> str:
    """At a located first divergence: what usually breaks there, each tried on that layer in
    PyTorch from the artifact's own input to it (`before`, NCHW), against its output there."""
    place, layer = place_of(name), module_named(model, name)
    if place is None or layer is None or place == "norm":
        return f"at {name}: {USUAL.get(place or '', 'the head: its weight layout')}"
    layer = copy.deepcopy(layer).float().eval()
    rel = {"as PyTorch has it": relative(found, run(layer, before))}
    for slip in SLIPS:
        if place in slip.places:
            copied = copy.deepcopy(layer).float().eval()
            slip.apply(copied)
            rel[slip.label] = relative(found, run(copied, before))
    match = min(rel, key=rel.get)
    match = match if rel[match] <= tolerance and match != "as PyTorch has it" else None
    verdict = f"{match} reproduces it" if match else "none of these reproduces it"
    return (
        f"at {name}, {USUAL[place]}; {verdict}: that layer run in PyTorch on the artifact's own "
        f"input to it, max rel to the artifact's output (tolerance {tolerance:.1e}): "
        + numbers(rel, match)
    )


def blind_spots(
    model: nn.Module,
    x: np.ndarray,
    want: np.ndarray,
    name: str,
    probabilities: bool,
    tolerance: float,
) -> str:
    """On a PASS with a wide tolerance (quantized, or given): which usual slips it would not
    see, by how much each moves these outputs; "" when it sees them all."""
    n = min(DIAGNOSED_IMAGES, len(x))
    moved = {
        label: relative(value, want[:n])
        for label, value in slipped_outputs(model, x[:n], name, probabilities).items()
        if next(s for s in SLIPS if s.label == label).blinds
    }
    hidden = [f"{label} ({v:.1e})" for label, v in moved.items() if v <= tolerance]
    if not hidden:
        return ""
    seen = [f"{label} ({v:.1e})" for label, v in moved.items() if v > tolerance]
    return f"blind below {tolerance:.1e}: {', '.join(hidden)} would pass unseen" + (
        f"; {', '.join(seen)} would not" if seen else ""
    )


def size_advice(size: tuple[int, int], fixed: tuple[int, int] | None) -> str:
    """After a PASS at a multiple of 32, where padding='same' pads nothing."""
    if size[0] % 32 or size[1] % 32:
        return ""
    if fixed:
        return (
            f"passed at {size[0]}x{size[1]}, where a padding='same' slip hides; this artifact "
            "takes that size only: to check it for one, convert it again at a size that is no "
            "multiple of 32 (61x67, say) and verify that file"
        )
    return (
        f"passed at {size[0]}x{size[1]}, where a padding='same' slip hides: try a size that "
        "is no multiple of 32 too (`size` 61 67)"
    )


@dataclass
class Evidence:
    """What the hints are tried on: the first batch as PyTorch got it (NCHW), the artifact's
    output on it and, for a traced artifact, its named intermediate outputs (NCHW)."""

    x: np.ndarray
    got: np.ndarray
    found: dict[str, np.ndarray]


def advise(
    model: nn.Module,
    evidence: Evidence,
    output: str,
    name: str,
    points: list,
    final,
    first: str | None,
    wide: bool,
    agreeing: float,
    artifact,
) -> tuple[list[str], str]:
    """The notes that follow a verdict, and the caveat of a PASS line ("" for none)."""
    probabilities = output == "probabilities"
    if final.ok:
        caveat = ""
        if wide and np.isfinite(final.tolerance):
            want = torch_trace(copy.deepcopy(model).float().eval(), evidence.x.astype(np.float32))
            value = want[name].astype(np.float64)
            value = softmax(value) if probabilities else value
            caveat = blind_spots(model, evidence.x, value, name, probabilities, final.tolerance)
        advice = "" if artifact.traced else size_advice(evidence.x.shape[2:], artifact.size)
        return ([advice] if advice else []), caveat
    order = [p.name for p in points]  # the model's order (a signature's outputs are sorted)
    at = order.index(first) if first in order else -1
    if first in evidence.found and (at == 0 or order[at - 1] in evidence.found):
        before = evidence.x if at == 0 else evidence.found[order[at - 1]]
        tolerance = next(p.tolerance for p in points if p.name == first)
        return [divergence_hint(model, first, before, evidence.found[first], tolerance)], ""
    hints = (
        [f"at {first}, what usually breaks: {USUAL[place_of(first)]}"]
        if (first and place_of(first))
        else []
    )
    if not final.note and not final.nonfinite:
        hints.append(
            black_box_hint(
                model, evidence.x, evidence.got, name, probabilities, final.tolerance, agreeing
            )
        )
    return hints, ""
