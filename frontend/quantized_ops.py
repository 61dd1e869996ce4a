"""Converters for ONNX's quantized operators (the QOperator format), which TVM 0.27's importer lacks.

Each operator becomes what its definition says: dequantize the integer inputs, run the float operator,
quantize the result (QLinearConv, QLinearMatMul, QGemm, QLinearAdd, QLinearGlobalAveragePool), or the
integer operator on zero-point-shifted int32 values (ConvInteger). That is exact, runs anywhere as it is,
and is the same quantize/dequantize structure a QDQ model imports to, so the int8 realization
(`passes/quantize`) turns the convolutions and dense layers into integer kernels with the model's scales.
"""

from __future__ import annotations

from tvm import relax
from tvm.relax.frontend.onnx import onnx_frontend

from .converters import register_converter


def _arg(inputs, index: int):
    return inputs[index] if len(inputs) > index else None


def _zero_point(zero_point, like) -> relax.Expr:
    return zero_point if zero_point is not None else relax.const(0, str(like.ty.dtype))


def _dequantize(x, scale, zero_point, axis: int = 1) -> relax.Expr:
    """ONNX DequantizeLinear; `axis` applies to per-axis (1-D) scales."""
    return relax.op.dequantize(x, scale, _zero_point(zero_point, x), axis=axis, out_dtype="float32")


def _quantize(bb, y, scale, zero_point, dtype: str = "uint8") -> relax.Expr:
    zero_point = zero_point if zero_point is not None else relax.const(0, dtype)
    return relax.op.quantize(bb.normalize(y), scale, zero_point, axis=1, out_dtype=str(zero_point.ty.dtype))


def _bias(bb, bias, input_scale, weight_scale) -> relax.Expr | None:
    """An int32 bias in units of input_scale * weight_scale (per output channel), as float."""
    if bias is None:
        return None
    scale = relax.op.multiply(input_scale, weight_scale)
    return bb.normalize(relax.op.multiply(relax.op.astype(bias, "float32"), scale))


@register_converter("QLinearConv")
class QLinearConv(onnx_frontend.OnnxOpConverter):
    @classmethod
    def _impl_v10(cls, bb, inputs, attr, params):
        x, x_s, x_z, w, w_s, w_z, y_s, y_z = (_arg(inputs, i) for i in range(8))
        data = bb.normalize(_dequantize(x, x_s, x_z))
        weight = bb.normalize(_dequantize(w, w_s, w_z, axis=0))
        y = onnx_frontend.Conv._impl_v11(bb, [data, weight, _bias(bb, _arg(inputs, 8), x_s, w_s)], attr, params)
        return _quantize(bb, y, y_s, y_z)


@register_converter("QLinearMatMul")
class QLinearMatMul(onnx_frontend.OnnxOpConverter):
    @classmethod
    def _impl_v10(cls, bb, inputs, attr, params):
        a, a_s, a_z, b, b_s, b_z, y_s, y_z = (_arg(inputs, i) for i in range(8))
        y = relax.op.matmul(bb.normalize(_dequantize(a, a_s, a_z)), bb.normalize(_dequantize(b, b_s, b_z, axis=-1)))
        return _quantize(bb, y, y_s, y_z)


@register_converter("QGemm")
class QGemm(onnx_frontend.OnnxOpConverter):
    """com.microsoft QGemm: Gemm on dequantized A and B, an int32 bias; quantized output when y_scale is given."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        a, a_s, a_z, b, b_s, b_z, c, y_s, y_z = (_arg(inputs, i) for i in range(9))
        b_axis = 0 if attr.get("transB", 0) else 1
        gemm_inputs = [bb.normalize(_dequantize(a, a_s, a_z)), bb.normalize(_dequantize(b, b_s, b_z, axis=b_axis)),
                       _bias(bb, c, a_s, b_s)]
        y = onnx_frontend.Gemm._impl_v13(bb, gemm_inputs, {**attr, "beta": 1.0}, params)
        return y if y_s is None else _quantize(bb, y, y_s, y_z)


@register_converter("QLinearAdd")
class QLinearAdd(onnx_frontend.OnnxOpConverter):
    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        a, a_s, a_z, b, b_s, b_z, y_s, y_z = (_arg(inputs, i) for i in range(8))
        return _quantize(bb, relax.op.add(_dequantize(a, a_s, a_z), _dequantize(b, b_s, b_z)), y_s, y_z)


@register_converter("QLinearGlobalAveragePool")
class QLinearGlobalAveragePool(onnx_frontend.OnnxOpConverter):
    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        x, x_s, x_z, y_s, y_z = (_arg(inputs, i) for i in range(5))
        if attr.get("channels_last", 0):
            raise NotImplementedError("QLinearGlobalAveragePool with channels_last=1 is not supported")
        rank = len(x.ty.shape.values)
        mean = relax.op.mean(_dequantize(x, x_s, x_z), axis=list(range(2, rank)), keepdims=True)
        return _quantize(bb, mean, y_s, y_z)


@register_converter("ConvInteger")
class ConvInteger(onnx_frontend.OnnxOpConverter):
    """int32 convolution of zero-point-shifted inputs (exact; the zero points may be per channel for w)."""

    @classmethod
    def _impl_v10(cls, bb, inputs, attr, params):
        x, w, x_z, w_z = (_arg(inputs, i) for i in range(4))
        data = relax.op.astype(x, "int32")
        if x_z is not None:
            data = relax.op.subtract(data, relax.op.astype(x_z, "int32"))
        weight = relax.op.astype(w, "int32")
        if w_z is not None:
            shift = relax.op.astype(w_z, "int32")
            if len(w_z.ty.shape.values) == 1:  # per output channel
                shift = relax.op.reshape(shift, [-1] + [1] * (len(w.ty.shape.values) - 1))
            weight = relax.op.subtract(weight, shift)
        return onnx_frontend.Conv._impl_v11(bb, [bb.normalize(data), bb.normalize(weight), None], attr, params)
