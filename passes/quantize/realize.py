"""Realize: each quantized unit becomes an int8 x int8 -> int32 kernel with an integer epilogue.

For a unit `act(conv(x, W) + b)` with calibrated input `x ~ s_x (q_x - z_x)` and per-channel weights
`W ~ s_w q_w`:
    acc = conv(q_x, q_w) + (round(b / (s_x s_w)) - z_x * sum(q_w))     (int32; the constant folded at compile time)
If a quantized unit reads the output (calibrated `y ~ s_y (q_y - z_y)`), the epilogue requantizes in integers:
    q_y = clamp(((acc * M) + 2^(n-1)) >> n) + z_y)     with M * 2^-n = s_x s_w / s_y   (fixed point)
where the clamp folds the activation (ReLU: q_y >= z_y). Otherwise it dequantizes (`acc * s_x s_w`, then
the float activation). Quantize ops appear only where a float tensor enters an integer unit and
dequantize ops only where an integer tensor leaves for a float consumer, so chains of convolutions never
leave the integer domain; both fuse into the neighbouring kernels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import tvm
from tvm import relax

from ..rewrite import use_counts
from .params import TensorQuant, fixed_point_multiplier, weight_quant
from .units import Unit, find_units


@dataclass
class IntegerUnit:
    """A realized unit with an integer output, as an accelerator receives it:
    `clip((conv(x_q, weight) + offset + 2^(shift-1)) >> shift, qmin, qmax)`."""

    name: str
    kind: str  # "conv2d" or "dense"
    data: relax.Expr  # the quantized input (8-bit)
    weight: np.ndarray  # int8, OIHW (conv2d) or K x N (dense)
    offset: np.ndarray  # int32 per output channel (bias and zero-point correction)
    shift: int
    qmin: int
    qmax: int
    out: TensorQuant
    attrs: object  # the float conv2d's attributes (strides, padding, dilation)


class Accelerator(Protocol):
    def offload(self, unit: IntegerUnit) -> relax.Expr | None:
        """The expression computing `unit` on the accelerator, or None to keep it on the CPU."""


@dataclass
class QuantPlan:
    """What realize needs: the calibrated quantization of each unit's input, and the units kept in float."""

    inputs: dict[int, TensorQuant]
    power_of_two: bool = False
    channel_block: int = 0  # the blocked layout's, which decides the units (see `find_units`)
    float_units: set[int] = field(default_factory=set)
    per_channel_weights: bool = True
    # Output quantization of units no quantized unit reads (calibrated when the target wants every unit's
    # output in integers, as an accelerator that stores int8 does); other outputs take their readers' input's.
    outputs: dict[int, TensorQuant] = field(default_factory=dict)
    accelerator: Accelerator | None = None  # takes integer-output units it can run (shift-only requantize)


def _clamp_levels(unit: Unit, out: TensorQuant) -> tuple[int, int]:
    """The output levels the unit's activation clamp allows (ReLU: from the zero point up)."""
    qlo = out.qmin if math.isinf(unit.lo) else max(out.qmin, out.level(unit.lo))
    qhi = out.qmax if math.isinf(unit.hi) else min(out.qmax, out.level(unit.hi))
    return qlo, qhi


def _channel_shape(unit: Unit, rank: int) -> list[int]:
    shape = [1] * rank if unit.kind == "conv2d" else [-1]
    if unit.kind == "conv2d":
        shape[1] = -1
    return shape


