"""`make bench`: speed and memory of this project against its peers, in one run.

Every figure comes from a process of its own (benchmarks/bench_worker.py): what one framework
loads changes the other's speed, and a user runs one of them. Implementations are interleaved
over ROUNDS rounds; each figure is the lowest of the rounds' medians (a shared machine only
ever adds time). Ratios are against peers measured in the same run.

1. PyTorch inference of ConvNeXt-T at 224x224: ours as create_model returns it, ours in
   channels_last, ours under torch.compile; timm and transformers'
   ConvNextForImageClassification (in .venv-peers), random weights. A peer whose environment
   is missing is skipped with a line that says so (`make test-peers` makes it).
2. Keras inference: ours and keras.applications.ConvNeXtTiny(weights=None), eager model(x),
   predict, a tf.function, and XLA (jit_compile=True).
3. Deployed: the SavedModel and .tflite that `convnext export` writes, through the serving
   signature and the LiteRT interpreter (its XNNPACK delegate, the default, 2 threads).
   Against them and our models, the engines deployers pick on a CPU: OpenVINO and ONNX
   Runtime running the ONNX file torch.onnx.export writes of our PyTorch model (in
   .venv-engines, which `make engines` makes; skipped with a line otherwise).
4. Conversion of convnext_xlarge (350M parameters, a 1.4 GB float32 checkpoint) from .pth and
   .safetensors to .weights.h5 and .keras: time and peak RSS, against the floor of reading
   the same file and writing the same bytes with h5py.
5. Export at every size: `convnext export` to .tflite and SavedModel from convnext_tiny to
   convnextv2_huge, and `convnext verify` of the .tflite (benchmarks/bench_export.py).
6. Verify in seconds: `convnext verify` of a convnext_tiny .tflite and SavedModel against its
   floor (the imports and forward passes alone), stage by stage (benchmarks/bench_verify.py).
7. Start-up: `convnext --help`, `convnext inspect` of a small file, and building variants.
8. The test suite: `make test`'s pytest command, wall time and peak memory (not with --quick).

    .venv/bin/python benchmarks/bench.py [--rounds N] [--quick] [--only SECTION ...] [--report]

--only runs the sections named (inference, conversion, export, verify, startup, tests) into the
results already written.

Results: benchmarks/results.md and benchmarks/results.json (the README quotes them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_export import VARIANTS, export_report, export_scale
from bench_verify import verify_report, verify_speed

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("bench_worker.py")
PROFILE_CONVERSION = Path(__file__).with_name("profile_conversion.py")
PROFILE_INFERENCE = Path(__file__).with_name("profile_inference.py")
PROFILE_KERAS = Path(__file__).with_name("profile_keras.py")
RESULTS = Path(__file__).with_name("results.md")
RESULTS_JSON = Path(__file__).with_name("results.json")
OURS = sys.executable
PYTHONS = {
    "torch-peer-env": ROOT / ".venv-peers" / "bin" / "python",
    "timm": ROOT / ".venv-peers" / "bin" / "python",
    "transformers": ROOT / ".venv-peers" / "bin" / "python",
    "onnxruntime": ROOT / ".venv-engines" / "bin" / "python",
    "openvino": ROOT / ".venv-engines" / "bin" / "python",
}
TORCH_IMPLS = [
    "torch",
    "torch-unfused",
    "torch-channels_last",
    "torch-compile",
    "torch-peer-env",
    "timm",
    "transformers",
]
KERAS_IMPLS = [
    "keras-eager",
    "keras-predict",
    "keras-function",
    "keras-xla",
    "kapp-eager",
    "kapp-predict",
    "kapp-function",
    "kapp-xla",
]
DEPLOYED_IMPLS = ["savedmodel", "tflite"]
ENGINE_IMPLS = ["openvino", "onnxruntime"]  # run the ONNX file of our PyTorch model
BATCHES = (1, 16)
ON_CUDA = "@cuda"
PEERS = [
    "timm",
    "transformers",
]  # PyTorch's alternatives  # an implementation's name with this suffix runs on the GPU
LABELS = {
    "torch": "ours, as create_model returns it",
    "torch-unfused": "ours, fused_kernels(False): the plain MLP modules",
    "torch-channels_last": "ours, model and input channels_last",
    "torch-compile": "ours, torch.compile",
    "torch-peer-env": "ours, in timm's environment (its torch)",
    "timm": "timm convnext_tiny",
    "transformers": "transformers ConvNextForImageClassification",
    "keras-eager": "ours, eager model(x)",
    "keras-predict": "ours, model.predict",
    "keras-function": "ours, tf.function",
    "keras-xla": "ours, tf.function(jit_compile=True)",
    "kapp-eager": "keras.applications, eager model(x)",
    "kapp-predict": "keras.applications, model.predict",
    "kapp-function": "keras.applications, tf.function",
    "kapp-xla": "keras.applications, tf.function(jit_compile=True)",
    "savedmodel": "SavedModel (convnext export), serving signature",
    "tflite": ".tflite (convnext export), LiteRT interpreter (XNNPACK)",
    "openvino": "OpenVINO (CPU plugin, f32), ONNX of our PyTorch model",
    "onnxruntime": "ONNX Runtime (CPU), ONNX of our PyTorch model",
}


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def python_for(impl: str) -> Path | str | None:
    impl = impl.removesuffix(ON_CUDA)
    if impl in PYTHONS:
        return PYTHONS[impl] if PYTHONS[impl].exists() else None
    return OURS


def cuda_state(python: Path | str) -> dict:
    """Whether this Python's torch sees a GPU, which, and its TF32 settings."""
    code = (
        "import json, torch; a = torch.cuda.is_available(); print(json.dumps({'available': a, "
        "'gpu': torch.cuda.get_device_name() if a else None, "
        "'matmul_tf32': torch.backends.cuda.matmul.allow_tf32, "
        "'cudnn_tf32': torch.backends.cudnn.allow_tf32}))"
    )
    result = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=False)
    lines = result.stdout.strip().splitlines()
    return json.loads(lines[-1]) if result.returncode == 0 and lines else {}


