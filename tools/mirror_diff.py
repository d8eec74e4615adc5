"""convnext_torch/model.py beside convnext_tf/model.py (`make diff`), fitted to the terminal.

The two files have the same classes, names and order: each top-level class and function of the
PyTorch file, in order, beside its Keras twin, side by side on terminals of 120 columns or more
(long lines wrapped, not cut), else as a unified diff. Keras-only bookkeeping (build, get_config,
functions only the Keras file has) and PyTorch's _init_weights are listed at the end instead.

    python tools/mirror_diff.py [--unified | --side-by-side] [--width N]
"""

from __future__ import annotations

import argparse
import ast
import difflib
import os
import re
import shutil
import sys
import textwrap
from itertools import zip_longest
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TORCH_FILE = Path("convnext_torch/model.py")
KERAS_FILE = Path("convnext_tf/model.py")
LEFT_OUT_METHODS = {"build", "get_config", "_init_weights"}  # Keras-only, PyTorch-only


def definitions(path: Path) -> tuple[dict[str, tuple[int, list[str]]], list[str]]:
    """Top-level class or function name -> (its first line, its source lines without
    decorators and left-out methods), in file order; and "name (line)" per left-out method."""
    lines = (ROOT / path).read_text().splitlines()
    found, left_out = {}, []
    for node in ast.parse("\n".join(lines)).body:
        if not isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            continue
        drop = set()
        for method in node.body if isinstance(node, ast.ClassDef) else []:
            if isinstance(method, ast.FunctionDef) and method.name in LEFT_OUT_METHODS:
                start = min([method.lineno] + [d.lineno for d in method.decorator_list])
                end = method.end_lineno
                end += end < len(lines) and not lines[end].strip()  # and its blank line
                drop.update(range(start, end + 1))
                left_out.append(f"{node.name}.{method.name} ({start})")
        span = range(node.lineno, node.end_lineno + 1)
        kept = [lines[i - 1] for i in span if i not in drop]
        while kept and not kept[-1].strip():  # a left-out last method's blank line
            kept.pop()
        found[node.name] = (node.lineno, kept)
    return found, left_out


def wrap(line: str, width: int) -> list[str]:
    """Rows of at most `width` characters, broken between words, continued 4 spaces deeper."""
    indent = " " * min(len(line) - len(line.lstrip()) + 4, width // 2)
    return textwrap.wrap(line, width, subsequent_indent=indent, break_on_hyphens=False) or [""]


def key(line: str) -> str:
    """What a changed line is paired by: the name it assigns (`self.dwconv = ...` -> dwconv) or
    defines (`def forward` -> call, its Keras name), or else the line itself."""
    match = re.match(r"\s*(?:self\.)?([\w.]+)\s*=[^=]|\s*def (\w+)", line)
    if not match:
        return line.strip()
    return match.group(1) or {"forward": "call"}.get(match.group(2), match.group(2))


def rows(left: list[str], right: list[str], by=None) -> list[tuple[str | None, str | None]]:
    """The lines of both sides paired: equal lines, then the changed ones paired by key."""
    a, b = (left, right) if by is None else (list(map(by, left)), list(map(by, right)))
    junk = re.compile(r"\s*[)\]}],?").fullmatch  # a closing bracket is no anchor
    out = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(junk, a, b, False).get_opcodes():
        if tag == "replace" and by is None:
            out += rows(left[i1:i2], right[j1:j2], by=key)
            continue
        for k in range(max(i2 - i1, j2 - j1)):
            out.append(
                (left[i1 + k] if i1 + k < i2 else None, right[j1 + k] if j1 + k < j2 else None)
            )
    return out


def side_by_side(left: list[str], right: list[str], width: int) -> list[str]:
    """Two columns and a mark between them: | changed, < PyTorch only, > Keras only."""
    column = (width - 3) // 2
    out = []
    for a, b in rows(left, right):
        mark = " " if a == b else "<" if b is None else ">" if a is None else "|"
        wrapped = zip_longest(wrap(a or "", column), wrap(b or "", column), fillvalue="")
        for n, (a_row, b_row) in enumerate(wrapped):
            out.append(f"{a_row:<{column}} {mark if n == 0 else ' '} {b_row}".rstrip())
    return out


def terminal_width() -> int:
    """COLUMNS, else the terminal of stdout, stderr or stdin (stdout is a pipe under `less`)."""
    if os.environ.get("COLUMNS", "").isdigit():
        return int(os.environ["COLUMNS"])
    for stream in (sys.stdout, sys.stderr, sys.stdin):
        try:
            return os.get_terminal_size(stream.fileno()).columns
        except (AttributeError, OSError, ValueError):
            continue
    return shutil.get_terminal_size().columns


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--unified", action="store_true", help="a unified diff per pair")
    mode.add_argument("--side-by-side", action="store_true", help="two columns per pair")
    parser.add_argument("--width", type=int, help="columns (default: the terminal's)")
    args = parser.parse_args(argv)
    width = max(args.width or terminal_width(), 40)
    side = args.side_by_side or (not args.unified and width >= 120)

    torch_defs, torch_left_out = definitions(TORCH_FILE)
    keras_defs, keras_left_out = definitions(KERAS_FILE)
    out = []
    for name, (torch_line, left) in torch_defs.items():
        keras_line, right = keras_defs.get(name, (0, []))
        title = f"== {name}: {TORCH_FILE}:{torch_line} | {KERAS_FILE}:{keras_line} "
        out.append(title + "=" * max(0, width - len(title)))
        if side:
            out += side_by_side(left, right, width)
        else:
            diff = list(difflib.unified_diff(left, right, lineterm=""))[2:]  # no ---/+++
            out += [row for line in diff for row in wrap(line, width)] or ["(the same)"]
        out.append("")
    keras_only = [f"{n} ({line})" for n, (line, _) in keras_defs.items() if n not in torch_defs]
    notes = [
        f"Left out, Keras-only in {KERAS_FILE}: " + ", ".join(keras_only + keras_left_out) + ".",
        f"PyTorch-only in {TORCH_FILE}: " + ", ".join(torch_left_out) + ".",
        "Keras-only helpers, not shown: convnext_tf/layers.py.",
    ]
    out += [row for note in notes for row in textwrap.wrap(note, width)]
    try:
        print("\n".join(out))
    except BrokenPipeError:  # the pager was closed early: no second error at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
