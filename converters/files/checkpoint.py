"""Reading PyTorch checkpoints safely: weights only, nothing in the file is executed.

Files: `.pth`/`.pt`/`.bin` (torch.load with weights_only=True), `.safetensors` (no pickle at
all), or a Hugging Face style directory holding model.safetensors or pytorch_model.bin (and
config.json). A checkpoint is either a bare state_dict or a training checkpoint that wraps one:
`{"model": ...}` (official releases; training checkpoints add "optimizer", "epoch", "args" and
perhaps "model_ema") or `{"state_dict": ...}`. The keys may be in the official, timm or
Hugging Face layout (converters.names.layouts); they come out in the official one.
"""

from __future__ import annotations

import argparse
import json
import pickle
import re
import struct
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from converters.errors import ConversionError, choice_argument, first_sentence
from converters.files.destinations import DIRECTORY_FILES
from converters.files.guards import check_archive, check_crcs, check_regular_file
from converters.files.hdf5 import hdf5_problem, is_hdf5
from converters.names import layouts

# Harmless globals found in real training checkpoints, allowed by the weights-only unpickler:
# official ConvNeXt checkpoints keep their command line as an argparse.Namespace under "args".
SAFE_GLOBALS = [argparse.Namespace]

WRAPPER_KEYS = ("model", "state_dict")  # where training checkpoints keep the weights
# Where training checkpoints keep EMA weights: the official code, timm's train.py, others.
EMA_KEYS = ("model_ema", "state_dict_ema", "ema")
# Prefixes that wrap every key of a model saved from inside a wrapper: DataParallel and
# DistributedDataParallel add "module.", torch.compile "_orig_mod." (both can stack).
WRAPPER_PREFIXES = {"module.": "DataParallel", "_orig_mod.": "torch.compile"}
# The largest tensor any model this project builds could hold (convnextv2_huge's 4C x C MLP is
# 22M; a head for 100k classes of xxlarge width is 300M): a bound on what is materialised.
MAX_TENSOR_ELEMENTS = 1 << 29


@dataclass
class StateDict:
    """The tensors of a checkpoint as numpy arrays in the official layout, and what was read."""

    tensors: dict[str, np.ndarray]
    source: str  # the file, or "state_dict" for an in-memory mapping
    wrapper: str | None  # "model", "model_ema" or "state_dict" when wrapped, else None
    dtypes: tuple[str, ...]  # the dtypes stored in the file, before any conversion
    nonfinite: tuple[str, ...] = ()  # tensors holding NaN or Inf: converted as they are
    layout: str = "official"  # the layout the keys were in (layouts.KEY_LAYOUTS)
    notes: tuple[str, ...] = ()  # value changes made on reading, said to the user
    skipped: tuple[str, ...] = ()  # other entries of a training checkpoint (optimizer, ...)
    config: dict | None = None  # a Hugging Face config.json beside the weights
    outside_backbone: tuple[str, ...] = ()  # a detection checkpoint's neck and heads, not read

    @property
    def ema_key(self) -> str | None:
        """The entry holding EMA weights that were not taken, if the file has one."""
        return next((key for key in EMA_KEYS if key in self.skipped), None)

    @property
    def has_ema(self) -> bool:
        return self.ema_key is not None


