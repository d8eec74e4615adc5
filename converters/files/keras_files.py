"""Reading Keras files and writing every output file, atomically.

Writing goes to a temporary directory of its own beside the destination, and the finished
file is moved onto the destination name only once complete (and onto an existing file only
when asked to): a failed or interrupted conversion leaves nothing behind.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import h5py
import keras

import convnext_tf
from converters.errors import ConversionError, first_sentence
from converters.files.destinations import KERAS_SUFFIXES, suffix_of
from converters.files.guards import CONFIG_LIMIT, check_regular_file, keras_member
from converters.files.hdf5 import hdf5_problem, is_hdf5
from convnext_spec.spec import (
    KIND_OF_CLASS,
    MODEL_CLASSES,
    ModelSpec,
    SpecError,
    changes_from_variant,
    from_arguments,
    parameter_count,
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
            if is_hdf5(path):  # a legacy HDF5 file named .keras: not the zip Keras 3 writes
                raise ConversionError(hdf5_problem(path, "a .keras file (a zip)"))
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
    if class_name not in KIND_OF_CLASS:
        raise ConversionError(f"{path}: holds a {class_name}, not a ConvNeXt")
    try:
        spec = from_arguments(KIND_OF_CLASS[class_name], config["config"])
    except (SpecError, TypeError, ValueError, KeyError) as e:
        raise ConversionError(f"{path}: config.json describes no ConvNeXt ({e})") from None
    count = parameter_count(spec)
    if weights < 2 * count:  # 2 bytes a parameter at the very least (float16)
        raise ConversionError(
            f"{path}: config.json describes a {spec.name} of {count:,} parameters, but its "
            f"weights file holds {weights:,} bytes"
        )
    return spec


MODEL_KINDS = tuple(getattr(convnext_tf, name) for name in MODEL_CLASSES.values())


def keras_spec(model: keras.Model) -> ModelSpec:
    """The spec of a convnext_tf model, from its constructor arguments."""
    return from_arguments(KIND_OF_CLASS[type(model).__name__], model.get_config())
