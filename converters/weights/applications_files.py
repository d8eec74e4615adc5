"""keras.applications ConvNeXt files read back as official-layout tensors, for any PyTorch layout.

Three files hold a keras.applications ConvNeXt{Tiny,...,XLarge}, and none records the
constructor, so the model is read off the arrays:
- a Keras 3 `.weights.h5` (`model.save_weights`), and the `model.weights.h5` inside a saved
  `.keras`: arrays stored by position, not by layer name (`layers/conv2d_5/vars/0` is the
  sixth Conv2D of `model.layers`, `layers/sequential_1/layers/conv2d/vars/0` the conv of the
  second Sequential; Keras 3's saving_lib); `stored_path` gives that position for each variable;
- a legacy HDF5 file (`model.save("x.h5")`, `save_weights("x.h5")`): arrays stored by layer
  name (`model_weights/<layer>/<layer path>/kernel`, `:0` after the name in Keras 2).
The blocks' widths (their layer-scale vectors, in order) give the depths and dims, the last
Dense the classes, if the file has its top. A keras.applications model of that variant is
then built from this library's code (nothing is downloaded, nothing in the file is built or
run: a `.keras` file's config.json is only read, never deserialised), and `variables_by_key`,
the table that writes these files, reads every variable back under its official key, exactly
once; an array of the file that no variable takes is named, as is one that is missing.

What the weights do not say, a `.keras` file's config does, and the notes say it: whether the
model normalises its input (include_preprocessing), whether its head ends in a softmax, and how
a model without its top pools.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import h5py
import keras
import numpy as np

from converters.errors import ConversionError, Log, first_sentence, quiet
from converters.files.checkpoint import StateDict
from converters.files.guards import CONFIG_LIMIT, check_regular_file, keras_member
from converters.files.hdf5 import hdf5_kind, is_hdf5
from converters.files.keras_files import check_self_contained
from converters.weights import keras_applications
from convnext_spec.spec import spec_from_name

FLOATS = (np.float16, np.float32, np.float64)


def is_applications_file(path: Path) -> bool:
    """Whether `path` looks like a keras.applications ConvNeXt file (by its structure, not its
    name): a Functional model's .weights.h5, a .keras file whose config.json names a
    keras.applications ConvNeXt, or a legacy HDF5 file whose layers are named like one."""
    if not path.is_file():
        return False
    if path.name.endswith(".keras") and not is_hdf5(path):
        try:
            return model_prefix(read_config(path)) is not None
        except ConversionError:
            return False  # the reader of this project's .keras files names the problem
    if not is_hdf5(path):
        return False
    kind = hdf5_kind(path)
    if kind == "keras3-weights":  # its first LayerScale, where Keras 3 puts it
        return has_dataset(path, "layers/layer_scale/vars/0")
    if kind in ("legacy-model", "legacy-weights"):
        return any(LAYER_SCALE.fullmatch(name) for name in legacy_layer_names(path))
    return False


def read_applications(path: Path, variant: str | None = None, log: Log = quiet) -> StateDict:
    """The official-layout tensors of the keras.applications ConvNeXt file at `path`, every
    array read exactly once. `variant`, if given, must be the one the shapes show."""
    log(f"reading {path}")
    check_regular_file(path)
    legacy = is_hdf5(path) and hdf5_kind(path) in ("legacy-model", "legacy-weights")
    config = None
    with opened(path) as weights:
        if legacy:
            root = weights["model_weights"] if "model_weights" in weights else weights
            config = legacy_config(weights)
            arrays, names = legacy_arrays(root, path)
        else:
            if path.name.endswith(".keras"):
                config = read_config(path)
            arrays, names = dict(positional_arrays(weights)), None
        widths, classes = blocks_and_head(arrays, names, path)
        spec = applications_spec(widths, classes, variant, path)
        model = keras_applications.build(spec, include_top=classes is not None)
        located = locate(model, names)
        check_accounting(arrays, located, path)
        tensors = keras_applications.official_tensors(
            lambda variable: read_array(arrays[located[id(variable)]], path),
            model,
            spec.depths,
            include_top=classes is not None,
        )
        dtypes = sorted({str(arrays[p].dtype) for p in located.values()})
    how = "legacy HDF5, by layer name" if legacy else "by position"
    log(
        f"found {len(tensors)} arrays ({', '.join(dtypes)}) of a keras.applications "
        f"{keras_applications.CONSTRUCTORS[spec.name]} ({how})"
    )
    notes = model_notes(config, model_prefix(config) if config else None, classes is not None)
    nonfinite = tuple(k for k, v in tensors.items() if not np.isfinite(v).all())
    return StateDict(
        {k: v.astype(np.float32) if v.dtype == np.float16 else v for k, v in tensors.items()},
        str(path),
        None,
        tuple(dtypes),
        nonfinite,
        layout="keras-applications",
        notes=tuple(notes),  # how the model was fed and what it output: said after writing
    )


PREPROCESSING_NOTE = (
    "the PyTorch model takes (x / 255 - mean) / std with ImageNet's mean "
    f"{keras_applications.IMAGENET_MEAN} and std {keras_applications.IMAGENET_STD}"
)


def model_notes(config: dict | None, prefix: str | None, top: bool) -> list[str]:
    """What the file says, or leaves unsaid, about how the model was called: its
    preprocessing, its head's activation, its pooling without the top."""
    if config is None or prefix is None:
        notes = [
            "keras.applications normalises its input itself (pixels in [0, 255]) unless built "
            f"with include_preprocessing=False, which a weights file does not record; "
            f"{PREPROCESSING_NOTE}"
        ]
        if not top:
            notes.append(
                "no top: the PyTorch model outputs the features averaged, then normalised "
                "(keras.applications' pooling='avg'; the weights are the same for every pooling)"
            )
        return notes
    layers = {layer.get("name"): layer for layer in config_layers(config)}
    if f"{prefix}_prestem_normalization" in layers:
        notes = [
            "the model normalised [0, 255] pixels itself (include_preprocessing); "
            + PREPROCESSING_NOTE
        ]
    else:
        notes = [
            "saved with include_preprocessing=False: it took normalised input, as the "
            "PyTorch model does"
        ]
    if top:
        activation = layers.get(f"{prefix}_head_dense", {}).get("config", {}).get("activation")
        if activation not in (None, "linear"):
            notes.append(
                f"its head ends in a {activation}; the weights are the same, the PyTorch model "
                f"outputs the logits (apply the {activation} to them for its output)"
            )
        return notes
    classes = {layer.get("class_name") for layer in layers.values()}
    if "GlobalAveragePooling2D" in classes:
        notes.append("no top, pooling='avg': the PyTorch model outputs the same features")
    else:
        pooled = "max-pooled" if "GlobalMaxPooling2D" in classes else "not pooled (pooling=None)"
        notes.append(
            f"no top, its features {pooled} then normalised; the PyTorch model averages, then "
            "normalises: the same weights, other features"
        )
    return notes


