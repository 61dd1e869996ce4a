"""Mutations of real ONNX files for fuzzing `edgetune compile`: structural ones on the protobuf and byte-level ones
on its serialized form.

Each mutation takes a `random.Random` and a model (or its bytes) and returns the mutated bytes, so a case is
reproduced from (source model, mutation name, seed) alone.
"""

from __future__ import annotations

import random
from typing import Callable

import onnx
from onnx import AttributeProto, TensorProto, helper

# Dimensions that break shape inference in different ways: zero, negative, past int32 and int64 range.
BAD_DIMS = (0, -1, -7, 1, 3, 1 << 31, 1 << 40, (1 << 63) - 1)
# Element types: undefined, every defined one, and numbers that name none.
BAD_DTYPES = (0, *range(1, 24), 99, 1 << 20)


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    clone = onnx.ModelProto()
    clone.CopyFrom(model)
    return clone


def _some_value_info(rng: random.Random, model: onnx.ModelProto):
    graph = model.graph
    return rng.choice([*graph.input, *graph.output] or [graph.input.add()])


def wrong_dims(rng: random.Random, model: onnx.ModelProto) -> None:
    dims = _some_value_info(rng, model).type.tensor_type.shape.dim
    if dims:
        rng.choice(dims).dim_value = rng.choice(BAD_DIMS)


def wrong_rank(rng: random.Random, model: onnx.ModelProto) -> None:
    shape = _some_value_info(rng, model).type.tensor_type.shape
    if shape.dim and rng.random() < 0.5:
        del shape.dim[rng.randrange(len(shape.dim))]
    else:
        shape.dim.add().dim_value = rng.choice(BAD_DIMS)


def wrong_dtype(rng: random.Random, model: onnx.ModelProto) -> None:
    _some_value_info(rng, model).type.tensor_type.elem_type = rng.choice(BAD_DTYPES)


def wrong_initializer(rng: random.Random, model: onnx.ModelProto) -> None:
    """An initializer whose dims or dtype disagree with its data."""
    if not model.graph.initializer:
        return
    tensor = rng.choice(model.graph.initializer)
    if rng.random() < 0.5 and tensor.dims:
        tensor.dims[rng.randrange(len(tensor.dims))] = rng.choice(BAD_DIMS)
    else:
        tensor.data_type = rng.choice(BAD_DTYPES)


def missing_initializer(rng: random.Random, model: onnx.ModelProto) -> None:
    if model.graph.initializer:
        del model.graph.initializer[rng.randrange(len(model.graph.initializer))]


def dangling_name(rng: random.Random, model: onnx.ModelProto) -> None:
    nodes = [n for n in model.graph.node if n.input]
    if nodes:
        node = rng.choice(nodes)
        node.input[rng.randrange(len(node.input))] = f"nowhere_{rng.randrange(100)}"


def cycle(rng: random.Random, model: onnx.ModelProto) -> None:
    """An early node reads a later node's output."""
    nodes = list(model.graph.node)
    if len(nodes) >= 2:
        first = rng.randrange(len(nodes) - 1)
        later = rng.randrange(first + 1, len(nodes))
        if nodes[first].input and nodes[later].output:
            nodes[first].input[0] = nodes[later].output[0]


def duplicate_name(rng: random.Random, model: onnx.ModelProto) -> None:
    """Two nodes writing the same tensor."""
    nodes = list(model.graph.node)
    if len(nodes) >= 2:
        a, b = rng.sample(nodes, 2)
        b.output[0] = a.output[0]


def empty_graph(rng: random.Random, model: onnx.ModelProto) -> None:
    del model.graph.node[:]
    if rng.random() < 0.5:
        del model.graph.output[:]


def no_outputs(rng: random.Random, model: onnx.ModelProto) -> None:
    del model.graph.output[:]


def no_inputs(rng: random.Random, model: onnx.ModelProto) -> None:
    del model.graph.input[:]


