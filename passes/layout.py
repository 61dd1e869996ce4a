"""Blocked activation layout: conv2d in NCHW[x]c with weights prepacked as OIHW[x]i[x]o.

With the channels split into blocks of one SIMD vector, a conv kernel loads each weight row as one vector,
broadcasts input values, and keeps a register tile of output pixels x one channel block; every load is
contiguous whatever the image size or stride. `ConvertLayout` carries the blocked layout through the
elementwise, pooling and concat ops between convolutions, so layout transforms remain only where a
convolution cannot be blocked (too few channels, grouped) and at the model's boundary. The weight transforms
are on constants and are folded at compile time (the following `FoldConstant` stage): the prepacking costs
nothing at inference time.
"""

from __future__ import annotations

import tvm
from tvm import relax

from .rewrite import rewrite_relax_functions


def blocked_conv2d_layouts(call: relax.Call, block: int) -> dict[str, list[str]]:
    """Desired layouts for one call: blocked for a dense (ungrouped) NCHW conv2d whose channels divide.

    Every other conv2d is pinned to its own layout: left without a wish, ConvertLayout would give it the
    blocked layout of its input and fail on the 4-D kernel."""
    if not isinstance(call.op, tvm.ir.Op) or call.op.name != "relax.nn.conv2d":
        return {}
    attrs = call.attrs
    keep = {"relax.nn.conv2d": [attrs.data_layout, attrs.kernel_layout]}
    if attrs.groups != 1 or attrs.data_layout != "NCHW" or attrs.kernel_layout != "OIHW":
        return keep
    out_channels, in_channels = (int(d) for d in call.args[1].ty.shape.values[:2])
    if out_channels % block:
        return keep
    if in_channels % block == 0:
        return {"relax.nn.conv2d": [f"NCHW{block}c", f"OIHW{block}i{block}o"]}
    if in_channels < block:  # a stem (RGB input): all input channels in one block, the output blocked
        return {"relax.nn.conv2d": [f"NCHW{in_channels}c", f"OIHW{in_channels}i{block}o", f"NCHW{block}c"]}
    return keep


def BlockedLayout(block: int) -> tvm.transform.Pass:  # noqa: N802 (a pass constructor, as in relax.transform)
    """Convert eligible conv2d (and what follows them) to NCHW`block`c."""
    return tvm.transform.Sequential([
        NonNegativeSqueezeAxes(),
        relax.transform.ConvertLayout({}, lambda call: blocked_conv2d_layouts(call, block)),
    ], name="BlockedLayout")


@relax.expr_functor.mutator
class _SqueezeAxes(relax.PyExprMutator):
    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if not isinstance(call.op, tvm.ir.Op) or call.op.name != "relax.squeeze" or call.attrs.axis is None:
            return call
        rank = call.args[0].ty.ndim
        axes = [int(a) for a in call.attrs.axis]
        if rank < 0 or min(axes) >= 0:
            return call
        return relax.op.squeeze(call.args[0], [a + rank if a < 0 else a for a in axes])


@tvm.transform.module_pass(opt_level=0, name="NonNegativeSqueezeAxes")
class NonNegativeSqueezeAxes:
    """Squeeze axes counted from the front: TVM 0.27's ConvertLayout aborts with std::bad_alloc on a squeeze
    with a negative axis (exporters write `Squeeze(axes=[-1])` after pooling, ONNX's LinearAttention one
    with -2), even in a module without a convolution."""

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        return rewrite_relax_functions(mod, lambda module, _func: _SqueezeAxes(module))
