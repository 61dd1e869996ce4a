"""Small ONNX models built in the tests with onnx.helper (no downloads)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def light(name: str) -> Path:
    """A full-size architecture with dummy weights from the onnx wheel (`light_resnet50`, ...)."""
    return LIGHT / f"{name}.onnx"


def _model(nodes, inputs, outputs, initializers=(), opset=17, domains=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    opsets = [helper.make_opsetid("", opset), *(helper.make_opsetid(d, 1) for d in domains)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="edgetune-tests")
    model.ir_version = 8
    return model


def _const(name: str, array: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(array, name)


def conv_net(channels: int = 16, size: int = 16, batch: int | str = 1, seed: int = 0) -> onnx.ModelProto:
    """conv3x3 + bias + relu, conv3x3 + relu, global average pool, dense: a real if tiny CNN."""
    rng = np.random.default_rng(seed)
    c = channels
    inits = [
        _const("w1", rng.normal(0, 0.3, (c, 3, 3, 3)).astype(np.float32)),
        _const("b1", rng.normal(0, 0.1, (c,)).astype(np.float32)),
        _const("w2", rng.normal(0, 0.1, (c, c, 3, 3)).astype(np.float32)),
        _const("wd", rng.normal(0, 0.3, (c, 10)).astype(np.float32)),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("MatMul", ["f", "wd"], ["y"], name="dense"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, size, size])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 10])
    return _model(nodes, [x], [y], inits)


def two_outputs() -> onnx.ModelProto:
    """Float and integer outputs from two inputs: checks multi-output order and exact integer results."""
    nodes = [
        helper.make_node("Add", ["a", "b"], ["sum"], name="add"),
        helper.make_node("ArgMax", ["sum"], ["best"], axis=1, keepdims=0, name="argmax"),
    ]
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 5])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [2, 5])
    outs = [helper.make_tensor_value_info("sum", TensorProto.FLOAT, [2, 5]),
            helper.make_tensor_value_info("best", TensorProto.INT64, [2])]
    return _model(nodes, [a, b], outs)


def long_reduction(seed: int = 0) -> onnx.ModelProto:
    """A 4096-long dot product: TVM and onnxruntime sum in different orders, so results differ in low bits."""
    rng = np.random.default_rng(seed)
    w = _const("w", rng.normal(0, 1, (4096, 64)).astype(np.float32))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4096])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])
    return _model([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], [x], [y], [w])


def with_unsupported_ops() -> onnx.ModelProto:
    """Two operator types the importer lacks (three nodes in all), next to a supported one."""
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="ok_relu"),
        helper.make_node("FancyOp", ["r"], ["f1"], domain="com.example", name="fancy_a"),
        helper.make_node("FancyOp", ["f1"], ["f2"], domain="com.example", name="fancy_b"),
        helper.make_node("OtherOp", ["f2"], ["y"], domain="com.example", name="other_1"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    return _model(nodes, [x], [y], domains=["com.example"])


def dangling_input() -> onnx.ModelProto:
    """Fails onnx.checker: a node reads a tensor nothing produces."""
    nodes = [helper.make_node("Add", ["x", "nowhere"], ["y"], name="add")]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    return _model(nodes, [x], [y])


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def reshape_by_input() -> onnx.ModelProto:
    """Y = Reshape(Sum(X, X), shape): the target shape arrives as a graph input, as in ONNX's node tests."""
    nodes = [helper.make_node("Add", ["x", "x"], ["twice"]), helper.make_node("Reshape", ["twice", "shape"], ["y"])]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6]),
                          helper.make_tensor_value_info("shape", TensorProto.INT64, [2])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4])])


def pad_from_shape_arithmetic() -> onnx.ModelProto:
    """Pads computed from Shape(X) with integer ops (as exporters and ONNX function bodies do)."""
    nodes = [
        helper.make_node("Shape", ["x"], ["dims"]),
        helper.make_node("Sub", ["dims", "dims"], ["zeros"]),
        helper.make_node("Add", ["zeros", "one"], ["ones"]),
        helper.make_node("Concat", ["ones", "zeros"], ["pads"], axis=0),
        helper.make_node("Pad", ["x", "pads"], ["y"]),
    ]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["rows", "columns"])],
                  [_const("one", np.array([1], np.int64))])
