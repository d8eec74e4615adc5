"""Reading Keras files and writing every output file, atomically.

Writing goes to a temporary file beside the destination, renamed onto it only once complete:
a failed or interrupted conversion leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import json
import os
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
from converters.errors import ConversionError, first_sentence
from converters.spec import (
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


@contextlib.contextmanager
def atomic_output(dst: Path) -> Iterator[str]:
    """A temporary path beside `dst` with the same suffix (Keras checks it), renamed onto
    `dst` only when the block succeeds; removed on any failure."""
    suffix = suffix_of(dst, KERAS_SUFFIXES + TORCH_SUFFIXES) or dst.suffix
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
        return f"its weights do not fit the model its config.json describes: {text}"
    if "could not be deserialized" in text:
        return f"its config.json names layers or arguments this version cannot build: {text}"
    return text


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
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
            weights = archive.getinfo("model.weights.h5").file_size
            inflated = sum(member.file_size for member in archive.infolist())
    except KeyError as e:
        raise ConversionError(f"{path}: not a Keras model file (no {e.args[0]})") from None
    except (zipfile.BadZipFile, ValueError, RecursionError, OSError) as e:
        raise ConversionError(f"{path}: not a Keras model file ({first_sentence(e)})") from None
    if inflated > 2 * path.stat().st_size + (1 << 20):
        raise ConversionError(f"{path}: refused: its members inflate to {inflated:,} bytes")
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


def write_torch(tensors: Mapping[str, np.ndarray], dst: Path) -> None:
    """A state_dict as .safetensors (no pickle) or as a .pth/.pt/.bin torch.save file."""
    with atomic_output(dst) as tmp:
        if dst.name.endswith(".safetensors"):
            save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, tmp)
        else:
            torch.save(
                {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()}, tmp
            )
