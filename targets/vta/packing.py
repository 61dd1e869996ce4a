"""Blocked layouts of VTA's DRAM tensors (the legacy graph_pack layouts), with channels zero-padded to the block.

Activations NCHW -> NCHW1n{B}c stored as (N, C/B, H, W, 1, B); weights OIHW -> OIHW{B}o{B}i stored as
(O/B, I/B, KH, KW, B, B); bias (C,) -> (C/B, 1, B) int32, one ACC element per channel block. Batch is packed
with factor 1 (the compiler targets BATCH = 1 configurations).
"""

from __future__ import annotations

import numpy as np


def blocks(channels: int, block: int) -> int:
    return -(-channels // block)


def _pad_axis(array: np.ndarray, axis: int, block: int) -> np.ndarray:
    missing = blocks(array.shape[axis], block) * block - array.shape[axis]
    if not missing:
        return array
    widths = [(0, 0)] * array.ndim
    widths[axis] = (0, missing)
    return np.pad(array, widths)


def pack_activation(data: np.ndarray, block: int) -> np.ndarray:
    """NCHW -> (N, C/B, H, W, 1, B)."""
    n, _, h, w = data.shape
    padded = _pad_axis(data, 1, block)
    return np.ascontiguousarray(padded.reshape(n, -1, block, h, w).transpose(0, 1, 3, 4, 2)[..., None, :])


def unpack_activation(packed: np.ndarray, channels: int) -> np.ndarray:
    """(N, C/B, H, W, 1, B) -> NCHW with the first `channels` channels."""
    n, cb, h, w, _, block = packed.shape
    return np.ascontiguousarray(packed[..., 0, :].transpose(0, 1, 4, 2, 3).reshape(n, cb * block, h, w)[:, :channels])


def pack_weight(weight: np.ndarray, block: int) -> np.ndarray:
    """OIHW -> (O/B, I/B, KH, KW, B_o, B_i); element [o][i] matches the GEMM's WGT[out j][in k]."""
    o, i, kh, kw = weight.shape
    padded = _pad_axis(_pad_axis(weight, 0, block), 1, block)
    return np.ascontiguousarray(padded.reshape(-1, block, padded.shape[1] // block, block, kh, kw)
                                .transpose(0, 2, 4, 5, 1, 3))


def pack_bias(bias: np.ndarray, block: int) -> np.ndarray:
    """(C,) int32 -> (C/B, 1, B) int32."""
    return np.ascontiguousarray(_pad_axis(np.asarray(bias, dtype=np.int32), 0, block).reshape(-1, 1, block))
