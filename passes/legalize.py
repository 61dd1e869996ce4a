"""Lowering of the Relax operators TVM's own legalization does not take, layered over `LegalizeOps`.

TVM 0.27 refuses conv2d in a blocked layout (NCHW[x]c), which the blocked-layout pass produces; edgetune
lowers it to a TE compute whose reduction is split into channel chunk x channel block so that the schedule
sees plain, affine loops (no division or modulo in the indices). Integer (8-bit) blocked convolutions get
their kernel repacked for 4-byte dot-product instructions (folded at compile time, the kernel is constant).
"""

from __future__ import annotations

import re

import tvm
from tvm import relax, te, topi
from tvm.relax.transform.legalize_ops.nn import _nn_conv2d as _stock_conv2d

from . import winograd

# `OpPatternKind::kOutEWiseFusable`: FuseOps gives the kernel its elementwise consumers and nothing else.
OUT_ELEMWISE_FUSABLE = 4
_BLOCKED_DATA = re.compile(r"NCHW(\d+)c$")
_BLOCKED_KERNEL = re.compile(r"OIHW(\d+)i(\d+)o$")


def _window(data: te.Tensor, k_h: int, k_w: int, strides, padding, dilation):
    """Zero-padded blocked input, output size, strides and dilations of a 2-D sliding window."""
    _, _, in_h, in_w, _ = (int(d) for d in data.shape)
    stride_h, stride_w = (int(s) for s in strides)
    dil_h, dil_w = (int(d) for d in dilation)
    pad_top, pad_left, pad_bottom, pad_right = (int(p) for p in padding)
    out_h = (in_h + pad_top + pad_bottom - (k_h - 1) * dil_h - 1) // stride_h + 1
    out_w = (in_w + pad_left + pad_right - (k_w - 1) * dil_w - 1) // stride_w + 1
    if pad_top or pad_left or pad_bottom or pad_right:
        data = topi.nn.pad(data, (0, 0, pad_top, pad_left, 0), (0, 0, pad_bottom, pad_right, 0), name="data_pad")
    return data, (out_h, out_w), (stride_h, stride_w), (dil_h, dil_w)


def conv2d_nchwc(data: te.Tensor, kernel: te.Tensor, strides, padding, dilation, out_dtype: str) -> te.Tensor:
    """`out[n, oc, y, x, ob] = sum(data[n, ic, y*s+kh*d, x*s+kw*d, ib] * kernel[oc, ic, kh, kw, ib, ob])`."""
    batch, in_chunks, _, _, in_block = (int(d) for d in data.shape)
    out_chunks, _, k_h, k_w, _, out_block = (int(d) for d in kernel.shape)
    data, (out_h, out_w), (stride_h, stride_w), (dil_h, dil_w) = _window(data, k_h, k_w, strides, padding, dilation)
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


# Integer convolutions reduce in groups of this many input channels: one 4-byte dot product per output lane
# (x86 VNNI `vpdpbusd`, AVX2 `vpmaddubsw` + `vpmaddwd`, ARM `sdot`).
DOT_GROUP = 4


