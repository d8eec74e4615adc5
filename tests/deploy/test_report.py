"""converters.deploy.report on synthetic results: the page is self-contained and escaped, the
plot is a PNG whatever the numbers (0, inf, a black box), and the JSON beside it stays valid.

No torch or TensorFlow here: a report must render from a result alone.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from converters.deploy import report
from converters.deploy.report import labelled, plot_png, render_html
from converters.deploy.result import ImageRow, Point, Verification

pytest.importorskip("matplotlib")
Image = pytest.importorskip("PIL.Image")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TOLERANCE = {
    "rtol": 1e-5,
    "atol": 0.0,
    "factor": 10.0,
    "floor": 1e-6,
    "precision": "float32",
    "how": "derived",
}


def names(depths: tuple[int, ...]) -> list[str]:
    """The point names of a ConvNeXt with these stage depths, in order, up to `head`."""
    out = []
    for stage, depth in enumerate(depths):
        out.append(f"downsample_layers.{stage}")
        out += [f"stages.{stage}.{block}" for block in range(depth)]
    return [*out, "head"]


def points(depths: tuple[int, ...], jump_at: str | None, size: float = 1e-2) -> list[Point]:
    """Points that follow a slowly growing float32 floor, then jump to `size` at `jump_at` and
    stay there, as a conversion bug does (an error, once made, is carried forward)."""
    out, jumped = [], False
    for i, name in enumerate(names(depths)):
        floor = 1e-7 * (1.1**i)
        jumped = jumped or name == jump_at
        rel = size * (1 + 0.1 * (i % 3)) if jumped else floor * (1.2 + 0.6 * (i % 4) / 3)
        out.append(
            Point(
                name, max_abs=rel * 5.0, max_rel=rel, floor=floor, tolerance=10 * floor, scale=5.0
            )
        )
    return out


def verification(pts: list[Point], output: Point, **changes) -> Verification:
    bad = [p.name for p in [*pts, output] if not p.ok]
    fields = {
        "passed": not bad,
        "torch_source": "convnext_tiny_<1k>.pth",
        "deployed": "exported/<saved & model>",
        "artifact": "a SavedModel with a serving signature",
        "inputs": "3 images at 224x224, ImageNet normalisation",
        "output_kind": "logits",
        "output": output,
        "points": pts,
        "first_divergence": bad[0] if bad else None,
        "top1": 2 / 3,
        "topk": 1.0,
        "k": 5,
        "images": [
            ImageRow("cat<1>.jpg", 281, 281, 1e-3),
            ImageRow("dog & co.png", 207, 208, 0.4),
            ImageRow("random 3", 5, 5, 0.0),
        ],
        "tolerance": dict(TOLERANCE),
        "environment": {"torch": "2.13.0", "tensorflow": "2.20.0", "oneDNN": "on", "threads": "2"},
        "notes": ["oneDNN <fused ops> were on"],
        "seconds": 12.34,
    }
    fields.update(changes)
    return Verification(**fields)


def localised_fail(depths: tuple[int, ...] = (2, 2, 2, 1)) -> Verification:
    """A localised FAIL: 12 points, in tolerance up to stages.1.0, then far out."""
    pts = points(depths, "stages.1.0")
    out = Point("logits", max_abs=0.4, max_rel=3e-2, floor=3e-7, tolerance=3e-6, scale=12.0)
    return verification(pts, out)


def shape_mismatch() -> Verification:
    pts = points((2, 2, 2, 1), None)
    pts[4] = Point(
        "stages.1.0",
        math.inf,
        math.inf,
        pts[4].floor,
        pts[4].tolerance,
        note="shape (2, 8, 16, 17) vs (2, 8, 15, 16)",
    )
    out = Point("logits", math.nan, math.nan, 3e-7, 3e-6, note="shape (2, 10) vs (2, 1000)")
    return verification(pts, out, top1=None, topk=None)


def black_box_pass() -> Verification:
    out = Point("logits", max_abs=2e-6, max_rel=2e-7, floor=1e-7, tolerance=1e-6, scale=10.0)
    return verification([], out, top1=1.0, topk=1.0, images=[ImageRow("a.jpg", 1, 1, 2e-6)])


def exact_zero() -> Verification:
    """A point with no difference at all (max_abs 0): the log scale must not break."""
    pts = points((1, 1, 1, 1), None)
    pts[1] = Point(pts[1].name, 0.0, 0.0, pts[1].floor, pts[1].tolerance, scale=5.0)
    out = Point("logits", 0.0, 0.0, 0.0, 1e-6, scale=10.0)
    return verification(pts, out)


CASES = {
    "localised fail": localised_fail,
    "long network": lambda: localised_fail((3, 3, 27, 3)),
    "shape mismatch": shape_mismatch,
    "black box": black_box_pass,
    "exact zero": exact_zero,
}


def decoded_png(page: str) -> bytes:
    found = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(found) == 1
    return base64.b64decode(found[0], validate=True)


def check_png(png: bytes) -> None:
    assert png.startswith(PNG_SIGNATURE)
    with Image.open(io.BytesIO(png)) as image:
        image.verify()
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG"
        assert image.size == (1000, 450)  # 10 x 4.5 inches at 100 dpi


@pytest.mark.parametrize("case", CASES)
def test_plot_is_a_png(case):
    check_png(plot_png(CASES[case]()))


@pytest.mark.parametrize("case", CASES)
def test_page_is_self_contained(case):
    v = CASES[case]()
    page = render_html(v)
    check_png(decoded_png(page))
    without_image = re.sub(r'src="data:image/png;base64,[^"]*"', "", page)
    assert "http://" not in without_image and "https://" not in without_image
    assert "src=" not in without_image and "href=" not in without_image
    assert "url(" not in without_image and "@import" not in without_image


@pytest.mark.parametrize("case", CASES)
def test_page_says_the_verdict(case):
    v = CASES[case]()
    page = render_html(v)
    assert html.escape(v.verdict_line()) in page
    assert f'class="{v.verdict.lower()}"' in page
    if v.first_divergence:
        assert f"first divergence: {v.first_divergence}" in page
    else:
        assert "first divergence" not in page
    for p in v.points:
        assert f"<td>{p.name}</td>" in page
    assert page.count('<tr class="bad') == sum(not p.ok for p in [*v.points, v.output]) + sum(
        not r.agree for r in v.images
    )


def test_page_escapes_names():
    page = render_html(localised_fail())
    for raw in [
        "cat<1>.jpg",
        "dog & co.png",
        "convnext_tiny_<1k>.pth",
        "<saved & model>",
        "<fused ops>",
    ]:
        assert raw not in page
    assert "cat&lt;1&gt;.jpg" in page and "dog &amp; co.png" in page
    assert "exported/&lt;saved &amp; model&gt;" in page


def test_page_has_every_section():
    page = render_html(localised_fail())
    for text in [
        "top-1 agreement",
        "2/3",
        "top-5 agreement",
        "3/3",
        "12.3 s",
        "oneDNN",
        "rtol",
        "derived",
        "a SavedModel",
        "3 images at 224x224",
        "PyTorch top-1",
        "208",
    ]:
        assert text in page
    features = render_html(shape_mismatch())
    assert "top-1 agreement" not in features
    assert "shape (2, 8, 16, 17) vs (2, 8, 15, 16)" in features


def test_black_box_page_says_so():
    page = render_html(black_box_pass())
    assert "Intermediate outputs not compared" in page
    assert "PASS" in page and 'class="pass"' in page


@pytest.mark.parametrize("case", CASES)
def test_json_is_strict(case):
    def refuse(constant):
        raise AssertionError(f"{constant} in JSON")

    data = json.loads(CASES[case]().to_json(), parse_constant=refuse)
    assert data["verdict"] in ("PASS", "FAIL")


def test_page_without_matplotlib(monkeypatch):
    """Where matplotlib is missing the page is still written, and says why it has no plot."""

    def missing(v):
        raise ImportError("No module named 'matplotlib'")

    monkeypatch.setattr(report, "plot_png", missing)
    page = render_html(localised_fail())
    assert "No plot" in page and "data:image" not in page and "stages.1.0" in page


def test_many_points_keep_their_landmarks():
    all_names = [*names((3, 3, 81, 3)), "logits"]
    shown = labelled(all_names, "stages.2.40")
    kept = [n for n, keep in zip(all_names, shown, strict=True) if keep]
    assert len(kept) < 60
    assert "stages.2.40" in kept and "logits" in kept
    assert all(f"downsample_layers.{i}" in kept for i in range(4))
    assert all(labelled(all_names[:40], None))  # 40 points: every one labelled


def test_report_imports_no_framework():
    """converters.deploy.report loads where neither torch nor TensorFlow is installed, and draws
    without pyplot (which would pick a backend and keep global state)."""
    code = (
        "import sys, converters.deploy.report as r\n"
        "bad = {'torch', 'tensorflow', 'keras', 'matplotlib'} & set(sys.modules)\n"
        "assert not bad, bad\n"
        "from tests.deploy.test_report import localised_fail\n"
        "r.render_html(localised_fail())\n"
        "bad = {'torch', 'tensorflow', 'keras', 'matplotlib.pyplot'} & set(sys.modules)\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])