def run_worker(impl: str, batch: int, repeats: int, artifact: str | None) -> float | None:
    python = python_for(impl)
    device = "cuda" if impl.endswith(ON_CUDA) else "cpu"
    command = [str(python), str(WORKER), impl.removesuffix(ON_CUDA), str(batch)]
    command += ["--repeats", str(repeats), "--device", device]
    if artifact:
        command += ["--artifact", artifact]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1200, check=False)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        say(f"  {impl} batch {batch}: failed ({last[:200]})")
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])["median_ms"]


def inference(rounds: int, artifacts: dict[str, str], quick: bool) -> dict:
    """impl -> batch -> lowest median over the rounds (ms)."""
    impls = [*TORCH_IMPLS, *KERAS_IMPLS, *DEPLOYED_IMPLS, *ENGINE_IMPLS]
    for impl in impls:
        if python_for(impl) is None:
            maker = "make engines" if impl in ENGINE_IMPLS else "make test-peers"
            say(f"skipped {impl}: no {PYTHONS[impl]} (`{maker}` makes it)")
    impls = [i for i in impls if python_for(i) is not None and (i in artifacts or not needs(i))]
    if quick:
        impls = [i for i in impls if i not in ("torch-compile", "kapp-eager", "kapp-xla")]
    impls += [  # the GPU too, where an environment's torch sees one
        impl + ON_CUDA
        for impl in ("torch", "torch-peer-env", "timm", "transformers")
        if impl in impls and cuda_state(python_for(impl)).get("available")
    ]
    found: dict[str, dict[int, list]] = {i: {b: [] for b in BATCHES} for i in impls}
    for round_ in range(1, rounds + 1):
        for batch in BATCHES:
            for impl in impls:  # interleaved: every implementation once per round
                repeats = 10 if batch == 1 else 3
                median = run_worker(impl, batch, repeats, artifacts.get(impl))
                found[impl][batch].append(median)  # None where it failed
                if median is not None:
                    say(f"round {round_} batch {batch:>2} {impl:<20} {median:8.1f} ms")
    return found


