"""The valid seed files the fuzz tests mutate, the same bytes on every run
(tests/files/test_fuzz.py)."""

from __future__ import annotations

import io
import json
import re
import struct
import zipfile
import zlib
from pathlib import Path

from tests.support.fuzz_harness import SPEC_FIELDS
from tests.support.mutations import member_index, rezip, unzip


def deterministic_values(shapes: list[tuple[int, ...]]) -> list:
    import numpy as np

    rng = np.random.default_rng(20240611)
    return [rng.standard_normal(shape).astype("float32") * 0.1 for shape in shapes]


def set_zip_member(data: bytes, name: str, content: bytes) -> bytes:
    """Replace a stored member's bytes in place, same length, its CRCs updated (torch writes
    a random serialization_id; the seed must be the same bytes on every run)."""
    out = bytearray(data)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith(name))
    assert info.compress_size == len(content) and info.compress_type == zipfile.ZIP_STORED
    at = info.header_offset
    name_length, extra_length = struct.unpack_from("<HH", out, at + 26)
    start = at + 30 + name_length + extra_length
    out[start : start + len(content)] = content
    crc = zlib.crc32(content)
    struct.pack_into("<I", out, at + 14, crc)
    after = start + len(content)
    if out[after : after + 4] == b"PK\x07\x08":
        struct.pack_into("<I", out, after + 4, crc)
    for match in re.finditer(re.escape(b"PK\x01\x02"), bytes(out)):
        here = match.start()
        length = struct.unpack_from("<H", out, here + 28)[0]
        if out[here + 46 : here + 46 + length] == info.filename.encode():
            struct.pack_into("<I", out, here + 16, crc)
    with zipfile.ZipFile(io.BytesIO(bytes(out))) as archive:
        assert archive.testzip() is None
    return bytes(out)


class Seeds:
    """The valid files the mutations start from, and the state_dict they hold. Not a
    dataclass: Hypothesis prints a failing example's fixtures, a dataclass field by field."""

    FIELDS = ("state_dict", "pth", "safetensors", "weights_h5", "keras", "hf_config")
    FIELDS += ("hf_safetensors",)

    def __init__(self, *values: object):
        for name, value in zip(self.FIELDS, values, strict=True):
            setattr(self, name, value)

    def __repr__(self) -> str:
        return "Seeds(...)"


def make_seeds(work: Path) -> Seeds:
    import torch
    from safetensors.torch import save as save_safetensors

    import convnext_tf
    import convnext_torch
    from converters.names import layouts
    from convnext_spec.spec import ModelSpec

    spec = ModelSpec(**SPEC_FIELDS)
    model = convnext_torch.create_model(spec)
    shapes = [tuple(v.shape) for v in model.state_dict().values()]
    state = {
        k: torch.from_numpy(v)
        for k, v in zip(model.state_dict(), deterministic_values(shapes), strict=True)
    }
    torch.save(state, work / "seed.pth")
    pth = set_zip_member((work / "seed.pth").read_bytes(), ".data/serialization_id", b"0" * 40)
    safetensors = save_safetensors(state)
    official = {k: v.numpy() for k, v in state.items()}
    hf, _ = layouts.from_official(official, "hf")
    hf_safetensors = save_safetensors({k: torch.from_numpy(v) for k, v in hf.items()})
    hf_config = json.dumps(
        {"model_type": "convnext", "layer_norm_eps": 1e-6, "num_labels": 3, "hidden_sizes": [8] * 4}
    ).encode()

    keras_model = convnext_tf.create_model(spec)
    keras_model.set_weights(deterministic_values([tuple(w.shape) for w in keras_model.weights]))
    keras_model.save_weights(work / "seed.weights.h5")
    keras_model.save(work / "seed.keras")
    members = unzip((work / "seed.keras").read_bytes())
    assert members is not None
    metadata = member_index(members, "metadata.json")
    members[metadata] = (
        "metadata.json",
        zipfile.ZIP_STORED,
        b'{"keras_version": "3", "date_saved": "2000-01-01@00:00:00"}',
    )
    return Seeds(
        state,
        pth,
        safetensors,
        (work / "seed.weights.h5").read_bytes(),
        rezip(members),
        hf_config,
        hf_safetensors,
    )