def load_state_dict(
    source: str | Path | Mapping,
    layout: str = "auto",
    ema: bool = False,
    key: str | None = None,
    prefix: str | None = None,
) -> StateDict:
    """The state_dict of `source` (a path or a mapping) in the official layout. `layout` is
    "auto" (detected from the keys) or one of layouts.KEY_LAYOUTS; `ema` takes the EMA weights of
    a training checkpoint; `key` names the entry that holds the weights, for a wrapper this
    reader does not know; `prefix` is removed from every key (after "module." and
    "_orig_mod."), for a network kept under an attribute of a training wrapper (without it, a
    prefix common to every key is removed when that alone makes the keys a known layout).
    Raises ConversionError for anything that is not exactly that."""
    where = str(source) if isinstance(source, (str, Path)) else "state_dict"
    config, notes = None, []
    if isinstance(source, (str, Path)):
        obj, config, notes = read_file(Path(source))
    else:
        obj = source
    state, wrapper, skipped = unwrap(obj, where, ema, key)
    bad_keys = [k for k in state if not isinstance(k, str)]
    if bad_keys:
        raise ConversionError(f"{where}: not a state_dict: key {bad_keys[0]!r} is not a string")
    state, stripped = strip_wrapper_prefixes(state)
    notes += stripped
    try:
        state, stripped = strip_prefix(state, prefix)
    except ConversionError as e:
        raise ConversionError(f"{where}: {e}") from None
    notes += stripped
    state, outside_backbone = take_backbone(state)
    tensors = {name: to_numpy(value, where, name) for name, value in state.items()}
    dtypes = sorted({str(v.dtype).removeprefix("torch.") for v in state.values()})

    detected = layouts.detect(tensors)
    choice_argument("layout", layout, ("auto", *layouts.LAYOUT_NAMES))
    if layout == "auto":
        if detected is None:
            sample = ", ".join(list(tensors)[:3]) or "no tensors at all"
            raise ConversionError(
                f"{where}: not a ConvNeXt state_dict in any known layout "
                f"({', '.join(layouts.LAYOUT_NAMES)}; found {sample})"
            )
        layout = detected
    found = ", ".join(list(tensors)[:3])
    try:
        tensors, unmatched, renamed_notes = layouts.to_official(tensors, layout)
    except ConversionError as e:
        raise ConversionError(f"{where}: {e}") from None
    looks_like = detected not in (None, layout)
    if not tensors and not unmatched:
        hint = f": the keys look like the {detected} layout" if looks_like else ""
        raise ConversionError(f"{where}: no tensor of the model in the {layout} layout{hint}")
    # A layout without renaming rules (official, dinov3) takes any key as it is: forced on
    # another layout's file, it is refused here, in the words of the layout the keys are in.
    stem = {"downsample_layers.0.0.weight", "stem.weight"} & set(tensors)
    if looks_like and not unmatched and not stem:
        raise ConversionError(
            f"{where}: not the {layout} layout, no stem under its names; the keys look like the "
            f"{detected} layout (found {found}): read them with `layout` {detected} or auto"
        )
    if looks_like and not unmatched:
        renamed_notes.append(f"the keys look like the {detected} layout, read as {layout}")
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
        tuple(notes + renamed_notes),
        skipped,
        config if isinstance(config, dict) else None,
        outside_backbone,
    )


def strip_wrapper_prefixes(state: Mapping) -> tuple[Mapping, list[str]]:
    """Remove a "module." or "_orig_mod." prefix that every key carries (a model saved from
    inside DataParallel / DistributedDataParallel or torch.compile), saying so."""
    notes = []
    for prefix, wrapper in WRAPPER_PREFIXES.items():
        if state and all(key.startswith(prefix) for key in state):
            state = {key.removeprefix(prefix): value for key, value in state.items()}
            notes.append(f"removed the prefix {prefix!r} ({wrapper}) from all {len(state)} keys")
    if state and all(key.startswith("module.") for key in state):  # module._orig_mod.module.
        return strip_wrapper_prefixes(state)[0], notes
    return state, notes


def strip_prefix(state: Mapping, prefix: str | None = None) -> tuple[Mapping, list[str]]:
    """Remove `prefix` from every key, or, without it, the shortest prefix of whole dotted
    parts common to every key that makes the keys a known layout (a training wrapper's
    attribute: Lightning's "model.", "net.", "student.backbone.", ...), saying so. Keys that
    are a known layout as they are keep their prefix: "convnext.", "visual.trunk.",
    "encoder." and "model." begin some layouts' own names."""
    if prefix is not None:
        prefix = prefix if prefix.endswith(".") else f"{prefix}."
        lacking = [key for key in state if not key.startswith(prefix)]
        if lacking or not state:
            raise ConversionError(
                f"{len(lacking)} of {len(state)} keys do not start with the `prefix` {prefix!r} "
                f"({', '.join(lacking[:2]) or 'no keys at all'})"
            )
        note = f"removed the `prefix` {prefix!r} from all {len(state)} keys"
        return {key.removeprefix(prefix): value for key, value in state.items()}, [note]
    if not state or known_layout(state) is not None:
        return state, []
    for backbone in (False, True):  # student.backbone.stem...: "student.backbone.", not "student."
        for candidate in common_prefixes(state):
            stripped = {key.removeprefix(candidate): value for key, value in state.items()}
            layout = known_layout(stripped, backbone)
            if layout is not None:
                note = (
                    f"removed the prefix {candidate!r} from all {len(state)} keys (a training "
                    f"wrapper's; without it they are the {layout} layout)"
                )
                return stripped, [note]
    return state, []


def known_layout(state: Mapping, backbone: bool = True) -> str | None:
    """The layout detected in the keys; with `backbone`, a detection checkpoint's backbone.*
    taken out first."""
    return layouts.detect(take_backbone(state)[0] if backbone else state)


