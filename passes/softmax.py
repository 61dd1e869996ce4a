"""A classifier's last dense layer and its softmax as one kernel.

CNN classifiers end in `softmax(x W + b)`: a dense kernel writes the logits, a second kernel reads them back
three times (max, exp-sum, normalise). FuseOps cannot join them (a reduction never fuses after another
kernel's reduction). `FuseDenseSoftmax` lowers the pair as one TE computation whose dense part keeps the
name the matmul schedule (`targets.cpu_schedule.Matmul`) recognises; the softmax stages run on the logits
while they are still in cache.
"""

from __future__ import annotations

import tvm
from tvm import relax, te, topi

from .rewrite import ChainFuser, replace_with_kernels, sole_use_call

DENSE_SOFTMAX = "dense_softmax"


def dense_softmax(x: te.Tensor, weight: te.Tensor, bias: te.Tensor | None) -> te.Tensor:
    """`softmax(x @ weight + bias, axis=-1)` for x [rows, depth] and weight [depth, cols]."""
    rows, depth = (int(d) for d in x.shape)
    cols = int(weight.shape[1])
    k = te.reduce_axis((0, depth), "k")
    logits = te.compute((rows, cols), lambda i, j: te.sum(x[i, k] * weight[k, j], axis=k), name="matmul")
    if bias is not None:
        logits = topi.add(logits, bias)
    return topi.nn.softmax(logits, axis=1)


@relax.expr_functor.mutator
class _DenseSoftmaxFuser(ChainFuser):
    def _match(self, call: relax.Call) -> relax.Expr | None:
        """`softmax(matmul(x, W) [+ b], axis=-1)`, x 2-D float32, W a 2-D constant, b a constant row."""
        if not isinstance(call.op, tvm.ir.Op) or call.op.name != "relax.nn.softmax" or call.ty.dtype != "float32":
            return None
        if call.ty.shape is None or len(call.ty.shape.values) != 2 or int(call.attrs.axis) not in (-1, 1):
            return None
        logits, bias = call.args[0], None
        added = sole_use_call(self.values, self.uses, logits, "relax.add")
        if added is not None:
            logits, bias = added.args
            if not isinstance(bias, tvm.ir.GenericConst):
                logits, bias = bias, logits
            if not isinstance(bias, tvm.ir.GenericConst) or bias.value.numpy().size != int(call.ty.shape.values[1]):
                return None
        matmul = sole_use_call(self.values, self.uses, logits, "relax.matmul")
        if matmul is None:
            return None
        x, weight = matmul.args
        if (not isinstance(weight, tvm.ir.GenericConst) or len(weight.value.shape) != 2 or x.ty.shape is None
                or len(x.ty.shape.values) != 2 or matmul.attrs.out_dtype not in ("", None, "float32")):
            return None
        if bias is not None:
            bias = relax.const(bias.value.numpy().reshape(-1))
        return self.builder_.call_te(dense_softmax, self.visit_expr(x), weight, bias,
                                     primfunc_name_hint=DENSE_SOFTMAX)


@tvm.transform.module_pass(opt_level=0, name="FuseDenseSoftmax")
class FuseDenseSoftmax:
    """Module pass: `softmax(x W + b)` over a constant weight becomes one kernel."""

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        return replace_with_kernels(mod, _DenseSoftmaxFuser)
