"""The block's MLP (pwconv1 -> GELU -> GRN -> pwconv2) as fused oneDNN calls on the CPU.

`mlp(x, pwconv1, act, grn, pwconv2)` is `pwconv2(grn(act(pwconv1(x))))`. In float32 inference
on the CPU it computes that with two calls to oneDNN's matmul, the GELU fused into the first
as an epilogue (the kernel `torch.compile` picks for this pattern), over blocks of at most
ROWS positions at a time. Everywhere else it calls the modules, so training (any parameter
that wants a gradient), float64, autocast, CUDA, hooks, FX and jit tracing, torch.export,
ONNX export, `torch.compile` and dispatch modes (FlopCounterMode, make_fx) see plain PyTorch.
TorchScript's `torch.jit.script` does not compile this function (it takes modules as
arguments); the model as a whole was not scriptable before it either.

Why: two thirds of a ConvNeXt forward on the CPU is these two matmuls. A separate GELU is one
more pass over the block's widest tensor (4C channels); at batch 16 in the first stages that
tensor does not fit in the cache, so it also goes to memory and back between the matmuls.
Fused and blocked, convnext_tiny at 224x224 takes 0.7x-0.8x the time of the plain modules at
batch 16 and 0.8x-0.9x at batch 1 (`make bench`: torch against torch-unfused, two runs).
The result is the same function to float32 rounding: tests/models/test_kernels.py holds its error
against float64 to the plain path's.

`fused_kernels(False)` turns it off (a context manager, like `torch.backends.*.flags`, and
like them for the whole process, not one thread), and so does
`torch.backends.mkldnn.flags(enabled=False)`.

The Keras twin, `mlp` in convnext_tf/layers.py, calls the layers one by one: TensorFlow runs a
tf.function as a graph, which its own optimiser rewrites (fusing operations, picking oneDNN
kernels) before it runs; eager PyTorch runs each module as written. docs/speed-work.md has
the numbers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.modules import module as module_hooks

_LINEAR_POINTWISE = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
_ONEDNN = _LINEAR_POINTWISE is not None and torch.backends.mkldnn.is_available()
_FUSED = {"enabled": True}
# Positions per pair of matmul calls: the 4C-wide intermediate of 4096 positions stays in the
# cache between them. Measured on 2 cores at batch 16 (stage 1 of convnext_tiny, ms per MLP):
# 256 rows 68, 1024: 48, 4096: 46, all 50176 at once: 68.
ROWS = 4096


@contextlib.contextmanager
def fused_kernels(enabled: bool) -> Iterator[None]:
    """Use (or not) the fused oneDNN path inside the block; restores the previous state."""
    previous = _FUSED["enabled"]
    _FUSED["enabled"] = enabled
    try:
        yield
    finally:
        _FUSED["enabled"] = previous


def fusable(
    x: torch.Tensor, pwconv1: nn.Module, act: nn.Module, grn: nn.Module, pwconv2: nn.Module
) -> bool:
    """Whether the fused calls compute what the modules would, and nothing is watching the
    modules or the operators: eager float32 CPU inference (no autograd, autocast, tracing,
    compiling, export or dispatch mode), plain tensors, nn.Linear layers, the exact nn.GELU,
    and no hooks."""
    modules = (pwconv1, act, grn, pwconv2)
    if (  # first, and cheap: graph capture must see the modules, not this function
        torch.jit.is_scripting()
        or torch.jit.is_tracing()
        or torch.compiler.is_compiling()
        or torch.onnx.is_in_onnx_export()
        or isinstance(x, torch.fx.Proxy)
    ):
        return False
    return (
        _FUSED["enabled"]
        and _ONEDNN
        and torch.backends.mkldnn.enabled
        and type(pwconv1) is type(pwconv2) is nn.Linear
        and type(act) is nn.GELU
        and act.approximate == "none"
        and type(x) is torch.Tensor
        and all(type(p) is nn.Parameter for m in (pwconv1, pwconv2) for p in m.parameters())
        and x.device.type == "cpu"
        and x.dtype == pwconv1.weight.dtype == pwconv2.weight.dtype == torch.float32
        and not (
            torch.is_grad_enabled()
            and (x.requires_grad or any(p.requires_grad for m in modules for p in m.parameters()))
        )
        and not torch.is_autocast_enabled("cpu")
        and not any(m._forward_hooks or m._forward_pre_hooks for m in modules)
        and not (module_hooks._global_forward_hooks or module_hooks._global_forward_pre_hooks)
        and torch._C._len_torch_dispatch_stack() == 0  # FlopCounterMode, make_fx, ...
    )


def mlp(
    x: torch.Tensor, pwconv1: nn.Module, act: nn.Module, grn: nn.Module, pwconv2: nn.Module
) -> torch.Tensor:
    """`pwconv2(grn(act(pwconv1(x))))` for channels-last x (N, H, W, C)."""
    if not fusable(x, pwconv1, act, grn, pwconv2):
        return pwconv2(grn(act(pwconv1(x))))
    if isinstance(grn, nn.Identity):  # every position on its own: any block of rows
        parts = x.reshape(-1, x.shape[-1]).split(ROWS)
    else:  # GRN pools over each image: whole images at a time
        parts = x.split(max(1, ROWS // max(1, x.shape[1] * x.shape[2])))
    outputs = [
        _LINEAR_POINTWISE(
            grn(_LINEAR_POINTWISE(part, pwconv1.weight, pwconv1.bias, "gelu", [], "none")),
            pwconv2.weight,
            pwconv2.bias,
            "none",
            [],
            "",
        )
        for part in parts
    ]
    out = outputs[0] if len(outputs) == 1 else torch.cat(outputs)
    return out.view(*x.shape[:-1], out.shape[-1])
