"""Where the time of our PyTorch model's forward pass goes (`make bench` quotes it).

    .venv/bin/python benchmarks/profile_inference.py

convnext_tiny at 224x224, 2 threads, as create_model returns it, under torch.profiler: the
self CPU time of each operator per forward pass, at batch 1 and 16, beside the bound a
float32 GEMM sets (the network's multiply-adds at the rate a 2048^3 matmul reaches here).
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from profile_table import REPEATS, SIZE, THREADS, print_table  # noqa: E402

import convnext_torch  # noqa: E402
from convnext_torch.kernels import fused_kernels  # noqa: E402


def gemm_gflops() -> float:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    start = time.perf_counter()
    for _ in range(5):
        a @ b
    return 5 * 2 * 2048**3 / (time.perf_counter() - start) / 1e9


def multiply_adds(model: torch.nn.Module, x: torch.Tensor) -> float:
    """Multiply-adds of the convolutions and linear layers, counted by hooks."""
    total = [0.0]

    def count(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d):
            kernel = module.kernel_size[0] * module.kernel_size[1]
            total[0] += output.numel() * module.in_channels // module.groups * kernel
        elif isinstance(module, torch.nn.Linear):
            total[0] += output.numel() * module.in_features

    hooks = [m.register_forward_hook(count) for m in model.modules()]
    with torch.inference_mode(), fused_kernels(False):
        model(x)
    for hook in hooks:
        hook.remove()
    return total[0]


def profile(model: torch.nn.Module, batch: int) -> tuple[float, dict[str, float]]:
    x = torch.randn(batch, 3, SIZE, SIZE)
    with torch.inference_mode():
        model(x)
        model(x)
        start = time.perf_counter()
        for _ in range(REPEATS[batch]):
            model(x)
        wall = (time.perf_counter() - start) / REPEATS[batch] * 1000
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(REPEATS[batch]):
                model(x)
    by_op: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        by_op[event.key] += event.self_cpu_time_total / 1000 / REPEATS[batch]
    return wall, dict(by_op)


def main() -> None:
    torch.set_num_threads(THREADS)
    model = convnext_torch.create_model("convnext_tiny").eval()
    rate = gemm_gflops()
    macs = multiply_adds(model, torch.randn(1, 3, SIZE, SIZE))
    print(
        f"float32 GEMM (2048^3): {rate:.0f} GFLOP/s; convnext_tiny: {2 * macs / 1e9:.2f} GFLOP "
        f"a picture, so a bound of {2 * macs / rate / 1e6:.0f} ms a picture at that rate"
    )
    for batch in (1, 16):
        wall, by_op = profile(model, batch)
        print_table(batch, wall, by_op, "self CPU time by operator")


if __name__ == "__main__":
    main()
