"""Fold per-channel scale/shift chains (inference BatchNorm, bias, Mul/Div/Add/Sub by constants) into the
weights of the conv2d or matmul that produces them.

After `DecomposeOpsForInference` a BatchNorm is `(y - mean) / sqrt(var + eps) * gamma + beta`: four
elementwise ops per element, one of them a division, re-run on every inference. Folded, the producer's
weights are scaled once at compile time and only a bias add is left, which fuses into the producer's
epilogue. A chain is folded only while each intermediate has a single use, so no convolution is duplicated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
import tvm_ffi
from tvm import relax

from .rewrite import rewrite_relax_functions, use_counts

_CHAIN_OPS = ("relax.add", "relax.subtract", "relax.multiply", "relax.divide")


@dataclass
class _Affine:
    """`producer(x, weight) * scale + shift`, per output channel."""

    producer: relax.Call
    weight: np.ndarray
    scale: np.ndarray
    shift: np.ndarray


def _channel_axis(call: relax.Call) -> int | None:
    """Output axis of `call` that indexes its weight's output channels, or None if it cannot be folded."""
    if not isinstance(call.op, tvm.ir.Op) or len(call.args) != 2 or not isinstance(call.args[1], tvm.ir.GenericConst):
        return None
    rank = len(call.args[1].value.shape)
    if call.op.name == "relax.nn.conv2d":
        attrs = call.attrs
        ok = attrs.kernel_layout == "OIHW" and attrs.out_layout == "NCHW" and attrs.out_dtype in ("", None)
        return 1 if ok else None
    if call.op.name == "relax.matmul" and rank == 2:
        return -1
    return None


def per_channel(const: tvm.ir.GenericConst, out_rank: int, axis: int, channels: int) -> np.ndarray | None:
    """`const` as a vector over the channel axis, if it varies along no other axis of the output."""
    value = const.value.numpy()
    if value.ndim > out_rank:
        return None
    shape = (1,) * (out_rank - value.ndim) + value.shape
    axis = axis % out_rank
    if any(d != 1 for i, d in enumerate(shape) if i != axis) or shape[axis] not in (1, channels):
        return None
    return np.broadcast_to(value.reshape(-1), (channels,)).astype(np.float64)


@relax.expr_functor.mutator
class _ScaleFolder(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, uses: dict[relax.Var, int]):
        super().__init__(mod)
        self.uses = uses
        self.chains: dict[relax.Var, _Affine] = {}

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        folded = self._fold(binding)
        if folded is None:
            super().visit_var_binding_(binding)
        else:  # the same var, bound to the folded producer: uses and dataflow outputs stay valid
            self.builder_.emit_normalized(relax.VarBinding(binding.var, self.builder_.normalize(folded)))

    def _fold(self, binding: relax.VarBinding) -> relax.Expr | None:
        """Track conv/matmul producers and extend their chains; the folded expression for `binding`, if any."""
        value = binding.value
        if not isinstance(value, relax.Call) or not isinstance(value.op, tvm.ir.Op):
            return None
        if _channel_axis(value) is not None and value.ty.dtype in ("float32", "float64", "float16"):
            weight = value.args[1].value.numpy()
            channels = weight.shape[0] if value.op.name == "relax.nn.conv2d" else weight.shape[-1]
            self.chains[binding.var] = _Affine(value, weight, np.ones(channels), np.zeros(channels))
            return None
        if value.op.name not in _CHAIN_OPS:
            return None
        lhs, rhs = value.args
        if isinstance(lhs, tvm.ir.GenericConst) and value.op.name in ("relax.add", "relax.multiply"):
            lhs, rhs = rhs, lhs
        chain = self.chains.get(lhs) if isinstance(lhs, relax.Var) else None
        if chain is None or not isinstance(rhs, tvm.ir.GenericConst) or self.uses.get(lhs, 0) != 1:
            return None
        out_rank = len(value.ty.shape.values)
        axis = _channel_axis(chain.producer)
        c = per_channel(rhs, out_rank, axis, len(chain.scale))
        if c is None or not tvm_ffi.structural_equal(value.ty.shape, chain.producer.ty.shape):
            return None
        scale, shift = chain.scale.copy(), chain.shift.copy()
        if value.op.name == "relax.add":
            shift += c
        elif value.op.name == "relax.subtract":
            shift -= c
        elif value.op.name == "relax.multiply":
            scale, shift = scale * c, shift * c
        elif np.all(c != 0):
            scale, shift = scale / c, shift / c
        else:
            return None
        affine = _Affine(chain.producer, chain.weight, scale, shift)
        self.chains[binding.var] = affine
        return self._materialize(affine, out_rank, axis)

    def _materialize(self, affine: _Affine, out_rank: int, axis: int) -> relax.Expr:
        producer, dtype = affine.producer, affine.weight.dtype
        if producer.op.name == "relax.nn.conv2d":
            weight = affine.weight * affine.scale.reshape(-1, 1, 1, 1)
        else:
            weight = affine.weight * affine.scale.reshape(1, -1)
        data = self.visit_expr(producer.args[0])
        call = relax.Call(producer.op, [data, relax.const(weight.astype(dtype))], producer.attrs)
        if not np.any(affine.shift):
            return call
        shape = [1] * out_rank
        shape[axis % out_rank] = -1
        return relax.op.add(call, relax.const(affine.shift.reshape(shape).astype(dtype)))


@tvm.transform.module_pass(opt_level=0, name="FoldScaleIntoWeights")
class FoldScaleIntoWeights:
    """Module pass; run after `DecomposeOpsForInference` and `FoldConstant`, before layout conversion."""

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        mod = rewrite_relax_functions(mod, lambda module, func: _ScaleFolder(module, use_counts(func)))
        return relax.transform.DeadCodeElimination()(mod)  # the unfolded producers
