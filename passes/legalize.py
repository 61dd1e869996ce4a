"""Lowering of the Relax operators TVM's own legalization does not take, layered over `LegalizeOps`.

TVM 0.27 refuses conv2d in a blocked layout (NCHW[x]c), which the blocked-layout pass produces; edgetune
lowers it to a TE compute whose reduction is split into channel chunk x channel block so that the schedule
sees plain, affine loops (no division or modulo in the indices).
"""

from __future__ import annotations

import re

import tvm
from tvm import relax, te, topi
from tvm.relax.transform.legalize_ops.nn import _nn_conv2d as _stock_conv2d

_BLOCKED_DATA = re.compile(r"NCHW(\d+)c$")
_BLOCKED_KERNEL = re.compile(r"OIHW(\d+)i(\d+)o$")


def conv2d_nchwc(data: te.Tensor, kernel: te.Tensor, strides, padding, dilation, out_dtype: str) -> te.Tensor:
    """`out[n, oc, y, x, ob] = sum(data[n, ic, y*s+kh*d, x*s+kw*d, ib] * kernel[oc, ic, kh, kw, ib, ob])`."""
    batch, in_chunks, in_h, in_w, in_block = (int(d) for d in data.shape)
    out_chunks, _, k_h, k_w, _, out_block = (int(d) for d in kernel.shape)
    stride_h, stride_w = (int(s) for s in strides)
    dil_h, dil_w = (int(d) for d in dilation)
    pad_top, pad_left, pad_bottom, pad_right = (int(p) for p in padding)
    out_h = (in_h + pad_top + pad_bottom - (k_h - 1) * dil_h - 1) // stride_h + 1
    out_w = (in_w + pad_left + pad_right - (k_w - 1) * dil_w - 1) // stride_w + 1
    if pad_top or pad_left or pad_bottom or pad_right:
        data = topi.nn.pad(data, (0, 0, pad_top, pad_left, 0), (0, 0, pad_bottom, pad_right, 0), name="data_pad")
    ic = te.reduce_axis((0, in_chunks), "ic")
    kh = te.reduce_axis((0, k_h), "kh")
    kw = te.reduce_axis((0, k_w), "kw")
    ib = te.reduce_axis((0, in_block), "ib")
    return te.compute(
        (batch, out_chunks, out_h, out_w, out_block),
        lambda n, oc, y, x, ob: te.sum(
            data[n, ic, y * stride_h + kh * dil_h, x * stride_w + kw * dil_w, ib].astype(out_dtype)
            * kernel[oc, ic, kh, kw, ib, ob].astype(out_dtype),
            axis=[ic, kh, kw, ib],
        ),
        name="conv2d_nchwc",
    )


def _conv2d(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
    attrs = call.attrs
    data_match = _BLOCKED_DATA.match(attrs.data_layout)
    kernel_match = _BLOCKED_KERNEL.match(attrs.kernel_layout)
    out_match = _BLOCKED_DATA.match(attrs.out_layout)
    if not (data_match and kernel_match and out_match and attrs.groups == 1
            and data_match.group(1) == kernel_match.group(1) and out_match.group(1) == kernel_match.group(2)):
        return _stock_conv2d(bb, call)
    out_dtype = attrs.out_dtype or call.args[0].ty.dtype
    return bb.call_te(conv2d_nchwc, call.args[0], call.args[1], attrs.strides, attrs.padding, attrs.dilation,
                      out_dtype, primfunc_name_hint="conv2d_nchwc")


def legalize_map() -> dict[str, object]:
    """Custom legalizations for `relax.transform.LegalizeOps`; other operators use TVM's."""
    return {"relax.nn.conv2d": _conv2d}
