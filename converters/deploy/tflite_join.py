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
    """The joined model (buffers without data) and, for each of its buffers, where its bytes
    are: (piece file, buffer index in it), or None for an empty buffer."""
    joined = schema.ModelT()
    joined.version = 3
    joined.description = b"convnext export: converted by LiteRT in pieces, joined"
    joined.operatorCodes, joined.buffers = [], [schema.BufferT()]  # buffer 0: the empty one
    sources: list[tuple[Path, int] | None] = [None]
    graph = schema.SubGraphT()
    graph.name, graph.tensors, graph.operators = b"main", [], []
    codes: dict[tuple, int] = {}
    named: dict[str, int] = {}  # every piece output so far, by name -> joined tensor index
    runtime, conversion = "0", None
    for number, piece in enumerate(pieces):
        model, filled = read_piece(piece.path)
        if len(model.subgraphs) != 1 or len(model.signatureDefs) != 1:
            raise ValueError(f"{piece.path.name}: not one subgraph with one signature")
        (subgraph,), (signature,) = model.subgraphs, model.signatureDefs
        (entry,) = signature.inputs
        metadata_buffers = set()
        for item in model.metadata or []:
            metadata_buffers.add(item.buffer)
            value = model.buffers[item.buffer].data.tobytes()
            if item.name == b"min_runtime_version":
                runtime = max(runtime, value.rstrip(b"\0").decode(), key=version_key)
            elif item.name == b"CONVERSION_METADATA" and conversion is None:
                conversion = model.buffers[item.buffer].data
        buffer_map = {0: 0}
        tensor_map: dict[int, int] = {}
        if piece.link is not None:
            tensor_map[entry.tensorIndex] = named[piece.link]
        for index, tensor in enumerate(subgraph.tensors):
            if index in tensor_map:
                continue
            if tensor.buffer not in buffer_map:
                buffer_map[tensor.buffer] = len(joined.buffers)
                joined.buffers.append(schema.BufferT())
                sources.append((piece.path, tensor.buffer) if tensor.buffer in filled else None)
            tensor.buffer = buffer_map[tensor.buffer]
            tensor.name = f"piece{number}/".encode() + (tensor.name or b"")
            tensor_map[index] = len(graph.tensors)
            graph.tensors.append(tensor)
        for operator in subgraph.operators:
            code = model.operatorCodes[operator.opcodeIndex]
            key = (code.builtinCode, code.deprecatedBuiltinCode, code.customCode, code.version)
            if key not in codes:
                codes[key] = len(joined.operatorCodes)
                joined.operatorCodes.append(code)
            operator.opcodeIndex = codes[key]
            for field in ("inputs", "outputs", "intermediates"):
                indices = getattr(operator, field)
                if indices is not None:
                    setattr(operator, field, [-1 if i < 0 else tensor_map[i] for i in indices])
            graph.operators.append(operator)
        for output in signature.outputs:
            name = output.name.decode()
            named[name] = tensor_map[output.tensorIndex]
            graph.tensors[named[name]].name = output.name
        if number == 0:
            named[entry.name.decode()] = tensor_map[entry.tensorIndex]
        if metadata_buffers & set(buffer_map):
            raise ValueError(f"{piece.path.name}: a metadata buffer is also a tensor's")
    outputs = [named[name] for _, points in signatures.values() for name in points.values()]
    graph.inputs = sorted({named[entry] for entry, _ in signatures.values()})
    graph.outputs = list(dict.fromkeys(outputs))
    joined.subgraphs = [graph]
    joined.signatureDefs = [
        signature_def(
            name, {entry: named[entry]}, {out: named[point] for out, point in points.items()}
        )
        for name, (entry, points) in signatures.items()
    ]
    joined.metadata = []
    for name, value in (
        ("min_runtime_version", runtime.encode()),
        ("CONVERSION_METADATA", conversion),
    ):
        if value is not None:
            item = schema.MetadataT()
            item.name, item.buffer = name.encode(), len(joined.buffers)
            buffer = schema.BufferT()
            buffer.data = np.frombuffer(bytes(value), np.uint8)
            joined.buffers.append(buffer)
            sources.append(None)
            joined.metadata.append(item)
    return joined, sources


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
        if total >= FLATBUFFER_LIMIT:
            raise ValueError("past 2 GiB: write it with offsets")
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
