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


def _constant_ints(expr: relax.Expr, op: str, what: str) -> list[int]:
    """The values of a constant integer input (the importer binds parameter inputs known at compile time)."""
    if not isinstance(expr, tvm.ir.GenericConst):
        raise NotImplementedError(f"{op} with {what} computed at run time is not supported")
    return [int(v) for v in np.asarray(expr.value.numpy()).reshape(-1)]


def _axis(expr: relax.Expr, op: str) -> int:
    """A constant axis input (0-D or one element)."""
    return _constant_ints(expr, op, "an axis")[0]


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


@register_converter("DFT")
class DFT(onnx_frontend.OnnxOpConverter):
    """The discrete Fourier transform along one signal axis as matrix products with constant cosine and sine
    tables (the length is static): forward, inverse (scaled by 1/n), one-sided (the first n/2 + 1 bins of a
    real signal) and inverse one-sided (a real signal from its one-sided spectrum, as numpy's irfft).
    Input [batch, signal..., 1 or 2] (real or complex); output [..., 2], or [..., 1] for the inverse
    one-sided transform. O(n^2) per signal: meant for the short transforms of spectral features."""

    @classmethod
    def _impl_v17(cls, bb, inputs, attr, params):
        return cls._dft(bb, inputs[0], inputs[1] if len(inputs) > 1 else None, attr.get("axis", 1), attr)

    @classmethod
    def _impl_v20(cls, bb, inputs, attr, params):
        axis = _axis(inputs[2], "DFT") if len(inputs) > 2 and inputs[2] is not None else -2
        return cls._dft(bb, inputs[0], inputs[1] if len(inputs) > 1 else None, axis, attr)

    @classmethod
    def _dft(cls, bb, data, length_input, axis, attr):
        shape = [int(d) for d in data.ty.shape.values]
        rank, dtype = len(shape), str(data.ty.dtype)
        axis = axis + rank if axis < 0 else axis
        if not 0 < axis < rank - 1 or shape[-1] not in (1, 2):
            raise NotImplementedError(f"DFT over axis {axis} of a tensor of shape {shape}")
        inverse, onesided = bool(attr.get("inverse", 0)), bool(attr.get("onesided", 0))
        signal_axis = axis  # in the signal tensor (the complex dimension taken off)
        order = [d for d in range(rank - 1) if d != signal_axis] + [signal_axis]
        back = [order.index(d) for d in range(rank - 1)]

        def part(index: int) -> relax.Expr:
            taken = bb.normalize(relax.op.take(data, relax.const(index, "int64"), axis=rank - 1))
            return bb.normalize(relax.op.permute_dims(taken, order))

        real, imag = part(0), part(1) if shape[-1] == 2 else None
        given = shape[axis]
        length = _constant_ints(length_input, "DFT", "dft_length")[0] if length_input is not None else (
            2 * (given - 1) if inverse and onesided else given)
        if inverse and onesided:
            bins = length // 2 + 1
            real, imag = (cls._fit(bb, x, bins) if x is not None else None for x in (real, imag))
            weights = np.full(bins, 2.0)
            weights[0] = 1.0
            if length % 2 == 0:
                weights[-1] = 1.0
            cos, sin = cls._tables(bins, length, length)
            y = cls._matmul(real, cos * weights[:, None] / length, dtype)
            if imag is not None:
                y = relax.op.subtract(y, cls._matmul(imag, sin * weights[:, None] / length, dtype))
            return relax.op.expand_dims(relax.op.permute_dims(bb.normalize(y), back), rank - 1)
        real, imag = (cls._fit(bb, x, length) if x is not None else None for x in (real, imag))
        cos, sin = cls._tables(length, length // 2 + 1 if onesided else length, length)
        scale = 1.0 / length if inverse else 1.0
        sign = 1.0 if inverse else -1.0  # exp(sign * 2 pi i jk / n)
        out_real = cls._matmul(real, cos * scale, dtype)
        out_imag = cls._matmul(real, sign * sin * scale, dtype)
        if imag is not None:
            out_real = relax.op.subtract(out_real, cls._matmul(imag, sign * sin * scale, dtype))
            out_imag = relax.op.add(out_imag, cls._matmul(imag, cos * scale, dtype))
        parts = [bb.normalize(relax.op.expand_dims(relax.op.permute_dims(bb.normalize(p), back), rank - 1))
                 for p in (out_real, out_imag)]
        return relax.op.concat(parts, axis=rank - 1)  # (not stack: TVM's ConvertLayout fails on it)

    @staticmethod
    def _tables(rows: int, columns: int, length: int) -> tuple[np.ndarray, np.ndarray]:
        """cos and sin of 2 pi j k / length for row j and column k (in float64, cast when used)."""
        angle = 2 * np.pi * np.outer(np.arange(rows), np.arange(columns)) / length
        return np.cos(angle), np.sin(angle)

    @staticmethod
    def _fit(bb, signal: relax.Expr, length: int) -> relax.Expr:
        """The signal (transform axis last) zero-padded or cut to `length`."""
        given = int(signal.ty.shape.values[-1])
        if given > length:
            return bb.normalize(relax.op.strided_slice(signal, axes=[-1], begin=[0], end=[length]))
        if given < length:
            pads = [0] * (2 * (signal.ty.ndim - 1)) + [0, length - given]
            return bb.normalize(relax.op.nn.pad(signal, pads))
        return signal

    @staticmethod
    def _matmul(signal: relax.Expr, table: np.ndarray, dtype: str) -> relax.Expr:
        return relax.op.matmul(signal, relax.const(table.astype(dtype)))


@register_converter("Col2Im")
class Col2Im(onnx_frontend.OnnxOpConverter):
    """Sliding blocks [N, C * prod(block), L] summed back into an image [N, C, *image_shape] (the inverse of
    an unfold): each output pixel adds every (block offset, block position) pair that lands on it."""

    @classmethod
    def _impl_v18(cls, bb, inputs, attr, params):
        data = inputs[0]
        image, block = (_constant_ints(inputs[i], "Col2Im", name) for i, name in ((1, "image_shape"),
                                                                                  (2, "block_shape")))
        dims = len(image)
        dilations = list(attr.get("dilations", [1] * dims))
        strides = list(attr.get("strides", [1] * dims))
        pads = list(attr.get("pads", [0] * 2 * dims))
        blocks = [(image[d] + pads[d] + pads[d + dims] - dilations[d] * (block[d] - 1) - 1) // strides[d] + 1
                  for d in range(dims)]
        batch, columns, positions = (int(v) for v in data.ty.shape.values)
        kernel_size = int(np.prod(block))
        if columns % kernel_size or positions != int(np.prod(blocks)):
            raise NotImplementedError(f"Col2Im of a {[batch, columns, positions]} input for image {image}, "
                                      f"block {block}: the sizes do not agree")
        channels = columns // kernel_size

        def compute(x: te.Tensor) -> te.Tensor:
            offsets = [te.reduce_axis((0, block[d]), name=f"k{d}") for d in range(dims)]

            def pixel(n, c, *y):
                valid, block_index, kernel_index = tvm.tirx.const(True), 0, 0
                for d in range(dims):
                    shifted = y[d] + pads[d] - offsets[d] * dilations[d]
                    position = tvm.tirx.indexdiv(shifted, strides[d])
                    valid = tvm.tirx.all(valid, shifted >= 0, tvm.tirx.indexmod(shifted, strides[d]) == 0,
                                         position < blocks[d])
                    block_index = block_index * blocks[d] + position
                    kernel_index = kernel_index * block[d] + offsets[d]
                value = x[n, c * kernel_size + kernel_index, block_index]
                return te.sum(tvm.tirx.if_then_else(valid, value, tvm.tirx.const(0, x.dtype)), axis=offsets)

            return te.compute((batch, channels, *image), pixel, name="col2im")

        return bb.emit_te(compute, data)


@register_converter("Det")
class Det(onnx_frontend.OnnxOpConverter):
    """Determinants of [..., n, n] matrices for n <= 3 in closed form (cofactor expansion); larger matrices
    are refused (they would need a pivoted LU decomposition)."""

    @classmethod
    def _impl_v11(cls, bb, inputs, attr, params):
        data = inputs[0]
        shape = [int(d) for d in data.ty.shape.values]
        n = shape[-1]
        if len(shape) < 2 or shape[-2] != n or n > 3:
            raise NotImplementedError(f"Det of a {shape} tensor (edgetune computes square matrices up to 3x3)")
        rank = len(shape)

        def entry(i: int, j: int) -> relax.Expr:
            row = relax.op.take(data, relax.const(i, "int64"), axis=rank - 2)
            return bb.normalize(relax.op.take(row, relax.const(j, "int64"), axis=rank - 2))

        if n == 1:
            return entry(0, 0)

        def minor(rows: tuple[int, int], cols: tuple[int, int]) -> relax.Expr:
            return relax.op.subtract(relax.op.multiply(entry(rows[0], cols[0]), entry(rows[1], cols[1])),
                                     relax.op.multiply(entry(rows[0], cols[1]), entry(rows[1], cols[0])))

        if n == 2:
            return minor((0, 1), (0, 1))
        terms = [relax.op.multiply(entry(0, 0), minor((1, 2), (1, 2))),
                 relax.op.multiply(entry(0, 1), minor((1, 2), (0, 2))),
                 relax.op.multiply(entry(0, 2), minor((1, 2), (0, 1)))]
        return relax.op.add(relax.op.subtract(terms[0], terms[1]), terms[2])
