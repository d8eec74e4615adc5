"""Hypothesis strategies that mutate bytes, JSON and zip archives (tests/files/test_fuzz.py)."""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import re
import struct
import warnings
import zipfile

from hypothesis import strategies as st

# --- byte mutations ---------------------------------------------------------------------------

# Offsets are drawn large and taken modulo the length; half of them fall in the first 512
# bytes, where the headers are.
OFFSETS = st.one_of(st.integers(0, 511), st.integers(0, 1 << 20))


@dataclasses.dataclass(frozen=True)
class Truncate:
    at: int

    def __call__(self, data: bytes) -> bytes:
        return data[: self.at % max(len(data), 1)]


@dataclasses.dataclass(frozen=True)
class Flip:
    at: int
    mask: int

    def __call__(self, data: bytes) -> bytes:
        if not data:
            return data
        i = self.at % len(data)
        return data[:i] + bytes([data[i] ^ self.mask]) + data[i + 1 :]


@dataclasses.dataclass(frozen=True)
class Overwrite:
    at: int
    new: bytes

    def __call__(self, data: bytes) -> bytes:
        i = self.at % max(len(data), 1)
        return data[:i] + self.new + data[i + len(self.new) :]


@dataclasses.dataclass(frozen=True)
class Replace:
    new: bytes

    def __call__(self, data: bytes) -> bytes:
        return self.new


@dataclasses.dataclass(frozen=True)
class Insert:
    at: int
    new: bytes

    def __call__(self, data: bytes) -> bytes:
        i = self.at % (len(data) + 1)
        return data[:i] + self.new + data[i:]


@dataclasses.dataclass(frozen=True)
class Delete:
    at: int
    length: int

    def __call__(self, data: bytes) -> bytes:
        i = self.at % max(len(data), 1)
        return data[:i] + data[i + self.length :]


INTERESTING_BYTES = st.sampled_from(
    [b"\x00" * 8, b"\xff" * 8, b"\x7f\xff\xff\xff", b"\x80\x00\x00\x00", b"\x01", b"{", b"["]
)
BYTE_OPS = st.one_of(
    st.builds(Truncate, OFFSETS),
    st.builds(Flip, OFFSETS, st.integers(1, 255)),
    st.builds(Overwrite, OFFSETS, st.binary(min_size=1, max_size=16) | INTERESTING_BYTES),
    st.builds(Insert, OFFSETS, st.binary(min_size=1, max_size=64) | INTERESTING_BYTES),
    st.builds(Delete, OFFSETS, st.integers(1, 256)),
)

# Values for fixed-width fields: the edges of each width, and anything.
FIELD_VALUES = st.one_of(
    st.sampled_from([0, 1, 2, 7, 8, 0x7F, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 1 << 32]),
    st.sampled_from([(1 << 63) - 1, 1 << 63, (1 << 64) - 1]),
    st.integers(0, (1 << 64) - 1),
)


# --- JSON mutations (config.json, metadata.json, safetensors' header) -------------------------


