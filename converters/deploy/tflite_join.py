"""Join .tflite files converted piece by piece into one model (convnext export).

LiteRT's converter holds about six copies of the weights it converts (docs/speed.md): a whole
convnext_xlarge would need 10 GB. Converted in pieces of a few blocks each, it never holds
more than a piece; the pieces are then joined here into one subgraph, the output of each piece
feeding the next, with the signatures the whole model carries.

Each piece is a .tflite file with one subgraph and one signature: one input, and outputs named
after the points they compute (`stages.2.5`, ...). Its weights are copied into the joined file
one buffer at a time, from the piece's file, so that joining holds at most the joined file
once (inline) or nothing but the graph (weights past 2 GiB, stored after the flatbuffer at
offsets, as LiteRT's converter stores them).

The flatbuffer is read and written through the schema's object API that TensorFlow ships
(`tensorflow.lite.python.schema_py_generated`, the module its own `flatbuffer_utils` uses).
"""

from __future__ import annotations

import copy
import mmap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import flatbuffers
import numpy as np
from tensorflow.lite.python import schema_py_generated as schema

ALIGNMENT = 64  # of every weight buffer: what LiteRT's converter and XNNPACK use
FLATBUFFER_LIMIT = 2**31  # a flatbuffer's offsets are signed 32-bit
IDENTIFIER = b"TFL3"


@dataclass(frozen=True)
class Piece:
    """A converted piece: its file and the output of the previous piece its input is (None
    for the first piece, whose input is the model's)."""

    path: Path
    link: str | None


def join(
    pieces: Sequence[Piece],
    signatures: dict[str, tuple[str, dict[str, str]]],
    destination: str | Path,
    offsets: bool = False,
) -> None:
    """Write the model that runs `pieces` in order to `destination`.

    signatures: name -> (input name, {output name: the piece output it is}); every signature
    runs the one joined subgraph, whose outputs are all the tensors some signature names.
    offsets: the weights stored after the flatbuffer (models past 2 GiB)."""
    model, sources = joined_model(pieces, signatures)
    if offsets:
        write_with_offsets(model, sources, destination)
    else:
        write_inline(model, sources, destination)


