"""Rewrite a model's narrow-typed tensors (float8, float4, int4, int2; see `narrow_formats`) onto byte carriers.

Runs on the ONNX graph before import. Declarations (inputs, outputs, value infos, initializers, Constant
values) change to the carrier type; the operators that give narrow types meaning are rewritten:

- Cast/CastLike to or from a narrow type: `NarrowDecode` (narrow float -> float32), then `NarrowEncode` (to a
  narrow type) or a stock Cast (to a wide one). A narrow integer's carrier already holds its value.
- QuantizeLinear to a narrow integer: the stock operator into the carrier, clipped to the narrow range (clipping
  int8's range first does not change the result); to a narrow float: `x / scale` encoded (ONNX adds no zero
  point for float8, and adds float4's).
- DequantizeLinear of a narrow integer needs nothing; of a narrow float: the decoded value times the scale.

Operators that only move data (Reshape, Transpose, Gather, ...) pass carriers through unchanged; any other
operator on a narrow tensor is refused, since its arithmetic would run on the carrier.
"""

from __future__ import annotations

import itertools

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import UserError
from .narrow_casts import DOMAIN
from .narrow_formats import NARROW_TYPES, NarrowFloat, NarrowInt, carrier_elem_type, to_carrier

_DATA_MOVEMENT = {"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Concat", "Slice",
                  "Split", "Gather", "GatherElements", "GatherND", "Expand", "Tile", "Shape", "Size",
                  "DepthToSpace", "SpaceToDepth", "Pad", "Where"}
_FLOAT8 = {TensorProto.FLOAT8E4M3FN, TensorProto.FLOAT8E4M3FNUZ, TensorProto.FLOAT8E5M2, TensorProto.FLOAT8E5M2FNUZ}


def _type_name(elem_type: int) -> str:
    return TensorProto.DataType.Name(elem_type)


class _Rewriter:
    """Builds the new node list; knows every value's element type and rank from shape inference."""

    def __init__(self, model: onnx.ModelProto):
        try:
            graph = onnx.shape_inference.infer_shapes(model).graph
        except onnx.shape_inference.InferenceError:
            graph = model.graph
        self.types: dict[str, int] = {}
        self.ranks: dict[str, int] = {}
        for vi in (*graph.input, *graph.output, *graph.value_info):
            tensor = vi.type.tensor_type
            self.types[vi.name] = tensor.elem_type
            if tensor.HasField("shape"):
                self.ranks[vi.name] = len(tensor.shape.dim)
        for init in graph.initializer:
            self.types[init.name], self.ranks[init.name] = init.data_type, len(init.dims)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        taken = {n for node in model.graph.node for n in (*node.input, *node.output)} | set(self.types)
        self._names = (name for name in (f"narrow_{i}" for i in itertools.count()) if name not in taken)

    def fresh(self) -> str:
        """A value name the model does not use."""
        return next(self._names)

    def node(self, op: str, inputs: list[str], output: str | None = None, domain: str = "", **attrs) -> str:
        output = output or self.fresh()
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, domain=domain, **attrs))
        return output

    def constant(self, array: np.ndarray) -> str:
        name = self.fresh()
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def narrow(self, name: str) -> int | None:
        elem_type = self.types.get(name)
        return elem_type if elem_type in NARROW_TYPES else None

    def narrow_float(self, name: str) -> bool:
        return isinstance(NARROW_TYPES.get(self.types.get(name)), NarrowFloat)

    # --- the rewrites ------------------------------------------------------------------------------------------

    def cast(self, node: onnx.NodeProto, attrs: dict, source: str, to: int) -> None:
        value = self.decode(source) if self.narrow_float(source) else source
        if to in NARROW_TYPES:
            extra = {"round_mode": attrs["round_mode"]} if "round_mode" in attrs else {}
            self.node("NarrowEncode", [value], node.output[0], DOMAIN, to=to, saturate=attrs.get("saturate", 1),
                      **extra)
        else:
            self.node("Cast", [value], node.output[0], to=to)

    def decode(self, source: str, elem_type: int | None = None) -> str:
        return self.node("NarrowDecode", [source], domain=DOMAIN, **{"from": elem_type or self.types[source]})

    def per_axis(self, param: str, data: str, axis: int) -> str:
        """A 1-D per-axis parameter reshaped to broadcast along `axis` of `data`."""
        rank = self.ranks.get(data)
        if self.ranks.get(param, 0) == 0 or not rank:
            return param
        axis = axis % rank
        return self.node("Reshape", [param, self.constant(np.array([-1] + [1] * (rank - 1 - axis), np.int64))])

    def quantize(self, node: onnx.NodeProto, attrs: dict, to: int) -> None:
        _refuse_unsupported(node, attrs)
        fmt = NARROW_TYPES[to]
        if isinstance(fmt, NarrowInt):
            quantized = self.fresh()
            if "output_dtype" in attrs:
                attrs["output_dtype"] = carrier_elem_type(to)
            self.node("QuantizeLinear", list(node.input), quantized, **attrs)
            low, high = (self.constant(np.array(bound, fmt.carrier)) for bound in fmt.bounds)
            self.node("Clip", [quantized, low, high], node.output[0])
            return
        x, scale = node.input[0], node.input[1]
        value = self.node("Div", [x, self.per_axis(scale, x, attrs.get("axis", 1))])
        zero_point = node.input[2] if len(node.input) > 2 and node.input[2] else None
        if zero_point and to not in _FLOAT8:  # ONNX's reference adds float4's zero point, not float8's
            shaped = self.per_axis(zero_point, x, attrs.get("axis", 1))
            decoded = self.decode(shaped, self.types[zero_point])
            value = self.node("Add", [value, self.node("Cast", [decoded], to=self.types.get(x, TensorProto.FLOAT))])
        self.node("NarrowEncode", [value], node.output[0], DOMAIN, to=to, saturate=attrs.get("saturate", 1))

    def dequantize(self, node: onnx.NodeProto, attrs: dict) -> None:
        _refuse_unsupported(node, attrs)
        x, scale = node.input[0], node.input[1]
        scale32 = self.node("Cast", [self.per_axis(scale, x, attrs.get("axis", 1))], to=TensorProto.FLOAT)
        product = self.node("Mul", [self.decode(x), scale32])  # a float zero point must be zero: ignored
        self.node("Cast", [product], node.output[0], to=attrs.get("output_dtype") or self.types[scale])


