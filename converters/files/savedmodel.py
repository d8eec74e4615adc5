"""Which TensorFlow operations a SavedModel may run before `convnext verify` loads it.

A SavedModel is a program: tf.saved_model.load runs some of its functions (resource
creators and initializers, the restore functions of its saveable objects) and verify then
calls its signatures. A list of forbidden operations always misses one (there are over a
thousand, and new ones in every release), so the check is an allow-list: the arithmetic and
array operations a ConvNeXt-like inference graph needs, as this project's export, Keras'
model.export, keras.applications, onnx2tf and nobuco write them, and nothing that touches a
file, the network, Python, a queue, a summary or random state.

What is checked is every function that loading or calling can reach: every concrete function
the object graph names (that is what TF2 loads, whatever the meta graph's signature_def
says), and every function they call, to any depth (function-call ops, control flow
branches, functions named as ops). All of it is read from saved_model.pb, parsed here,
before TensorFlow runs anything. A TF1 SavedModel (no object graph) runs its own restore and
init ops when loaded: refused. The saver functions TF2 writes beside the object graph
(`__inference__traced_save_*`, `..._restore_*`, which use SaveV2 and RestoreV2) are never
run by TF2's loader and are not checked, unless something that runs calls them.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path

from converters.errors import ConversionError, first_sentence

# The operations an inference graph of a convolutional network is made of. Grouped by what
# they do; each is pure: its outputs depend on its inputs and on variables read, nothing else.
# No loops (While): a convolutional network has none, and one that never ends would hang
# verify inside TensorFlow, where no signal reaches it; recursive calls are refused for the
# same reason (check_function).
ALLOWED_OPS = frozenset(
    # graph plumbing and function calls (the called functions are checked in turn)
    """Const Identity IdentityN NoOp Placeholder PlaceholderWithDefault StopGradient
    PreventGradient Snapshot EnsureShape ReadVariableOp PartitionedCall StatefulPartitionedCall
    If StatelessIf Case StatelessCase"""
    # elementwise arithmetic, comparisons and activations
    """ Add AddV2 AddN Sub Mul MulNoNan Div DivNoNan RealDiv FloorDiv FloorMod TruncateDiv
    TruncateMod Mod Maximum Minimum Neg Abs Sign Square Sqrt Rsqrt Reciprocal Inv Exp Expm1 Log
    Log1p Pow Erf Erfc Tanh Sigmoid Softplus Softsign Relu Relu6 Elu Selu LeakyRelu Softmax
    LogSoftmax SquaredDifference Sin Cos Floor Ceil Round Rint ClipByValue IsNan IsFinite IsInf
    Equal NotEqual Less LessEqual Greater GreaterEqual LogicalAnd LogicalOr LogicalNot Select
    SelectV2 Cast CheckNumerics CheckNumericsV2"""
    # reductions and matrix products
    """ Sum Mean Max Min Prod All Any ArgMax ArgMin MatMul BatchMatMul BatchMatMulV2
    BatchMatMulV3 Einsum Cumsum TopKV2"""
    # convolutions, normalisation, pooling, resizing
    """ Conv2D Conv3D DepthwiseConv2dNative Conv2DBackpropInput BiasAdd FusedBatchNorm
    FusedBatchNormV2 FusedBatchNormV3 AvgPool MaxPool MaxPoolV2 AvgPool3D MaxPool3D LRN
    ResizeBilinear ResizeNearestNeighbor ResizeBicubic ResizeArea _FusedConv2D _FusedMatMul
    _FusedDepthwiseConv2dNative FakeQuantWithMinMaxVars FakeQuantWithMinMaxArgs"""
    # shapes and layout
    """ Reshape Transpose ConjugateTranspose ExpandDims Squeeze Shape ShapeN Size Rank Pack
    Unpack Concat ConcatV2 Split SplitV Slice StridedSlice Gather GatherV2 GatherNd Pad PadV2
    MirrorPad Tile Fill ZerosLike OnesLike Range BroadcastTo BroadcastArgs ReverseV2
    SpaceToDepth DepthToSpace SpaceToBatchND BatchToSpaceND OneHot ScatterNd
    TensorScatterUpdate Where""".split()
)


@dataclass
class GraphFacts:
    """What the check found out on the way: whether the graph holds keras.applications' input
    normalisation (a `..._prestem_normalization` node: such a model takes pixels 0-255)."""

    keras_applications: bool


def check_savedmodel(path: Path) -> GraphFacts:
    """Refuse a SavedModel that would run anything but ALLOWED_OPS when loaded or called,
    naming the operation and where it sits; read from saved_model.pb alone."""
    from tensorflow.core.protobuf import saved_model_pb2

    check_files(path)
    saved = saved_model_pb2.SavedModel()
    try:
        saved.ParseFromString((path / "saved_model.pb").read_bytes())
    except Exception as e:  # noqa: BLE001 - a DecodeError, or an OSError
        raise ConversionError(
            f"{path}: saved_model.pb is unreadable ({first_sentence(e)})"
        ) from None
    if len(saved.meta_graphs) != 1:
        raise ConversionError(
            f"{path}: holds {len(saved.meta_graphs)} meta graphs; verify reads SavedModels "
            "with one, as tf.saved_model.save writes them"
        )
    graph = saved.meta_graphs[0]
    objects = graph.object_graph_def
    if not objects.nodes:
        raise ConversionError(
            f"{path}: refused: a TF1 SavedModel (no object graph), whose loading runs its own "
            "restore and init ops; save it again with TensorFlow 2 (tf.saved_model.save)"
        )
    functions = {f.signature.name: f for f in graph.graph_def.library.function}
    for index, asset in enumerate(graph.asset_file_def):
        name = asset.filename
        if not name or name.startswith("/") or "/" in name or "\\" in name or name in ("..", "."):
            raise ConversionError(
                f"{path}: refused: asset {index} names {name!r}, outside its assets folder"
            )
    checked: set[str] = set()
    for root, where in roots(objects).items():
        check_function(path, root, where, functions, checked)
    check_no_recursion(path, checked, functions)
    return GraphFacts(
        keras_applications=any(
            "_prestem_normalization" in node.name
            for function in functions.values()
            for node in function.node_def
        )
    )


def roots(objects) -> dict[str, str]:
    """Every concrete function the object graph names -> where it sits, as a path of child
    names from the root object (`signatures/serving_default`, `model/_initialize`), or the
    object's number where no path leads to it."""
    paths = {0: ""}
    stack = [0]
    while stack:
        node = stack.pop()
        for child in objects.nodes[node].children:
            if child.node_id not in paths and child.node_id < len(objects.nodes):
                paths[child.node_id] = f"{paths[node]}/{child.local_name}".lstrip("/")
                stack.append(child.node_id)
    found: dict[str, str] = {}
    for number, node in enumerate(objects.nodes):
        where = paths.get(number) or f"object {number}"
        kind = node.WhichOneof("kind")
        if kind == "function":
            for name in node.function.concrete_functions:
                found.setdefault(name, where)
        elif kind == "bare_concrete_function":
            found.setdefault(node.bare_concrete_function.concrete_function_name, where)
    for name in objects.concrete_functions:
        found.setdefault(name, "the object graph")
    return found


