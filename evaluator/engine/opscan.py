"""Op allowlist scan of an uploaded saved_model.pb, done before anything loads it.

Loading a SavedModel runs code (resource initialisers, restored functions), and calling it
runs whatever ops its graph holds, so the graph is checked first, straight from the
protobuf: every node of the graph_def and every function in its library (While/If/Case
branches and PartitionedCall bodies are library functions, so nothing nested escapes the
scan). Only ops on ALLOWED_OPS pass.

Nothing the uploader names is trusted (not the saver_def, not node names): what can run is
decided the way tf.saved_model.load decides it. Its entry points are the functions the
object graph names (restored tf.functions, bare concrete functions, signatures, resource
and saveable functions, captured tensors) and the gradient functions the library
registers (autodiff calls them); everything those call, by op name or function-valued
attr, runs too. A SavedModel that load() would open through the TF1 path (which runs the
saver's restore op and init ops while loading) is rejected outright.

TensorFlow is imported lazily inside `scan_saved_model`: the web process imports this
module (for ALLOWED_OPS and the types) and must never import TensorFlow.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from evaluator.engine.errors import OpScanError

MAX_SAVED_MODEL_BYTES = 256 * 1024 * 1024

# Checkpoint I/O: every TF2 export has saver functions (`__inference__traced_save_*`,
# `__inference__traced_restore_*`) called only from top-level graph_def nodes, which only
# the TF1/C++ loaders run, feeding the model's own variables path. tf.saved_model.load never
# runs the graph_def nodes nor those functions (it restores variables through its own Python
# saver from the model's own variables/ folder). These ops may therefore appear only in the
# graph_def and in functions no entry point of the TF2 loader reaches: anywhere reachable,
# the same op could write to or read from any path baked into the graph.
CHECKPOINT_IO_OPS: frozenset[str] = frozenset({"SaveV2", "RestoreV2", "MergeV2Checkpoints"})

# Built by exporting real models (Keras Sequential with Conv/Depthwise/Transpose conv,
# pooling, Dropout, BatchNormalization, LayerNormalization, Resizing of every
# interpolation, Rescaling, noise layers via keras.random; tf.Module with Variables,
# while_loop, cond, TensorArray, tf.random.*, PCA-style matmul) and listing their ops,
# then reviewed by hand and completed with the neighbouring pure-math ops.
# Deliberately absent (anything touching files, network, processes or the environment,
# or reading raw memory): ReadFile, WriteFile, MatchingFiles, DeleteFile, PyFunc,
# EagerPyFunc, PyFuncStateless, ImmutableConst (mmaps a file), DecodeProto/EncodeProto,
# every *Dataset*/Iterator/Reader op, Save/Restore/RestoreSlice (V1 checkpoint I/O),
# LoadAndRemapMatrix, TPU/collective/_Send/_Recv ops, summary writers, Empty
# (uninitialised memory), and Print/PrintV2: PrintV2's output_stream attr accepts
# "file://<path>" and appends to any file, and a scored model has nothing to print.
_GRAPH_AND_CALLS = {
    "Const", "Placeholder", "PlaceholderWithDefault", "Identity", "IdentityN", "NoOp",
    "StopGradient", "PreventGradient", "Snapshot", "CheckNumerics", "EnsureShape", "Assert",
    "PartitionedCall", "StatefulPartitionedCall",
    "While", "StatelessWhile", "If", "StatelessIf", "Case", "StatelessCase",
}
_VARIABLES_AND_SAVER = {
    "VarHandleOp", "ReadVariableOp", "AssignVariableOp", "AssignAddVariableOp",
    "AssignSubVariableOp", "VarIsInitializedOp", "DestroyResourceOp", "DisableCopyOnRead",
    "VariableShape", "ResourceGather",
    # Pure string formatting of checkpoint file names (no I/O of their own).
    "StringJoin", "ShardedFilename", "StaticRegexFullMatch",
    *CHECKPOINT_IO_OPS,
}
_ELEMENTWISE = {
    "Add", "AddV2", "AddN", "Sub", "Mul", "MulNoNan", "Div", "DivNoNan", "RealDiv",
    "FloorDiv", "FloorMod", "Mod", "TruncateDiv", "TruncateMod", "Neg", "Abs", "Sign",
    "Square", "Sqrt", "Rsqrt", "Exp", "Expm1", "Log", "Log1p", "Pow", "Reciprocal", "Inv",
    "Maximum", "Minimum", "SquaredDifference", "Floor", "Ceil", "Round", "Rint",
    "Sin", "Cos", "Tan", "Asin", "Acos", "Atan", "Atan2", "Sinh", "Cosh", "Erf", "Erfc",
    "Lgamma", "Digamma", "Xlogy", "Xdivy", "ClipByValue", "IsNan", "IsInf", "IsFinite",
    "Equal", "NotEqual", "Less", "LessEqual", "Greater", "GreaterEqual",
    "LogicalAnd", "LogicalOr", "LogicalNot", "Select", "SelectV2", "Cast",
}
_REDUCTIONS_AND_LINALG = {
    "Sum", "Mean", "Max", "Min", "Prod", "All", "Any", "ArgMax", "ArgMin", "EuclideanNorm",
    "Cumsum", "Cumprod", "MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3",
    "Einsum", "MatrixBandPart", "MatrixDiag", "MatrixDiagV3", "MatrixDiagPartV3", "Diag",
}
_NN_AND_IMAGE = {
    "BiasAdd", "BiasAddV1", "Relu", "Relu6", "Elu", "Selu", "LeakyRelu", "Sigmoid", "Tanh",
    "Softplus", "Softsign", "Softmax", "LogSoftmax", "Conv2D", "Conv3D",
    "DepthwiseConv2dNative", "Conv2DBackpropInput", "MaxPool", "MaxPoolV2", "MaxPool3D",
    "AvgPool", "AvgPool3D", "FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3", "LRN",
    "L2Loss", "TopKV2", "InTopKV2", "ResizeBilinear", "ResizeNearestNeighbor",
    "ResizeBicubic", "ResizeArea", "ScaleAndTranslate", "CropAndResize",
    "RGBToHSV", "HSVToRGB", "AdjustContrastv2",
}
_ARRAYS = {
    "Reshape", "Transpose", "ConjugateTranspose", "Pad", "PadV2", "MirrorPad", "ConcatV2",
    "Concat", "Pack", "Unpack", "Split", "SplitV", "Slice", "StridedSlice", "Squeeze",
    "ExpandDims", "Tile", "Shape", "ShapeN", "Size", "Rank", "Fill", "ZerosLike",
    "OnesLike", "Range", "LinSpace", "Gather", "GatherV2", "GatherNd", "ScatterNd",
    "TensorScatterUpdate", "TensorScatterAdd", "Where", "OneHot", "BroadcastTo",
    "BroadcastArgs", "BroadcastGradientArgs", "ReverseV2", "Roll", "SpaceToBatchND",
    "BatchToSpaceND", "SpaceToDepth", "DepthToSpace", "DynamicStitch", "Unique",
    # TensorArray in TF2 while loops.
    "TensorListReserve", "TensorListSetItem", "TensorListGetItem", "TensorListStack",
    "TensorListFromTensor", "TensorListLength", "TensorListElementShape",
    "TensorListPushBack", "TensorListPopBack",
}
_RANDOM = {
    "RandomStandardNormal", "RandomUniform", "RandomUniformInt", "TruncatedNormal",
    "RandomShuffle", "Multinomial", "StatelessRandomNormal", "StatelessRandomUniform",
    "StatelessRandomUniformInt", "StatelessTruncatedNormal", "StatelessRandomNormalV2",
    "StatelessRandomUniformV2", "StatelessRandomUniformIntV2",
    "StatelessRandomUniformFullIntV2", "StatelessTruncatedNormalV2",
    "StatelessRandomGetKeyCounter", "StatelessRandomGetKeyCounterAlg",
    "StatelessRandomGetAlg", "RngReadAndSkip", "RngSkip", "StatefulStandardNormalV2",
    "StatefulUniform", "StatefulUniformInt", "StatefulTruncatedNormal",
}
ALLOWED_OPS: frozenset[str] = frozenset().union(
    _GRAPH_AND_CALLS, _VARIABLES_AND_SAVER, _ELEMENTWISE, _REDUCTIONS_AND_LINALG,
    _NN_AND_IMAGE, _ARRAYS, _RANDOM,
)  # fmt: skip
_REACHABLE_OPS = ALLOWED_OPS - CHECKPOINT_IO_OPS  # in functions the TF2 loader can reach

_GRAPH = "graph"  # location label of the top-level graph_def
_MAX_PLACES_SHOWN = 3


@dataclass(frozen=True)
class ScanReport:
    """What the scan saw: every op used, and how many functions and nodes it read."""

    ops: frozenset[str]
    functions: int
    nodes: int


def scan_saved_model(model_dir: Path) -> ScanReport:
    """Check every op in `model_dir/saved_model.pb` against the allowlist, without loading it.

    Functions an entry point of the TF2 loader reaches may use ALLOWED_OPS but not
    CHECKPOINT_IO_OPS; the graph_def's nodes and unreachable functions (the exporter's saver
    functions) may use all of ALLOWED_OPS.
    """
    saved_model = _parse(Path(model_dir) / "saved_model.pb")
    if not saved_model.meta_graphs:
        raise OpScanError("saved_model.pb holds no MetaGraph (not a TF2 SavedModel)")
    meta_graph = _tf2_meta_graph(saved_model)
    from tensorflow.python.framework import op_def_registry

    graph = meta_graph.graph_def
    every = {f.signature.name: f for f in graph.library.function}
    if len(every) < len(graph.library.function):  # reachability would see only one body
        raise OpScanError("saved_model.pb defines a library function twice")
    # A library function named like a registered op would shadow (or be shadowed by) that
    # op at run time: calls to it count as the op, and its body may run wherever the op
    # does, so it is scanned as reachable.
    library = {name: f for name, f in every.items() if op_def_registry.get(name) is None}
    reachable = _closure(_entry_points(meta_graph) | (every.keys() - library.keys()), every)

    used: dict[str, set[str]] = defaultdict(set)  # op -> places it is used
    bad: dict[str, set[str]] = defaultdict(set)
    places: list[tuple[str, Iterable[Any], frozenset[str]]] = [(_GRAPH, graph.node, ALLOWED_OPS)]
    for f in graph.library.function:
        allowed = _REACHABLE_OPS if f.signature.name in reachable else ALLOWED_OPS
        places.append((f"function {f.signature.name}", f.node_def, allowed))
    for place, node_defs, allowed in places:
        for node in node_defs:
            for op in _ops_of(node, library):
                used[op].add(place)
                if op not in allowed:
                    bad[op].add(place)
    if bad:
        raise OpScanError(_describe(bad), ops=frozenset(bad))
    nodes = len(graph.node) + sum(len(f.node_def) for f in graph.library.function)
    return ScanReport(ops=frozenset(used), functions=len(graph.library.function), nodes=nodes)


def _tf2_meta_graph(saved_model: Any) -> Any:
    """The one meta graph tf.saved_model.load opens with its TF2 loader.

    Mirrors load_partial() in tensorflow/python/saved_model/load.py: anything other than
    exactly one meta graph holding an object_graph_def goes through load_v1_in_v2, which
    runs the graph's own saver restore op and init ops while loading.
    """
    metas = saved_model.meta_graphs
    if len(metas) == 1 and metas[0].HasField("object_graph_def"):
        return metas[0]
    why = "no object graph" if len(metas) == 1 else f"{len(metas)} meta graphs"
    raise OpScanError(
        f"saved_model.pb is a TF1-format SavedModel ({why}); loading it would run its own "
        "saver and init ops, so it is not accepted. Re-export it with TensorFlow 2: "
        "tf.saved_model.save(model, path), or model.export(path) for a Keras model."
    )


def _entry_points(meta_graph: Any) -> set[str]:
    """Names of every function the TF2 loader, or autodiff on what it returns, may call.

    Every string anywhere in the object graph counts (a node's function.concrete_functions,
    bare_concrete_function.concrete_function_name, the concrete_functions keys, signature
    map children, resource and saveable functions, captured_tensor.concrete_function): the
    proto is walked generically, so no field can hide a function. Plus function aliases and
    the library's gradient functions. Names that are no library function are harmless.
    """
    library = meta_graph.graph_def.library
    roots = set(_strings(meta_graph.object_graph_def))
    roots.update(meta_graph.meta_info_def.function_aliases)
    roots.update(g.gradient_func for g in library.gradient)
    roots.update(g.gradient_func for g in library.registered_gradients)
    return roots


def _strings(message: Any) -> Iterable[str]:
    for field, value in message.ListFields():
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            values = [item for pair in value.items() for item in pair]
        elif isinstance(value, (str, bytes, int, float)) or hasattr(value, "ListFields"):
            values = [value]
        else:  # a repeated field (protobuf's descriptor API for that varies by version)
            values = list(value)
        for item in values:
            if isinstance(item, str):
                yield item
            elif hasattr(item, "ListFields"):
                yield from _strings(item)


def _parse(path: Path) -> Any:
    try:
        info = path.lstat()
    except FileNotFoundError as exc:
        raise OpScanError("no saved_model.pb in the model folder") from exc
    if not path.is_file() or path.is_symlink():
        raise OpScanError("saved_model.pb is not a regular file")
    if info.st_size > MAX_SAVED_MODEL_BYTES:
        raise OpScanError(
            f"saved_model.pb is {info.st_size / 2**20:.0f} MiB, over the "
            f"{MAX_SAVED_MODEL_BYTES // 2**20} MiB limit (keep weights in variables/)"
        )
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    try:
        saved_model.ParseFromString(path.read_bytes())
    except (DecodeError, RecursionError, ValueError) as exc:
        raise OpScanError(f"saved_model.pb is not a valid SavedModel protobuf ({exc})") from exc
    return saved_model


def _ops_of(node: Any, library: dict[str, Any]) -> Iterable[str]:
    """The ops a node runs: its own op unless it calls a library function, plus any
    function-valued attr that names no library function (TF instantiates such a name as
    the primitive op, so PartitionedCall(f=ReadFile) would otherwise slip through)."""
    if node.op not in library:
        yield node.op
    for name in _func_refs(node.attr.values()):
        if name not in library:
            yield name


def _func_refs(attr_values: Iterable[Any]) -> Iterable[str]:
    """Every function name referenced by attrs (func, list(func), nested in their attrs)."""
    for value in attr_values:
        funcs = [value.func] if value.HasField("func") else list(value.list.func)
        for func in funcs:
            yield func.name
            yield from _func_refs(func.attr.values())


def _calls(node_defs: Iterable[Any], library: dict[str, Any]) -> set[str]:
    called: set[str] = set()
    for node in node_defs:
        if node.op in library:
            called.add(node.op)
        called.update(n for n in _func_refs(node.attr.values()) if n in library)
    return called


def _closure(roots: set[str], library: dict[str, Any]) -> set[str]:
    """`roots` and all they call, directly or not (a function's own attrs count too)."""
    seen: set[str] = set()
    todo = [r for r in roots if r in library]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            fdef = library[name]
            named = set(_func_refs(fdef.attr.values()))
            named.update(v.s.decode(errors="replace") for v in fdef.attr.values() if v.s)
            called = _calls(fdef.node_def, library) | (named & library.keys())
            todo.extend(called - seen)
    return seen


def _describe(bad: dict[str, set[str]]) -> str:
    parts = []
    for op in sorted(bad):
        where = sorted(bad[op])
        shown = ", ".join(where[:_MAX_PLACES_SHOWN])
        if len(where) > _MAX_PLACES_SHOWN:
            shown += f" and {len(where) - _MAX_PLACES_SHOWN} more"
        parts.append(f"{op} (in {shown})")
    message = "disallowed TensorFlow op(s): " + "; ".join(parts)
    if CHECKPOINT_IO_OPS & bad.keys():
        message += " (checkpoint ops may appear only in the exporter's own saver functions)"
    return message