# --- the file: opened safely, its arrays listed ---------------------------------------------


@contextmanager
def opened(path: Path) -> Iterator[h5py.File]:
    """The HDF5 weights of `path` (a .keras file's model.weights.h5, read from the zip), after
    check_self_contained: no link out, no external or virtual dataset, no array that claims
    more bytes than the file holds."""
    try:
        if path.name.endswith(".keras") and not is_hdf5(path):
            source = io.BytesIO(keras_member(path, "model.weights.h5"))
        else:
            source = path
        check_self_contained(source, path)
        with h5py.File(source, "r") as weights:
            yield weights
    except ConversionError:
        raise
    except Exception as e:  # noqa: BLE001 - h5py raises OSError, KeyError and others
        raise ConversionError(
            f"{path}: not a readable Keras weights file ({first_sentence(e)})"
        ) from None


def positional_arrays(weights: h5py.File) -> Iterator[tuple[str, h5py.Dataset]]:
    """Every array of a Keras 3 weights file, by its path."""
    found = []
    weights.visititems(
        lambda name, item: found.append((name, item)) if isinstance(item, h5py.Dataset) else None
    )
    yield from found


def legacy_arrays(root: h5py.Group, path: Path) -> tuple[dict[str, h5py.Dataset], dict]:
    """A legacy file's arrays by path, and (layer name, index) -> path: each layer's group
    lists its weights in the layer's order, by their path (`convnext_tiny_stem/
    convnext_tiny_stem_conv/kernel`, `:0` after it in Keras 2), whose next-to-last part is the
    layer that owns the weight; keras.applications' layer names are unique in a model.
    Variable names are not used: LayerScale's is Keras' choice (`variable_108`). Without the
    top, the final LayerNormalization has a name of Keras' choosing too, not the same in two
    sessions: it is the last layer with weights, kept under FINAL_NORM."""
    arrays, names, counts, last = {}, {}, {}, {}
    for layer in attribute_names(root, "layer_names"):
        if layer not in root:
            raise ConversionError(f"{path}: lists layer {layer!r} and has no group for it")
        group, here = root[layer], {}
        for weight in attribute_names(group, "weight_names"):
            if weight not in group or not isinstance(group[weight], h5py.Dataset):
                raise ConversionError(f"{path}: lists weight {layer}/{weight} and has no array")
            owner = (["", *weight.split("/")])[-2]
            index = counts[owner] = counts.get(owner, -1) + 1
            arrays[f"{layer}/{weight}"] = group[weight]
            names[(owner, index)] = f"{layer}/{weight}"
            here[(FINAL_NORM, index)] = f"{layer}/{weight}"
        last = here or last
    names.update(last)
    for name, item in iter_datasets(root):
        arrays.setdefault(name, item)  # an array no layer lists: reported as unexpected
    return arrays, names


