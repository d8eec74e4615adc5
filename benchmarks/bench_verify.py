"""`make bench`'s verify rows: how long `convnext verify` of a convnext_tiny .tflite file and
SavedModel takes, against its floor (benchmarks/verify_floor.py: one process that imports
what the artifact needs and runs the three forward passes, nothing else), and where the time
goes, stage by stage (the `timings` of verify's JSON; start-up is the rest of the wall time:
the interpreter, the imports, and the exit).

Each command runs in a process of its own, interleaved with its floor over the rounds; each
figure is the lowest of the rounds (a shared machine only ever adds time).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

FLOOR = Path(__file__).with_name("verify_floor.py")
VARIANT = "convnext_tiny"
TARGET = 1.5  # the whole verify within 1.5x its floor

WRITE_CHECKPOINT = (
    "import sys, torch, convnext_torch\n"
    "torch.manual_seed(0)\n"
    "m = convnext_torch.create_model(sys.argv[1])\n"
    "[p.data.normal_(0, 0.02) for p in m.parameters()]\n"
    "torch.save(m.state_dict(), sys.argv[2])"
)


def wall(command: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=cwd)
    return time.perf_counter() - start, done


def verify_speed(
    python: str, workdir: Path, root: Path, say: Callable[[str], None], rounds: int
) -> dict:
    """kind -> {verify_s, floor_s, ratio, stages: {stage: seconds}, verdict}, or {error}."""
    convnext = str(Path(python).with_name("convnext"))
    checkpoint = workdir / f"{VARIANT}-verify.pth"
    subprocess.run([python, "-c", WRITE_CHECKPOINT, VARIANT, str(checkpoint)], check=True, cwd=root)
    results = {}
    for kind, name in (("tflite", "verify.tflite"), ("savedmodel", "verify_savedmodel")):
        artifact = workdir / name
        made = subprocess.run(
            [convnext, "export", str(checkpoint), str(artifact)], capture_output=True, text=True
        )
        if made.returncode != 0:
            results[kind] = {"error": (made.stderr.strip().splitlines() or ["?"])[-1]}
            say(f"verify {kind}: export failed")
            continue
        report = workdir / f"{kind}.json"
        verify = [convnext, "verify", str(checkpoint), str(artifact), "--json", str(report)]
        verify.append("--force")
        best: dict = {}
        for _ in range(rounds):
            seconds, done = wall(verify, root)
            data = json.loads(report.read_text()) if done.returncode in (0, 1) else {}
            floor_images = str(data.get("tolerance", {}).get("floor_images", 2))
            floor_seconds, floor = wall(
                [python, str(FLOOR), str(checkpoint), str(artifact), VARIANT, floor_images], root
            )
            if done.returncode != 0 or floor.returncode != 0:
                best = {"error": (done.stderr + floor.stderr).strip()[-300:]}
                break
            if seconds < best.get("verify_s", float("inf")):
                best.update(verify_s=seconds, stages=data["timings"], inside=data["seconds"])
            best["floor_s"] = min(floor_seconds, best.get("floor_s", float("inf")))
        if "verify_s" in best:
            best["ratio"] = best["verify_s"] / best["floor_s"]
            say(
                f"verify {kind}: {best['verify_s']:.1f} s, floor {best['floor_s']:.1f} s, "
                f"{best['ratio']:.2f}x"
            )
        results[kind] = best
    return results


def verify_report(speed: dict) -> list[str]:
    lines = [
        "## Verify in seconds",
        "",
        f"`convnext verify {VARIANT}.pth ARTIFACT --json out.json` (4 random images at 224, "
        f"random weights), against its floor (`benchmarks/verify_floor.py`: imports, loading, "
        f"the three forward passes and nothing else). Target: within {TARGET}x the floor.",
        "",
        "| artifact | verify | floor | ratio | target |",
        "|---|---|---|---|---|",
    ]
    for kind, row in speed.items():
        if "error" in row:
            lines.append(f"| {kind} | failed: {row['error']} | | | |")
            continue
        met = "met" if row["ratio"] <= TARGET else "missed"
        lines.append(
            f"| {kind} | {row['verify_s']:.1f} s | {row['floor_s']:.1f} s | "
            f"{row['ratio']:.2f}x | {met} |"
        )
    kinds = [k for k, row in speed.items() if "stages" in row]
    if kinds:
        lines += ["", "Where the time goes (seconds; the fastest run of each):", ""]
        lines += ["| stage | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds)]
        stages = list(dict.fromkeys(s for k in kinds for s in speed[k]["stages"]))
        start = {k: speed[k]["verify_s"] - speed[k]["inside"] for k in kinds}
        lines.append(
            "| start-up (interpreter, imports, exit) | "
            + " | ".join(f"{start[k]:.2f}" for k in kinds)
            + " |"
        )
        for stage in stages:
            cells = [f"{speed[k]['stages'].get(stage, 0.0):.2f}" for k in kinds]
            lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    return lines


if __name__ == "__main__":  # alone: python benchmarks/bench_verify.py
    import tempfile

    with tempfile.TemporaryDirectory(prefix="convnext-verify-") as directory:
        found = verify_speed(sys.executable, Path(directory), Path.cwd(), print, rounds=3)
    print("\n".join(verify_report(found)))
