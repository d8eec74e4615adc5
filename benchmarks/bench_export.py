"""`make bench`'s export rows: `convnext export` of each size to a .tflite file and a SavedModel,
and `convnext verify` of the .tflite, each command in a process of its own: wall time and peak
resident memory, against the target of 3x the float32 checkpoint plus 1.5 GB.

The checkpoints are random (normal, std 0.02), written through the meta device so that the
writer itself stays small; each variant's files are removed before the next is written (the
largest, convnextv2_huge, takes 2.6 GB on disk three times over).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

VARIANTS = [
    "convnext_tiny",
    "convnext_base",
    "convnext_large",
    "convnext_xlarge",
    "convnextv2_huge",
]
TARGET_FACTOR, TARGET_EXTRA_MB = 3, 1536

WRITE_CHECKPOINT = (
    "import sys, torch, convnext_torch\n"
    "with torch.device('meta'): m = convnext_torch.create_model(sys.argv[1])\n"
    "m = m.to_empty(device='cpu')\n"
    "torch.manual_seed(0)\n"
    "[p.data.normal_(0, 0.02) for p in m.parameters()]\n"
    "torch.save(m.state_dict(), sys.argv[2])"
)


def target_mb(checkpoint_mb: float) -> float:
    return TARGET_FACTOR * checkpoint_mb + TARGET_EXTRA_MB


def export_scale(
    python: str,
    workdir: Path,
    measure: Callable[[list[str]], dict],
    say: Callable[[str], None],
    variants: list[str] = VARIANTS,
) -> dict:
    """variant -> {checkpoint_mb, tflite, savedmodel, verify}: each a measure() record
    (seconds, peak_mb, and code, the command's exit status)."""
    convnext = str(Path(python).with_name("convnext"))
    results = {}
    for variant in variants:
        directory = workdir / variant
        directory.mkdir()
        checkpoint = directory / f"{variant}.pth"
        subprocess.run([python, "-c", WRITE_CHECKPOINT, variant, str(checkpoint)], check=True)
        found = {"checkpoint_mb": checkpoint.stat().st_size / 2**20}
        tflite, savedmodel = directory / f"{variant}.tflite", directory / "savedmodel"
        found["tflite"] = measure([convnext, "export", str(checkpoint), str(tflite)])
        found["savedmodel"] = measure([convnext, "export", str(checkpoint), str(savedmodel)])
        if tflite.exists():
            found["verify"] = measure(
                [convnext, "verify", str(checkpoint), str(tflite), "--batch", "1"]
            )
        for what in ("tflite", "savedmodel", "verify"):
            if what in found:
                run = found[what]
                say(
                    f"{variant} {what}: {run['seconds']:.0f} s, {run['peak_mb']:.0f} MB, "
                    f"exit {run['code']}"
                )
        results[variant] = found
        shutil.rmtree(directory, ignore_errors=True)
    return results


def export_report(export: dict) -> list[str]:
    lines = [
        "## Export and verify at every size",
        "",
        "`convnext export VARIANT.pth VARIANT.tflite`, `convnext export VARIANT.pth savedmodel` "
        "and `convnext verify VARIANT.pth VARIANT.tflite --batch 1`, each a process of its own "
        "(benchmarks/bench_export.py); the target is 3x the float32 checkpoint plus 1.5 GB.",
        "",
        "| variant | checkpoint | target | .tflite: time, peak | SavedModel: time, peak "
        "| verify .tflite: time, peak |",
        "|---|---|---|---|---|---|",
    ]
    for variant, found in export.items():
        cells = []
        for what in ("tflite", "savedmodel", "verify"):
            run = found.get(what)
            if run is None:
                cells.append("-")
            elif run.get("code"):
                cells.append(f"failed (exit {run['code']}) after {run['seconds']:.0f} s")
            else:
                within = "" if run["peak_mb"] <= target_mb(found["checkpoint_mb"]) else " (over)"
                cells.append(f"{run['seconds']:.0f} s, {run['peak_mb'] / 1024:.1f} GB{within}")
        lines.append(
            f"| {variant} | {found['checkpoint_mb']:.0f} MB | "
            f"{target_mb(found['checkpoint_mb']) / 1024:.1f} GB | " + " | ".join(cells) + " |"
        )
    return [*lines, ""]
