"""Int8 post-training quantization: parameters, calibration methods, the integer pipeline against
onnxruntime running the same QDQ model, accuracy on real data, and the command line."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgetune
from edgetune.passes.quantize import (METHODS, RangeObserver, activation_quant, fixed_point_multiplier,
                                      requantize_reference, weight_quant)

ROOT = Path(__file__).resolve().parent.parent
EDGETUNE = str(Path(sys.executable).parent / "edgetune")


def test_fixed_point_multiplier_is_accurate_and_rounds_like_the_kernels():
    real = np.array([0.49, 0.1234567, 3.3e-5, 2.0 ** -12, 1e-9])
    multiplier, shift = fixed_point_multiplier(real)
    assert np.all(multiplier < 2 ** 31) and np.all(shift >= 1)
    np.testing.assert_allclose(multiplier * 2.0 ** -shift.astype(float), real, rtol=2.0 ** -30)
    acc = np.array([-1000, -3, 0, 7, 123456789, -(2 ** 31)], np.int64)
    got = requantize_reference(acc[:, None], multiplier[None, :3], shift[None, :3], 5, 0, 255)
    want = np.clip(np.floor(acc[:, None] * real[None, :3] + 0.5) + 5, 0, 255)
    assert np.abs(got - want).max() <= 1  # fixed point rounds within one level of exact real arithmetic
    pow_m, pow_s = fixed_point_multiplier(np.array([2.0 ** -7, 2.0 ** -20]), power_of_two=True)
    assert pow_m.tolist() == [1, 1] and pow_s.tolist() == [7, 20]
    with pytest.raises(ValueError, match="outside"):
        fixed_point_multiplier(np.array([0.7]))


def test_activation_and_weight_parameters():
    relu = activation_quant(0.0, 6.0)
    assert relu.zero_point == 0 and relu.scale == pytest.approx(6.0 / 255)
    signed = activation_quant(-1.0, 3.0)
    assert signed.dequantize(signed.quantize(np.array([0.0])))[0] == 0.0  # real zero is exact (padding)
    assert activation_quant(-2.0, 1.0, "int8").zero_point == 0
    assert np.log2(activation_quant(0.0, 5.0, power_of_two=True).scale).is_integer()
    w = np.random.default_rng(0).normal(size=(4, 3, 3, 3))
    q, scale = weight_quant(w, axis=0)
    assert q.dtype == np.int8 and np.abs(q).max() == 127 and scale.shape == (4,)
    np.testing.assert_allclose(q * scale[:, None, None, None], w, atol=scale.max() / 2 + 1e-12)


def test_range_observer_methods_clip_outliers_and_widen_exactly():
    rng = np.random.default_rng(0)
    observer = RangeObserver()
    bulk = rng.normal(size=100_000).astype(np.float32)
    observer.update(bulk[:50_000])
    observer.update(np.concatenate([bulk[50_000:], [40.0]]))  # forces the histogram to widen
    assert observer.hist.sum() == 100_001
    assert observer.range("minmax") == (pytest.approx(float(bulk.min())), 40.0)
    for method in ("percentile", "entropy"):
        lo, hi = observer.range(method)
        assert float(bulk.min()) - 1e-6 <= lo < 0 < hi < 10, (method, lo, hi)  # the lone outlier is clipped
    lo, hi = observer.range("mse")  # a 1e-5 mass at 40 sigma costs less kept than clipped: kept
    assert float(bulk.min()) - 1e-6 <= lo < 0 < hi <= 40.0
    skewed = RangeObserver()
    skewed.update(np.concatenate([rng.normal(size=10_000), rng.normal(size=200) * 0.1 + 30]).astype(np.float32))
    assert skewed.range("mse")[1] > 25 > skewed.range("percentile", percentile=97)[1]  # mass at 30 is kept
    with pytest.raises(ValueError, match="non-finite"):
        RangeObserver().update(np.array([np.nan]))


def _conv_chain(rng) -> onnx.ModelProto:
    """x -> conv(8->16) -> ReLU -> [y, output 1] -> conv(16->16) -> z (output 2): an integer chain."""
    w1 = rng.normal(scale=0.3, size=(16, 8, 3, 3)).astype(np.float32)
    w2 = rng.normal(scale=0.2, size=(16, 16, 1, 1)).astype(np.float32)
    b1, b2 = rng.normal(size=16).astype(np.float32), rng.normal(size=16).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["y"]),
             helper.make_node("Conv", ["y", "w2", "b2"], ["z"])]
    graph = helper.make_graph(
        nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 10, 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 10, 10]),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 16, 10, 10])],
        [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (w2, "w2"), (b1, "b1"), (b2, "b2"))])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _saturating_onnxruntime() -> bool:
    """onnxruntime's uint8 x int8 kernels add product pairs in int16 with saturation on x86 CPUs without VNNI."""
    from edgetune.targets.host import cpu_flags

    flags = cpu_flags()
    return flags is not None and "avx2" in flags and not {"avx512_vnni", "avx_vnni"} & flags