def needs(impl: str) -> bool:
    """Whether an implementation runs a file export_artifacts writes."""
    return impl in DEPLOYED_IMPLS or impl in ENGINE_IMPLS


def lowest(per_round: dict) -> dict:
    """impl -> batch -> the lowest of the rounds' medians (a shared machine only adds time)."""
    return {
        impl: {b: min(m for m in ms if m is not None) for b, ms in by.items() if any(ms)}
        for impl, by in per_round.items()
    }


def paired_ratio(per_round: dict, impl: str, references: list[str], batch: int) -> float | None:
    """The median over rounds of impl / (the best of `references` in the same round): a peer's
    one lucky round moves the lowest-median ratio, not this one."""
    ratios = []
    for k, ours in enumerate(per_round.get(impl, {}).get(batch, [])):
        theirs = [
            per_round[r][batch][k]
            for r in references
            if r in per_round and per_round[r][batch][k] is not None
        ]
        if ours is not None and theirs:
            ratios.append(ours / min(theirs))
    return statistics.median(ratios) if ratios else None


def saved_results() -> dict:
    """results.json as written, its batch sizes ints again (JSON keys are strings)."""
    results = json.loads(RESULTS_JSON.read_text())
    results["per_round"] = {
        impl: {int(b): ms for b, ms in by.items()} for impl, by in results["per_round"].items()
    }
    return results


