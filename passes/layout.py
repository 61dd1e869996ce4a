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


def channel_block_for(channels: int, block: int) -> int | None:
    """The block a tensor of `channels` channels is carried in: the target's `block`, else half of it (one
    narrower vector: Inception's 24-channel branches stay blocked instead of falling back to NCHW with
    layout transforms around them), else None (NCHW). Producer and consumer of a tensor choose alike."""
    for candidate in (block, block // 2):
        if candidate >= 4 and channels % candidate == 0:
            return candidate
    return None


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
    out_block, in_block = channel_block_for(out_channels, block), channel_block_for(in_channels, block)
    if out_block is None:
        return keep
    if in_block is not None:
        return {"relax.nn.conv2d": [f"NCHW{in_block}c", f"OIHW{in_block}i{out_block}o", f"NCHW{out_block}c"]}
    if in_channels < block:  # a stem (RGB input): reads NCHW as one block of all its channels (in its own
        # kernel, `passes.legalize`), writes the blocked layout
        return {"relax.nn.conv2d": ["NCHW", f"OIHW{in_channels}i{out_block}o", f"NCHW{out_block}c"]}
    return keep


def BlockedLayout(block: int) -> tvm.transform.Pass:  # noqa: N802 (a pass constructor, as in relax.transform)
    """Convert eligible conv2d (and what follows them) to NCHW`block`c.

    ConvertLayout writes one transform per consumer: a tensor read blocked by three convs was transformed
    three times (Inception's module inputs); common subexpressions are merged after it."""
    return tvm.transform.Sequential([
        NonNegativeSqueezeAxes(),
        relax.transform.ConvertLayout({}, lambda call: blocked_conv2d_layouts(call, block)),
        relax.transform.EliminateCommonSubexpr(),
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
