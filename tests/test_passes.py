"""edgetune's own Relax passes: the rewritten structure, and the numerics against onnxruntime."""

from collections import Counter

import numpy as np
import pytest
import torch
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm import relax

import edgetune
from edgetune.frontend import import_model, load_model
from edgetune.passes import PassConfig, run_passes
from edgetune.passes.activations import ElementwiseActivations, FullRankConstants
from edgetune.passes.fold_numpy import NumpyFoldConstant
from edgetune.passes.fold_scale import FoldScaleIntoWeights
from edgetune.passes.layout import BlockedLayout
from edgetune.passes.pipeline import module_census
from edgetune.targets import get_target

RNG = np.random.default_rng(0)
BLOCK = get_target("host").channel_block()


def op_counts(mod: tvm.IRModule) -> Counter:
    return module_census(mod)[0]


def _conv_then_affine(reuse_intermediate: bool = False) -> tvm.IRModule:
    """conv2d, then (y - mean) / std * gamma + beta with per-channel constants, as BatchNorm decomposes."""
    w = RNG.normal(0, 0.3, (8, 4, 3, 3)).astype("float32")
    per_channel = [RNG.uniform(0.5, 1.5, (1, 8, 1, 1)).astype("float32") for _ in range(4)]
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([1, 4, 10, 10], "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(x, relax.const(w), padding=[1, 1, 1, 1]))
            y1 = bb.emit(relax.op.subtract(y, relax.const(per_channel[0])))
            y2 = bb.emit(relax.op.divide(y1, relax.const(per_channel[1])))
            y3 = bb.emit(relax.op.multiply(y2, relax.const(per_channel[2])))
            y4 = bb.emit(relax.op.add(relax.const(per_channel[3]), y3))
            out = bb.emit_output(relax.op.add(y4, y1) if reuse_intermediate else relax.op.nn.relu(y4))
        bb.emit_func_output(out)
    return bb.get()


def _run(mod: tvm.IRModule, x: np.ndarray) -> np.ndarray:
    exe = tvm.compile(relax.get_pipeline("zero")(mod), target="llvm")
    return relax.VirtualMachine(exe, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()


def test_fold_scale_leaves_one_bias_add_and_keeps_numerics():
    mod = _conv_then_affine()
    folded = FoldScaleIntoWeights()(mod)
    assert op_counts(folded) == Counter({"relax.nn.conv2d": 1, "relax.add": 1, "relax.nn.relu": 1})
    x = RNG.normal(0, 1, (1, 4, 10, 10)).astype("float32")
    np.testing.assert_allclose(_run(folded, x), _run(mod, x), rtol=1e-5, atol=1e-5)


def test_fold_scale_never_duplicates_a_conv():
    mod = _conv_then_affine(reuse_intermediate=True)  # y1 is used twice: the chain must stop before it
    folded = FoldScaleIntoWeights()(mod)
    assert op_counts(folded)["relax.nn.conv2d"] == 1
    x = RNG.normal(0, 1, (1, 4, 10, 10)).astype("float32")
    np.testing.assert_allclose(_run(folded, x), _run(mod, x), rtol=1e-5, atol=1e-5)


def _blocked_net(c: int):
    """conv -> BN -> relu -> maxpool -> conv (+ residual) -> concat with a 1x1 branch -> global pool -> dense."""
    inits = {
        "w1": RNG.normal(0, 0.2, (c, c, 3, 3)), "b1": RNG.normal(0, 0.1, c),
        "g": RNG.uniform(0.5, 1.5, c), "beta": RNG.normal(0, 0.1, c),
        "mean": RNG.normal(0, 0.1, c), "var": RNG.uniform(0.5, 1.5, c),
        "w2": RNG.normal(0, 0.1, (c, c, 3, 3)), "w3": RNG.normal(0, 0.2, (c, c, 1, 1)),
        "wd": RNG.normal(0, 0.2, (2 * c, 10)),
    }
    inits = {k: v.astype(np.float32) for k, v in inits.items()}
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "g", "beta", "mean", "var"], ["bn"]),
        helper.make_node("Relu", ["bn"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["p1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Sum", ["c2", "p1"], ["res"]),
        helper.make_node("Conv", ["p1", "w3"], ["c3"]),
        helper.make_node("Concat", ["res", "c3"], ["cat"], axis=1),
        helper.make_node("GlobalAveragePool", ["cat"], ["gp"]),
        helper.make_node("Flatten", ["gp"], ["f"]),
        helper.make_node("MatMul", ["f", "wd"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "blocked", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, 15, 15])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_blocked_layout_runs_end_to_end_with_transforms_only_at_the_boundary():
    model = _blocked_net(2 * BLOCK)
    imported = import_model(load_model(model))
    blocked = run_passes(imported.mod, PassConfig(channel_block=BLOCK), stop_after="FoldConstant.prepack").mod
    level1 = run_passes(imported.mod, PassConfig(opt_level=1, channel_block=BLOCK), stop_after="LegalizeOps")
    assert "BlockedLayout" not in [r.name for r in level1.records]  # the layout pass needs opt level 2
    counts = op_counts(blocked)
    assert counts["relax.nn.batch_norm"] == counts["relax.divide"] == 0, counts  # folded into the weights
    # in at the first conv, out before the flatten; the weights' transforms are on constants
    data_transforms = [c for c in _layout_transform_inputs(blocked) if not isinstance(c, tvm.ir.GenericConst)]
    assert len(data_transforms) == 2, counts
    compiled = edgetune.compile(model)
    assert compiled.validation.passed, compiled.validation.summary()
    rules = compiled.metadata["schedules"]["kernels"]
    assert sum(rule == "Conv2dNCHWc" for rule in rules.values()) == 3, rules
    assert "WindowReduction" in rules.values(), rules


def _layout_transform_inputs(mod: tvm.IRModule) -> list:
    found = []

    def visit(expr):
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name == "relax.layout_transform":
            found.append(expr.args[0])

    relax.analysis.post_order_visit(mod["main"].body, visit)
    return found


@pytest.mark.parametrize("channels", [BLOCK + 2, 3])  # neither a whole nor a half block
def test_convs_that_cannot_be_blocked_stay_nchw(channels):
    model = _blocked_net(channels)
    compiled = edgetune.compile(model)
    assert compiled.validation.passed, compiled.validation.summary()
    assert "Conv2dNCHWc" not in compiled.metadata["schedules"]["kernels"].values()


def _model(nodes, inputs: dict, outputs: dict, inits: dict, opset: int = 17):
    graph = helper.make_graph(
        nodes, "net", [helper.make_tensor_value_info(k, TensorProto.FLOAT, v) for k, v in inputs.items()],
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, v) for k, v in outputs.items()],
        initializer=[numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _kernel_names(compiled) -> list[str]:
    return [k.name for k in compiled.profile(repeat=2).kernels if k.kind == "kernel"]


def test_stem_conv_reads_the_nchw_input_in_its_own_kernel():
    """A 3-channel stem: no layout-transform kernel before it (its kernel reads NCHW), one after the model."""
    inits = {"w1": RNG.normal(0, 0.2, (2 * BLOCK, 3, 7, 7)), "w2": RNG.normal(0, 0.1, (BLOCK, 2 * BLOCK, 1, 1))}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[3, 3, 3, 3], strides=[2, 2]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["y"])]
    compiled = edgetune.compile(_model(nodes, {"x": [1, 3, 23, 23]}, {"y": [1, BLOCK, 12, 12]}, inits))
    assert compiled.validation.passed, compiled.validation.summary()
    kernels = _kernel_names(compiled)
    assert len(kernels) == 3 and "conv2d_nchwc" in kernels[0] and "layout_transform" in kernels[-1], kernels
    assert set(compiled.metadata["schedules"]["by_rule"]) == {"Conv2dNCHWc", "ParallelVectorize"}


