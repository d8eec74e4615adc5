"""The error every reader, checker and writer raises, below every other module.

Framework-free: checkpoint.py, formats.py, files.py and the command line all import it, and it
imports nothing of theirs.
"""

from __future__ import annotations

from collections.abc import Callable


class ConversionError(Exception):
    """A checkpoint that cannot be converted exactly; the message is one line naming why.

    Messages name the library's parameters in backquotes (`variant`, `ema`): the command line
    shows those as its flags (--variant, --ema)."""

    def __init__(
        self,
        message: str,
        missing: list[str] | None = None,
        unexpected: list[str] | None = None,
        mismatched: list[str] | None = None,
    ):
        super().__init__(message)
        self.missing = missing or []
        self.unexpected = unexpected or []
        self.mismatched = mismatched or []


def first_sentence(error: BaseException) -> str:
    """The first sentence of an exception's message (torch's run to a paragraph)."""
    text = " ".join(str(error).split())
    return text.split(". ")[0].rstrip(".") if text else f"{type(error).__name__}: empty file"


def printable(text: str) -> str:
    """`text` with every control and format character escaped (a newline as \\n, ESC as
    \\x1b, a right-to-left override as \\u202e): names taken from a file (a signature's
    output key, a model's name, a file name) are printed as data, so that none can start a
    line of its own, colour a forged PASS or hide the real verdict."""
    import unicodedata

    def escape(character: str) -> str:
        if unicodedata.category(character) not in ("Cc", "Cf", "Zl", "Zp"):
            return character
        escaped = character.encode("unicode_escape").decode("ascii")
        return escaped if escaped != character else f"\\u{ord(character):04x}"

    return "".join(map(escape, text))


def path_argument(name: str, value: object):
    """`value` as a Path, or a TypeError naming the parameter (not Path's own message)."""
    import os
    from pathlib import Path

    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"`{name}` must be a path (str or os.PathLike), not {type(value).__name__}")
    return Path(value)


def choice_argument(name: str, value: object, choices: tuple[str, ...]) -> None:
    """A ConversionError naming the parameter and its choices, for a value not among them."""
    if value not in choices:
        raise ConversionError(f"unknown `{name}` {value!r}; known: {', '.join(choices)}")


def count_argument(name: str, value: object) -> None:
    """An integer parameter (`num_classes`): a TypeError naming it for anything else."""
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise TypeError(f"`{name}` must be an integer, not {type(value).__name__}")


Log = Callable[[str], None]  # how the library reports progress: one line at a time


def quiet(line: str) -> None:
    """The default `log`: say nothing."""


def check_keras_source_options(layout: str, ema: bool, key: str | None, prefix: str | None) -> None:
    """A Keras file as the source: the options that describe a PyTorch checkpoint's layout
    (`layout`, `ema`, `key`, `prefix`) have nothing to describe, and are refused, not ignored."""
    if layout != "auto" or ema or key is not None or prefix is not None:
        raise ConversionError(
            "`layout`, `ema`, `key` and `prefix` describe PyTorch sources, not Keras files"
        )