FINAL_NORM = ""  # the owner under which legacy_arrays lists the last layer's weights again


def iter_datasets(root: h5py.Group) -> list[tuple[str, h5py.Dataset]]:
    found = []
    root.visititems(
        lambda name, item: found.append((name, item)) if isinstance(item, h5py.Dataset) else None
    )
    return found


def attribute_names(group: h5py.Group, attribute: str) -> list[str]:
    return [n.decode() if isinstance(n, bytes) else str(n) for n in group.attrs.get(attribute, [])]


LAYER_SCALE = re.compile(r"(.+)_stage_(\d+)_block_(\d+)_layer_scale")
POSITIONAL_SCALE = re.compile(r"layers/layer_scale(?:_(\d+))?/vars/0")
POSITIONAL_DENSE = re.compile(r"layers/dense(?:_(\d+))?/vars/0")


def has_dataset(path: Path, name: str) -> bool:
    try:
        with h5py.File(path, "r") as f:
            return isinstance(f.get(name), h5py.Dataset)
    except Exception:  # noqa: BLE001 - a damaged file: the reader that follows names it
        return False


def legacy_layer_names(path: Path) -> list[str]:
    try:
        with h5py.File(path, "r") as f:
            root = f["model_weights"] if "model_weights" in f else f
            return attribute_names(root, "layer_names")
    except Exception:  # noqa: BLE001
        return []


def legacy_config(weights: h5py.File) -> dict | None:
    """A legacy model file's `model_config` attribute (JSON), read, never deserialised."""
    text = weights.attrs.get("model_config")
    if text is None:
        return None
    text = text.decode() if isinstance(text, bytes) else str(text)
    try:
        config = json.loads(text[:CONFIG_LIMIT])
    except (ValueError, RecursionError):
        return None
    return config if isinstance(config, dict) else None


# --- which variant: blocks and head off the shapes ---------------------------------------------


def blocks_and_head(
    arrays: dict[str, h5py.Dataset], names: dict | None, path: Path
) -> tuple[list[int], int | None]:
    """The width of each block, in order, and the classes of the head (None: no top)."""
    if names is None:  # by position: the k-th LayerScale is the k-th block
        scales = {
            int(m.group(1) or 0): a
            for p, a in arrays.items()
            if (m := POSITIONAL_SCALE.fullmatch(p))
        }
        denses = {
            int(m.group(1) or 0): a
            for p, a in arrays.items()
            if (m := POSITIONAL_DENSE.fullmatch(p))
        }
        head = denses.get(2 * len(scales)) if len(denses) == 2 * len(scales) + 1 else None
    else:
        scales = {
            (int(m.group(2)), int(m.group(3))): arrays[where]
            for (owner, index), where in names.items()
            if (m := LAYER_SCALE.fullmatch(owner))  # its one weight
        }
        heads = [
            where
            for (owner, index), where in names.items()
            if owner.endswith("_head_dense") and index == 0  # the kernel, then the bias
        ]
        head = arrays[heads[0]] if len(heads) == 1 else None
    if not scales:
        raise ConversionError(
            f"{path}: no layer-scale arrays: not the weights of a keras.applications ConvNeXt"
        )
    if names is None and sorted(scales) != list(range(len(scales))):
        raise ConversionError(
            f"{path}: the layer-scale arrays are not numbered 0..{len(scales) - 1}"
        )
    widths = [int(scales[k].shape[0]) if scales[k].ndim == 1 else -1 for k in sorted(scales)]
    if head is not None and head.ndim != 2:
        raise ConversionError(f"{path}: the head's kernel has shape {head.shape}, expected 2 axes")
    return widths, None if head is None else int(head.shape[1])