def common_prefixes(keys) -> list[str]:
    """The prefixes of whole dotted parts that every key has, shortest first: ["a.", "a.b."]
    for a.b.c.weight and a.b.d.bias."""
    split = [key.split(".")[:-1] for key in keys]  # the last part is a tensor's own name
    common = []
    for parts in zip(*split, strict=False):
        if len(set(parts)) > 1:
            break
        common.append(parts[0])
    return [".".join(common[: n + 1]) + "." for n in range(len(common))]


def take_backbone(state: Mapping) -> tuple[Mapping, tuple[str, ...]]:
    """A detection / segmentation checkpoint (mmdetection, mmsegmentation: the official
    ConvNeXt ones) keeps the ConvNeXt under `backbone.`; its neck and heads are not ConvNeXt.
    An image classifier (mmpretrain's ImageClassifier) keeps its classifier beside it as
    `head.*`: when that is all there is besides the backbone, it is the model's head, kept.
    Returns the backbone's tensors without the prefix, and the names of everything else."""
    if not any(str(key).startswith("backbone.") for key in state):
        return state, ()
    backbone = {
        k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")
    }
    outside = tuple(k for k in state if not k.startswith("backbone."))
    if outside and all(k.startswith("head.") and k not in backbone for k in outside):
        return {**backbone, **{k: state[k] for k in outside}}, ()
    return backbone, outside


def read_file(path: Path) -> tuple[object, object, list[str]]:
    """The object stored at `path`, a Hugging Face directory's config.json (else None), and
    notes on what was read."""
    if path.is_dir():
        return read_directory(path)
    check_regular_file(path, "a checkpoint")
    if is_hdf5(path):  # Keras' files: never handed to the pickle reader
        raise ConversionError(hdf5_problem(path, "a PyTorch checkpoint"))
    if path.name.endswith(".safetensors"):
        return read_safetensors(path), None, []
    return torch_load(path), None, []


def read_directory(path: Path) -> tuple[object, object, list[str]]:
    config = None
    if (path / "config.json").is_file():
        try:
            config = json.loads((path / "config.json").read_text())
        except (ValueError, UnicodeDecodeError, RecursionError) as e:
            reason = first_sentence(e)
            raise ConversionError(f"{path / 'config.json'}: not JSON ({reason})") from None
        if not isinstance(config, dict):
            kind = type(config).__name__
            raise ConversionError(f"{path / 'config.json'}: holds a {kind}, not a JSON object")
    found = [name for name in DIRECTORY_FILES if (path / name).is_file()]
    if not found:
        raise ConversionError(f"{path}: a directory without {' or '.join(DIRECTORY_FILES)}")
    notes = [f"read {found[0]}; {', '.join(found[1:])} also there, not read"] if found[1:] else []
    return read_file(path / found[0])[0], config, notes


# safetensors' dtype names, as torch dtypes (to_numpy refuses all but the floats, by name).
SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """A .safetensors file: a JSON header and raw tensors, nothing to unpickle.

    The safetensors library checks the header (every tensor's bytes inside the file, sizes
    that match the shapes, no overlap); the bytes are then read with plain reads, each tensor
    into memory of its own. The library's get_tensor copies out of a memory map of the whole
    file whose pages stay resident: the checkpoint was in memory twice (2.8x its size at
    peak, for convnext_xlarge)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:  # checks the header; reads no tensor
            keys = list(f.keys())
        with open(path, "rb") as file:
            (length,) = struct.unpack("<Q", file.read(8))
            header = json.loads(file.read(length))
            tensors = {key: read_tensor(file, 8 + length, key, header[key]) for key in keys}
    except ConversionError:
        raise
    except Exception as e:  # SafetensorError, or OSError for an unreadable file
        text = first_sentence(e)
        raise ConversionError(f"{path}: not a readable safetensors file ({text})") from None
    return tensors


def read_tensor(file, data_start: int, key: str, entry: dict) -> torch.Tensor:
    """One tensor of a safetensors file whose header the library has checked."""
    dtype = SAFETENSORS_DTYPES.get(entry["dtype"])
    if dtype is None:
        raise ConversionError(f"{file.name}: {key} has dtype {entry['dtype']}, expected a float")
    begin, end = entry["data_offsets"]
    if begin == end:  # no elements: nothing to read, and a zero-byte buffer has no dtype view
        return torch.empty(entry["shape"], dtype=dtype)
    data = np.empty(end - begin, dtype=np.uint8)
    file.seek(data_start + begin)
    if file.readinto(memoryview(data)) != data.size:
        raise ConversionError(f"{file.name}: truncated safetensors file (in {key})")
    return torch.from_numpy(data).view(dtype).reshape(entry["shape"])


# Opcodes pickle protocols 4 and 5 add (FRAME, SHORT_BINUNICODE, MEMOIZE, ...): torch.save
# with pickle_protocol=4/5 writes them, and the weights-only unpickler knows none of them.
PROTOCOL_4_OPCODES = {0x8C, 0x8D, 0x8E, 0x8F, 0x90, 0x91, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98}


def torch_load(path: Path) -> object:
    """torch.load with weights_only=True, every failure turned into one ConversionError line.
    A zip archive whose members would inflate far beyond the file's size is refused first:
    torch.save does not compress, and torch.load would inflate it all into memory."""
    check_inflation(path)
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
        if opcode and int(opcode.group(1)) in PROTOCOL_4_OPCODES and is_zip(path):
            raise ConversionError(
                f"{path}: saved with pickle protocol 4 or 5 (opcode {opcode.group(1)}), which "
                "torch's weights-only reader cannot read; save it again with torch.save's "
                "default protocol, or as .safetensors"
            ) from None
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


def is_zip(path: Path) -> bool:
    try:
        return zipfile.is_zipfile(path)
    except Exception:  # a damaged archive can make zipfile raise instead of answer
        return False


def check_inflation(path: Path) -> None:
    """A zip checkpoint's claims checked against its size, and its CRCs (guards.py)."""
    try:
        if not zipfile.is_zipfile(path):
            return  # a legacy (non-zip) torch file, or not a checkpoint: torch.load says which
        with zipfile.ZipFile(path) as archive:
            check_archive(path, archive)
    except ConversionError:
        raise
    except Exception:  # BadZipFile, NotImplementedError (zip versions), ...: damage
        return  # torch.load names the damage
    check_crcs(path)


