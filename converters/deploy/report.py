"""A verification drawn for people: a PNG of the difference along the network, and an HTML page.

Framework-free like converters.deploy.result, so that a saved result can be rendered on a
machine without torch or TensorFlow. matplotlib is imported only when a plot is drawn (it is
not a dependency of the converter), and through Figure + FigureCanvasAgg rather than pyplot,
so that drawing neither picks a GUI backend nor touches a caller's global pyplot state.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from collections.abc import Callable
from pathlib import Path

from converters.deploy.result import ImageRow, Point, Verification
from converters.files.outputs import write_text

CLIP = 1e-12  # a difference of exactly 0 is drawn here: a log axis has no 0
TOP = 0.93  # height, in axes coordinates, of the markers for points that could not be compared
MAX_LABELS = 60  # more points than this and only some tick labels are written


def shown(value: float) -> float:
    """The height a relative measure is drawn at on the log axis (NaN: not drawn)."""
    if not math.isfinite(value):
        return math.nan
    return max(value, CLIP)


def comparable(p: Point) -> bool:
    """Whether a point has a difference to draw (not a shape mismatch, not NaN or inf)."""
    return not p.note and not p.nonfinite and math.isfinite(p.max_rel)


def failure_label(p: Point) -> str:
    """The short words written at the top of the axis for a point that has no number."""
    if p.nonfinite:
        return "NaN or Inf"
    if "shape" in p.note:
        return "shapes differ"
    return "not comparable" if p.note else "not finite"


def labelled(names: list[str], first_divergence: str | None) -> list[bool]:
    """Which tick labels to write: all of them unless there are very many, but always the
    stage starts, the output and the first divergence, which are how a reader finds a place."""
    step = math.ceil(len(names) / (MAX_LABELS // 2)) if len(names) > MAX_LABELS else 1
    last = len(names) - 1
    return [
        i % step == 0 or i == last or s == first_divergence or s.startswith("downsample_layers.")
        for i, s in enumerate(names)
    ]


def plot_png(v: Verification) -> bytes:
    """The relative difference at each point along the network, against its floor and tolerance.

    A conversion bug shows as a jump: the curve follows the noise floor up to the broken layer
    and leaves it there, so that is what the plot is made to show at a glance (log scale, red
    markers out of tolerance, a line and a note at the first divergence).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    pts = [*v.points, v.output]
    fig = Figure(figsize=(10, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_yscale("log")
    draw_points(ax, pts)
    if v.points:
        draw_stages(ax, pts)
    if v.first_divergence in [p.name for p in pts]:
        draw_divergence(ax, pts, v.first_divergence)
    label_ticks(ax, pts, v.first_divergence)
    ylabel = "max |difference| / max |reference|"
    if any(0 <= x < CLIP for p in pts for x in (p.max_rel, p.floor, p.tolerance)):
        ylabel += f"\n(0 drawn at {CLIP:g})"
    ax.set_ylabel(ylabel, fontsize=9)
    ax.grid(axis="y", which="major", color="0.9")
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1), ncol=5, fontsize=8, frameon=False)
    title = v.verdict_line()
    if not v.points:
        title += "\nintermediate outputs could not be compared (a black box): only the output"
    fig.suptitle(title, fontsize=10, color="darkgreen" if v.passed else "darkred")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def draw_points(ax, pts: list[Point]) -> None:
    """The curve, its markers, and the floor and tolerance as steps (each holds for one point)."""
    n = len(pts)
    rel = [shown(p.max_rel) if comparable(p) else math.nan for p in pts]  # NaN breaks the line
    floor = [shown(p.floor) for p in pts]
    tol = [shown(p.tolerance) for p in pts]
    heights = [y for y in rel + floor + tol if math.isfinite(y)] or [CLIP]
    ax.set_ylim(min(heights) / 5, max(heights) * 50)  # room above for the markers and notes
    ax.set_xlim(-0.6, n - 0.4)

    edges = [x - 0.5 for x in range(n + 1)]
    ax.stairs(floor, edges, baseline=None, color="0.45", linewidth=1.2, label="noise floor")
    ax.stairs(
        tol,
        edges,
        baseline=None,
        color="tab:orange",
        linestyle="--",
        linewidth=1.5,
        label="tolerance",
    )
    ax.plot(range(n), rel, color="tab:blue", linewidth=1.3, zorder=3)
    good = [i for i, p in enumerate(pts) if p.ok]
    size = 18 if n > 1 else 60  # a black box has one point: make it seen
    ax.scatter(
        good, [rel[i] for i in good], s=size, color="tab:blue", zorder=4, label="max rel difference"
    )
    bad = [i for i, p in enumerate(pts) if not p.ok and comparable(p)]
    if bad:
        ax.scatter(
            bad,
            [rel[i] for i in bad],
            s=2.5 * size,
            color="red",
            edgecolors="darkred",
            zorder=5,
            label="out of tolerance",
        )
    missing = [i for i, p in enumerate(pts) if not comparable(p)]
    if missing:
        top = ax.get_xaxis_transform()  # x in data, y in axes: the top whatever the scale
        words = " / ".join(dict.fromkeys(failure_label(pts[i]) for i in missing))
        ax.scatter(
            missing,
            [TOP] * len(missing),
            transform=top,
            marker="X",
            s=70,
            color="red",
            zorder=5,
            label=words,
        )
        for i in missing:
            right = i > n / 2  # write the words on the side with room
            ax.annotate(
                failure_label(pts[i]),
                (i, TOP),
                xycoords=top,
                xytext=(-7 if right else 7, -3),
                textcoords="offset points",
                ha="right" if right else "left",
                va="top",
                color="red",
                fontsize=8,
            )