def _qdq(model: onnx.ModelProto, layers: list[dict]) -> onnx.ModelProto:
    """The same model as a QDQ graph with edgetune's scales: what onnxruntime's quantizer would write."""
    weights = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    init, nodes = [], []
    for tensor, layer, w_name in (("x", layers[0], "w1"), ("y", layers[1], "w2")):
        init += [numpy_helper.from_array(np.array(layer["input_scale"], np.float32), f"{tensor}_s"),
                 numpy_helper.from_array(np.array(layer["input_zero_point"], np.uint8), f"{tensor}_z")]
        nodes += [helper.make_node("QuantizeLinear", [tensor, f"{tensor}_s", f"{tensor}_z"], [f"{tensor}_q"]),
                  helper.make_node("DequantizeLinear", [f"{tensor}_q", f"{tensor}_s", f"{tensor}_z"], [f"{tensor}_d"])]
        q, scale = weight_quant(weights[w_name], axis=0)
        init += [numpy_helper.from_array(q, f"{w_name}_q"), numpy_helper.from_array(scale.astype(np.float32),
                                                                                    f"{w_name}_s")]
        nodes.append(helper.make_node("DequantizeLinear", [f"{w_name}_q", f"{w_name}_s"], [f"{w_name}_d"], axis=0))
    init += [numpy_helper.from_array(weights[b], b) for b in ("b1", "b2")]
    nodes += [helper.make_node("Conv", ["x_d", "w1_d", "b1"], ["c1"], pads=[1, 1, 1, 1]),
              helper.make_node("Relu", ["c1"], ["y"]),
              helper.make_node("Conv", ["y_d", "w2_d", "b2"], ["z"])]
    graph = helper.make_graph(nodes, "qdq", list(model.graph.input), list(model.graph.output), init)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_integer_pipeline_matches_onnxruntime_on_the_same_qdq_model(tmp_path):
    import onnxruntime as ort

    rng = np.random.default_rng(1)
    model = _conv_chain(rng)
    samples = rng.normal(size=(12, 1, 8, 10, 10)).astype(np.float32)
    samples[:, :, :, 0, 0] += 2.5  # an asymmetric input range: a non-zero zero point, padded explicitly
    np.savez(tmp_path / "calibration.npz", x=samples)
    compiled = edgetune.compile(model, "host", quantize="int8", calibration=tmp_path / "calibration.npz",
                                calibration_method="minmax")
    layers = compiled.metadata["quantization"]["layers"]
    assert [l["quantized"] for l in layers] == [True, True] and layers[0]["input_zero_point"] != 0
    assert any("int8" in k for k in compiled.metadata["schedules"]["kernels"])
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # exact QDQ arithmetic
    session = ort.InferenceSession(_qdq(model, layers).SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    y_step = layers[1]["input_scale"]
    weights = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    q2, s2 = weight_quant(weights["w2"], axis=0)
    w2, b2 = (q2 * s2[:, None, None, None]).astype(np.float64)[:, :, 0, 0], weights["b2"].astype(np.float64)
    for x in samples[-3:]:
        y, z = compiled.run([x])
        y_ref, z_ref = session.run(None, {"x": x})
        y_ref_q = np.clip(np.round(y_ref / y_step) + layers[1]["input_zero_point"], 0, 255)
        y_q = np.round(y / y_step) + layers[1]["input_zero_point"]
        assert np.abs(y_q - y_ref_q).max() <= 1  # the requantized tensor: within one step per element
        # the float output of the second (dequantizing) layer, from edgetune's own y (a y element one step off
        # moves z by a weight x the step, 7-bit steps being twice 8-bit ones): only its int32 bias rounding
        z_own = np.einsum("oi,nihw->nohw", w2, y.astype(np.float64)) + b2[None, :, None, None]
        np.testing.assert_allclose(z, z_own, atol=5e-3 * np.abs(z_ref).max())


@pytest.fixture(scope="module")
def digits_split(digits_model):
    sys.path.insert(0, str(ROOT / "examples" / "digits"))
    from train import load_data

    x_train, x_test, _, y_test = load_data()
    return digits_model, x_train, x_test, y_test


def _accuracy(compiled, x_test, y_test) -> float:
    """Top-1 accuracy in percent on the held-out split."""
    predictions = np.array([compiled.run([x[None]])[0].argmax() for x in x_test])
    return 100 * float(np.mean(predictions == y_test))


@pytest.fixture(scope="module")
def float_accuracy(digits_split):
    model, _, x_test, y_test = digits_split
    return _accuracy(edgetune.compile(model, "host"), x_test, y_test)


@pytest.mark.parametrize("method", METHODS)
def test_digits_accuracy_drop_within_half_a_point(digits_split, float_accuracy, method, tmp_path):
    model, x_train, x_test, y_test = digits_split
    np.savez(tmp_path / "calibration.npz", image=x_train[:200])
    int8 = edgetune.compile(model, "host", quantize="int8", calibration=tmp_path / "calibration.npz",
                            calibration_method=method)
    assert float_accuracy - _accuracy(int8, x_test, y_test) <= 0.5
    report = int8.metadata["quantization"]
    assert report["method"] == method and all(l["sqnr_db"] > 20 for l in report["layers"]), report
    assert sum(l["quantized"] for l in report["layers"]) == 3  # the 1-channel stem stays float


def test_max_accuracy_drop_keeps_the_worst_layers_float(digits_split, tmp_path):
    model, x_train, _, y_train_like = digits_split
    # a deliberately poor calibration set (one image): the accuracy check must push layers back to float
    np.savez(tmp_path / "calibration.npz", image=x_train[:40] * 0.05, labels=np.zeros(40, np.int64))
    compiled = edgetune.compile(model, "host", quantize="int8", calibration=tmp_path / "calibration.npz",
                                max_accuracy_drop=0.0, validate=False)
    report = compiled.metadata["quantization"]
    assert report["accuracy_measure"] == "top-1 accuracy" and report["holdout_samples"] == 8
    assert report["accuracy_drop"] <= 0.0 or not any(l["quantized"] for l in report["layers"])


def run(*args):
    return subprocess.run([EDGETUNE, *map(str, args)], capture_output=True, text=True, timeout=600)


def test_cli_quantize(digits_split, tmp_path):
    model, x_train, _, _ = digits_split
    np.savez(tmp_path / "calibration.npz", image=x_train[:30])
    ok = run("compile", model, "-o", tmp_path / "out", "--quantize", "int8", "--calibration",
             tmp_path / "calibration.npz", "--calibration-method", "mse")
    assert ok.returncode == 0, ok.stderr
    assert "SQNR" in ok.stdout and "int8 (mse" in ok.stdout and "conv2d_1" in ok.stdout
    for args, fragment in ((["--quantize", "int8"], "needs --calibration"),
                           (["--calibration", tmp_path / "calibration.npz"], "add --quantize int8"),
                           (["--quantize", "int8", "--calibration", tmp_path / "missing.npz"], "does not exist")):
        bad = run("compile", model, "-o", tmp_path / "bad", *args)
        assert bad.returncode == 2 and fragment in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
        assert not (tmp_path / "bad").exists()
    np.savez(tmp_path / "wrong.npz", image=np.zeros((3, 2, 8, 8), np.float32))
    bad = run("compile", model, "-o", tmp_path / "bad", "--quantize", "int8", "--calibration", tmp_path / "wrong.npz")
    assert bad.returncode == 2 and "expected [1, 1, 8, 8]" in bad.stderr, bad.stderr


@pytest.mark.parametrize("quant_format", ["QDQ", "QOperator"])
def test_prequantized_models_run_integer_kernels_with_their_own_scales(digits_split, quant_format, tmp_path):
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    model, x_train, x_test, y_test = digits_split

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.samples = iter(x_train[:64])

        def get_next(self):
            sample = next(self.samples, None)
            return None if sample is None else {"image": sample[None]}

    path = tmp_path / "digits_int8.onnx"
    # reduce_range (7-bit weights), as onnxruntime advises for x86 CPUs without VNNI: its uint8 x int8 kernels
    # there add product pairs in int16 with saturation, and would not be the exact reference edgetune is
    quantize_static(str(model), str(path), Reader(), quant_format=getattr(QuantFormat, quant_format),
                    per_channel=True, reduce_range=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8)
    compiled = edgetune.compile(path, "host")  # no --quantize: the model's own quantization is used
    layers = compiled.metadata["quantization"]["layers"]
    assert len(layers) == 3 and all(l["quantized"] for l in layers)
    assert sum("int8" in k for k in compiled.metadata["schedules"]["kernels"]) == 2
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    output_step = max(l.float_data[0] if l.float_data else numpy_helper.to_array(l).item()
                      for l in onnx.load(path).graph.initializer if l.name.startswith("logits") and "scale" in l.name)
    ours = np.stack([compiled.run([x[None]])[0][0] for x in x_test[:120]])
    reference = np.stack([session.run(None, {"image": x[None]})[0][0] for x in x_test[:120]])
    # within two output steps: edgetune requantizes with fixed-point multipliers, onnxruntime in float, and a
    # hidden activation one level apart (a near-tie rounded the other way) can move a logit past one step
    assert np.abs(ours - reference).max() <= 2 * output_step * 1.0001
    assert np.mean(ours.argmax(1) == y_test[:120]) >= np.mean(reference.argmax(1) == y_test[:120]) - 0.01


def test_conv_integer_and_qlinear_matmul_match_onnxruntime():
    import onnxruntime as ort

    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (1, 8, 6, 6)).astype(np.uint8)
    w = rng.integers(-128, 128, (4, 8, 3, 3)).astype(np.int8)
    a = rng.integers(0, 256, (5, 8)).astype(np.uint8)
    b = rng.integers(-128, 128, (8, 3)).astype(np.int8)
    const = lambda name, value: numpy_helper.from_array(np.asarray(value), name)  # noqa: E731
    nodes = [helper.make_node("ConvInteger", ["x", "w", "xz", "wz"], ["conv"], pads=[1, 1, 1, 1]),
             helper.make_node("QLinearMatMul", ["a", "as", "az", "b", "bs", "bz", "ys", "yz"], ["mm"])]
    graph = helper.make_graph(
        nodes, "q", [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 8, 6, 6]),
                     helper.make_tensor_value_info("a", TensorProto.UINT8, [5, 8])],
        [helper.make_tensor_value_info("conv", TensorProto.INT32, [1, 4, 6, 6]),
         helper.make_tensor_value_info("mm", TensorProto.UINT8, [5, 3])],
        [const("w", w), const("xz", np.uint8(17)), const("wz", np.int8(-3)), const("b", b),
         const("as", np.float32(0.02)), const("az", np.uint8(120)), const("bs", np.float32(0.01)),
         const("bz", np.int8(0)), const("ys", np.float32(0.05)), const("yz", np.uint8(128))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    compiled = edgetune.compile(model, "host", validate=False)
    conv, mm = compiled.run([x, a])
    conv_ref, mm_ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": x, "a": a})
    np.testing.assert_array_equal(conv, conv_ref)  # integer convolution: exact
    # QLinearMatMul against its definition: onnxruntime's uint8 x int8 kernels on x86 CPUs without VNNI add
    # product pairs in int16 with saturation (off by 15 levels here on one element)
    exact = np.clip(np.round(((a.astype(np.int64) - 120) @ b.astype(np.int64)) * (0.02 * 0.01 / 0.05)) + 128, 0, 255)
    assert np.abs(mm.astype(int) - exact).max() <= 1
    if not _saturating_onnxruntime():
        assert np.abs(mm.astype(int) - mm_ref.astype(int)).max() <= 1


@pytest.mark.parametrize("mcpu, instruction", [("haswell", "vpmaddubsw"), ("skylake-avx512", "vpmaddubsw"),
                                               ("nehalem", None)])
def test_x86_without_vnni_uses_7bit_activations_and_pmaddubsw(digits_split, float_accuracy, mcpu, instruction,
                                                              tmp_path):
    """Older x86 cores (built here, run here where this CPU has their instructions): 7-bit activations keep
    vpmaddubsw's int16 sums from saturating; without AVX the integer convolution is plain vector code."""
    from edgetune.targets.host import HostTarget, missing_instructions

    if missing_instructions(mcpu):
        pytest.skip(f"this CPU cannot run {mcpu} code (it lacks {', '.join(missing_instructions(mcpu))})")

    model, x_train, x_test, y_test = digits_split
    np.savez(tmp_path / "calibration.npz", image=x_train[:100])
    compiled = edgetune.compile(model, HostTarget(mcpu), quantize="int8", calibration=tmp_path / "calibration.npz")
    assert compiled.metadata["quantization"]["scheme"] == "uint7"
    assert compiled.metadata["schedules"]["by_rule"]["Conv2dNCHWcInt8"] == 2
    disassembly = subprocess.run(["objdump", "-d", str(compiled.library)], capture_output=True, text=True).stdout
    assert "vpdpbusd" not in disassembly
    if instruction:
        assert instruction in disassembly
    assert float_accuracy - _accuracy(compiled, x_test, y_test) <= 0.5
