"""Run with a Python that has open_clip (its own process, like peer_timm.py).

python peer_open_clip.py MODEL OUT_DIR   # random CLIP -> clip.pt (whole state_dict), io.npz
"""

import sys

import numpy as np
import open_clip
import torch
from peer_timm import randomise


def main() -> None:
    name, out = sys.argv[1], sys.argv[2]
    model = open_clip.create_model(name, pretrained=None).eval()
    randomise(model)
    size = model.visual.image_size
    size = size if isinstance(size, int) else size[0]
    images = np.random.default_rng(0).standard_normal((2, 3, size - 3, size + 5))
    images = images.astype(np.float32)
    with torch.no_grad():
        embedding = model.encode_image(torch.from_numpy(images), normalize=False).numpy()
    torch.save(model.state_dict(), f"{out}/clip.pt")
    np.savez(f"{out}/io.npz", images=images, embedding=embedding, version=open_clip.__version__)


if __name__ == "__main__":
    main()
