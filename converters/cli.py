"""The `convnext` command line: it parses arguments and prints; the jobs are library functions
in converters.jobs, which a Python user calls with the same options as parameters.

    convnext convert SRC DST [--from auto|official|timm|hf|open_clip|fcmae|dinov3|torchvision|mmpretrain]
                     [--to keras|keras-applications|official|timm|hf|torchvision]
                     [--variant NAME] [--num-classes N] [--ema] [--key NAME] [--prefix NAME]
                     [--no-top] [--force]
    convnext verify TORCH_SRC DEPLOYED [--size H W] [--batch N] [--images DIR] [--layout nhwc|nchw]
                    [--pixels 0-255|0-1] [--mean R G B] [--std R G B] [--output logits|probabilities]
                    [--atol A] [--rtol R] [--signature NAME] [--output-name NAME]
                    [--locate on-fail|always]
                    [--report PATH.html] [--json PATH]
    convnext export SRC DST [--quantize float16|dynamic] [--variant NAME] [--force]
    convnext inspect FILE [--from ...] [--ema]
    convnext variants

Every failure ends in one line on stderr and exit status 1; nothing is left at DST. verify
(`compare` is its old name) exits 0 on PASS, 1 on FAIL, 2 when its inputs are unusable.
"""  # noqa: E501

from __future__ import annotations

import argparse
import contextlib
import difflib
import math
import os
import re
import signal
import sys
import threading
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from converters.errors import ConversionError, printable
from converters.names.layouts import LAYOUT_CHOICES, LAYOUT_NAMES, TARGETS
from converters.startup import import_tensorflow, quiet_native_notices
from convnext_spec.spec import (
    CHECKPOINTS,
    VARIANT_OPTIONS,
    SpecError,
    parameter_count,
    spec_from_name,
    variant_names,
)

# Library parameters named in error messages (`variant`) -> the options that set them here.
FLAGS = {
    "variant": "--variant",
    "num_classes": "--num-classes",
    "ema": "--ema",
    "layout": "--from",
    "target": "--to",
    "include_top=False": "--no-top",
    "force": "--force",
    "report": "--report",
    "seed": "--seed",
    "atol": "--atol",
    "rtol": "--rtol",
    "json_path": "--json",
    "key": "--key",
    "prefix": "--prefix",
    "size": "--size",
    "batch": "--batch",
    "images": "--images",
    "input_layout": "--layout",
    "pixels": "--pixels",
    "output": "--output",
    "mean": "--mean",
    "std": "--std",
    "signature": "--signature",
    "output_name": "--output-name",
    "locate": "--locate",
    "quantize": "--quantize",
}