def export_artifacts(workdir: Path) -> dict[str, str]:
    """The SavedModel and .tflite of a random convnext_tiny, written by `convnext export`."""
    code = (
        "import sys, torch, convnext_torch; "
        "torch.save(convnext_torch.create_model('convnext_tiny').state_dict(), sys.argv[1])"
    )
    checkpoint = workdir / "tiny.pth"
    subprocess.run([OURS, "-c", code, str(checkpoint)], check=True, cwd=ROOT)
    artifacts = {}
    for impl, name in (("savedmodel", "tiny_savedmodel"), ("tflite", "tiny.tflite")):
        result = subprocess.run(
            [str(Path(OURS).with_name("convnext")), "export", str(checkpoint), str(workdir / name)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode == 0:
            artifacts[impl] = str(workdir / name)
        else:
            say(f"skipped {impl}: export failed ({result.stderr.strip().splitlines()[-1]})")
    engines = python_for("openvino")
    if engines is not None:
        onnx = workdir / "tiny.onnx"
        result = subprocess.run(
            [str(engines), "-c", ONNX_EXPORT, str(checkpoint), str(onnx)],
            capture_output=True,
            text=True,
            check=False,
            cwd=ROOT,
        )
        if result.returncode == 0:
            artifacts.update(dict.fromkeys(ENGINE_IMPLS, str(onnx)))
        else:
            say(f"skipped the engines: ONNX export failed ({result.stderr.strip()[-200:]})")
    return artifacts


# Our PyTorch model, as create_model returns it, to ONNX with an open batch (torch.onnx.export,
# the exporter torch recommends; opset 18): what OpenVINO and ONNX Runtime then run.
ONNX_EXPORT = """
import sys, torch
sys.path.insert(0, ".")
import convnext_torch
model = convnext_torch.create_model("convnext_tiny")
model.load_state_dict(torch.load(sys.argv[1], weights_only=True))
x = torch.randn(2, 3, 224, 224)
batch = torch.export.Dim("batch", min=1, max=64)
torch.onnx.export(model.eval(), (x,), sys.argv[2], input_names=["images"], output_names=["logits"],
                  dynamic_shapes={"x": {0: batch}}, dynamo=True, external_data=False)
"""


# --- conversion and start-up: time and peak memory of whole commands ------------------------

# Runs a command and prints its wall time and the peak RSS of the process tree it waited for.
MEASURE = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE).returncode
elapsed = time.perf_counter() - start
print(json.dumps({"seconds": elapsed, "peak_mb": resource.getrusage(
    resource.RUSAGE_CHILDREN).ru_maxrss / 1024, "code": code}))
"""

# The floor of a conversion: read the checkpoint and write the same bytes with h5py.
FLOOR = """
import sys, h5py, numpy as np
src, dst = sys.argv[1], sys.argv[2]
if src.endswith(".safetensors"):
    from safetensors.numpy import load_file
    tensors = load_file(src)
else:
    import torch
    tensors = {k: v.numpy() for k, v in torch.load(src, weights_only=True).items()}
with h5py.File(dst, "w") as f:
    for key, value in tensors.items():
        f.create_dataset(key, data=value)
"""


def measure(command: list[str], repeats: int = 1) -> dict:
    runs = []
    for _ in range(repeats):
        out = subprocess.run(
            [OURS, "-c", MEASURE, *command], capture_output=True, text=True, check=True, cwd=ROOT
        )
        runs.append(json.loads(out.stdout))
    code = next((r["code"] for r in runs if r["code"]), 0)
    if code:
        say(f"  {' '.join(command[:3])}...: exit {code}")
    return {
        "seconds": min(r["seconds"] for r in runs),
        "peak_mb": max(r["peak_mb"] for r in runs),
        "code": code,
    }


def conversion(workdir: Path) -> dict:
    code = (
        "import sys, torch, convnext_torch; from safetensors.torch import save_file\n"
        "with torch.device('meta'): m = convnext_torch.create_model('convnext_xlarge')\n"
        "m = m.to_empty(device='cpu')\n"
        "[p.data.normal_(0, 0.02) for p in m.parameters()]\n"
        "sd = m.state_dict(); torch.save(sd, sys.argv[1]); save_file(sd, sys.argv[2])"
    )
    pth, safetensors = workdir / "xlarge.pth", workdir / "xlarge.safetensors"
    subprocess.run([OURS, "-c", code, str(pth), str(safetensors)], check=True, cwd=ROOT)
    size_mb = pth.stat().st_size / 2**20
    convnext = str(Path(OURS).with_name("convnext"))
    results = {"checkpoint_mb": size_mb}
    for src in (pth, safetensors):
        floor = measure([OURS, "-c", FLOOR, str(src), str(workdir / "floor.h5")], repeats=2)
        results[f"floor {src.suffix}"] = floor
        say(f"floor {src.suffix}: {floor['seconds']:.1f} s, {floor['peak_mb']:.0f} MB")
        for target in ("out.weights.h5", "out.keras"):
            dst = workdir / target
            run = measure([convnext, "convert", str(src), str(dst), "--force"], repeats=2)
            results[f"{src.suffix} -> {target[4:]}"] = run
            say(f"{src.suffix} -> {target[4:]}: {run['seconds']:.1f} s, {run['peak_mb']:.0f} MB")
    profile = subprocess.run(
        [OURS, str(PROFILE_CONVERSION), str(pth), str(workdir / "profiled.weights.h5")],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    results["profile"] = profile.stdout.strip()
    say(results["profile"])
    return results


def available_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def test_suite() -> dict:
    """`make test`'s pytest command: wall time, and the peak of the machine's memory in use
    above what it was just before (every worker together, sampled 5 times a second)."""
    import threading

    idle = available_mb()
    lowest = [idle]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            lowest[0] = min(lowest[0], available_mb())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    result = subprocess.run(
        [OURS, "-m", "pytest", "-q", "-n", "2", "--dist", "loadfile"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    summary = (result.stdout.strip().splitlines() or ["no output"])[-1].strip("= ")
    return {"seconds": seconds, "peak_mb": idle - lowest[0], "summary": summary}


def startup(workdir: Path) -> dict:
    convnext = str(Path(OURS).with_name("convnext"))
    code = (
        "import sys, torch, convnext_torch; "
        "torch.save(convnext_torch.create_model('convnext_atto').state_dict(), sys.argv[1])"
    )
    small = workdir / "atto.pth"
    subprocess.run([OURS, "-c", code, str(small)], check=True, cwd=ROOT)
    results = {
        "convnext --help": measure([convnext, "--help"], repeats=3),
        "convnext inspect (atto .pth)": measure([convnext, "inspect", str(small)], repeats=3),
    }
    build = (
        "import json, sys, time\n"
        "framework = sys.argv[1]\n"
        "if framework == 'keras':\n"
        "    from converters.startup import import_tensorflow_quietly; "
        "import_tensorflow_quietly(); import convnext_tf as m\n"
        "else:\n"
        "    import convnext_torch as m\n"
        "out = {}\n"
        "for name in sys.argv[2:]:\n"
        "    start = time.perf_counter(); m.create_model(name); "
        "out[name] = time.perf_counter() - start\n"
        "print(json.dumps(out))\n"
    )
    variants = ["convnext_atto", "convnext_tiny", "convnext_base", "convnext_isotropic_large"]
    for framework in ("torch", "keras"):
        out = subprocess.run(
            [OURS, "-c", build, framework, *variants],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        )
        results[f"build ({framework})"] = json.loads(out.stdout.strip().splitlines()[-1])
    return results


# --- the report ------------------------------------------------------------------------------


def tensorflow_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    for name in ("tensorflow-cpu", "tensorflow"):
        try:
            return version(name)
        except PackageNotFoundError:
            pass
    return "?"


def machine() -> dict:
    from importlib.metadata import version

    onednn = subprocess.run(
        [OURS, "-c", "import torch; print(torch.backends.mkldnn.is_available())"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or platform.machine(),
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": 2,
        "python": platform.python_version(),
        "torch": version("torch"),
        "tensorflow": tensorflow_version(),
        "keras": version("keras"),
        "onednn_torch": onednn,
        "onednn_tf": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on for x86)"),
        "cuda": cuda_description(),
    }


def cuda_description() -> str:
    for impl in ("torch", "torch-peer-env"):
        python = python_for(impl)
        state = cuda_state(python) if python else {}
        if state.get("available"):
            return (
                f"{state['gpu']} (seen by {impl}'s torch; TF32 matmul "
                f"{state['matmul_tf32']}, cuDNN TF32 {state['cudnn_tf32']}: the defaults, "
                "left as they are)"
            )
    return "no GPU seen by any environment's torch"


def report(results: dict) -> str:
    per_round = results["per_round"]
    speed = lowest(per_round)
    m = results["machine"]
    lines = [
        "# Benchmarks",
        "",
        f"Written by `make bench` on {m['cpu']}, {m['cores']} cores, {m['threads']} threads per "
        f"framework, Python {m['python']}, torch {m['torch']}, tensorflow {m['tensorflow']}, "
        f"keras {m['keras']}; oneDNN: torch {m['onednn_torch']}, TF {m['onednn_tf']}; "
        f"CUDA: {m['cuda']}. Each implementation in its own "
        f"process, {results['rounds']} interleaved rounds, the lowest of the rounds' medians; "
        "convnext_tiny, 224x224, float32, random weights. Ratios are to the row named.",
        "",
    ]

    def table(title: str, impls: list[str], reference: str) -> None:
        lines.extend(
            [
                f"## {title}",
                "",
                "| implementation | "
                + " | ".join(f"batch {b}" for b in BATCHES)
                + f" | / {LABELS[reference]}, batch 1 | batch 16 |",
            ]
        )
        lines.append("|---|" + "---|" * (len(BATCHES) + 2))
        for impl in impls:
            if impl not in speed:
                continue
            cells = [f"{speed[impl].get(b, float('nan')):.0f} ms" for b in BATCHES]
            ratios = [
                f"{speed[impl][b] / speed[reference][b]:.2f}x"
                if b in speed[impl] and b in speed.get(reference, {})
                else "-"
                for b in BATCHES
            ]
            lines.append(f"| {LABELS[impl]} | " + " | ".join(cells + ratios) + " |")
        lines.append("")

    best_peer = {
        b: min(speed[p][b] for p in PEERS if b in speed.get(p, {}))
        for b in BATCHES
        if any(b in speed.get(p, {}) for p in PEERS)
    }
    if best_peer:
        speed["best PyTorch peer"] = best_peer
        LABELS["best PyTorch peer"] = "best of timm and transformers"
    targets = [
        ("PyTorch: ours / the best of timm and transformers", "torch", PEERS, 0.9),
        ("Keras (tf.function) / keras.applications (tf.function)", "keras-function",
         ["kapp-function"], 0.2),
        ("Keras (tf.function) / our PyTorch model", "keras-function", ["torch"], 1.2),
        ("PyTorch, as create_model returns it / OpenVINO", "torch", ["openvino"], 1.25),
        ("Keras (tf.function) / OpenVINO", "keras-function", ["openvino"], 1.25),
        ("SavedModel / OpenVINO", "savedmodel", ["openvino"], 1.25),
        (".tflite / OpenVINO (batch 1: the mobile case)", "tflite", ["openvino"], 1.25),
    ]  # fmt: skip
    lines += [
        "## The issue's targets",
        "",
        "Two ratios each: of the lowest medians (the tables below), and the median over rounds "
        "of the ratio within each round (one lucky round of either side moves the first).",
        "",
        "| ratio | target | batch 1: lowest, per round | batch 16: lowest, per round |",
        "|---|---|---|---|",
    ]
    for what, impl, references, target in targets:
        cells = []
        for b in BATCHES:
            ref = [speed[r][b] for r in references if b in speed.get(r, {})]
            low = speed[impl][b] / min(ref) if ref and b in speed.get(impl, {}) else None
            paired = paired_ratio(per_round, impl, references, b)
            cells.append(" / ".join("-" if v is None else f"{v:.2f}x" for v in (low, paired)))
        lines.append(f"| {what} | <= {target}x | " + " | ".join(cells) + " |")
    lines.append("")
    table("PyTorch", TORCH_IMPLS, "best PyTorch peer" if best_peer else "torch")
    on_cuda = [i for i in speed if i.endswith(ON_CUDA)]
    if on_cuda:
        for impl in on_cuda:
            LABELS[impl] = LABELS[impl.removesuffix(ON_CUDA)] + ", on the GPU"
        table("PyTorch on the GPU", on_cuda, on_cuda[0])
    table("Keras", KERAS_IMPLS, "kapp-function")
    table("Keras against our PyTorch model", ["keras-function", "keras-xla"], "torch")
    table("Deployed artifacts", DEPLOYED_IMPLS, "torch")
    table(
        "Against the engines deployers pick",
        [*ENGINE_IMPLS, "torch", "torch-channels_last", "keras-function", *DEPLOYED_IMPLS],
        "openvino",
    )
    if "profile" in results:
        lines += [
            "Where our PyTorch model's time goes (`benchmarks/profile_inference.py`: "
            "torch.profiler, self CPU time by operator, per forward pass):",
            "",
            "```",
            results["profile"],
            "```",
            "",
        ]
    if "profile_keras" in results:
        lines += [
            "Where our Keras model's time goes (`benchmarks/profile_keras.py`: its tf.function's "
            "graph, frozen, under a TensorFlow session's full trace, time by operator type, per "
            "forward pass):",
            "",
            "```",
            results["profile_keras"],
            "```",
            "",
        ]
    if "export" in results:
        lines += export_report(results["export"])

    conv = results["conversion"]
    lines += [
        f"## Conversion of convnext_xlarge ({conv['checkpoint_mb']:.0f} MB float32 checkpoint)",
        "",
        "| command | time | peak RSS | time / floor | RSS / checkpoint |",
        "|---|---|---|---|---|",
    ]
    for suffix in (".pth", ".safetensors"):
        floor = conv[f"floor {suffix}"]
        lines.append(
            f"| floor: read {suffix}, write the bytes with h5py | {floor['seconds']:.1f} s | "
            f"{floor['peak_mb']:.0f} MB | 1.00x | {floor['peak_mb'] / conv['checkpoint_mb']:.2f}x |"
        )
        for target in ("weights.h5", "keras"):
            run = conv[f"{suffix} -> {target}"]
            lines.append(
                f"| `convnext convert xlarge{suffix} out.{target}` | {run['seconds']:.1f} s | "
                f"{run['peak_mb']:.0f} MB | {run['seconds'] / floor['seconds']:.2f}x | "
                f"{run['peak_mb'] / conv['checkpoint_mb']:.2f}x |"
            )
    if "profile" in conv:
        lines += [
            "",
            "Where the time of the .pth -> .weights.h5 conversion goes "
            "(`benchmarks/profile_conversion.py`, one process):",
            "",
            "```",
            conv["profile"],
            "```",
        ]
    if "verify" in results:
        lines += [""] + verify_report(results["verify"])
    start = results["startup"]
    lines += ["", "## Start-up and construction", "", "| what | time | peak RSS |", "|---|---|---|"]
    for what in ("convnext --help", "convnext inspect (atto .pth)"):
        lines.append(
            f"| `{what}` | {start[what]['seconds']:.2f} s | {start[what]['peak_mb']:.0f} MB |"
        )
    for framework in ("torch", "keras"):
        for name, seconds in start[f"build ({framework})"].items():
            lines.append(f"| {framework} create_model('{name}') | {seconds:.2f} s | |")
    if "tests" in results:
        tests = results["tests"]
        lines += [
            "",
            "## The test suite",
            "",
            f"`make test`'s pytest command (2 workers): {tests['seconds']:.0f} s, "
            f"{tests['peak_mb'] / 1024:.1f} GB of memory in use at its peak above what was in use "
            f"before ({tests['summary']}).",
        ]
    return "\n".join(lines) + "\n"


SECTIONS = ("inference", "conversion", "export", "verify", "startup", "tests")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="one round; no torch.compile, slow keras.applications modes, export past "
        "convnext_base or test suite",
    )
    parser.add_argument("--report", action="store_true", help="rewrite results.md from the JSON")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=SECTIONS,
        help="run these sections alone, into the results already written",
    )
    args = parser.parse_args()
    if args.report:
        RESULTS.write_text(report(saved_results()))
        return
    rounds = 1 if args.quick else args.rounds
    sections = args.only or [s for s in SECTIONS if not (args.quick and s == "tests")]
    results = saved_results() if args.only else {}
    results["machine"] = machine()
    workdir = Path(tempfile.mkdtemp(prefix="convnext-bench-"))
    try:
        if "inference" in sections:
            say("exporting convnext_tiny (SavedModel, .tflite, ONNX) ...")
            artifacts = export_artifacts(workdir)
            results["rounds"] = rounds
            results["per_round"] = inference(rounds, artifacts, args.quick)
            say("profiling our PyTorch and Keras models ...")
            results["profile"] = profile_inference(PROFILE_INFERENCE)
            results["profile_keras"] = profile_inference(PROFILE_KERAS)
        if "conversion" in sections:
            say("conversion of convnext_xlarge ...")
            results["conversion"] = conversion(workdir)
        if "export" in sections:
            say("export and verify at every size ...")
            variants = VARIANTS[:2] if args.quick else VARIANTS
            results["export"] = export_scale(OURS, workdir, measure, say, variants)
        if "verify" in sections:
            say("verify of convnext_tiny against its floor ...")
            results["verify"] = verify_speed(OURS, workdir, ROOT, say, rounds)
        if "startup" in sections:
            say("start-up ...")
            results["startup"] = startup(workdir)
        if "tests" in sections:
            say("the test suite (make test's pytest command) ...")
            results["tests"] = test_suite()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    RESULTS_JSON.write_text(json.dumps(results, indent=1) + "\n")
    RESULTS.write_text(report(results))
    print(RESULTS.read_text())


def profile_inference(script: Path) -> str:
    """What a profiling script prints, run in a process of its own."""
    result = subprocess.run(
        [OURS, str(script)], capture_output=True, text=True, check=False, cwd=ROOT
    )
    if result.returncode != 0:
        return f"failed: {(result.stderr.strip().splitlines() or ['no output'])[-1]}"
    return result.stdout.strip()


if __name__ == "__main__":
    main()