def test_half_blocks_keep_narrow_branches_blocked():
    """Inception's 24-channel branches (not a whole block): carried in half blocks, so the branch and the
    concat after it need no layout transforms (they used to fall back to NCHW, with transforms around)."""
    half = BLOCK // 2
    inits = {"w1": RNG.normal(0, 0.2, (3 * half, 2 * BLOCK, 1, 1)), "w2": RNG.normal(0, 0.1, (BLOCK, 3 * half, 3, 3)),
             "w3": RNG.normal(0, 0.2, (BLOCK, 2 * BLOCK, 1, 1))}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["narrow"]),
             helper.make_node("Relu", ["narrow"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["x", "w3"], ["c3"]),
             helper.make_node("Concat", ["c2", "c3"], ["y"], axis=1)]
    model = _model(nodes, {"x": [1, 2 * BLOCK, 9, 9]}, {"y": [1, 2 * BLOCK, 9, 9]}, inits)
    blocked = run_passes(import_model(load_model(model)).mod, PassConfig(channel_block=BLOCK),
                         stop_after="FoldConstant.prepack").mod
    data_transforms = [c for c in _layout_transform_inputs(blocked) if not isinstance(c, tvm.ir.GenericConst)]
    assert len(data_transforms) == 2, blocked["main"]  # the model's input and output only
    assert f"NCHW{half}c" in str(blocked["main"])
    compiled = edgetune.compile(model)
    assert compiled.validation.passed, compiled.validation.summary()
    assert list(compiled.metadata["schedules"]["kernels"].values()).count("Conv2dNCHWc") == 3

