"""The operators the VTA back end compiles: an int8 conv2d (dense is a 1x1 conv) and its requantize epilogue."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .packing import blocks
from .simulator import wrap_int32


@dataclass(frozen=True)
class Conv2dWorkload:
    """NCHW int8 conv2d with symmetric zero padding and no dilation."""

    batch: int
    in_channels: int
    height: int
    width: int
    out_channels: int
    kernel_h: int
    kernel_w: int
    stride_h: int = 1
    stride_w: int = 1
    pad_h: int = 0
    pad_w: int = 0

    def __post_init__(self) -> None:
        sizes = (self.batch, self.in_channels, self.height, self.width, self.out_channels, self.kernel_h,
                 self.kernel_w, self.stride_h, self.stride_w)
        if min(sizes) < 1 or min(self.pad_h, self.pad_w) < 0:
            raise ValueError(f"conv2d sizes must be positive and pads non-negative: {self}")
        if self.pad_h >= self.kernel_h or self.pad_w >= self.kernel_w or max(self.pad_h, self.pad_w) > 15:
            raise ValueError(f"conv2d pad ({self.pad_h}, {self.pad_w}) must be smaller than the kernel and at "
                             "most 15 (the 4-bit LOAD pad fields)")
        if self.out_h < 1 or self.out_w < 1:
            raise ValueError(f"conv2d kernel larger than the padded input: {self}")

    @property
    def out_h(self) -> int:
        return (self.height + 2 * self.pad_h - self.kernel_h) // self.stride_h + 1

    @property
    def out_w(self) -> int:
        return (self.width + 2 * self.pad_w - self.kernel_w) // self.stride_w + 1

    @property
    def taps(self) -> int:
        return self.kernel_h * self.kernel_w

    def ic_blocks(self, block: int) -> int:
        return blocks(self.in_channels, block)

    def oc_blocks(self, block: int) -> int:
        return blocks(self.out_channels, block)

    @property
    def macs(self) -> int:
        return self.batch * self.out_h * self.out_w * self.out_channels * self.in_channels * self.taps


@dataclass(frozen=True)
class Requantize:
    """int32 -> int8 as the legacy quantizer realised it: (acc + bias + 2^(s-1)) >> s, clipped, then cast.

    Each step is one ALU instruction on VTA; the rounding add is dropped when `rounding` is False (as in the
    convolution_opt tutorial, which shifts by 8 and clips to [0, 127]).
    """

    shift: int
    rounding: bool = True
    clip_min: int = -127
    clip_max: int = 127

    def __post_init__(self) -> None:
        if not 0 <= self.shift <= 15:
            raise ValueError(f"requantize shift {self.shift} must be in [0, 15] (the portable ALU SHR range)")
        if not -128 <= self.clip_min <= self.clip_max <= 127:
            raise ValueError(f"requantize clip [{self.clip_min}, {self.clip_max}] must lie in [-128, 127]")

    def reference(self, acc: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
        """The same arithmetic in plain numpy on NCHW int32 accumulators (int32 wrap-around included)."""
        value = wrap_int32(acc)
        if bias is not None:
            value = wrap_int32(value.astype(np.int64) + np.asarray(bias, np.int64).reshape(1, -1, 1, 1))
        if self.rounding and self.shift:
            value = wrap_int32(value.astype(np.int64) + (1 << (self.shift - 1)))
        value = value.astype(np.int64) >> self.shift
        return np.clip(value, self.clip_min, self.clip_max).astype(np.int8)


def conv2d_reference(data: np.ndarray, weight: np.ndarray, workload: Conv2dWorkload) -> np.ndarray:
    """Plain numpy NCHW int8 conv2d with int32 wrap-around accumulation (the oracle for tests)."""
    w = workload
    padded = np.pad(data.astype(np.int64), ((0, 0), (0, 0), (w.pad_h, w.pad_h), (w.pad_w, w.pad_w)))
    out = np.zeros((w.batch, w.out_channels, w.out_h, w.out_w), dtype=np.int64)
    for kh in range(w.kernel_h):
        for kw in range(w.kernel_w):
            window = padded[:, :, kh:kh + w.stride_h * w.out_h:w.stride_h, kw:kw + w.stride_w * w.out_w:w.stride_w]
            out += np.einsum("nchw,oc->nohw", window, weight[:, :, kh, kw].astype(np.int64))
    return wrap_int32(out)
