"""Quantizable units: a conv2d or dense with constant weights and the epilogue that stays integer-friendly.

A unit is `conv2d(x, W)` (ungrouped, NCHW/OIHW, input channels a multiple of 4 for the 4-byte dot
products) or `matmul(x, W)` with a 2-D constant W, followed by an optional per-channel bias add and ReLU /
max / min clamps with scalar bounds, each intermediate used once. After `FoldScaleIntoWeights` and
`ElementwiseActivations` this covers conv + BatchNorm + ReLU/ReLU6 and dense + bias + ReLU. The unit is the
granularity of quantization: one input tensor, one weight, one output tensor. In a pre-quantized (QDQ)
model the unit's input is the tensor in front of its quantize/dequantize pair, with the model's scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax

from ..fold_scale import per_channel
from ..rewrite import scalar_constant, use_counts
from .params import TensorQuant


@dataclass
class Unit:
    index: int
    kind: str  # "conv2d" or "dense"
    call: relax.Call  # the float conv2d / matmul
    input: relax.Expr  # the activation it reads
    weight: np.ndarray
    bias: np.ndarray | None
    lo: float  # clamp applied by the epilogue (-inf / inf: none)
    hi: float
    chain: list[relax.Var]  # bound variables from the producer to the output, in order
    input_quant: TensorQuant | None = None  # given by the model (a QDQ pair in front of it), not calibrated
    quantized_input: relax.Expr | None = None  # the model's own integer tensor behind `input`, if any

    @property
    def output(self) -> relax.Var:
        return self.chain[-1]

    @property
    def name(self) -> str:
        return f"{self.kind}_{self.index}"

    @property
    def channel_axis(self) -> int:
        return 0 if self.kind == "conv2d" else 1

    def describe(self) -> str:
        return f"{self.name} {'x'.join(map(str, self.weight.shape))}"


def _producer_kind(call: relax.Expr, channel_block: int) -> str | None:
    if not isinstance(call, relax.Call) or not isinstance(call.op, tvm.ir.Op) or len(call.args) != 2:
        return None
    if not isinstance(call.args[1], tvm.ir.GenericConst) or call.ty.dtype != "float32":
        return None
    weight_shape = call.args[1].value.shape
    if call.op.name == "relax.nn.conv2d":
        attrs = call.attrs
        in_channels = int(weight_shape[1])
        # output channels may be padded to whole blocks (realize does), input channels must fit the layout
        blockable = channel_block <= 1 or in_channels % channel_block == 0 or in_channels < channel_block
        if (attrs.groups == 1 and attrs.data_layout == "NCHW" and attrs.kernel_layout == "OIHW"
                and attrs.out_layout == "NCHW" and in_channels % 4 == 0 and blockable):
            return "conv2d"
    if call.op.name == "relax.matmul" and len(weight_shape) == 2 and weight_shape[0] % 4 == 0:
        return "dense"
    return None


def _is_op(expr: relax.Expr | None, name: str) -> bool:
    return isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name == name


def _model_quantization(data: relax.Expr, values: dict[relax.Var, relax.Expr]
                        ) -> tuple[relax.Expr, TensorQuant, relax.Expr | None] | None:
    """How a pre-quantized model says `data` is quantized, if it does: `data = dequantize(t, s, z)` with
    per-tensor constants. Returns (the unit's input, its quantization, the integer tensor to read or None):
    for `t = quantize(x, s, z)` the input is x (so a producing unit can requantize straight into it);
    for any other integer t (pooled or reshaped in uint8, QOperator style) the unit reads t itself."""
    dq = values.get(data) if isinstance(data, relax.Var) else None
    if not _is_op(dq, "relax.dequantize"):
        return None
    scale, zero_point = scalar_constant(dq.args[1]), scalar_constant(dq.args[2])
    dtype = str(dq.args[0].ty.dtype)
    if scale is None or zero_point is None or scale <= 0 or dtype not in ("uint8", "int8"):
        return None
    quant = TensorQuant(scale, int(zero_point), dtype)
    q = values.get(dq.args[0]) if isinstance(dq.args[0], relax.Var) else None
    if _is_op(q, "relax.quantize") and [scalar_constant(a) for a in q.args[1:3]] == [scale, zero_point]:
        return q.args[0], quant, None
    return data, quant, dq.args[0]


def find_units(func: relax.Function, channel_block: int = 0) -> list[Unit]:
    """The quantizable units of `func`, in binding order. With a `channel_block` (the blocked layout's),
    only convolutions that layout takes: the integer kernels are fast only there."""
    uses = use_counts(func)
    values: dict[relax.Var, relax.Expr] = {}
    consumers: dict[relax.Var, tuple[relax.Var, relax.Call]] = {}
    order: list[relax.Var] = []
    for block in func.body.blocks:
        for binding in block.bindings:
            if isinstance(binding, relax.VarBinding):
                values[binding.var] = binding.value
                order.append(binding.var)
                if isinstance(binding.value, relax.Call):
                    for arg in binding.value.args:
                        if isinstance(arg, relax.Var):
                            consumers.setdefault(arg, (binding.var, binding.value))
    units: list[Unit] = []
    for var in order:
        kind = _producer_kind(values[var], channel_block)
        if kind is None:
            continue
        call = values[var]
        weight = call.args[1].value.numpy()
        channels = weight.shape[0] if kind == "conv2d" else weight.shape[1]
        out_rank = len(call.ty.shape.values)
        bias, lo, hi, chain = None, -math.inf, math.inf, [var]
        while uses.get(chain[-1], 0) == 1 and chain[-1] in consumers:
            next_var, next_call = consumers[chain[-1]]
            if not isinstance(next_call.op, tvm.ir.Op):
                break
            op = next_call.op.name
            others = [arg for arg in next_call.args if not arg.same_as(chain[-1])]
            other = others[0] if len(others) == 1 else None
            if op == "relax.add" and bias is None and lo == -math.inf and hi == math.inf:
                vector = per_channel(other, out_rank, 1 if kind == "conv2d" else -1, channels) \
                    if isinstance(other, tvm.ir.GenericConst) else None
                if vector is None:
                    break
                bias = vector
            elif op == "relax.nn.relu" and not others:
                lo = max(lo, 0.0)
            elif op in ("relax.maximum", "relax.minimum") and scalar_constant(other) is not None:
                bound = scalar_constant(other)
                lo, hi = (max(lo, bound), hi) if op == "relax.maximum" else (lo, min(hi, bound))
            else:
                break
            chain.append(next_var)
        data, input_quant, quantized_input = _model_quantization(call.args[0], values) or (call.args[0], None, None)
        units.append(Unit(len(units), kind, call, data, weight, bias, lo, hi, chain, input_quant, quantized_input))
    return units