def draw_stages(ax, pts: list[Point]) -> None:
    """Where each stage starts, and the output set apart from the intermediate points."""
    for i, p in enumerate(pts):
        if p.name.startswith("downsample_layers."):
            ax.axvline(i - 0.5, color="0.8", linewidth=0.8, zorder=0)
            ax.text(
                i - 0.4,
                0.02,
                "stage " + p.name.rsplit(".", 1)[-1],
                fontsize=7,
                color="0.5",
                transform=ax.get_xaxis_transform(),
            )
    ax.axvline(len(pts) - 1.5, color="0.6", linewidth=0.8, linestyle=":", zorder=0)


def draw_divergence(ax, pts: list[Point], name: str) -> None:
    """A line at the first point out of tolerance, and a note saying by how much."""
    i = [p.name for p in pts].index(name)
    p = pts[i]
    ax.axvline(i, color="red", linewidth=1.2, linestyle=":", zorder=2)
    if comparable(p) and p.tolerance > 0:
        ratio = p.max_rel / p.tolerance
        how = f"{ratio:,.0f} x tolerance" if ratio >= 10 else f"{ratio:.2g} x tolerance"
        # in the gap it jumped across when that is wide, else just above the point
        gap = math.sqrt(shown(p.max_rel) * shown(p.tolerance))
        y, coords = (gap if ratio >= 30 else shown(p.max_rel) * 8), "data"
    else:
        how, y, coords = failure_label(p), 0.75, ax.get_xaxis_transform()
    right = i > len(pts) / 2
    ax.annotate(
        f"first divergence: {p.name}\n{how}",
        (i, y),
        xycoords=coords,
        xytext=(-8 if right else 8, 0),
        textcoords="offset points",
        ha="right" if right else "left",
        va="center",
        color="darkred",
        fontsize=9,
        fontweight="bold",
        bbox={"boxstyle": "round", "fc": "white", "ec": "red", "alpha": 0.9},
    )


def label_ticks(ax, pts: list[Point], first_divergence: str | None) -> None:
    """Point names under the axis; the divergence in bold red, stage starts in bold."""
    names = [p.name for p in pts]
    n = len(names)
    show = labelled(names, first_divergence)
    texts = [s if keep else "" for s, keep in zip(names, show, strict=True)]
    ax.set_xticks(range(n), texts, rotation=90, fontsize=8 if n <= 24 else 7 if n <= 40 else 6)
    for tick, p in zip(ax.get_xticklabels(), pts, strict=True):
        if not p.ok:
            tick.set_color("red")
        if p.name == first_divergence or p.name.startswith("downsample_layers.") or p is pts[-1]:
            tick.set_fontweight("bold")


STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; max-width: 1100px; }
h1 { font-size: 1.5em; padding: .4em .6em; color: white; }
h1.pass { background: #2e7d32; } h1.fail { background: #c62828; }
h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: .9em; }
th, td { border: 1px solid #ddd; padding: .2em .6em; text-align: left; vertical-align: top; }
td.num { text-align: right; font-family: monospace; }
tr.bad { background: #fde0e0; } tr.bad td:first-child { font-weight: bold; color: #c62828; }
.divergence { font-size: 1.15em; color: #c62828; font-weight: bold; }
img { max-width: 100%; }
"""


def e(value: object) -> str:
    """Every value goes into the page through here: file names may contain `<` or `&`."""
    return html.escape(str(value))


def text(value: str, wording: Callable[[str], str] | None) -> str:
    """Words of the result for the page: the `parameter` names in them written by `wording`
    (the command line's passes its flags: `size` -> --size), else kept as the Python names
    a library user passes, shown as code."""
    if wording is not None:
        return e(wording(value))
    return re.sub(r"`([^`<>&]+)`", r"<code>\1</code>", e(value))


def num(x: float) -> str:
    return f'<td class="num">{x:.3e}</td>'


def yes(flag: bool) -> str:
    return "<td>yes</td>" if flag else "<td><b>no</b></td>"


def row(cells: str, bad: bool = False) -> str:
    """A table row of rendered cells; a failing one is highlighted by the style above."""
    return f'<tr class="bad">{cells}</tr>' if bad else f"<tr>{cells}</tr>"


def table(rows: list[str], head: list[str] | None = None) -> str:
    top = row("".join(f"<th>{e(h)}</th>" for h in head)) if head else ""
    return "<table>\n" + "\n".join([top, *rows] if top else rows) + "\n</table>"


def mapping(d: dict) -> str:
    """A two-column table of a dict (tolerance, environment): key, then value."""
    return table([row(f"<th>{e(k)}</th><td>{e(x)}</td>") for k, x in d.items()])


def point_row(p: Point) -> str:
    cells = f"<td>{e(p.name)}</td>{num(p.max_abs)}{num(p.max_rel)}{num(p.floor)}"
    return row(cells + f"{num(p.tolerance)}{yes(p.ok)}<td>{e(p.note)}</td>", bad=not p.ok)


def image_row(r: ImageRow) -> str:
    found = r.found if r.found >= 0 else "NaN or Inf"
    cells = f"<td>{e(r.name)}</td><td>{r.expected}</td><td>{found}</td>{yes(r.agree)}"
    return row(cells + num(r.max_abs), bad=not r.agree)


def plot_html(v: Verification) -> str:
    """The plot as an embedded image, or a line saying why there is none: the page must still
    be written where matplotlib is not installed."""
    try:
        png = plot_png(v)
    except ImportError as err:
        return f"<p>No plot: {e(err)} (install matplotlib to draw one).</p>"
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="relative difference along the network" src="data:image/png;base64,{data}">'


def render_html(v: Verification, wording: Callable[[str], str] | None = None) -> str:
    """One self-contained page (nothing fetched from anywhere) that can be attached or mailed;
    `wording`: how the `parameter` names in its text are written (see text())."""
    o = v.output
    parts = [f'<h1 class="{v.verdict.lower()}">{text(v.verdict_line(), wording)}</h1>']
    if v.first_divergence:
        parts.append(f'<p class="divergence">first divergence: {e(v.first_divergence)}</p>')
    parts += [plot_html(v), "<h2>Points along the network</h2>"]
    if not v.points:
        parts.append(
            f"<p>Intermediate outputs not compared: {e(v.artifact_black_box_reason())}.</p>"
        )
    head = ["point", "max abs", "max rel", "floor", "tolerance", "ok", "note"]
    parts.append(table([point_row(p) for p in [*v.points, o]], head))

    summary = {
        "output": v.output_kind,
        "max abs": f"{o.max_abs:.3e}",
        "max rel": f"{o.max_rel:.3e}",
    }
    n = len(v.images)
    if v.top1 is not None:
        summary["top-1 agreement"] = f"{round(v.top1 * n)}/{n} ({v.top1:.1%})"
    if v.topk is not None:
        summary[f"top-{v.k} agreement"] = f"{round(v.topk * n)}/{n} ({v.topk:.1%})"
    parts += ["<h2>Output</h2>", mapping(summary)]
    if v.images:
        head = ["image", "PyTorch top-1", "artifact top-1", "agree", "max abs diff"]
        parts += ["<h2>Images</h2>", table([image_row(r) for r in v.images], head)]
    if v.notes:
        notes = "".join(f"<li>{text(x, wording)}</li>" for x in v.notes)
        parts += ["<h2>Notes</h2>", f"<ul>{notes}</ul>"]
    compared = {
        "PyTorch source": v.torch_source,
        "deployed": v.deployed,
        "artifact": v.artifact,
        "inputs": v.inputs,
        "time taken": f"{v.seconds:.1f} s",
    }
    parts += ["<h2>What was compared</h2>", mapping(compared)]
    parts += ["<h2>Tolerance</h2>", mapping(v.tolerance)]
    parts += ["<h2>Environment</h2>", mapping(v.environment)]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
        f"<title>convnext verify: {e(v.verdict_line())}</title>\n<style>{STYLE}</style></head>\n"
        "<body>\n" + "\n".join(parts) + "\n</body></html>\n"
    )


def write_report(
    result: Verification,
    path: str | Path,
    force: bool = False,
    wording: Callable[[str], str] | None = None,
) -> None:
    """`result` as one self-contained HTML page (converters.deploy.report), written atomically;
    an existing file is replaced only with `force`; `wording` as for render_html."""
    write_text(render_html(result, wording), Path(path), force)


def write_json(result: Verification, path: str | Path, force: bool = False) -> None:
    write_text(result.to_json() + "\n", Path(path), force)
