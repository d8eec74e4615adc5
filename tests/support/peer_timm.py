"""Run with a Python that has timm (its own process: timm's triton must not meet TensorFlow).

python peer_timm.py make VARIANT OUT_DIR   # random timm model -> model.safetensors, io.npz
python peer_timm.py run VARIANT FILE NPZ   # strict-load FILE into timm, logits -> NPZ
python peer_timm.py shapes VARIANT JSON    # every key's shape and the parameter count (meta)
"""

import json
import sys

import numpy as np
import timm
import torch
from safetensors.torch import load_file, save_file


def randomise(model: torch.nn.Module) -> None:
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim <= 1:  # (and CLIP's scalar logit scale)
                p.copy_(0.5 + torch.rand(p.shape, generator=generator))  # norms, biases, gamma
            else:
                p.copy_(torch.randn(p.shape, generator=generator) / p[0].numel() ** 0.5)


def main() -> None:
    command, variant = sys.argv[1], sys.argv[2]
    if command == "shapes":  # 1000 classes, no memory: the 846M-parameter xxlarge included
        with torch.device("meta"):
            model = timm.create_model(variant, pretrained=False)
        shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
        count = sum(p.numel() for p in model.parameters())
        with open(sys.argv[3], "w") as f:
            json.dump({"shapes": shapes, "parameters": count, "timm": timm.__version__}, f)
        return
    model = timm.create_model(variant, pretrained=False, num_classes=10).eval()
    if command == "make":
        out = sys.argv[3]
        randomise(model)
        images = np.random.default_rng(0).standard_normal((2, 3, 61, 127)).astype(np.float32)
        with torch.no_grad():
            logits = model(torch.from_numpy(images)).numpy()
        save_file(
            {k: v.contiguous() for k, v in model.state_dict().items()}, f"{out}/model.safetensors"
        )
        np.savez(f"{out}/io.npz", images=images, logits=logits, timm=timm.__version__)
    else:
        path, npz = sys.argv[3], sys.argv[4]
        model.load_state_dict(load_file(path), strict=True)
        images = np.load(npz)["images"]
        with torch.no_grad():
            np.savez(npz, images=images, logits=model(torch.from_numpy(images)).numpy())


if __name__ == "__main__":
    main()