def read_piece(path: Path) -> tuple[schema.ModelT, set[int]]:
    """A piece's model without its weights' bytes (copied from the file when written), and
    which of its buffers hold data. The metadata's small buffers are kept."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        view = schema.ModelT.InitFromObj(schema.Model.GetRootAs(data, 0))
        metadata = {item.buffer for item in view.metadata or []}
        filled = {i for i, buffer in enumerate(view.buffers) if buffer.data is not None}
        for index, buffer in enumerate(view.buffers):
            buffer.data = np.array(buffer.data) if index in metadata else None
        model = copy.deepcopy(view)  # its arrays (shapes, indices) were views of the file
        del view, buffer
    return model, filled


def joined_model(
    pieces: Sequence[Piece], signatures: dict[str, tuple[str, dict[str, str]]]
) -> tuple[schema.ModelT, list[tuple[Path, int] | None]]:
    """The joined model (its buffers without data) and, for each of its buffers, where its
    bytes are: (piece file, buffer index in it), or None for a buffer without weights."""
    joining = Joining()
    for number, piece in enumerate(pieces):
        joining.add(number, piece)
    return joining.finish(signatures), joining.sources


class Joining:
    """The one subgraph the pieces are appended to, in order, and what it has so far."""

    def __init__(self) -> None:
        self.graph = schema.SubGraphT()
        self.graph.name, self.graph.tensors, self.graph.operators = b"main", [], []
        self.codes: list[schema.OperatorCodeT] = []
        self.code_index: dict[tuple, int] = {}
        self.buffers: list[schema.BufferT] = [schema.BufferT()]  # 0: the empty buffer
        self.sources: list[tuple[Path, int] | None] = [None]
        self.named: dict[str, int] = {}  # the pieces' outputs (and the input) -> tensor index
        self.runtime, self.conversion = "0", None  # the metadata the converter writes

    def add(self, number: int, piece: Piece) -> None:
        """Append `piece`: its tensors (its input is the previous piece's output named
        piece.link), its weights' buffers and its operators, renumbered."""
        model, filled = read_piece(piece.path)
        if len(model.subgraphs) != 1 or len(model.signatureDefs) != 1:
            raise ValueError(f"{piece.path.name}: not one subgraph with one signature")
        (subgraph,), (signature,) = model.subgraphs, model.signatureDefs
        (entry,) = signature.inputs
        metadata = self.read_metadata(model)
        tensors: dict[int, int] = {}  # the piece's tensor index -> the joined one's
        if piece.link is not None:
            tensors[entry.tensorIndex] = self.named[piece.link]
        buffers = {0: 0}
        for index, tensor in enumerate(subgraph.tensors):
            if index in tensors:
                continue
            if tensor.buffer in metadata:
                raise ValueError(f"{piece.path.name}: a metadata buffer is also a tensor's")
            if tensor.buffer not in buffers:
                buffers[tensor.buffer] = len(self.buffers)
                self.buffers.append(schema.BufferT())
                weights = tensor.buffer in filled
                self.sources.append((piece.path, tensor.buffer) if weights else None)
            tensor.buffer = buffers[tensor.buffer]
            tensor.name = f"piece{number}/".encode() + (tensor.name or b"")
            tensors[index] = len(self.graph.tensors)
            self.graph.tensors.append(tensor)
        for operator in subgraph.operators:
            operator.opcodeIndex = self.code(model.operatorCodes[operator.opcodeIndex])
            for field in ("inputs", "outputs", "intermediates"):
                indices = getattr(operator, field)
                if indices is not None:  # -1: an optional input left out
                    setattr(operator, field, [-1 if i < 0 else tensors[i] for i in indices])
            self.graph.operators.append(operator)
        for output in signature.outputs:
            self.named[output.name.decode()] = tensors[output.tensorIndex]
            self.graph.tensors[tensors[output.tensorIndex]].name = output.name
        if piece.link is None:
            self.named[entry.name.decode()] = tensors[entry.tensorIndex]

    def code(self, code: schema.OperatorCodeT) -> int:
        """The joined model's index of this operator code, added on first sight."""
        key = (code.builtinCode, code.deprecatedBuiltinCode, code.customCode, code.version)
        if key not in self.code_index:
            self.code_index[key] = len(self.codes)
            self.codes.append(code)
        return self.code_index[key]

    def read_metadata(self, model: schema.ModelT) -> set[int]:
        """Keep the highest min_runtime_version and the first CONVERSION_METADATA; the
        indices of the piece's metadata buffers."""
        for item in model.metadata or []:
            value = model.buffers[item.buffer].data.tobytes()
            if item.name == b"min_runtime_version":
                version = value.rstrip(b"\0").decode()
                self.runtime = max(self.runtime, version, key=version_key)
            elif item.name == b"CONVERSION_METADATA" and self.conversion is None:
                self.conversion = value
        return {item.buffer for item in model.metadata or []}

    def finish(self, signatures: dict[str, tuple[str, dict[str, str]]]) -> schema.ModelT:
        """The joined model: one subgraph, whose outputs are every tensor a signature names,
        and the signatures, all of that subgraph."""
        named = self.named
        self.graph.inputs = sorted({named[entry] for entry, _ in signatures.values()})
        outputs = [named[point] for _, points in signatures.values() for point in points.values()]
        self.graph.outputs = list(dict.fromkeys(outputs))
        model = schema.ModelT()
        model.version = 3
        model.description = b"convnext export: converted by LiteRT in pieces, joined"
        model.operatorCodes, model.subgraphs, model.buffers = self.codes, [self.graph], self.buffers
        model.signatureDefs = [
            signature_def(name, {entry: named[entry]}, {k: named[p] for k, p in points.items()})
            for name, (entry, points) in signatures.items()
        ]
        model.metadata = []
        runtime = self.runtime.encode().ljust(16, b"\0")  # as the converter pads it
        for name, value in (
            ("min_runtime_version", runtime),
            ("CONVERSION_METADATA", self.conversion),
        ):
            if value is not None:
                item = schema.MetadataT()
                item.name, item.buffer = name.encode(), len(model.buffers)
                buffer = schema.BufferT()
                buffer.data = np.frombuffer(value, np.uint8)
                model.buffers.append(buffer)
                self.sources.append(None)
                model.metadata.append(item)
        return model


def signature_def(
    name: str, inputs: dict[str, int], outputs: dict[str, int]
) -> schema.SignatureDefT:
    """A signature of the joined subgraph (0)."""

    def tensor_maps(names: dict[str, int]) -> list[schema.TensorMapT]:
        maps = []
        for key, index in names.items():
            item = schema.TensorMapT()
            item.name, item.tensorIndex = key.encode(), index
            maps.append(item)
        return maps

    signature = schema.SignatureDefT()
    signature.signatureKey, signature.subgraphIndex = name.encode(), 0
    signature.inputs, signature.outputs = tensor_maps(inputs), tensor_maps(outputs)
    return signature