def json_nodes(value: object, path: tuple = ()) -> list[tuple]:
    """Every node's path in `value`, in pre-order (the root is ())."""
    paths = [path]
    if isinstance(value, dict):
        for key in value:
            paths += json_nodes(value[key], (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            paths += json_nodes(item, (*path, i))
    return paths


def json_parent(root: object, path: tuple) -> object:
    for step in path[:-1]:
        root = root[step]
    return root


@dataclasses.dataclass(frozen=True)
class JsonSet:
    """Replace the `node`-th node (pre-order, modulo the count) with `value`."""

    node: int
    value: object

    def edit(self, root: object) -> object:
        paths = json_nodes(root)
        path = paths[self.node % len(paths)]
        value = copy.deepcopy(self.value)  # never the example's own object: edits follow
        if not path:
            return value
        json_parent(root, path)[path[-1]] = value
        return root


@dataclasses.dataclass(frozen=True)
class JsonDelete:
    node: int

    def edit(self, root: object) -> object:
        paths = json_nodes(root)[1:]
        if paths:
            path = paths[self.node % len(paths)]
            del json_parent(root, path)[path[-1]]
        return root


@dataclasses.dataclass(frozen=True)
class JsonRename:
    """Rename the key of the `node`-th node that sits in an object."""

    node: int
    key: str

    def edit(self, root: object) -> object:
        paths = [p for p in json_nodes(root)[1:] if isinstance(json_parent(root, p), dict)]
        if paths:
            path = paths[self.node % len(paths)]
            parent = json_parent(root, path)
            parent[self.key] = parent.pop(path[-1])
        return root


@dataclasses.dataclass(frozen=True)
class JsonEdits:
    """JSON edits applied to bytes holding a JSON document (a no-op if they no longer do)."""

    edits: tuple

    def __call__(self, data: bytes) -> bytes:
        try:
            root = json.loads(data)
        except (ValueError, RecursionError):
            return data
        for edit in self.edits:
            root = edit.edit(root)
        return json.dumps(root).encode()


INTERESTING_STRINGS = st.sampled_from(
    [
        "",
        "ConvNeXt",
        "ConvNeXtBackbone",
        "ConvNeXtIsotropic",
        "convnext_tf>ConvNeXt",
        "convnext_tf.model",
        "convnext_torch.model",
        "keras",
        "keras.layers",
        "Lambda",
        "Dense",
        "DTypePolicy",
        "float16",
        "float64",
        "bfloat16",
        "mixed_float16",
        "int8",
        "builtins",
        "os",
        "F32",
        "F16",
        "I64",
        "../model.weights.h5",
    ]
)
INTERESTING_NUMBERS = st.sampled_from(
    [0, 1, -1, 3, 8, 1000, 2**31, 2**32 + 8, 2**63, 2**64, 10**12, 1e-6, 1e308, float("nan")]
)
JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    INTERESTING_NUMBERS,
    st.integers(-(2**70), 2**70),
    st.floats(),
    INTERESTING_STRINGS,
    st.text(max_size=10),
)
# Objects a Keras config may name (safe_mode must refuse the dangerous kinds; nothing here would
# do harm if it ran: print, an empty lambda).
KERAS_OBJECTS = st.sampled_from(
    [
        {"module": "builtins", "class_name": "print", "config": {}, "registered_name": None},
        {"module": "keras.layers", "class_name": "Lambda", "config": {"function": "print"}},
        {
            "class_name": "__lambda__",
            "config": {
                "code": "",  # no bytecode: safe_mode must refuse the lambda before decoding
                "defaults": None,
                "closure": None,
            },
        },
        {"class_name": "__tuple__", "config": {"value": [1, 2]}},
        {"class_name": "__numpy__", "config": {"value": [1.0], "dtype": "float32"}},
        {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "mixed_float16"}},
        {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "int8"}},
        {"module": "convnext_tf.model", "class_name": "ConvNeXt", "config": {}},
        {"module": "convnext_torch.model", "class_name": "ConvNeXt", "config": {}},
    ]
)


def json_containers(inner: st.SearchStrategy) -> st.SearchStrategy:
    keys = INTERESTING_STRINGS | st.text(max_size=6)
    return st.lists(inner, max_size=5) | st.dictionaries(keys, inner, max_size=4)


JSON_VALUES = st.recursive(JSON_SCALARS | KERAS_OBJECTS, json_containers, max_leaves=10)
JSON_EDIT = st.one_of(
    st.builds(JsonSet, st.integers(0, 1000), JSON_VALUES),
    st.builds(JsonDelete, st.integers(0, 1000)),
    st.builds(JsonRename, st.integers(0, 1000), INTERESTING_STRINGS | st.text(max_size=6)),
)
JSON_EDITS = st.builds(JsonEdits, st.lists(JSON_EDIT, min_size=1, max_size=3).map(tuple))


# --- zip mutations (.pth, .keras) --------------------------------------------------------------

# signature -> field -> (offset, struct format), for the records of a zip file
ZIP_RECORDS = {
    "local": (
        b"PK\x03\x04",
        {
            "version": (4, "H"),
            "flags": (6, "H"),
            "method": (8, "H"),
            "crc": (14, "I"),
            "compressed_size": (18, "I"),
            "size": (22, "I"),
            "name_length": (26, "H"),
            "extra_length": (28, "H"),
        },
    ),
    "descriptor": (
        b"PK\x07\x08",
        {"crc": (4, "I"), "compressed_size": (8, "Q"), "size": (16, "Q")},
    ),
    "central": (
        b"PK\x01\x02",
        {
            "version_made": (4, "H"),
            "version_needed": (6, "H"),
            "flags": (8, "H"),
            "method": (10, "H"),
            "crc": (16, "I"),
            "compressed_size": (20, "I"),
            "size": (24, "I"),
            "name_length": (28, "H"),
            "extra_length": (30, "H"),
            "comment_length": (32, "H"),
            "disk": (34, "H"),
            "local_offset": (42, "I"),
        },
    ),
    "zip64_end": (
        b"PK\x06\x06",
        {
            "record_size": (4, "Q"),
            "disk": (16, "I"),
            "entries_here": (24, "Q"),
            "entries": (32, "Q"),
            "directory_size": (40, "Q"),
            "directory_offset": (48, "Q"),
        },
    ),
    "zip64_locator": (
        b"PK\x06\x07",
        {"disk": (4, "I"), "end_offset": (8, "Q"), "disks": (16, "I")},
    ),
    "end": (
        b"PK\x05\x06",
        {
            "disk": (4, "H"),
            "directory_disk": (6, "H"),
            "entries_here": (8, "H"),
            "entries": (10, "H"),
            "directory_size": (12, "I"),
            "directory_offset": (16, "I"),
            "comment_length": (20, "H"),
        },
    ),
}
ZIP_FIELDS = [(record, field) for record, (_, fields) in ZIP_RECORDS.items() for field in fields]


