"""The `convnext` command line.

    convnext convert SRC DST [--from auto|official|timm|hf] [--to keras|keras-applications|official|timm]
                     [--variant NAME] [--num-classes N] [--ema] [--no-top] [--force]
    convnext compare TORCH_SRC KERAS_SRC [--variant NAME] [--size H W] [--batch N] [--rtol R]
    convnext inspect FILE [--from ...] [--ema]
    convnext variants

Every failure ends in one line on stderr and exit status 1; nothing is left at DST. compare
exits 1 as well when the two models disagree, after printing where.
"""  # noqa: E501

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from pathlib import Path

from converters.checkpoint import ConversionError
from converters.files import KERAS_SUFFIXES, TORCH_SUFFIXES, suffix_of

LAYOUTS = ("auto", "official", "timm", "hf")
TARGETS = ("keras", "keras-applications", "official", "timm")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="convnext",
        description="Convert ConvNeXt checkpoints between PyTorch and Keras 3, strictly.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    convert = commands.add_parser(
        "convert",
        help="PyTorch checkpoint -> Keras, Keras -> PyTorch, or one PyTorch layout -> another",
        description="Convert a ConvNeXt checkpoint. SRC: a PyTorch file (.pth/.pt/.bin, "
        ".safetensors, or a Hugging Face directory) in the official, timm or Hugging Face "
        "layout, or a Keras file (.keras, or .weights.h5 with --variant). DST's suffix picks "
        "the target unless --to says: .keras/.weights.h5 -> keras, .pth/.pt/.bin/.safetensors "
        "-> official.",
    )
    convert.add_argument("src", type=Path, help="checkpoint to read")
    convert.add_argument("dst", type=Path, help="file to write")
    convert.add_argument(
        "--from",
        dest="layout",
        choices=LAYOUTS,
        default="auto",
        help="key layout of a PyTorch SRC (default: detected)",
    )
    convert.add_argument(
        "--to", dest="target", choices=TARGETS, help="what to write (default: from DST's suffix)"
    )
    add_model_options(convert)
    convert.add_argument(
        "--no-top", action="store_true", help="keras-applications: write include_top=False weights"
    )
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
    compare.add_argument("torch_src", type=Path, help="PyTorch checkpoint")
    compare.add_argument("keras_src", type=Path, help="Keras model: NAME.keras or NAME.weights.h5")
    compare.add_argument(
        "--from",
        dest="layout",
        choices=LAYOUTS,
        default="auto",
        help="key layout of TORCH_SRC (default: detected)",
    )
    add_model_options(compare)
    compare.add_argument("--size", type=int, nargs=2, default=(224, 224), metavar=("H", "W"))
    compare.add_argument("--batch", type=int, default=4, help="images to compare (default 4)")
    compare.add_argument("--seed", type=int, default=0, help="seed of the random images")
    compare.add_argument(
        "--rtol", type=float, default=1e-4, help="largest relative difference accepted (1e-4)"
    )
    compare.set_defaults(run=run_compare)

    inspect = commands.add_parser(
        "inspect", help="what a checkpoint holds: layout, variant, classes, dtype, size"
    )
    inspect.add_argument("file", type=Path, help="PyTorch checkpoint or Keras file")
    inspect.add_argument(
        "--from",
        dest="layout",
        choices=LAYOUTS,
        default="auto",
        help="key layout (default: detected)",
    )
    inspect.add_argument("--ema", action="store_true", help="inspect the EMA weights")
    inspect.set_defaults(run=run_inspect)

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


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variant", help="variant name; inferred from tensor shapes if omitted")
    parser.add_argument("--num-classes", type=int, help="classes of the head; inferred if omitted")
    parser.add_argument(
        "--ema", action="store_true", help="take a training checkpoint's EMA weights ('model_ema')"
    )


# --- convert -------------------------------------------------------------------------------


def run_convert(args: argparse.Namespace) -> int:
    target = args.target or target_from_suffix(args.dst)
    check_target_suffix(target, args.dst)
    dst = check_destination(args.dst, args.force)
    if args.variant is not None:
        check_variant(args.variant)
    if suffix_of(args.src, KERAS_SUFFIXES):
        if target not in ("official", "timm"):
            raise ConversionError(f"{args.src} is a Keras file already: --to official or timm")
        if args.layout != "auto" or args.ema:
            raise ConversionError("--from and --ema describe PyTorch sources, not Keras files")
        return keras_to_pytorch_file(args, target, dst)

    state = read_state_dict(args.src, args.layout, args.ema)
    variant, overrides = model_config(state, args.variant, args.num_classes)
    if target == "keras":
        return pytorch_to_keras_file(state, variant, overrides, dst)
    if target == "keras-applications":
        return pytorch_to_keras_applications(state, variant, overrides, dst, not args.no_top)
    return pytorch_to_pytorch_file(state, variant, overrides, dst, target)


