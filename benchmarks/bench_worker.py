"""One implementation, timed in a process of its own (benchmarks/bench.py runs this).

    python benchmarks/bench_worker.py IMPL BATCH [--repeats R] [--threads T] [--artifact PATH]

Prints one JSON line: the median latency of R calls after warm-up, in milliseconds. Each
implementation gets a process of its own because what one framework loads changes another's
speed (thread pools, oneDNN state, memory), and a user runs one of them, not both.

IMPL: torch, torch-unfused, torch-channels_last, torch-compile, torch-peer-env (ours; the last
in timm's environment and torch), timm, transformers (peers, each in the Python that has it),
keras-eager, keras-predict, keras-function, keras-xla (ours),
kapp-eager, kapp-function, kapp-xla (keras.applications.ConvNeXtTiny), savedmodel, tflite
(what `convnext export` wrote, at --artifact), onnxruntime, openvino (the engines deployers
pick, running the ONNX file torch.onnx.export wrote of our PyTorch model, at --artifact; in
the Python of `make engines`). --device cuda runs a PyTorch implementation on the GPU (its
Python needs a CUDA build of torch).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

VARIANT, SIZE = "convnext_tiny", 224


def timed(call, repeats: int) -> list[float]:
    call()  # warm-up: traces, compiles, allocates
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def images(batch: int, nhwc: bool):
    import numpy as np

    x = np.random.default_rng(0).standard_normal((batch, 3, SIZE, SIZE)).astype(np.float32)
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if nhwc else x


def torch_call(impl: str, batch: int, threads: int, device: str):
    import torch

    torch.set_num_threads(threads)
    if impl == "timm":
        import timm

        model = timm.create_model(VARIANT, pretrained=False)
    elif impl == "transformers":
        import transformers

        config = transformers.ConvNextConfig()  # ConvNeXt-T: the defaults
        model = transformers.ConvNextForImageClassification(config)
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        import convnext_torch

        model = convnext_torch.create_model(VARIANT)
    model.eval().to(device)
    x = torch.from_numpy(images(batch, nhwc=False)).to(device)
    if impl == "torch-channels_last":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if impl == "torch-compile":
        model = torch.compile(model)
    context = torch.inference_mode
    if impl == "torch-unfused":  # without the fused oneDNN MLP (convnext_torch/kernels.py)
        import contextlib

        from convnext_torch.kernels import fused_kernels

        def context():
            stack = contextlib.ExitStack()
            stack.enter_context(torch.inference_mode())
            stack.enter_context(fused_kernels(False))
            return stack

    forward = (lambda: model(pixel_values=x).logits) if impl == "transformers" else lambda: model(x)
    synchronize = torch.cuda.synchronize if device == "cuda" else lambda: None

    def call():
        with context():
            out = forward()
        synchronize()  # CUDA runs asynchronously: time the work, not the launch
        return out

    return call


def keras_call(impl: str, batch: int, threads: int, artifact: str | None):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from converters.startup import import_tensorflow_quietly

    import_tensorflow_quietly()
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    x = images(batch, nhwc=True)
    if impl == "savedmodel":
        serve = tf.saved_model.load(artifact).signatures["serving_default"]
        xt = tf.constant(x)
        return lambda: serve(images=xt)
    if impl == "tflite":
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=artifact, num_threads=threads)
        runner = interpreter.get_signature_runner("serving_default")
        return lambda: runner(images=x)
    import keras

    if impl.startswith("kapp"):
        model = keras.applications.ConvNeXtTiny(weights=None, input_shape=(SIZE, SIZE, 3))
    else:
        import convnext_tf

        model = convnext_tf.create_model(VARIANT)
    mode = impl.split("-", 1)[1]
    xt = tf.constant(x)
    if mode == "eager":
        return lambda: model(xt, training=False)
    if mode == "predict":
        return lambda: model.predict(x, batch_size=batch, verbose=0)
    function = tf.function(lambda t: model(t, training=False), jit_compile=mode == "xla")
    return lambda: function(xt)


def engine_call(impl: str, batch: int, threads: int, artifact: str):
    """ONNX Runtime or OpenVINO on the CPU, `threads` threads, float32 throughout: OpenVINO's
    CPU plugin would compute in bfloat16 where the processor has it (its default precision
    hint); f32 is asked for, so that it computes what the others compute."""
    x = images(batch, nhwc=False)
    if impl == "onnxruntime":
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(
            artifact, options, providers=["CPUExecutionProvider"]
        )
        name = session.get_inputs()[0].name
        return lambda: session.run(None, {name: x})
    import openvino

    compiled = openvino.Core().compile_model(
        artifact,
        "CPU",
        {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"},
    )
    request = compiled.create_infer_request()
    return lambda: request.infer({0: x})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("impl")
    parser.add_argument("batch", type=int)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--artifact")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (PyTorch implementations)")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if args.impl.startswith(("torch", "timm", "transformers")):
        call = torch_call(args.impl, args.batch, args.threads, args.device)
    elif args.impl in ("onnxruntime", "openvino"):
        call = engine_call(args.impl, args.batch, args.threads, args.artifact)
    else:
        call = keras_call(args.impl, args.batch, args.threads, args.artifact)
    times = timed(call, args.repeats)
    print(
        json.dumps(
            {
                "impl": args.impl,
                "batch": args.batch,
                "device": args.device,
                "median_ms": 1000 * statistics.median(times),
                "min_ms": 1000 * min(times),
            }
        )
    )


if __name__ == "__main__":
    main()
