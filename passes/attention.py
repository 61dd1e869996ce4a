"""Scaled dot-product attention recognised in the Relax graph and lowered as one kernel.

Exporters write attention as `matmul(q * a, transpose(k) * b)` [+ mask] -> softmax -> `matmul(., v)`: three
kernels, with the score matrix and its softmax written to memory and read back. `FuseAttention` replaces
the chain by one TE computation, `attention(q, k, v, scale, mask)`, whose schedule
(`targets.cpu_schedule.Attention`) computes each query row's scores, softmax and output in registers and a
row-sized buffer: per head only K transposed once and the output are written.
"""

from __future__ import annotations

import math

import tvm
from tvm import relax, te, topi

from .rewrite import ChainFuser, bound_call, replace_with_kernels, scalar_constant

ATTENTION = "attention"


def attention(q: te.Tensor, k: te.Tensor, v: te.Tensor, scale: float, mask: te.Tensor | None) -> te.Tensor:
    """`softmax(q k^T * scale + mask) v` over the last two axes; leading axes are batch/head."""
    *lead, rows, depth = (int(d) for d in q.shape)
    cols, out_depth = int(k.shape[-2]), int(v.shape[-1])
    # K transposed once per head, so that a query row's scores are contiguous in the key index
    k_t = te.compute((*lead, depth, cols), lambda *idx: k[(*idx[:-2], idx[-1], idx[-2])], name="attention_k_t")
    d = te.reduce_axis((0, depth), "d")
    scores = te.compute((*lead, rows, cols), lambda *idx: te.sum(
        q[(*idx[:-1], d)] * k_t[(*idx[:-2], d, idx[-1])], axis=d), name="attention_scores")
    if mask is not None:
        masked = topi.add(topi.multiply(scores, tvm.tirx.const(scale, "float32")), mask)
    else:
        masked = topi.multiply(scores, tvm.tirx.const(scale, "float32"))
    j = te.reduce_axis((0, cols), "j")
    row_max = te.compute((*lead, rows), lambda *idx: te.max(masked[(*idx, j)], axis=j), name="attention_max")
    # TVM's fast_exp (a polynomial) vectorises where `exp`, a libm call per element, does not
    fast = topi.fast_exp(te.compute((*lead, rows, cols), lambda *idx: masked[idx] - row_max[idx[:-1]],
                                    name="T_shifted"))
    exp = te.compute((*lead, rows, cols), lambda *idx: fast[idx], name="attention_exp")
    j2 = te.reduce_axis((0, cols), "j2")
    row_sum = te.compute((*lead, rows), lambda *idx: te.sum(exp[(*idx, j2)], axis=j2), name="attention_sum")
    j3 = te.reduce_axis((0, cols), "j3")
    weighted = te.compute((*lead, rows, out_depth), lambda *idx: te.sum(
        exp[(*idx[:-1], j3)] * v[(*idx[:-2], j3, idx[-1])], axis=j3), name="attention_weighted")
    return te.compute((*lead, rows, out_depth), lambda *idx: weighted[idx] / row_sum[idx[:-1]], name=ATTENTION)


def _scaled(expr, values) -> tuple[relax.Expr, float]:
    """`x * c` with a scalar constant c -> (x, c); anything else -> (expr, 1)."""
    call = bound_call(expr, values, "relax.multiply")
    if call is not None:
        for data, const in (call.args, call.args[::-1]):
            c = scalar_constant(const)
            if c is not None:
                return data, c
    return expr, 1.0


def _transposed_last(expr, values) -> relax.Expr | None:
    """x if `expr` is `permute_dims(x)` swapping exactly the last two axes."""
    call = bound_call(expr, values, "relax.permute_dims")
    if call is None or call.attrs.axes is None:
        return None
    axes = [int(a) for a in call.attrs.axes]
    rank = len(axes)
    if rank < 2 or axes != [*range(rank - 2), rank - 1, rank - 2]:
        return None
    return call.args[0]


@relax.expr_functor.mutator
class _AttentionFuser(ChainFuser):
    def _single(self, var) -> bool:
        return isinstance(var, relax.Var) and self.uses.get(var, 0) == 1

    def _match(self, call: relax.Call) -> relax.Expr | None:
        """`matmul(softmax(matmul(q*a, k^T*b) [+ mask], axis=-1), v)` -> one attention kernel."""
        if not isinstance(call.op, tvm.ir.Op) or call.op.name != "relax.matmul" or call.ty.dtype != "float32":
            return None
        probs, v = call.args
        softmax = bound_call(probs, self.values, "relax.nn.softmax")
        if softmax is None or not self._single(probs):
            return None
        rank = len(softmax.ty.shape.values)
        if int(softmax.attrs.axis) not in (-1, rank - 1):
            return None
        logits, mask = softmax.args[0], None
        added = bound_call(logits, self.values, "relax.add")
        if added is not None and self._single(logits):
            logits, mask = added.args
        scores = bound_call(logits, self.values, "relax.matmul")
        if scores is None or not self._single(logits):
            return None
        q, q_scale = _scaled(scores.args[0], self.values)
        k_t, k_scale = _scaled(scores.args[1], self.values)
        k = _transposed_last(k_t, self.values)
        shapes = [x.ty.shape.values if isinstance(x.ty, relax.TensorType) and x.ty.shape is not None else None
                  for x in (q, k, v)]
        if k is None or None in shapes or not (len(shapes[0]) == len(shapes[1]) == len(shapes[2]) == rank):
            return None
        if any(not all(isinstance(d, tvm.tirx.IntImm) for d in s) for s in shapes):
            return None
        if list(map(int, shapes[0][:-2])) != list(map(int, shapes[1][:-2])) or int(shapes[1][-2]) != int(shapes[2][-2]):
            return None
        scale = q_scale * k_scale
        if not math.isfinite(scale):
            return None
        args = [self.visit_expr(x) for x in (q, k, v)]
        mask_arg = self.visit_expr(mask) if mask is not None else None
        return self.builder_.call_te(attention, *args, scale, mask_arg, primfunc_name_hint=ATTENTION)


@tvm.transform.module_pass(opt_level=0, name="FuseAttention")
class FuseAttention:
    """Module pass: every scaled dot-product attention chain of float32 tensors becomes one kernel."""

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        return replace_with_kernels(mod, _AttentionFuser)
