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


def check_supported(model: onnx.ModelProto) -> OpCoverage:
    coverage = op_coverage(model)
    if coverage.unsupported:
        raise UserError(f"unsupported operators: {coverage.unsupported_message()}; replace them or export the "
                        "model with other operators (run `edgetune inspect MODEL` for the full list)")
    return coverage
