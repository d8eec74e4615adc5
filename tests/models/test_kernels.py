"""The fused oneDNN path of the PyTorch block's MLP (convnext_torch/kernels.py) is taken where
it applies and nowhere else, and computes what the plain modules compute.

The cross-framework float32 test cannot judge this path alone: its yardstick is PyTorch's own
float32 error, which a wrong PyTorch kernel would inflate. So the fused model's float32 error
against float64 is held to a multiple of the plain model's, and a subtly wrong kernel (the tanh
approximation of GELU) is shown to fail that bound.
"""

import numpy as np
import pytest
import torch

import convnext_torch
from convnext_spec.spec import ModelSpec
from convnext_torch import kernels
from tests.support.helpers import ODD_SIZE, images, random_torch_model, torch_outputs

pytestmark = pytest.mark.skipif(
    kernels._LINEAR_POINTWISE is None or not torch.backends.mkldnn.is_available(),
    reason="this PyTorch build has no oneDNN linear",
)

SPECS = {
    "v1": ModelSpec(depths=(2, 2, 4, 2), dims=(16, 32, 48, 64), num_classes=10),
    "v2 (GRN)": ModelSpec(depths=(1, 1, 2, 1), dims=(16, 32, 48, 64), use_grn=True, num_classes=10),
    "isotropic": ModelSpec(kind="isotropic", depths=(3,), dims=(48,), num_classes=10),
}
ERROR_FACTOR = 2  # the fused model's float32 error, at most this times the plain model's


@pytest.fixture
def calls(monkeypatch) -> list:
    """Every call of the fused kernel, recorded."""
    recorded = []
    original = kernels._LINEAR_POINTWISE

    def counting(*args):
        recorded.append(args[3])  # the epilogue: "gelu" or "none"
        return original(*args)

    monkeypatch.setattr(kernels, "_LINEAR_POINTWISE", counting)
    return recorded


def blocks(spec: ModelSpec) -> int:
    return sum(spec.depths)


def relative_error(output: dict, reference: dict) -> float:
    return max(
        float(np.abs(output[k] - reference[k]).max() / np.abs(reference[k]).max()) for k in output
    )


def float32_against_float64(spec: ModelSpec, seed: int = 7) -> tuple:
    """A randomised float32 model, its input, its float64 outputs, and the plain path's float32
    error against them."""
    model = random_torch_model(spec, seed=seed).double()
    x = images(*ODD_SIZE, seed=seed)
    reference = torch_outputs(model, x)
    model.float()
    with kernels.fused_kernels(False):
        plain = relative_error(torch_outputs(model, x), reference)
    return model, x, reference, plain


@pytest.mark.parametrize("case", list(SPECS))
def test_fused_error_against_float64_is_the_plain_error(case, calls):
    spec = SPECS[case]
    model, x, reference, plain = float32_against_float64(spec)
    assert calls == []
    fused = relative_error(torch_outputs(model, x), reference)
    # each forward (stages, then logits) calls the kernel twice per block: GELU epilogue, none
    assert calls == ["gelu", "none"] * blocks(spec) * 2
    assert fused <= ERROR_FACTOR * plain, (fused, plain)


def test_a_subtly_wrong_fused_kernel_fails_the_bound(monkeypatch):
    model, x, reference, plain = float32_against_float64(SPECS["v1"])
    original = kernels._LINEAR_POINTWISE

    def tanh_gelu(x, w, b, attr, scalars, algorithm):
        return original(x, w, b, attr, scalars, "tanh" if attr == "gelu" else algorithm)

    monkeypatch.setattr(kernels, "_LINEAR_POINTWISE", tanh_gelu)
    wrong = relative_error(torch_outputs(model, x), reference)
    assert wrong > ERROR_FACTOR * plain


def test_fused_and_plain_agree_to_float32_rounding():
    model = random_torch_model(SPECS["v2 (GRN)"], seed=8).eval()
    x = torch.from_numpy(images(*ODD_SIZE, seed=8)).float()
    with torch.inference_mode():
        fused = model(x)
        with kernels.fused_kernels(False):
            plain = model(x)
    assert torch.allclose(fused, plain, rtol=1e-4, atol=1e-5 * plain.abs().max().item())


def forward_calls(model, x, calls) -> int:
    calls.clear()
    with torch.no_grad():
        model(x)
    return len(calls)


@pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN")  # mkldnn.flags says it
def test_the_plain_modules_run_wherever_the_fused_call_would_differ(calls):
    model = random_torch_model(SPECS["v1"], seed=9).eval()
    x = torch.from_numpy(images(*ODD_SIZE, seed=9)).float()
    assert forward_calls(model, x, calls) == 2 * blocks(SPECS["v1"])

    calls.clear()
    model(x).sum().backward()  # training: autograd needs the modules
    assert calls == [] and model.stages[0][0].pwconv1.weight.grad is not None
    with kernels.fused_kernels(False):
        assert forward_calls(model, x, calls) == 0
    with torch.backends.mkldnn.flags(enabled=False):
        assert forward_calls(model, x, calls) == 0
    assert forward_calls(model.double(), x.double(), calls) == 0  # oneDNN has no float64
    model.float()

    seen = []  # a hook on a module must see that module called
    handle = model.stages[1][0].act.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    assert forward_calls(model, x, calls) == 2 * blocks(SPECS["v1"]) - 2
    assert len(seen) == 1
    handle.remove()

    model.stages[0][0].act.approximate = "tanh"  # not the exact GELU the kernel computes
    assert forward_calls(model, x, calls) == 2 * blocks(SPECS["v1"]) - 2


@pytest.mark.parametrize("case", ["v1", "v2 (GRN)"])
def test_blocks_of_rows_compute_what_one_call_computes(case, monkeypatch, calls):
    """A batch larger than ROWS positions goes in blocks (whole images where GRN pools over
    each); the result is the one-call result."""
    model = random_torch_model(SPECS[case], seed=10).eval()
    x = torch.from_numpy(images(*ODD_SIZE, batch=5, seed=10)).float()
    with torch.inference_mode():
        whole = model.forward_stages(x)
        one_call = len(calls)
        monkeypatch.setattr(kernels, "ROWS", 200)  # stage 1 has 15 x 31 = 465 positions
        blocked = model.forward_stages(x)
    assert len(calls) - one_call > one_call  # more calls: the rows went in blocks
    for a, b in zip(whole, blocked, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6 * a.abs().max().item())


def test_any_parameter_that_wants_a_gradient_gets_one(calls):
    """Partly frozen: only pwconv2 (and GRN) train. The fused op has no autograd formula, so
    the modules must run, or those gradients would silently be None."""
    model = random_torch_model(SPECS["v2 (GRN)"], seed=12)
    for name, p in model.named_parameters():
        p.requires_grad_("pwconv2" in name or "grn" in name)
    x = torch.from_numpy(images(*ODD_SIZE, seed=12)).float()
    model(x).square().sum().backward()
    assert calls == []
    block = model.stages[0][0]
    assert block.pwconv2.weight.grad is not None and block.grn.gamma.grad is not None


@pytest.mark.filterwarnings("ignore:.*autocast")
def test_tools_that_watch_the_modules_or_the_operators_see_the_modules(calls):
    model = random_torch_model(SPECS["v1"], seed=13).eval()
    x = torch.from_numpy(images(*ODD_SIZE, seed=13)).float()
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):  # the modules compute in bfloat16
            assert model(x).dtype == torch.bfloat16

        seen = []  # a global hook sees every module called
        handle = torch.nn.modules.module.register_module_forward_hook(
            lambda m, i, o: seen.append(m)
        )
        model(x)
        handle.remove()
        assert model.stages[0][0].pwconv1 in seen

        from torch.utils._python_dispatch import TorchDispatchMode

        class Recording(TorchDispatchMode):  # a dispatch mode alone, without module hooks
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                seen.append(str(func))
                return func(*args, **(kwargs or {}))

        seen.clear()
        with Recording():
            model(x)
        assert not any("linear_pointwise" in op for op in seen)
        assert any(op.startswith(("aten.addmm", "aten.mm")) for op in seen)

        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:  # a dispatch mode: counts aten ops
            model(x)
        with kernels.fused_kernels(False), FlopCounterMode(display=False) as plain_counter:
            model(x)
        assert counter.get_total_flops() == plain_counter.get_total_flops() > 0
    assert calls == []

    graph = torch.fx.symbolic_trace(model).graph  # FX: the modules, as call_module nodes
    targets = {node.target for node in graph.nodes if node.op == "call_module"}
    assert "stages.0.0.pwconv1" in targets and "stages.0.0.act" in targets


def test_torch_compile_captures_the_block_in_one_graph():
    block = convnext_torch.Block(16).eval()
    x = torch.randn(2, 16, 9, 11)
    with torch.no_grad():
        expected = block(x)
        compiled = torch.compile(block, backend="eager", fullgraph=True)  # no graph break
        torch.testing.assert_close(compiled(x), expected)