def pytorch_to_keras_file(state, variant: str, overrides: dict, dst: Path) -> int:
    import convnext_tf
    from converters.convert import torch_to_keras
    from converters.files import atomic_output

    build = convnext_tf.create_backbone if "out_indices" in overrides else convnext_tf.create_model
    model = build(variant, **overrides)
    report = torch_to_keras(state, model, progress=progress_printer("assigning"))
    say_dtypes(report.source_dtypes, report.target_dtype)
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
        call = f"convnext_tf.{build.__name__}({variant!r}, {args_text})"
        say(f"load with: {call}.load_weights({str(dst)!r})")
    return 0


def pytorch_to_keras_applications(
    state, variant: str, overrides: dict, dst: Path, include_top: bool
) -> int:
    from converters import keras_applications
    from converters.files import atomic_output

    if "out_indices" in overrides:
        raise ConversionError("keras.applications has no detection-backbone form")
    if overrides.get("in_chans", 3) != 3 or "layer_scale_init_value" in overrides:
        raise ConversionError("keras.applications models take 3 channels and have layer scale")
    classes = overrides.get("num_classes", 1000)
    if include_top and classes == 0:
        raise ConversionError(f"{state.source} has no head: use --no-top")
    model = keras_applications.build(variant, classes, include_top)
    depths = variants_table()[variant][0]  # keras_applications.build refused the others
    skipped = keras_applications.assign(state, model, depths, include_top)
    if skipped:
        say(f"skipped (no top): {', '.join(skipped)}")
    say(f"writing {dst}")
    with atomic_output(dst) as tmp:
        model.save_weights(tmp)
    name = keras_applications.CONSTRUCTORS[variant]
    top = f"classes={classes}, classifier_activation=None" if include_top else "include_top=False"
    say(f"wrote {dst}: {len(model.weights)} tensors for keras.applications.{name}")
    say(
        f"load with: keras.applications.{name}(weights={str(dst)!r}, {top}); it takes [0, 255] "
        "pixels and normalises them itself"
    )
    return 0


def pytorch_to_pytorch_file(state, variant: str, overrides: dict, dst: Path, layout: str) -> int:
    import torch

    import convnext_torch
    from converters.convert import check_match

    build = (
        convnext_torch.create_backbone
        if "out_indices" in overrides
        else convnext_torch.create_model
    )
    with torch.device("meta"):  # names and shapes only
        model = build(variant, **overrides)
    check_match(state, {k: tuple(v.shape) for k, v in model.state_dict().items()})
    return write_pytorch(state.tensors, variant, dst, layout)


def keras_to_pytorch_file(args: argparse.Namespace, layout: str, dst: Path) -> int:
    from converters.convert import keras_to_torch
    from converters.files import keras_variant, load_keras_model

    say(f"reading {args.src}")
    overrides = {} if args.num_classes is None else {"num_classes": args.num_classes}
    model = load_keras_model(args.src, args.variant, overrides)
    variant = keras_variant(model)
    tensors = {k: v.numpy() for k, v in keras_to_torch(model).items()}
    say(f"read {variant}, num_classes={model.num_classes}: {len(tensors)} tensors")
    return write_pytorch(tensors, variant, dst, layout)


def write_pytorch(tensors: dict, variant: str, dst: Path, layout: str) -> int:
    from converters import formats
    from converters.files import write_torch

    conv_mlp = layout == "timm" and variant in formats.TIMM_CONV_MLP_VARIANTS
    renamed = formats.from_official(tensors, layout, conv_mlp=conv_mlp)
    say(f"writing {dst} ({layout} layout" + (", 1x1-conv MLP weights" if conv_mlp else "") + ")")
    write_torch(renamed, dst)
    parameters = sum(int(v.size) for v in renamed.values())
    say(f"wrote {dst}: {len(renamed)} tensors, {parameters:,} parameters")
    return 0


def target_from_suffix(dst: Path) -> str:
    if suffix_of(dst, KERAS_SUFFIXES):
        return "keras"
    if suffix_of(dst, TORCH_SUFFIXES):
        return "official"
    known = ", ".join(KERAS_SUFFIXES + TORCH_SUFFIXES)
    raise ConversionError(f"{dst}: output must end in one of {known}")


