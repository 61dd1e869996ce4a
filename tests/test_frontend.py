"""Frontend: loading, checking, signature resolution and operator coverage."""

import numpy as np
import onnx
import pytest

import edgetune
from edgetune.errors import UserError
from edgetune.frontend import import_model, load_model, op_coverage, parse_input_shapes, resolve_input_specs

from onnx_models import (conv_net, dangling_input, light, pad_from_shape_arithmetic, reshape_by_input, save,
                         two_outputs, with_unsupported_ops)


def test_parse_input_shapes():
    assert parse_input_shapes(["data=1x3x224x224", "mask=1,128"]) == {"data": (1, 3, 224, 224), "mask": (1, 128)}
    assert parse_input_shapes(["2x3"]) == {"": (2, 3)}
    assert parse_input_shapes(["gpu_0/data_0=1x3x8x8"]) == {"gpu_0/data_0": (1, 3, 8, 8)}
    with pytest.raises(UserError, match="NAME=DxDx"):
        parse_input_shapes(["data=1xbx3"])


def test_dynamic_dims_need_input_shape():
    model = conv_net(batch="N")
    with pytest.raises(UserError, match=r"input 'x' has dynamic dimensions \[N, 3, 16, 16\].*--input-shape x="):
        resolve_input_specs(model)
    (spec,) = resolve_input_specs(model, {"x": (4, 3, 16, 16)})
    assert spec.shape == (4, 3, 16, 16) and spec.dtype == "float32"
    (spec,) = resolve_input_specs(model, {"": (2, 3, 16, 16)})
    assert spec.shape == (2, 3, 16, 16)


@pytest.mark.parametrize("shapes, message", [
    ({"x": (1, 3, 16)}, "rank 3 but the model declares rank 4"),
    ({"x": (1, 4, 16, 16)}, "contradicts the model's static dims"),
    ({"y": (1, 3, 16, 16)}, "unknown input y; the model's inputs are x"),
    ({"x": (-1, 3, 16, 16)}, "non-negative integer"),
])
def test_bad_input_shapes(shapes, message):
    with pytest.raises(UserError, match=message):
        resolve_input_specs(conv_net(batch="N"), shapes)


def test_unsupported_ops_are_all_reported_with_nodes_and_counts():
    model = with_unsupported_ops()
    coverage = op_coverage(model)
    assert coverage.unsupported == {"com.example::FancyOp": ["fancy_a", "fancy_b"],
                                    "com.example::OtherOp": ["other_1"]}
    with pytest.raises(UserError) as err:
        import_model(load_model(model))
    text = str(err.value)
    assert "com.example::FancyOp x2 (fancy_a, fancy_b)" in text and "com.example::OtherOp x1 (other_1)" in text
    assert "\n" not in text


def test_load_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_model(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\xff definitely not protobuf" * 10)
    with pytest.raises(UserError, match="is not an ONNX model"):
        load_model(junk)
    text = tmp_path / "notes.onnx"
    text.write_text("hello")
    with pytest.raises(UserError, match="is not an ONNX model"):
        load_model(text)
    with pytest.raises(UserError, match="fails onnx.checker"):
        load_model(save(dangling_input(), tmp_path / "bad.onnx"))
    with pytest.raises(UserError, match="is a folder"):
        load_model(tmp_path)


def test_signature_and_feed_checks():
    imported = import_model(load_model(two_outputs()))
    sig = imported.signature
    assert [s.describe() for s in sig.inputs] == ["a: float32[2x5]", "b: float32[2x5]"]
    assert [(s.name, s.shape, s.dtype) for s in sig.outputs] == [("sum", (2, 5), "float32"), ("best", (2,), "int64")]
    feed = sig.random_feed(seed=1)
    assert sig.check_feed(feed)[0] is not None
    with pytest.raises(UserError, match="missing b"):
        sig.check_feed({"a": feed["a"]})
    with pytest.raises(UserError, match="unexpected c"):
        sig.check_feed({**feed, "c": feed["a"]})
    with pytest.raises(UserError, match=r"input a: float64\[2x5\] does not match the model's a: float32\[2x5\]"):
        sig.check_feed({**feed, "a": feed["a"].astype(np.float64)})
    with pytest.raises(UserError, match=r"a: float32\[5x2\]"):
        sig.check_feed({**feed, "a": feed["a"].reshape(5, 2)})


def test_light_model_imports_with_static_signature():
    loaded = load_model(light("light_squeezenet"))
    assert len(loaded.sha256) == 64
    imported = import_model(loaded)
    assert imported.signature.inputs[0].shape == (1, 3, 224, 224)
    assert imported.signature.outputs[0].shape == (1, 1000, 1, 1)


def test_torch_module_is_exported():
    torch = pytest.importorskip("torch")
    module = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.Tanh())
    loaded = load_model(module, example_inputs=(torch.zeros(2, 8),), input_names=["features"])
    assert loaded.origin == "<torch:Sequential>"
    assert [i.name for i in loaded.proto.graph.input] == ["features"]
    with pytest.raises(UserError, match="needs example inputs"):
        load_model(module)
    onnx.checker.check_model(loaded.proto)