def _classifier_head(out_channels: int, then_conv: bool = False):
    """conv (with bias) -> ReLU -> global average pooling, as SqueezeNet's 1000-class head; or a conv after."""
    inits = {"w": RNG.normal(0, 0.2, (out_channels, 2 * BLOCK, 1, 1)), "b": RNG.normal(0, 0.5, (out_channels,)),
             "w2": RNG.normal(0, 0.1, (BLOCK, out_channels, 1, 1))}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["y"]) if then_conv
             else helper.make_node("GlobalAveragePool", ["r"], ["y"])]
    output = [1, BLOCK, 6, 6] if then_conv else [1, out_channels, 1, 1]
    if not then_conv:
        del inits["w2"]
    return _model(nodes, {"x": [1, 2 * BLOCK, 6, 6]}, {"y": output}, inits)


def test_classifier_conv_is_padded_to_whole_blocks():
    """7.5 blocks of output channels (SqueezeNet's 1000 = 62.5 x 16): the conv runs in whole blocks (8), with
    zero weight rows; the real channels are sliced off after the pooling, and the numerics are unchanged."""
    channels = 8 * BLOCK - BLOCK // 2
    model = _classifier_head(channels)
    blocked = run_passes(import_model(load_model(model)).mod, PassConfig(channel_block=BLOCK),
                         stop_after="FoldConstant.prepack").mod
    main = str(blocked["main"])
    assert f"(1, 8, 6, 6, {BLOCK})" in main and f"NCHW{BLOCK // 2}c" not in main, main
    assert op_counts(blocked)["relax.strided_slice"] == 1
    compiled = edgetune.compile(model)
    assert compiled.validation.passed, compiled.validation.summary()
    assert "Conv2dNCHWc" in compiled.metadata["schedules"]["kernels"].values()


def test_classifier_conv_on_an_odd_number_of_blocks_is_padded_to_an_even_one():
    """9 whole blocks: padded to 10, so that the register tiles can hold two blocks (`register_tile`)."""
    model = _classifier_head(9 * BLOCK)
    blocked = run_passes(import_model(load_model(model)).mod, PassConfig(channel_block=BLOCK),
                         stop_after="FoldConstant.prepack").mod
    assert f"(1, 10, 6, 6, {BLOCK})" in str(blocked["main"]) and op_counts(blocked)["relax.strided_slice"] == 1
    compiled = edgetune.compile(model)
    assert compiled.validation.passed, compiled.validation.summary()


