"""Deploy a PyTorch ConvNeXt to TensorFlow the way people do, with a third-party converter.

Run with the Python of the converter's own environment (`make test-peers` builds them: their
pins conflict with each other and with this project's):

    python tests/peers/peer_converters.py litert|onnx2tf|nobuco CHECKPOINT OUT_DIR
        --variant NAME [--size H W] [--batch N] [--break BLOCK]

CHECKPOINT is an official-layout state dict this project wrote (convnext_torch.create_model);
the model is rebuilt from it here with convnext_torch (torch only: the checkout is put on
sys.path, nothing of this project is installed in these environments), then converted as each
converter's documentation says. The artifacts are written under OUT_DIR, and one JSON line on
stdout names them: {"tflite": ".../model.tflite", "savedmodel": ".../saved_model", ...}, with
the converter's version. --break BLOCK moves one value of BLOCK.pwconv2.weight before
converting, so that the artifact holds one wrong weight in that block and nowhere else.
A fixed-shape converter (litert-torch, onnx2tf) exports at --size, with a batch of --batch.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout: convnext_torch

import numpy as np  # noqa: E402
import torch  # noqa: E402

import convnext_torch  # noqa: E402

BREAK_DELTA = 0.1  # one pwconv2 weight is ~1/sqrt(4 * dim) (0.04 for atto's stage 2)


def load(checkpoint: Path, variant: str, broken: str | None) -> torch.nn.Module:
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    num_classes = state["head.weight"].shape[0] if "head.weight" in state else 0
    model = convnext_torch.create_model(variant, num_classes=num_classes)
    model.load_state_dict(state, strict=True)
    if broken is not None:
        weight = model.get_parameter(f"{broken}.pwconv2.weight")
        with torch.no_grad():
            weight.view(-1)[weight.numel() // 3] += BREAK_DELTA
    return model.eval()


def litert(model: torch.nn.Module, sample: torch.Tensor, out: Path) -> dict[str, str]:
    """litert-torch (ai-edge-torch until 0.8): PyTorch straight to a .tflite file, NCHW in
    as PyTorch takes it, at the sample's fixed shape."""
    import litert_torch

    path = out / "model.tflite"
    litert_torch.convert(model, (sample,)).export(str(path))
    return {"tflite": str(path), "version": f"litert-torch {version('litert-torch')}"}


def onnx2tf(model: torch.nn.Module, sample: torch.Tensor, out: Path) -> dict[str, str]:
    """torch.onnx.export, then onnx2tf: a SavedModel and float32 / float16 .tflite files, NHWC
    in (onnx2tf transposes the graph to channels last), at the sample's fixed shape."""
    import onnx2tf as converter

    onnx_path = out / "model.onnx"
    # the TorchScript exporter: the dynamo one's graph (torch 2.13's default) makes onnx2tf
    # 1.29 normalise the channels-first LayerNorms over the width ("has 40 elements, but got
    # `shape` (16,)")
    torch.onnx.export(
        model,
        (sample,),
        str(onnx_path),
        input_names=["images"],
        output_names=["logits"],
        opset_version=17,
        dynamo=False,
    )
    folder = out / "onnx2tf"
    # onnx2tf runs the graph on 20 sample images it downloads, unless a file of that name is
    # in the working directory: offline, it gets random ones there
    samples = np.random.default_rng(0).random((20, 128, 128, 3), dtype=np.float32)
    np.save(out / "calibration_image_sample_data_20x128x128x3_float32.npy", samples)
    # and again with Erf written as builtin operators (-rtpo Erf, Abramowitz and Stegun's
    # 7.1.26, |error| < 1.5e-7): the route to a .tflite LiteRT runs without the Flex delegate
    pseudo = out / "onnx2tf-pseudo-erf"
    with contextlib.chdir(out):
        for destination, replaced in ((folder, None), (pseudo, ["erf"])):  # lower case: the API
            converter.convert(
                input_onnx_file_path=str(onnx_path),
                output_folder_path=str(destination),
                output_signaturedefs=True,
                non_verbose=True,
                replace_to_pseudo_operators=replaced,
            )
    return {
        "savedmodel": str(folder),
        "tflite": str(folder / "model_float32.tflite"),
        "tflite-float16": str(folder / "model_float16.tflite"),
        "tflite-pseudo-erf": str(pseudo / "model_float32.tflite"),
        "version": f"onnx2tf {version('onnx2tf')}, torch {torch.__version__}",
    }


def nobuco(model: torch.nn.Module, sample: torch.Tensor, out: Path) -> dict[str, str]:
    """nobuco: PyTorch to a Keras model op by op, NHWC in, any batch and size; written as a
    SavedModel (Keras' model.export) and a .tflite file (TFLiteConverter)."""
    import nobuco as converter
    import tensorflow as tf
    from nobuco import ChannelOrder

    keras_model = converter.pytorch_to_keras(
        model,
        args=[sample],
        input_shapes={sample: (None, 3, None, None)},
        inputs_channel_order=ChannelOrder.TENSORFLOW,
        outputs_channel_order=ChannelOrder.TENSORFLOW,
    )
    savedmodel = out / "nobuco_savedmodel"
    keras_model.export(str(savedmodel))
    tflite = out / "nobuco.tflite"
    tflite.write_bytes(tf.lite.TFLiteConverter.from_keras_model(keras_model).convert())
    return {
        "savedmodel": str(savedmodel),
        "tflite": str(tflite),
        "version": f"nobuco {version('nobuco')}, tensorflow {tf.__version__}",
    }


CONVERTERS = {"litert": litert, "onnx2tf": onnx2tf, "nobuco": nobuco}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("converter", choices=CONVERTERS)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--variant", required=True)
    parser.add_argument("--size", type=int, nargs=2, default=(224, 224), metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--break", dest="broken", metavar="BLOCK")
    args = parser.parse_args()
    model = load(args.checkpoint, args.variant, args.broken)
    sample = torch.randn(args.batch, 3, *args.size, generator=torch.Generator().manual_seed(0))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    written = CONVERTERS[args.converter](model, sample, args.out_dir)
    print(json.dumps(written))


if __name__ == "__main__":
    main()
