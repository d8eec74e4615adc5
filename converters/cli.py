"""The `convnext` command line.

    convnext convert SRC DST [--variant NAME] [--num-classes N] [--force]
    convnext compare TORCH_SRC KERAS_SRC [--variant NAME] [--size H W] [--batch N] [--rtol R]
    convnext variants

Every failure ends in one line on stderr and exit status 1; nothing is left at DST. compare
exits 1 as well when the two models disagree, after printing where.
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

    compare = commands.add_parser(
        "compare",
        help="PyTorch checkpoint vs Keras file: where do they stop agreeing?",
        description="Run a PyTorch checkpoint and a Keras model (.keras, or .weights.h5 of the "
        "same variant) on the same random images and print the difference of each of the four "
        "stage outputs and of the logits. Exit status 1 if any exceeds --rtol (relative to the "
        "largest PyTorch value) or a top-1 class differs.",
    )
    compare.add_argument("torch_src", type=Path, help="PyTorch checkpoint (.pth/.pt)")
    compare.add_argument("keras_src", type=Path, help="Keras model: NAME.keras or NAME.weights.h5")
    compare.add_argument("--variant", help="variant name; inferred from tensor shapes if omitted")
    compare.add_argument("--num-classes", type=int, help="classes of the head; inferred if omitted")
    compare.add_argument("--size", type=int, nargs=2, default=(224, 224), metavar=("H", "W"))
    compare.add_argument("--batch", type=int, default=4, help="images to compare (default 4)")
    compare.add_argument("--seed", type=int, default=0, help="seed of the random images")
    compare.add_argument(
        "--rtol", type=float, default=1e-4, help="largest relative difference accepted (1e-4)"
    )
    compare.set_defaults(run=run_compare)

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
    except Exception as e:  # a case not foreseen: still one line, the traceback on request
        if os.environ.get("CONVNEXT_DEBUG"):
            raise
        detail = " ".join(str(e).split())[:300]
        print(
            f"convnext: error: unexpected {type(e).__name__}: {detail} "
            "(set CONVNEXT_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return 1


def run_convert(args: argparse.Namespace) -> int:
    dst = check_destination(args.dst, args.force)
    if args.variant is not None:
        check_variant(args.variant)

    state = read_state_dict(args.src)
    variant, overrides = model_config(state, args.variant, args.num_classes)

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
        say(f"load with: import convnext_tf, keras; keras.models.load_model({str(dst)!r})")
    else:
        args_text = ", ".join(f"{k}={v!r}" for k, v in overrides.items())
        call = f"convnext_tf.create_model({variant!r}, {args_text})"
        say(f"load with: {call}.load_weights({str(dst)!r})")
    return 0


def run_compare(args: argparse.Namespace) -> int:
    if args.variant is not None:
        check_variant(args.variant)
    if args.batch < 1 or min(args.size) < 32:
        raise ConversionError("--batch must be positive and --size at least 32 32")
    keras_kind = check_keras_source(args.keras_src)

    import numpy as np

    import convnext_torch
    from converters.convert import load_torch_model
    from converters.parity import compare

    state = read_state_dict(args.torch_src)
    variant, overrides = model_config(state, args.variant, args.num_classes)
    torch_model = convnext_torch.create_model(variant, **overrides)
    load_torch_model(state, torch_model)
    keras_model = load_keras_model(args.keras_src, keras_kind, variant, overrides)

    channels = overrides.get("in_chans", 3)
    shape = (args.batch, channels, *args.size)
    images = np.random.default_rng(args.seed).standard_normal(shape).astype(np.float32)
    say(f"comparing on {args.batch} random images of {args.size[0]}x{args.size[1]}")
    report = compare(torch_model, keras_model, images)
    print(report.format())
    diverged = report.first_divergence(args.rtol)
    if diverged:
        print(f"DIFFERENT: {diverged} is the first output off by more than {args.rtol:g} relative")
        return 1
    if report.top1_agreement < 1.0:
        print("DIFFERENT: within tolerance, but some top-1 classes differ")
        return 1
    print(f"SAME: every stage and the logits agree within {args.rtol:g} relative")
    return 0


def read_state_dict(path: Path):
    from converters.checkpoint import load_state_dict

    say(f"reading {path}")
    state = load_state_dict(path)
    where = f" under {state.wrapper!r}" if state.wrapper else ""
    say(f"found {len(state.tensors)} tensors ({', '.join(state.dtypes)}){where}")
    if state.nonfinite:
        names = ", ".join(state.nonfinite[:4]) + (", ..." if len(state.nonfinite) > 4 else "")
        count = f"{len(state.nonfinite)} tensor{'s' if len(state.nonfinite) > 1 else ''}"
        say(f"warning: {count} with NaN or Inf ({names}); kept as they are")
    return state


def model_config(state, variant: str | None, num_classes: int | None) -> tuple[str, dict]:
    """The variant and create_model overrides for a checkpoint: read off its tensor shapes,
    or taken from --variant/--num-classes, whose mismatches the strict check then names."""
    from converters.convert import infer_config

    if num_classes is not None and num_classes < 1:
        raise ConversionError(f"--num-classes must be positive, got {num_classes}")
    try:
        inferred = infer_config(state)
    except ConversionError:
        if variant is None:
            raise
        inferred = None  # --variant given: the strict check names what differs
    name = variant or inferred.variant(variants_table())
    overrides = inferred.overrides() if inferred else {}
    if num_classes is not None:
        overrides["num_classes"] = num_classes
    settings = ", ".join(f"{k}={v}" for k, v in overrides.items())
    how = "using" if variant else "inferred"
    say(f"{how} {name}: {settings}" + ("" if variant else " (from the tensor shapes)"))
    return name, overrides


def check_keras_source(path: Path) -> str:
    kind = next((s for s in OUTPUT_SUFFIXES if path.name.endswith(s)), None)
    if kind is None:
        raise ConversionError(f"{path}: a Keras model must end in {' or '.join(OUTPUT_SUFFIXES)}")
    if not path.is_file():
        raise ConversionError(f"{path}: no such file")
    return kind


def load_keras_model(path: Path, kind: str, variant: str, overrides: dict):
    """A .keras file as saved (custom classes only from convnext_tf, Keras' safe mode on: no
    lambdas are deserialised), or a .weights.h5 file loaded into the checkpoint's variant."""
    import keras

    import convnext_tf
    from converters.checkpoint import first_sentence

    try:
        if kind == ".keras":
            model = keras.models.load_model(path, safe_mode=True)
            if not isinstance(model, convnext_tf.ConvNeXt):
                raise ConversionError(f"{path}: holds a {type(model).__name__}, not a ConvNeXt")
            return model
        model = convnext_tf.create_model(variant, **overrides)
        model.load_weights(path)
        return model
    except ConversionError:
        raise
    except Exception as e:  # Keras raises many types for a bad file
        raise ConversionError(f"{path}: cannot load ({first_sentence(e)})") from None


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
