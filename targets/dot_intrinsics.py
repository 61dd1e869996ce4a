"""Integer dot-product tensor intrinsics: `lanes` int32 accumulators += 4 bytes x (lanes x 4) bytes.

One instruction multiplies 4 consecutive input bytes (broadcast) by a 4-byte group per output lane and adds
the sums into the int32 lanes: x86 VNNI `vpdpbusd` (16 lanes, uint8 x int8) and ARM `sdot` (4 lanes, int8 x
int8, `+dotprod`); x86 CPUs without VNNI take two (`pmaddubsw` + `pmaddwd`, AVX-512BW or AVX2), exact for
7-bit activations (the "uint7" scheme; full bytes saturate the int16 pair sums, so they get plain vector
code there). TVM's own `dot_16x4_vnni` no longer passes LLVM 22's verifier (the `vpdpbusd` intrinsics
now take byte vectors, not int32 vectors), and importing `tvm.s_tir.tensor_intrin` costs minutes, so
edgetune registers its own, each on first use: parsing the TVMScript of all four took 2.4 s of every
edgetune process's start-up, float builds included. The description is TVM's (`C[i] += A[k] * B[i, k]`),
so `sch.tensorize` matches the same loops; the accumulator is a local (register) buffer, as the CPU
schedules keep it.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import tvm
from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T
from tvm.target import codegen

from ..passes.legalize import DOT_GROUP as GROUP  # bytes per dot product: the legalized kernels' group



class DotIntrinsic(NamedTuple):
    name: str
    lanes: int
    a_dtype: str
    implementation: Callable[[], tvm.tirx.PrimFunc]

    def registered(self) -> str:
        """The name `sch.tensorize` takes, after registering the intrinsic with TVM if not done yet."""
        _register(self)
        return self.name


def _description(lanes: int, a_dtype: str):
    @T.prim_func(s_tir=True)
    def desc(a: T.Buffer((GROUP,), a_dtype, offset_factor=1), b: T.Buffer((lanes, GROUP), "int8", offset_factor=1),
             c: T.Buffer((lanes,), "int32", offset_factor=1, scope="local")) -> None:
        with T.sblock("root"):
            T.reads(c[0:lanes], a[0:GROUP], b[0:lanes, 0:GROUP])
            T.writes(c[0:lanes])
            for i in T.serial(0, lanes):
                for k in T.serial(0, GROUP):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        c[vi] = c[vi] + T.cast(a[vk], "int32") * T.cast(b[vi, vk], "int32")

    return desc


def _implementation(lanes: int, a_dtype: str, llvm_intrinsic: str):
    @T.prim_func(s_tir=True)
    def impl(a: T.Buffer((GROUP,), a_dtype, offset_factor=1), b: T.Buffer((lanes, GROUP), "int8", offset_factor=1),
             c: T.Buffer((lanes,), "int32", offset_factor=1, scope="local")) -> None:
        with T.sblock("root"):
            T.reads(c[0:lanes], a[0:GROUP], b[0:lanes, 0:GROUP])
            T.writes(c[0:lanes])
            a_word = T.reinterpret(a.vload([0], f"{a_dtype}x{GROUP}"), dtype="int32")  # broadcast to all lanes
            c[T.ramp(T.int32(0), 1, lanes)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(llvm_intrinsic),
                c.vload([0], dtype=f"int32x{lanes}"),
                T.reinterpret(T.broadcast(a_word, lanes), dtype=f"{a_dtype}x{lanes * GROUP}"),
                b.vload([0, 0], dtype=f"int8x{lanes * GROUP}"),
                dtype=f"int32x{lanes}",
            )

    return impl


def _pmadd_implementation(lanes: int, madd_bytes: str, madd_words: str):
    """x86 without VNNI: `pmaddubsw` (uint8 x int8 pairs summed into int16, saturating) then `pmaddwd` by 1
    (int16 pairs into int32), added to the accumulator. Exact while activations stay within 0..127."""
    @T.prim_func(s_tir=True)
    def impl(a: T.Buffer((GROUP,), "uint8", offset_factor=1), b: T.Buffer((lanes, GROUP), "int8", offset_factor=1),
             c: T.Buffer((lanes,), "int32", offset_factor=1, scope="local")) -> None:
        with T.sblock("root"):
            T.reads(c[0:lanes], a[0:GROUP], b[0:lanes, 0:GROUP])
            T.writes(c[0:lanes])
            a_word = T.reinterpret(a.vload([0], f"uint8x{GROUP}"), dtype="int32")
            pairs = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(madd_bytes),
                T.reinterpret(T.broadcast(a_word, lanes), dtype=f"uint8x{lanes * GROUP}"),
                b.vload([0, 0], dtype=f"int8x{lanes * GROUP}"),
                dtype=f"int16x{lanes * 2}",
            )
            c[T.ramp(T.int32(0), 1, lanes)] = c.vload([0], dtype=f"int32x{lanes}") + T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(madd_words), pairs, T.broadcast(T.int16(1), lanes * 2),
                dtype=f"int32x{lanes}")

    return impl


@functools.cache
def _register(intrinsic: DotIntrinsic) -> None:
    TensorIntrin.register(intrinsic.name, _description(intrinsic.lanes, intrinsic.a_dtype),
                          intrinsic.implementation(), override=True)


VNNI_U8I8 = DotIntrinsic("edgetune_vnni_u8i8i32_16x4", 16, "uint8",
                         lambda: _implementation(16, "uint8", "llvm.x86.avx512.vpdpbusd.512"))
AVX512_U8I8 = DotIntrinsic("edgetune_avx512_u8i8i32_16x4", 16, "uint8",
                           lambda: _pmadd_implementation(16, "llvm.x86.avx512.pmaddubs.w.512",
                                                         "llvm.x86.avx512.pmaddw.d.512"))
AVX2_U8I8 = DotIntrinsic("edgetune_avx2_u8i8i32_8x4", 8, "uint8",
                         lambda: _pmadd_implementation(8, "llvm.x86.avx2.pmadd.ub.sw", "llvm.x86.avx2.pmadd.wd"))
SDOT_I8I8 = DotIntrinsic("edgetune_sdot_i8i8i32_4x4", 4, "int8",
                         lambda: _implementation(4, "int8", "llvm.aarch64.neon.sdot.v4i32.v16i8"))


def dot_intrinsic(target: tvm.target.Target, data_dtype: str, seven_bit: bool = False) -> DotIntrinsic | None:
    """The dot-product intrinsic for `data_dtype` activations on `target`, or None (plain vector code).
    `seven_bit`: uint8 activations below 128, which `vpmaddubsw` multiplies exactly (full bytes saturate its
    int16 pair sums, so they get VNNI or plain vector code)."""
    if target.kind.name != "llvm":
        return None
    triple = str(target.attrs.get("mtriple", "") or codegen.llvm_get_system_triple())
    if data_dtype == "uint8" and triple.startswith("x86"):
        for feature, intrinsic in (("avx512vnni", VNNI_U8I8), ("avx512bw", AVX512_U8I8), ("avx2", AVX2_U8I8)):
            if codegen.target_has_features([feature], target) and (seven_bit or intrinsic is VNNI_U8I8):
                return intrinsic
    if data_dtype == "int8" and triple.startswith("aarch64") and "+dotprod" in list(target.attrs.get("mattr", [])):
        return SDOT_I8I8
    return None
