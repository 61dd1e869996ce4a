"""edgetune's own ONNX operator converters, registered over the stock Relax importer's table.

The stock importer is used as it is; where one of its converters produces poor or wrong Relax, edgetune
registers a replacement here and `edgetune_converters()` puts the replacements in front of the stock table
for the duration of one import. The importer is never forked or patched outside that window.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Callable, Iterator

import tvm
from tvm import relax
from tvm.relax.frontend.onnx import onnx_frontend

_CONVERTERS: dict[str, type] = {}


def register_converter(op_type: str) -> Callable[[type], type]:
    """Class decorator: use the decorated `OnnxOpConverter` for `op_type` instead of the stock one."""

    def register(cls: type) -> type:
        _CONVERTERS[op_type] = cls
        return cls

    return register


def converter_overrides() -> dict[str, type]:
    return dict(_CONVERTERS)


def convert_map() -> dict[str, type]:
    """The table an import resolves operators through: the stock converters, edgetune's in front."""
    return {**onnx_frontend._get_convert_map(), **_CONVERTERS}


@contextlib.contextmanager
def edgetune_converters() -> Iterator[None]:
    """Within the block, the importer resolves operators through edgetune's table first."""
    stock = onnx_frontend._get_convert_map
    onnx_frontend._get_convert_map = lambda: {**stock(), **_CONVERTERS}
    try:
        yield
    finally:
        onnx_frontend._get_convert_map = stock


class _PairwiseVariadic(onnx_frontend.OnnxOpConverter):
    """Sum/Max/Min/Mean as a chain of binary ops.

    The stock converter stacks the inputs into a new axis and reduces it, which materialises broadcast copies
    and a rank+1 tensor: on light_resnet50 the residual `Sum`s alone took 18 ms of 94, and the 5-D
    intermediate stops layout conversion. Pairwise binary ops broadcast the same way (ONNX's multidirectional
    broadcasting) and fuse into the producer's epilogue.
    """

    binary: Callable = None

    @classmethod
    def _fold(cls, bb: relax.BlockBuilder, inputs: list) -> relax.Expr:
        return functools.reduce(lambda lhs, rhs: bb.normalize(cls.binary(lhs, rhs)), inputs)

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        return cls._fold(bb, list(inputs))


@register_converter("Sum")
class Sum(_PairwiseVariadic):
    binary = staticmethod(relax.op.add)


@register_converter("Max")
class Max(_PairwiseVariadic):
    binary = staticmethod(relax.op.maximum)


@register_converter("Min")
class Min(_PairwiseVariadic):
    binary = staticmethod(relax.op.minimum)


@register_converter("Mean")
class Mean(_PairwiseVariadic):
    binary = staticmethod(relax.op.add)

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        total = cls._fold(bb, list(inputs))
        dtype = total.ty.dtype
        return relax.op.divide(total, relax.const(len(inputs), dtype))


@register_converter("Dropout")
class Dropout(onnx_frontend.OnnxOpConverter):
    """Dropout at inference is the identity (and an all-true mask).

    The stock converter emits `relax.nn.dropout`, a tuple-valued op that no inference pass removes; the
    tuple stops layout conversion and fusion around it (light_squeezenet).
    """

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        data = inputs[0]
        training = inputs[2] if len(inputs) > 2 else None
        if training is not None and not (isinstance(training, tvm.ir.GenericConst)
                                         and not bool(training.value.numpy())):
            raise NotImplementedError("Dropout with training_mode set is training-only; export the model in "
                                      "eval mode")
        if attr.get("tvm_custom", {}).get("num_outputs", 1) > 1:
            return relax.Tuple([data, relax.op.ones_like(data, "bool")])
        return data


@register_converter("Clip")
class Clip(onnx_frontend.OnnxOpConverter):
    """Clip as Relax `maximum`/`minimum`.

    The stock converter emits TIR calls (`call_te`) at import time, which no Relax pass can see through: after
    the blocked-layout pass each ReLU6 ran behind a transform back to NCHW, as a kernel of its own.
    """

    @classmethod
    def _apply(cls, data: relax.Expr, low: relax.Expr | None, high: relax.Expr | None) -> relax.Expr:
        out = data
        if low is not None:
            out = relax.op.maximum(out, low)
        if high is not None:
            out = relax.op.minimum(out, high)
        return out

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):  # opsets 1-10: bounds are attributes
        dtype = str(inputs[0].ty.dtype)
        low, high = attr.get("min"), attr.get("max")
        return cls._apply(inputs[0], None if low is None else relax.const(float(low), dtype),
                          None if high is None else relax.const(float(high), dtype))

    @classmethod
    def _impl_v11(cls, bb, inputs, attr, params):  # opset 11+: optional inputs
        bounds = list(inputs[1:3]) + [None] * (3 - len(inputs))
        return cls._apply(inputs[0], bounds[0], bounds[1])
