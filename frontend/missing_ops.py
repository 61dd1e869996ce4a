"""Converters for ONNX operators the stock Relax importer does not have.

Each is a direct Relax or TOPI expression of the operator's definition; attributes or inputs it cannot honour
are refused with a NotImplementedError naming them (the importer turns it into a one-line user error).
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax, te, topi
from tvm.relax.frontend.onnx import onnx_frontend

from .converters import register_converter


def _axis(expr: relax.Expr, op: str) -> int:
    """A constant axis input (0-D or one element)."""
    if not isinstance(expr, tvm.ir.GenericConst):
        raise NotImplementedError(f"{op} with an axis computed at run time is not supported")
    return int(np.asarray(expr.value.numpy()).reshape(-1)[0])


@register_converter("CumProd")
class CumProd(onnx_frontend.OnnxOpConverter):
    """Running product along `axis`; `reverse` by flipping around it, `exclusive` shifts in a one."""

    @classmethod
    def _impl_v26(cls, bb, inputs, attr, params):
        data, axis = inputs[0], _axis(inputs[1], "CumProd")
        reverse = bool(attr.get("reverse", 0))
        if reverse:
            data = bb.emit_te(topi.flip, data, axis=axis)
        data = bb.normalize(relax.op.cumprod(data, axis, exclusive=bool(attr.get("exclusive", 0))))
        return bb.emit_te(topi.flip, data, axis=axis) if reverse else data


@register_converter("ReverseSequence")
class ReverseSequence(onnx_frontend.OnnxOpConverter):
    """The first `sequence_lens[b]` steps of each batch entry reversed along the time axis."""

    @classmethod
    def _impl_v10(cls, bb, inputs, attr, params):
        return bb.emit_te(topi.reverse_sequence, inputs[0], inputs[1], attr.get("time_axis", 0),
                          attr.get("batch_axis", 1))


@register_converter("LpNormalization")
class LpNormalization(onnx_frontend.OnnxOpConverter):
    """`x / ||x||_p` along `axis` (p = 1 or 2); where the norm is zero the output is zero (opset 22's rule,
    which earlier opsets' division by zero left undefined)."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        data = inputs[0]
        p, axis = attr.get("p", 2), attr.get("axis", -1)
        if p == 1:
            norm = relax.op.sum(relax.op.abs(data), axis=[axis], keepdims=True)
        elif p == 2:
            norm = relax.op.sqrt(relax.op.sum(relax.op.multiply(data, data), axis=[axis], keepdims=True))
        else:
            raise NotImplementedError(f"LpNormalization with p={p} is not supported (ONNX allows 1 and 2)")
        zero = relax.const(0, str(data.ty.dtype))
        is_zero = relax.op.equal(norm, zero)
        safe = relax.op.where(is_zero, relax.const(1, str(data.ty.dtype)), norm)
        return relax.op.where(is_zero, relax.op.zeros_like(data), relax.op.divide(data, safe))


@register_converter("BitCast")
class BitCast(onnx_frontend.OnnxOpConverter):
    """The same bits read as another type of the same width (bool and the 8-bit types share a byte)."""

    @classmethod
    def _impl_v26(cls, bb, inputs, attr, params):
        data = inputs[0]
        source = str(data.ty.dtype)
        target = onnx_frontend.get_type(attr["to"])
        if source == target:
            return data
        if source == "bool" and target in ("int8", "uint8"):
            return relax.op.astype(data, target)  # a bool byte holds 0 or 1
        if tvm.DataType(source).bits != tvm.DataType(target).bits or "bool" in (source, target):
            raise NotImplementedError(f"BitCast from {source} to {target}: the widths differ")
        return bb.emit_te(lambda x: te.compute(x.shape, lambda *i: tvm.tirx.reinterpret(target, x(*i)),
                                               name="bitcast"), data)