def check_function(path: Path, root: str, where: str, functions: dict, checked: set) -> None:
    """`root` and every function it calls, to any depth, hold ALLOWED_OPS only; `checked`
    holds the functions already found clean (from other roots), which are not read again."""
    if root not in functions:
        raise ConversionError(f"{path}: refused: {where} names a function it does not hold")
    stack = [root] if root not in checked else []
    checked.add(root)
    while stack:
        name = stack.pop()
        for node in functions[name].node_def:
            if node.op not in ALLOWED_OPS and node.op not in functions:
                inside = "" if name == root else f" (in {name}, which it calls)"
                raise ConversionError(
                    f"{path}: refused: {where} runs {node.op}{inside}, not an operation of an "
                    "inference graph; verify runs only arithmetic, array and convolution ops"
                )
            for callee in calls_of(node, functions):
                if callee not in functions:
                    raise ConversionError(
                        f"{path}: refused: {where} calls {callee}, a function it does not hold"
                    )
                if callee not in checked:
                    checked.add(callee)
                    stack.append(callee)


def calls_of(node, functions: dict) -> list[str]:
    """The functions a node calls: its op, when that names a function, and every function its
    attributes name (PartitionedCall's `f`, If's branches)."""
    called = [node.op] if node.op in functions else []
    for value in node.attr.values():
        called += [value.func.name] if value.HasField("func") else []
        called += [f.name for f in value.list.func]
    return called


def check_no_recursion(path: Path, names: set[str], functions: dict) -> None:
    """No function among `names` calls itself, directly or through others: with no loop op
    allowed, recursion is the one way left for a graph to run for ever. A depth-first walk
    of the call graph, each function once."""
    calls = {
        name: {c for node in functions[name].node_def for c in calls_of(node, functions)}
        for name in names
    }
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(names):
        if start in state:
            continue
        state[start] = 1
        path_stack = [(start, iter(sorted(calls[start])))]
        while path_stack:
            name, pending = path_stack[-1]
            callee = next(pending, None)
            if callee is None:
                state[name] = 2
                path_stack.pop()
            elif state.get(callee) == 1:
                raise ConversionError(f"{path}: refused: {callee} calls itself (through {name})")
            elif callee not in state and callee in calls:
                state[callee] = 1
                path_stack.append((callee, iter(sorted(calls[callee]))))


def check_files(path: Path) -> None:
    """A SavedModel directory holds directories and regular files only: a FIFO would block
    the loader for ever, a device never end, and a symlink lead anywhere."""
    import os

    count = 0
    for root, directories, files in os.walk(path):
        for name in directories + files:
            count += 1
            entry = Path(root) / name
            mode = entry.lstat().st_mode
            if count > 100_000:
                raise ConversionError(f"{path}: refused: more than 100,000 entries")
            if stat.S_ISLNK(mode) or not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                kind = "a symlink" if stat.S_ISLNK(mode) else "not a regular file"
                raise ConversionError(
                    f"{path}: refused: {entry.relative_to(path)} is {kind} (a SavedModel holds "
                    "directories and regular files)"
                )
