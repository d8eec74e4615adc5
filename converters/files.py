"""Reading Keras files and writing every output file, atomically.

Writing goes to a temporary directory of its own beside the destination, and the finished
file is moved onto the destination name only once complete (and onto an existing file only
when asked to): a failed or interrupted conversion leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import io
import json
import os
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import h5py
import keras
import numpy as np
import torch
from safetensors.numpy import save_file

import convnext_tf
from converters.archives import CONFIG_LIMIT, keras_member
from converters.errors import ConversionError, first_sentence
from convnext_spec.spec import (
    ModelSpec,
    SpecError,
    changes_from_variant,
    from_arguments,
    parameter_count,
)

KERAS_SUFFIXES = (".weights.h5", ".keras")
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")


def suffix_of(path: Path, suffixes: tuple[str, ...]) -> str | None:
    return next((s for s in suffixes if path.name.endswith(s)), None)


TEMP_PREFIX = ".convnext-"  # the temporary directory beside DST: .convnext-XXXXXXXX
SPACE_MARGIN = 1 << 20  # bytes kept free beyond an output's expected size
BYTES_PER_ARRAY = 4096  # an upper bound of the file formats' overhead per array (headers, names)
NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EMLINK}
OUTPUT_SUFFIXES = KERAS_SUFFIXES + TORCH_SUFFIXES


@contextlib.contextmanager
def atomic_output(
    dst: Path, force: bool = False, size: int = 0, directories: bool = True
) -> Iterator[str]:
    """A path to write `dst` at, in a temporary directory of its own beside `dst`, with the
    same suffix (Keras checks it); the file is moved to `dst` when the block succeeds. Without
    `force` that move never replaces anything, even what appeared at `dst` meanwhile. The
    directory, with whatever a writer put there (safetensors' own temporary file, Keras' see
    write_keras), is removed in every case: an exception, or KeyboardInterrupt, which the
    command line raises for SIGTERM and SIGHUP as well (SIGKILL cannot be cleaned up after).
    `size`: the bytes expected, checked against the free space first; a writer's error for a
    full disk becomes "no space left writing DST". `directories`: whether `force` replaces a
    directory at `dst` (a SavedModel, a Hugging Face directory); a file output never does,
    even one that appeared while the work ran."""
    check_free_space(dst, size)
    try:  # a short name: DST's own may be at the file-system limit of 255 bytes
        workdir = tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=dst.parent)
    except OSError as e:
        raise cannot_write(dst, e) from None
    try:
        tmp = os.path.join(workdir, "output" + (suffix_of(dst, OUTPUT_SUFFIXES) or dst.suffix))
        try:
            yield tmp
            mode = usual_mode(workdir)
            if os.path.isdir(tmp):  # a SavedModel: directories need the search bits
                mode |= (mode & 0o444) >> 2
            os.chmod(tmp, mode)  # safetensors makes 0600 files
            if force and directories and dst.is_dir() and not dst.is_symlink():
                os.rename(dst, os.path.join(workdir, "replaced"))  # removed with workdir
            move_into_place(tmp, dst, force)
        except ConversionError:
            raise
        except Exception as e:
            if says_no_space(e) or disk_full(dst.parent):
                needs = f": it takes about {megabytes(size)}" if size else ""
                raise ConversionError(f"no space left writing {dst}{needs}") from None
            raise
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


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


def free_space(directory: Path) -> int | None:
    """Bytes that can still be written on `directory`'s file system (None: not known)."""
    try:
        fs = os.statvfs(directory)
    except (AttributeError, OSError):  # no statvfs on Windows
        return None
    root = getattr(os, "geteuid", lambda: -1)() == 0  # root may use the reserved blocks
    return (fs.f_bfree if root else fs.f_bavail) * fs.f_frsize


def check_free_space(dst: Path, size: int) -> None:
    free = free_space(dst.parent)
    if free is not None and free < size + SPACE_MARGIN:
        raise ConversionError(
            f"no space left writing {dst}: it takes about {megabytes(size)}, "
            f"{megabytes(free)} free there"
        )


def megabytes(size: int) -> str:
    return f"{size / 1e6:,.1f} MB"