def version_key(version: str) -> tuple[int, ...]:
    """'2.10.0' sorts after '2.9.0'."""
    return tuple(int(part) for part in version.split(".") if part.isdigit())


class PieceBuffers:
    """The weight bytes of the pieces' buffers, read from their files one at a time (memory
    mapped: nothing is held but the buffer being copied)."""

    def __init__(self, sources: list[tuple[Path, int] | None]):
        self.sources = sources
        self.open: dict[Path, tuple[object, mmap.mmap, schema.Model]] = {}

    def __getitem__(self, index: int) -> np.ndarray:
        """Buffer `index`'s bytes, a view of its piece's file: let go of it before the next
        file is opened."""
        path, number = self.sources[index]
        if path not in self.open:
            self.close()  # the pieces are read in order: one file open at a time
            f = open(path, "rb")  # noqa: SIM115 - closed in close()
            data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            self.open[path] = (f, data, schema.Model.GetRootAs(data, 0))
        _, data, root = self.open[path]
        return root.Buffers(number).DataAsNumpy()

    def close(self) -> None:
        for f, data, _ in self.open.values():
            data.close()
            f.close()
        self.open.clear()


class CopiedBuffer(schema.BufferT):
    """A buffer whose bytes are copied into the builder from a piece's file when packed,
    aligned for the kernels that read weights in place."""

    def __init__(self, pieces: PieceBuffers, index: int):
        super().__init__()
        self.pieces, self.index = pieces, index

    def Pack(self, builder: flatbuffers.Builder) -> int:  # noqa: N802 - the schema's name
        data = self.pieces[self.index]
        size = len(data)
        builder.StartVector(1, size, ALIGNMENT)
        builder.head -= size
        builder.Bytes[builder.head : builder.head + size] = memoryview(data)
        del data
        builder.vectorNumElems = size
        data = builder.EndVector()
        schema.BufferStart(builder)
        schema.BufferAddData(builder, data)
        return schema.BufferEnd(builder)


def packed_size(model: schema.ModelT) -> int:
    """The size of `model` as a flatbuffer, whatever its buffers' data."""
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=IDENTIFIER)
    return len(builder.Output())


def write_inline(model: schema.ModelT, sources: list, destination: str | Path) -> None:
    """The joined model with its weights inside the flatbuffer, as every LiteRT reads it.
    The builder is made as large as the file at once (it would otherwise double, and copy,
    as it grows) and written from where it starts, not copied out."""
    pieces = PieceBuffers(sources)
    try:
        sizes = [0 if s is None else len(pieces[i]) for i, s in enumerate(sources)]
        graph_size = packed_size(model)
        total = graph_size + sum(size + 2 * ALIGNMENT for size in sizes) + 4096
        if total >= FLATBUFFER_LIMIT:  # the graph and weights do not fit: the other layout
            pieces.close()
            return write_with_offsets(model, sources, destination)
        for index, source in enumerate(sources):
            if source is not None:
                model.buffers[index] = CopiedBuffer(pieces, index)
        builder = flatbuffers.Builder(total)
        builder.Finish(model.Pack(builder), file_identifier=IDENTIFIER)
        with open(destination, "wb") as f:
            f.write(memoryview(builder.Bytes)[builder.Head() :])
    finally:
        for index in range(len(model.buffers)):
            if isinstance(model.buffers[index], CopiedBuffer):
                model.buffers[index] = schema.BufferT()
        pieces.close()


def write_with_offsets(model: schema.ModelT, sources: list, destination: str | Path) -> None:
    """The joined model as a flatbuffer of the graph alone, followed by the weights, each
    buffer giving its offset and size in the file (LiteRT's layout for models past 2 GiB)."""
    pieces = PieceBuffers(sources)
    try:
        sizes = {i: len(pieces[i]) for i, s in enumerate(sources) if s is not None}
        for index, size in sizes.items():  # placeholders: the graph's size does not depend on them
            model.buffers[index].offset, model.buffers[index].size = 2**40, size
        start = aligned(packed_size(model))
        position = start
        for index, size in sizes.items():
            model.buffers[index].offset = position
            position = aligned(position + size)
        builder = flatbuffers.Builder(1024)
        builder.Finish(model.Pack(builder), file_identifier=IDENTIFIER)
        graph = builder.Output()
        with open(destination, "wb") as f:
            f.write(graph)
            for index in sizes:
                f.write(b"\0" * (model.buffers[index].offset - f.tell()))
                f.write(pieces[index])
    finally:
        pieces.close()


def aligned(position: int) -> int:
    return -(-position // ALIGNMENT) * ALIGNMENT
