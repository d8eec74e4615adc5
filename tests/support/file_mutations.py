"""Hypothesis strategies for each file kind the readers take (.pth and its pickle, .safetensors,
.weights.h5 and .keras, Hugging Face directories), and the valid seed files they mutate
(tests/files/test_fuzz.py)."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import pickletools
import struct
import warnings

from hypothesis import strategies as st

from tests.support.mutations import (
    BYTE_OPS,
    FIELD_VALUES,
    JSON_EDITS,
    JSON_SCALARS,
    ZIP_FIELD_OPS,
    JsonEdits,
    Member,
    Replace,
    member_changes,
)

# --- .pth: the state_dict saved, the pickle, the zip ----------------------------------------


@dataclasses.dataclass(frozen=True)
class TensorEdit:
    """Replace the `index`-th tensor (modulo the count) of the state_dict before torch.save."""

    index: int
    change: str
    arg: object = None

    def apply(self, state: dict) -> object:
        import torch

        keys = list(state)
        key = keys[self.index % len(keys)]
        value = state[key]
        c, arg = self.change, self.arg
        if c == "dtype":
            state[key] = value.to(getattr(torch, arg))
        elif c == "shape":
            state[key] = torch.zeros(arg)
        elif c == "expand":
            state[key] = torch.zeros(1).expand(*arg)
        elif c == "transpose" and value.dim() >= 2:
            state[key] = value.transpose(0, -1)
        elif c == "slice":
            state[key] = torch.zeros(value.numel() + 7)[7:].view(value.shape)
        elif c == "sparse":
            state[key] = value.reshape(value.shape[0], -1).to_sparse()
        elif c == "meta":
            state[key] = torch.empty(value.shape, device="meta")
        elif c == "parameter":
            state[key] = torch.nn.Parameter(value)
        elif c == "value":
            state[key] = arg
        elif c == "drop":
            del state[key]
        elif c == "rename":
            state[arg] = state.pop(key)
        elif c == "add":
            state[arg] = value.clone()
        return state


@dataclasses.dataclass(frozen=True)
class Wrap:
    """Wrap the state_dict as a training checkpoint does, or not quite."""

    how: str

    def apply(self, state: dict) -> object:
        return {
            "model": lambda: {"model": state, "epoch": 1},
            "state_dict": lambda: {"state_dict": state},
            "ema": lambda: {"model_ema": state},
            "empty_model": lambda: {"model": {}, "state_dict": state},
            "prefix": lambda: {f"module.{k}": v for k, v in state.items()},
            "backbone": lambda: {f"backbone.{k}": v for k, v in state.items()},
            "list": lambda: [state],
            "nested": lambda: {"model": {"model": state}},
            "int_key": lambda: {**state, 3: next(iter(state.values()))},
        }[self.how]()


DTYPES = [
    "float16",
    "bfloat16",
    "float64",
    "int8",
    "uint8",
    "int32",
    "int64",
    "bool",
    "complex64",
    "float8_e4m3fn",
    "float8_e5m2",
]
SHAPES = st.lists(st.integers(0, 9), max_size=5).map(tuple)
NOT_TENSORS = st.sampled_from([None, 1, 1.5, "x", b"x", (1, 2), [1.0], {"a": 1}, True])
STATE_DICT_EDITS = st.one_of(
    st.builds(TensorEdit, st.integers(0, 99), st.just("dtype"), st.sampled_from(DTYPES)),
    st.builds(TensorEdit, st.integers(0, 99), st.just("shape"), SHAPES),
    st.builds(
        TensorEdit,
        st.integers(0, 99),
        st.just("expand"),
        st.sampled_from([(20000, 20000), (10**6, 10**6), (8,), (3, 8)]),
    ),
    st.builds(
        TensorEdit,
        st.integers(0, 99),
        st.sampled_from(["transpose", "slice", "sparse", "meta", "parameter", "drop"]),
    ),
    st.builds(TensorEdit, st.integers(0, 99), st.just("value"), NOT_TENSORS),
    st.builds(
        TensorEdit,
        st.integers(0, 99),
        st.sampled_from(["rename", "add"]),
        st.sampled_from(["", "stem.weight", "head.weight", "stages.9.0.gamma", "norm"])
        | st.text(max_size=12),
    ),
    st.builds(
        Wrap,
        st.sampled_from(
            ["model", "state_dict", "ema", "empty_model", "prefix", "backbone", "list", "nested"]
        ),
    ),
    st.just(Wrap("int_key")),
)
# torch.save options: its default, the pickle protocols the weights-only reader refuses, the
# legacy (non-zip) format.
SAVE_MODES = st.sampled_from(["default", "default", "default", "protocol4", "legacy"])


def pickle_ops(data: bytes) -> list[tuple]:
    """(opcode name, argument, start, end) for each opcode of a pickle; [] if it is damaged."""
    try:
        ops = list(pickletools.genops(data))
    except Exception:  # pickletools raises ValueError and others on damage
        return []
    ends = [pos for _, _, pos in ops[1:]] + [len(data)]
    return [(op.name, arg, pos, end) for (op, arg, pos), end in zip(ops, ends, strict=True)]


def pickle_int(value: int) -> bytes:
    if 0 <= value < 256:
        return b"K" + bytes([value])
    if 0 <= value < 65536:
        return b"M" + struct.pack("<H", value)
    if -(2**31) <= value < 2**31:
        return b"J" + struct.pack("<i", value)
    body = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(body)]) + body


@dataclasses.dataclass(frozen=True)
class PickleEdit:
    """Replace the `index`-th opcode of a kind in a pickle: an integer (shapes, strides,
    storage offsets and sizes), a string (keys, storage names, devices), a global (storage
    dtypes, rebuild functions); or delete or repeat one opcode."""

    kind: str  # "int", "str", "global", "delete", "repeat"
    index: int
    value: object = None

    KINDS = {
        "int": ("BININT", "BININT1", "BININT2", "LONG1", "INT"),
        "str": ("BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8", "UNICODE"),
        "global": ("GLOBAL",),
    }

    def __call__(self, data: bytes) -> bytes:
        ops = pickle_ops(data)
        if self.kind in self.KINDS:
            ops = [op for op in ops if op[0] in self.KINDS[self.kind]]
        if not ops:
            return data
        _, _, start, end = ops[self.index % len(ops)]
        if self.kind == "int":
            new = pickle_int(self.value)
        elif self.kind == "str":
            text = str(self.value).encode("utf-8", "surrogatepass")
            new = b"X" + struct.pack("<I", len(text)) + text
        elif self.kind == "global":
            new = b"c" + str(self.value).replace(" ", "\n", 1).encode() + b"\n"
        elif self.kind == "delete":
            new = b""
        else:
            new = data[start:end] * 2
        return data[:start] + new + data[end:]


GLOBALS = [
    f"torch {name}"
    for name in (
        "HalfStorage",
        "BFloat16Storage",
        "DoubleStorage",
        "LongStorage",
        "IntStorage",
        "ByteStorage",
        "BoolStorage",
        "CharStorage",
        "ComplexFloatStorage",
        "QInt8Storage",
        "UntypedStorage",
        "Size",
        "float32",
        "device",
    )
] + [
    "torch._utils _rebuild_tensor_v2",
    "torch._utils _rebuild_parameter",
    "torch._utils _rebuild_sparse_tensor",
    "torch._utils _rebuild_qtensor",
    "torch._utils _rebuild_meta_tensor_no_storage",
    "torch._utils _rebuild_wrapper_subclass",
    "collections OrderedDict",
    "builtins dict",
    "builtins getattr",
    "argparse Namespace",
    "os system",
    "numpy.core.multiarray _reconstruct",
]
PICKLE_EDITS = st.one_of(
    st.builds(
        PickleEdit,
        st.just("int"),
        st.integers(0, 2000),
        st.one_of(
            st.integers(-2, 70),
            st.sampled_from([255, 256, 65535, 2**31 - 1, 2**31, 2**32, 2**62, 2**63, -(2**63)]),
            st.integers(-(2**70), 2**70),
        ),
    ),
    st.builds(
        PickleEdit,
        st.just("str"),
        st.integers(0, 2000),
        st.sampled_from(["", "0", "55", "56", "999", "cuda", "meta", "cpu", "storage", ".."])
        | st.text(max_size=8),
    ),
    st.builds(PickleEdit, st.just("global"), st.integers(0, 200), st.sampled_from(GLOBALS)),
    st.builds(PickleEdit, st.sampled_from(["delete", "repeat"]), st.integers(0, 5000)),
)
PTH_MEMBERS = ["data.pkl", "version", "byteorder", ".format_version", ".storage_alignment"]
PTH_MEMBERS += [".data/serialization_id", "data/0", "data/1", "data/54", "data/55"]
PTH_OPS = st.one_of(
    BYTE_OPS,
    ZIP_FIELD_OPS,
    st.builds(
        Member, st.just("data.pkl"), st.lists(PICKLE_EDITS, min_size=1, max_size=3).map(tuple)
    ),
    st.builds(
        Member, st.sampled_from(PTH_MEMBERS), st.lists(BYTE_OPS, min_size=1, max_size=2).map(tuple)
    ),
    st.builds(
        Member,
        st.sampled_from(["version", "byteorder", ".format_version", ".storage_alignment"]),
        st.tuples(
            st.builds(
                Replace,
                st.sampled_from([b"big", b"little", b"0", b"1", b"2\n", b"99\n", b"-1", b"\xff"]),
            )
        ),
    ),
    member_changes(PTH_MEMBERS),
)


@dataclasses.dataclass(frozen=True)
class PthExample:
    edit: object  # a TensorEdit or Wrap, or None
    save: str
    ops: tuple


PTH_EXAMPLES = st.builds(
    PthExample,
    st.none() | STATE_DICT_EDITS,
    SAVE_MODES,
    st.lists(PTH_OPS, max_size=3).map(tuple),
)


# --- .safetensors ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HeaderLength:
    """Set (or shift) safetensors' 8-byte little-endian header length."""

    value: int
    add: bool = False

    def __call__(self, data: bytes) -> bytes:
        if len(data) < 8:
            return data
        old = struct.unpack_from("<Q", data)[0]
        value = (old + self.value if self.add else self.value) % (1 << 64)
        return struct.pack("<Q", value) + data[8:]


