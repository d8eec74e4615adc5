"""docs/framework-differences.md runs: every ```python block of the guide is executed, in order,
in a fresh namespace, one test per section, so a number in the guide that stops being true fails
the suite; every block must print (the numbers it demonstrates). The runner is shown to fail on a
false snippet, on a silent one and on a section without one."""

from __future__ import annotations

import linecache
import re
import time
from pathlib import Path

import pytest

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "framework-differences.md"
FENCE = "```"


def sections(text: str) -> list[tuple[str, list[str]]]:
    """(heading, python blocks) for every `## ` heading, in document order. Lines inside any
    fenced block are code, never headings; only ```python blocks are collected."""
    found: list[tuple[str, list[str]]] = []
    language: str | None = None  # the open fence's language; None outside a fence
    block: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if language is None:
            if stripped.startswith(FENCE):
                language = stripped[len(FENCE) :].strip() or "text"
                block = []
            elif line.startswith("## "):
                found.append((line[3:].strip(), []))
            continue
        if stripped == FENCE:
            if language == "python":
                if not found:
                    raise ValueError(f"line {number}: a python block before the first section")
                found[-1][1].append("\n".join(block) + "\n")
            language = None
        else:
            block.append(line)
    if language is not None:
        raise ValueError(f"a {language} block is never closed")
    return found


def check_sections(found: list[tuple[str, list[str]]]) -> None:
    """Raise AssertionError unless there are sections and each has at least one snippet."""
    assert found, "the guide has no sections"
    empty = [title for title, blocks in found if not blocks]
    assert not empty, f"sections without a python snippet: {empty}"


def run_snippet(code: str, title: str) -> None:
    """Execute one snippet in a fresh namespace; its tracebacks name the section and show the
    failing line (the source is registered with linecache under that name)."""
    filename = f"<guide: {title}>"
    linecache.cache[filename] = (len(code), None, code.splitlines(keepends=True), filename)
    namespace = {"__name__": "__guide__"}
    exec(compile(code, filename, "exec"), namespace)


def guide_sections() -> list[tuple[str, list[str]]]:
    """The guide's sections; none when the file is missing (the next test then fails)."""
    return sections(GUIDE.read_text(encoding="utf-8")) if GUIDE.is_file() else []


def test_every_section_has_a_snippet():
    assert GUIDE.is_file(), f"{GUIDE} is missing"
    check_sections(guide_sections())


def test_snippets_import_only_the_model_packages():
    """The guide teaches the frameworks through convnext_torch, convnext_tf and convnext_spec;
    the converter's modules are not its subject and move more often."""
    imports = [
        (title, line.strip())
        for title, blocks in guide_sections()
        for block in blocks
        for line in block.splitlines()
        if re.match(r"\s*(from|import) (converters|tests)\b", line)
    ]
    assert not imports, imports


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def test_contents_list_every_section():
    """The numbered contents before the first section link each section, in order."""
    text = GUIDE.read_text(encoding="utf-8")
    intro = text.split("\n## ", 1)[0]
    entries = re.findall(r"^(\d+)\. \[(.+)\]\(#(.+)\)$", intro, flags=re.MULTILINE)
    headings = [title for title, _ in sections(text)]
    assert [f"{n}. {title}" for n, title, _ in entries] == headings
    assert [anchor for _, _, anchor in entries] == [github_anchor(h) for h in headings]


def run_section(title: str, blocks: list[str], capsys: pytest.CaptureFixture) -> None:
    """Run a section's snippets in order; each must print and finish in time."""
    assert blocks, f"{title}: no python snippet"
    shown = ""  # the section's output so far, kept in the capture for a failure's report
    for number, block in enumerate(blocks, start=1):
        start = time.perf_counter()
        run_snippet(block, title)
        elapsed = time.perf_counter() - start
        output = capsys.readouterr().out
        printed, shown = output[len(shown) :], output
        print(output, end="")
        assert printed.strip(), f"{title}: snippet {number} prints nothing"
        # the guide promises short snippets; generous for a loaded 2-core machine
        assert elapsed < 20, f"{title}: a snippet took {elapsed:.1f} s"


@pytest.mark.parametrize(
    ("title", "blocks"), [pytest.param(*section, id=section[0]) for section in guide_sections()]
)
def test_snippet(title, blocks, capsys):
    run_section(title, blocks, capsys)


FALSE_GUIDE = """\
Intro, with a block that is not python:

```sh
## not a heading: inside a fence
```

## 1. A true section

```python
assert 1e-5 != 1e-6
```

## 2. A false section

```python
import torch
assert torch.nn.LayerNorm(4).eps == 1e-6  # it is 1e-5
```
"""


def test_runner_fails_on_a_false_snippet():
    found = sections(FALSE_GUIDE)
    assert [title for title, _ in found] == ["1. A true section", "2. A false section"]
    check_sections(found)
    run_snippet(found[0][1][0], found[0][0])
    with pytest.raises(AssertionError) as failure:
        run_snippet(found[1][1][0], found[1][0])
    frame = failure.tb
    while frame.tb_next is not None:
        frame = frame.tb_next
    assert frame.tb_frame.f_code.co_filename == "<guide: 2. A false section>"  # names it
    assert frame.tb_lineno == 2


def test_runner_fails_on_a_silent_snippet(capsys):
    title, blocks = sections(FALSE_GUIDE)[0]  # true, but prints nothing
    with pytest.raises(AssertionError, match="1. A true section: snippet 1 prints nothing"):
        run_section(title, blocks, capsys)
    printing = 'print(f"{1e-5:g} != {1e-6:g}")\n'
    run_section(title, [printing, printing], capsys)
    with pytest.raises(AssertionError, match="snippet 2 prints nothing"):
        run_section(title, [printing, blocks[0]], capsys)  # the first one printing is not enough


def test_runner_fails_on_a_section_without_a_snippet():
    with pytest.raises(AssertionError, match="without a python snippet"):
        check_sections(sections("## 1. Prose only\n\nNo code here.\n"))
    with pytest.raises(AssertionError, match="no sections"):
        check_sections(sections("No headings at all.\n"))
    with pytest.raises(ValueError, match="never closed"):
        sections("## 1. Open\n\n```python\nx = 1\n")
