"""Reading Keras files and writing every output file, atomically.

Writing goes to a temporary file beside the destination, renamed onto it only once complete:
a failed or interrupted conversion leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from converters.checkpoint import ConversionError, first_sentence

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
    import h5py

    count = 0

    def visit(_name: str, obj: object) -> None:
        nonlocal count
        count += isinstance(obj, h5py.Dataset)

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return count


def load_keras_model(path: Path, variant: str | None = None, overrides: Mapping | None = None):
    """A convnext_tf model from a .keras file (Keras' safe mode: no lambdas deserialised), or
    from a .weights.h5 file loaded into `variant` built with `overrides`. Keras matches a
    weights file to the model by position, so the array count is checked first: a file of a
    deeper variant would otherwise load its first blocks and drop the rest without a word."""
    import keras

    import convnext_tf

    kind = suffix_of(path, KERAS_SUFFIXES)
    if kind is None:
        raise ConversionError(f"{path}: a Keras model must end in {' or '.join(KERAS_SUFFIXES)}")
    if not path.is_file():
        raise ConversionError(f"{path}: no such file")
    try:
        if kind == ".keras":
            model = keras.models.load_model(path, safe_mode=True)
            kinds = (
                convnext_tf.ConvNeXt,
                convnext_tf.ConvNeXtBackbone,
                convnext_tf.ConvNeXtIsotropic,
            )
            if not isinstance(model, kinds):
                raise ConversionError(f"{path}: holds a {type(model).__name__}, not a ConvNeXt")
            return model
        if variant is None:
            raise ConversionError(
                f"{path}: a .weights.h5 file does not record its variant: pass --variant "
                "(and --num-classes unless 1000)"
            )
        backbone = "out_indices" in (overrides or {})
        build = convnext_tf.create_backbone if backbone else convnext_tf.create_model
        model = build(variant, **(overrides or {}))
        arrays = h5_array_count(path)
        if arrays != len(model.weights):
            raise ConversionError(
                f"{path}: holds {arrays} arrays, {variant} with {dict(overrides or {})} has "
                f"{len(model.weights)}: another variant?"
            )
        model.load_weights(path)
        return model
    except ConversionError:
        raise
    except Exception as e:  # Keras and h5py raise many types for a bad file
        raise ConversionError(f"{path}: cannot load ({first_sentence(e)})") from None


def keras_variant(model) -> str:
    """The variant name of a convnext_tf model, from its depths and dims (or depth and dim)."""
    import convnext_tf

    if isinstance(model, convnext_tf.ConvNeXtIsotropic):
        for name, (depth, dim, _) in convnext_tf.ISOTROPIC_VARIANTS.items():
            if (model.depth, model.dim) == (depth, dim):
                return name
        raise ConversionError(
            f"no known isotropic variant has depth {model.depth}, dim {model.dim}"
        )
    family = "convnextv2" if model.use_grn else "convnext"
    for name, (depths, dims) in convnext_tf.VARIANTS.items():
        if name.split("_")[0] != family:
            continue
        if tuple(model.depths) == tuple(depths) and tuple(model.dims) == tuple(dims):
            return name
    raise ConversionError(f"no known variant has depths {model.depths} and dims {model.dims}")


def write_torch(tensors: Mapping[str, np.ndarray], dst: Path) -> None:
    """A state_dict as .safetensors (no pickle) or as a .pth/.pt/.bin torch.save file."""
    import torch

    with atomic_output(dst) as tmp:
        if dst.name.endswith(".safetensors"):
            from safetensors.numpy import save_file

            save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, tmp)
        else:
            torch.save(
                {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()}, tmp
            )
