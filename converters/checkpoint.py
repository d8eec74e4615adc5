"""Reading PyTorch checkpoints safely: weights only, nothing in the file is executed.

Files: `.pth`/`.pt`/`.bin` (torch.load with weights_only=True), `.safetensors` (no pickle at
all), or a Hugging Face style directory holding model.safetensors or pytorch_model.bin (and
config.json). A checkpoint is either a bare state_dict or a training checkpoint that wraps one:
`{"model": ...}` (official releases; training checkpoints add "optimizer", "epoch", "args" and
perhaps "model_ema") or `{"state_dict": ...}`. The keys may be in the official, timm or
Hugging Face layout (converters.formats); they come out in the official one.
"""

from __future__ import annotations

import argparse
import json
import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


class ConversionError(Exception):
    """A checkpoint that cannot be converted exactly; the message is one line naming why."""

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


# Harmless globals found in real training checkpoints, allowed by the weights-only unpickler:
# official ConvNeXt checkpoints keep their command line as an argparse.Namespace under "args".
SAFE_GLOBALS = [argparse.Namespace]

WRAPPER_KEYS = ("model", "state_dict")  # where training checkpoints keep the weights
EMA_KEY = "model_ema"  # official training checkpoints keep the EMA weights here
DIRECTORY_FILES = ("model.safetensors", "pytorch_model.bin")  # Hugging Face's names


@dataclass
class StateDict:
    """The tensors of a checkpoint as numpy arrays in the official layout, and what was read."""

    tensors: dict[str, np.ndarray]
    source: str  # the file, or "state_dict" for an in-memory mapping
    wrapper: str | None  # "model", "model_ema" or "state_dict" when wrapped, else None
    dtypes: tuple[str, ...]  # the dtypes stored in the file, before any conversion
    nonfinite: tuple[str, ...] = ()  # tensors holding NaN or Inf: converted as they are
    layout: str = "official"  # the layout the keys were in: official, timm or hf
    notes: tuple[str, ...] = ()  # value changes made on reading, said to the user
    skipped: tuple[str, ...] = ()  # other entries of a training checkpoint (optimizer, ...)
    config: dict | None = None  # a Hugging Face config.json beside the weights
    outside_backbone: tuple[str, ...] = ()  # a detection checkpoint's neck and heads, not read

    @property
    def has_ema(self) -> bool:
        return EMA_KEY in self.skipped


def load_state_dict(
    source: str | Path | Mapping, layout: str = "auto", ema: bool = False
) -> StateDict:
    """The state_dict of `source` (a path or a mapping) in the official layout. `layout` is
    "auto" (detected from the keys), "official", "timm" or "hf"; `ema` takes the EMA weights of
    a training checkpoint. Raises ConversionError for anything that is not exactly that."""
    from converters import formats

    where = str(source) if isinstance(source, (str, Path)) else "state_dict"
    config = None
    if isinstance(source, (str, Path)):
        obj, config = read_file(Path(source))
    else:
        obj = source
    state, wrapper, skipped = unwrap(obj, where, ema)
    bad_keys = [k for k in state if not isinstance(k, str)]
    if bad_keys:
        raise ConversionError(f"{where}: not a state_dict: key {bad_keys[0]!r} is not a string")
    state, outside_backbone = take_backbone(state)
    tensors = {key: to_numpy(value, where, key) for key, value in state.items()}
    dtypes = sorted({str(v.dtype).removeprefix("torch.") for v in state.values()})

    detected = formats.detect(tensors)
    if layout == "auto":
        if detected is None:
            sample = ", ".join(list(tensors)[:3]) or "no tensors at all"
            raise ConversionError(
                f"{where}: not a ConvNeXt state_dict in the official, timm or Hugging Face "
                f"layout (found {sample})"
            )
        layout = detected
    tensors, unmatched, notes = formats.to_official(tensors, layout)
    if unmatched:
        more = f", and {len(unmatched) - 4} more" if len(unmatched) > 4 else ""
        looks_like = detected not in (None, layout)
        hint = f"; the keys look like the {detected} layout" if looks_like else ""
        raise ConversionError(
            f"{where}: {len(unmatched)} keys have no name in the {layout} layout "
            f"({', '.join(unmatched[:4])}{more}){hint}"
        )
    nonfinite = tuple(k for k, v in tensors.items() if not np.isfinite(v).all())
    return StateDict(
        tensors,
        where,
        wrapper,
        tuple(dtypes),
        nonfinite,
        layout,
        tuple(notes),
        skipped,
        config,
        outside_backbone,
    )


def take_backbone(state: Mapping) -> tuple[Mapping, tuple[str, ...]]:
    """A detection / segmentation checkpoint (mmdetection, mmsegmentation: the official
    ConvNeXt ones) keeps the ConvNeXt under `backbone.`; its neck and heads are not ConvNeXt.
    Returns the backbone's tensors without the prefix, and the names of everything else."""
    if not any(str(key).startswith("backbone.") for key in state):
        return state, ()
    backbone = {
        k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")
    }
    return backbone, tuple(k for k in state if not k.startswith("backbone."))


