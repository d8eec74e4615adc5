"""Zip archives (.pth from torch.save, .keras from Keras) read with bounds, before any
library inflates them.

A zip's central directory says what its members inflate to, and it may lie, or tell the
truth about a bomb: a deflated member of zeros is a thousandth of its size. So what a file
claims is checked against its size first (neither torch.save nor Keras compresses: a member
never legitimately inflates much beyond the archive), members are read in bounded chunks
whatever they claim, and every member's CRC is checked once, since torch's reader does not
check it and would convert altered bytes as they are.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from converters.errors import ConversionError, first_sentence

SLACK = 1 << 20  # bytes of inflation allowed beyond twice the archive's size
KERAS_MEMBERS = 1000  # a .keras file has 3 members (config, metadata, weights), and assets
CHUNK = 1 << 24


def check_archive(path: Path, archive: zipfile.ZipFile, max_members: int | None = None) -> None:
    """Refuse an archive whose members claim to inflate far beyond the file, that has more
    members than `max_members`, or whose member names leave it (absolute, `..`): Keras and
    zipfile would skip those with a warning of their own."""
    members = archive.infolist()
    if max_members is not None and len(members) > max_members:
        raise ConversionError(
            f"{path}: refused: {len(members):,} zip members (a Keras file has a handful)"
        )
    size = path.stat().st_size
    inflated = sum(member.file_size for member in members)
    if inflated > 2 * size + SLACK:
        raise ConversionError(
            f"{path}: refused: its zip members inflate to {inflated:,} bytes from a {size:,}-byte "
            "file (torch.save and Keras do not compress; a file like this only fills memory)"
        )
    for member in members:
        name = member.filename
        if name.startswith(("/", "\\")) or ".." in name.replace("\\", "/").split("/"):
            raise ConversionError(f"{path}: refused: zip member {name!r} points outside it")


def read_member(path: Path, archive: zipfile.ZipFile, name: str, limit: int) -> bytes:
    """Member `name`, inflated in chunks and refused past `limit` bytes, whatever its entry in
    the central directory claims (a deflate bomb can claim a small size)."""
    try:
        member = archive.open(name)
    except KeyError:
        raise ConversionError(f"{path}: not a Keras model file (no {name})") from None
    parts, total = [], 0
    with member:
        while chunk := member.read(min(CHUNK, limit + 1 - total)):
            parts.append(chunk)
            total += len(chunk)
            if total > limit:
                raise ConversionError(f"{path}: refused: its {name} inflates past {limit:,} bytes")
    return b"".join(parts)


def check_crcs(path: Path) -> None:
    """Read every member once in chunks, so that zipfile checks its CRC-32 and that its local
    header agrees with the central directory: a checkpoint whose bytes were altered after it
    was written is refused, not converted with those bytes."""
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.infolist():
                with archive.open(member) as data:
                    while data.read(CHUNK):
                        pass
    except zipfile.BadZipFile as e:  # a CRC, or a local header that differs from the index
        raise ConversionError(
            f"{path}: refused: {first_sentence(e)} (altered or damaged after it was written)"
        ) from None
    except Exception:  # noqa: BLE001 - other damage: the reader that follows names it
        return


CONFIG_LIMIT = 64 << 20  # bytes of a .keras file's config.json (ConvNeXt's: a few KB)


def keras_member(path: Path, name: str, limit: int | None = None) -> bytes:
    """Member `name` of the .keras file at `path`, after check_archive; `limit` defaults to
    what the archive may inflate to in all."""
    try:
        with zipfile.ZipFile(path) as archive:
            check_archive(path, archive, KERAS_MEMBERS)
            if limit is None:
                limit = 2 * path.stat().st_size + SLACK
            return read_member(path, archive, name, limit)
    except ConversionError:
        raise
    except (zipfile.BadZipFile, ValueError, RecursionError, OSError, EOFError) as e:
        raise ConversionError(f"{path}: not a Keras model file ({first_sentence(e)})") from None
    except Exception as e:  # noqa: BLE001 - zipfile raises NotImplementedError and others
        raise ConversionError(f"{path}: not a Keras model file ({first_sentence(e)})") from None


def check_regular_file(path: Path, what: str = "a Keras file") -> None:
    """A file to read exists and is a regular file: a FIFO would block forever, a device never
    end. `what` names the file expected, for the message on a directory."""
    if not path.exists():
        raise ConversionError(f"{path}: no such file")
    if path.is_dir():
        raise ConversionError(f"{path}: is a directory, not {what}")
    if not path.is_file():
        raise ConversionError(f"{path}: not a regular file")
