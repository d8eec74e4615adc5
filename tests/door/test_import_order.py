"""triton beside TensorFlow: the torch the package index serves brings triton, which crashes
the process when it is imported after TensorFlow (convnext_spec.import_order). The real one is
in the peer environment (tests/peers/test_torch_from_the_index.py); here a stand-in package
named triton, on the path of a fresh process, dies exactly as the real one does (SIGSEGV when
TensorFlow is already imported), so the order is checked in every `make test`."""

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from convnext_spec import import_order

ROOT = Path(__file__).parents[2]

STAND_IN = """
import os, signal, sys
if "tensorflow" in sys.modules:  # what the real triton 3.8 does beside tensorflow-cpu 2.21
    os.kill(os.getpid(), signal.SIGSEGV)
"""

BUILD_A_MODEL = "convnext_torch.create_model('convnext_atto', num_classes=2); print('built')"


@pytest.fixture(scope="module")
def triton_path(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("stand_in")
    (folder / "triton").mkdir()
    (folder / "triton" / "__init__.py").write_text(STAND_IN)
    return folder


def python(code: str, triton_path: Path) -> subprocess.CompletedProcess:
    environment = {"PYTHONPATH": f"{triton_path}:{ROOT}", "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=300
    )


@pytest.mark.exhaustive  # a third process of TensorFlow and torch: seen dying, kept in test-all
def test_the_stand_in_crashes_as_triton_does(triton_path):
    """The control: without this project's packages, TensorFlow then torch's first use of
    torch._dynamo (building any module touches it) imports triton and the process dies."""
    result = python(
        "import tensorflow, torch, torch._dynamo; torch.nn.Linear(2, 2); print('built')",
        triton_path,
    )
    assert result.returncode == -signal.SIGSEGV, result.stderr[-500:]


def test_the_entry_points_import_triton_before_tensorflow(triton_path):
    """What the command line, demo and tests do: the startup import, then both frameworks."""
    result = python(
        "from converters.startup import import_tensorflow_quietly; import_tensorflow_quietly();"
        "import sys; assert 'triton' in sys.modules, 'triton not imported';"
        f"import convnext_tf, convnext_torch; {BUILD_A_MODEL}",
        triton_path,
    )
    assert result.returncode == 0, result.stderr[-500:]
    assert result.stdout.strip() == "built"


def test_tensorflow_imported_first_disables_triton_with_a_warning(triton_path, monkeypatch):
    """A user who imported TensorFlow before this project's packages (as this test process
    did): triton can no longer be imported safely, so it is marked absent (torch runs as
    without it), and said. Were the stand-in imported here, this process would die."""
    assert "tensorflow" in sys.modules
    monkeypatch.syspath_prepend(str(triton_path))
    monkeypatch.delitem(sys.modules, "triton", raising=False)
    try:
        with pytest.warns(RuntimeWarning, match="triton is disabled in this process"):
            import_order.import_triton_before_tensorflow()
        with pytest.raises(ImportError):
            import triton  # noqa: F401
    finally:
        sys.modules.pop("triton", None)


@pytest.mark.parametrize("package", ["convnext_torch", "convnext_tf", "converters"])
def test_each_package_orders_triton_before_anything_else(package):
    """The guard is the first import of each package a user may import first (the processes
    above run it through two of them)."""
    source = (ROOT / package / "__init__.py").read_text()
    imports = [line for line in source.splitlines() if line.startswith(("import ", "from "))]
    stdlib = ("from __future__", "import os", "import importlib")
    first = [line for line in imports if not line.startswith(stdlib)]
    assert first[0].startswith("from convnext_spec import import_order"), first[:2]
