"""float8/float4/int4/int2 tensors: edgetune's conversions bit-exact against ONNX's reference implementation."""

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import edgetune
from edgetune.errors import UserError
from edgetune.frontend.narrow_types import lower_narrow_types

pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered in cast")  # the reference's NaN casts

FLOATS = [TensorProto.FLOAT8E4M3FN, TensorProto.FLOAT8E4M3FNUZ, TensorProto.FLOAT8E5M2,
          TensorProto.FLOAT8E5M2FNUZ, TensorProto.FLOAT4E2M1]
INTS = [TensorProto.INT4, TensorProto.UINT4, TensorProto.INT2, TensorProto.UINT2]


def model(nodes, inputs, outputs, initializers=(), check=True):
    graph = helper.make_graph(nodes, "narrow", inputs, outputs, list(initializers))
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 25)])
    if check:
        onnx.checker.check_model(proto)
    return proto


def tensor(name, elem_type, shape):
    return helper.make_tensor_value_info(name, elem_type, shape)


def run_both(proto, feed):
    compiled = edgetune.compile(proto, "host", validate=False)
    return compiled.run(feed), ReferenceEvaluator(proto).run(None, feed)


def assert_same_codes(actual, expected):
    """Bit-exact, except that any NaN code matches any other (float4 has no NaN: ml_dtypes maps it to +-0)."""
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    nan = np.isnan(expected.astype(np.float32))
    assert np.isnan(actual.astype(np.float32))[nan].all()
    mismatched = np.flatnonzero((actual.view(np.uint8) != expected.view(np.uint8)) & ~nan)
    assert mismatched.size == 0, f"{mismatched.size} codes differ, e.g. at {mismatched[:5]}"


def probe_values(dtype=np.float32) -> np.ndarray:
    """Every float16 value (each float8/float4 midpoint, tie and overflow boundary is one), plus float32
    values between them, beyond float16's range and the specials."""
    halves = np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(dtype)
    rng = np.random.default_rng(0)
    between = (rng.uniform(-1, 1, 4096) * 2.0 ** rng.integers(-30, 30, 4096)).astype(dtype)
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e30, -1e30, 3e38, 1e-40], dtype)
    return np.concatenate([halves, between, specials])


def test_float_to_narrow_floats_round_and_saturate_as_onnx():
    x = probe_values()
    nodes, outputs = [], []
    for to in FLOATS:
        for saturate in (0, 1):
            name = f"{TensorProto.DataType.Name(to)}_{saturate}"
            nodes.append(helper.make_node("Cast", ["x"], [name], to=to, saturate=saturate))
            outputs.append(tensor(name, to, [x.size]))
    for mode in ("up", "down", "nearest"):
        nodes.append(helper.make_node("Cast", ["x"], [f"e8m0_{mode}"], to=TensorProto.FLOAT8E8M0, round_mode=mode))
        outputs.append(tensor(f"e8m0_{mode}", TensorProto.FLOAT8E8M0, [x.size]))
    actual, expected = run_both(model(nodes, [tensor("x", TensorProto.FLOAT, [x.size])], outputs), {"x": x})
    for a, e in zip(actual, expected):
        assert_same_codes(a, e)


def test_float64_inputs_round_as_the_reference():
    # float8: through float32, as ml_dtypes does (just past a tie, float32 lands on the tie: 1.0, not 1.125);
    # narrow integers: truncated in float64 (7.9999999999 is 7, not float32's 8).
    x = np.array([1.0625 + 2.0 ** -40, -(1.0625 + 2.0 ** -40), 448.0 + 15.999, 7.9999999999, 2.0 ** 31 + 5], np.float64)
    proto = model([helper.make_node("Cast", ["x"], ["f8"], to=TensorProto.FLOAT8E4M3FN),
                   helper.make_node("Cast", ["x"], ["i4"], to=TensorProto.INT4)],
                  [tensor("x", TensorProto.DOUBLE, [5])],
                  [tensor("f8", TensorProto.FLOAT8E4M3FN, [5]), tensor("i4", TensorProto.INT4, [5])])
    (f8, i4), (f8_ref, i4_ref) = run_both(proto, {"x": x})
    assert_same_codes(f8, f8_ref)
    assert_same_codes(i4, i4_ref)
    assert i4.astype(int).tolist() == [1, -1, -1, 7, 0]


def test_every_narrow_float_code_decodes_exactly():
    nodes, inputs, outputs = [], [], []
    feed = {}
    for source in [*FLOATS, TensorProto.FLOAT8E8M0]:
        name = TensorProto.DataType.Name(source)
        codes = 256 if source != TensorProto.FLOAT4E2M1 else 16
        feed[name] = np.arange(codes, dtype=np.uint8).view(helper.tensor_dtype_to_np_dtype(source))
        inputs.append(tensor(name, source, [codes]))
        for to in (TensorProto.FLOAT, TensorProto.FLOAT16):
            nodes.append(helper.make_node("Cast", [name], [f"{name}_{to}"], to=to))
            outputs.append(tensor(f"{name}_{to}", to, [codes]))
    actual, expected = run_both(model(nodes, inputs, outputs), feed)
    for a, e in zip(actual, expected):
        np.testing.assert_array_equal(a, e)
        assert a.dtype == e.dtype