def test_channel_padding_stays_out_of_a_conv_to_conv_chain():
    """Sliced before another conv, padding would cost two layout transforms: the half-block layout stays."""
    model = _classifier_head(8 * BLOCK - BLOCK // 2, then_conv=True)
    blocked = run_passes(import_model(load_model(model)).mod, PassConfig(channel_block=BLOCK),
                         stop_after="FoldConstant.prepack").mod
    assert op_counts(blocked)["relax.strided_slice"] == 0
    assert f"NCHW{BLOCK // 2}c" in str(blocked["main"])



@pytest.mark.parametrize("size", [5, 3])
def test_local_response_norm_is_one_kernel_in_the_blocked_layout(size):
    inits = {"w": RNG.normal(0, 0.3, (2 * BLOCK, BLOCK, 3, 3))}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("LRN", ["r"], ["y"], size=size, alpha=0.02, beta=0.75, bias=1.5)]
    model = _model(nodes, {"x": [1, BLOCK, 8, 8]}, {"y": [1, 2 * BLOCK, 8, 8]}, inits)
    compiled = edgetune.compile(model)
    assert compiled.validation.passed, compiled.validation.summary()
    kernels = _kernel_names(compiled)
    assert sum("local_response_norm" in k for k in kernels) == 1 and "avg_pool3d" not in str(kernels), kernels
    assert len(kernels) == 3, kernels  # conv (the input's layout transform its prologue), LRN, output transform
    assert compiled.metadata["schedules"]["kernels"]["local_response_norm"] == "LocalResponseNorm"
    # without the blocked layout (CUDA) the same chain is one kernel in NCHW
    nchw = run_passes(import_model(load_model(model)).mod, PassConfig(channel_block=0), stop_after="LegalizeOps").mod
    names = [gvar.name_hint for gvar, _ in nchw.functions_items()]
    assert op_counts(nchw)["relax.call_tir"] == 3 and "local_response_norm" in names, names  # conv, ReLU, LRN


