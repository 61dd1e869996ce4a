"""Winograd convolution: the transform matrices, the tile choice, and compiled convs against onnxruntime."""

import numpy as np
import pytest
from onnx import helper

from edgetune.passes.winograd import tile_size, winograd_matrices
from edgetune.targets import get_target
from test_cpu_schedule import RNG, _compile, _model, _x, conv_block


@pytest.mark.parametrize("m", [2, 4, 6])
def test_matrices_compute_the_correlation(m):
    a_t, g, b_t = winograd_matrices(m)
    d, w = RNG.normal(size=(m + 2, m + 2)), RNG.normal(size=(3, 3))
    tile = a_t @ ((g @ w @ g.T) * (b_t @ d @ b_t.T)) @ a_t.T
    direct = np.array([[np.sum(d[y:y + 3, x:x + 3] * w) for x in range(m)] for y in range(m)])
    np.testing.assert_allclose(tile, direct, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("size, cin, cout, tile, avx2_tile", [
    (56, 64, 64, 4, 4), (28, 128, 128, 4, 4),  # ResNet-50's first stages: F(4x4)
    # AVX-512: F(4x4)'s weights (4x the direct conv's) would take longer to read than F(2x2) computes; AVX2,
    # half the arithmetic rate: they would not
    (14, 256, 256, 2, 4),
    (7, 512, 512, None, 2),  # AVX-512: no tile size saves enough over the direct conv
    (8, 16, 32, None, None),  # too small to pay for two more kernels
    (55, 16, 64, 4, 4), (13, 64, 256, 2, 4),  # SqueezeNet's expand convs (odd sizes: padded tiles)
])
def test_tile_choice(size, cin, cout, tile, avx2_tile):
    assert tile_size(size, size, cin, cout, lanes=16) == tile
    assert tile_size(size, size, cin, cout, lanes=8) == avx2_tile


def _kernels(schedules, word):
    return {name: rule for name, rule in schedules["kernels"].items() if word in name}


@pytest.mark.parametrize("n, cin, cout, size, tile", [
    (1, 32, 64, 28, 4),  # 2 output blocks: a GEMM tile of 7 tiles x 2 blocks
    (1, 64, 64, 15, 4),  # an odd size: the last tiles cropped
    (1, 96, 96, 9, 2),  # F(2x2) on an odd size
    (1, 16, 16, 56, 4),  # one channel block in and out (no chunk loops)
    (2, 32, 32, 16, 4),  # batch 2: tiles of both images in one GEMM
])
def test_winograd_conv_matches_the_direct_conv(n, cin, cout, size, tile):
    assert tile_size(size, size, cin, cout, get_target("host").channel_block()) == tile
    model = conv_block(n, cin, cout, size, 3, 1, 1, residual=True, act="Relu")
    compiled, schedules = _compile(model)
    assert not _kernels(schedules, "conv2d"), schedules
    winograd = _kernels(schedules, "winograd")
    output = [name for name in winograd if "winograd_output" in name]
    assert len(output) == 1 and "add" in output[0], winograd  # bias and residual in the output transform
    assert {rule for name, rule in winograd.items() if "gemm" not in name} == {"WinogradTransform"}, winograd
    assert {rule for name, rule in winograd.items() if "gemm" in name} == {"Conv2dNCHWc"}, winograd
    assert schedules["unscheduled"] == []
    x = RNG.normal(size=(n, cin, size, size)).astype(np.float32)
    skip = RNG.normal(size=(n, cout, size, size)).astype(np.float32)
    direct, _ = _compile(model, winograd=False)
    np.testing.assert_allclose(compiled.run({"x": x, "skip": skip})[0], direct.run({"x": x, "skip": skip})[0],
                               rtol=1e-4, atol=1e-4)


def test_concat_after_winograd_keeps_the_transform_schedule():
    """A concat (SqueezeNet's fire module) is not fused into the output transform, whose rule would not apply."""
    inits = {"w1": RNG.normal(0, 0.2, (32, 16, 1, 1)).astype(np.float32),
             "w3": RNG.normal(0, 0.2, (32, 16, 3, 3)).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"]),
             helper.make_node("Conv", ["x", "w3"], ["c3"], pads=[1] * 4),
             helper.make_node("Relu", ["c1"], ["r1"]), helper.make_node("Relu", ["c3"], ["r3"]),
             helper.make_node("Concat", ["r1", "r3"], ["y"], axis=1)]
    _, schedules = _compile(_model(nodes, [_x("x", [1, 16, 27, 27])], [_x("y", [1, 64, 27, 27])], inits))
    output = {name: rule for name, rule in _kernels(schedules, "winograd_output").items()}
    assert list(output.values()) == ["WinogradTransform"] and "concat" not in next(iter(output)), schedules
