"""Local response normalisation (AlexNet, GoogLeNet / Inception-v1) as one kernel in its input's own layout.

TVM's ONNX importer writes `LRN` as `x * x -> expand_dims -> avg_pool3d over (size, 1, 1) -> squeeze -> * alpha
-> + bias -> ** beta -> x / that`: the window across channels is a 3-D pool over a 5-D view, which has no
blocked-layout rule, so after `BlockedLayout` the chain ran in NCHW between two layout transforms (six kernels
per LRN on light_inception_v1; three with TVM's passes). `FuseLocalResponseNorm` replaces the whole chain by
one kernel in the input's own layout, NCHW or NCHW[x]c.
"""

from __future__ import annotations

import tvm
from tvm import relax, te

from .rewrite import ChainFuser, replace_with_kernels, scalar_constant, sole_use_call

LRN = "local_response_norm"


def local_response_norm(x: te.Tensor, size: int, pad_before: int, alpha: float, beta: float,
                        bias: float) -> te.Tensor:
    """ONNX LRN: `x / (bias + alpha / size * sum of x^2 over channels [c - pad_before, c - pad_before + size))
    ** beta` (outside the channels counts zero), for x in NCHW or NCHW[x]c.

    The squares are first laid out per pixel along a zero-padded channel axis (`lrn_squares`, channel
    last), so that each output's window is `size` contiguous reads with no bounds test: a channel block of
    outputs is then `size` vector loads (the schedule, `targets.cpu_schedule.LocalResponseNorm`, computes one
    pixel's squares at a time)."""
    blocked = len(x.shape) == 5
    block = int(x.shape[4]) if blocked else 1
    batch, _, height, width = (int(d) for d in x.shape[:4])
    channels = int(x.shape[1]) * block

    def load(n, channel, h, w):
        return x[n, channel // block, h, w, channel % block] if blocked else x[n, channel, h, w]

    def square(n, h, w, padded):
        channel = padded - pad_before
        inside = tvm.tirx.all(channel >= 0, channel < channels)
        value = load(n, tvm.tirx.max(tvm.tirx.min(channel, channels - 1), 0), h, w)
        return tvm.tirx.if_then_else(inside, value * value, tvm.tirx.const(0.0, x.dtype))

    squares = te.compute((batch, height, width, channels + size - 1), square, name="lrn_squares")

    def compute(*index):
        n, _, h, w = index[:4]
        channel = index[1] * block + index[4] if blocked else index[1]
        total = squares[n, h, w, channel]
        for offset in range(1, size):  # summed in the order the stock average pool sums
            total = total + squares[n, h, w, channel + offset]
        scale = total / tvm.tirx.const(size, x.dtype) * tvm.tirx.const(alpha, x.dtype) + tvm.tirx.const(bias, x.dtype)
        return x[index] / _power(scale, beta)

    return te.compute(x.shape, compute, name=LRN)


def _power(base: tvm.tirx.PrimExpr, exponent: float) -> tvm.tirx.PrimExpr:
    """`base ** exponent`; the exponents LRN models use (0.75 in AlexNet and GoogLeNet, 0.5) through square
    roots, which vectorise: `pow` is a scalar libm call per element and took most of the kernel's time."""
    if exponent == 0.75:
        root = tvm.tirx.sqrt(base)
        return root * tvm.tirx.sqrt(root)
    if exponent == 0.5:
        return tvm.tirx.sqrt(base)
    return tvm.tirx.power(base, tvm.tirx.const(exponent, base.dtype))


def _converts_channels(call: relax.Call | None, block: int, to_blocked: bool) -> bool:
    """`call` is a layout transform between NCHW and NCHW[block]c (as `BlockedLayout` writes them), in the
    direction `to_blocked` says: checked on one element, channel 2 * block + block - 1."""
    blocked, plain = [0, 2, 3, 4, block - 1], [0, 3 * block - 1, 3, 4]
    source, target = (plain, blocked) if to_blocked else (blocked, plain)
    if call is None or len(call.attrs.index_map.initial_indices) != len(source):
        return False
    return [int(i) for i in call.attrs.index_map.map_indices(source)] == target


@relax.expr_functor.mutator
class _LRNFuser(ChainFuser):
    def _walk(self, expr: relax.Expr, names: tuple[str, ...]) -> list[relax.Call] | None:
        """The calls `names[0](names[1](...))` reached from `expr` through each call's first argument."""
        calls = []
        for name in names:
            call = sole_use_call(self.values, self.uses, expr, name)
            if call is None:
                return None
            calls.append(call)
            expr = call.args[0]
        return calls

    def _match(self, call: relax.Call) -> relax.Expr | None:
        if not isinstance(call.op, tvm.ir.Op) or call.op.name != "relax.divide" or call.ty.dtype != "float32":
            return None
        x, denominator = call.args
        if not isinstance(x, relax.Var) or x.ty.shape is None or len(x.ty.shape.values) not in (4, 5):
            return None
        blocked = len(x.ty.shape.values) == 5
        block = int(x.ty.shape.values[4]) if blocked else 1
        if blocked:
            to_blocked = sole_use_call(self.values, self.uses, denominator, "relax.layout_transform")
            if not _converts_channels(to_blocked, block, to_blocked=True):
                return None
            denominator = to_blocked.args[0]
        chain = self._walk(denominator, ("relax.power", "relax.add", "relax.multiply", "relax.squeeze",
                                         "relax.nn.avg_pool3d", "relax.expand_dims"))
        if chain is None:
            return None
        power, add, scale, squeeze, pool, expand = chain
        constants = [scalar_constant(c.args[1]) for c in (scale, add, power)]
        if blocked:
            chain = self._walk(expand.args[0], ("relax.layout_transform", "relax.multiply"))
            if chain is None or not _converts_channels(chain[0], block, to_blocked=False):
                return None
            square = chain[1]
        else:
            square = sole_use_call(self.values, self.uses, expand.args[0], "relax.multiply")
        if square is None or not (square.args[0].same_as(x) and square.args[1].same_as(x)) or None in constants:
            return None
        window = self._channel_window(pool, expand, squeeze)
        if window is None:
            return None
        alpha, bias, beta = constants
        size, pad_before = window
        return self.builder_.call_te(local_response_norm, self.visit_expr(x), size, pad_before, alpha, beta, bias,
                                     primfunc_name_hint=LRN)

    @staticmethod
    def _channel_window(pool: relax.Call, expand: relax.Call, squeeze: relax.Call) -> tuple[int, int] | None:
        """(size, channels padded before) when the pool is a stride-1 window over the channels that keeps
        their count, counting padding in the average (the importer's form of LRN); else None."""
        attrs = pool.attrs
        axes = [[int(a) for a in call.attrs.axis] for call in (expand, squeeze)]
        size, height, width = (int(p) for p in attrs.pool_size)
        padding = [int(p) for p in attrs.padding]
        if (axes != [[1], [1]] or (height, width) != (1, 1) or attrs.layout != "NCDHW" or attrs.ceil_mode
                or not attrs.count_include_pad or any(int(s) != 1 for s in attrs.strides)
                or any(int(d) != 1 for d in attrs.dilation) or padding[1:3] + padding[4:] != [0, 0, 0, 0]
                or padding[0] + padding[3] != size - 1):
            return None
        return size, padding[0]


@tvm.transform.module_pass(opt_level=0, name="FuseLocalResponseNorm")
class FuseLocalResponseNorm:
    """Module pass: each imported LRN chain (in NCHW, or in NCHW[x]c between layout transforms) as one kernel."""

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        return replace_with_kernels(mod, _LRNFuser)
