"""HDF5 files told apart by their bytes, before any reader is chosen by a file's suffix.

Keras writes HDF5 (`.weights.h5`, the `model.weights.h5` inside a `.keras`, and the legacy
`model.save("x.h5")` / `save_weights("x.h5")` of Keras 2 and of Keras 3's legacy format);
torch.load would take any of them for a pickle and fail on its first byte ("unsupported pickle
opcode 72", the `H` of `\\x89HDF`). So every reader asks here first, and an HDF5 file is named
for what it is, with the route that reads it. Only the file's root (its groups' names and its
attributes) is looked at: no dataset is read and no link followed.
"""

from __future__ import annotations

from pathlib import Path

MAGIC = b"\x89HDF\r\n\x1a\n"  # the HDF5 superblock signature
# The superblock is at 0, or after a user block of 512, 1024, 2048, ... bytes (the HDF5 spec).
USER_BLOCKS = tuple(512 << k for k in range(24))
NOT_HDF5_STARTS = (b"PK\x03\x04", b"\x80")  # a zip (torch.save, .keras) or a legacy pickle


def is_hdf5(path: Path) -> bool:
    """Whether `path` is a regular file holding an HDF5 superblock."""
    if not path.is_file():
        return False
    try:
        with open(path, "rb") as file:
            start = file.read(8)
            if start == MAGIC:
                return True
            if start.startswith(NOT_HDF5_STARTS):
                return False
            size = path.stat().st_size
            for offset in USER_BLOCKS:
                if offset + 8 > size:
                    return False
                file.seek(offset)
                if file.read(8) == MAGIC:
                    return True
    except OSError:
        return False
    return False


def hdf5_kind(path: Path) -> str:
    """What Keras wrote this HDF5 file as, from its root alone:
    "legacy-model" (model.save("x.h5"): `model_weights` and a `model_config` attribute),
    "legacy-weights" (save_weights("x.h5") in Keras 2, or Keras 3's legacy format: a
    `layer_names` attribute), "keras3-weights" (a Keras 3 .weights.h5 of a Sequential or Functional
    model, such as keras.applications': groups `layers` and `vars`), "ours" (a convnext_tf
    .weights.h5), or "other"."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            names, attributes = set(f.keys()), set(f.attrs.keys())
    except Exception:  # noqa: BLE001 - h5py raises OSError and others for a damaged file
        return "other"
    if "model_weights" in names and "model_config" in attributes:
        return "legacy-model"
    if "layer_names" in attributes:
        return "legacy-weights"
    if {"downsample_layers", "stem"} & names:
        return "ours"
    if "layers" in names:
        return "keras3-weights"
    return "other"


def keras_version(path: Path) -> str | None:
    """The `keras_version` attribute a legacy HDF5 file records, if any."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            for group in (f, f.get("model_weights")):
                if group is not None and "keras_version" in group.attrs:
                    value = group.attrs["keras_version"]
                    return value.decode() if isinstance(value, bytes) else str(value)
    except Exception:  # noqa: BLE001
        return None
    return None


def hdf5_problem(path: Path, reading: str) -> str:
    """One line saying what the HDF5 file at `path` is, for a reader (`reading`: "a PyTorch
    checkpoint", "a .keras file") that cannot take it, and the route that works."""
    kind = hdf5_kind(path)
    version = keras_version(path)
    written = f" (keras_version {version})" if version else ""
    if kind in ("legacy-model", "legacy-weights"):
        what = "model" if kind == "legacy-model" else "weights"
        return (
            f"{path}: a Keras legacy HDF5 {what} file{written}, not {reading}: load it in Keras "
            'and save it as .keras (model.save("m.keras")) or .weights.h5 '
            '(model.save_weights("m.weights.h5")); a keras.applications ConvNeXt saved this '
            "way is read as it is"
        )
    if kind in ("ours", "keras3-weights"):
        return (
            f"{path}: a Keras 3 weights file (HDF5), not {reading}: name it .weights.h5 "
            "to convert it"
        )
    return f"{path}: an HDF5 file, not {reading}"
