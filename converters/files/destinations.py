"""Where an output may go, decided before any work: the suffixes each target writes, nothing
replaced without `force` (and then only what the command itself writes), never an input by any
name (the checkpoint, anything in a SavedModel or pictures folder, through symlinks), a
directory that takes new files. Standard library only."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path

from converters.errors import ConversionError
from converters.names.layouts import TARGETS

KERAS_SUFFIXES = (".weights.h5", ".keras")


TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")


def suffix_of(path: Path, suffixes: tuple[str, ...]) -> str | None:
    return next((s for s in suffixes if path.name.endswith(s)), None)


def check_writable(dst: Path) -> None:
    """Files can be created beside `dst`: tried first (a file without a name, where the system
    has them), as a read-only directory would otherwise be found after the whole conversion."""
    try:
        with tempfile.TemporaryFile(dir=dst.parent):
            pass
    except OSError as e:
        raise cannot_write(dst, e) from None


def cannot_write(dst: Path, error: OSError) -> ConversionError:
    if says_no_space(error):
        return ConversionError(f"no space left writing {dst}")
    return ConversionError(f"{dst}: cannot create files in {dst.parent} ({error.strerror})")


HF_FILES = ("config.json", "model.safetensors")  # what `target` hf writes


SUFFIXES = {  # the files each target writes; hf: a directory
    "keras": KERAS_SUFFIXES,
    "keras-applications": (".weights.h5",),
    "official": TORCH_SUFFIXES,
    "timm": TORCH_SUFFIXES,
    "torchvision": TORCH_SUFFIXES,
    "hf": (),
}


def target_from_suffix(dst: Path) -> str:
    if suffix_of(dst, KERAS_SUFFIXES):
        return "keras"
    if suffix_of(dst, TORCH_SUFFIXES):
        return "official"
    known = ", ".join(KERAS_SUFFIXES + TORCH_SUFFIXES)
    raise ConversionError(
        f"{dst}: output must end in one of {known}, or be a directory with `target` hf"
    )


def check_target(target: str, dst: Path) -> None:
    if target not in TARGETS:
        raise ConversionError(f"unknown `target` {target!r}; known: {', '.join(TARGETS)}")
    if target == "hf":
        if suffix_of(dst, KERAS_SUFFIXES + TORCH_SUFFIXES):
            raise ConversionError(f"{dst}: `target` hf writes a directory, not a file")
        return
    if not suffix_of(dst, SUFFIXES[target]):
        raise ConversionError(
            f"{dst}: `target` {target} writes {' or '.join(SUFFIXES[target])} files"
        )


def check_hf_destination(dst: Path, force: bool, src: Path) -> None:
    """Before any work: nothing at `dst`, or with `force` a Hugging Face directory (one with a
    config.json), never the source itself, and files can be created beside it."""
    if os.path.lexists(dst):
        if dst.resolve() == src.resolve():
            raise ConversionError(f"{dst}: is the source; write the conversion elsewhere")
        if not force:
            raise ConversionError(f"{dst}: exists; pass `force` to overwrite it")
        if not (dst.is_dir() and (dst / "config.json").is_file()) or dst.is_symlink():
            raise ConversionError(
                f"{dst}: exists and is not a Hugging Face directory; `force` replaces only those"
            )
        others = sorted(p.name for p in dst.iterdir() if p.name not in HF_FILES)
        if others:
            listed = ", ".join(others[:4]) + (", ..." if len(others) > 4 else "")
            raise ConversionError(
                f"{dst}: holds files this command does not write ({listed}); `force` would "
                "delete them: write elsewhere, or remove them first"
            )
    if not dst.parent.is_dir():
        raise ConversionError(f"{dst.parent}: no such directory")
    check_writable(dst)


def check_destination(dst: Path, force: bool, src: Path | None = None) -> None:
    """Before any work: `dst` may be written (its directory exists and takes new files), and
    nothing is at `dst` (a dangling symlink counts) unless `force`, nor ever `src` itself, by
    any name: the file would be replaced by its conversion (a training checkpoint would lose
    its optimizer state and epoch)."""
    if dst.is_dir():
        raise ConversionError(f"{dst}: is a directory")
    if os.path.lexists(dst):
        if src is not None and is_source(src, dst):
            named = "" if dst == src else f" ({src})"
            raise ConversionError(f"{dst}: is the source{named}; write the conversion elsewhere")
        if not force:
            raise ConversionError(f"{dst}: exists; pass `force` to overwrite it")
    if not dst.parent.is_dir():
        raise ConversionError(f"{dst.parent}: no such directory")
    check_writable(dst)


def is_source(src: Path, dst: Path) -> bool:
    """Whether `dst` is `src` or, for a Hugging Face directory, the weights file read in it."""
    sources = [src / name for name in DIRECTORY_FILES] if src.is_dir() else [src]
    for source in sources:
        try:
            if os.path.samefile(source, dst):
                return True
        except OSError:  # either missing (a dangling symlink at dst)
            pass
    return False


def check_report_destinations(
    outputs: list[tuple[str, Path]], force: bool, sources: list[Path]
) -> None:
    """Before the verification starts, so that a place that cannot be written costs no
    minutes: each output path is no directory, none of the inputs (the checkpoint, the
    artifact or anything in it, the pictures), not another output, in a directory that takes
    new files, and holds nothing unless `force`, which replaces only a regular file (never a
    symlink, a device or a FIFO, which a report would turn into a plain file)."""
    places = input_places(sources)
    seen: dict[Path, str] = {}
    for name, path in outputs:
        if path.is_dir():
            raise ConversionError(f"{path}: is a directory; `{name}` takes a file path")
        if is_input(path, places):
            raise ConversionError(f"{path}: is one of verify's inputs; write `{name}` elsewhere")
        key = path.parent.resolve() / path.name
        if key in seen:
            raise ConversionError(f"{path}: given to both `{seen[key]}` and `{name}`")
        seen[key] = name
        if os.path.lexists(path):
            if not force:
                raise ConversionError(f"{path}: exists; pass `force` to overwrite it")
            if path.is_symlink() or not path.is_file():
                raise ConversionError(
                    f"{path}: exists and is not a regular file; `force` replaces only those"
                )
        if not path.parent.is_dir():
            raise ConversionError(f"{path.parent}: no such directory")
        check_writable(path)


def input_places(sources: list[Path]) -> tuple[set[str], set[tuple[int, int]]]:
    """Every directory an input holds (real paths, through symlinks: a SavedModel whose
    variables/ is a link elsewhere) and every file it holds (device and inode, whatever its
    name): where no output may be written."""
    directories: set[str] = set()
    files: set[tuple[int, int]] = set()
    for source in sources:
        if not source.is_dir():
            with contextlib.suppress(OSError):
                found = os.stat(source)
                files.add((found.st_dev, found.st_ino))
            continue
        for root, subdirectories, file_names in os.walk(source, followlinks=True):
            real = os.path.realpath(root)
            if real in directories:  # a link back up the tree: walked already
                subdirectories[:] = []
                continue
            directories.add(real)
            for name in file_names:
                with contextlib.suppress(OSError):
                    found = os.stat(os.path.join(root, name))
                    files.add((found.st_dev, found.st_ino))
    return directories, files


def is_input(path: Path, places: tuple[set[str], set[tuple[int, int]]]) -> bool:
    """Whether writing `path` would write an input (input_places) or into one."""
    directories, files = places
    if os.path.realpath(path.parent) in directories:
        return True
    try:
        found = os.stat(path)
    except OSError:
        return False
    return (found.st_dev, found.st_ino) in files


SAVEDMODEL_FILES = frozenset(
    "saved_model.pb saved_model.pbtxt variables assets assets.extra fingerprint.pb "
    "keras_metadata.pb".split()
)  # what a SavedModel directory holds: `force` replaces a directory of these only


SAVEDMODEL_SUFFIXES = ("", ".savedmodel", ".saved_model")


def is_tflite_path(dst: Path) -> bool:
    return dst.suffix.lower() == ".tflite"


def export_destination_problem(dst: Path) -> str | None:
    """Why `dst` cannot be an export destination, if it cannot."""
    suffix = dst.suffix.lower()
    if suffix in (".keras", ".h5", ".pth", ".pt", ".bin", ".safetensors"):
        return (
            f"{dst}: export writes a SavedModel directory (a path without a suffix) or a "
            ".tflite file; `convnext convert` writes Keras and PyTorch files"
        )
    if suffix != ".tflite" and suffix not in SAVEDMODEL_SUFFIXES and suffix[1:].isalpha():
        return (
            f"{dst}: export writes a .tflite file or a SavedModel directory (a path without "
            f"a suffix), not {dst.suffix} files"
        )
    if os.path.lexists(dst) and suffix != ".tflite" and not dst.is_dir():
        return f"{dst}: exists and is not a directory"
    if dst.is_dir() and not (dst / "saved_model.pb").is_file():
        # `force` replaces a SavedModel, never a directory of something else
        return f"{dst}: a directory that is not a SavedModel; it is not replaced"
    if suffix == ".tflite" and dst.is_dir():
        return f"{dst}: is a directory"
    if dst.is_dir():
        others = sorted(p.name for p in dst.iterdir() if p.name not in SAVEDMODEL_FILES)
        if others:
            listed = ", ".join(others[:4]) + (", ..." if len(others) > 4 else "")
            return (
                f"{dst}: holds files a SavedModel does not ({listed}); replacing it would "
                "delete them: export elsewhere, or remove them first"
            )
    return None


DIRECTORY_FILES = ("model.safetensors", "pytorch_model.bin")  # Hugging Face's names


def says_no_space(error: BaseException) -> bool:
    """Whether a writer's error is for a full disk or quota: an OSError's errno (h5py's too),
    or the text of safetensors' ("No space left on device (os error 28)")."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return any(text in str(error) for text in ("No space left", "Disk quota exceeded"))