def read_file(path: Path) -> tuple[object, dict | None]:
    """The object stored at `path` and, for a Hugging Face directory, its config.json."""
    if not path.exists():
        raise ConversionError(f"{path}: no such file")
    if path.is_dir():
        return read_directory(path)
    if path.name.endswith(".safetensors"):
        return read_safetensors(path), None
    return read_checkpoint(path), None


def read_directory(path: Path) -> tuple[object, dict | None]:
    config = None
    if (path / "config.json").is_file():
        try:
            config = json.loads((path / "config.json").read_text())
        except (ValueError, UnicodeDecodeError) as e:
            reason = first_sentence(e)
            raise ConversionError(f"{path / 'config.json'}: not JSON ({reason})") from None
    for name in DIRECTORY_FILES:
        if (path / name).is_file():
            return read_file(path / name)[0], config
    raise ConversionError(f"{path}: a directory without {' or '.join(DIRECTORY_FILES)}")


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """A .safetensors file: a JSON header and raw tensors, nothing to unpickle."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:  # "pt": numpy has no bfloat16
            return {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118
    except Exception as e:  # SafetensorError, or OSError for an unreadable file
        text = first_sentence(e)
        raise ConversionError(f"{path}: not a readable safetensors file ({text})") from None


def read_checkpoint(path: Path) -> object:
    """torch.load with weights_only=True, every failure turned into one ConversionError line."""
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pickle protocols it reads fine
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        refused = re.search(r"[Uu]nsupported (?:global: )?GLOBAL (\S+)", text)
        if refused:
            raise ConversionError(
                f"{path}: refused: loading it would call {refused.group(1)}; only tensors are "
                "read (weights_only), nothing in the file is executed"
            ) from None
        opcode = re.search(r"Unsupported operand (\d+)", text)
        reason = f"unsupported pickle opcode {opcode.group(1)}" if opcode else first_sentence(e)
        raise ConversionError(f"{path}: not a PyTorch checkpoint ({reason})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        text = first_sentence(e)
        if "zip archive" in text or isinstance(e, EOFError):
            raise ConversionError(f"{path}: truncated or corrupt checkpoint ({text})") from None
        raise ConversionError(f"{path}: not a PyTorch checkpoint ({text})") from None
    except Exception as e:  # garbage makes the unpickler fail in arbitrary ways
        reason = f"{type(e).__name__}: {first_sentence(e)}"
        raise ConversionError(f"{path}: not a PyTorch checkpoint ({reason})") from None


def unwrap(obj: object, where: str, ema: bool = False) -> tuple[Mapping, str | None, tuple]:
    """The state_dict inside a checkpoint object, the key that wrapped it, and the names of
    the other entries (optimizer, epoch, ...), which are not converted."""
    if not isinstance(obj, Mapping):
        raise ConversionError(f"{where}: holds a {type(obj).__name__}, not a state_dict")
    if ema:
        if not isinstance(obj.get(EMA_KEY), Mapping):
            raise ConversionError(f"{where}: --ema asked for, but there is no {EMA_KEY!r} entry")
        return obj[EMA_KEY], EMA_KEY, tuple(str(k) for k in obj if k != EMA_KEY)
    for key in WRAPPER_KEYS:
        if isinstance(obj.get(key), Mapping) and obj[key]:
            return obj[key], key, tuple(str(k) for k in obj if k != key)
    not_tensors = [k for k, v in obj.items() if not isinstance(v, (torch.Tensor, np.ndarray))]
    if not_tensors:
        names = ", ".join(map(str, not_tensors[:5]))
        verb = "is not a tensor" if len(not_tensors) == 1 else "are not tensors"
        wrappers = " or ".join(repr(k) for k in WRAPPER_KEYS)
        raise ConversionError(
            f"{where}: not a state_dict: {names} {verb}, and no {wrappers} entry holds one"
        )
    return obj, None, ()


FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def to_numpy(value: object, where: str, key: str) -> np.ndarray:
    """A dense float tensor as a numpy array. float16/bfloat16 become float32 (exactly: every
    half value is a float32 value); anything else is refused, ConvNeXt has nothing else."""
    if isinstance(value, np.ndarray):
        if value.dtype not in (np.float16, np.float32, np.float64):
            raise ConversionError(f"{where}: {key} has dtype {value.dtype}, expected a float")
        return np.ascontiguousarray(value, dtype=np.float32 if value.itemsize == 2 else None)
    if not isinstance(value, torch.Tensor):
        raise ConversionError(f"{where}: {key} is a {type(value).__name__}, not a tensor")
    if value.layout != torch.strided:
        raise ConversionError(f"{where}: {key} is a {value.layout} tensor, expected a dense one")
    if value.dtype not in FLOAT_DTYPES:
        names = "/".join(str(d).removeprefix("torch.") for d in FLOAT_DTYPES)
        raise ConversionError(f"{where}: {key} has dtype {value.dtype}, expected {names}")
    if value.dtype in (torch.float16, torch.bfloat16):
        value = value.float()
    return value.detach().cpu().numpy()


def first_sentence(error: BaseException) -> str:
    """The first sentence of an exception's message (torch's run to a paragraph)."""
    text = " ".join(str(error).split())
    return text.split(". ")[0].rstrip(".") if text else f"{type(error).__name__}: empty file"