@dataclasses.dataclass(frozen=True)
class ZipField:
    """Set (or, with `add`, shift) one field of the `index`-th record of a kind, found by its
    signature."""

    record: str
    field: str
    index: int
    value: int
    add: bool = False

    def __call__(self, data: bytes) -> bytes:
        signature, fields = ZIP_RECORDS[self.record]
        found = [m.start() for m in re.finditer(re.escape(signature), data)]
        if not found:
            return data
        offset, code = fields[self.field]
        at = found[self.index % len(found)] + offset
        size = struct.calcsize("<" + code)
        if at + size > len(data):
            return data
        old = struct.unpack_from("<" + code, data, at)[0]
        value = (old + self.value if self.add else self.value) % (1 << (8 * size))
        return data[:at] + struct.pack("<" + code, value) + data[at + size :]


ZIP_FIELD_OPS = st.builds(
    lambda record_field, index, value, add: ZipField(*record_field, index, value, add),
    st.sampled_from(ZIP_FIELDS),
    st.integers(0, 100),
    FIELD_VALUES,
    st.just(False),
) | st.builds(
    lambda record_field, index, value, add: ZipField(*record_field, index, value, add),
    st.sampled_from(ZIP_FIELDS),
    st.integers(0, 100),
    st.integers(-70, 70),
    st.just(True),
)


def unzip(data: bytes) -> list[tuple[str, int, bytes]] | None:
    """The members of a zip archive as (name, compression, content), None if unreadable."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return [(i.filename, i.compress_type, archive.read(i)) for i in archive.infolist()]
    except Exception:  # zipfile raises many types for a damaged archive
        return None


def rezip(members: list[tuple[str, int, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Duplicate name"
        with zipfile.ZipFile(buffer, "w") as archive:
            for name, compression, content in members:
                info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = compression
                archive.writestr(info, content)
    return buffer.getvalue()


def member_index(members: list, name: str) -> int | None:
    """The member called `name`, or `name` inside the archive's folder (torch's `archive/`)."""
    return next(
        (i for i, m in enumerate(members) if m[0] == name or m[0].endswith("/" + name)), None
    )


@dataclasses.dataclass(frozen=True)
class Member:
    """Rewrite one member through `ops` and pack the archive again, CRCs right (so that the
    damage reaches the member's reader, not the zip's checks)."""

    name: str
    ops: tuple

    def __call__(self, data: bytes) -> bytes:
        members = unzip(data)
        i = None if members is None else member_index(members, self.name)
        if i is None:
            return data
        name, compression, content = members[i]
        for op in self.ops:
            content = op(content)
        members[i] = (name, compression, content)
        return rezip(members)


@dataclasses.dataclass(frozen=True)
class MemberChange:
    """Drop, duplicate, rename or compress one member, or add a new one."""

    name: str
    change: str  # "drop", "duplicate", "rename", "deflate", "add"
    new: str = ""
    content: bytes = b""

    def __call__(self, data: bytes) -> bytes:
        members = unzip(data)
        i = None if members is None else member_index(members, self.name)
        if i is None:
            return data
        name, compression, content = members[i]
        folder = name.rpartition("/")[0] + "/" if "/" in name else ""
        if self.change == "drop":
            del members[i]
        elif self.change == "duplicate":
            members.append((name, compression, self.content))
        elif self.change == "rename":
            members[i] = (folder + self.new, compression, content)
        elif self.change == "deflate":
            members[i] = (name, zipfile.ZIP_DEFLATED, content)
        else:
            members.insert(i, (folder + self.new, zipfile.ZIP_STORED, self.content))
        return rezip(members)


def member_changes(names: list[str]) -> st.SearchStrategy:
    return st.builds(
        MemberChange,
        st.sampled_from(names),
        st.sampled_from(["drop", "duplicate", "rename", "deflate", "add"]),
        st.sampled_from(names) | st.text("abcdefghij./_0123456789", max_size=12),
        st.binary(max_size=64),
    )
