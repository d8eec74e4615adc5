"""The shape of the code, checked: imports in `converters` run one way, down its floors (the
door, then deploy, weights, files, names, errors), with no circle; the model packages and the
description of a model import nothing from the converter; no module is over 700 lines and no
folder holds more than 12 modules side by side. Each rule is shown to catch a planted breach."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("convnext_spec", "convnext_torch", "convnext_tf", "converters", "examples", "tests")
MAX_LINES = 700
MAX_MODULES = 12

# converters' floors, top to bottom: a module imports only from its own wing or below it.
FLOORS = {
    "converters": 7,  # the package __init__: lazy names, imports nothing when loaded
    "converters.__main__": 6,
    "converters.cli": 6,
    "converters.jobs": 5,
    "converters.deploy": 4,
    "converters.weights": 3,
    "converters.files": 2,
    "converters.names": 1,
    "converters.errors": 0,
    "converters.startup": 0,
}


def module_name(path: Path) -> str:
    name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    return name.removesuffix(".__init__")


def imports_of(path: Path) -> set[str]:
    """Every project module `path` imports, at its top or inside a function (a lazy import is
    still an arrow of the graph)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.split(".")[0] in PACKAGES}


def project_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}
    return {name: imports_of(path) & set(modules) for name, path in modules.items()}


def floor_of(module: str) -> tuple[str, int]:
    """(wing, floor) of a converters module: the longest FLOORS key it starts with."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in FLOORS:
            return key, FLOORS[key]
    raise KeyError(f"{module} is on no floor: add it to FLOORS")


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Arrows in converters that go up a floor, or sideways into another wing."""
    wrong = []
    for module, imported in graph.items():
        if not module.startswith("converters") or module == "converters":
            continue
        wing, floor = floor_of(module)
        for target in imported:
            if not target.startswith("converters") or target == "converters":
                continue
            target_wing, target_floor = floor_of(target)
            sideways = target_floor == floor > 0 and target_wing != wing  # errors, startup: one
            if target_floor > floor or sideways:
                if {module, target} != {"converters.__main__", "converters.cli"}:
                    wrong.append(f"{module} -> {target}")
    return sorted(wrong)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import circle found by a depth-first walk (one path per circle met)."""
    found, state, path = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                found.append(path[path.index(target) :] + [target])
            elif target not in state:
                visit(target)
        path.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_converters_imports_run_down_the_floors():
    assert upward_imports(project_graph()) == []


def test_there_is_no_import_circle():
    assert cycles(project_graph()) == []


def test_the_model_packages_and_the_spec_import_nothing_from_the_converter():
    graph = project_graph()
    leaks = [
        f"{module} -> {target}"
        for module, imported in graph.items()
        if module.split(".")[0] in ("convnext_spec", "convnext_torch", "convnext_tf")
        for target in imported
        if target.split(".")[0] in ("converters", "examples", "tests")
    ]
    assert leaks == []


def test_the_rules_catch_a_planted_breach():
    graph = project_graph()
    graph["converters.names.layouts"] = graph["converters.names.layouts"] | {
        "converters.weights.convert"
    }
    assert upward_imports(graph) == ["converters.names.layouts -> converters.weights.convert"]
    graph["converters.weights.convert"] = graph["converters.weights.convert"] | {
        "converters.names.layouts"
    }
    assert any("converters.weights.convert" in circle for circle in cycles(graph))
    sideways = {"converters.files.outputs": {"converters.names.hf", "converters.startup"}}
    assert upward_imports({**sideways, "converters.startup": {"converters.errors"}}) == []
    assert upward_imports({"converters.files.outputs": {"converters.jobs"}}) == [
        "converters.files.outputs -> converters.jobs"
    ]


def python_files() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def long_modules(paths: list[Path], limit: int = MAX_LINES) -> list[str]:
    return [
        f"{p.relative_to(ROOT)}: {n} lines"
        for p in paths
        if (n := len(p.read_text().splitlines())) > limit
    ]


def crowded_folders(paths: list[Path], limit: int = MAX_MODULES) -> list[str]:
    counts: dict[Path, int] = {}
    for p in paths:
        counts[p.parent] = counts.get(p.parent, 0) + 1
    return [f"{d.relative_to(ROOT)}: {n} modules" for d, n in counts.items() if n > limit]


def test_no_module_is_over_700_lines():
    assert long_modules(python_files()) == []


def test_no_folder_holds_more_than_12_modules():
    assert crowded_folders(python_files()) == []


def test_the_size_rules_catch_a_planted_breach():
    paths = python_files()
    assert long_modules(paths, limit=50)  # there are modules over 50 lines
    assert crowded_folders(paths, limit=3)  # and folders of more than 3 modules


@pytest.mark.parametrize("package", ["convnext_spec", "converters.names"])
def test_the_pure_packages_load_no_framework(package):
    import subprocess
    import sys

    names = [module_name(p) for p in (ROOT / package.replace(".", "/")).rglob("*.py")]
    code = (
        f"import sys; import {', '.join(names)}; "
        "print(sorted(m for m in ('torch', 'tensorflow', 'keras') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def unpackaged(include: list[str]) -> list[str]:
    """The project's packages (folders with an __init__.py) that pyproject's
    `packages.find.include` patterns leave out of a wheel."""
    from fnmatch import fnmatch

    found = []
    for package in ("convnext_spec", "convnext_torch", "convnext_tf", "converters"):
        for init in (ROOT / package).rglob("__init__.py"):
            name = module_name(init)
            if not any(fnmatch(name, pattern) for pattern in include):
                found.append(name)
    return sorted(found)


def test_every_subpackage_goes_into_the_wheel():
    """A non-editable install (pip install convnext-parity) must ship converters.names and the
    other wings: an explicit `packages` list of the top-level names alone leaves them out."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = config["tool"]["setuptools"]["packages"]["find"]["include"]
    assert unpackaged(include) == []
    top_level_only = ["convnext_spec", "convnext_torch", "convnext_tf", "converters"]
    assert "converters.names" in unpackaged(top_level_only)  # the old setting, caught
