"""Where does a foreign artifact stop agreeing? The reference's block outputs found by value
among the artifact's own tensors (Artifact.tensors, converters.deploy.artifacts).

A hand-written port, a LiteRT file from another converter, names its tensors its own way
(`stage3_block1_add`, `StatefulPartitionedCall/model/add_4`), so names cannot say which tensor
is `stages.2.1`'s output. Values can: a correct block's output is, within the float32
tolerance, the reference's, and no other tensor of its shape is. So each reference point, in
the order the model computes them, is matched to the first tensor of its shape (NCHW, or NHWC
transposed) computed after the previous point's match that agrees with it within tolerance.

- A point no tensor agrees with, followed by one that is matched, was never computed on its
  own (fused into the next operation, or a layout that never holds it): not located, and no
  fault of the artifact at float32, where an error once made is carried to the end. Under a
  tolerance as wide as a quantized artifact's, the later blocks can bring a real error back
  within it: so the nearest tensor of such a point is said, with how far it is.
- The first point no tensor agrees with and after which nothing is matched is where the
  artifact goes wrong: an error, once made, is carried forward by every later block. It is
  reported with its best match (the smallest difference among the tensors of its shape), out
  of tolerance; the points after it cannot be matched by value and are not compared.
- A point whose reference output is itself within tolerance of the previous point's (a block
  that changes nothing measurable) cannot be told apart from it by value: not located.

Nothing is guessed from position alone: every point reported was matched by its value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from converters.deploy.artifacts import Artifact
from converters.deploy.artifacts.candidates import Candidate
from converters.deploy.result import Point
from converters.errors import first_sentence

LOCATE_IMAGES = 2  # images of the first batch the artifact's every tensor is read on (memory)

# (point name, the reference's output there, the artifact's in the reference's layout, PyTorch's
# one precision away or None) -> the comparison, with the tolerance verify holds that point to
# (converters.deploy.verify.Tally)
Judge = Callable[[str, np.ndarray, np.ndarray, np.ndarray | None], Point]


@dataclass
class Location:
    """What locate found: the points matched (and the first divergence, with its best match),
    in model order, and the points it could not locate, with why."""

    points: list[Point] = field(default_factory=list)
    unlocated: list[tuple[str, str]] = field(default_factory=list)  # (point, why)
    searched: int = 0  # tensors of a plausible shape the artifact computed
    lost_after: str | None = None  # the last point located, where the next has no tensor
    # The nearest tensor of each point no tensor agrees with though a later point is matched:
    # fused away, or (under a tolerance wide enough that later blocks agree again, as a
    # quantized artifact's) an error the later points hide. Said with how far it is.
    misses: list[Point] = field(default_factory=list)

    def notes(self, images: int) -> list[str]:
        """What was located, in words, for Verification.notes."""
        total = len(self.points) + len(self.unlocated)
        located = [p for p in self.points if p.ok]
        lines = [
            f"intermediate outputs located by value among the artifact's own "
            f"{self.searched} tensors of a plausible shape, on the first {images} images: "
            f"{len(located)} of {total} points"
        ]
        why: dict[str, list[str]] = {}
        for name, reason in self.unlocated:
            why.setdefault(reason, []).append(name)
        lines += [f"not located ({reason}): {', '.join(names)}" for reason, names in why.items()]
        if self.misses:
            nearest = ", ".join(
                f"{p.name} {p.max_rel:.2e} ({p.max_rel / p.tolerance:.3g}x its tolerance)"
                for p in self.misses
            )
            lines.append(f"nearest tensor of each point no tensor agrees with: {nearest}")
        if self.lost_after is not None:
            lines.append(
                f"where it goes wrong cannot be named: after {self.lost_after}, where the next "
                "point has no tensor of its shape (a shape slip such as padding='same', or a "
                "layout that never holds it)"
            )
        return lines


@dataclass(frozen=True)
class KeptShapes:
    """Which tensor shapes can hold a reference point (a Keep): `wanted`, each a point's NCHW
    shape, NHWC, or (N, 1, 1, C) for a pooled (N, C) one. Unknown dimensions (None) in a
    shape asked about may be anything. An artifact run outside Python (TF.js in Node) is
    given `wanted` itself, to write no other tensor."""

    wanted: frozenset[tuple[int, ...]]

    def __call__(self, shape: tuple[int | None, ...]) -> bool:
        return any(
            len(shape) == len(w) and all(d is None or d == e for d, e in zip(shape, w, strict=True))
            for w in self.wanted
        )


def shapes_kept(expected: dict[str, np.ndarray]) -> KeptShapes:
    """The shapes that can hold one of `expected` (KeptShapes)."""
    wanted = set()
    for value in expected.values():
        if value.ndim == 4:
            n, c, h, w = value.shape
            wanted |= {(n, c, h, w), (n, h, w, c)}
        elif value.ndim == 2:
            n, c = value.shape
            wanted |= {(n, c), (n, 1, 1, c)}
    return KeptShapes(frozenset(wanted))


def readings(reference: np.ndarray, value: np.ndarray) -> Iterator[np.ndarray]:
    """The ways `value` can be read in the reference's layout (N, C, H, W) or (N, C)."""
    if value.shape == reference.shape:
        yield value
    if reference.ndim == 4:
        n, c, h, w = reference.shape
        if value.shape == (n, h, w, c):
            yield value.transpose(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
    elif value.shape == (reference.shape[0], 1, 1, reference.shape[1]):
        yield value.reshape(reference.shape)  # pooled with its spatial axes kept


def locate(
    expected: dict[str, np.ndarray],
    candidates: list[Candidate],
    judge: Callable[[str, np.ndarray, np.ndarray], Point],
) -> Location:
    """Match each of `expected` (the reference's points, in model order, NCHW) to one of
    `candidates` (the artifact's tensors on the same images, in the order it computes them),
    as the module docstring says; `judge(name, reference, found)` compares one (a Judge with
    the floor at that point given)."""
    location = Location(searched=len(candidates))
    matched: list[tuple[str, Point | None]] = []  # each point: its match, or its best miss
    position, previous = -1, None
    for name, reference in expected.items():
        if previous is not None and previous.shape == reference.shape:
            if judge(name, reference, previous).ok:
                matched.append((name, None))
                location.unlocated.append(
                    (name, "its PyTorch output is within tolerance of the previous point's")
                )
                previous = reference
                continue
        previous = reference
        found, best = None, None
        for candidate in candidates:
            if candidate.position <= position:
                continue
            for value in readings(reference, candidate.value):
                point = judge(name, reference, value)
                point.source = candidate.name
                if point.ok:
                    found = (candidate, point)
                    break
                if best is None or np.isnan(best.max_rel) or point.max_rel < best.max_rel:
                    best = point  # the smallest difference; a NaN only when nothing else
            if found:
                break
        if found:
            position = found[0].position
            matched.append((name, found[1]))
        else:
            matched.append((name, best))
            if best is None:
                location.unlocated.append((name, "no tensor of its shape after the previous"))
    last = max((i for i, (_, p) in enumerate(matched) if p is not None and p.ok), default=-1)
    # After the last match, the first point may lack any tensor of its shape: a shape slip
    # (padding="same") or a layout that never holds it; which, its value cannot say.
    unnamed = last + 1 < len(matched) and matched[last + 1][1] is None
    if unnamed:
        location.lost_after = matched[last][0] if last >= 0 else "the input"
    diverged = False
    for i, (name, point) in enumerate(matched):
        if point is None:
            continue
        if point.ok:
            location.points.append(point)
        elif i < last:
            location.unlocated.append((name, "no tensor agrees with it, though later points do"))
            location.misses.append(point)
        elif unnamed:
            location.unlocated.append(
                (name, "after a point that could not be located, nothing is matched by value")
            )
        elif not diverged:
            diverged = True
            point.source = f"best of its shape: {point.source}"
            location.points.append(point)
        else:
            location.unlocated.append(
                (name, "after the first divergence, nothing can be matched by value")
            )
    order = list(expected)
    location.unlocated.sort(key=lambda item: order.index(item[0]))
    return location


def locate_points(
    artifact: Artifact,
    given: np.ndarray,
    expected: dict[str, np.ndarray],
    floor: dict[str, np.ndarray],
    judge: Judge,
) -> Location:
    """locate() on the first LOCATE_IMAGES images of a batch: `given` as the artifact takes
    it, `expected` the reference's points on it (NCHW), `floor` PyTorch's one precision away
    on at least as many. An artifact whose tensors cannot be read is said to be so, point by
    point: the verdict on its output stands without them."""
    k = artifact.batch or min(LOCATE_IMAGES, len(given))  # a fixed batch takes no other
    wanted = {name: value[:k] for name, value in expected.items()}
    floors = {name: value[:k] for name, value in floor.items()}

    def judged(name: str, reference: np.ndarray, found: np.ndarray) -> Point:
        return judge(name, reference, found, floors.get(name))

    try:
        candidates = artifact.tensors(given[:k], shapes_kept(wanted))
    except Exception as e:  # noqa: BLE001 - TensorFlow and LiteRT raise many types
        why = f"its tensors could not be read: {first_sentence(e)[:120]}"
        return Location(unlocated=[(name, why) for name in wanted])
    return locate(wanted, candidates, judged)
