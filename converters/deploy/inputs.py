"""The inputs of a verification and how each side takes them: random images or a folder of
pictures (decoded and resized once, in numpy), and the Feeding that turns those pixels into the
PyTorch model's normalised NCHW input and into what the artifact takes (NHWC or NCHW, raw or
normalised pixels, its dtype)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from converters.deploy.artifacts import Artifact
from converters.errors import ConversionError, first_sentence
from convnext_spec.spec import IMAGENET_MEAN, IMAGENET_STD

PIXEL_SCALES = {"0-1": 1.0, "0-255": 255.0}


CHANNEL_ORDERS = ("nhwc", "nchw")  # how an artifact takes images: `input_layout`


OUTPUT_KINDS = ("logits", "probabilities")


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass
class Images:
    """The inputs of a verification, as pixels in [0, 1], (N, H, W, C), produced a batch at a
    time so that a folder of many pictures does not sit in memory at once."""

    names: list[str]
    size: tuple[int, int]
    channels: int
    description: str
    files: list[Path] | None = None  # None: random images
    seed: int = 0

    def batches(self, batch: int) -> Iterator[tuple[list[str], np.ndarray]]:
        rng = np.random.default_rng(self.seed)
        for start in range(0, len(self.names), batch):
            names = self.names[start : start + batch]
            if self.files is None:
                shape = (len(names), *self.size, self.channels)
                yield names, rng.random(shape)
            else:
                files = self.files[start : start + batch]
                yield names, np.stack([read_image(f, self.size, self.channels) for f in files])


def random_images(count: int, size: tuple[int, int], channels: int, seed: int) -> Images:
    """`count` images of uniform random pixels: never constant, so that a layout, padding or
    kernel orientation error cannot cancel out. One image is allowed (an artifact may take no
    more), but hides batch-axis errors: verify says so."""
    names = [f"random {i}" for i in range(count)]
    described = f"{count} random image{'s' * (count != 1)} of {size[0]}x{size[1]}, seed {seed}"
    return Images(names, size, channels, described, seed=seed)


def folder_images(directory: Path, size: tuple[int, int], channels: int) -> Images:
    """Every JPEG and PNG in `directory` (hidden files aside), in name order; anything else in
    it is an error, found before any model runs."""
    if directory.is_file():
        raise ConversionError(f"{directory}: a file; `images` takes a folder of pictures")
    if not directory.is_dir():
        raise ConversionError(f"{directory}: no such directory (`images` takes a folder)")
    files = sorted(p for p in directory.iterdir() if not p.name.startswith("."))
    if not files:
        raise ConversionError(f"{directory}: no images in it")
    for path in files:
        if path.is_dir():
            raise ConversionError(
                f"{path}: a folder; `images` takes one flat folder of JPEG and PNG files"
            )
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            raise ConversionError(f"{path}: not a JPEG or PNG file (`images` takes only those)")
        read_image(path, size, channels)  # decodes it: a broken file fails now, not halfway
    described = (
        f"{len(files)} images from {directory}, resized to {size[0]}x{size[1]} once (bicubic, "
        "Pillow) and given to both sides"
    )
    return Images([p.name for p in files], size, channels, described, files=files)


def read_image(path: Path, size: tuple[int, int], channels: int) -> np.ndarray:
    """One picture as pixels in [0, 1], (H, W, C): decoded, converted to RGB (grey for one
    channel) and resized with Pillow. Pillow refuses decompression bombs."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # Pillow warns of images past 89 million pixels and refuses twice that: a
            # warning is a stray line on stderr, so both are a refusal here
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image = image.convert("L" if channels == 1 else "RGB")
                image = image.resize((size[1], size[0]), Image.Resampling.BICUBIC)
                pixels = np.asarray(image, dtype=np.float64) / 255.0
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        raise ConversionError(f"{path}: refused: {first_sentence(e)}") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise ConversionError(f"{path}: cannot decode the image ({e})") from None
    return pixels.reshape(*size, channels)


