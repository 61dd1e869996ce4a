"""Converters for ONNX arithmetic whose types the stock importer does not follow.

ONNX lets `Pow` mix element types (the result has the base's type); Relax's `power` needs one float type.
"""

from __future__ import annotations

from tvm import relax
from tvm.relax.frontend.onnx import onnx_frontend

from .converters import register_converter


def _is_float(dtype: str) -> bool:
    return dtype.startswith(("float", "bfloat"))


@register_converter("Pow")
class Pow(onnx_frontend.OnnxOpConverter):
    """`Pow(X, Y)` in X's type: float bases raise to Y cast to their type; integer bases to a float exponent
    compute in float64 and truncate (as ONNX's reference does); integer powers are refused."""

    @classmethod
    def _impl_v7(cls, bb, inputs, attr, params):
        base, exponent = inputs
        base_dtype, exponent_dtype = str(base.ty.dtype), str(exponent.ty.dtype)
        if _is_float(base_dtype):
            return relax.op.power(base, relax.op.astype(exponent, base_dtype)
                                  if exponent_dtype != base_dtype else exponent)
        if _is_float(exponent_dtype):
            return cls._through_float64(base, exponent, base_dtype)
        # float64 would be inexact past 2**53 and would not wrap like C integers; an unrolled
        # square-and-multiply over the exponent's 31 bits hung the build (int32 ** int32).
        raise NotImplementedError(f"Pow of an integer base ({base_dtype}) to an integer exponent "
                                  f"({exponent_dtype}) is not supported")

    @staticmethod
    def _through_float64(base, exponent, dtype: str) -> relax.Expr:
        wide = relax.op.power(relax.op.astype(base, "float64"), relax.op.astype(exponent, "float64"))
        return relax.op.astype(wide, dtype)
