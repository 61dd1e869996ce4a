"""Which operators a model uses and which of them the importer cannot convert.

The check runs before import so that the user sees every unsupported operator at once (with node names and
counts) instead of the stock importer's first failure.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Iterator

import onnx

from ..errors import UserError

# Handled by the importer itself rather than through its converter table.
_BUILTIN_OPS = {"Constant", "If"}

# Element types edgetune has no carrier for (`narrow_formats` lists those it has).
UNSUPPORTED_TYPES = {getattr(onnx.TensorProto, name) for name in ("FLOAT6E2M3", "FLOAT6E3M2")
                     if hasattr(onnx.TensorProto, name)}


def supported_ops() -> frozenset[str]:
    """Operator types the Relax ONNX importer converts (its converter table plus built-ins)."""
    from tvm.relax.frontend.onnx import onnx_frontend

    from .converters import converter_overrides

    return frozenset(onnx_frontend._get_convert_map()) | frozenset(converter_overrides()) | _BUILTIN_OPS


def iter_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node of a graph, including those inside If/Loop/Scan bodies."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from iter_nodes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from iter_nodes(sub)


@dataclass
class OpCoverage:
    counts: Counter = field(default_factory=Counter)  # "domain::Op" or "Op" -> count
    unsupported: dict[str, list[str]] = field(default_factory=dict)  # op -> node names

    def unsupported_message(self) -> str:
        parts = []
        for op, nodes in sorted(self.unsupported.items()):
            shown = ", ".join(nodes[:3]) + (", ..." if len(nodes) > 3 else "")
            parts.append(f"{op} x{len(nodes)} ({shown})")
        return "; ".join(parts)


def _op_key(node: onnx.NodeProto) -> str:
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"


def op_coverage(model: onnx.ModelProto) -> OpCoverage:
    known = supported_ops()
    coverage = OpCoverage()
    missing: dict[str, list[str]] = defaultdict(list)
    for index, node in enumerate(iter_nodes(model.graph)):
        key = _op_key(node)
        coverage.counts[key] += 1
        if node.op_type not in known:
            missing[key].append(node.name or f"#{index}")
    coverage.unsupported = dict(missing)
    return coverage


def unsupported_types(model: onnx.ModelProto) -> dict[str, str]:
    """Tensors (inputs, outputs, weights, intermediate values, Cast targets) of an unsupported element type
    -> the type's name."""
    try:
        graph = onnx.shape_inference.infer_shapes(model).graph
    except onnx.shape_inference.InferenceError:
        graph = model.graph
    typed = [(vi.name, vi.type.tensor_type.elem_type) for vi in [*graph.input, *graph.output, *graph.value_info]]
    typed += [(init.name, init.data_type) for init in graph.initializer]
    typed += [(node.output[0], attr.i) for node in iter_nodes(graph) for attr in node.attribute
              if node.op_type == "Cast" and attr.name == "to"]
    return {name: onnx.TensorProto.DataType.Name(elem_type) for name, elem_type in typed
            if elem_type in UNSUPPORTED_TYPES}


def check_supported(model: onnx.ModelProto) -> OpCoverage:
    types = unsupported_types(model)
    if types:
        shown = ", ".join(f"{name!r} ({elem_type})" for name, elem_type in list(types.items())[:3])
        raise UserError(f"unsupported element types: {shown}{', ...' if len(types) > 3 else ''}; edgetune "
                        "compiles float64/32/16, bfloat16, float8, float4, integers of 2 bits or more and bool")
    coverage = op_coverage(model)
    if coverage.unsupported:
        raise UserError(f"unsupported operators: {coverage.unsupported_message()}; replace them or export the "
                        "model with other operators (run `edgetune inspect MODEL` for the full list)")
    return coverage
