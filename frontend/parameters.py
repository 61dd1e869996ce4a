"""Operator parameters that ONNX passes as tensor inputs (axes, pads, scales, sizes, k, shapes, ...).

edgetune compiles static-shape code, so these values must be known at compile time: as initializers or
Constant nodes, or bound by the caller (`bind_inputs=`), which turns the graph input into an initializer.
A parameter that is still a graph input at import is refused with an error naming the input.
"""

from __future__ import annotations

import hashlib
from typing import Mapping

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import UserError
from .loader import LoadedModel

_REDUCE_OPS = ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
               "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")

# op type -> {input index: what the input sets}
PARAMETER_SLOTS: dict[str, dict[int, str]] = {
    **{op: {1: "axes"} for op in _REDUCE_OPS},
    "Reshape": {1: "shape"},
    "Expand": {1: "shape"},
    "Tile": {1: "repeats"},
    "ConstantOfShape": {0: "shape"},
    "Slice": {1: "starts", 2: "ends", 3: "axes", 4: "steps"},
    "Pad": {1: "pads", 2: "constant_value", 3: "axes"},
    "Resize": {1: "roi", 2: "scales", 3: "sizes"},
    "Upsample": {1: "scales"},
    "Squeeze": {1: "axes"},
    "Unsqueeze": {1: "axes"},
    "Split": {1: "split"},
    "TopK": {1: "k"},
    "OneHot": {1: "depth"},
    "Range": {0: "start", 1: "limit", 2: "delta"},
    "CumSum": {1: "axis"},
    "CumProd": {1: "axis"},
    "Trilu": {1: "k"},
    "CenterCropPad": {1: "shape"},
    "Col2Im": {1: "image_shape", 2: "block_shape"},
    "DFT": {1: "dft_length", 2: "axis"},
    "STFT": {1: "frame_step", 3: "frame_length"},
    "AffineGrid": {1: "size"},
    "NonMaxSuppression": {2: "max_output_boxes_per_class", 3: "iou_threshold", 4: "score_threshold"},
    "MelWeightMatrix": {0: "num_mel_bins", 1: "dft_length", 2: "sample_rate", 3: "lower_edge_hertz",
                        4: "upper_edge_hertz"},
    "BlackmanWindow": {0: "size"},
    "HannWindow": {0: "size"},
    "HammingWindow": {0: "size"},
}


def parameter_inputs(model: onnx.ModelProto) -> dict[str, str]:
    """Graph inputs (not initializers) whose values set an operator parameter -> which parameter.

    An input feeds a parameter directly, or through integer arithmetic on it (function bodies and exporters
    compute pads and slice bounds from a `shape` input); the values behind `Shape`/`Size` are not needed.
    """
    initializers = {i.name for i in model.graph.initializer}
    graph_inputs = {i.name: i for i in model.graph.input if i.name not in initializers}
    producers = {out: node for node in model.graph.node for out in node.output}
    found: dict[str, str] = {}
    for index, node in enumerate(model.graph.node):
        for slot, what in PARAMETER_SLOTS.get(node.op_type, {}).items():
            if slot >= len(node.input) or not node.input[slot]:
                continue
            parameter = f"the {what} of {node.op_type} node {node.name or f'#{index}'!r}"
            for name in _sources(node.input[slot], producers, graph_inputs):
                found.setdefault(name, parameter)
    return found


def _sources(value: str, producers: dict[str, onnx.NodeProto], graph_inputs: dict) -> list[str]:
    """Graph inputs `value` is computed from: itself, or integer inputs reached through the producing nodes."""
    if value in graph_inputs:
        return [value]
    sources, seen, stack = [], {value}, [value]
    while stack:
        node = producers.get(stack.pop())
        if node is None or node.op_type in ("Shape", "Size"):
            continue
        for name in node.input:
            if not name or name in seen:
                continue
            seen.add(name)
            if name in graph_inputs:
                if _is_integer(graph_inputs[name]):
                    sources.append(name)
            else:
                stack.append(name)
    return sources


def _is_integer(value_info: onnx.ValueInfoProto) -> bool:
    elem_type = value_info.type.tensor_type.elem_type
    return bool(elem_type) and np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).kind in "iu"


def bind_inputs(model: LoadedModel, values: Mapping[str, np.ndarray]) -> LoadedModel:
    """`model` with the named graph inputs replaced by initializers holding `values`."""
    proto = onnx.ModelProto()
    proto.CopyFrom(model.proto)
    declared = {i.name: i for i in proto.graph.input}
    unknown = sorted(set(values) - set(declared))
    if unknown:
        raise UserError(f"bind_inputs names {', '.join(unknown)}, which the model does not take as inputs; "
                        f"its inputs are {', '.join(declared)}")
    defaults = {init.name: init for init in proto.graph.initializer}  # inputs with a default value
    for name, value in values.items():
        elem_type = declared[name].type.tensor_type.elem_type
        array = np.asarray(value, dtype=onnx.helper.tensor_dtype_to_np_dtype(elem_type))
        if name in defaults:
            proto.graph.initializer.remove(defaults[name])
        proto.graph.initializer.append(numpy_helper.from_array(array, name))
        proto.graph.input.remove(declared[name])
    return LoadedModel(proto, hashlib.sha256(proto.SerializeToString()).hexdigest(), model.origin)


def check_parameters_known(model: onnx.ModelProto) -> None:
    """Refuse a model whose operator parameters arrive as graph inputs, naming each of them."""
    unknown = parameter_inputs(model)
    if unknown:
        listed = "; ".join(f"{name!r} ({what})" for name, what in unknown.items())
        raise UserError(f"operator parameters arrive as graph inputs, and edgetune needs their values at "
                        f"compile time: {listed}; make them initializers or bind them "
                        f"(bind_inputs={{name: value}})")
