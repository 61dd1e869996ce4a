"""Operators replaced by their ONNX function bodies before import.

Many ONNX operators are defined as functions of simpler ones (NegativeLogLikelihoodLoss,
SoftmaxCrossEntropyLoss, Attention, CenterCropPad, RotaryEmbedding, Celu, ...). Where the Relax importer has
no converter for such an operator, or its converter is wrong for some uses, the node is replaced by the body
of its definition for the model's opset: the operator's own specification, converted op by op. Expansion runs
with static input shapes, so that the shape arithmetic in the bodies folds to constants afterwards.
"""

from __future__ import annotations

import onnx
from onnx import defs

# Operators the importer converts, but wrongly or incompletely for some nodes: expanded when `needs(node)`.
_STOCK_IS_WRONG = {
    # The stock converter returns empty tensors for Mean and InvStdDev (outputs 1 and 2).
    "LayerNormalization": lambda node: len([o for o in node.output if o]) > 1,
    # The stock converter failed 107 of ONNX's Attention cases (KeyError on its optional inputs, 11 wrong).
    "Attention": lambda node: True,
}
_MAX_ROUNDS = 4  # bodies that use further function operators (Attention -> Softmax, ...)


def expand_functions(model: onnx.ModelProto, converted: frozenset[str]) -> onnx.ModelProto:
    """`model` with each node of an operator outside `converted` (or listed in `_STOCK_IS_WRONG`) replaced
    by its function body, where ONNX defines one."""
    opsets = {op.domain or "": op.version for op in model.opset_import}

    def needs_body(node: onnx.NodeProto) -> bool:
        return node.op_type not in converted or _STOCK_IS_WRONG.get(node.op_type, lambda _n: False)(node)

    for _ in range(_MAX_ROUNDS):
        if not any(needs_body(node) for node in model.graph.node):
            return model
        types = value_types(model)  # (shape inference: only when a node may be expanded)
        nodes, changed = [], False
        for index, node in enumerate(model.graph.node):
            body = None
            if needs_body(node):
                body = _function_body(node, opsets, types, f"{node.op_type}_{index}_")
            nodes.extend(body if body is not None else [node])
            changed |= body is not None
        if not changed:
            return model
        model = onnx.ModelProto.FromString(model.SerializeToString())
        del model.graph.node[:]
        model.graph.node.extend(nodes)
    return model


def value_types(model: onnx.ModelProto) -> dict[str, onnx.TypeProto]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except onnx.shape_inference.InferenceError:
        inferred = model
    types = {vi.name: vi.type for vi in [*inferred.graph.value_info, *inferred.graph.input,
                                         *inferred.graph.output]}
    for init in model.graph.initializer:
        types.setdefault(init.name, onnx.helper.make_tensor_type_proto(init.data_type, list(init.dims)))
    return types


def _function_body(node: onnx.NodeProto, opsets: dict[str, int], types: dict[str, onnx.TypeProto],
                   prefix: str) -> list[onnx.NodeProto] | None:
    """The nodes of `node`'s function definition at the model's opset, wired to its inputs and outputs."""
    from onnx.backend.test.case.node import function_expand_helper  # ONNX's own expansion, as its tests use

    domain = "" if node.domain == "ai.onnx" else node.domain
    if domain not in opsets:
        return None
    try:
        schema = defs.get_schema(node.op_type, opsets[domain], domain)
    except defs.SchemaError:
        return None
    node = _with_default_attributes(node, schema)
    function = onnx.FunctionProto()
    plain = [v for v in schema.function_opset_versions if v <= opsets[domain]]
    dependent = [v for v in schema.context_dependent_function_opset_versions if v <= opsets[domain]]
    if plain:
        function.ParseFromString(schema.get_function_with_opset_version(max(plain)))
    elif dependent:
        if any(name and name not in types for name in node.input):
            return None
        input_types = [types[name].SerializeToString() if name else onnx.TypeProto().SerializeToString()
                       for name in node.input]
        function.ParseFromString(schema.get_context_dependent_function_with_opset_version(
            max(dependent), node.SerializeToString(), input_types))
    else:
        return None
    if any(op.version > opsets.get(op.domain or "", 0) for op in function.opset_import):
        return None  # the body needs a newer opset than the model imports
    return function_expand_helper(node, function, prefix)


def _with_default_attributes(node: onnx.NodeProto, schema: defs.OpSchema) -> onnx.NodeProto:
    node_copy = onnx.NodeProto()
    node_copy.CopyFrom(node)
    present = {a.name for a in node.attribute}
    for name, attr in schema.attributes.items():
        if name not in present and attr.default_value.name:
            node_copy.attribute.append(attr.default_value)
    return node_copy