@relax.expr_functor.mutator
class _Realizer(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, func: relax.Function, plan: QuantPlan):
        super().__init__(mod)
        self.plan = plan
        units = [u for u in find_units(func, plan.channel_block) if u.index not in plan.float_units and u.index in plan.inputs]
        uses = use_counts(func)
        self.by_output = {u.output: u for u in units}
        self.folded = {var for u in units for var in u.chain[:-1]}
        readers: dict[relax.Var, list[Unit]] = {}
        for u in units:
            if isinstance(u.input, relax.Var):
                readers.setdefault(u.input, []).append(u)
        # integer output: some quantized unit reads it (they share its calibration); others get a dequantize
        self.int_output: dict[relax.Var, TensorQuant] = {}
        self.float_readers: dict[relax.Var, bool] = {}
        for u in units:
            consumers = readers.get(u.output, [])
            out = plan.inputs[consumers[0].index] if consumers else plan.outputs.get(u.index)
            if out is not None:
                self.int_output[u.output] = out
                self.float_readers[u.output] = uses.get(u.output, 0) > len(consumers)
        self.quantized: dict[relax.Expr, relax.Expr] = {}  # float tensor -> its quantized twin

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        if binding.var in self.folded:
            return
        unit = self.by_output.get(binding.var)
        if unit is None:
            super().visit_var_binding_(binding)
            return
        result = self._unit(unit)
        if result is not None:
            self.builder_.emit_normalized(relax.VarBinding(binding.var, self.builder_.normalize(result)))

    def _bind(self, var: relax.Var, value: relax.Expr) -> None:
        self.builder_.emit_normalized(relax.VarBinding(var, self.builder_.normalize(value)))

    def _quantized_input(self, unit: Unit) -> tuple[relax.Expr, TensorQuant]:
        quant = self.plan.inputs[unit.index]
        if unit.input not in self.quantized and unit.quantized_input is not None:  # the model's integer tensor
            self.quantized[unit.input] = self.visit_expr(unit.quantized_input)
        if unit.input not in self.quantized:
            x = self.visit_expr(unit.input)
            q = relax.op.round(relax.op.divide(x, relax.const(quant.scale, "float32")))
            if quant.zero_point:
                q = relax.op.add(q, relax.const(float(quant.zero_point), "float32"))
            q = relax.op.minimum(relax.op.maximum(q, relax.const(float(quant.qmin), "float32")),
                                 relax.const(float(quant.qmax), "float32"))
            self.quantized[unit.input] = self.builder_.emit(relax.op.astype(q, quant.dtype), "quantized")
        return self.quantized[unit.input], quant

    def _unit(self, unit: Unit) -> relax.Expr | None:
        """The integer unit; returns the float value for the output var, or None when it was bound already."""
        x_q, x_quant = self._quantized_input(unit)
        rank = len(unit.call.ty.shape.values)
        shape = _channel_shape(unit, rank)
        w_q, w_scale = weight_quant(unit.weight, unit.channel_axis, self.plan.power_of_two,
                                      self.plan.per_channel_weights)
        bias = unit.bias
        channels = w_q.shape[0] if unit.kind == "conv2d" else w_q.shape[1]
        block = self.plan.channel_block
        extra = (-channels) % block if unit.kind == "conv2d" and block > 1 else 0
        if extra:  # output channels padded to whole blocks (zero weights), sliced off after the epilogue
            w_q = np.pad(w_q, [(0, extra), (0, 0), (0, 0), (0, 0)])
            w_scale = np.pad(w_scale, (0, extra), constant_values=1.0)
            bias = None if bias is None else np.pad(bias, (0, extra))

        def trim(expr: relax.Expr) -> relax.Expr:
            return relax.op.strided_slice(expr, [1], [0], [channels]) if extra else expr

        if unit.kind == "conv2d":
            a = unit.call.attrs
            padding = [int(p) for p in a.padding]
            if x_quant.zero_point and any(padding):  # real zero is the zero point: pad with it explicitly
                top, left, bottom, right = padding
                x_q = relax.op.nn.pad(x_q, [0, 0, 0, 0, top, bottom, left, right], "constant",
                                      float(x_quant.zero_point))
                padding = [0, 0, 0, 0]
            acc = relax.op.nn.conv2d(x_q, relax.const(w_q), a.strides, padding, a.dilation, 1, "NCHW", "OIHW",
                                     "NCHW", "int32")
            weight_sums = w_q.astype(np.int64).sum(axis=(1, 2, 3))
        else:
            acc = relax.op.matmul(x_q, relax.const(w_q), out_dtype="int32")
            weight_sums = w_q.astype(np.int64).sum(axis=0)
        real_scale = x_quant.scale * w_scale
        offset = -x_quant.zero_point * weight_sums
        if bias is not None:
            offset = offset + np.round(bias / real_scale).astype(np.int64)
        out_quant = self.int_output.get(unit.output)
        integer_out = out_quant is not None and np.all(real_scale / out_quant.scale < 0.5)
        offloaded = self._offload(unit, x_q, w_q, offset, real_scale, out_quant) if integer_out else None
        if np.any(offset):
            acc = relax.op.add(acc, relax.const(offset.astype(np.int32).reshape(shape)))
        if integer_out:
            if offloaded is None:
                acc = self.builder_.emit(acc, "accumulator")
                offloaded = trim(self._requantize(acc, real_scale, out_quant, unit, shape))
            y_q = self.builder_.emit(offloaded, "requantized")
            self.quantized[unit.output] = y_q
            if not self.float_readers[unit.output]:
                return None
            return relax.op.multiply(
                relax.op.subtract(relax.op.astype(y_q, "float32"), relax.const(float(out_quant.zero_point))),
                relax.const(out_quant.scale, "float32"))
        y = relax.op.multiply(relax.op.astype(acc, "float32"),
                              relax.const(real_scale.astype(np.float32).reshape(shape)))
        if not math.isinf(unit.lo):
            y = relax.op.maximum(y, relax.const(unit.lo, "float32"))
        if not math.isinf(unit.hi):
            y = relax.op.minimum(y, relax.const(unit.hi, "float32"))
        return trim(y)

    def _offload(self, unit: Unit, x_q: relax.Expr, w_q: np.ndarray, offset: np.ndarray, real_scale: np.ndarray,
                 out: TensorQuant) -> relax.Expr | None:
        """The accelerator's expression for an integer-output unit whose requantization is one shift."""
        if self.plan.accelerator is None:
            return None
        multiplier, shift = fixed_point_multiplier(real_scale / out.scale, self.plan.power_of_two)
        if np.any(multiplier != 1) or np.any(shift != shift.flat[0]) or out.zero_point:
            return None
        qlo, qhi = _clamp_levels(unit, out)
        return self.plan.accelerator.offload(IntegerUnit(
            unit.name, unit.kind, x_q, w_q, offset.astype(np.int32), int(shift.flat[0]), qlo, qhi, out,
            unit.call.attrs))

    def _requantize(self, acc: relax.Expr, real_scale: np.ndarray, out: TensorQuant, unit: Unit,
                    shape: list[int]) -> relax.Expr:
        multiplier, shift = fixed_point_multiplier(real_scale / out.scale, self.plan.power_of_two)
        qlo, qhi = _clamp_levels(unit, out)
        t = relax.op.astype(acc, "int64")
        if np.any(multiplier != 1):
            t = relax.op.multiply(t, relax.const(multiplier.reshape(shape), "int64"))
        t = relax.op.right_shift(relax.op.add(t, relax.const((np.int64(1) << (shift - 1)).reshape(shape), "int64")),
                                 relax.const(shift.reshape(shape), "int64"))
        t = relax.op.add(t, relax.const(out.zero_point, "int64"))
        t = relax.op.minimum(relax.op.maximum(t, relax.const(qlo, "int64")), relax.const(qhi, "int64"))
        return relax.op.astype(t, out.dtype)


@tvm.transform.module_pass(opt_level=0, name="RealizeQuantization")
class RealizeQuantization:
    """Rewrite `main` with the integer units of a calibrated `QuantPlan`."""

    def __init__(self, plan: QuantPlan):
        self.plan = plan

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        mod = mod.clone()
        mod["main"] = _Realizer(mod, mod["main"], self.plan).visit_expr(mod["main"])
        return relax.transform.DeadCodeElimination()(mod)