def check_target_suffix(target: str, dst: Path) -> None:
    allowed = {
        "keras": KERAS_SUFFIXES,
        "keras-applications": (".weights.h5",),
        "official": TORCH_SUFFIXES,
        "timm": TORCH_SUFFIXES,
    }[target]
    if not suffix_of(dst, allowed):
        raise ConversionError(f"{dst}: --to {target} writes {' or '.join(allowed)} files")


# --- compare -------------------------------------------------------------------------------


def run_compare(args: argparse.Namespace) -> int:
    if args.variant is not None:
        check_variant(args.variant)
    if args.batch < 1 or min(args.size) < 32:
        raise ConversionError("--batch must be positive and --size at least 32 32")

    import numpy as np

    import convnext_torch
    from converters.convert import load_torch_model
    from converters.files import load_keras_model
    from converters.parity import compare

    if not suffix_of(args.keras_src, KERAS_SUFFIXES):
        raise ConversionError(f"{args.keras_src}: a Keras model must end in .keras or .weights.h5")
    state = read_state_dict(args.torch_src, args.layout, args.ema)
    variant, overrides = model_config(state, args.variant, args.num_classes)
    backbone = "out_indices" in overrides
    build = convnext_torch.create_backbone if backbone else convnext_torch.create_model
    torch_model = build(variant, **overrides)
    load_torch_model(state, torch_model)
    keras_model = load_keras_model(args.keras_src, variant, overrides)

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
    if report.top1_agreement is not None and report.top1_agreement < 1.0:
        print("DIFFERENT: within tolerance, but some top-1 classes differ")
        return 1
    print(f"SAME: every output agrees within {args.rtol:g} relative")
    return 0


# --- inspect and variants ------------------------------------------------------------------


def run_inspect(args: argparse.Namespace) -> int:
    if suffix_of(args.file, KERAS_SUFFIXES):
        return inspect_keras(args.file)
    from converters.convert import infer_config

    state = read_state_dict(args.file, args.layout, args.ema, quiet=True)
    rows = [("file", str(args.file)), ("layout", state.layout)]
    if state.wrapper:
        rows.append(("weights", f"under {state.wrapper!r}"))
    if state.skipped:
        rows.append(("not weights", ", ".join(state.skipped)))
    if state.has_ema and not args.ema:
        rows.append(("EMA weights", "present: --ema converts them instead"))
    if state.outside_backbone:
        rows.append(("not backbone", f"{len(state.outside_backbone)} tensors (neck, heads)"))
    try:
        config = infer_config(state)
        try:
            variant = config.variant()
        except ConversionError:
            variant = f"unknown (depths {config.depths}, dims {config.dims})"
        if config.out_indices is not None:
            classes = f"none: a detection backbone, out_indices {config.out_indices}"
        else:
            classes = str(config.num_classes) if config.num_classes else "0 (no head)"
        rows += [
            ("variant", variant),
            ("classes", classes),
            ("input channels", str(config.in_chans)),
            ("layer scale", "yes" if config.layer_scale else "no"),
        ]
    except ConversionError as e:
        rows.append(("variant", f"not inferred: {e}"))
    rows.append(("dtype", ", ".join(state.dtypes)))
    rows.append(("tensors", str(len(state.tensors))))
    rows.append(("parameters", f"{sum(int(v.size) for v in state.tensors.values()):,}"))
    rows += [("note", note) for note in state.notes]
    if state.nonfinite:
        rows.append(("NaN/Inf in", ", ".join(state.nonfinite)))
    if state.config and "layer_norm_eps" in state.config:
        rows.append(
            ("config.json", f"layer_norm_eps {state.config['layer_norm_eps']} (final norm)")
        )
    for name, value in rows:
        print(f"{name + ':':<16}{value}")
    return 0


def inspect_keras(path: Path) -> int:
    from converters.files import h5_array_count, keras_variant, load_keras_model

    if path.name.endswith(".weights.h5"):
        if not path.is_file():
            raise ConversionError(f"{path}: no such file")
        print(f"{'file:':<16}{path} (Keras weights; the variant is not recorded)")
        print(f"{'arrays:':<16}{h5_array_count(path)}")
        return 0
    model = load_keras_model(path)
    print(f"{'file:':<16}{path} (Keras model)")
    print(f"{'variant:':<16}{keras_variant(model)}")
    print(f"{'classes:':<16}{model.num_classes}")
    print(f"{'dtype:':<16}{model.dtype_policy.variable_dtype}")
    print(f"{'tensors:':<16}{len(model.weights)}")
    print(f"{'parameters:':<16}{model.count_params():,}")
    return 0


