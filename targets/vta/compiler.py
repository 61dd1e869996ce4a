"""Entry points of the VTA back end: an int8 conv2d or dense (+ bias, requantize) -> a VTAProgram.

Pure numpy/Python, no TVM: the graph-level integration (partitioning a quantized Relax graph) calls these.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from .codegen import generate_conv2d
from .config import VTAConfig
from .cost import TilingTask
from .packing import pack_bias, pack_weight
from .program import RunResult, VTAProgram
from .tiler import Tiling
from .simulator import wrap_int32
from .workload import Conv2dWorkload, Requantize

# Picks a layer's tiling, e.g. from the autotune stage's records (autotune.tiling.TilingTuner).
TilingChooser = Callable[[TilingTask], Tiling]


def compile_conv2d(data_shape: Sequence[int], weight: np.ndarray, bias: np.ndarray | None, requant: Requantize,
                   config: VTAConfig, strides: Sequence[int] = (1, 1), padding: Sequence[int] = (0, 0),
                   tiling: Tiling | TilingChooser | None = None) -> VTAProgram:
    """NCHW int8 data x OIHW int8 weight (+ int32 bias), requantized to int8, under `tiling`: a fixed one, a
    chooser's, or (None) the default tiling."""
    n, c, h, w = data_shape
    if weight.dtype != np.int8 or weight.ndim != 4 or weight.shape[1] != c:
        raise ValueError(f"conv2d weight must be int8 OIHW with I = {c}, got {weight.dtype} {weight.shape}")
    if bias is not None and (bias.shape != (weight.shape[0],) or bias.dtype != np.int32):
        raise ValueError(f"conv2d bias must be int32 ({weight.shape[0]},), got {bias.dtype} {bias.shape}")
    workload = Conv2dWorkload(n, c, h, w, weight.shape[0], weight.shape[2], weight.shape[3], strides[0], strides[1],
                              padding[0], padding[1])
    with_bias = bias is not None
    if not isinstance(tiling, Tiling):
        task = TilingTask(workload, requant, with_bias)
        tiling = tiling(task) if tiling is not None else task.default_tiling(config)
    stream = generate_conv2d(workload, tiling, config, requant, with_bias)
    constants = {"weight": pack_weight(weight, config.block)}
    if with_bias:
        rounding = 1 << (requant.shift - 1) if requant.rounding and requant.shift else 0
        constants["bias"] = pack_bias(wrap_int32(bias.astype(np.int64) + rounding), config.block)
    return VTAProgram(config, workload, tiling, requant, stream, constants)


class DenseProgram:
    """Dense (N, K) x (M, K)^T as a 1x1 conv over an N x 1 image: same stream, reshaped at the boundary."""

    def __init__(self, conv: VTAProgram):
        self.conv = conv

    def run(self, data: np.ndarray) -> RunResult:
        result = self.conv.run(np.ascontiguousarray(data.T[None, :, :, None]))
        result.output = np.ascontiguousarray(result.output[0, :, :, 0].T)
        return result


def compile_dense(batch: int, weight: np.ndarray, bias: np.ndarray | None, requant: Requantize, config: VTAConfig,
                  tiling: Tiling | TilingChooser | None = None) -> DenseProgram:
    """(batch, K) int8 data x (M, K) int8 weight (+ int32 bias), requantized to int8."""
    if weight.ndim != 2:
        raise ValueError(f"dense weight must be (M, K), got {weight.shape}")
    return DenseProgram(compile_conv2d((1, weight.shape[1], batch, 1), weight[:, :, None, None], bias, requant,
                                       config, tiling=tiling))
