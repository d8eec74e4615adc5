"""The `convnext` command line.

    convnext convert SRC DST [--variant NAME] [--num-classes N] [--force]
    convnext variants

Every failure ends in one line on stderr and exit status 1; nothing is left at DST.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from converters.checkpoint import ConversionError

OUTPUT_SUFFIXES = (".weights.h5", ".keras")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="convnext",
        description="Convert ConvNeXt checkpoints between PyTorch and Keras 3, strictly.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    convert = commands.add_parser(
        "convert",
        help="PyTorch checkpoint -> Keras .weights.h5 or .keras",
        description="Convert a PyTorch ConvNeXt checkpoint (.pth/.pt: a state_dict, or one "
        "wrapped as {'model': ...} or {'state_dict': ...}) to a Keras weights file "
        "(DST ending in .weights.h5) or a whole Keras model (DST ending in .keras).",
    )
    convert.add_argument("src", type=Path, help="PyTorch checkpoint")
    convert.add_argument("dst", type=Path, help="output: NAME.weights.h5 or NAME.keras")
    convert.add_argument("--variant", help="variant name; inferred from tensor shapes if omitted")
    convert.add_argument("--num-classes", type=int, help="classes of the head; inferred if omitted")
    convert.add_argument("--force", action="store_true", help="overwrite DST if it exists")
    convert.set_defaults(run=run_convert)

    variants = commands.add_parser("variants", help="list the variants and their parameters")
    variants.set_defaults(run=run_variants)

    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except ConversionError as e:
        print(f"convnext: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # unreadable source, full disk, no permission to write
        print(f"convnext: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("convnext: interrupted", file=sys.stderr)
        return 130


def run_convert(args: argparse.Namespace) -> int:
    dst = check_destination(args.dst, args.force)
    if args.variant is not None:
        check_variant(args.variant)
    if args.num_classes is not None and args.num_classes < 1:
        raise ConversionError(f"--num-classes must be positive, got {args.num_classes}")

    from converters.checkpoint import load_state_dict
    from converters.convert import infer_config

    say(f"reading {args.src}")
    state = load_state_dict(args.src)
    say(
        f"found {len(state.tensors)} tensors ({', '.join(state.dtypes)})"
        + (f" under {state.wrapper!r}" if state.wrapper else "")
    )
    try:
        inferred = infer_config(state)
    except ConversionError:
        if args.variant is None:
            raise
        inferred = None  # --variant given: the strict check below names what differs
    variant = args.variant or inferred.variant(variants_table())
    overrides = inferred.overrides() if inferred else {}
    if args.num_classes is not None:
        overrides["num_classes"] = args.num_classes
    say(
        f"{'using' if args.variant else 'inferred'} {variant}: "
        + ", ".join(f"{k}={v}" for k, v in overrides.items())
        + ("" if args.variant else " (from the tensor shapes)")
    )

    import convnext_tf
    from converters.convert import torch_to_keras

    model = convnext_tf.create_model(variant, **overrides)
    report = torch_to_keras(state, model, progress=progress_printer("assigning"))
    widened = [d for d in report.source_dtypes if d in ("float16", "bfloat16")]
    if widened:
        say(f"widened {', '.join(widened)} to {report.target_dtype} (exact)")
    if "float64" in report.source_dtypes and report.target_dtype != "float64":
        say(f"rounded float64 to {report.target_dtype}")

    say(f"writing {dst}")
    with atomic_output(dst) as tmp:
        if dst.name.endswith(".keras"):
            model.save(tmp)
        else:
            model.save_weights(tmp)
    say(f"wrote {dst}: {report.tensors} tensors, {report.parameters:,} parameters")
    if dst.name.endswith(".keras"):
        say("load with: import convnext_tf, keras; keras.models.load_model(DST)")
    else:
        args_text = ", ".join(f"{k}={v!r}" for k, v in overrides.items())
        say(f"load with: convnext_tf.create_model({variant!r}, {args_text}).load_weights(DST)")
    return 0


def run_variants(args: argparse.Namespace) -> int:
    import torch

    import convnext_torch

    print(f"{'name':<18}{'depths':<16}{'dims':<26}{'parameters':>12}")
    for name, (depths, dims) in convnext_torch.VARIANTS.items():
        with torch.device("meta"):  # shapes only: no memory, no initialisation cost
            model = convnext_torch.create_model(name)
        count = sum(p.numel() for p in model.parameters())
        print(f"{name:<18}{str(depths):<16}{str(dims):<26}{count:>12,}")
    print("parameters: 1000 classes, 3 input channels")
    return 0


def check_destination(dst: Path, force: bool) -> Path:
    if not dst.name.endswith(OUTPUT_SUFFIXES):
        raise ConversionError(f"{dst}: output must end in {' or '.join(OUTPUT_SUFFIXES)}")
    if dst.is_dir():
        raise ConversionError(f"{dst}: is a directory")
    if dst.exists() and not force:
        raise ConversionError(f"{dst}: exists; pass --force to overwrite it")
    if not dst.parent.is_dir():
        raise ConversionError(f"{dst.parent}: no such directory")
    return dst


def check_variant(name: str) -> None:
    if name not in variants_table():
        raise ConversionError(f"unknown variant {name!r}; run `convnext variants` for the list")


def variants_table() -> dict:
    import convnext_torch

    return convnext_torch.VARIANTS


@contextlib.contextmanager
def atomic_output(dst: Path) -> Iterator[str]:
    """A temporary path beside `dst` with the same suffix (Keras checks it), renamed onto
    `dst` only when the block succeeds; removed on any failure."""
    suffix = next(s for s in OUTPUT_SUFFIXES if dst.name.endswith(s))
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=f".tmp{suffix}", dir=dst.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
    try:
        yield tmp
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def progress_printer(what: str):
    """Progress on a terminal: a counter rewritten in place; nothing when piped."""
    if not sys.stderr.isatty():
        return None

    def show(done: int, total: int) -> None:
        end = "\n" if done == total else ""
        print(f"\r{what} {done}/{total}", end=end, file=sys.stderr, flush=True)

    return show


if __name__ == "__main__":
    sys.exit(main())
