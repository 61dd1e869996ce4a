"""The default CPU schedules: each rule checked against onnxruntime on the shapes that stress it."""

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgetune
from edgetune.passes.layout import channel_block_for
from edgetune.targets.cpu_schedule import register_tile, vector_lanes, vector_registers
from edgetune.targets.host import HostTarget

RNG = np.random.default_rng(0)


def _model(nodes, inputs, outputs, inits):
    graph = helper.make_graph(nodes, "g", inputs, outputs,
                              initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _x(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def conv_block(n, cin, cout, size, k, stride, pad, group=1, residual=False, act="Clip", bn=True):
    """conv [-> batch-norm] -> relu6 (Clip) or ReLU [-> + residual], as exporters write it."""
    out_size = (size + 2 * pad - k) // stride + 1
    inits = {
        "w": RNG.normal(0, 0.2, (cout, cin // group, k, k)).astype(np.float32),
        "b": RNG.normal(0, 0.1, cout).astype(np.float32),
        "scale": RNG.uniform(0.5, 1.5, cout).astype(np.float32),
        "shift": RNG.normal(0, 0.1, cout).astype(np.float32),
        "mean": RNG.normal(0, 0.1, cout).astype(np.float32),
        "var": RNG.uniform(0.5, 1.5, cout).astype(np.float32),
        "lo": np.array(0, np.float32), "hi": np.array(6, np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], strides=[stride] * 2, pads=[pad] * 4, group=group),
        helper.make_node("BatchNormalization", ["c", "scale", "shift", "mean", "var"], ["bn"]) if bn else
        helper.make_node("Identity", ["c"], ["bn"]),
        helper.make_node(act, ["bn", "lo", "hi"] if act == "Clip" else ["bn"], ["y" if not residual else "r"]),
    ]
    inputs = [_x("x", [n, cin, size, size])]
    if residual:
        nodes.append(helper.make_node("Add", ["r", "skip"], ["y"]))
        inputs.append(_x("skip", [n, cout, out_size, out_size]))
    return _model(nodes, inputs, [_x("y", [n, cout, out_size, out_size])], inits)


def _compile(model, **options):
    compiled = edgetune.compile(model, **options)
    assert compiled.validation.passed, compiled.validation.summary()
    return compiled, compiled.metadata["schedules"]


@pytest.mark.parametrize("n, cin, cout, size, k, stride, pad, group", [
    (1, 3, 16, 32, 3, 1, 1, 1),     # 3x3 same padding, width a multiple of the vector
    (1, 8, 24, 13, 3, 1, 1, 1),     # odd width (13), oc not a multiple of the oc tile
    (1, 16, 32, 14, 1, 1, 0, 1),    # 1x1 (unit kernel loops, no padding stage)
    (1, 8, 16, 15, 3, 2, 1, 1),     # stride 2
    (2, 4, 8, 9, 5, 1, 2, 1),       # batch 2, 5x5
    (1, 16, 16, 10, 3, 1, 1, 16),   # depthwise
    (1, 16, 32, 8, 3, 1, 1, 4),     # grouped
    (1, 3, 8, 7, 7, 2, 3, 1),       # 7x7 stride-2 stem on a tiny image
    (1, 32, 32, 7, 3, 1, 1, 1),     # blocked layout on AVX-512/AVX2: 7 wide (ResNet's last stage; AVX2: 4 + 3)
    (1, 16, 32, 13, 1, 1, 0, 1),    # blocked 1x1, 13 wide: uneven tiles (AVX2: 5 + 5 + 3, AVX-512: 7 + 6)
    (1, 16, 32, 27, 1, 1, 0, 1),    # blocked 1x1, 27 wide: AVX2 spans of 9 (5 + 4)
    (1, 16, 32, 15, 3, 2, 1, 1),    # blocked, stride 2, odd width
    (2, 16, 16, 9, 1, 1, 0, 1),     # blocked 1x1, batch 2
    (1, 32, 64, 14, 3, 1, 1, 1),    # blocked, 4 output blocks: a tile of 7 pixels x 2 blocks on AVX-512
    (2, 32, 48, 6, 3, 2, 1, 1),     # blocked, batch 2, stride 2, 3 output blocks (odd: one-block tile)
])
def test_conv2d_rule(n, cin, cout, size, k, stride, pad, group):
    _, schedules = _compile(conv_block(n, cin, cout, size, k, stride, pad, group), winograd=False)
    conv_kernels = {name: rule for name, rule in schedules["kernels"].items() if "conv2d" in name}
    block = HostTarget().channel_block()
    blocked = group == 1 and channel_block_for(cout, block) and (channel_block_for(cin, block) or cin < block)
    assert conv_kernels and set(conv_kernels.values()) == {"Conv2dNCHWc" if blocked else "Conv2dNCHW"}, schedules
    assert schedules["unscheduled"] == []


def test_conv2d_with_residual_epilogue_is_one_kernel():
    compiled, schedules = _compile(conv_block(1, 6, 6, 16, 3, 1, 1, residual=True, act="Relu", bn=False))
    kernels = [k for k in compiled.profile(repeat=2).kernels if k.kind == "kernel"]
    assert len(kernels) == 1 and "add" in kernels[0].name, [k.name for k in kernels]
    assert schedules["by_rule"] == {"Conv2dNCHW": 1}


@pytest.mark.parametrize("m, k, n, trans_b", [(1, 256, 100, 0), (8, 64, 48, 1), (5, 33, 17, 0)])
def test_dense_rule(m, k, n, trans_b):
    inits = {"w": RNG.normal(0, 0.1, (n, k) if trans_b else (k, n)).astype(np.float32),
             "b": RNG.normal(0, 0.1, n).astype(np.float32)}
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["g"], transB=trans_b), helper.make_node("Relu", ["g"], ["y"])]
    _, schedules = _compile(_model(nodes, [_x("x", [m, k])], [_x("y", [m, n])], inits))
    assert schedules["unscheduled"] == []
    dense = [rule for name, rule in schedules["kernels"].items() if "matmul" in name]
    assert dense and set(dense) <= {"Matmul", "GEMV"}, schedules


def test_batch_matmul_softmax_pooling_and_elementwise():
    inits = {"w": RNG.normal(0, 0.3, (2, 16, 12)).astype(np.float32)}
    nodes = [
        helper.make_node("MatMul", ["a", "w"], ["mm"]),                   # batch matmul [2, 8, 12]
        helper.make_node("Softmax", ["mm"], ["sm"], axis=-1),
        helper.make_node("Sigmoid", ["sm"], ["sg"]),
        helper.make_node("Mul", ["sm", "sg"], ["y1"]),                    # SiLU-like elementwise chain
        helper.make_node("MaxPool", ["img"], ["mp"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("AveragePool", ["mp"], ["ap"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["ap"], ["y2"]),
        helper.make_node("ReduceSum", ["img", "axes"], ["y3"], keepdims=0),
    ]
    inits["axes"] = np.array([1], np.int64)
    model = _model(nodes, [_x("a", [2, 8, 16]), _x("img", [1, 6, 17, 17])],
                   [_x("y1", [2, 8, 12]), _x("y2", [1, 6, 1, 1]), _x("y3", [1, 17, 17])], inits)
    _, schedules = _compile(model)
    assert schedules["unscheduled"] == [], schedules


@pytest.mark.parametrize("width, chunks, registers, tile", [
    (56, 4, 32, (8, 2)), (28, 8, 32, (7, 2)), (7, 32, 32, (7, 2)), (27, 8, 32, (9, 2)), (55, 4, 32, (5, 2)),
    (56, 63, 32, (14, 1)),  # an odd number of blocks (SqueezeNet's 1008 channels)
    (56, 4, 16, (4, 2)), (28, 6, 16, (4, 3)),  # AVX2: accumulators, weights and the broadcast in 16 registers
    (13, 125, 16, (13, 1)),  # SqueezeNet's classifier: 5 blocks would leave room for 1 pixel
    (16, 4, 16, (4, 2)),  # not 6 + 6 + 4: at most 10 accumulators in an uneven row on AVX2
])
def test_register_tile_fits_the_registers(width, chunks, registers, tile):
    assert register_tile(width, chunks, registers) == (*tile, tile[0])


@pytest.mark.parametrize("width, chunks, registers, tile", [
    (7, 32, 16, (4, 2, 7)), (14, 32, 16, (5, 2, 14)), (13, 16, 16, (5, 2, 13)),  # 4 + 3, 5 + 5 + 4, 5 + 5 + 3
    (13, 24, 16, (5, 2, 13)),  # not 4 + 4 + 4 + 1 pixels x 3 blocks: the last tile would be one pixel
    (49, 32, 16, (4, 2, 7)),  # 7 spans of 4 + 3 (a Winograd GEMM over 7 x 7 tiles)
    (27, 8, 16, (5, 2, 9)),  # 3 spans of 5 + 4, not 9 tiles of 3
    (13, 16, 32, (7, 2, 13)),  # AVX-512, where 13 x 2 spills: 7 + 6
])
def test_uneven_register_tiles_cover_the_row_in_spans(width, chunks, registers, tile):
    assert register_tile(width, chunks, registers) == tile
    exact = register_tile(width, chunks, registers, uneven=False)
    assert exact.span == exact.pixels  # a tuning space's tiles divide the row


def test_vector_lanes_follow_the_target():
    lanes = vector_lanes(HostTarget().tvm_target())
    assert lanes in (4, 8, 16)  # SSE/NEON, AVX2, AVX-512 float32 lanes


def test_thread_pool_size_is_fixed_per_process():
    from edgetune.errors import UserError
    from edgetune.targets.host import set_threads

    size = set_threads()
    assert size >= 1 and set_threads(size) == size
    with pytest.raises(UserError, match="cannot be resized; measure .* in a fresh process"):
        set_threads(size + 1)


def test_tuning_space_samples_the_conv_tiles_and_every_sample_computes_the_same():
    """The blocked conv rule as a tuning space: its traced schedule starts at the default tile, a trace replayed
    without decisions samples other tiles (MetaSchedule's replay), and each sample computes what the default
    schedule computes."""
    import tvm
    from tvm import s_tir
    from tvm.s_tir import meta_schedule as ms

    from edgetune.api import run_pipeline
    from edgetune.autotune import extract_tasks
    from edgetune.targets.cpu_schedule import tuning_space

    host = HostTarget()
    target = host.tvm_target()
    mod = run_pipeline(conv_block(1, 32, 64, 12, 1, 1, 0, bn=False)).mod
    (task,) = [t for t in extract_tasks(mod, target) if "conv2d_nchwc" in t.task_name]
    kernel = task.dispatched[0]
    sample = tuning_space(kernel, target)
    assert sample is not None
    space = sample(s_tir.Schedule(kernel))
    decisions = [[int(v) for v in d] for d in space.trace.decisions.values()]
    lanes = vector_lanes(target)
    pixels, blocks, _ = register_tile(12, 64 // lanes, vector_registers(target), uneven=False)
    assert [12 // pixels, pixels] in decisions and [64 // lanes // blocks, blocks] in decisions

    args = [np.random.default_rng(1).uniform(-1, 1, [int(s) for s in a.shape]).astype(a.dtype)
            for a in ms.arg_info.ArgInfo.from_prim_func(kernel["main"])]

    def run(scheduled: tvm.IRModule) -> np.ndarray:
        tensors = [tvm.runtime.tensor(a) for a in args]
        tvm.build(scheduled, target=target)["main"](*tensors)
        return tensors[-1].numpy()

    expected = run(host.schedule(kernel)[0])
    tiles = set()
    for seed in range(1, 9):
        sch = s_tir.Schedule(kernel, seed=seed)
        s_tir.Trace(space.trace.insts, {}).apply_to_schedule(sch, remove_postproc=True)
        tiles.add(str([[int(v) for v in d] for d in sch.trace.decisions.values()]))
        np.testing.assert_allclose(run(sch.mod), expected, rtol=1e-5, atol=1e-5)
    assert len(tiles) > 1
