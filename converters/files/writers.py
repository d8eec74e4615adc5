"""The three kinds of weights file the converter writes, each through atomic_output: a PyTorch
state_dict (.safetensors without pickle, or torch.save), a Hugging Face directory
(config.json + model.safetensors), and a Keras file (.keras or .weights.h5)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import keras
import numpy as np
import torch
from safetensors.numpy import save_file

from converters.files.outputs import atomic_output, temporary_folder, usual_mode


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


BYTES_PER_ARRAY = 4096  # an upper bound of the file formats' overhead per array (headers, names)
