"""Kernels that convert to and from the narrow element types of `narrow_formats`, as ONNX defines them.

`narrow_types.lower_narrow_types` rewrites a model's Cast/CastLike/QuantizeLinear/DequantizeLinear on narrow
tensors into two operators of edgetune's own domain, converted here:

- `NarrowEncode(x)`: any real tensor -> the carrier of a narrow type. Floats round to nearest even with ONNX's
  saturation rules, E8M0 with its `round_mode`; wider inputs go through float32 first, as in ONNX's reference
  (`ml_dtypes`), so a float64 just past a float8 tie rounds as it does. Narrow integers truncate toward zero
  and wrap, as a C cast does.
- `NarrowDecode(x)`: a narrow float's carrier -> float32, by a table of its codes' values (exact).
"""

from __future__ import annotations

import tvm
from onnx import TensorProto
from tvm import relax, te
from tvm.relax.frontend.onnx import onnx_frontend

from .converters import register_converter
from .narrow_formats import NARROW_TYPES, NarrowFloat, NarrowInt

DOMAIN = "ai.edgetune"
tir = tvm.tirx


def _is_float(dtype: str) -> bool:
    return dtype.startswith(("float", "bfloat"))


def _encode_float(fmt: NarrowFloat, saturate: bool):
    def value_code(v: tir.PrimExpr) -> tir.PrimExpr:
        bits = tir.reinterpret("uint32", v)
        negative = (bits >> tir.const(31, "uint32")) != tir.const(0, "uint32")
        magnitude_bits = bits & tir.const(0x7FFFFFFF, "uint32")
        magnitude = tir.reinterpret("float32", magnitude_bits)
        exponent = tir.Cast("int32", magnitude_bits >> tir.const(23, "uint32")) - 127
        # The quantum of the target's binade that holds the value (subnormals share the lowest binade's).
        binade = tir.max(exponent, 1 - fmt.bias)
        quantum_bits = tir.Cast("uint32", binade - fmt.mantissa_bits + 127) << tir.const(23, "uint32")
        quantum = tir.reinterpret("float32", quantum_bits)
        steps = tir.Cast("int32", tir.nearbyint(magnitude / quantum))
        # A carry out of the mantissa moves into the exponent field by itself.
        code = ((binade + fmt.bias - 1) << fmt.mantissa_bits) + steps
        overflow = tir.any(code > fmt.max_code, tir.isinf(magnitude))
        limit = fmt.max_code if saturate or fmt.saturates_always else fmt.overflow_code
        code = tir.Select(tir.isnan(magnitude), tir.const(fmt.nan_code, "int32"),
                          tir.Select(overflow, tir.const(limit, "int32"), code))
        # The sign flips the code's top bit (ml_dtypes' float4 NaN, a positive zero code, flips to -0 -> +0);
        # FNUZ formats have no negative zero and one NaN.
        has_sign = tir.const(fmt.negative_zero, "bool") | tir.all(code != 0, code != fmt.nan_code)
        signed = tir.Select(tir.all(negative, has_sign), code ^ fmt.sign_bit, code)
        return tir.Cast("uint8", signed)

    return lambda x: te.compute(x.shape, lambda *i: value_code(tir.Cast("float32", x(*i))), name="narrow_encode")


def _encode_e8m0(saturate: bool, round_mode: str):
    """ONNX's float -> E8M0: the float32 exponent field, rounded up, down or to nearest by the mantissa."""

    def code(v: tir.PrimExpr) -> tir.PrimExpr:
        bits = tir.reinterpret("uint32", tir.Cast("float32", v))
        exponent = tir.Cast("int32", (bits >> tir.const(23, "uint32")) & tir.const(0xFF, "uint32"))
        fraction = bits & tir.const(0x7FFFFF, "uint32")
        if round_mode == "up":
            round_up = fraction != tir.const(0, "uint32")
        elif round_mode == "nearest":
            guard = (bits & tir.const(0x400000, "uint32")) != tir.const(0, "uint32")
            rest = (bits & tir.const(0x3FFFFF, "uint32")) != tir.const(0, "uint32")
            round_up = tir.all(guard, tir.any(rest, exponent > 0))
        else:
            round_up = tir.const(False, "bool")
        if saturate:
            round_up = tir.all(round_up, exponent != 0xFE)
        rounded = exponent + tir.Cast("int32", round_up)
        return tir.Cast("uint8", tir.Select(exponent == 0xFF, tir.const(0xFF, "int32"), rounded))

    return lambda x: te.compute(x.shape, lambda *i: code(x(*i)), name="narrow_encode")


def _encode_int(fmt: NarrowInt):
    mask = (1 << fmt.bits) - 1

    def wrap(value: tir.PrimExpr) -> tir.PrimExpr:  # an int64 -> its low bits, sign-extended
        low = value & tir.const(mask, "int64")
        if fmt.signed:
            low = low - ((low & tir.const(1 << (fmt.bits - 1), "int64")) << 1)
        return tir.Cast(fmt.carrier, low)

    def element(v: tir.PrimExpr, dtype: str) -> tir.PrimExpr:
        if not _is_float(dtype):
            return wrap(tir.Cast("int64", v))
        # Truncate toward zero; beyond int32 a C cast is undefined and x86 gives INT_MIN (low bits 0), which
        # is what ml_dtypes (ONNX's reference) returns there, and for NaN and infinities.
        ftype = "float64" if dtype == "float64" else "float32"
        whole = tir.trunc(tir.Cast(ftype, v))
        in_range = tir.abs(whole) < tir.const(2.0 ** 31, ftype)
        return wrap(tir.Select(in_range, tir.Cast("int64", whole), tir.const(0, "int64")))

    return lambda x: te.compute(x.shape, lambda *i: element(x(*i), str(x.dtype)), name="narrow_encode")


@register_converter("NarrowEncode")
class NarrowEncode(onnx_frontend.OnnxOpConverter):
    """x -> the carrier of narrow type `to` (attributes: to, saturate, round_mode)."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        fmt = NARROW_TYPES[int(attr["to"])]
        saturate = bool(attr.get("saturate", 1))
        if isinstance(fmt, NarrowInt):
            kernel = _encode_int(fmt)
        elif int(attr["to"]) == TensorProto.FLOAT8E8M0:
            round_mode = attr.get("round_mode", b"up")
            kernel = _encode_e8m0(saturate, round_mode.decode() if isinstance(round_mode, bytes) else round_mode)
        else:
            kernel = _encode_float(fmt, saturate)
        return bb.emit_te(kernel, inputs[0])


@register_converter("NarrowDecode")
class NarrowDecode(onnx_frontend.OnnxOpConverter):
    """The carrier of narrow float type `from` -> float32."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        fmt = NARROW_TYPES[int(attr["from"])]
        values = fmt.decode_table()
        table, mask = relax.const(values), len(values) - 1

        def decode(x: te.Tensor, lookup: te.Tensor) -> te.Tensor:
            return te.compute(x.shape, lambda *i: lookup[tir.Cast("int32", x(*i)) & mask], name="narrow_decode")

        return bb.emit_te(decode, inputs[0], table)
