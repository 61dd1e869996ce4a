"""Operators whose stock converters give wrong results for some attributes or inputs.

Each replacement computes those cases exactly, or refuses them with a NotImplementedError that names what is
unsupported (the importer turns it into a one-line user error), and hands the rest to the stock converter.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.frontend.onnx import onnx_frontend

from .converters import register_converter


def _static_shape(expr: relax.Expr) -> list[int] | None:
    shape = getattr(expr.ty, "shape", None)
    if not isinstance(shape, relax.ShapeExpr) or not all(isinstance(d, tvm.tirx.IntImm) for d in shape.values):
        return None
    return [int(d) for d in shape.values]


def _constant(expr: relax.Expr | None) -> np.ndarray | None:
    return expr.value.numpy() if isinstance(expr, tvm.ir.GenericConst) else None


@register_converter("IsInf")
class IsInf(onnx_frontend.OnnxOpConverter):
    """Honours detect_positive / detect_negative (the stock converter ignores both)."""

    @classmethod
    def _impl_v10(cls, bb, inputs, attr, params):
        data = inputs[0]
        found = relax.op.isinf(data)
        zero = relax.const(0, str(data.ty.dtype))
        if not attr.get("detect_positive", 1):
            found = relax.op.logical_and(found, relax.op.less(data, zero))
        if not attr.get("detect_negative", 1):
            found = relax.op.logical_and(found, relax.op.greater(data, zero))
        return found


@register_converter("BitShift")
class BitShift(onnx_frontend.OnnxOpConverter):
    """Shifts by a negative amount or by the bit width or more give the sign fill (ONNX opset 28's rule, and
    what every opset's reference computes), not the hardware's wrapped shift."""

    @classmethod
    def _impl_v11(cls, bb, inputs, attr, params):
        data, amount = inputs
        dtype = str(data.ty.dtype)
        bits = int("".join(c for c in dtype if c.isdigit()))
        right = attr.get("direction", b"LEFT").decode("ascii") == "RIGHT"
        shifted = (relax.op.right_shift if right else relax.op.left_shift)(data, amount)
        too_far = relax.op.greater_equal(amount, relax.const(bits, str(amount.ty.dtype)))
        if not dtype.startswith("uint"):
            too_far = relax.op.logical_or(too_far, relax.op.less(amount, relax.const(0, str(amount.ty.dtype))))
        fill = relax.op.zeros_like(shifted)
        if right and not dtype.startswith("uint"):
            negative = relax.op.less(data, relax.const(0, dtype))
            fill = relax.op.where(negative, relax.op.full_like(shifted, relax.const(-1, dtype)), fill)
        return relax.op.where(too_far, fill, shifted)


@register_converter("SpaceToDepth")
class SpaceToDepth(onnx_frontend.OnnxOpConverter):
    """Both orderings of opset 28 (DCR, the default and only one before, and CRD; the stock converter
    always uses DCR)."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        data = inputs[0]
        shape = _static_shape(data)
        if shape is None:
            raise NotImplementedError("SpaceToDepth needs a static input shape")
        block = int(attr["blocksize"])
        n, c, h, w = shape
        mode = attr.get("mode", b"DCR").decode("ascii")
        blocks = relax.op.reshape(data, (n, c, h // block, block, w // block, block))
        order = (0, 3, 5, 1, 2, 4) if mode == "DCR" else (0, 1, 3, 5, 2, 4)
        return relax.op.reshape(relax.op.permute_dims(blocks, order), (n, c * block * block, h // block,
                                                                        w // block))


@register_converter("BatchNormalization")
class BatchNormalization(onnx_frontend.BatchNormalization):
    """Training mode (batch statistics and running-stat outputs) is refused: the stock converter ignores it
    and normalizes with the running statistics."""

    @classmethod
    def _impl_v15(cls, bb, inputs, attr, params):  # the stock converter's only version, for every opset
        if attr.get("training_mode", 0):
            raise NotImplementedError("BatchNormalization with training_mode=1 is training-only; export the "
                                      "model in eval mode")
        return super()._impl_v15(bb, inputs, attr, params)


@register_converter("RoiAlign")
class RoiAlign(onnx_frontend.RoiAlign):
    """mode=max is refused: the stock converter's result differs from ONNX's (the max of the bilinear
    samples' weighted corners)."""

    @staticmethod
    def _check(attr) -> None:
        if attr.get("mode", b"avg") == b"max":
            raise NotImplementedError("RoiAlign mode=max is not supported (only avg)")

    @classmethod
    def _impl_v10(cls, bb, inputs, attr, params):
        cls._check(attr)
        return super()._impl_v10(bb, inputs, attr, params)

    @classmethod
    def _impl_v16(cls, bb, inputs, attr, params):
        cls._check(attr)
        return super()._impl_v16(bb, inputs, attr, params)


class _NonEmptyReduction:
    """ReduceMax/ReduceMin over an empty set must give -inf/+inf (the stock converter gives the dtype's
    finite extreme): refused, in every opset's form (axes as attribute, then as input)."""

    @classmethod
    def _check(cls, inputs, attr) -> None:
        shape = _static_shape(inputs[0])
        if shape is None or 0 not in shape:
            return
        axes = attr.get("axes")
        if axes is None and len(inputs) > 1 and inputs[1] is not None:
            axes = _constant(inputs[1])
        reduced = range(len(shape)) if axes is None or len(axes) == 0 else [int(a) % len(shape) for a in axes]
        if any(shape[a] == 0 for a in reduced):
            raise NotImplementedError(f"{cls.__name__} over an empty set of elements is not supported")

    @classmethod
    def _impl_v11(cls, bb, inputs, attr, params):
        cls._check(inputs, attr)
        return super()._impl_v11(bb, inputs, attr, params)

    @classmethod
    def _impl_v18(cls, bb, inputs, attr, params):
        cls._check(inputs, attr)
        return super()._impl_v18(bb, inputs, attr, params)


@register_converter("ReduceMax")
class ReduceMax(_NonEmptyReduction, onnx_frontend.ReduceMax):
    pass


@register_converter("ReduceMin")
class ReduceMin(_NonEmptyReduction, onnx_frontend.ReduceMin):
    pass


@register_converter("Resize")
class Resize(onnx_frontend.Resize):
    """Antialiasing is refused, and so is linear or cubic resizing by scales whose output sizes are rounded:
    ONNX maps coordinates with the given scale, the stock converter with the ratio of the rounded sizes."""

    @classmethod
    def _impl_v18(cls, bb, inputs, attr, params):
        if attr.get("antialias", 0):
            raise NotImplementedError("Resize with antialias=1 is not supported")
        mode = attr.get("mode", b"nearest").decode("ascii")
        scales = _constant(inputs[2]) if len(inputs) > 2 and inputs[2] is not None else None
        shape = _static_shape(inputs[0])
        if mode != "nearest" and scales is not None and scales.size and shape is not None and attr.get("axes") is None:
            exact = [float(size) * float(scale) for size, scale in zip(shape, scales)]
            if any(value != int(value) for value in exact):
                raise NotImplementedError(f"{mode} Resize by scales {scales.tolist()} of a {shape} input rounds "
                                          "the output size, which is not supported; give sizes instead")
        return super()._impl_v18(bb, inputs, attr, params)


@register_converter("ConvTranspose")
class ConvTranspose(onnx_frontend.ConvTranspose):
    """An explicit output_shape is refused: the stock converter ignores it (and its implied padding)."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        if "output_shape" in attr:
            raise NotImplementedError("ConvTranspose with output_shape is not supported; give pads and "
                                      "output_padding instead")
        return super()._impl_v1(bb, inputs, attr, params)


@register_converter("SequenceInsert")
class SequenceInsert(onnx_frontend.OnnxOpConverter):
    """A given negative position counts from the back (-1 inserts before the last tensor); the stock
    converter treats every negative position like the missing one (append)."""

    @classmethod
    def _impl_v11(cls, bb, inputs, attr, params):
        items = list(inputs[0])
        if len(inputs) < 3 or inputs[2] is None:
            return relax.Tuple(items + [inputs[1]])
        position = _constant(inputs[2])
        if position is None:
            raise NotImplementedError("SequenceInsert needs its position at compile time")
        position = int(position)
        if not -len(items) <= position <= len(items):
            raise NotImplementedError(f"SequenceInsert position {position} is outside [-{len(items)}, "
                                      f"{len(items)}]")
        items.insert(position, inputs[1])  # Python's list.insert is ONNX's rule for both signs
        return relax.Tuple(items)