def _refuse_unsupported(node: onnx.NodeProto, attrs: dict) -> None:
    if attrs.get("block_size", 0):
        raise UserError(f"{node.op_type} {node.name!r}: blocked quantization of narrow types is not supported; "
                        "export per-tensor or per-axis scales")
    if attrs.get("precision", 0):
        raise UserError(f"{node.op_type} {node.name!r}: the precision attribute is not supported for narrow "
                        "types; export without it")


def _bodies(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """The subgraphs of an If, Loop or Scan."""
    return [a.g for a in node.attribute if a.HasField("g")] + [g for a in node.attribute for g in a.graphs]


def _declares_narrow(graph: onnx.GraphProto) -> bool:
    """Whether `graph` (or a body nested in it) declares or casts to a narrow type."""
    declared = [vi.type.tensor_type.elem_type for vi in (*graph.input, *graph.output, *graph.value_info)]
    declared += [init.data_type for init in graph.initializer]
    for node in graph.node:
        declared += [a.i for a in node.attribute if a.name in ("to", "output_dtype")]
        declared += [a.t.data_type for a in node.attribute if a.name == "value"]
        if any(_declares_narrow(body) for body in _bodies(node)):
            return True
    return any(t in NARROW_TYPES for t in declared)


def lower_narrow_types(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with every narrow-typed tensor on its byte carrier (`model` itself when it has none)."""
    if not _declares_narrow(model.graph):
        return model
    rewriter = _Rewriter(model)
    for node in model.graph.node:
        _lower_node(rewriter, node)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    out.graph.node.extend(rewriter.nodes)
    for vi in (*out.graph.input, *out.graph.output, *out.graph.value_info):
        vi.type.tensor_type.elem_type = carrier_elem_type(vi.type.tensor_type.elem_type)
    initializers = [_carrier_tensor(init) for init in out.graph.initializer] + rewriter.initializers
    del out.graph.initializer[:]
    out.graph.initializer.extend(initializers)
    out.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    return out


def _lower_node(rewriter: _Rewriter, node: onnx.NodeProto) -> None:
    op = node.op_type if node.domain in ("", "ai.onnx") else None
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if op == "Cast" and (rewriter.narrow(node.input[0]) or attrs["to"] in NARROW_TYPES):
        return rewriter.cast(node, attrs, node.input[0], attrs["to"])
    if op == "CastLike" and (rewriter.narrow(node.input[0]) or rewriter.narrow(node.input[1])):
        return rewriter.cast(node, attrs, node.input[0], rewriter.types[node.input[1]])
    if op == "QuantizeLinear" and rewriter.narrow(node.output[0]):
        return rewriter.quantize(node, attrs, rewriter.types[node.output[0]])
    if op == "DequantizeLinear" and rewriter.narrow_float(node.input[0]):
        return rewriter.dequantize(node, attrs)
    if op == "Constant" and "value" in attrs and attrs["value"].data_type in NARROW_TYPES:
        lowered = onnx.NodeProto()
        lowered.CopyFrom(node)
        lowered.attribute[0].t.CopyFrom(_carrier_tensor(attrs["value"]))
        rewriter.nodes.append(lowered)
        return None
    if any(_declares_narrow(body) for body in _bodies(node)):
        raise UserError(f"{node.op_type} {node.name!r} has narrow-typed (float8/float4/int4/int2) tensors in its "
                        "body; edgetune compiles these types in the main graph only")
    narrow = [name for name in (*node.input, *node.output) if rewriter.narrow(name)]
    if narrow and op not in _DATA_MOVEMENT | {"QuantizeLinear", "DequantizeLinear"}:
        raise UserError(f"{node.op_type} {node.name!r} computes on {_type_name(rewriter.types[narrow[0]])} "
                        "tensors; edgetune compiles these types in Cast, CastLike, QuantizeLinear, "
                        "DequantizeLinear and data movement only")
    rewriter.nodes.append(node)
    return None


def _carrier_tensor(tensor: onnx.TensorProto) -> onnx.TensorProto:
    if tensor.data_type not in NARROW_TYPES:
        return tensor
    return numpy_helper.from_array(to_carrier(numpy_helper.to_array(tensor)), tensor.name)
