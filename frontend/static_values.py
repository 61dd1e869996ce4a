"""Shape arithmetic folded to constants before import, once every input shape is static.

Exporters (and ONNX's own function bodies) compute reshape targets, pads and axes from `Shape`/`Size` with
integer ops. The Relax importer keeps those as symbolic shape values, which many of its converters cannot take
("cannot handle ShapeExpr inputs", "only constant axes"). With static input shapes the values are known: ONNX
shape inference gives every `Shape`, and integer nodes whose inputs are all known are evaluated by ONNX's
reference implementation (the operator definitions themselves). Only integer and boolean values (and Constant
nodes, already values) are folded: float arithmetic and graph outputs are left to the compiled code.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .signature import TensorSpec

# Nodes that must run at run time even when their inputs are known.
_NEVER_FOLD = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial",
               "Bernoulli"}
_MAX_FOLDED_ELEMENTS = 1 << 16
_MAX_ROUNDS = 8  # a folded value can make further shapes static (Pad with folded pads -> its Shape)


def fold_static_values(model: onnx.ModelProto, inputs: tuple[TensorSpec, ...]) -> onnx.ModelProto:
    """`model` with its input shapes made static and its shape arithmetic replaced by initializers."""
    model = _with_static_inputs(model, inputs)
    for _ in range(_MAX_ROUNDS):
        folded = _fold_once(model)
        if folded is None:
            break
        model = folded
    return model


def _fold_once(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """One round: shape inference, then every node it makes foldable; None when nothing folds."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except onnx.shape_inference.InferenceError:
        return None
    types = {vi.name: vi.type for vi in [*inferred.graph.value_info, *inferred.graph.output, *model.graph.input]}
    known = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    graph_outputs = {o.name for o in model.graph.output}
    opsets = list(model.opset_import)
    kept, folded = [], []
    for node in model.graph.node:
        values = _evaluate(node, known, types, opsets) if not set(node.output) & graph_outputs else None
        if values is None:
            kept.append(node)
            continue
        for name, value in zip(node.output, values):
            known[name] = value
            folded.append(numpy_helper.from_array(np.asarray(value), name))
    if not folded:
        return None
    del model.graph.node[:]
    model.graph.node.extend(kept)
    model.graph.initializer.extend(folded)
    return model


def _with_static_inputs(model: onnx.ModelProto, inputs: tuple[TensorSpec, ...]) -> onnx.ModelProto:
    model = onnx.ModelProto.FromString(model.SerializeToString())
    shapes = {spec.name: spec.shape for spec in inputs}
    for vi in model.graph.input:
        if vi.name in shapes:
            shape = vi.type.tensor_type.shape
            del shape.dim[:]
            for size in shapes[vi.name]:
                shape.dim.add().dim_value = size
    return model


def _static_shape(type_proto: onnx.TypeProto | None) -> tuple[int, ...] | None:
    if type_proto is None or not type_proto.HasField("tensor_type") or not type_proto.tensor_type.HasField("shape"):
        return None
    dims = type_proto.tensor_type.shape.dim
    return tuple(d.dim_value for d in dims) if all(d.HasField("dim_value") for d in dims) else None


def _is_integral(type_proto: onnx.TypeProto | None) -> bool:
    if type_proto is None or not type_proto.HasField("tensor_type") or not type_proto.tensor_type.elem_type:
        return False
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(type_proto.tensor_type.elem_type))
    return dtype.kind in "iub"


def _evaluate(node: onnx.NodeProto, known: dict, types: dict, opsets: list) -> list[np.ndarray] | None:
    """The node's output values when they are known now and worth folding, else None."""
    if node.domain not in ("", "ai.onnx") or node.op_type in _NEVER_FOLD:
        return None
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
        return None
    if node.op_type in ("Shape", "Size"):
        shape = _static_shape(types.get(node.input[0]))
        if shape is None:
            return None
        if node.op_type == "Size":
            return [np.array(int(np.prod(shape)), dtype=np.int64)]
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        start, end = attrs.get("start", 0), attrs.get("end", len(shape))
        return [np.array(shape[start:end], dtype=np.int64)]
    if not node.input and node.op_type != "Constant":
        return None
    if any(name and name not in known for name in node.input):
        return None
    if node.op_type != "Constant" and not all(_is_integral(types.get(name)) for name in node.output):
        return None
    from onnx.reference import ReferenceEvaluator

    graph = helper.make_graph(
        [node], "fold", [], [helper.ValueInfoProto(name=name) for name in node.output],
        initializer=[numpy_helper.from_array(np.asarray(known[name]), name) for name in node.input if name])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values = ReferenceEvaluator(helper.make_model(graph, opset_imports=opsets)).run(None, {})
    except Exception:  # noqa: BLE001 - a node the reference cannot evaluate is simply left in the graph
        return None
    if any(not isinstance(v, np.ndarray) or v.size > _MAX_FOLDED_ELEMENTS for v in values):
        return None
    return values