@pytest.mark.parametrize("kernel", [1, 3])  # 3x3: the prologue collapses into the padding stage
def test_pre_activation_prologue_joins_the_conv_kernel(kernel):
    """DenseNet's layer: concat -> BatchNorm -> ReLU -> conv. The BatchNorm + ReLU cannot fold into a weight
    and used to be a kernel of its own; it is now computed at the start of the conv's kernel."""
    c = BLOCK
    inits = {"g": RNG.uniform(0.5, 1.5, 2 * c), "beta": RNG.normal(0, 0.1, 2 * c), "mean": RNG.normal(0, 0.1, 2 * c),
             "var": RNG.uniform(0.5, 1.5, 2 * c), "w0": RNG.normal(0, 0.2, (c, c, 1, 1)),
             "w": RNG.normal(0, 0.2, (c, 2 * c, kernel, kernel))}
    nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"]),
             helper.make_node("Concat", ["x", "c0"], ["cat"], axis=1),
             helper.make_node("BatchNormalization", ["cat", "g", "beta", "mean", "var"], ["bn"]),
             helper.make_node("Relu", ["bn"], ["r"]),
             helper.make_node("Conv", ["r", "w"], ["c1"], pads=[kernel // 2] * 4),
             helper.make_node("Concat", ["cat", "c1"], ["y"], axis=1)]
    model = _model(nodes, {"x": [1, c, 10, 10]}, {"y": [1, 3 * c, 10, 10]}, inits)
    compiled = edgetune.compile(model)
    assert compiled.validation.passed, compiled.validation.summary()
    kernels = _kernel_names(compiled)
    merged = [k for k in kernels if "relu" in k and "conv2d_nchwc" in k]
    assert len(merged) == 1 and not any("relu" in k for k in kernels if k not in merged), kernels
    assert compiled.metadata["schedules"]["kernels"][merged[0]] == "Conv2dNCHWc"


def test_prologues_stay_out_of_residuals_and_shared_inputs():
    """Only an injective group whose one use is a conv's data input merges: a ReLU also read by a second
    conv, or feeding the residual add of the conv's epilogue, keeps its own kernel."""
    c = BLOCK
    inits = {"w1": RNG.normal(0, 0.2, (c, c, 3, 3)), "w2": RNG.normal(0, 0.2, (c, c, 1, 1)),
             "w3": RNG.normal(0, 0.2, (c, c, 1, 1))}
    nodes = [helper.make_node("Relu", ["x"], ["shared"]),
             helper.make_node("Conv", ["shared", "w1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["shared", "w2"], ["b"]),
             helper.make_node("Sigmoid", ["x"], ["skip"]),
             helper.make_node("Conv", ["a", "w3"], ["c3"]),
             helper.make_node("Add", ["c3", "skip"], ["s"]),
             helper.make_node("Add", ["s", "b"], ["y"])]
    model = _model(nodes, {"x": [1, c, 8, 8]}, {"y": [1, c, 8, 8]}, inits)
    compiled = edgetune.compile(model)
    assert compiled.validation.passed, compiled.validation.summary()
    kernels = _kernel_names(compiled)
    assert "relu" in kernels and "tir_sigmoid" in kernels, kernels  # each still a kernel of its own


@pytest.mark.parametrize("rows, bias", [(1, True), (3, False)])
def test_classifier_dense_and_softmax_are_one_kernel(rows, bias):
    inits = {"w": RNG.normal(0, 0.3, (64, 100)), "b": RNG.normal(0, 0.1, 100)}
    nodes = [helper.make_node("Gemm", ["x", "w", "b"] if bias else ["x", "w"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["y"], axis=-1)]
    compiled = edgetune.compile(_model(nodes, {"x": [rows, 64]}, {"y": [rows, 100]}, inits if bias else
                                       {"w": inits["w"]}))
    assert compiled.validation.passed, compiled.validation.summary()
    assert _kernel_names(compiled) == ["dense_softmax"]
    assert compiled.metadata["schedules"]["kernels"]["dense_softmax"] == "Matmul"


def _conv_then(act: str):
    inits = {"w": RNG.normal(0, 0.2, (2 * BLOCK, BLOCK, 3, 3)).astype(np.float32),
             "b": RNG.normal(0, 0.1, 2 * BLOCK).astype(np.float32),
             "lo": np.array(0, np.float32), "hi": np.array(6, np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1])]
    if act == "Clip":
        nodes.append(helper.make_node("Clip", ["c", "lo", "hi"], ["y"]))
    elif act == "SiLU":
        nodes += [helper.make_node("Sigmoid", ["c"], ["s"]), helper.make_node("Mul", ["c", "s"], ["y"])]
    else:
        nodes.append(helper.make_node(act, ["c"], ["y"]))
    graph = helper.make_graph(
        nodes, "act", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, BLOCK, 14, 14])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2 * BLOCK, 14, 14])],
        initializer=[numpy_helper.from_array(v, k) for k, v in inits.items() if act == "Clip" or k in "wb"])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 9
    return model


@pytest.mark.parametrize("act", ["Relu", "Clip", "LeakyRelu", "Sigmoid", "SiLU", "HardSwish", "Gelu", "Tanh"])
def test_activation_epilogues_fuse_into_the_blocked_conv(act):
    compiled = edgetune.compile(_conv_then(act))
    assert compiled.validation.passed, compiled.validation.summary()
    kernels = [k.name for k in compiled.profile(repeat=2).kernels if k.kind == "kernel"]
    compute = [name for name in kernels if not name.startswith("te_layout_transform")]  # the output transform
    assert len(compute) == 1 and "conv2d_nchwc" in compute[0], kernels


