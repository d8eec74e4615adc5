"""`make demo`: a ConvNeXt trained on real data crosses frameworks both ways, offline.

1. train convnext_atto (1 input channel, 10 classes) in PyTorch on the handwritten digits that
   ship with scikit-learn (1,797 scans of 8x8 pixels, upsampled to 32x32), a fixed split;
2. convert the checkpoint with the command line, `convnext convert`, and evaluate it in Keras:
   the same accuracy, the same class for every test image;
3. fine-tune the Keras model for a few steps with model.fit, convert it back to PyTorch with
   the command line, and compare again;
4. `convnext verify` the trained PyTorch checkpoint against its Keras file, on the test digits
   written as PNG files.

Everything is written to demo-output/ (or the folder given as the first argument).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from converters.startup import import_tensorflow_quietly

import_tensorflow_quietly()  # before Keras is imported: TensorFlow's notices go nowhere

import keras
import numpy as np
import torch

import convnext_tf  # noqa: F401  (registers the Keras classes that load_model needs)
import convnext_tf.train as keras_train
import convnext_torch
import convnext_torch.train as torch_train
from converters import cli
from convnext_spec.recipe import OptimizerSettings

VARIANT = "convnext_atto"
SIZE = 32  # the smallest input ConvNeXt takes: 32 -> 8 -> 4 -> 2 -> 1
EPOCHS = 5
BATCH = 64
SEED = 0
RECIPE = OptimizerSettings("adamw", learning_rate=2**-9, weight_decay=0.05)
FINE_TUNE = OptimizerSettings("adamw", learning_rate=2**-13, weight_decay=0.05)
MEAN, STD = 0.5, 0.5  # of the [0, 1] pixels; convnext verify's default for one channel


def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The digits as 8-bit pictures, upsampled to SIZE x SIZE the way `convnext verify`
    resizes a PNG (Pillow, bicubic), so that both see the same pixels; a fixed, stratified
    80/20 split. Returns train images and labels, test images and labels (pixels in [0, 1],
    (N, SIZE, SIZE, 1)), and the test set's 8x8 originals (uint8) to write as PNG files."""
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    small = np.round(data.images * 255 / 16).astype(np.uint8)  # scanned as 0..16
    large = np.stack(
        [
            np.asarray(Image.fromarray(p).resize((SIZE, SIZE), Image.Resampling.BICUBIC))
            for p in small
        ]
    )
    pixels = (large / 255.0)[..., None]
    train, test = train_test_split(
        np.arange(len(pixels)), test_size=0.2, random_state=SEED, stratify=data.target
    )
    labels = data.target
    return pixels[train], labels[train], pixels[test], labels[test], small[test]