def says_no_space(error: BaseException) -> bool:
    """Whether a writer's error is for a full disk or quota: an OSError's errno (h5py's too),
    or the text of safetensors' ("No space left on device (os error 28)")."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return any(text in str(error) for text in ("No space left", "Disk quota exceeded"))


def disk_full(directory: Path) -> bool:
    """Whether `directory`'s file system is full: torch's error for that names no cause
    ("[enforce fail at inline_container.cc:672] . unexpected pos 5139776 vs 5139664")."""
    free = free_space(directory)
    return free is not None and free < SPACE_MARGIN


def usual_mode(directory: str) -> int:
    """The mode a new file gets in `directory` (0666 less the umask): found by creating one, as
    reading the umask means setting it, for every thread of the process."""
    probe = os.path.join(directory, "mode")
    os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        return stat.S_IMODE(os.stat(probe).st_mode)
    finally:
        os.unlink(probe)


def move_into_place(tmp: str, dst: Path, force: bool) -> None:
    """`tmp` renamed to `dst`; without `force`, failing if anything is at `dst` at that very
    moment (a dangling symlink included): a hard link, which never replaces, or where the file
    system has none, a rename that does not (Linux's RENAME_NOREPLACE)."""
    if force:
        os.replace(tmp, dst)
        return
    try:
        os.link(tmp, dst)  # `tmp` goes with its directory
    except FileExistsError:
        raise appeared(dst) from None
    except OSError as e:
        if e.errno not in NO_HARD_LINKS:
            raise
        rename_noreplace(tmp, dst)


def appeared(dst: Path) -> ConversionError:
    return ConversionError(
        f"{dst}: exists (it appeared during the conversion); pass `force` to overwrite it"
    )


def rename_noreplace(tmp: str, dst: Path) -> None:
    """renameat2(tmp, dst, RENAME_NOREPLACE): Linux, on the file systems without hard links
    (FAT, exFAT); where that is missing too, `force` is the only way."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        renameat2 = None
    at_cwd, noreplace = -100, 1  # AT_FDCWD, RENAME_NOREPLACE
    if renameat2 is not None:
        if renameat2(at_cwd, os.fsencode(tmp), at_cwd, os.fsencode(dst), noreplace) == 0:
            return
        code = ctypes.get_errno()
        if code == errno.EEXIST:
            raise appeared(dst)
        if code not in (errno.EINVAL, errno.ENOSYS):  # flag or call unknown here
            raise OSError(code, os.strerror(code), str(dst))
    raise ConversionError(
        f"{dst}: this file system can neither link nor rename without replacing what may have "
        "appeared there meanwhile; pass `force` to write it all the same"
    )


def h5_array_count(path: Path) -> int:
    """How many arrays a Keras .weights.h5 file holds."""
    count = 0

    def visit(_name: str, obj: object) -> None:
        nonlocal count
        count += isinstance(obj, h5py.Dataset)

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return count


def load_keras_model(path: Path, spec: ModelSpec | None = None) -> keras.Model:
    """A convnext_tf model from a .keras file (Keras' safe mode: no lambdas deserialised), or
    from a .weights.h5 file loaded into a model of `spec`. Keras matches a weights file to the
    model by position, so the array count is checked first: a file of a deeper variant would
    otherwise load its first blocks and drop the rest without a word."""
    kind = suffix_of(path, KERAS_SUFFIXES)
    if kind is None:
        raise ConversionError(f"{path}: a Keras model must end in {' or '.join(KERAS_SUFFIXES)}")
    check_regular_file(path)
    try:
        if kind == ".keras":
            check_keras_archive(path)
            check_self_contained(io.BytesIO(keras_member(path, "model.weights.h5")), path)
            model = keras.models.load_model(path, safe_mode=True)
            if not isinstance(model, MODEL_KINDS):
                raise ConversionError(f"{path}: holds a {type(model).__name__}, not a ConvNeXt")
            return model
        if spec is None:
            raise ConversionError(
                f"{path}: a .weights.h5 file does not record its variant: pass `variant` "
                "(and `num_classes` unless 1000)"
            )
        model = convnext_tf.create_model(spec)
        check_self_contained(path, path)
        arrays = h5_array_count(path)
        if arrays != len(model.weights):
            changes = changes_from_variant(spec)
            raise ConversionError(
                f"{path}: holds {arrays} arrays, {spec.name} with {changes} has "
                f"{len(model.weights)}: another variant?"
            )
        model.load_weights(path)
        return model
    except ConversionError:
        raise
    except Exception as e:  # Keras and h5py raise many types for a bad file
        raise ConversionError(f"{path}: cannot load ({keras_reason(e)})") from None


def keras_reason(error: Exception) -> str:
    """What Keras' load errors mean for the user: they name a count of objects, not a cause."""
    text = first_sentence(error)
    if "could not be loaded" in text or "expected" in text and "variables" in text:
        return f"its weights do not fit the model (its config.json, or `variant`): {text}"
    if "could not be deserialized" in text:
        return f"its config.json names layers or arguments this version cannot build: {text}"
    return text


def check_self_contained(source, path: Path) -> None:
    """Refuse an HDF5 weights file that reaches outside itself before Keras reads it: a soft or
    external link, a dataset stored in another file (external storage) or assembled from
    others (a virtual dataset). HDF5 would follow them: read any file as weights, block on a
    FIFO, or crash (Keras before 3.13.2 followed them; h5py segfaults on some). Keras writes
    none of these. Arrays that declare far more bytes than the file holds (a dataset of fill
    values stores nothing, and reading it allocates its whole shape) are refused as well.
    `source` is the file or a file object; `path` names it in the message."""
    stored = source.getbuffer().nbytes if isinstance(source, io.BytesIO) else path.stat().st_size
    declared = 0
    with h5py.File(source, "r") as weights:
        groups, seen = [weights], {weights.id}
        while groups:
            group = groups.pop()
            for name in group:  # names only: nothing is resolved yet
                link = group.get(name, getlink=True)
                where = f"{group.name.rstrip('/')}/{name}"
                if not isinstance(link, h5py.HardLink):
                    kind = type(link).__name__
                    raise ConversionError(f"{path}: refused: {where} is a {kind} (links out)")
                item = group[name]
                if isinstance(item, h5py.Group):
                    if item.id in seen:  # a hard link back up the tree would never end
                        raise ConversionError(f"{path}: refused: {where} is a group seen before")
                    seen.add(item.id)
                    groups.append(item)
                elif isinstance(item, h5py.Dataset):
                    if item.external or item.is_virtual:
                        how = "a virtual dataset" if item.is_virtual else "stored in another file"
                        raise ConversionError(f"{path}: refused: {where} is {how}")
                    declared += declared_bytes(item)
                    if declared > 2 * stored + (1 << 20):  # Keras writes no compressed data
                        raise ConversionError(
                            f"{path}: refused: its arrays declare {declared:,} bytes or more, "
                            f"the file holds {stored:,} (arrays of fill values that would be "
                            "allocated in full)"
                        )


def declared_bytes(dataset: h5py.Dataset) -> int:
    """What reading `dataset` would allocate, from its shape and type alone."""
    count = 1
    for extent in dataset.shape or ():
        count *= int(extent)
    try:
        return count * dataset.dtype.itemsize
    except (TypeError, ValueError):  # a type numpy cannot hold: h5py refuses to read it
        return count


def check_regular_file(path: Path) -> None:
    if not path.exists():
        raise ConversionError(f"{path}: no such file")
    if path.is_dir():
        raise ConversionError(f"{path}: is a directory, not a Keras file")
    if not path.is_file():  # a FIFO would block forever, a device never end
        raise ConversionError(f"{path}: not a regular file")


KERAS_CLASS_KINDS = {"ConvNeXt": "classifier", "ConvNeXtBackbone": "backbone"}
KERAS_CLASS_KINDS["ConvNeXtIsotropic"] = "isotropic"


def check_keras_archive(path: Path) -> ModelSpec:
    """Read a .keras file's config.json before Keras builds anything from it: a zip of
    config.json, metadata.json and model.weights.h5 whose config describes a model far larger
    than its weights (a few bytes asking for xlarge) would otherwise take gigabytes to build.
    Returns the spec the config describes."""
    try:
        config = json.loads(keras_member(path, "config.json", CONFIG_LIMIT))
        with zipfile.ZipFile(path) as archive:
            weights = archive.getinfo("model.weights.h5").file_size
    except KeyError as e:
        raise ConversionError(f"{path}: not a Keras model file (no {e.args[0]})") from None
    except (zipfile.BadZipFile, ValueError, RecursionError, OSError) as e:
        raise ConversionError(f"{path}: not a Keras model file ({first_sentence(e)})") from None
    if not isinstance(config, dict) or not isinstance(config.get("config"), dict):
        raise ConversionError(f"{path}: config.json does not describe a Keras model")
    class_name = config.get("class_name")
    if class_name not in KERAS_CLASS_KINDS:
        raise ConversionError(f"{path}: holds a {class_name}, not a ConvNeXt")
    try:
        spec = from_arguments(KERAS_CLASS_KINDS[class_name], config["config"])
    except (SpecError, TypeError, ValueError, KeyError) as e:
        raise ConversionError(f"{path}: config.json describes no ConvNeXt ({e})") from None
    count = parameter_count(spec)
    if weights < 2 * count:  # 2 bytes a parameter at the very least (float16)
        raise ConversionError(
            f"{path}: config.json describes a {spec.name} of {count:,} parameters, but its "
            f"weights file holds {weights:,} bytes"
        )
    return spec


# convnext_tf model class -> ModelSpec kind
MODEL_KINDS = (convnext_tf.ConvNeXt, convnext_tf.ConvNeXtBackbone, convnext_tf.ConvNeXtIsotropic)
KIND_OF_CLASS = dict(zip(MODEL_KINDS, ("classifier", "backbone", "isotropic"), strict=True))


def keras_spec(model: keras.Model) -> ModelSpec:
    """The spec of a convnext_tf model, from its constructor arguments."""
    return from_arguments(KIND_OF_CLASS[type(model)], model.get_config())


def write_torch(tensors: Mapping[str, np.ndarray], dst: Path, force: bool = False) -> None:
    """A state_dict as .safetensors (no pickle) or as a .pth/.pt/.bin torch.save file, through
    atomic_output (`force`: replace an existing `dst`)."""
    size = sum(v.nbytes + BYTES_PER_ARRAY for v in tensors.values())
    with atomic_output(dst, force, size) as tmp:
        if dst.name.endswith(".safetensors"):
            save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, tmp)
        else:
            torch.save(
                {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()}, tmp
            )


def write_hf_directory(
    tensors: Mapping[str, np.ndarray], config: dict, dst: Path, force: bool = False
) -> None:
    """A Hugging Face `save_pretrained` directory: config.json and model.safetensors (with the
    "pt" format metadata transformers checks), through atomic_output (`force`: replace an
    existing `dst`, which the caller has checked is such a directory)."""
    size = sum(v.nbytes + BYTES_PER_ARRAY for v in tensors.values())
    with atomic_output(dst, force, size) as tmp:
        os.mkdir(tmp)
        weights = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
        save_file(weights, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(config, f, indent=2)
            f.write("\n")
        mode = usual_mode(tmp)  # safetensors makes 0600 files; the usual 0666 less the umask
        for name in os.listdir(tmp):
            os.chmod(os.path.join(tmp, name), mode)


def write_keras(model: keras.Model, dst: Path, force: bool = False) -> None:
    """`model` as a .keras file (model.save) or its weights as a .weights.h5 file
    (model.save_weights), through atomic_output (`force`: replace an existing `dst`).

    Keras puts a directory of its own (a .keras file's assets) in tempfile's folder and leaves
    it there when the write fails or is interrupted: it is made in atomic_output's directory
    instead, and goes with it. The free space is checked first for a reason of its own here:
    HDF5 does not recover from a failed write, and once h5py has failed to write a
    .weights.h5 file, collecting it crashes the interpreter (exit 139). Only a disk filled by
    another process during the write can still do that, after the error line is printed."""
    size = sum(itemsize(v.dtype) * int(np.prod(v.shape)) + BYTES_PER_ARRAY for v in model.weights)
    with atomic_output(dst, force, size) as tmp, temporary_folder(os.path.dirname(tmp)):
        if dst.name.endswith(".keras"):
            model.save(tmp)
        else:
            model.save_weights(tmp)


def itemsize(dtype: object) -> int:
    try:
        return np.dtype(str(dtype)).itemsize
    except TypeError:  # bfloat16: no numpy dtype
        return 2


@contextlib.contextmanager
def temporary_folder(path: str) -> Iterator[None]:
    """tempfile's folder is `path` for the block (Keras takes no parameter for it). It is the
    process's: a thread making temporary files meanwhile makes them there as well."""
    previous = tempfile.tempdir
    tempfile.tempdir = path
    try:
        yield
    finally:
        tempfile.tempdir = previous