@dataclass
class Feeding:
    """How the artifact takes its input, from its own description or the user's options."""

    layout: str  # nhwc or nchw
    pixels: str | None  # None: normalised like PyTorch's input; 0-1 or 0-255: raw pixels
    mean: tuple[float, ...]
    std: tuple[float, ...]
    output: str | None  # logits, probabilities, features; None: told by the first outputs
    notes: tuple[str, ...] = ()  # where an option contradicts what the artifact says

    def torch_input(self, pixels: np.ndarray) -> np.ndarray:
        """(N, H, W, C) pixels -> the PyTorch model's (N, C, H, W) normalised float64 input."""
        normalised = (pixels - np.asarray(self.mean)) / np.asarray(self.std)
        return np.ascontiguousarray(normalised.transpose(0, 3, 1, 2))

    def both_inputs(self, pixels: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray]:
        """(PyTorch's input, the artifact's) for `pixels`. An artifact that takes float16
        (onnx2tf's float16 .tflite files) gets its input rounded to float16, and PyTorch then
        gets the very values the artifact got (the rounded pixels, normalised), so that the
        input's rounding, 5e-4 relative, is not counted as the artifact's error."""
        given = self.artifact_input(pixels, dtype)
        if np.dtype(dtype).itemsize >= 4:
            return self.torch_input(pixels), given
        values = given.astype(np.float64)
        if self.layout == "nchw":
            values = values.transpose(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)
        if self.pixels is not None:
            return self.torch_input(values / PIXEL_SCALES[self.pixels]), given
        return np.ascontiguousarray(values.transpose(0, 3, 1, 2)), given

    def artifact_input(self, pixels: np.ndarray, dtype: str) -> np.ndarray:
        if self.pixels is None:
            x = (pixels - np.asarray(self.mean)) / np.asarray(self.std)
        else:
            x = pixels * PIXEL_SCALES[self.pixels]
        if self.layout == "nchw":
            x = x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x.astype(dtype))


def feeding(
    artifact: Artifact,
    channels: int,
    input_layout: str | None,
    pixels: str | None,
    mean: tuple[float, ...] | None,
    std: tuple[float, ...] | None,
    output: str | None,
) -> Feeding:
    """The options, or what the artifact says of itself, or the default (normalised NHWC
    logits, what model.export() of a plain Keras model expects), in that order."""
    default_mean, default_std = (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else ((0.5,), (0.5,))
    mean, std = tuple(mean or default_mean), tuple(std or default_std)
    for name, values in (("mean", mean), ("std", std)):
        if len(values) != channels:
            raise ConversionError(f"`{name}` needs {channels} values, one a channel")
    if artifact.output == "features" and output is not None:
        raise ConversionError(f"{artifact.path}: gives pooled features, not {output}")
    notes = []
    if pixels and artifact.traced and not artifact.pixels:
        notes.append(f"`pixels` {pixels} given, but this project's artifacts take normalised input")
    if output and artifact.output and output != artifact.output:
        notes.append(f"`output` {output} given, but the artifact says it gives {artifact.output}")
    if input_layout and artifact.layout and input_layout != artifact.layout:
        notes.append(
            f"`input_layout` {input_layout} given, but its input shape says {artifact.layout}"
        )
    return Feeding(
        layout=input_layout or artifact.layout or "nhwc",
        pixels=pixels or artifact.pixels,
        mean=mean,
        std=std,
        output=output or artifact.output,
        notes=tuple(notes),
    )


def input_words(feed: Feeding, dtype: str = "float32", batch: int | None = None) -> str:
    scale = "normalised" if feed.pixels is None else f"pixels {feed.pixels}"
    words = f"; the artifact gets {feed.layout.upper()} {scale}"
    if dtype != "float32":
        words += f" {dtype}"
    if batch is not None:
        words += f" in batches of {batch}, its fixed batch"
    words += ", PyTorch NCHW normalised"
    if np.dtype(dtype).itemsize < 4:
        words += " (the same rounded values)"
    return words


def in_fixed_batches(method, fixed: int | None, x: np.ndarray):
    """method(x), for an artifact that takes exactly `fixed` images at a time (None: any
    number): `x` goes in slices of `fixed`, the last one filled up with copies of its last
    image, and the outputs (an array, or a dict of arrays) are joined again without the
    copies."""
    if fixed is None or len(x) == fixed:
        return method(x)
    parts = []
    for start in range(0, len(x), fixed):
        chunk = x[start : start + fixed]
        real = len(chunk)
        if real < fixed:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], fixed - real, axis=0)])
        parts.append((method(chunk), real))
    if isinstance(parts[0][0], dict):
        return {
            name: np.concatenate([np.asarray(out[name])[:real] for out, real in parts])
            for name in parts[0][0]
        }
    return np.concatenate([np.asarray(out)[:real] for out, real in parts])