def unwrap(
    obj: object, where: str, ema: bool = False, key: str | None = None
) -> tuple[Mapping, str | None, tuple]:
    """The state_dict inside a checkpoint object, the key that wrapped it, and the names of
    the other entries (optimizer, epoch, ...), which are not converted."""
    if not isinstance(obj, Mapping):
        raise ConversionError(f"{where}: holds a {type(obj).__name__}, not a state_dict")
    if key is not None:
        if not isinstance(obj.get(key), Mapping):
            entries = ", ".join(repr(str(k)) for k in list(obj)[:8])
            raise ConversionError(f"{where}: no {key!r} entry holds a state_dict ({entries})")
        return obj[key], key, tuple(str(k) for k in obj if k != key)
    if ema:
        found = next((k for k in EMA_KEYS if isinstance(obj.get(k), Mapping) and obj[k]), None)
        if found is None:
            names = " or ".join(repr(k) for k in EMA_KEYS)
            raise ConversionError(f"{where}: `ema` asked for, but there is no {names} entry")
        return obj[found], found, tuple(str(k) for k in obj if k != found)
    for name in WRAPPER_KEYS:
        if isinstance(obj.get(name), Mapping) and obj[name]:
            return obj[name], name, tuple(str(k) for k in obj if k != name)
    not_tensors = [k for k, v in obj.items() if not isinstance(v, (torch.Tensor, np.ndarray))]
    if not_tensors:
        names = ", ".join(map(str, not_tensors[:5]))
        verb = "is not a tensor" if len(not_tensors) == 1 else "are not tensors"
        wrappers = " or ".join(repr(k) for k in WRAPPER_KEYS)
        raise ConversionError(
            f"{where}: not a state_dict: {names} {verb}, and no {wrappers} entry holds one "
            "(`key` names the entry that does)"
        )
    return obj, None, ()


FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_extent(value: torch.Tensor, where: str, key: str) -> None:
    """Refuse, before any value is touched, a tensor whose shape claims more than it stores (a
    stride-0 or overlapping view: a few bytes that would become gigabytes when made dense) or
    more elements than any ConvNeXt tensor has."""
    shape = tuple(value.shape)
    if value.numel() > MAX_TENSOR_ELEMENTS:
        raise ConversionError(
            f"{where}: {key} has shape {shape}: {value.numel():,} elements, more than any "
            "ConvNeXt tensor"
        )
    if value.numel() and value.untyped_storage().nbytes() < value.numel() * value.element_size():
        raise ConversionError(
            f"{where}: {key} declares shape {shape} over {value.untyped_storage().nbytes():,} "
            "bytes of storage (a broadcast or overlapping view); refused"
        )


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
    if value.is_meta:
        raise ConversionError(f"{where}: {key} is a meta tensor: a shape without values")
    check_extent(value, where, key)
    if value.dtype not in FLOAT_DTYPES:
        names = "/".join(str(d).removeprefix("torch.") for d in FLOAT_DTYPES)
        raise ConversionError(f"{where}: {key} has dtype {value.dtype}, expected {names}")
    if value.dtype in (torch.float16, torch.bfloat16):
        value = value.float()
    return value.detach().cpu().numpy()