def normalised_nchw(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(((pixels - MEAN) / STD).transpose(0, 3, 1, 2).astype(np.float32))


def normalised_nhwc(pixels: np.ndarray) -> np.ndarray:
    return ((pixels - MEAN) / STD).astype(np.float32)


def train_pytorch(x_train, y_train, x_test, y_test) -> torch.nn.Module:
    torch.manual_seed(SEED)
    model = convnext_torch.create_model(VARIANT, num_classes=10, in_chans=1)
    optimizer = torch_train.create_optimizer(model, RECIPE)
    images, labels = normalised_nchw(x_train), torch.from_numpy(y_train)
    generator = torch.Generator().manual_seed(SEED)
    for epoch in range(1, EPOCHS + 1):
        started, losses = time.perf_counter(), []
        order = torch.randperm(len(images), generator=generator)
        for step, start in enumerate(range(0, len(order), BATCH), 1):
            batch = order[start : start + BATCH]
            losses.append(torch_train.train_step(model, optimizer, images[batch], labels[batch]))
            progress(epoch, step, -(-len(order) // BATCH), float(np.mean(losses)))
        accuracy = accuracy_of(torch_train.predict(model, normalised_nchw(x_test)).numpy(), y_test)
        seconds = time.perf_counter() - started
        print(f"  test accuracy {accuracy:.1%} ({seconds:.0f} s)", flush=True)
    return model


def progress(epoch: int, step: int, steps: int, loss: float) -> None:
    """One line per epoch, redrawn after every step on a terminal."""
    done = round(20 * step / steps)
    line = f"  epoch {epoch}/{EPOCHS} [{'#' * done}{'.' * (20 - done)}] loss {loss:.3f}"
    if sys.stdout.isatty():
        print("\r" + line, end="", flush=True)
    elif step == steps:
        print(line, end="", flush=True)


def accuracy_of(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(logits.argmax(-1) == labels))


def convnext(*argv: str) -> None:
    """The command line, as a user types it (same process, same code)."""
    print(f"  $ convnext {' '.join(argv)}", flush=True)
    status = cli.main(list(argv))
    if status != 0:
        raise SystemExit(status)


def agreement(name: str, reference: np.ndarray, other: np.ndarray, labels: np.ndarray) -> list:
    """A row of the final table: accuracy, same-class count and largest logit difference."""
    same = int(np.sum(reference.argmax(-1) == other.argmax(-1)))
    diff = float(np.max(np.abs(reference - other)))
    return [name, f"{accuracy_of(other, labels):.1%}", f"{same}/{len(labels)}", f"{diff:.1e}"]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0] if argv else "demo-output")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    print("1. the digits from scikit-learn: 1,797 scans of 8x8 pixels, upsampled to 32x32")
    x_train, y_train, x_test, y_test, originals = digits()
    print(f"   {len(x_train)} to train on, {len(x_test)} to test on (fixed split, seed {SEED})")
    print(f"   training {VARIANT} in PyTorch: AdamW, learning rate {RECIPE.learning_rate:g},")
    print(f"   weight decay {RECIPE.weight_decay} on the kernels, batch {BATCH}, {EPOCHS} epochs")
    torch_model = train_pytorch(x_train, y_train, x_test, y_test)
    checkpoint = out / "digits_atto.pth"
    torch.save({"model": torch_model.state_dict(), "epoch": EPOCHS}, checkpoint)
    torch_logits = torch_train.predict(torch_model, normalised_nchw(x_test)).numpy()

    print(f"2. PyTorch -> Keras, with the command line; evaluated on the {len(y_test)} test digits")
    keras_file = out / "digits_atto.keras"
    convnext("convert", str(checkpoint), str(keras_file), "--force")
    keras_model = keras.models.load_model(keras_file)
    keras_logits = keras_train.predict(keras_model, normalised_nhwc(x_test))

    rate = FINE_TUNE.learning_rate
    print(f"3. fine-tune in Keras with model.fit (20 steps, learning rate {rate:g}),")
    print("   then Keras -> PyTorch with the command line")
    keras_model.compile(
        optimizer=keras_train.create_optimizer(keras_model, FINE_TUNE),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    keras.utils.set_random_seed(SEED)
    keras_model.fit(
        normalised_nhwc(x_train), y_train, batch_size=BATCH, epochs=1, steps_per_epoch=20, verbose=2
    )
    tuned_file = out / "digits_atto_finetuned.keras"
    keras_model.save(tuned_file)
    tuned_logits = keras_train.predict(keras_model, normalised_nhwc(x_test))
    back_file = out / "digits_atto_finetuned.pth"
    convnext("convert", str(tuned_file), str(back_file), "--force")
    back_model = convnext_torch.create_model(VARIANT, num_classes=10, in_chans=1)
    back_model.load_state_dict(torch.load(back_file, weights_only=True))
    back_logits = torch_train.predict(back_model, normalised_nchw(x_test)).numpy()

    print("4. convnext verify on real pictures: the test digits as PNG files")
    pictures = out / "test-digits"
    write_pictures(pictures, originals, y_test)
    convnext(
        "verify", str(checkpoint), str(keras_file), "--images", str(pictures),
        "--size", str(SIZE), str(SIZE), "--batch", "64",
        "--report", str(out / "verify.html"), "--force",
    )  # fmt: skip

    rows = [
        ["model", "test accuracy", "same class as", "max logit difference"],
        ["PyTorch, trained", f"{accuracy_of(torch_logits, y_test):.1%}", "", ""],
        agreement("Keras, converted", torch_logits, keras_logits, y_test),
        ["Keras, fine-tuned", f"{accuracy_of(tuned_logits, y_test):.1%}", "", ""],
        agreement("PyTorch, converted back", tuned_logits, back_logits, y_test),
    ]
    print()
    print_table(rows)
    print("(each converted model is compared with the one above it)")
    print(f"written to {out}/: the checkpoints, the Keras files, test-digits/, verify.html")
    print(f"{time.perf_counter() - started:.0f} s in all")
    disagreements = [int(r[2].split("/")[0]) != len(y_test) for r in (rows[2], rows[4])]
    return 1 if any(disagreements) else 0


def write_pictures(folder: Path, originals: np.ndarray, labels: np.ndarray) -> None:
    """The test digits as 8x8 PNG files, named by index and label; verify resizes them."""
    from PIL import Image

    folder.mkdir(exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    for i, (picture, label) in enumerate(zip(originals, labels, strict=True)):
        Image.fromarray(picture).save(folder / f"{i:03d}-{label}.png")


def print_table(rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


if __name__ == "__main__":
    sys.exit(main())
