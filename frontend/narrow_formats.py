"""Element types narrower than a byte's worth of precision, and the byte types that carry them.

ONNX has float8 (four encodings), float8 E8M0, float4 E2M1 and 4- and 2-bit integers; numpy holds them as
`ml_dtypes` types (one element per byte), and TVM's host code cannot hold them exactly (sub-byte integers are
not addressable; its float8 conversions differ from ONNX's in saturation and NaN encodings). edgetune compiles
such a tensor as a byte tensor that carries it: a narrow integer as its value in int8/uint8, a narrow float
as its bit pattern in uint8. The conversions are edgetune's own kernels (`narrow_casts`); the compiled
library's inputs and outputs are the carriers, converted here at the boundary, so users feed and get back
the model's own `ml_dtypes` arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np
from onnx import TensorProto, helper


@dataclass(frozen=True)
class NarrowFloat:
    """A float format of sign, `exponent_bits`, `mantissa_bits` and `bias` (E8M0: exponent only, unsigned).

    `max_code` is the largest finite magnitude's code; `nan_code` the code a NaN becomes; `overflow_code` the
    magnitude an overflow becomes without saturation (infinity or NaN); `negative_zero` whether -0 exists."""

    name: str  # the ml_dtypes / numpy name
    exponent_bits: int
    mantissa_bits: int
    bias: int
    max_code: int
    nan_code: int
    overflow_code: int
    negative_zero: bool
    saturates_always: bool = False  # no infinity or NaN to overflow to (float4)
    carrier = "uint8"  # the numpy dtype holding its bit patterns

    @property
    def sign_bit(self) -> int:
        return 1 << (self.exponent_bits + self.mantissa_bits)

    def decode_table(self) -> np.ndarray:
        """Every code's value as float32 (exact: each of these formats fits float32)."""
        codes = np.arange(min(2 * self.sign_bit, 256), dtype=np.uint8)  # E8M0: all 256, no sign
        return codes.view(np.dtype(self.name)).astype(np.float32)


@dataclass(frozen=True)
class NarrowInt:
    name: str
    bits: int
    signed: bool

    @property
    def carrier(self) -> str:
        """The numpy dtype holding its values."""
        return "int8" if self.signed else "uint8"

    @property
    def bounds(self) -> tuple[int, int]:
        return (-(1 << (self.bits - 1)), (1 << (self.bits - 1)) - 1) if self.signed else (0, (1 << self.bits) - 1)


NARROW_TYPES: dict[int, NarrowFloat | NarrowInt] = {
    TensorProto.FLOAT8E4M3FN: NarrowFloat("float8_e4m3fn", 4, 3, 7, 0x7E, 0x7F, 0x7F, True),
    TensorProto.FLOAT8E4M3FNUZ: NarrowFloat("float8_e4m3fnuz", 4, 3, 8, 0x7F, 0x80, 0x80, False),
    TensorProto.FLOAT8E5M2: NarrowFloat("float8_e5m2", 5, 2, 15, 0x7B, 0x7E, 0x7C, True),
    TensorProto.FLOAT8E5M2FNUZ: NarrowFloat("float8_e5m2fnuz", 5, 2, 16, 0x7F, 0x80, 0x80, False),
    TensorProto.FLOAT8E8M0: NarrowFloat("float8_e8m0fnu", 8, 0, 127, 0xFE, 0xFF, 0xFF, False),
    TensorProto.FLOAT4E2M1: NarrowFloat("float4_e2m1fn", 2, 1, 1, 0x7, 0x8, 0x7, True, saturates_always=True),
    TensorProto.INT4: NarrowInt("int4", 4, True),
    TensorProto.UINT4: NarrowInt("uint4", 4, False),
    TensorProto.INT2: NarrowInt("int2", 2, True),
    TensorProto.UINT2: NarrowInt("uint2", 2, False),
}
_BY_NAME = {fmt.name: fmt for fmt in NARROW_TYPES.values()}
assert all(hasattr(ml_dtypes, name) for name in _BY_NAME)  # registers the names with numpy, too


def carrier_elem_type(elem_type: int) -> int:
    """The ONNX element type a tensor of `elem_type` is compiled as (itself when it is not narrow)."""
    fmt = NARROW_TYPES.get(elem_type)
    return elem_type if fmt is None else helper.np_dtype_to_tensor_dtype(np.dtype(fmt.carrier))


def carrier_dtype(dtype: str) -> str:
    """The numpy dtype name the compiled library takes for a tensor of `dtype`."""
    fmt = _BY_NAME.get(dtype)
    return dtype if fmt is None else fmt.carrier


def to_carrier(array: np.ndarray) -> np.ndarray:
    """A narrow-typed array as the library takes it (other arrays unchanged)."""
    fmt = _BY_NAME.get(array.dtype.name)
    if fmt is None:
        return array
    return array.astype(fmt.carrier) if isinstance(fmt, NarrowInt) else array.view(fmt.carrier)


def from_carrier(array: np.ndarray, dtype: str) -> np.ndarray:
    """A library output as the model's `dtype` (a carrier's values or bit patterns reinterpreted)."""
    fmt = _BY_NAME.get(dtype)
    if fmt is None:
        return array
    return array.astype(np.dtype(dtype)) if isinstance(fmt, NarrowInt) else array.view(np.dtype(dtype))


def is_narrow(dtype: str) -> bool:
    return dtype in _BY_NAME


def random_narrow(rng: np.random.Generator, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """Seeded random values of a narrow type: floats from [-1, 1) rounded to it, integers over its range."""
    fmt = _BY_NAME[dtype]
    if isinstance(fmt, NarrowInt):
        low, high = fmt.bounds
        return rng.integers(low, high + 1, shape).astype(np.dtype(dtype))
    return rng.uniform(-1.0, 1.0, shape).astype(np.float32).astype(np.dtype(dtype))