def test_elementwise_activations_rewrite():
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([2, 8], "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            a = bb.emit(relax.op.clip(x, 0.0, 6.0))
            b = bb.emit(relax.op.nn.leakyrelu(a, 0.1))
            c = bb.emit_output(relax.op.nn.leakyrelu(b, 2.0))  # alpha > 1: max(x, 2x) is wrong, kept
        bb.emit_func_output(c)
    mod = bb.get()
    rewritten = ElementwiseActivations()(mod)
    counts = op_counts(rewritten)
    assert counts["relax.clip"] == 0 and counts["relax.nn.leakyrelu"] == 1, counts
    data = RNG.normal(0, 4, (2, 8)).astype("float32")
    np.testing.assert_allclose(_run(rewritten, data), _run(mod, data), rtol=1e-6)


def test_numpy_constant_folding_matches_tvm_fold_constant():
    """Weight preparation folded in numpy equals TVM's own FoldConstant, bit for bit."""
    w = relax.const(RNG.normal(0, 1, (32, 16, 3, 3)).astype("float32"))
    v = relax.const(RNG.uniform(0.5, 1.5, (32,)).astype("float32"))
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([1, 1, 8, 8, 16], "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            std = bb.emit(relax.op.sqrt(relax.op.add(relax.op.expand_dims(v, [1, 2, 3]), relax.const(1e-5))))
            scaled = bb.emit(relax.op.divide(w, std))
            packed = bb.emit(relax.op.layout_transform(
                scaled, index_map=lambda o, i, h, w_: (o // 16, i // 16, h, w_, i % 16, o % 16)))
            bias = bb.emit(relax.op.broadcast_to(relax.op.reshape(v, [1, 2, 1, 1, 16]), [1, 2, 8, 8, 16]))
            y = bb.emit(relax.op.nn.conv2d(x, packed, padding=[1, 1, 1, 1], data_layout="NCHW16c",
                                           kernel_layout="OIHW16i16o"))
            out = bb.emit_output(relax.op.add(y, bias))
        bb.emit_func_output(out)
    mod = bb.get()
    ours = NumpyFoldConstant()(mod)
    assert op_counts(ours) == Counter({"relax.nn.conv2d": 1, "relax.add": 1}), op_counts(ours)
    theirs = relax.transform.FoldConstant()(mod)
    mine = {tuple(c.value.shape): c.value.numpy() for c in _constants(ours)}
    reference = {tuple(c.value.shape): c.value.numpy() for c in _constants(theirs)}
    assert mine.keys() == reference.keys()
    for shape, value in mine.items():
        np.testing.assert_array_equal(value, reference[shape])


def _constants(mod: tvm.IRModule) -> list:
    found = []
    relax.analysis.post_order_visit(mod["main"].body,
                                    lambda e: found.append(e) if isinstance(e, tvm.ir.GenericConst) else None)
    return found


def test_full_rank_constants_keep_broadcasting_and_scalars():
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([1, 8, 4, 4], "float32"))
    scale = RNG.uniform(0.5, 1.5, (8, 1, 1)).astype("float32")  # as caffe2-exported BatchNorm scales are
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.multiply(x, relax.const(scale)))
            out = bb.emit_output(relax.op.add(y, relax.const(1.0, "float32")))
        bb.emit_func_output(out)
    mod = bb.get()
    aligned = FullRankConstants()(mod)
    shapes = sorted(tuple(c.value.shape) for c in _constants(aligned))
    assert shapes == [(), (1, 8, 1, 1)]
    data = RNG.normal(0, 1, (1, 8, 4, 4)).astype("float32")
    np.testing.assert_array_equal(_run(aligned, data), _run(mod, data))


class _Attention(torch.nn.Module):
    """Scaled dot-product attention as exporters write it: q*a @ (k^T*b) [+ mask] -> softmax -> @ v."""

    def __init__(self, masked: bool, queries: int, keys: int):
        super().__init__()
        self.mask = torch.triu(torch.full((queries, keys), -1e4), diagonal=1) if masked else None

    def forward(self, q, k, v):
        scores = (q * 0.5) @ (k.transpose(-2, -1) * 0.25)
        if self.mask is not None:
            scores = scores + self.mask
        return torch.softmax(scores, dim=-1) @ v


# 24 x 48: row blocks of 4 and the max/sum over keys in vector lanes; 13 x 13: neither divides
@pytest.mark.parametrize("masked, queries, keys", [(False, 16, 16), (True, 16, 16), (True, 24, 48), (False, 13, 13)])
def test_attention_chain_becomes_one_kernel_and_matches_onnxruntime(masked, queries, keys):
    torch.manual_seed(0)
    inputs = (torch.randn(1, 2, queries, 8), torch.randn(1, 2, keys, 8), torch.randn(1, 2, keys, 8))
    compiled = edgetune.compile(_Attention(masked, queries, keys), "host", example_inputs=inputs,
                                input_names=["q", "k", "v"])
    assert compiled.validation.passed, compiled.validation.summary()
    kernels = compiled.metadata["schedules"]["kernels"]
    assert kernels.get("attention") == "Attention"
    assert not any("softmax" in name for name in kernels)  # the score matrix never leaves the kernel
    changes = {r["name"]: r["changes"] for r in compiled.metadata["passes"]["ran"]}["FuseAttention"]
    assert changes.get("relax.nn.softmax") == -1 and changes.get("relax.matmul") == -2


def test_collapse_data_movement_composes_chains_and_drops_identities():
    from edgetune.passes.transposes import CollapseDataMovement

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((2, 3, 4), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            back = bb.emit(relax.op.permute_dims(bb.emit(relax.op.permute_dims(x, [0, 2, 1])), [0, 2, 1]))
            rotated = bb.emit(relax.op.permute_dims(bb.emit(relax.op.permute_dims(back, [1, 0, 2])), [2, 0, 1]))
            flat = bb.emit(relax.op.reshape(bb.emit(relax.op.expand_dims(rotated, [0])), [24]))
            shaped = bb.emit(relax.op.reshape(bb.emit(relax.op.reshape(flat, [6, 4])), [24]))
            out = bb.emit_output(relax.op.add(shaped, relax.const(1.0, "float32")))
        bb.emit_func_output(out)
    mod = bb.get()
    collapsed = CollapseDataMovement()(mod)
    counts, _ = module_census(collapsed)
    assert counts["relax.permute_dims"] == 1 and counts["relax.expand_dims"] == 0 and counts["relax.reshape"] == 1
    data = np.random.default_rng(0).normal(size=(2, 3, 4)).astype(np.float32)
    np.testing.assert_array_equal(_run(collapsed, data), _run(mod, data))



def test_negative_squeeze_axes_pass_through_the_blocked_layout():
    """TVM's ConvertLayout aborted (std::bad_alloc) on `squeeze(axis=[-1])`, as exporters write after
    pooling; the axes are counted from the front first, and the numerics do not change."""
    from edgetune.passes.legalize import legalize_map

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([1, 16, 4, 4], "float32"))
    weight = RNG.normal(0, 0.3, (16, 16, 3, 3)).astype("float32")
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(x, relax.const(weight), padding=[1, 1]))
            pooled = bb.emit(relax.op.mean(y, axis=[3], keepdims=True))
            out = bb.emit_output(relax.op.squeeze(pooled, axis=[-1]))
        bb.emit_func_output(out)
    mod = bb.get()
    blocked = BlockedLayout(16)(mod)
    assert "NCHW16c" in str(blocked["main"]) and "axis=[3]" in str(blocked["main"])
    data = RNG.normal(0, 1, (1, 16, 4, 4)).astype("float32")
    legalized = relax.transform.LegalizeOps(legalize_map())(blocked)  # edgetune's blocked-conv legalization
    np.testing.assert_allclose(_run(legalized, data), _run(mod, data), rtol=1e-5, atol=1e-5)
