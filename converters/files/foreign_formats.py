"""Deployed models recognised from their own markers: a Keras 2 model (tf.keras before Keras 3,
what nobuco writes), which verify cannot run and names for what it is rather than as a file
that fails to load, and a TF.js model, which only TF.js runs (converters.deploy.artifacts.tfjs).

Keras 3 refuses a Keras 2 `.keras` archive with an error about a config it cannot rebuild, and
has no safe loader for a Keras 2 `.h5` model (its Lambda layers carry marshalled Python); a
TF.js model is a folder of JSON and weight shards. Each is recognised
from its own markers, as the writing library lays them out: the `keras_version` in a .keras
archive's metadata.json or in an HDF5 file's root attributes, and a TF.js model's model.json.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from converters.errors import ConversionError
from converters.files.hdf5 import is_hdf5, keras_version

KERAS2_ROUTE = (
    "Keras 3 cannot load it; save it as a SavedModel where it was made (Keras 2: "
    "model.save('DIR') or tf.saved_model.save(model, 'DIR'); nobuco's result too) and verify "
    "that directory"
)
MANIFEST_LIMIT = 1 << 22  # a TF.js model.json holds the topology and a weights manifest


def keras2_version(path: Path) -> str | None:
    """The Keras version that wrote a .keras or .h5 file, when it is 2.x (else None)."""
    found = None
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                if "metadata.json" in archive.namelist():
                    info = archive.getinfo("metadata.json")
                    if info.file_size <= MANIFEST_LIMIT:
                        found = json.loads(archive.read(info)).get("keras_version")
        except (zipfile.BadZipFile, ValueError, AttributeError):
            return None
    elif is_hdf5(path):
        found = keras_version(path)  # the legacy HDF5 reader's own (files.hdf5)
    if isinstance(found, bytes):
        found = found.decode("utf-8", "replace")
    return found if isinstance(found, str) and found.startswith("2.") else None


def check_not_keras2(path: Path) -> None:
    """Refuse a Keras 2 file by name, with the route that works."""
    written = keras2_version(path)
    if written:
        raise ConversionError(
            f"{path}: a Keras 2 model file (keras_version {written}): {KERAS2_ROUTE}"
        )


def tfjs_manifest(path: Path) -> Path | None:
    """The model.json of what is laid out as a TF.js model at `path`: a file named model.json,
    or a folder holding one and no saved_model.pb; else None. What it holds is read by the
    TF.js reader (converters.deploy.artifacts.tfjs), which names what is wrong with it."""
    manifest = path / "model.json" if path.is_dir() else path
    if manifest.name != "model.json" or not manifest.exists():
        return None
    if path.is_dir() and (path / "saved_model.pb").exists():
        return None
    return manifest
