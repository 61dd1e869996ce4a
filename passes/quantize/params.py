"""Quantization parameters: scales and zero points, per-channel weights, fixed-point requantization.

Activations are per-tensor asymmetric uint8 (the x86 dot-product instructions, VNNI `vpdpbusd` and AVX2
`vpmaddubsw`, multiply unsigned bytes by signed bytes, so uint8 activations use the full 0..255 range with no
extra instruction) or symmetric int8 (ARM `sdot` and VTA multiply signed bytes). Weights are symmetric int8
per output channel, so the zero point never multiplies a weight in the inner loop; the activation zero point's
contribution `zp_x * sum(w)` is a per-channel constant folded into the int32 bias at compile time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# "uint7": uint8 storage limited to 0..127, for x86 CPUs without VNNI, whose `vpmaddubsw` adds two uint8 x
# int8 products in int16 with saturation (255 x 127 x 2 overflows; 127 x 128 x 2 does not).
ACTIVATION_SCHEMES = ("uint8", "uint7", "int8")


@dataclass(frozen=True)
class TensorQuant:
    """`real = scale * (q - zero_point)`, q in [qmin, qmax]."""

    scale: float
    zero_point: int
    dtype: str  # "uint8" or "int8"
    bits: int = 8  # levels used: 2**bits (7 for "uint7")

    @property
    def qmin(self) -> int:
        return 0 if self.dtype == "uint8" else -(1 << (self.bits - 1))

    @property
    def qmax(self) -> int:
        return (1 << self.bits) - 1 if self.dtype == "uint8" else (1 << (self.bits - 1)) - 1

    def quantize(self, x: np.ndarray) -> np.ndarray:
        q = np.round(np.asarray(x, np.float64) / self.scale) + self.zero_point
        return np.clip(q, self.qmin, self.qmax).astype(self.dtype)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        return ((q.astype(np.float64) - self.zero_point) * self.scale).astype(np.float32)

    def level(self, value: float) -> int:
        """The quantized level nearest to `value`, clipped to the range."""
        return int(np.clip(round(value / self.scale) + self.zero_point, self.qmin, self.qmax))


def _power_of_two_at_least(x: float) -> float:
    return 2.0 ** math.ceil(math.log2(x))


def activation_quant(lo: float, hi: float, scheme: str = "uint8", power_of_two: bool = False) -> TensorQuant:
    """Per-tensor parameters covering [lo, hi] (always including 0, so zero padding is exact)."""
    if scheme not in ACTIVATION_SCHEMES:
        raise ValueError(f"activation scheme {scheme!r} is not one of {ACTIVATION_SCHEMES}")
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    dtype, bits = ("int8", 8) if scheme == "int8" else ("uint8", 7 if scheme == "uint7" else 8)
    top = (1 << bits) - 1  # the largest unsigned level
    if scheme == "int8" or power_of_two:  # symmetric: zero point 0 or mid-range (pure shifts with 2^k scales)
        bound = max(abs(lo), abs(hi)) or 1e-8
        if dtype == "uint8" and lo == 0.0:  # non-negative tensors (after ReLU) keep every level
            scale = bound / top
        else:
            scale = bound / (127.0 if dtype == "int8" else top / 2)
        if power_of_two:
            scale = _power_of_two_at_least(scale)
        zero_point = 0 if dtype == "int8" or lo == 0.0 else (top + 1) // 2
        return TensorQuant(scale, zero_point, dtype, bits)
    scale = (hi - lo) / top or 1e-8
    zero_point = int(np.clip(round(-lo / scale), 0, top))
    return TensorQuant(scale, zero_point, dtype, bits)


def weight_quant(weight: np.ndarray, axis: int, power_of_two: bool = False,
                 per_channel: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per output channel (levels -127..127): (quantized weight, scale per channel).
    `per_channel=False` gives every channel the same scale (an accelerator with one shift per layer)."""
    moved = np.moveaxis(np.asarray(weight, np.float64), axis, 0)
    bound = np.abs(moved.reshape(moved.shape[0], -1)).max(axis=1)
    if not per_channel:
        bound = np.full_like(bound, bound.max())
    scale = np.where(bound > 0, bound / 127.0, 1.0)
    if power_of_two:
        scale = 2.0 ** np.ceil(np.log2(scale))
    shape = [1] * weight.ndim
    shape[axis] = -1
    q = np.clip(np.round(weight / scale.reshape(shape)), -127, 127).astype(np.int8)
    return q, scale


# The requantization multiplier is an integer below 2**31 applied in int64 with a right shift of at most 62.
MULTIPLIER_BITS = 31


def fixed_point_multiplier(real: np.ndarray, power_of_two: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """`real ~= multiplier * 2**-shift` per element: (int64 multiplier, int64 shift >= 1).

    The normal form keeps 31 significant bits (relative error below 2**-30); the power-of-two form has
    multiplier 1 and rounds the shift to the nearest integer (exact when every scale is a power of two)."""
    real = np.asarray(real, np.float64)
    if np.any(real <= 0) or np.any(real >= 0.5):
        raise ValueError("a requantization multiplier is outside (0, 0.5): the output scale is too small "
                         "for the input and weight scales (calibration data of the wrong range?)")
    if power_of_two:
        shift = np.round(-np.log2(real)).astype(np.int64)
        return np.ones_like(shift), shift
    mantissa, exponent = np.frexp(real)  # real = mantissa * 2**exponent, mantissa in [0.5, 1)
    multiplier = np.round(mantissa * (1 << MULTIPLIER_BITS)).astype(np.int64)
    shift = (MULTIPLIER_BITS - exponent).astype(np.int64)
    carry = multiplier == (1 << MULTIPLIER_BITS)  # mantissa rounded up to 1.0
    multiplier = np.where(carry, multiplier // 2, multiplier)
    shift = np.where(carry, shift - 1, shift)
    return multiplier, shift


def requantize_reference(acc: np.ndarray, multiplier: np.ndarray, shift: np.ndarray, zero_point: int,
                         qmin: int, qmax: int) -> np.ndarray:
    """The integer requantize epilogue in numpy: round-half-up `acc * multiplier >> shift`, plus the zero
    point, clipped. What the compiled kernels compute, element for element."""
    rounded = (acc.astype(np.int64) * multiplier + (np.int64(1) << (shift - 1))) >> shift
    return np.clip(rounded + zero_point, qmin, qmax)
