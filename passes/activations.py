"""Activations as plain elementwise arithmetic, so they follow the producer's layout and fuse into it.

`ConvertLayout` has no layout rule for `clip` (ReLU6, HardSwish's inner clip) or `leakyrelu`: after the
blocked-layout pass each of them was preceded by a transform back to NCHW and ran as a kernel of its own.
As `maximum`/`minimum`/`multiply` with scalar constants they stay blocked and fuse into the conv's epilogue
(measured: conv + ReLU6 went from four kernels to one).
"""

from __future__ import annotations

import math

import tvm
from tvm import relax

from .rewrite import rewrite_relax_functions


def _scalar(value) -> float | None:
    """A clip bound (an immediate, possibly wrapped as a Relax value) as a Python float; None if unknown."""
    for _ in range(3):
        if isinstance(value, (int, float)):
            return float(value)
        value = getattr(value, "value", None)
    return None


@relax.expr_functor.mutator
class _Rewriter(relax.PyExprMutator):
    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if not isinstance(call.op, tvm.ir.Op) or not isinstance(call.ty, relax.TensorType):
            return call
        dtype = str(call.ty.dtype)
        if call.op.name == "relax.clip" and dtype.startswith("float"):
            lo, hi = _scalar(call.args[1]), _scalar(call.args[2])
            if lo is None or hi is None:
                return call
            out = call.args[0]
            if not math.isinf(lo):
                out = relax.op.maximum(out, relax.const(lo, dtype))
            if not math.isinf(hi):
                out = relax.op.minimum(out, relax.const(hi, dtype))
            return out
        if call.op.name == "relax.nn.leakyrelu" and 0.0 <= float(call.attrs.alpha) <= 1.0:
            x = call.args[0]  # for 0 <= alpha <= 1, max(x, alpha * x) is x for x > 0 and alpha * x otherwise
            return relax.op.maximum(x, relax.op.multiply(x, relax.const(float(call.attrs.alpha), dtype)))
        return call


@tvm.transform.module_pass(opt_level=0, name="ElementwiseActivations")
class ElementwiseActivations:
    """Clip and LeakyReLU (0 <= alpha <= 1) as maximum/minimum/multiply with scalar constants."""

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        return rewrite_relax_functions(mod, lambda module, _func: _Rewriter(module))


_BINARY = ("relax.add", "relax.subtract", "relax.multiply", "relax.divide", "relax.maximum", "relax.minimum")


@relax.expr_functor.mutator
class _RankAligner(relax.PyExprMutator):
    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if not isinstance(call.op, tvm.ir.Op) or call.op.name not in _BINARY:
            return call
        args = list(call.args)
        ranks = [len(a.ty.shape.values) if isinstance(a.ty, relax.TensorType) and a.ty.shape is not None
                 else None for a in args]
        if None in ranks or ranks[0] == ranks[1]:
            return call
        low = 0 if ranks[0] < ranks[1] else 1
        if not isinstance(args[low], tvm.ir.GenericConst):
            return call
        value = args[low].value.numpy()
        if value.size == 1:  # scalars broadcast in any layout as they are
            return call
        args[low] = relax.const(value.reshape((1,) * (ranks[1 - low] - ranks[low]) + value.shape),
                                str(value.dtype))
        return relax.Call(call.op, args, call.attrs)


@tvm.transform.module_pass(opt_level=0, name="FullRankConstants")
class FullRankConstants:
    """Constant operands of binary elementwise ops reshaped to the other operand's rank ([C,1,1] ->
    [1,C,1,1]): the same broadcast, but one `ConvertLayout` can carry into a blocked layout. DenseNet's
    exported BatchNorm scale/shift are rank 3; each of them forced a transform to NCHW and back."""

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        return rewrite_relax_functions(mod, lambda module, _func: _RankAligner(module))