@pytest.mark.parametrize("op", ["Sum", "Mean", "Max", "Min"])
def test_variadic_ops_import_as_pairwise_binary_ops(op):
    """edgetune's converters replace the stock stack-and-reduce form (slow, and it blocks layout conversion)."""
    import edgetune
    from onnx import TensorProto, helper

    shapes = {"a": [2, 3, 4], "b": [3, 1], "c": [4]}  # ONNX multidirectional broadcasting
    graph = helper.make_graph(
        [helper.make_node(op, list(shapes), ["y"])], "variadic",
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, v) for k, v in shapes.items()],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    text = str(import_model(load_model(model)).mod["main"])
    assert "R.stack" not in text and "R.sum" not in text
    compiled = edgetune.compile(model)
    assert compiled.validation.passed, compiled.validation.summary()


def test_parameter_inputs_are_refused_by_name_unless_bound():
    model = reshape_by_input()
    with pytest.raises(UserError, match=r"'shape' \(the shape of Reshape node"):
        import_model(load_model(model))
    compiled = edgetune.compile(model, "host", validate=False, bind_inputs={"shape": np.array([3, 4])})
    x = np.arange(12, dtype=np.float32).reshape(2, 6)
    (y,) = compiled.run({"x": x})
    np.testing.assert_array_equal(y, (2 * x).reshape(3, 4))


def test_shape_arithmetic_folds_to_constant_pads():
    compiled = edgetune.compile(pad_from_shape_arithmetic(), "host", validate=True, input_shapes={"x": (2, 3)})
    assert compiled.signature.outputs[0].shape == (3, 4)  # one row before, one column before (pads 1,1,0,0)


