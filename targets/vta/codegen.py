"""Instruction-stream generation for a tiled int8 conv2d: DMA, micro-op kernels, requantize epilogue, tokens.

Per output tile (one virtual thread's SRAM share): the GEMM micro-ops enumerate (kh, kw, y, x) with the pixel
innermost, so consecutive micro-ops write different ACC entries, and the two hardware loops walk output channel
blocks (outer) and input channel blocks (inner). A tile of a single pixel puts the channel block in the micro-ops
instead. The epilogue is ALU ops on the ACC tile, then one STORE per channel block. The bias is loaded once, at
the top of ACC, for every tile of both threads.

Dependency tokens follow each buffer's reuse chain, as the runtime's DepPush/DepPop did: a load into a thread's
INP/WGT share waits (g2l) for the GEMM that last read it, and signals (l2g) the GEMM that reads it; a tile's
first GEMM waits (s2g) for the store that drained the thread's ACC share, and its last ALU signals the store
(g2s). Only tokens that a later instruction pops are pushed, so every stream is balanced at FINISH.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .config import VTAConfig
from .isa import AluInsn, AluOp, FinishInsn, GemmInsn, Instruction, MemInsn, MemType, Opcode, Uop
from .simulator import DRAM
from .tiler import Tile, Tiling, bias_entries, ic_steps, input_extent, thread_shares, tile_groups
from .workload import Conv2dWorkload, Requantize


@dataclass
class UopKernels:
    """Distinct micro-op kernels, laid out back to back in the micro-op buffer (loaded once at the start)."""

    uops: list[Uop] = field(default_factory=list)
    spans: dict[tuple, tuple[int, int]] = field(default_factory=dict)

    def add(self, key: tuple, build: Callable[[], list[Uop]]) -> tuple[int, int]:
        """The [begin, end) of the kernel named `key`, built and appended the first time it is asked for."""
        if key not in self.spans:
            kernel = build()
            self.spans[key] = (len(self.uops), len(self.uops) + len(kernel))
            self.uops.extend(kernel)
        return self.spans[key]


@dataclass
class Stream:
    """A generated program: instructions, micro-ops and the DRAM layout (byte address, bytes) it assumes."""

    insns: list[Instruction]
    uops: list[Uop]
    layout: dict[str, tuple[int, int]]


REGION_BUFFER = {"input": "inp", "weight": "wgt", "bias": "acc", "output": "out", "uop": "uop"}


def dram_layout(workload: Conv2dWorkload, config: VTAConfig, with_bias: bool,
                n_uops: int) -> dict[str, tuple[int, int]]:
    """Page-aligned regions in allocation order: input, weight, [bias], output, uop."""
    wl, block = workload, config.block
    sizes = {
        "input": wl.batch * wl.ic_blocks(block) * wl.height * wl.width * config.elem_bytes("inp"),
        "weight": wl.oc_blocks(block) * wl.ic_blocks(block) * wl.taps * config.elem_bytes("wgt"),
        "bias": wl.oc_blocks(block) * config.elem_bytes("acc") if with_bias else 0,
        "output": wl.batch * wl.oc_blocks(block) * wl.out_h * wl.out_w * config.elem_bytes("out"),
        "uop": n_uops * config.elem_bytes("uop"),
    }
    dram = DRAM()
    return {name: (dram.alloc(size), size) for name, size in sizes.items() if size or name != "bias"}


def epilogue_ops(requant: Requantize, with_bias: bool) -> list[tuple[AluOp, int | None]]:
    """(opcode, immediate or None for the bias tensor) in execution order. With a bias, the rounding term
    is already in it (`compile_conv2d` adds it: int32 addition wraps the same in either order), which saves
    one ALU pass over every output: the epilogue shares the compute module with GEMM."""
    ops: list[tuple[AluOp, int | None]] = [(AluOp.ADD, None)] if with_bias else []
    if requant.rounding and requant.shift and not with_bias:
        ops.append((AluOp.ADD, 1 << (requant.shift - 1)))
    if requant.shift:
        ops.append((AluOp.SHR, requant.shift))
    return ops + [(AluOp.MAX, requant.clip_min), (AluOp.MIN, requant.clip_max)]


class _Conv2dEmitter:
    def __init__(self, workload: Conv2dWorkload, tiling: Tiling, config: VTAConfig, requant: Requantize,
                 with_bias: bool):
        if config.batch != 1:
            raise ValueError(f"the VTA compiler supports BATCH = 1 configurations (got {config.batch})")
        self.wl, self.tiling, self.config, self.requant, self.with_bias = workload, tiling, config, requant, with_bias
        self.block = config.block
        self.kernels = UopKernels()
        self.share = thread_shares(workload, tiling, config, with_bias)
        self.bias_base = config.depth("acc") - bias_entries(workload, config, with_bias)  # resident bias in ACC
        self.base = {name: address // config.elem_bytes(REGION_BUFFER[name])  # DRAM addresses in elements
                     for name, (address, _) in dram_layout(workload, config, with_bias, 0).items()}

    def emit(self) -> Stream:
        groups = tile_groups(self.wl, self.tiling, self.block)
        steps = ic_steps(self.wl, self.tiling, self.block)
        last_group = {t: max(g for g, group in enumerate(groups) if len(group) > t) for t in range(len(groups[0]))}
        insns: list[Instruction] = []
        for g, group in enumerate(groups):
            for k, (ib0, tic) in enumerate(steps):
                for t, tile in enumerate(group):
                    loads = self._loads(tile, t, ib0, tic)
                    loads[0] = loads[0].with_deps(pop_next=g > 0 or k > 0)
                    loads[-1] = loads[-1].with_deps(push_next=True)
                    insns += loads
                    if k == 0:
                        insns.append(self._reset(tile, t).with_deps(pop_next=g > 0))
                    later_load = g < last_group[t] or k < len(steps) - 1
                    insns.append(self._gemm(tile, t, tic).with_deps(pop_prev=True, push_prev=later_load))
            for t, tile in enumerate(group):
                epilogue = self._epilogue(tile, t)
                epilogue[-1] = epilogue[-1].with_deps(push_next=True)
                stores = self._stores(tile, t)
                stores[0] = stores[0].with_deps(pop_prev=True)
                final = g == len(groups) - 1 and t == len(group) - 1  # FINISH waits for this store
                stores[-1] = stores[-1].with_deps(push_prev=g < last_group[t] or final)
                insns += epilogue + stores
        uops = self.kernels.uops
        if len(uops) > self.config.depth("uop"):
            raise ValueError(f"{len(uops)} micro-ops exceed the {self.config.depth('uop')}-entry uop buffer")
        layout = dram_layout(self.wl, self.config, self.with_bias, len(uops))
        uop_load = MemInsn(opcode=Opcode.LOAD, memory_type=MemType.UOP, sram_base=0,
                           dram_base=layout["uop"][0] // self.config.elem_bytes("uop"), y_size=1, x_size=len(uops),
                           x_stride=len(uops))
        sync = MemInsn(opcode=Opcode.LOAD, memory_type=MemType.UOP, sram_base=0, dram_base=0, y_size=0, x_size=0,
                       x_stride=0, pop_next=True)
        return Stream([uop_load] + self._bias_load() + insns + [sync, FinishInsn()], uops, layout)

    # --- per-tile pieces ----------------------------------------------------------------------------------
    def _extent(self, tile: Tile) -> tuple[int, int]:
        return (input_extent(tile.th, self.wl.stride_h, self.wl.kernel_h),
                input_extent(tile.tw, self.wl.stride_w, self.wl.kernel_w))

    def _loads(self, tile: Tile, t: int, ib0: int, tic: int) -> list[Instruction]:
        wl, rows, cols = self.wl, *self._extent(tile)
        r0, c0 = tile.y0 * wl.stride_h - wl.pad_h, tile.x0 * wl.stride_w - wl.pad_w
        real_r0, real_c0 = max(r0, 0), max(c0, 0)
        real_r1, real_c1 = min(r0 + rows, wl.height), min(c0 + cols, wl.width)
        ib_total = wl.ic_blocks(self.block)
        loads: list[Instruction] = []
        for j in range(tic):
            image = (tile.n * ib_total + ib0 + j) * wl.height
            loads.append(MemInsn(
                opcode=Opcode.LOAD, memory_type=MemType.INP, sram_base=t * self.share["inp"] + j * rows * cols,
                dram_base=self.base["input"] + (image + real_r0) * wl.width + real_c0,
                y_size=real_r1 - real_r0, x_size=real_c1 - real_c0, x_stride=wl.width,
                y_pad_0=real_r0 - r0, y_pad_1=r0 + rows - real_r1, x_pad_0=real_c0 - c0, x_pad_1=c0 + cols - real_c1))
        loads.append(MemInsn(
            opcode=Opcode.LOAD, memory_type=MemType.WGT, sram_base=t * self.share["wgt"],
            dram_base=self.base["weight"] + (tile.ob0 * ib_total + ib0) * wl.taps,
            y_size=tile.toc, x_size=tic * wl.taps, x_stride=ib_total * wl.taps))
        return loads

    def _bias_load(self) -> list[Instruction]:
        """Every channel block's bias into ACC, on the compute module ahead of the first epilogue that reads it."""
        blocks = bias_entries(self.wl, self.config, self.with_bias)
        return [MemInsn(opcode=Opcode.LOAD, memory_type=MemType.ACC, sram_base=self.bias_base,
                        dram_base=self.base["bias"], y_size=1, x_size=blocks, x_stride=blocks)] if blocks else []

    def _tile_kernel(self, tile: Tile, t: int) -> tuple[int, int]:
        """Micro-ops over the tile's pixels (dst): the reset and the immediate ALU ops share it."""
        acc = t * self.share["acc"]
        return self.kernels.add(("tile", t, tile.pixels), lambda: [Uop(acc + p, 0, 0) for p in range(tile.pixels)])

    def _bias_kernel(self, tile: Tile, t: int) -> tuple[int, int]:
        """One micro-op per channel block, from the block's first pixel to its resident bias entry."""
        acc, bias = t * self.share["acc"], self.bias_base + tile.ob0
        return self.kernels.add(("bias", t, tile.pixels, tile.ob0, tile.toc), lambda: [
            Uop(acc + j * tile.pixels, bias + j, 0) for j in range(tile.toc)])

    def _reset(self, tile: Tile, t: int) -> GemmInsn:
        bgn, end = self._tile_kernel(tile, t)
        return GemmInsn(reset=True, uop_bgn=bgn, uop_end=end, iter_out=tile.toc, iter_in=1,
                        dst_factor_out=tile.pixels)

    def _gemm(self, tile: Tile, t: int, tic: int) -> GemmInsn:
        wl, (rows, cols) = self.wl, self._extent(tile)
        acc, inp, wgt = (t * self.share[b] for b in ("acc", "inp", "wgt"))
        taps = [(kh, kw) for kh in range(wl.kernel_h) for kw in range(wl.kernel_w)]
        pixels = [(y, x) for y in range(tile.th) for x in range(tile.tw)]

        def src(kh: int, kw: int, y: int, x: int) -> int:
            return inp + (y * wl.stride_h + kh) * cols + x * wl.stride_w + kw

        if tile.pixels >= 2:
            bgn, end = self.kernels.add(("gemm", t, tile.th, tile.tw), lambda: [
                Uop(acc + y * tile.tw + x, src(kh, kw, y, x), wgt + kh * wl.kernel_w + kw)
                for kh, kw in taps for y, x in pixels])
            return GemmInsn(uop_bgn=bgn, uop_end=end, iter_out=tile.toc, iter_in=tic, dst_factor_out=tile.pixels,
                            wgt_factor_out=tic * wl.taps, src_factor_in=rows * cols, wgt_factor_in=wl.taps)
        bgn, end = self.kernels.add(("gemm-by-channel", t, tile.toc, tic), lambda: [
            Uop(acc + oc, src(kh, kw, 0, 0), wgt + oc * tic * wl.taps + kh * wl.kernel_w + kw)
            for kh, kw in taps for oc in range(tile.toc)])
        return GemmInsn(uop_bgn=bgn, uop_end=end, iter_out=tic, iter_in=1, src_factor_out=rows * cols,
                        wgt_factor_out=wl.taps)

    def _epilogue(self, tile: Tile, t: int) -> list[Instruction]:
        """The requantize ALU ops: the bias ADD walks the pixels with a loop (source fixed per channel block),
        the immediate ops walk the channel blocks over the tile kernel."""
        insns: list[Instruction] = []
        for op, imm in epilogue_ops(self.requant, self.with_bias):
            if imm is None:
                bgn, end = self._bias_kernel(tile, t)
                insns.append(AluInsn(uop_bgn=bgn, uop_end=end, iter_out=tile.pixels, iter_in=1, dst_factor_out=1,
                                     alu_opcode=op))
            else:
                bgn, end = self._tile_kernel(tile, t)
                insns.append(AluInsn(uop_bgn=bgn, uop_end=end, iter_out=tile.toc, iter_in=1,
                                     dst_factor_out=tile.pixels, alu_opcode=op, use_imm=True, imm=imm))
        return insns

    def _stores(self, tile: Tile, t: int) -> list[Instruction]:
        wl = self.wl
        ob_total = wl.oc_blocks(self.block)
        return [MemInsn(opcode=Opcode.STORE, memory_type=MemType.OUT, sram_base=t * self.share["acc"] + j * tile.pixels,
                        dram_base=self.base["output"] + ((tile.n * ob_total + tile.ob0 + j) * wl.out_h + tile.y0)
                        * wl.out_w + tile.x0, y_size=tile.th, x_size=tile.tw, x_stride=wl.out_w)
                for j in range(tile.toc)]


def generate_conv2d(workload: Conv2dWorkload, tiling: Tiling, config: VTAConfig, requant: Requantize,
                    with_bias: bool) -> Stream:
    """The complete, token-balanced instruction stream of one conv2d call under `tiling`."""
    return _Conv2dEmitter(workload, tiling, config, requant, with_bias).emit()