def wrong_attribute(rng: random.Random, model: onnx.ModelProto) -> None:
    """An attribute with another type or an absurd value, or an attribute the operator does not have."""
    nodes = list(model.graph.node)
    if not nodes:
        return
    node = rng.choice(nodes)
    choice = rng.randrange(3)
    if choice == 0 and node.attribute:
        attr = rng.choice(node.attribute)
        value = rng.choice([helper.make_attribute(attr.name, 2.5), helper.make_attribute(attr.name, "x"),
                            helper.make_attribute(attr.name, [rng.choice(BAD_DIMS)] * rng.randrange(1, 9)),
                            helper.make_attribute(attr.name, rng.choice(BAD_DIMS))])
        attr.CopyFrom(value)
    elif choice == 1 and node.attribute:
        attr = rng.choice(node.attribute)
        if attr.type == AttributeProto.INTS:
            attr.ints[:] = [rng.choice(BAD_DIMS) for _ in attr.ints]
        elif attr.type == AttributeProto.INT:
            attr.i = rng.choice(BAD_DIMS)
    else:
        node.attribute.append(helper.make_attribute("axis", rng.choice(BAD_DIMS)))


def wrong_op(rng: random.Random, model: onnx.ModelProto) -> None:
    nodes = list(model.graph.node)
    if nodes:
        rng.choice(nodes).op_type = rng.choice(["Relu", "Add", "Conv", "MatMul", "Reshape", "Softmax", "Gemm",
                                                "Identity", "Transpose", "NoSuchOp"])


def wrong_opset(rng: random.Random, model: onnx.ModelProto) -> None:
    model.opset_import[0].version = rng.choice([0, 1, 6, 1000, (1 << 63) - 1])


def wrong_ir_version(rng: random.Random, model: onnx.ModelProto) -> None:
    model.ir_version = rng.choice([1, 2, 99, (1 << 63) - 1])


def constant_input(rng: random.Random, model: onnx.ModelProto) -> None:
    """A graph input replaced by a huge initializer declaration (dims only, no data)."""
    if model.graph.input:
        vi = rng.choice(model.graph.input)
        tensor = model.graph.initializer.add()
        tensor.name = vi.name
        tensor.data_type = TensorProto.FLOAT
        tensor.dims.extend([rng.choice(BAD_DIMS) for _ in range(rng.randrange(1, 4))])


STRUCTURAL: dict[str, Callable[[random.Random, onnx.ModelProto], None]] = {
    f.__name__: f for f in (wrong_dims, wrong_rank, wrong_dtype, wrong_initializer, missing_initializer,
                            dangling_name, cycle, duplicate_name, empty_graph, no_outputs, no_inputs,
                            wrong_attribute, wrong_op, wrong_opset, wrong_ir_version, constant_input)
}


def bit_flips(rng: random.Random, data: bytes) -> bytes:
    buffer = bytearray(data)
    for _ in range(rng.randrange(1, 9)):
        buffer[rng.randrange(len(buffer))] ^= 1 << rng.randrange(8)
    return bytes(buffer)


def truncation(rng: random.Random, data: bytes) -> bytes:
    return data[:rng.randrange(len(data))]


def splice(rng: random.Random, data: bytes) -> bytes:
    """Random bytes written over a random stretch."""
    at = rng.randrange(len(data))
    return data[:at] + rng.randbytes(rng.randrange(1, 64)) + data[at + rng.randrange(0, 64):]


BYTE_LEVEL: dict[str, Callable[[random.Random, bytes], bytes]] = {
    f.__name__: f for f in (bit_flips, truncation, splice)}

MUTATIONS = sorted([*STRUCTURAL, *BYTE_LEVEL])


def mutate(model: onnx.ModelProto, mutation: str, seed: int) -> bytes:
    """The serialized model after `mutation` (a name from MUTATIONS) with a generator seeded by `seed`; structural
    mutations are applied one to three times."""
    rng = random.Random(f"{mutation}:{seed}")
    if mutation in BYTE_LEVEL:
        return BYTE_LEVEL[mutation](rng, model.SerializeToString())
    mutated = _copy(model)
    for _ in range(rng.randrange(1, 4)):
        STRUCTURAL[mutation](rng, mutated)
    return mutated.SerializeToString()