def test_casts_to_narrow_integers_truncate_and_wrap():
    x = np.concatenate([probe_values(), np.linspace(-40, 40, 321, dtype=np.float32)])
    ints = np.arange(-300, 300, dtype=np.int32)
    nodes, outputs = [], []
    for to in INTS:
        name = TensorProto.DataType.Name(to)
        nodes += [helper.make_node("Cast", ["x"], [f"f_{name}"], to=to),
                  helper.make_node("Cast", ["i"], [f"i_{name}"], to=to),
                  helper.make_node("Cast", [f"i_{name}"], [f"back_{name}"], to=TensorProto.FLOAT)]
        outputs += [tensor(f"f_{name}", to, [x.size]), tensor(f"i_{name}", to, [ints.size]),
                    tensor(f"back_{name}", TensorProto.FLOAT, [ints.size])]
    proto = model(nodes, [tensor("x", TensorProto.FLOAT, [x.size]), tensor("i", TensorProto.INT32, [ints.size])],
                  outputs)
    actual, expected = run_both(proto, {"x": x, "i": ints})
    for a, e in zip(actual, expected):
        assert a.dtype == e.dtype
        np.testing.assert_array_equal(a.astype(np.float32), e.astype(np.float32))


@pytest.mark.parametrize("narrow", [TensorProto.FLOAT8E4M3FN, TensorProto.FLOAT8E5M2, TensorProto.INT4,
                                    TensorProto.UINT4])
def test_per_axis_quantize_and_dequantize(narrow):
    rng = np.random.default_rng(1)
    x = rng.normal(0, 20, (2, 3, 4)).astype(np.float32)
    scale = np.array([0.5, 2.0, 3.0], np.float32)
    zero_point = np.array([1, -2, 3] if narrow == TensorProto.INT4 else [0, 5, 9] if narrow == TensorProto.UINT4
                          else [0, 0, 0], np.float32).astype(helper.tensor_dtype_to_np_dtype(narrow))
    zp = onnx.numpy_helper.from_array(zero_point, "zp")
    proto = model([helper.make_node("QuantizeLinear", ["x", "scale", "zp"], ["q"], axis=1),
                   helper.make_node("DequantizeLinear", ["q", "scale", "zp"], ["y"], axis=1)],
                  [tensor("x", TensorProto.FLOAT, [2, 3, 4])],
                  [tensor("q", narrow, [2, 3, 4]), tensor("y", TensorProto.FLOAT, [2, 3, 4])],
                  [onnx.numpy_helper.from_array(scale, "scale"), zp])
    (q, y), (q_ref, y_ref) = run_both(proto, {"x": x})
    assert_same_codes(q, q_ref)
    np.testing.assert_array_equal(y, y_ref)


def test_narrow_inputs_and_outputs_at_the_boundary():
    proto = model([helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0]),
                   helper.make_node("Cast", ["t"], ["y"], to=TensorProto.INT4)],
                  [tensor("x", TensorProto.FLOAT8E5M2, [2, 3])], [tensor("y", TensorProto.INT4, [3, 2])])
    compiled = edgetune.compile(proto, "host", validate=False)
    assert [s.dtype for s in (*compiled.signature.inputs, *compiled.signature.outputs)] == ["float8_e5m2", "int4"]
    x = np.array([[1.5, -3.0, 7.0], [12.0, -0.5, 40.0]], np.float32).astype(ml_dtypes.float8_e5m2)
    (y,) = compiled.run({"x": x})
    assert y.dtype == ml_dtypes.int4 and y.astype(int).tolist() == [[1, -4], [-3, 0], [7, -8]]
    with pytest.raises(UserError, match="float8_e5m2"):
        compiled.run({"x": x.astype(np.float32)})
    assert compiled.profile(repeat=3).stats["mean_ms"] > 0  # random float8 inputs


def test_arithmetic_on_narrow_tensors_is_refused():
    # ONNX's checker (run when a model is loaded) rejects this model too; the rewrite must not rely on it.
    proto = model([helper.make_node("Add", ["x", "x"], ["y"])],
                  [tensor("x", TensorProto.FLOAT8E4M3FN, [4])], [tensor("y", TensorProto.FLOAT8E4M3FN, [4])],
                  check=False)
    with pytest.raises(UserError, match="Add .* computes on FLOAT8E4M3FN tensors"):
        lower_narrow_types(proto)


def test_float8_outputs_validate_against_onnxruntime():
    # onnxruntime returns float8 outputs as uint8 bit patterns; validation compares them as float8 values.
    # (Saturating: without saturation onnxruntime 1.32 turns -491.5 into -448 where ONNX's reference gives NaN.)
    proto = model([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT8E4M3FN)],
                  [tensor("x", TensorProto.FLOAT, [256])], [tensor("y", TensorProto.FLOAT8E4M3FN, [256])])
    x = np.random.default_rng(2).normal(0, 300, 256).astype(np.float32)
    compiled = edgetune.compile(proto, "host", inputs={"x": x})
    assert compiled.validation.passed and (np.abs(compiled.run({"x": x})[0].astype(np.float32)) == 448).any()
