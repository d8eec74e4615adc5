"""converters.deploy.locate on made-up tensors (numpy only, no model): what is matched, what
is said not to be located and why, and that nothing is guessed. The end-to-end tests on a
hand-written port's SavedModel, .tflite and Keras model are in test_verify.py (section 3)."""

from __future__ import annotations

import numpy as np

from converters.deploy.artifacts.candidates import Candidate
from converters.deploy.locate import locate
from converters.deploy.result import Point

RNG = np.random.default_rng(7)
# Three points of one shape (N, C, H, W) = (2, 4, 3, 5), then a pooled (N, C) one.
EXPECTED = {
    "stages.0.0": RNG.standard_normal((2, 4, 3, 5)),
    "stages.0.1": RNG.standard_normal((2, 4, 3, 5)),
    "stages.0.2": RNG.standard_normal((2, 4, 3, 5)),
    "norm": RNG.standard_normal((2, 4)),
}


def judge(name: str, reference: np.ndarray, found: np.ndarray) -> Point:
    """Within 1e-6 relative, as a float32 tolerance would be."""
    scale = float(np.abs(reference).max())
    diff = float(np.abs(found - reference).max())
    return Point(name, diff, diff / scale, 1e-7, 1e-6, scale=scale)


def nhwc(value: np.ndarray, noise: float = 1e-8) -> np.ndarray:
    """The artifact's copy of a point, channels last, with float32-sized noise."""
    return value.transpose(0, 2, 3, 1) + noise * RNG.standard_normal(
        value.transpose(0, 2, 3, 1).shape
    )


def decoy() -> np.ndarray:
    """A tensor of a block's shape that is no point's output (inside a block)."""
    return RNG.standard_normal((2, 3, 5, 4))


def test_every_point_found_by_value_whatever_its_name_and_layout():
    candidates = [
        Candidate("dw", 0, decoy()),
        Candidate("add", 1, nhwc(EXPECTED["stages.0.0"])),
        Candidate("dw_1", 2, decoy()),
        Candidate("add_1", 3, nhwc(EXPECTED["stages.0.1"])),
        Candidate("add_2", 4, EXPECTED["stages.0.2"].copy()),  # NCHW here
        Candidate("ln", 5, EXPECTED["norm"].reshape(2, 1, 1, 4)),  # pooled, dims kept
    ]
    location = locate(EXPECTED, candidates, judge)
    assert [(p.name, p.source, p.ok) for p in location.points] == [
        ("stages.0.0", "add", True),
        ("stages.0.1", "add_1", True),
        ("stages.0.2", "add_2", True),
        ("norm", "ln", True),
    ]
    assert location.unlocated == []


def test_a_point_never_computed_on_its_own_is_not_located_and_not_a_divergence():
    """stages.0.1's output is fused away: no tensor agrees with it, but stages.0.2's does,
    so the artifact went right through it: said so, not called the divergence."""
    candidates = [
        Candidate("add", 1, nhwc(EXPECTED["stages.0.0"])),
        Candidate("fused", 3, decoy()),
        Candidate("add_2", 4, nhwc(EXPECTED["stages.0.2"])),
        Candidate("ln", 5, EXPECTED["norm"].copy()),
    ]
    location = locate(EXPECTED, candidates, judge)
    assert [p.name for p in location.points] == ["stages.0.0", "stages.0.2", "norm"]
    assert all(p.ok for p in location.points)
    assert location.unlocated == [
        ("stages.0.1", "no tensor agrees with it, though later points do")
    ]


def test_a_point_no_tensor_agrees_with_keeps_its_nearest_tensor_and_how_far():
    """Under a wide tolerance, later blocks can agree again after a real error: the point is
    not located, as a fused one is, but its nearest tensor is kept (misses) and said."""
    near = nhwc(EXPECTED["stages.0.1"]) * (1 + 3e-6)  # 3x the 1e-6 tolerance
    candidates = [
        Candidate("add", 1, nhwc(EXPECTED["stages.0.0"])),
        Candidate("add_1", 3, near),
        Candidate("add_2", 4, nhwc(EXPECTED["stages.0.2"])),
        Candidate("ln", 5, EXPECTED["norm"].copy()),
    ]
    location = locate(EXPECTED, candidates, judge)
    assert [(p.name, p.source) for p in location.misses] == [("stages.0.1", "add_1")]
    assert 2 < location.misses[0].max_rel / location.misses[0].tolerance < 4
    assert any("nearest tensor" in line and "stages.0.1" in line for line in location.notes(2))


def test_a_broken_block_is_the_first_divergence_and_nothing_after_it_is_guessed():
    broken = EXPECTED["stages.0.1"] + 1e-2
    candidates = [
        Candidate("add", 1, nhwc(EXPECTED["stages.0.0"])),
        Candidate("add_1", 3, nhwc(broken)),
        Candidate("add_2", 4, nhwc(EXPECTED["stages.0.2"] + 1e-2)),
        Candidate("ln", 5, EXPECTED["norm"] + 1e-2),
    ]
    location = locate(EXPECTED, candidates, judge)
    assert [(p.name, p.ok) for p in location.points] == [
        ("stages.0.0", True),
        ("stages.0.1", False),
    ]
    assert location.points[-1].source == "best of its shape: add_1"
    assert [name for name, _ in location.unlocated] == ["stages.0.2", "norm"]


def test_order_a_point_matches_only_a_tensor_computed_after_the_previous_match():
    """stages.0.1's value appears only before stages.0.0's match: it is not taken."""
    candidates = [
        Candidate("early", 0, nhwc(EXPECTED["stages.0.1"])),
        Candidate("add", 1, nhwc(EXPECTED["stages.0.0"])),
    ]
    location = locate(EXPECTED, candidates, judge)
    assert [p.name for p in location.points if p.ok] == ["stages.0.0"]
    assert "stages.0.1" not in [p.name for p in location.points if p.ok]


def test_a_block_that_changes_nothing_measurable_is_not_located():
    """With stages.0.1's PyTorch output within tolerance of stages.0.0's (a layer scale of
    1e-6, as a freshly initialised model has), a value cannot tell the two apart."""
    expected = dict(EXPECTED, **{"stages.0.1": EXPECTED["stages.0.0"] * (1 + 1e-9)})
    candidates = [
        Candidate("add", 1, nhwc(EXPECTED["stages.0.0"])),
        Candidate("add_1", 3, nhwc(expected["stages.0.1"])),
        Candidate("add_2", 4, nhwc(EXPECTED["stages.0.2"])),
        Candidate("ln", 5, EXPECTED["norm"].copy()),
    ]
    location = locate(expected, candidates, judge)
    assert [p.name for p in location.points] == ["stages.0.0", "stages.0.2", "norm"]
    assert location.unlocated == [
        ("stages.0.1", "its PyTorch output is within tolerance of the previous point's")
    ]
