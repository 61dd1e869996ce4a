"""ONNX `Scan` unrolled into plain nodes before import, over its static number of iterations.

The Relax importer has no Scan (a loop over slices of its inputs that carries state from one iteration to the
next). With static input shapes the iteration count is known, so each iteration becomes a copy of the body
wired to the previous iteration's state and to its own slices (`Gather` at the iteration's index), and the
per-iteration outputs are stacked (`Unsqueeze` + `Concat`): the same values in the same order of computation.
ONNX defines some operators with a Scan in their function bodies (LinearAttention), so this runs after
function expansion.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import UserError
from .functions import value_types

MAX_UNROLLED_NODES = 20_000


def unroll_scans(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` (static input shapes) with every top-level Scan (opset 9 or later) replaced by its unrolled
    iterations; `model` itself when it has none."""
    if not any(node.op_type == "Scan" for node in model.graph.node):
        return model
    opset = next((op.version for op in model.opset_import if op.domain in ("", "ai.onnx")), 0)
    model = onnx.ModelProto.FromString(model.SerializeToString())
    types = value_types(model)
    nodes: list[onnx.NodeProto] = []
    for index, node in enumerate(model.graph.node):
        if node.op_type != "Scan" or node.domain not in ("", "ai.onnx"):
            nodes.append(node)
            continue
        if opset < 9:
            raise UserError(f"Scan '{node.name}' is opset 8's (batched, with sequence_lens): re-export the model "
                            "with opset 9 or later")
        unrolled = _Unroller(node, types, f"__scan{index}_", opset)
        nodes.extend(unrolled.nodes())
        model.graph.initializer.extend(unrolled.initializers)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


class _Unroller:
    def __init__(self, node: onnx.NodeProto, types: dict[str, onnx.TypeProto], prefix: str, opset: int):
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        self.node, self.prefix, self.opset = node, prefix, opset
        self.body: onnx.GraphProto = attrs["body"]
        scans = int(attrs["num_scan_inputs"])
        self.states = len(node.input) - scans
        outputs = len(self.body.output) - self.states
        self.scan_inputs = list(node.input[self.states:])
        self.input_axes = list(attrs.get("scan_input_axes", [0] * scans))
        self.input_reversed = [bool(d) for d in attrs.get("scan_input_directions", [0] * scans)]
        self.output_axes = list(attrs.get("scan_output_axes", [0] * outputs))
        self.output_reversed = [bool(d) for d in attrs.get("scan_output_directions", [0] * outputs)]
        self.length = self._length(types)
        self._refuse_what_cannot_be_unrolled()
        self.initializers = [self._renamed_initializer(init) for init in self.body.initializer]

    def _fail(self, why: str) -> UserError:
        return UserError(f"Scan '{self.node.name}' cannot be unrolled: {why}")

    def _length(self, types: dict[str, onnx.TypeProto]) -> int:
        first = types.get(self.scan_inputs[0])
        dims = first.tensor_type.shape.dim if first is not None and first.HasField("tensor_type") else []
        axis = self.input_axes[0] + (len(dims) if self.input_axes[0] < 0 else 0)
        if not 0 <= axis < len(dims) or not dims[axis].HasField("dim_value"):
            raise self._fail("the length of its scan axis is not known; fix the input shapes with --input-shape")
        return dims[axis].dim_value

    def _refuse_what_cannot_be_unrolled(self) -> None:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
               for body_node in self.body.node for a in body_node.attribute):
            raise self._fail("its body holds further subgraphs (If, Loop or Scan inside a Scan)")
        if self.length == 0:
            raise self._fail("its scan axis is empty")
        if self.length * len(self.body.node) > MAX_UNROLLED_NODES:
            raise self._fail(f"{self.length} iterations of {len(self.body.node)} nodes exceed "
                             f"{MAX_UNROLLED_NODES} nodes")

    def _renamed_initializer(self, init: onnx.TensorProto) -> onnx.TensorProto:
        renamed = onnx.TensorProto()
        renamed.CopyFrom(init)
        renamed.name = self.prefix + init.name
        return renamed

    def _constant(self, name: str, value: np.ndarray) -> onnx.NodeProto:
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value, name))

    def nodes(self) -> list[onnx.NodeProto]:
        out: list[onnx.NodeProto] = []
        states = list(self.node.input[:self.states])
        per_iteration: list[list[str]] = []
        for t in range(self.length):
            names = {init.name: self.prefix + init.name for init in self.body.initializer}
            names.update((vi.name, state) for vi, state in zip(self.body.input, states))
            for j, (source, axis) in enumerate(zip(self.scan_inputs, self.input_axes)):
                index, element = f"{self.prefix}t{t}_index{j}", f"{self.prefix}t{t}_input{j}"
                step = self.length - 1 - t if self.input_reversed[j] else t
                out.append(self._constant(index, np.array(step, dtype=np.int64)))
                out.append(helper.make_node("Gather", [source, index], [element], axis=axis))
                names[self.body.input[self.states + j].name] = element
            for body_node in self.body.node:
                copy = onnx.NodeProto()
                copy.CopyFrom(body_node)
                copy.name = f"{self.prefix}t{t}_{body_node.name}"
                copy.input[:] = [names.get(name, name) for name in body_node.input]  # outer names stay
                for name in body_node.output:
                    if name:
                        names[name] = f"{self.prefix}t{t}_{name}"
                copy.output[:] = [names.get(name, name) if name else "" for name in body_node.output]
                out.append(copy)
            results = [names.get(vi.name, vi.name) for vi in self.body.output]
            states, per_iteration = results[:self.states], [*per_iteration, results[self.states:]]
        out.extend(helper.make_node("Identity", [state], [name])
                   for state, name in zip(states, self.node.output[:self.states]) if name)
        for k, name in enumerate(self.node.output[self.states:]):
            if name:
                out.extend(self._stacked(k, [outputs[k] for outputs in per_iteration], name))
        return out

    def _stacked(self, k: int, elements: list[str], name: str) -> list[onnx.NodeProto]:
        """The iterations' k-th scan outputs stacked along a new axis, last iteration first if reversed."""
        axis = self.output_axes[k]
        if self.output_reversed[k]:
            elements = elements[::-1]
        nodes, expanded = [], []
        axes = f"{self.prefix}out{k}_axes"
        if self.opset >= 13:
            nodes.append(self._constant(axes, np.array([axis], dtype=np.int64)))
        for t, element in enumerate(elements):
            expanded.append(f"{self.prefix}out{k}_t{t}")
            nodes.append(helper.make_node("Unsqueeze", [element, axes], [expanded[-1]]) if self.opset >= 13 else
                         helper.make_node("Unsqueeze", [element], [expanded[-1]], axes=[axis]))
        nodes.append(helper.make_node("Concat", expanded, [name], axis=axis))
        return nodes
