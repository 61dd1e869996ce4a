"""Integer dot-product tensor intrinsics: 16 int32 lanes += 4 uint8 x (16 x 4) int8, one instruction.

TVM's own `dot_16x4_vnni` no longer passes LLVM 22's verifier (the `vpdpbusd` intrinsics now take byte
vectors, not int32 vectors), so edgetune registers its own with the current signature. The description is
the same as TVM's (the reduction `C[i] += A[k] * B[i, k]`), so `sch.tensorize` matches the same loops; the accumulator is a local (register) buffer, as the CPU schedules keep it.
"""

from __future__ import annotations

import tvm
from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T
from tvm.target import codegen

VNNI_16X4 = "edgetune_vnni_u8i8i32_16x4"


@T.prim_func(s_tir=True)
def _dot_16x4_desc(a: T.Buffer((4,), "uint8", offset_factor=1), b: T.Buffer((16, 4), "int8", offset_factor=1),
                   c: T.Buffer((16,), "int32", offset_factor=1, scope="local")) -> None:
    with T.sblock("root"):
        T.reads(c[0:16], a[0:4], b[0:16, 0:4])
        T.writes(c[0:16])
        for i in T.serial(0, 16):
            for k in T.serial(0, 4):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    c[vi] = c[vi] + T.cast(a[vk], "int32") * T.cast(b[vi, vk], "int32")


@T.prim_func(s_tir=True)
def _dot_16x4_vnni(a: T.Buffer((4,), "uint8", offset_factor=1), b: T.Buffer((16, 4), "int8", offset_factor=1),
                   c: T.Buffer((16,), "int32", offset_factor=1, scope="local")) -> None:
    with T.sblock("root"):
        T.reads(c[0:16], a[0:4], b[0:16, 0:4])
        T.writes(c[0:16])
        a_word = T.reinterpret(a.vload([0], "uint8x4"), dtype="int32")  # the 4 bytes, broadcast to 16 lanes
        c[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
            c.vload([0], dtype="int32x16"),
            T.reinterpret(T.broadcast(a_word, 16), dtype="uint8x64"),
            b.vload([0, 0], dtype="int8x64"),
            dtype="int32x16",
        )


TensorIntrin.register(VNNI_16X4, _dot_16x4_desc, _dot_16x4_vnni, override=True)


def uint8_dot_intrinsic(target: tvm.target.Target) -> str | None:
    """The intrinsic for 16-lane uint8 x int8 dot products on `target`, or None (plain vector code)."""
    if target.kind.name != "llvm" or "x86" not in str(target.attrs.get("mtriple", "x86_64")):
        return None
    if codegen.target_has_features(["avx512vnni"], target):
        return VNNI_16X4
    return None