@dataclasses.dataclass(frozen=True)
class Header:
    """Rewrite safetensors' JSON header through `ops` (JSON edits or byte ops), its length
    field made to match (as a writer that got the header wrong would)."""

    ops: tuple

    def __call__(self, data: bytes) -> bytes:
        if len(data) < 8:
            return data
        length = struct.unpack_from("<Q", data)[0]
        if length > len(data) - 8:
            return data
        header, rest = data[8 : 8 + length], data[8 + length :]
        for op in self.ops:
            header = op(header)
        return struct.pack("<Q", len(header)) + header + rest


@dataclasses.dataclass(frozen=True)
class TensorField:
    """Set one field (dtype, shape, data_offsets) of the `index`-th tensor of the header."""

    index: int
    field: str
    value: object

    def edit(self, header: object) -> object:
        if not isinstance(header, dict):
            return header
        names = sorted(k for k in header if k != "__metadata__")
        if names and isinstance(header[names[self.index % len(names)]], dict):
            header[names[self.index % len(names)]][self.field] = self.value
        return header


ST_DTYPES = ["F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "U16", "U32", "U64"]
ST_DTYPES += ["BOOL", "F8_E4M3", "F8_E5M2", "C64", "F4", "E8M0", "f32", "", "float32"]
TENSOR_FIELDS = st.one_of(
    st.builds(TensorField, st.integers(0, 99), st.just("dtype"), st.sampled_from(ST_DTYPES)),
    st.builds(
        TensorField,
        st.integers(0, 99),
        st.just("shape"),
        st.lists(st.integers(-1, 9) | st.sampled_from([2**31, 2**32, 2**63, 2**64]), max_size=5)
        | JSON_SCALARS,
    ),
    st.builds(
        TensorField,
        st.integers(0, 99),
        st.just("data_offsets"),
        st.lists(
            st.integers(-1, 40000) | st.sampled_from([2**32, 2**63 - 1, 2**64]),
            min_size=0,
            max_size=3,
        )
        | JSON_SCALARS,
    ),
)
ST_OPS = st.one_of(
    BYTE_OPS,
    st.builds(HeaderLength, FIELD_VALUES),
    st.builds(HeaderLength, st.integers(-64, 64), st.just(True)),
    st.builds(
        Header,
        st.lists(st.builds(JsonEdits, st.tuples(TENSOR_FIELDS)), min_size=1, max_size=3).map(tuple),
    ),
    st.builds(Header, st.tuples(JSON_EDITS)),
    st.builds(Header, st.lists(BYTE_OPS, min_size=1, max_size=2).map(tuple)),
)


@dataclasses.dataclass(frozen=True)
class SafetensorsExample:
    edit: object  # a TensorEdit of the state_dict saved, or None
    ops: tuple


# The edits safetensors can save (dense tensors only); the header edits reach the rest.
SAVABLE_EDITS = st.one_of(
    st.builds(TensorEdit, st.integers(0, 99), st.just("dtype"), st.sampled_from(DTYPES)),
    st.builds(TensorEdit, st.integers(0, 99), st.just("shape"), SHAPES),
    st.builds(TensorEdit, st.integers(0, 99), st.sampled_from(["drop", "transpose"])),
    st.builds(
        TensorEdit,
        st.integers(0, 99),
        st.sampled_from(["rename", "add"]),
        st.sampled_from(["", "stem.weight", "head.weight", "__metadata__"]) | st.text(max_size=12),
    ),
)
ST_EXAMPLES = st.builds(
    SafetensorsExample, st.none() | SAVABLE_EDITS, st.lists(ST_OPS, max_size=3).map(tuple)
)


# --- .weights.h5 and .keras -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class H5Edit:
    """One change to an HDF5 weights file made with h5py before its bytes are mutated: the
    `index`-th dataset (modulo the count) retyped, reshaped, deleted, renamed, compressed,
    made a group or a link, given a sibling or an attribute."""

    index: int
    change: str
    arg: object = None

    def apply(self, f) -> None:  # f: an h5py.File open for writing
        import h5py
        import numpy as np

        names: list[str] = []
        f.visititems(
            lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None
        )
        if not names:
            return
        name = names[self.index % len(names)]
        data, group = f[name][()], f[name].parent
        base = name.rpartition("/")[2]
        c, arg = self.change, self.arg
        if c == "dtype":
            replace(f, name, data.astype(arg))
        elif c == "shape":
            replace(f, name, np.zeros(arg, dtype=data.dtype))
        elif c == "scalar":
            replace(f, name, np.float32(1.5))
        elif c == "empty":
            del f[name]
            group.create_dataset(base, data=h5py.Empty("f4"))
        elif c == "delete":
            del f[name]
        elif c == "rename":
            group.move(base, str(arg))
        elif c == "add":
            group.create_dataset(str(arg), data=np.zeros((2,), dtype="f4"))
        elif c == "group":
            del f[name]
            group.create_group(base)
        elif c == "compress":
            del f[name]
            if data.ndim:
                group.create_dataset(base, data=data, chunks=True, **arg)
            else:
                group.create_dataset(base, data=data)
        elif c == "soft_link":
            del f[name]
            group[base] = h5py.SoftLink(str(arg))
        elif c == "external_link":  # another file's dataset of the same name
            del f[name]
            group[base] = h5py.ExternalLink(str(arg), "/" + name)
        elif c == "external_storage":  # the values are the bytes of another file
            del f[name]
            group.create_dataset(
                base, shape=data.shape, dtype=data.dtype, external=[(str(arg), 0, data.nbytes)]
            )
        elif c == "virtual":  # the values mapped from another file's dataset of the same name
            del f[name]
            layout = h5py.VirtualLayout(shape=data.shape, dtype=data.dtype)
            layout[...] = h5py.VirtualSource(str(arg), name, shape=data.shape)
            group.create_virtual_dataset(base, layout, fillvalue=7)
        elif c == "cycle":  # a hard link from the dataset's place to the root: a cycle
            del f[name]
            group[base] = f["/"]
        elif c == "declare":  # a shape of fill values: declared, never stored
            del f[name]
            group.create_dataset(base, shape=arg, dtype=data.dtype)
        elif c == "padding":  # one more array at the root: array counts match after a removal
            f.create_dataset(f"padding{arg}", data=np.zeros(1, "f4"))
        elif c == "attribute":
            group.attrs[str(arg)] = "x"
        elif c == "root_attribute":
            f.attrs[str(arg)] = np.arange(3)


def replace(f, name: str, data: object) -> None:
    del f[name]
    f.create_dataset(name, data=data)


@dataclasses.dataclass(frozen=True)
class H5Edits:
    """Edits made with h5py to a valid HDF5 file's bytes (only ever a valid one: h5py runs in
    the test process, which must not meet a damaged file)."""

    edits: tuple

    def __call__(self, data: bytes) -> bytes:
        import h5py

        buffer = io.BytesIO(data)
        with h5py.File(buffer, "r+") as f, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy's ComplexWarning on a complex -> real cast
            for edit in self.edits:
                with contextlib.suppress(Exception):  # an edit that does not apply is skipped
                    edit.apply(f)
        return buffer.getvalue()


H5_NAMES = st.sampled_from(["0", "1", "2", "vars", "layers", "x", "0/0"]) | st.text(
    "abc012_", min_size=1, max_size=6
)
H5_EDIT = st.one_of(
    st.builds(
        H5Edit,
        st.integers(0, 99),
        st.just("dtype"),
        st.sampled_from(["f2", "f8", "i1", "i4", "i8", "u1", "?", "c8", "S4"]),
    ),
    st.builds(H5Edit, st.integers(0, 99), st.just("shape"), SHAPES),
    st.builds(
        H5Edit,
        st.integers(0, 99),
        st.sampled_from(["scalar", "empty", "delete", "group"]),
    ),
    st.builds(
        H5Edit, st.integers(0, 99), st.sampled_from(["rename", "add", "attribute"]), H5_NAMES
    ),
    st.builds(H5Edit, st.integers(0, 99), st.just("root_attribute"), H5_NAMES),
    st.builds(
        H5Edit,
        st.integers(0, 99),
        st.just("compress"),
        st.sampled_from(
            [
                {"compression": "gzip"},
                {"compression": "lzf"},
                {"shuffle": True, "fletcher32": True},
                {"scaleoffset": 3},
            ]
        ),
    ),
    st.builds(
        H5Edit,
        st.integers(0, 99),
        st.just("soft_link"),
        st.sampled_from(["/", "/missing", "/downsample_layers", "."]),
    ),
    st.builds(
        H5Edit,
        st.integers(0, 99),
        st.sampled_from(["external_link", "external_storage", "virtual"]),
        st.sampled_from(["/nonexistent.h5", "/dev/zero", "/proc/self/status", "."]),
    ),
    st.builds(H5Edit, st.integers(0, 99), st.just("cycle")),
    st.builds(  # up to 10^12 elements declared in a file of kilobytes
        H5Edit,
        st.integers(0, 99),
        st.just("declare"),
        st.lists(st.sampled_from([1, 8, 1000, 20000, 10**6]), min_size=1, max_size=3).map(tuple),
    ),
    st.builds(H5Edit, st.integers(0, 99), st.just("padding"), st.integers(0, 3)),
)
H5_EDITS = st.lists(H5_EDIT, min_size=1, max_size=3).map(lambda edits: H5Edits(tuple(edits)))


@dataclasses.dataclass(frozen=True)
class H5Example:
    edits: object  # an H5Edits or None
    ops: tuple


H5_EXAMPLES = st.builds(H5Example, st.none() | H5_EDITS, st.lists(BYTE_OPS, max_size=3).map(tuple))

KERAS_MEMBERS = ["config.json", "metadata.json", "model.weights.h5"]
KERAS_OPS = st.one_of(
    BYTE_OPS,
    ZIP_FIELD_OPS,
    st.builds(Member, st.sampled_from(["config.json", "metadata.json"]), st.tuples(JSON_EDITS)),
    st.builds(
        Member,
        st.sampled_from(KERAS_MEMBERS),
        st.lists(BYTE_OPS, min_size=1, max_size=2).map(tuple),
    ),
    member_changes(KERAS_MEMBERS),
)


@dataclasses.dataclass(frozen=True)
class KerasExample:
    weights: object  # H5Edits for the weights member, or None
    ops: tuple


KERAS_EXAMPLES = st.builds(
    KerasExample, st.none() | H5_EDITS, st.lists(KERAS_OPS, max_size=3).map(tuple)
)


@dataclasses.dataclass(frozen=True)
class HfExample:
    config: tuple  # ops on config.json's bytes
    weights: tuple  # ops on model.safetensors
    drop_config: bool


HF_EXAMPLES = st.builds(
    HfExample,
    st.lists(JSON_EDITS | BYTE_OPS, max_size=2).map(tuple),
    st.lists(ST_OPS, max_size=2).map(tuple),
    st.booleans(),
)