def run_variants(args: argparse.Namespace) -> int:
    import torch

    import convnext_torch

    print(f"{'name':<26}{'depths':<16}{'dims':<26}{'parameters':>12}")
    for name, (depths, dims) in variants_table().items():
        with torch.device("meta"):  # shapes only: no memory, no initialisation cost
            model = convnext_torch.create_model(name)
        count = sum(p.numel() for p in model.parameters())
        print(f"{name:<26}{str(depths):<16}{str(dims):<26}{count:>12,}")
    print("parameters: 1000 classes, 3 input channels; isotropic models: one stage")
    return 0


# --- shared --------------------------------------------------------------------------------


def read_state_dict(path: Path, layout: str = "auto", ema: bool = False, quiet: bool = False):
    from converters.checkpoint import load_state_dict

    if not quiet:
        say(f"reading {path}")
    state = load_state_dict(path, layout=layout, ema=ema)
    if quiet:
        return state
    where = f" under {state.wrapper!r}" if state.wrapper else ""
    dtypes = ", ".join(state.dtypes)
    say(f"found {len(state.tensors)} tensors ({dtypes}){where}, {state.layout} layout")
    if state.has_ema and not ema:
        say("note: the file also holds EMA weights ('model_ema'); --ema converts those instead")
    if state.outside_backbone:
        groups = Counter(key.split(".")[0] for key in state.outside_backbone)
        listed = ", ".join(f"{name}.* ({count})" for name, count in groups.items())
        say(f"skipped {len(state.outside_backbone)} tensors outside 'backbone.': {listed}")
    for note in state.notes:
        say(f"note: {note}")
    eps = (state.config or {}).get("layer_norm_eps")
    if eps is not None and eps != 1e-6:
        say(
            f"note: config.json gives the final LayerNorm eps {eps:g}; these models use 1e-6, "
            "which moves logits by about 1e-6 / (2 x variance of the pooled features) relative "
            "(5e-7 measured on random ConvNeXt-T weights)"
        )
    if state.nonfinite:
        names = ", ".join(state.nonfinite[:4]) + (", ..." if len(state.nonfinite) > 4 else "")
        count = f"{len(state.nonfinite)} tensor{'s' if len(state.nonfinite) > 1 else ''}"
        say(f"warning: {count} with NaN or Inf ({names}); kept as they are")
    return state


def model_config(state, variant: str | None, num_classes: int | None) -> tuple[str, dict]:
    """The variant and create_model overrides for a checkpoint: read off its tensor shapes,
    or taken from --variant/--num-classes, whose mismatches the strict check then names."""
    from converters.convert import infer_config

    if num_classes is not None and num_classes < 0:
        raise ConversionError(f"--num-classes must be 0 (no head) or more, got {num_classes}")
    try:
        inferred = infer_config(state)
    except ConversionError:
        if variant is None:
            raise
        inferred = None  # --variant given: the strict check names what differs
    name = variant or inferred.variant()
    overrides = inferred.overrides() if inferred else {}
    if num_classes is not None:
        if "out_indices" in overrides:
            raise ConversionError(f"{state.source} is a detection backbone: it has no head")
        overrides["num_classes"] = num_classes
    settings = ", ".join(f"{k}={v}" for k, v in overrides.items())
    how = "using" if variant else "inferred"
    say(f"{how} {name}: {settings}" + ("" if variant else " (from the tensor shapes)"))
    if overrides.get("num_classes") == 0:
        say("note: no classifier (head.* absent): the model outputs the pooled features")
    if "out_indices" in overrides:
        say(
            "note: a detection backbone (norm{i} per stage, no final norm or head): "
            "built as ConvNeXtBackbone"
        )
    return name, overrides


def say_dtypes(source_dtypes: tuple[str, ...], target_dtype: str) -> None:
    widened = [d for d in source_dtypes if d in ("float16", "bfloat16")]
    if widened:
        say(f"widened {', '.join(widened)} to {target_dtype} (exact)")
    if "float64" in source_dtypes and target_dtype != "float64":
        say(f"rounded float64 to {target_dtype}")


def check_destination(dst: Path, force: bool) -> Path:
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
    """Every variant name -> (depths, dims); an isotropic model has one depth and one dim."""
    import convnext_torch

    isotropic = {n: ((d,), (c,)) for n, (d, c, _) in convnext_torch.ISOTROPIC_VARIANTS.items()}
    return {**convnext_torch.VARIANTS, **isotropic}


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