def pack_int8_kernel(kernel: te.Tensor) -> te.Tensor:
    """OIHW[x]i[y]o -> OIHW[x/4]i[y]o4i: each output lane's 4 consecutive input channels adjacent, so one
    vector of the packed kernel feeds one dot-product instruction for a whole output block."""
    out_chunks, in_chunks, k_h, k_w, in_block, out_block = (int(d) for d in kernel.shape)
    return te.compute(
        (out_chunks, in_chunks, k_h, k_w, in_block // DOT_GROUP, out_block, DOT_GROUP),
        lambda oc, ic, kh, kw, ig, ob, ii: kernel[oc, ic, kh, kw, ig * DOT_GROUP + ii, ob],
        name="kernel_dot_packed",
    )


# The integer conv's block names: uint8 activations known to use 7 bits (the "uint7" scheme) are named apart,
# since only for them may an x86 CPU without VNNI use `vpmaddubsw`, whose int16 pair sums saturate on full
# bytes (`targets.dot_intrinsics`).
INT8_CONV, UINT7_CONV = "conv2d_nchwc_int8", "conv2d_nchwc_uint7"


def conv2d_nchwc_int8(data: te.Tensor, packed: te.Tensor, strides, padding, dilation, name: str = INT8_CONV
                      ) -> te.Tensor:
    """`conv2d_nchwc` on 8-bit data and a `pack_int8_kernel` kernel, accumulating in int32; the innermost
    reduction is the 4-channel dot group."""
    batch, in_chunks, _, _, _ = (int(d) for d in data.shape)
    out_chunks, _, k_h, k_w, groups, out_block, _ = (int(d) for d in packed.shape)
    data, (out_h, out_w), (stride_h, stride_w), (dil_h, dil_w) = _window(data, k_h, k_w, strides, padding, dilation)
    ic = te.reduce_axis((0, in_chunks), "ic")
    kh = te.reduce_axis((0, k_h), "kh")
    kw = te.reduce_axis((0, k_w), "kw")
    ig = te.reduce_axis((0, groups), "ig")
    ii = te.reduce_axis((0, DOT_GROUP), "ii")
    return te.compute(
        (batch, out_chunks, out_h, out_w, out_block),
        lambda n, oc, y, x, ob: te.sum(
            data[n, ic, y * stride_h + kh * dil_h, x * stride_w + kw * dil_w, ig * DOT_GROUP + ii].astype("int32")
            * packed[oc, ic, kh, kw, ig, ob, ii].astype("int32"),
            axis=[ic, kh, kw, ig, ii],
        ),
        name=name,
    )


def _as_one_block(data: te.Tensor) -> te.Tensor:
    """NCHW -> NCHW[C]c (all channels in one block) as a stage of the conv's own kernel: a stem reads the
    model's input in place instead of a separate layout-transform kernel writing a blocked copy first."""
    batch, channels, height, width = data.shape
    return te.compute((batch, 1, height, width, channels), lambda n, _, y, x, c: data[n, c, y, x],
                      name="data_blocked")


def _data_block(data_layout: str, in_channels: int) -> int | None:
    """The input channel block a conv2d reads: NCHW[x]c's x, or all channels for a plain NCHW stem."""
    match = _BLOCKED_DATA.match(data_layout)
    if match:
        return int(match.group(1))
    return in_channels if data_layout == "NCHW" else None


def _winograd_tile(call: relax.Call, out_dtype: str, lanes: int) -> int | None:
    """The Winograd output tile (`passes.winograd`) for a blocked float32 3x3 stride-1 conv with constant
    weights and static shapes on a core with `lanes` float32 vector lanes, or None."""
    attrs = call.attrs
    data, kernel = call.args
    shapes = [x.ty.shape.values for x in (data, call)]
    if not (isinstance(kernel, tvm.ir.GenericConst) and data.ty.dtype == out_dtype == "float32"
            and _BLOCKED_DATA.match(attrs.data_layout) and tuple(int(d) for d in kernel.ty.shape)[2:4] == (3, 3)
            and all(int(s) == 1 for s in attrs.strides) and all(int(d) == 1 for d in attrs.dilation)
            and all(isinstance(d, tvm.tirx.IntImm) for shape in shapes for d in shape)):
        return None
    (_, in_chunks, _, _, in_block), (_, out_chunks, out_h, out_w, out_block) = ([int(d) for d in s] for s in shapes)
    return winograd.tile_size(out_h, out_w, in_chunks * in_block, out_chunks * out_block, lanes)


def _winograd_conv2d(bb: relax.BlockBuilder, call: relax.Call, m: int) -> relax.Expr:
    data, kernel = call.args
    attrs = call.attrs
    batch, _, out_h, out_w, _ = (int(d) for d in call.ty.shape)
    u = relax.const(winograd.transform_kernel(kernel.value.numpy(), m))
    v = bb.emit_te(lambda d: winograd.input_transform(d, m, attrs.padding, out_h, out_w), data,
                   primfunc_name_hint="winograd_input")
    gemm = bb.emit_te(lambda x, w: winograd.batched_gemm(x, w, "float32"), v, u, primfunc_name_hint="winograd_gemm")
    # fuses like a conv (its elementwise epilogue only): a concat fused in would take its schedule
    return bb.call_te(lambda g: winograd.output_transform(g, m, batch, out_h, out_w), gemm,
                      primfunc_name_hint="winograd_output", primfunc_attrs={"op_pattern": OUT_ELEMWISE_FUSABLE})


def _conv2d(bb: relax.BlockBuilder, call: relax.Call, winograd_lanes: int, seven_bit: bool) -> relax.Expr:
    attrs = call.attrs
    data, kernel = call.args
    in_block = _data_block(attrs.data_layout, int(data.ty.shape[1]))
    kernel_match = _BLOCKED_KERNEL.match(attrs.kernel_layout)
    out_match = _BLOCKED_DATA.match(attrs.out_layout)
    if not (in_block and kernel_match and out_match and attrs.groups == 1
            and in_block == int(kernel_match.group(1)) and out_match.group(1) == kernel_match.group(2)):
        return _stock_conv2d(bb, call)
    out_dtype = attrs.out_dtype or data.ty.dtype
    stem = attrs.data_layout == "NCHW"
    if data.ty.dtype in ("uint8", "int8") and out_dtype == "int32" and in_block % DOT_GROUP == 0:
        packed = bb.emit_te(pack_int8_kernel, kernel, primfunc_name_hint="pack_int8_kernel")  # constant-folded
        name = UINT7_CONV if seven_bit and data.ty.dtype == "uint8" else INT8_CONV
        return bb.call_te(lambda d, k: conv2d_nchwc_int8(_as_one_block(d) if stem else d, k, attrs.strides,
                                                         attrs.padding, attrs.dilation, name),
                          data, packed, primfunc_name_hint=INT8_CONV)
    tile = _winograd_tile(call, out_dtype, winograd_lanes) if winograd_lanes else None
    if tile is not None:
        return _winograd_conv2d(bb, call, tile)
    return bb.call_te(lambda d, k: conv2d_nchwc(_as_one_block(d) if stem else d, k, attrs.strides, attrs.padding,
                                                attrs.dilation, out_dtype),
                      data, kernel, primfunc_name_hint="conv2d_nchwc")


def legalize_map(winograd_lanes: int = 0, seven_bit_activations: bool = False) -> dict[str, object]:
    """Custom legalizations for `relax.transform.LegalizeOps`; other operators use TVM's. `winograd_lanes`:
    the target's float32 vector lanes, to compute eligible 3x3 convs as Winograd transforms and a batched
    GEMM (`passes.winograd`, whose tile choice depends on the arithmetic rate); 0 keeps every conv direct.
    `seven_bit_activations`: the module's uint8 activations hold 7 bits (`UINT7_CONV`)."""
    return {"relax.nn.conv2d": lambda bb, call: _conv2d(bb, call, winograd_lanes, seven_bit_activations)}