def channels_first(value: np.ndarray) -> np.ndarray:
    """A channels-last 4-D output in PyTorch's (N, C, H, W) order; others as they are."""
    value = np.asarray(value)
    return value.transpose(0, 3, 1, 2) if value.ndim == 4 else value


OUTPUT_GUESSES = {
    "probabilities": "are non-negative and sum to 1 in every row",
    "logits": "do not say what they are and are not probabilities",
}


def output_kind(outputs: np.ndarray) -> str:
    """Probabilities when every row is a distribution (no set of logits is, but by accident),
    else logits: what a black box returns, when nothing else says."""
    rows = outputs.reshape(len(outputs), -1)
    if np.all(rows >= 0) and np.allclose(rows.sum(axis=1), 1.0, rtol=0, atol=1e-4):
        return "probabilities"
    return "logits"


def probe_output(model, artifact: Artifact, feed: Feeding, pixels: np.ndarray, run):
    """The artifact's output on the first batch (`run`: verify's call of artifact.run), run
    before any PyTorch work, so that an input it refuses (layout, size, batch, dtype) or a
    class count that is not PyTorch's is said in seconds, not after the reference and its
    float64 floor. Settles `feed.output` where nothing said it, with the note saying how.
    Returns the output (channels first, float64) and those notes."""
    _, given = feed.both_inputs(pixels, artifact.input_dtype)
    got = channels_first(np.asarray(run(given), dtype=np.float64))
    head = getattr(model, "head", None)
    classes, width = getattr(head, "out_features", None), getattr(head, "in_features", None)
    notes = []
    if feed.output is None:
        if classes and got.ndim == 2 and got.shape[1] == width != classes:
            feed.output, why = "features", f"have {width} values an image, not {classes}"
        else:
            feed.output = output_kind(got)
            why = OUTPUT_GUESSES[feed.output]
        notes.append(
            f"the artifact's outputs {why}: compared as {feed.output} (pass `output` to say "
            "otherwise)"
        )
    if classes and feed.output != "features" and got.shape != (len(got), classes):
        raise ConversionError(
            f"{artifact.path}: gives outputs of shape {tuple(got.shape)}, the PyTorch model "
            f"{(len(got), classes)}: another variant or class count?"
        )
    if artifact.batch is not None and artifact.batch < len(pixels):
        one = "one at a time" if artifact.batch == 1 else f"{artifact.batch} at a time"
        notes.append(f"it takes a fixed batch of {artifact.batch}: the images went to it {one}")
    elif len(pixels) == 1:
        notes.append("one image a batch (`batch` 1): an error across the batch axis cannot show")
    return got, notes


def served_name(expected: dict, output: str | None) -> str:
    """The reference point the artifact's output is compared with: the last one (head, or
    norm without a head, or a backbone's last norm), or the pooled features (norm) where the
    artifact serves features of a model that has a head."""
    if output == "features" and "head" in expected and "norm" in expected:
        return "norm"
    return list(expected)[-1]
