"""Writing without leaving half a file: every output goes to a temporary name in a directory
beside DST and is moved into place only when whole (a hard link, or a rename that refuses to
replace, unless `force`), after the free space is checked; a signal, a full disk or a file
appearing at DST meanwhile leaves nothing behind and replaces nothing. Standard library only,
so that a report can be written where no framework is installed."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from converters.errors import ConversionError
from converters.files.destinations import (
    KERAS_SUFFIXES,
    TORCH_SUFFIXES,
    cannot_write,
    says_no_space,
    suffix_of,
)

TEMP_PREFIX = ".convnext-"  # the temporary directory beside DST: .convnext-XXXXXXXX


SPACE_MARGIN = 1 << 20  # bytes kept free beyond an output's expected size


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


def write_text(text: str, path: Path, force: bool = False) -> None:
    """Through atomic_output: without `force` nothing is replaced, even a file that appeared
    while the verification ran."""
    data = text.encode()
    try:
        with atomic_output(path, force, len(data), directories=False) as tmp:
            with open(tmp, "wb") as f:
                f.write(data)
    except IsADirectoryError:
        raise ConversionError(
            f"{path}: became a directory while verify ran; not replaced"
        ) from None
