"""What `convnext verify` found: the result object, its text form and its JSON form.

Framework-free (numpy is not even needed), so that a report can be read back and rendered
without TensorFlow or torch; converters.deploy.verify computes it, converters.deploy.report
draws it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field

from converters.errors import printable


@dataclass
class Point:
    """One named output compared: the deployed artifact against the PyTorch model.

    max_rel is max_abs divided by the largest absolute value of the reference there; floor is
    the same measure for PyTorch against itself one precision away (float32 against float64;
    quantized weights against float32) on the same inputs: the error any correct
    implementation makes. The point passes when max_abs <= atol + tolerance * that largest
    value.
    """

    name: str  # `stages.2.5` (after a block), `downsample_layers.0` (the stem), `head`, `logits`
    max_abs: float
    max_rel: float
    floor: float  # relative noise floor
    tolerance: float  # relative tolerance (factor x floor, or --rtol)
    atol: float = 0.0
    scale: float = 1.0  # the largest absolute reference value
    note: str = ""  # why it cannot be compared, e.g. "shape (2, 8, 16, 17) vs (2, 8, 15, 16)"
    nonfinite: int = 0  # images where the artifact gives NaN or Inf here (PyTorch is finite)
    source: str = ""  # a foreign artifact's own name for the tensor compared (located by value)

    @property
    def ok(self) -> bool:
        if self.note or self.nonfinite:
            return False
        if not all(map(math.isfinite, (self.max_abs, self.atol, self.tolerance, self.scale))):
            return False  # a NaN compares False, but an infinite tolerance would pass anything
        return bool(self.max_abs <= self.atol + self.tolerance * self.scale)  # False for NaN


@dataclass
class ImageRow:
    """One input image: its name and the top-1 class of each side."""

    name: str  # the file name, or `random 3`
    expected: int  # PyTorch's top-1 class
    found: int  # the artifact's (-1: its output holds NaN or Inf)
    max_abs: float  # largest output difference on this image

    @property
    def agree(self) -> bool:
        return self.expected == self.found


class Stopwatch:
    """Seconds per stage of a verify, in the order the stages first ran: where its time goes
    (Verification.timings, in the JSON; `make bench` tabulates them). A stage met again (each
    batch's reference pass) adds to its total."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.last = time.perf_counter()

    def lap(self, stage: str) -> None:
        """`stage` took the time since the previous lap (or since the stopwatch started)."""
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - self.last
        self.last = now


@dataclass
class Verification:
    """The result of converters.deploy.verify.verify: a verdict and the evidence for it."""

    passed: bool
    torch_source: str
    deployed: str
    artifact: str  # what DEPLOYED was found to be, in words
    inputs: str  # what the two sides were given, in words
    output_kind: str  # logits, probabilities or features
    output: Point  # the final output (logits, probabilities, features)
    points: list[Point]  # every block and stage, in order; empty for a black box
    first_divergence: str | None  # the first point (or the output) out of tolerance
    top1: float | None  # fraction of images with the same top-1 class (None: features)
    topk: float | None  # fraction with the same top-k set
    k: int  # 5, or fewer classes
    images: list[ImageRow]
    tolerance: dict  # rtol, atol, factor, floor, precision, how (derived / given)
    environment: dict[str, str]  # versions, oneDNN, threads, device, TF32
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    caveat: str = ""  # on a PASS: the slips a wide tolerance cannot see (deploy.hints)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage (Stopwatch)

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else "FAIL"

    @property
    def localised(self) -> bool:
        """Whether intermediate outputs were compared (not a black box)."""
        return bool(self.points)

    def verdict_line(self) -> str:
        t = self.tolerance
        how = (
            f"{t['factor']:g} x the {t['precision']} noise floor {t['floor']:.2e}"
            if t["how"] == "derived"
            else "given"
        )
        atol = f", atol {t['atol']:.2e}" if t["atol"] else ""
        caveat = f"; {self.caveat}" if self.passed and self.caveat else ""
        return (
            f"{self.verdict}: {self.output_kind} max rel {self.output.max_rel:.2e} "
            f"(tolerance {t['rtol']:.2e}{atol}: {how}){caveat}"
        )

    def format(self) -> str:
        """The text the command line prints."""
        lines = [f"artifact:      {self.artifact}", f"inputs:        {self.inputs}"]
        lines += [f"{k + ':':<15}{v}" for k, v in self.environment.items()]
        if self.points:
            lines.append("")
            lines.append(f"{'':<22}{'max abs':>11}{'max rel':>11}{'floor':>11}{'tolerance':>11}")
            for p in self.points:
                flag = "" if p.ok else "  <- " + (p.note or "out of tolerance")
                source = f"  [{p.source}]" if p.source else ""  # where it was located
                lines.append(
                    f"{p.name:<22}{p.max_abs:>11.2e}{p.max_rel:>11.2e}{p.floor:>11.2e}"
                    f"{p.tolerance:>11.2e}{flag}{source}"
                )
        else:
            lines.append(f"intermediate:  not compared ({self.artifact_black_box_reason()})")
        lines.append("")
        o = self.output
        lines.append(f"{self.output_kind}: max abs {o.max_abs:.3e}, max rel {o.max_rel:.3e}")
        if self.top1 is not None:
            n = len(self.images)
            lines.append(
                f"top-1 agreement: {round(self.top1 * n)}/{n}, "
                f"top-{self.k} agreement: {round(self.topk * n)}/{n}"
            )
        lines += [f"note: {note}" for note in self.notes]
        if self.tolerance.get("floor_images") is not None and self.tolerance["how"] == "derived":
            lines.append(
                f"noise floor: PyTorch one precision away, on {self.tolerance['floor_images']} "
                f"of the {len(self.images) or 'given'} images"
            )
        if self.first_divergence:
            lines.append(f"first divergence: {self.first_divergence}")
        lines.append(self.verdict_line())
        return "\n".join(map(printable, lines))  # a name from a file cannot start a line

    def artifact_black_box_reason(self) -> str:
        return "a black box: only its outputs can be compared"

    def to_dict(self) -> dict:
        """Plain data for JSON: every field, with NaN and infinities as strings."""
        data = dataclasses.asdict(self)
        data["verdict"] = self.verdict
        for row in [data["output"], *data["points"]]:
            row["ok"] = Point(**{k: row[k] for k in Point.__dataclass_fields__}).ok
        return finite(data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def finite(value):
    """JSON has no NaN or Infinity: write them as the strings Python prints."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value
