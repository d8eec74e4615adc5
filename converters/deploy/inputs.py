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
from converters.weights.keras_applications import IMAGENET_MEAN, IMAGENET_STD

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
    kernel orientation error cannot cancel out."""
    if count < 2:
        raise ConversionError("`batch` must be 2 or more: one image hides batch-axis errors")
    names = [f"random {i}" for i in range(count)]
    described = f"{count} random images of {size[0]}x{size[1]}, seed {seed}"
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


def input_words(feed: Feeding) -> str:
    scale = "normalised" if feed.pixels is None else f"pixels {feed.pixels}"
    return f"; the artifact gets {feed.layout.upper()} {scale}, PyTorch NCHW normalised"


def channels_first(value: np.ndarray) -> np.ndarray:
    """A channels-last 4-D output in PyTorch's (N, C, H, W) order; others as they are."""
    value = np.asarray(value)
    return value.transpose(0, 3, 1, 2) if value.ndim == 4 else value