def main(argv: list[str] | None = None) -> int:
    standard_streams_open()
    args = parser().parse_args(argv)
    # SIGTERM and SIGHUP unwind like Ctrl-C (KeyboardInterrupt), through the clean-up of what
    # is being written; a second one while that runs is ignored. Only the main thread may set
    # handlers: main() called from another thread leaves the process's own.
    received: list[int] = []

    def interrupt(signum: int, frame: object) -> None:
        if not received:
            received.append(signum)
            raise KeyboardInterrupt

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for name in ("SIGTERM", "SIGHUP"):  # no SIGHUP on Windows
            if hasattr(signal, name):
                signum = getattr(signal, name)
                previous[signum] = signal.signal(signum, interrupt)
    try:
        if args.run is run_variants:  # a table of the specs: no framework needed
            return run_variants(args)
        quiet_native_notices()  # TensorFlow's and LiteRT's start-up notices go nowhere
        if args.tensorflow:  # before the job imports Keras; verify imports it only where the
            import_tensorflow()  # artifact needs it: not for a .tflite file, which LiteRT runs
        from converters import jobs  # after parsing: --help does not wait for a framework

        return args.run(args, jobs)
    except (ConversionError, SpecError) as e:
        print(f"convnext: error: {printable(as_flags(str(e)))}", file=sys.stderr)
        return args.unusable
    except BrokenPipeError:  # `convnext variants | head -1`: a closed pipe is a quiet exit
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no flush error
        return 128 + int(getattr(signal, "SIGPIPE", 13))
    except OSError as e:  # unreadable source, full disk, no permission to write
        print(f"convnext: error: {printable(str(e))}", file=sys.stderr)
        return args.unusable
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM, SIGHUP: exit status 128 + the signal
        by = f" by {signal.Signals(received[0]).name}" if received else ""
        with contextlib.suppress(OSError):  # after SIGHUP, the terminal may be gone
            print(f"convnext: interrupted{by}", file=sys.stderr)
        return 128 + int(received[0] if received else signal.SIGINT)
    except Exception as e:  # a case not foreseen: still one line, the traceback on request
        if os.environ.get("CONVNEXT_DEBUG"):
            raise
        detail = printable(" ".join(str(e).split())[:300])
        print(
            f"convnext: error: unexpected {type(e).__name__}: {detail} "
            "(set CONVNEXT_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return args.unusable
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def standard_streams_open() -> None:
    """Started with stdin, stdout or stderr closed (`2>&-`), the process would hand that
    descriptor to the next file it opens, and an error line written "to stderr" would land in
    an output file: each closed one is opened on the null device first, as daemons do."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDWR)  # takes the lowest free descriptor: this one
    if sys.stderr is None:  # Python saw it closed at start-up: print(file=None) is stdout
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    if sys.stdout is None:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115


def as_flags(message: str) -> str:
    """A library message with its `parameter` names written as this command's options."""
    return re.sub(r"`([^`]+)`", lambda m: FLAGS.get(m.group(1), m.group(1)), message)


class Parser(argparse.ArgumentParser):
    """argparse with its errors in one line, a close match for a misspelt choice, and the
    conventional exit status 2 for a bad command line (1 is for bad files)."""

    def error(self, message: str):
        choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if choice:
            known = re.findall(r"'([^']*)'", choice.group(2)) or choice.group(2).split(", ")
            close = difflib.get_close_matches(choice.group(1), known, n=1)
            if close:
                message += f"; did you mean {close[0]}?"
        unknown = re.search(r"unrecognized arguments: (--[\w-]+)", message)
        if unknown:
            close = difflib.get_close_matches(unknown.group(1), self.option_names(), n=1)
            if close:
                message += f"; did you mean {close[0]}?"
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def option_names(self) -> list[str]:
        """Every --option of this parser and of its subcommands."""
        names = []
        for action in self._actions:
            names += [o for o in action.option_strings if o.startswith("--")]
            for sub in getattr(action, "choices", None) or {}:
                if isinstance(action.choices, dict):
                    names += Parser.option_names(action.choices[sub])
        return names


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def tolerance(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number of 0 or more, not {text}")
    return value


def package_version() -> str:
    try:
        return version("convnext-parity")
    except PackageNotFoundError:  # run from a source tree that was not installed
        return "unknown"


def parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="convnext",
        description="Convert ConvNeXt checkpoints between PyTorch and Keras 3, strictly.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    parser.set_defaults(unusable=1, tensorflow=True)  # the exit status of a bad file; verify's is 2
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    convert = commands.add_parser(
        "convert",
        help="PyTorch checkpoint -> Keras, Keras -> PyTorch, or one PyTorch layout -> another",
        description="Convert a ConvNeXt checkpoint. SRC: a PyTorch file (.pth/.pt/.bin, "
        ".safetensors, or a Hugging Face directory) in the official, timm, Hugging Face, "
        "OpenCLIP, FCMAE, DINOv3 or torchvision layout, or a Keras file (.keras, or .weights.h5 "
        "with --variant). DST's suffix picks the target unless --to says: .keras/.weights.h5 -> "
        "keras, .pth/.pt/.bin/.safetensors -> official; --to hf writes DST as a Hugging Face "
        "directory (config.json and model.safetensors).",
    )
    convert.add_argument("src", type=Path, help="checkpoint to read")
    convert.add_argument("dst", type=Path, help="file to write (a directory with --to hf)")
    add_layout_option(convert, "key layout of a PyTorch SRC (default: detected)")
    convert.add_argument(
        "--to", dest="target", choices=TARGETS, help="what to write (default: from DST's suffix)"
    )
    add_model_options(convert)
    convert.add_argument(
        "--no-top", action="store_true", help="keras-applications: write include_top=False weights"
    )
    convert.add_argument("--force", action="store_true", help="overwrite DST if it exists")
    convert.set_defaults(run=run_convert)

    verify = commands.add_parser(
        "verify",
        aliases=["compare"],
        help="does a deployed model (SavedModel, .tflite, TF.js, Keras) compute what PyTorch does?",
        description="Run a PyTorch checkpoint and a deployed model on the same images and say "
        "PASS or FAIL against a tolerance derived from the float32 noise floor (PyTorch in "
        "float32 against float64 on the same inputs, times 10). DEPLOYED: a SavedModel "
        "directory, a .tflite file, a TF.js graph model (run in Node: make tfjs), this project's "
        ".keras / .weights.h5, a keras.applications model or weights file, or any Keras model. "
        "Every block is compared and the first divergence named (in another's artifact, on a "
        "FAIL, located by value among its own tensors). Exit status 0 PASS, 1 FAIL, 2 "
        "unusable input.",
    )
    verify.add_argument("torch_src", type=Path, help="PyTorch checkpoint")
    verify.add_argument(
        "deployed", type=Path, help="SavedModel directory, .tflite, TF.js model.json or Keras file"
    )
    add_layout_option(verify, "key layout of TORCH_SRC (default: detected)")
    add_model_options(verify)
    verify.add_argument(
        "--size",
        type=positive_int,
        nargs=2,
        metavar=("H", "W"),
        help="image height and width (default: the artifact's own, else 224 224)",
    )
    verify.add_argument(
        "--batch", type=positive_int, default=4, help="random images, or images a batch (4)"
    )
    verify.add_argument("--seed", type=int, default=0, help="seed of the random images")
    verify.add_argument(
        "--images", type=Path, metavar="DIR", help="compare on the JPEG/PNG pictures in DIR"
    )
    verify.add_argument(
        "--layout",
        dest="input_layout",
        choices=("nhwc", "nchw"),
        help="the artifact's input layout (default: from its input shape, else nhwc)",
    )
    verify.add_argument(
        "--pixels",
        choices=("0-255", "0-1"),
        help="the artifact takes raw pixels in this range (default: normalised input)",
    )
    verify.add_argument(
        "--mean", type=float, nargs="+", metavar="M", help="normalisation mean (ImageNet's)"
    )
    verify.add_argument(
        "--std", type=float, nargs="+", metavar="S", help="normalisation std (ImageNet's)"
    )
    verify.add_argument(
        "--output",
        choices=("logits", "probabilities"),
        help="what the artifact returns (default: detected, else logits)",
    )
    verify.add_argument("--atol", type=tolerance, help="absolute tolerance of the output (0)")
    verify.add_argument(
        "--rtol", type=tolerance, help="relative tolerance, instead of the derived one"
    )
    verify.add_argument("--signature", help="the signature to call (default serving_default)")
    verify.add_argument(
        "--output-name",
        metavar="NAME",
        help="the output to compare, of a signature or Keras model with several",
    )
    verify.add_argument(
        "--locate",
        choices=("on-fail", "always"),
        default="on-fail",
        help="find a foreign artifact's blocks among its own tensors on a FAIL (default), or "
        "on a PASS too",
    )
    verify.add_argument(
        "--allow-tf32", action="store_true", help="on a GPU, leave TensorFloat-32 on"
    )
    verify.add_argument(
        "--report",
        type=Path,
        metavar="PATH.html",
        help="write an HTML report to this file (not a directory; checked before the run)",
    )
    verify.add_argument(
        "--json", type=Path, metavar="PATH", help="write the result as JSON to this file"
    )
    verify.add_argument(
        "--force", action="store_true", help="replace an existing --report / --json file"
    )
    verify.set_defaults(run=run_verify, unusable=2, tensorflow=False)

    export = commands.add_parser(
        "export",
        help="PyTorch checkpoint or Keras file -> SavedModel directory or .tflite file",
        description="Export a ConvNeXt for deployment: DST ending in .tflite is a LiteRT "
        "file, anything else a SavedModel directory. Both have the serving signature "
        "(images NHWC normalised -> logits) and a `stages` signature with every block's "
        "output, which `convnext verify` uses to say where a deployment goes wrong.",
    )
    export.add_argument("src", type=Path, help="PyTorch checkpoint or Keras file")
    export.add_argument("dst", type=Path, help="SavedModel directory or NAME.tflite")
    add_layout_option(export, "key layout of a PyTorch SRC (default: detected)")
    add_model_options(export)
    export.add_argument(
        "--quantize",
        choices=("float16", "dynamic"),
        help=".tflite: float16 weights, or int8 weights with dynamic activations",
    )
    export.add_argument("--force", action="store_true", help="overwrite DST if it exists")
    export.set_defaults(run=run_export)

    inspect = commands.add_parser(
        "inspect", help="what a checkpoint holds: layout, variant, classes, dtype, size"
    )
    inspect.add_argument("file", type=Path, help="PyTorch checkpoint or Keras file")
    add_layout_option(inspect, "key layout (default: detected)")
    add_checkpoint_options(inspect)
    inspect.set_defaults(run=run_inspect)

    variants = commands.add_parser("variants", help="list the variants and their parameters")
    variants.set_defaults(run=run_variants)
    return parser


def add_layout_option(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument(
        "--from", dest="layout", choices=LAYOUT_CHOICES, default="auto", help=help_text
    )


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variant", help="variant name; inferred from tensor shapes if omitted")
    parser.add_argument("--num-classes", type=int, help="classes of the head; inferred if omitted")
    add_checkpoint_options(parser)


def add_checkpoint_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ema",
        action="store_true",
        help="take a training checkpoint's EMA weights (model_ema, state_dict_ema or ema)",
    )
    parser.add_argument(
        "--key",
        metavar="NAME",
        help="the checkpoint entry that holds the weights, if not model or state_dict",
    )
    parser.add_argument(
        "--prefix",
        metavar="NAME",
        help="remove this prefix from every key (a training wrapper's: model., net., ...); "
        "default: one that makes the keys a known layout is found",
    )


def run_convert(args: argparse.Namespace, jobs) -> int:
    result = jobs.convert_file(
        args.src,
        args.dst,
        target=args.target,
        layout=args.layout,
        ema=args.ema,
        variant=args.variant,
        num_classes=args.num_classes,
        include_top=not args.no_top,
        force=args.force,
        key=args.key,
        prefix=args.prefix,
        log=say,
    )
    if result.target in ("keras", "keras-applications", "torchvision"):
        say(f"load with: {result.load_with}")
    return 0


def run_verify(args: argparse.Namespace, jobs) -> int:
    result = jobs.verify_file(
        args.torch_src,
        args.deployed,
        report=args.report,
        json_path=args.json,
        force=args.force,
        layout=args.layout,
        ema=args.ema,
        variant=args.variant,
        num_classes=args.num_classes,
        key=args.key,
        prefix=args.prefix,
        size=tuple(args.size) if args.size else None,
        batch=args.batch,
        seed=args.seed,
        images=args.images,
        input_layout=args.input_layout,
        pixels=args.pixels,
        mean=tuple(args.mean) if args.mean else None,
        std=tuple(args.std) if args.std else None,
        output=args.output,
        atol=args.atol,
        rtol=args.rtol,
        signature=args.signature,
        output_name=args.output_name,
        locate=args.locate,
        allow_tf32=args.allow_tf32,
        log=say,
        wording=as_flags,
    )
    print(as_flags(result.format()))
    return 0 if result.passed else 1


def run_export(args: argparse.Namespace, jobs) -> int:
    jobs.export_file(
        args.src,
        args.dst,
        quantize=args.quantize,
        layout=args.layout,
        ema=args.ema,
        variant=args.variant,
        num_classes=args.num_classes,
        key=args.key,
        prefix=args.prefix,
        force=args.force,
        log=say,
    )
    return 0


def run_inspect(args: argparse.Namespace, jobs) -> int:
    for label, value in jobs.inspect_file(
        args.file, layout=args.layout, ema=args.ema, key=args.key, prefix=args.prefix
    ):
        print(f"{label + ':':<16}{printable(as_flags(str(value)))}")
    return 0


def run_variants(args: argparse.Namespace, jobs=None) -> int:
    print(f"{'name':<26}{'depths':<16}{'dims':<26}{'parameters':>12}  differs by")
    for name in variant_names():
        spec = spec_from_name(name)
        differs = ", ".join(f"{k} {v}" for k, v in VARIANT_OPTIONS.get(name, {}).items())
        print(
            f"{name:<26}{str(spec.depths):<16}{str(spec.dims):<26}"
            f"{parameter_count(spec):>12,}  {differs}".rstrip()
        )
    print("parameters: 1000 classes, 3 input channels; isotropic models: one stage")
    print(f"\n{'published checkpoint':<29}{'layout':<11}{'converts to':<20}{'parameters':>12}")
    for release, (layout, name, changes) in CHECKPOINTS.items():
        count = parameter_count(spec_from_name(name, **changes))
        head = ", ".join(f"{k}={v}" for k, v in changes.items())
        print(f"{release:<29}{layout:<11}{name:<20}{count:>12,}  {head}")
    print(f"\nreads (--from): {', '.join(LAYOUT_NAMES)}; keras.applications and our Keras files")
    print(f"writes (--to):  {', '.join(TARGETS)}")
    return 0


def say(message: str) -> None:
    print(printable(as_flags(message)), file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
