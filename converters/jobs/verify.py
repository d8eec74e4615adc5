"""verify_file: a deployed model checked against its PyTorch checkpoint, with the report
written. Loads PyTorch, and TensorFlow only where the artifact needs it (not for a .tflite
file): converters.deploy.artifacts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from converters.deploy.report import write_json, write_report
from converters.deploy.result import Verification
from converters.deploy.verify import verify
from converters.errors import Log, choice_argument, count_argument, path_argument, quiet
from converters.files.destinations import check_report_destinations
from converters.names.layouts import LAYOUT_CHOICES


def verify_file(
    torch_src: str | Path,
    deployed: str | Path,
    report: str | Path | None = None,
    json_path: str | Path | None = None,
    force: bool = False,
    log: Log = quiet,
    wording: Callable[[str], str] | None = None,
    **options,
) -> Verification:
    """converters.deploy.verify.verify: check a deployed model (SavedModel, .tflite, Keras file)
    against a PyTorch checkpoint; the options are verify()'s. `report` (an HTML page) and
    `json_path` are checked before anything runs, as every output is (nothing replaced
    without `force`, never a directory, never one of the inputs), and written atomically
    once the verdict is in. `wording` rewrites the `parameter` names in the report's text
    (the command line passes its own, so that the page names its flags)."""
    sources = [path_argument("torch_src", torch_src), path_argument("deployed", deployed)]
    if options.get("images") is not None:
        sources.append(path_argument("images", options["images"]))
    choice_argument("layout", options.get("layout", "auto"), LAYOUT_CHOICES)
    count_argument("num_classes", options.get("num_classes"))
    outputs = [
        (name, path_argument(name, p))
        for name, p in (("report", report), ("json_path", json_path))
        if p is not None
    ]
    check_report_destinations(outputs, force, sources)
    result = verify(torch_src, deployed, log=log, **options)
    for name, path in outputs:
        if name == "report":
            write_report(result, path, force, wording)
        else:
            write_json(result, path, force)
        log(f"wrote {path}")
    return result