def applications_spec(widths: list[int], classes: int | None, variant: str | None, path: Path):
    """The keras.applications variant whose blocks have these widths; `variant` must agree."""
    depths, dims = [], []
    for width in widths:  # consecutive blocks of one width are a stage
        if dims and dims[-1] == width:
            depths[-1] += 1
        else:
            depths.append(1)
            dims.append(width)
    shown = f"depths {tuple(depths)}, dims {tuple(dims)}"
    names = [
        name
        for name in keras_applications.CONSTRUCTORS
        if spec_from_name(name).depths == tuple(depths) and spec_from_name(name).dims == tuple(dims)
    ]
    if variant is not None:
        spec = spec_from_name(variant, num_classes=classes or 0)
        keras_applications.check_spec(spec, include_top=False)  # names what it has
        if names != [variant]:
            found = f"a keras.applications {names[0]}" if names else "a ConvNeXt"
            raise ConversionError(f"{path}: holds {found} ({shown}), not {variant}")
        return spec
    if not names:
        raise ConversionError(
            f"{path}: no keras.applications variant has {shown}; it has "
            f"{', '.join(keras_applications.CONSTRUCTORS)}"
        )
    return spec_from_name(names[0], num_classes=classes or 0)


# --- every variable located in the file, every array accounted for -----------------------------


def snake_case(name: str) -> str:
    """Keras' snake case of a class name (keras.src.utils.naming.to_snake_case)."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def stored_paths(layers: list, prefix: str = "") -> dict[int, str]:
    """Where Keras 3 stores each variable of these layers in a weights file, by position:
    `layers/<class in snake case>`, then `_1`, `_2`, ... for the next of that class, nested
    Sequential and Functional models under their own `layers/`, then `vars/<i>` in the
    layer's own order (keras.src.saving.saving_lib._save_container_state)."""
    paths, used = {}, {}
    for layer in layers:
        base = snake_case(type(layer).__name__)
        used[base] = used.get(base, -1) + 1
        here = f"{prefix}layers/{base}" + (f"_{used[base]}" if used[base] else "")
        if isinstance(layer, keras.Model):  # Sequential, Functional: their layers below
            paths.update(stored_paths(layer.layers, f"{here}/"))
        else:
            paths.update({id(v): f"{here}/vars/{i}" for i, v in enumerate(layer.weights)})
    return paths


def locate(model: keras.Model, names: dict | None) -> dict[int, str]:
    """id(variable) -> the path of its array in the file: by position (names None), or by
    the layer's name and the variable's index in it (a legacy file)."""
    if names is None:
        return stored_paths(model.layers)
    final = model.layers[-1]
    unnamed = not final.name.startswith(model.name)  # the final norm without the top
    located = {}
    for layer in leaf_layers(model.layers):
        owner = FINAL_NORM if unnamed and layer is final else layer.name
        for index, variable in enumerate(layer.weights):
            found = names.get((owner, index))
            located[id(variable)] = found or f"(no array for {layer.name} weight {index})"
    return located


def leaf_layers(layers: list) -> Iterator[keras.layers.Layer]:
    for layer in layers:
        if isinstance(layer, keras.Model):
            yield from leaf_layers(layer.layers)
        else:
            yield layer


def check_accounting(arrays: dict[str, h5py.Dataset], located: dict[int, str], path: Path) -> None:
    """Every array of the file taken by exactly one variable, and every variable found."""
    wanted = set(located.values())
    problems = [
        f"{len(names)} {what} ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"
        for what, names in (
            ("missing", sorted(p for p in wanted if p not in arrays)),
            ("unexpected", sorted(set(arrays) - wanted)),
        )
        if names
    ]
    if problems:
        raise ConversionError(
            f"{path}: does not match the keras.applications model: {'; '.join(problems)}"
        )


def read_array(dataset: h5py.Dataset, path: Path) -> np.ndarray:
    if dataset.dtype not in FLOATS:
        raise ConversionError(f"{path}: {dataset.name} has dtype {dataset.dtype}, expected a float")
    return dataset[()]


# --- a .keras file's config, read as data ------------------------------------------------------


def read_config(path: Path) -> dict:
    """config.json of a .keras file, bounded (CONFIG_LIMIT), parsed as JSON only."""
    try:
        config = json.loads(keras_member(path, "config.json", CONFIG_LIMIT))
    except (ValueError, RecursionError) as e:
        raise ConversionError(f"{path}: not a Keras model file ({first_sentence(e)})") from None
    if not isinstance(config, dict):
        raise ConversionError(f"{path}: config.json does not describe a Keras model")
    return config


def config_layers(config: dict) -> list[dict]:
    inner = config.get("config")
    layers = inner.get("layers") if isinstance(inner, dict) else None
    return (
        [layer for layer in layers if isinstance(layer, dict)] if isinstance(layers, list) else []
    )


def model_prefix(config: dict) -> str | None:
    """The name keras.applications gave the model's layers (`convnext_tiny` in
    `convnext_tiny_stage_0_block_0_layer_scale`), if the config is one of its ConvNeXts."""
    for layer in config_layers(config):
        match = LAYER_SCALE.fullmatch(str(layer.get("name", "")))
        if match:
            return match.group(1)
    return None