def _scan_model(opset: int = 16) -> onnx.ModelProto:
    """Scan with two states (running sum, running max) over a reversed input along axis 1, a scan output
    stacked along axis 1 in reverse, and an outer-scope initializer used inside the body."""
    from onnx import TensorProto, helper, numpy_helper

    f = TensorProto.FLOAT
    body = helper.make_graph(
        [helper.make_node("Add", ["sum_in", "x_t"], ["sum_out"]),
         helper.make_node("Max", ["max_in", "x_t"], ["max_out"]),
         helper.make_node("Mul", ["sum_out", "scale"], ["y_t"])],
        "body",
        [helper.make_tensor_value_info(n, f, [2]) for n in ("sum_in", "max_in", "x_t")],
        [helper.make_tensor_value_info(n, f, [2]) for n in ("sum_out", "max_out", "y_t")])
    scan = helper.make_node("Scan", ["sum0", "max0", "x"], ["sum", "max", "ys"], body=body, num_scan_inputs=1,
                            scan_input_axes=[1], scan_input_directions=[1], scan_output_axes=[-1],
                            scan_output_directions=[1])
    graph = helper.make_graph(
        [scan], "scan",
        [helper.make_tensor_value_info("sum0", f, [2]), helper.make_tensor_value_info("max0", f, [2]),
         helper.make_tensor_value_info("x", f, [2, 5])],
        [helper.make_tensor_value_info("sum", f, [2]), helper.make_tensor_value_info("max", f, [2]),
         helper.make_tensor_value_info("ys", f, [2, 5])],
        initializer=[numpy_helper.from_array(np.array([0.5, 2.0], dtype=np.float32), "scale")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def test_scan_is_unrolled_and_matches_onnxruntime():
    """Each iteration a copy of the body on the previous state and its own slice; outputs stacked."""
    model = _scan_model()
    assert "Scan" not in str(import_model(load_model(model)).mod["main"])
    compiled = edgetune.compile(model)
    assert compiled.validation.passed, compiled.validation.summary()



@pytest.mark.parametrize("op, attrs", [
    ("LSTM", dict(direction="bidirectional", clip=2.0)),
    ("GRU", dict(direction="reverse", linear_before_reset=1)),
    ("LSTM", dict(direction="reverse")),
    ("RNN", dict(activations=["LeakyRelu"], activation_alpha=[0.2])),
])
def test_recurrent_layers_match_onnxruntime(op, attrs):
    """What ONNX's own cases leave out: sequences of different lengths (`sequence_lens`) in both directions,
    clip, GRU's linear_before_reset, a parameterised activation (onnxruntime has no batch-major layout: ONNX's
    cases check that one against ONNX's reference)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    gates = {"RNN": 1, "GRU": 3, "LSTM": 4}[op]
    directions = 2 if attrs.get("direction") == "bidirectional" else 1
    steps, batch, size, hidden = 4, 3, 5, 6
    weights = {
        "W": rng.normal(0, 0.5, (directions, gates * hidden, size)),
        "R": rng.normal(0, 0.5, (directions, gates * hidden, hidden)),
        "B": rng.normal(0, 0.2, (directions, 2 * gates * hidden)),
        "lens": np.array([4, 1, 3], dtype=np.int32),
    }
    inits = [numpy_helper.from_array(v if v.dtype == np.int32 else v.astype(np.float32), k)
             for k, v in weights.items()]
    x_shape, y_shape, h_shape = [steps, batch, size], [steps, directions, batch, hidden], [directions, batch, hidden]
    outputs = ["Y", "Y_h"]
    node = helper.make_node(op, ["X", "W", "R", "B", "lens"], outputs,
                            hidden_size=hidden, **attrs)
    graph = helper.make_graph([node], "recurrent", [helper.make_tensor_value_info("X", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, y_shape),
                               helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, h_shape)],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    compiled = edgetune.compile(model)
    assert compiled.validation.passed, compiled.validation.summary()


@pytest.mark.parametrize("n", [1, 3])
def test_det_in_closed_form_matches_onnxruntime(n):
    """ONNX's own Det cases are 2x2 only."""
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Det", ["x"], ["y"])], "det",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, n, n])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    compiled = edgetune.compile(model)
    assert compiled.validation.passed, compiled.validation.summary()
    with pytest.raises(UserError, match="up to 3x3"):
        model.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 4
        model.graph.input[0].type.tensor_type.shape.dim[2].dim_value = 4
        edgetune.compile(model)


def test_model_with_external_weight_data(tmp_path):
    model = conv_net(channels=32)
    path = tmp_path / "net.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, location="net.weights", size_threshold=0)
    assert (tmp_path / "net.weights").stat().st_size > 0 and path.stat().st_size < 2048
    x = np.random.default_rng(0).normal(size=(1, 3, 16, 16)).astype(np.float32)
    compiled = edgetune.compile(str(path), "host", inputs={"x": x})  # validated against onnxruntime
    assert compiled.validation.passed
    (tmp_path / "net.weights").rename(tmp_path / "moved.weights")
    with pytest.raises(UserError, match="cannot read its external weight data.*keep the data files next"):
        load_model(path)
